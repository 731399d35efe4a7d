"""Key-encryption keys (KeyProvider) and wrapped data keys at rest (KeyStore).

Envelope encryption: each merchant has data keys (one per version) that encrypt its PII; a data
key is only ever stored wrapped by a key-encryption key (KEK) that the KeyProvider holds. The
provider here is a local keyring; a cloud KMS implements the same two calls, wrap and unwrap with
a KEK id, and never hands out the KEK.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from illuma_pipelines.merchant_ids import validate_merchant_id
from illuma_pipelines.vault.errors import (
    KeyDestroyed,
    KeyStoreError,
    KeyUnwrapFailed,
    KeyVersionExists,
    MasterKeyError,
    VaultError,
)

KEY_BYTES = 32  # AES-256, for data keys and for the local master key alike
MASTER_KEY_ENV_VAR = "ILLUMA_MASTER_KEY"
_GENERATE_HINT = (
    'generate one with: python -c "import base64, os; '
    'print(base64.b64encode(os.urandom(32)).decode())"'
)


# --------------------------------------------------------------------------- key providers


class KeyProvider(ABC):
    """Wraps and unwraps data keys under a key-encryption key named by an id.

    `context` is authenticated with the wrapped key (AES-GCM associated data locally; the
    encryption context or additional authenticated data of a cloud KMS), so a wrapped key copied
    onto another merchant's or version's record does not unwrap.
    """

    @property
    @abstractmethod
    def current_kek_id(self) -> str:
        """The KEK that wraps new data keys and that rewrap moves existing ones to."""

    @abstractmethod
    def wrap(self, kek_id: str, data_key: bytes, context: Mapping[str, str]) -> bytes:
        """Encrypt `data_key` under KEK `kek_id`, binding `context`."""

    @abstractmethod
    def unwrap(self, kek_id: str, wrapped_key: bytes, context: Mapping[str, str]) -> bytes:
        """Recover a data key wrapped by `wrap` with the same KEK id and context."""


def _kek_id(master_key: bytes) -> str:
    # A one-way fingerprint lets a key record say which master key wrapped it, so a wrong or
    # missing master key is reported as such instead of as a corrupt record.
    return "local:" + hashlib.sha256(b"illuma-kek-id\x00" + master_key).hexdigest()[:16]


def _context_bytes(context: Mapping[str, str]) -> bytes:
    return json.dumps(dict(context), sort_keys=True, separators=(",", ":")).encode("utf-8")


def _parse_master_keys(text: str, source: str) -> list[bytes]:
    parts = text.replace(",", " ").split()
    if not parts:
        raise MasterKeyError(
            f"{source} is empty; it must hold a base64-encoded 32-byte key; {_GENERATE_HINT}"
        )
    keys: list[bytes] = []
    for position, part in enumerate(parts, start=1):
        try:
            key = base64.b64decode(part.translate(str.maketrans("-_", "+/")), validate=True)
        except (binascii.Error, ValueError):
            # Never echo the value: it is (part of) a secret.
            raise MasterKeyError(
                f"{source}: key {position} is not valid base64; {_GENERATE_HINT}"
            ) from None
        if len(key) != KEY_BYTES:
            raise MasterKeyError(
                f"{source}: key {position} decodes to {len(key)} bytes, but a master key must be "
                f"exactly {KEY_BYTES} bytes (AES-256); {_GENERATE_HINT}"
            )
        if key in keys:
            raise MasterKeyError(
                f"{source}: key {position} repeats an earlier key; list each key once"
            )
        keys.append(key)
    return keys


class LocalKeyring(KeyProvider):
    """Master keys held in memory, loaded from the environment or a file outside the data folder.

    Several keys may be given, newest first: the first wraps new data keys, the others only
    unwrap. That is how a KEK rotation runs: give ``new,old``, call Vault.rewrap_merchant_keys for
    every merchant, then drop the old key.
    """

    def __init__(self, master_keys: Sequence[bytes]) -> None:
        if not master_keys:
            raise MasterKeyError(f"a LocalKeyring needs at least one master key; {_GENERATE_HINT}")
        ciphers: dict[str, AESGCM] = {}
        for position, key in enumerate(master_keys, start=1):
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                size = f"{len(key)} bytes" if isinstance(key, bytes) else type(key).__name__
                raise MasterKeyError(
                    f"master key {position} is {size}; it must be exactly {KEY_BYTES} raw bytes"
                )
            ciphers[_kek_id(key)] = AESGCM(key)
        self._ciphers = ciphers
        self._current = _kek_id(master_keys[0])

    @classmethod
    def from_env(
        cls, var: str = MASTER_KEY_ENV_VAR, *, environ: Mapping[str, str] | None = None
    ) -> LocalKeyring:
        """Read base64 master keys (comma-separated, newest first) from environment variable `var`."""
        env = os.environ if environ is None else environ
        value = env.get(var)
        if value is None:
            raise MasterKeyError(
                f"environment variable {var} is not set; it must hold the base64-encoded 32-byte "
                f"master key that wraps the PII data keys; {_GENERATE_HINT}"
            )
        return cls(_parse_master_keys(value, f"environment variable {var}"))

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, data_dir: str | os.PathLike[str] | None = None
    ) -> LocalKeyring:
        """Read master keys (base64, one per line, newest first) from `path`.

        `data_dir` is the folder that holds the data (warehouse, extracts, exports); the master key
        must live outside it, or every copy of the data would carry the key that opens it.
        """
        key_path = Path(path)
        if data_dir is not None:
            ensure_outside(key_path, Path(data_dir), "master key file")
        try:
            text = key_path.read_text(encoding="ascii")
        except FileNotFoundError:
            raise MasterKeyError(
                f"master key file {key_path} does not exist; create it (mode 0600) with one "
                f"base64-encoded 32-byte key per line; {_GENERATE_HINT}"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise MasterKeyError(
                f"cannot read master key file {key_path} ({type(exc).__name__}); it must be a "
                "readable ASCII file with one base64 key per line"
            ) from None
        return cls(_parse_master_keys(text, f"master key file {key_path}"))

    @staticmethod
    def generate_master_key() -> str:
        """A fresh base64 master key, for ILLUMA_MASTER_KEY or a key file."""
        return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")

    @property
    def current_kek_id(self) -> str:
        return self._current

    @property
    def kek_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def _cipher(self, kek_id: str) -> AESGCM:
        try:
            return self._ciphers[kek_id]
        except KeyError:
            raise MasterKeyError(
                f"this keyring does not hold KEK {kek_id!r} (it holds {', '.join(self._ciphers)}); "
                f"supply that master key too, newest first, e.g. {MASTER_KEY_ENV_VAR}='<new>,<old>', "
                "until Vault.rewrap_merchant_keys has moved every data key to the new one"
            ) from None

    def wrap(self, kek_id: str, data_key: bytes, context: Mapping[str, str]) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._cipher(kek_id).encrypt(nonce, data_key, _context_bytes(context))

    def unwrap(self, kek_id: str, wrapped_key: bytes, context: Mapping[str, str]) -> bytes:
        cipher = self._cipher(kek_id)
        try:
            return cipher.decrypt(wrapped_key[:12], wrapped_key[12:], _context_bytes(context))
        except InvalidTag:
            raise KeyUnwrapFailed(
                f"wrapped data key {dict(context)} did not authenticate under KEK {kek_id!r}: the key "
                "record was altered or copied from another merchant or version; restore the key "
                "store from its backup"
            ) from None

    def __repr__(self) -> str:
        return f"LocalKeyring(kek_ids={list(self._ciphers)}, current={self._current!r})"


# --------------------------------------------------------------------------- key store


@dataclass(frozen=True)
class KeyVersion:
    """One version of a merchant's data key, as the key store holds it (wrapped, never raw).

    A destroyed version stays as a tombstone (no wrapped key, `destroyed_at` set) so that reading
    one of its ciphertexts reports "destroyed" rather than "never existed".
    """

    merchant_id: str
    version: int
    kek_id: str
    wrapped_key: bytes | None = field(repr=False)
    created_at: datetime
    retired_at: datetime | None = None
    destroyed_at: datetime | None = None
    # What the key is for. None: the merchant's general key (rotated every 90 days). A label names
    # a key whose lifetime is its data's (e.g. "due:2027-01-05": destroyed when that data falls
    # due; ADR 0007); each label has versions of its own.
    label: str | None = None

    @property
    def destroyed(self) -> bool:
        return self.destroyed_at is not None


class KeyStore(ABC):
    """Where wrapped data keys live, apart from the data they encrypt.

    Implementations must keep destroyed versions as tombstones (metadata without the wrapped key)
    and must make put_version without `replace` fail with KeyVersionExists when the version is
    already there: concurrent writers rely on it to agree on one key per version.
    """

    @abstractmethod
    def versions(self, merchant_id: str) -> list[KeyVersion]:
        """Every version of the merchant's data key, tombstones included, oldest first."""

    @abstractmethod
    def put_version(self, key_version: KeyVersion, *, replace: bool = False) -> None:
        """Store a new version; with `replace`, overwrite an existing one (used by KEK rewrap).

        Never overwrites a destroyed version: raise KeyDestroyed instead.
        """

    @abstractmethod
    def mark_retired(self, merchant_id: str, version: int, at: datetime) -> None:
        """Record that the version stopped encrypting new values (it still decrypts)."""

    @abstractmethod
    def destroy(self, merchant_id: str, version: int, at: datetime) -> None:
        """Erase the wrapped key for good, keeping a tombstone. Idempotent."""


