"""Backup encryption: a fresh AES-256 data key per backup, wrapped by the backup key, and a
streamed chunk format whose associated data binds each chunk to its backup, item and place.

The backup key (key-encryption key) is kept apart from the backups and from the data: from
ILLUMA_BACKUP_KEY (base64, 32 bytes; several, newest first, separated by commas, while one is
rotated out) or, locally, the file `var/keys/backup.key` (created 0600 on first use, refused
inside the data folder). It is not the PII vault's master key: one leaked key opens one of the two.

Encrypted object: the magic `ILLUMA-BACKUP-1\\n`, then chunks, each `u32be(length of sealed)`,
a 12-byte random nonce and AES-GCM(sealed = plaintext chunk + 16-byte tag). The associated data of
chunk i is `illuma-backup\\0v1\\0 || lp(backup id) || lp(item) || u64be(i) || final flag`: a chunk
moved to another place, item or backup, a reordering, a dropped final chunk (truncation) or an
appended one fail with BackupIntegrityError. Memory stays at one chunk whatever the size.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from illuma_pipelines.paths import data_dir, var_dir

BACKUP_KEY_ENV = "ILLUMA_BACKUP_KEY"
BACKUP_KEY_FILE_ENV = "ILLUMA_BACKUP_KEY_FILE"
MAGIC = b"ILLUMA-BACKUP-1\n"
CHUNK_BYTES = 8 * 1024 * 1024  # plaintext per chunk: big enough for throughput, small for memory
_NONCE = 12
_TAG = 16
_AAD = b"illuma-backup\x00v1\x00"
_WRAP_AAD = b"illuma-backup-data-key\x00v1\x00"
_GENERATE_HINT = 'python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"'


class BackupError(RuntimeError):
    """A backup or restore could not be done; the message says why and what to do."""


class BackupKeyError(BackupError):
    """The backup key is missing, malformed, or not the one a backup was made with."""


class BackupIntegrityError(BackupError):
    """A backup was tampered with, truncated, reordered or is corrupt."""


def _lp(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw


def chunk_aad(backup_id: str, item: str, index: int, final: bool) -> bytes:
    return _AAD + _lp(backup_id) + _lp(item) + struct.pack(">Q?", index, final)


def key_id(kek: bytes) -> str:
    """A one-way fingerprint naming the backup key in manifests (never the key)."""
    return "backup:" + hashlib.sha256(b"illuma-backup-kek-id\x00" + kek).hexdigest()[:16]


def _parse_keys(text: str, source: str) -> list[bytes]:
    keys = []
    for part in text.replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            key = base64.b64decode(part, validate=True)
        except (binascii.Error, ValueError):
            raise BackupKeyError(f"{source} holds a value that is not base64; generate a key with: {_GENERATE_HINT}") from None
        if len(key) != 32:
            raise BackupKeyError(f"{source} holds a {len(key)}-byte key; backup keys are 32 bytes (AES-256)")
        keys.append(key)
    if not keys:
        raise BackupKeyError(f"{source} is empty; generate a key with: {_GENERATE_HINT}")
    return keys


def default_key_file() -> Path:
    return Path(os.environ.get(BACKUP_KEY_FILE_ENV) or var_dir() / "keys" / "backup.key")


@dataclass(frozen=True)
class BackupKeyring:
    """The backup keys: the first wraps new backups' data keys, every one unwraps."""

    keys: tuple[bytes, ...]

    @classmethod
    def load(cls, *, create: bool = True) -> BackupKeyring:
        """ILLUMA_BACKUP_KEY when set, else the local key file (made 0600 when missing and
        `create`). The file must lie outside the data folder: a copy of the data must never
        carry the key that opens its backups."""
        value = os.environ.get(BACKUP_KEY_ENV)
        if value:
            return cls(tuple(_parse_keys(value, f"environment variable {BACKUP_KEY_ENV}")))
        path = default_key_file()
        resolved, data = path.expanduser().resolve(), data_dir().expanduser().resolve()
        if resolved == data or resolved.is_relative_to(data):
            raise BackupKeyError(
                f"backup key file {path} is inside the data folder {data}: keep it apart from the "
                f"data and the backups (set {BACKUP_KEY_FILE_ENV} or {BACKUP_KEY_ENV})"
            )
        if not path.exists():
            if not create:
                raise BackupKeyError(f"no backup key: set {BACKUP_KEY_ENV} or create {path} (0600, base64 32 bytes)")
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first
            else:
                with os.fdopen(fd, "w", encoding="ascii") as handle:
                    handle.write(base64.b64encode(secrets.token_bytes(32)).decode("ascii") + "\n")
        return cls(tuple(_parse_keys(path.read_text(encoding="ascii"), f"backup key file {path}")))

    @property
    def current_id(self) -> str:
        return key_id(self.keys[0])

    def wrap(self, backup_id: str, data_key: bytes) -> tuple[str, str]:
        """(key id, base64 nonce + wrapped data key) for a manifest."""
        nonce = secrets.token_bytes(_NONCE)
        sealed = AESGCM(self.keys[0]).encrypt(nonce, data_key, _WRAP_AAD + _lp(backup_id))
        return self.current_id, base64.b64encode(nonce + sealed).decode("ascii")

    def unwrap(self, backup_id: str, kid: str, wrapped: str) -> bytes:
        for kek in self.keys:
            if key_id(kek) != kid:
                continue
            raw = base64.b64decode(wrapped)
            try:
                return AESGCM(kek).decrypt(raw[:_NONCE], raw[_NONCE:], _WRAP_AAD + _lp(backup_id))
            except InvalidTag:
                raise BackupIntegrityError(
                    f"backup {backup_id}: its wrapped data key does not open under {kid}: the manifest "
                    "was altered or belongs to another backup"
                ) from None
        raise BackupKeyError(
            f"backup {backup_id} was made under backup key {kid}, which is not among the keys loaded "
            f"({', '.join(key_id(k) for k in self.keys)}): set {BACKUP_KEY_ENV} to include it"
        )


def manifest_mac(data_key: bytes, manifest: dict) -> str:
    """HMAC-SHA256 over the manifest (without its `mac`), under a key derived from the data key:
    only a holder of the backup key can make a manifest that verifies."""
    body = {k: v for k, v in manifest.items() if k != "mac"}
    mac_key = hashlib.sha256(b"illuma-backup-manifest\x00" + data_key).digest()
    text = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hmac.new(mac_key, text, hashlib.sha256).hexdigest()


@dataclass
class ItemStats:
    plain_bytes: int = 0
    encrypted_bytes: int = 0
    chunk_sha256: list[str] | None = None


def _rechunk(blocks: Iterable[bytes], size: int) -> Iterator[bytes]:
    buf = bytearray()
    for block in blocks:
        buf += block
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    yield bytes(buf)  # the last chunk, possibly empty: it carries the final flag


def encrypt_stream(
    data_key: bytes, backup_id: str, item: str, blocks: Iterable[bytes], stats: ItemStats,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[bytes]:
    """Encrypt `blocks` (any sizes) into the chunk format, filling `stats` as it goes."""
    aes = AESGCM(data_key)
    stats.chunk_sha256 = []
    yield MAGIC
    stats.encrypted_bytes = len(MAGIC)
    chunks = _rechunk(blocks, chunk_bytes)
    current = next(chunks)
    index = 0
    for following in chunks:
        yield from _seal(aes, backup_id, item, index, current, False, stats)
        current, index = following, index + 1
    yield from _seal(aes, backup_id, item, index, current, True, stats)


def _seal(aes, backup_id, item, index, chunk, final, stats) -> Iterator[bytes]:
    nonce = secrets.token_bytes(_NONCE)
    sealed = aes.encrypt(nonce, chunk, chunk_aad(backup_id, item, index, final))
    record = struct.pack(">I", len(sealed)) + nonce + sealed
    stats.plain_bytes += len(chunk)
    stats.encrypted_bytes += len(record)
    stats.chunk_sha256.append(hashlib.sha256(record).hexdigest())
    yield record


class _Reader:
    def __init__(self, blocks: Iterable[bytes]) -> None:
        self._it = iter(blocks)
        self._buf = bytearray()

    def read(self, n: int) -> bytes:
        while len(self._buf) < n:
            block = next(self._it, None)
            if block is None:
                break
            self._buf += block
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def decrypt_stream(
    data_key: bytes, backup_id: str, item: str, blocks: Iterable[bytes], chunk_sha256: list[str],
) -> Iterator[bytes]:
    """Check and decrypt an encrypted item chunk by chunk against the manifest's chunk hashes.

    A chunk is yielded only once its hash and tag are checked; a missing, extra, reordered or
    altered chunk raises BackupIntegrityError naming the item and chunk.
    """
    where = f"backup {backup_id}, {item}"
    reader = _Reader(blocks)
    if reader.read(len(MAGIC)) != MAGIC:
        raise BackupIntegrityError(f"{where}: not an ILLUMA backup object (bad header)")
    aes = AESGCM(data_key)
    expected = len(chunk_sha256)
    for index in range(expected):
        head = reader.read(4)
        if len(head) < 4:
            raise BackupIntegrityError(
                f"{where}: truncated after chunk {index} of {expected}: the object is incomplete"
            )
        (length,) = struct.unpack(">I", head)
        if length < _TAG or length > CHUNK_BYTES * 4 + _TAG:
            raise BackupIntegrityError(f"{where}: chunk {index} has an impossible length {length}: corrupt")
        body = reader.read(_NONCE + length)
        if len(body) < _NONCE + length:
            raise BackupIntegrityError(f"{where}: truncated inside chunk {index} of {expected}")
        if hashlib.sha256(head + body).hexdigest() != chunk_sha256[index]:
            raise BackupIntegrityError(
                f"{where}: chunk {index} does not match the manifest's sha256: tampered or corrupt"
            )
        try:
            yield aes.decrypt(body[:_NONCE], body[_NONCE:], chunk_aad(backup_id, item, index, index == expected - 1))
        except InvalidTag:
            raise BackupIntegrityError(
                f"{where}: chunk {index} fails authentication: tampered, reordered or from another backup"
            ) from None
    if reader.read(1):
        raise BackupIntegrityError(f"{where}: bytes after the final chunk: the object was extended")