def ensure_outside(
    path: Path, data_dir: Path, what: str, error: type[VaultError] = MasterKeyError
) -> None:
    """Refuse `path` if it lies inside `data_dir` (symlinks resolved)."""
    resolved = path.expanduser().resolve()
    data = data_dir.expanduser().resolve()
    if resolved == data or resolved.is_relative_to(data):
        raise error(
            f"{what} {path} is inside the data folder {data_dir}; keys must be stored apart from "
            "the data they protect (and out of its backups and exports): move it elsewhere"
        )


_STORE_FORMAT = "illuma-keystore-v1"


def _to_json(kv: KeyVersion) -> dict[str, Any]:
    return {
        "version": kv.version,
        "kek_id": kv.kek_id,
        "wrapped_key": None
        if kv.wrapped_key is None
        else base64.b64encode(kv.wrapped_key).decode("ascii"),
        "created_at": kv.created_at.isoformat(),
        "retired_at": None if kv.retired_at is None else kv.retired_at.isoformat(),
        "destroyed_at": None if kv.destroyed_at is None else kv.destroyed_at.isoformat(),
        **({} if kv.label is None else {"label": kv.label}),
    }


def _from_json(merchant_id: str, item: Mapping[str, Any]) -> KeyVersion:
    def when(name: str) -> datetime | None:
        value = item.get(name)
        return None if value is None else datetime.fromisoformat(value)

    wrapped = item.get("wrapped_key")
    created = when("created_at")
    if created is None:
        raise ValueError("created_at is missing")
    return KeyVersion(
        merchant_id=merchant_id,
        version=int(item["version"]),
        kek_id=str(item["kek_id"]),
        wrapped_key=None if wrapped is None else base64.b64decode(wrapped, validate=True),
        created_at=created,
        retired_at=when("retired_at"),
        destroyed_at=when("destroyed_at"),
        label=None if item.get("label") is None else str(item["label"]),
    )


class FileKeyStore(KeyStore):
    """Wrapped data keys in one JSON file (mode 0600), rewritten atomically on every change.

    Writers serialise on an advisory lock file next to it, so several processes (Dagster's
    multiprocess executor) can share it; readers need no lock because os.replace swaps whole files.
    Keep the file out of the data folder and out of data backups: a copy of it next to a data backup
    would undo crypto-shredding for that backup.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, data_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path)
        if data_dir is not None:
            ensure_outside(self.path, Path(data_dir), "key store file", KeyStoreError)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def __repr__(self) -> str:
        return f"FileKeyStore({str(self.path)!r})"

    # -- file handling

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {"format": _STORE_FORMAT, "merchants": {}}
        try:
            doc = json.loads(raw)
        except ValueError:
            raise KeyStoreError(
                f"key store {self.path} is not valid JSON; restore it from the key store backup and "
                "do not delete it: without it every ciphertext it keys is unreadable"
            ) from None
        if (
            not isinstance(doc, dict)
            or doc.get("format") != _STORE_FORMAT
            or not isinstance(doc.get("merchants"), dict)
        ):
            raise KeyStoreError(
                f"{self.path} is not an ILLUMA key store (expected format {_STORE_FORMAT!r}); "
                "point FileKeyStore at the key store file or at a new path"
            )
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = directory / f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        payload = json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")
        # Created 0600 from the start (O_EXCL, explicit mode) so the keys are never briefly
        # readable by others, whatever the umask.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        # Make the rename itself durable: a crash must not bring back a destroyed key.
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._read()
        finally:
            os.close(fd)  # closing releases the lock

    def _entries(self, doc: dict[str, Any], merchant_id: str) -> list[dict[str, Any]]:
        return doc["merchants"].setdefault(merchant_id, [])

    def _find(self, doc: dict[str, Any], merchant_id: str, version: int) -> dict[str, Any]:
        for item in doc["merchants"].get(merchant_id, []):
            if item.get("version") == version:
                return item
        raise KeyStoreError(
            f"key store {self.path} has no version {version} for merchant {merchant_id!r}; "
            "list the merchant's versions with versions() and use one of them"
        )

    # -- KeyStore

    def versions(self, merchant_id: str) -> list[KeyVersion]:
        validate_merchant_id(merchant_id)
        items = self._read()["merchants"].get(merchant_id, [])
        try:
            result = [_from_json(merchant_id, item) for item in items]
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise KeyStoreError(
                f"key store {self.path} has a malformed record for merchant {merchant_id!r} "
                f"({type(exc).__name__}: {exc}); restore the file from the key store backup"
            ) from None
        return sorted(result, key=lambda kv: kv.version)

    def put_version(self, key_version: KeyVersion, *, replace: bool = False) -> None:
        validate_merchant_id(key_version.merchant_id)
        with self._locked() as doc:
            entries = self._entries(doc, key_version.merchant_id)
            existing = [
                i for i, item in enumerate(entries) if item.get("version") == key_version.version
            ]
            if existing and entries[existing[0]].get("destroyed_at") is not None:
                # A rewrap racing a destroy must not bring the key back.
                raise KeyDestroyed(
                    f"version {key_version.version} of merchant {key_version.merchant_id!r} was "
                    "destroyed; a destroyed key version is never stored again"
                )
            if existing and not replace:
                raise KeyVersionExists(
                    f"key store {self.path} already holds version {key_version.version} for merchant "
                    f"{key_version.merchant_id!r}; re-read the versions and use the stored one"
                )
            if existing:
                entries[existing[0]] = _to_json(key_version)
            else:
                entries.append(_to_json(key_version))
            self._write(doc)

    def mark_retired(self, merchant_id: str, version: int, at: datetime) -> None:
        validate_merchant_id(merchant_id)
        with self._locked() as doc:
            item = self._find(doc, merchant_id, version)
            if item.get("retired_at") is None:
                item["retired_at"] = at.isoformat()
                self._write(doc)

    def destroy(self, merchant_id: str, version: int, at: datetime) -> None:
        validate_merchant_id(merchant_id)
        with self._locked() as doc:
            item = self._find(doc, merchant_id, version)
            if item.get("destroyed_at") is None or item.get("wrapped_key") is not None:
                item["wrapped_key"] = None
                item["destroyed_at"] = item.get("destroyed_at") or at.isoformat()
                self._write(doc)
