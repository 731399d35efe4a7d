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
import mmap
import os
import queue
import secrets
import stat
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

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
T = TypeVar("T")
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
    tags_sha256: str = ""


def tags_digest():
    """The running digest of an object's chunk tags, in order (`tags_sha256` in a manifest).

    Each chunk's GCM tag is a MAC, under the backup's data key, of that chunk's ciphertext and of
    its place (backup, object, index, final flag); so the sequence of tags is a keyed checksum of
    the whole plaintext: without the data key nobody can give other bytes the same tags. It costs
    nothing: the tags are made (and, on restore, checked) anyway, where a sha256 of the plaintext
    read every byte once more."""
    return hashlib.sha256(b"illuma-backup-tags\x00v1\x00")


_END = object()


def ahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield `items`, produced on a thread of their own up to `depth` ahead of the consumer.

    The stages of a backup stream (read, encrypt or decrypt, hash, write) spend most of their time
    in code that releases the GIL (file I/O, hashlib), so stages on threads of their own share the
    cores; memory grows by `depth` chunks. An exception of the producer is raised
    in the consumer; a consumer that stops early stops the producer."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not offer((item, None)):
                    return
            offer((_END, None))
        except BaseException as exc:  # raised again in the consumer
            offer((_END, exc))
        finally:
            if hasattr(source, "close"):
                source.close()  # stops a stage it feeds from, on this thread

    worker = threading.Thread(target=produce, name="backup-stream", daemon=True)
    worker.start()
    try:
        while True:
            item, failure = slots.get()
            if item is _END:
                if failure is not None:
                    raise failure
                return
            yield item
    finally:
        stop.set()
        worker.join(timeout=30)


class ChunkBuffers:
    """Chunk-sized buffers reused by the streams of one backup or restore. A fresh 8 MiB object
    per chunk costs the kernel's page faults every time: reading a file in 8 MiB `bytes` ran at
    1.1-1.5 GB/s here, into one reused buffer at 5-6 GB/s. A stream holds a few buffers at once
    (its stages' queues), so few are ever made."""

    def __init__(self, make: Callable[[int], bytearray | memoryview] = bytearray) -> None:
        self._make = make  # a new buffer of a size (directio.py's are page-aligned)
        self._free: dict[int, list[bytearray | memoryview]] = {}
        self._lock = threading.Lock()

    def take(self, size: int) -> bytearray:
        with self._lock:
            free = self._free.get(size)
            if free:
                return free.pop()
        return self._make(size)

    def give(self, buf: bytearray) -> None:
        with self._lock:
            self._free.setdefault(len(buf), []).append(buf)


def fill(source, view: memoryview) -> int:
    """Read from `source` until `view` is full or the source ends; the bytes read."""
    done = 0
    while done < len(view):
        got = source.readinto(view[done:])
        if not got:
            break
        done += got
    return done


def _drop_pages(data: mmap.mmap, start: int, end: int) -> None:
    """Unmap the pages of bytes [start, end) of a read-only file mapping once they are read: they
    stay in the page cache, but no longer count in the process's resident memory (a mapped
    object would otherwise count whole: 340 MB for a restore of a 182 MB dump, read twice)."""
    first = start - start % mmap.PAGESIZE
    if end > first:
        data.madvise(mmap.MADV_DONTNEED, first, end - first)


def _sealed_sha256(head: bytes, body: memoryview) -> str:
    digest = hashlib.sha256(head)
    digest.update(body)
    return digest.hexdigest()


def encrypt_stream(
    data_key: bytes, backup_id: str, item: str, source, stats: ItemStats,
    chunk_bytes: int = CHUNK_BYTES, buffers: ChunkBuffers | None = None,
) -> Iterator[bytes | memoryview]:
    """Encrypt `source` into the chunk format, filling `stats` as it goes: a binary file (anything
    with `readinto`: a file, a pipe), or bytes, such as a memory-mapped file's, which are
    encrypted where they lie (no copy into a buffer of ours: that read cost half what the sha256
    costs).

    Stages on threads of their own: reading; encrypting; hashing each sealed chunk, on two
    threads (the sha256 costs five times the encryption, about what writing the chunk costs, and
    chunks are independent); and the consumer's, which writes each chunk while it is hashed. A
    chunk is final when it is short (possibly empty), as the format has it. Each block yielded is
    valid until the next one is asked for (the stores write or copy it at once): its buffer is
    then reused."""
    aes = AESGCM(data_key)
    pool = buffers or ChunkBuffers()
    tags = tags_digest()
    stats.chunk_sha256 = []

    def read() -> Iterator[tuple[bytearray | memoryview, int]]:
        if not hasattr(source, "readinto"):
            with memoryview(source) as whole:
                for start in range(0, len(whole) + 1, chunk_bytes):  # the last is short, maybe empty
                    part = whole[start:start + chunk_bytes]
                    yield part, len(part)
            return
        while True:
            buf = pool.take(chunk_bytes)
            size = fill(source, memoryview(buf))
            yield buf, size
            if size < chunk_bytes:
                return

    def seal(hashers: ThreadPoolExecutor) -> Iterator[tuple[bytes, bytearray, int, Future]]:
        for index, (buf, size) in enumerate(ahead(read())):
            out = pool.take(chunk_bytes + _TAG)
            nonce = secrets.token_bytes(_NONCE)
            aad = chunk_aad(backup_id, item, index, size < chunk_bytes)
            body = memoryview(out)[:size + _TAG]
            aes.encrypt_into(nonce, memoryview(buf)[:size], aad, body)
            if isinstance(buf, memoryview):
                buf.release()
                if isinstance(source, mmap.mmap):
                    _drop_pages(source, index * chunk_bytes, index * chunk_bytes + size)
            else:
                pool.give(buf)
            tags.update(body[size:])
            head = struct.pack(">I", size + _TAG) + nonce
            yield head, out, size, hashers.submit(_sealed_sha256, head, body)

    yield MAGIC
    stats.encrypted_bytes = len(MAGIC)
    with ThreadPoolExecutor(2, thread_name_prefix="backup-sha256") as hashers:
        for head, out, size, digest in ahead(seal(hashers)):
            body = memoryview(out)[:size + _TAG]
            stats.plain_bytes += size
            stats.encrypted_bytes += len(head) + len(body)
            yield head
            yield body
            stats.chunk_sha256.append(digest.result())  # before the buffer is reused
            body.release()
            pool.give(out)
    stats.tags_sha256 = tags.hexdigest()


class _Reader:
    """Exact-size reads from a stream of blocks."""

    def __init__(self, blocks: Iterable[bytes]) -> None:
        self._it = iter(blocks)
        self._block = memoryview(b"")

    def readinto(self, view: memoryview) -> int:
        done = 0
        while done < len(view):
            if not self._block:
                block = next(self._it, None)
                if block is None:
                    break
                self._block = memoryview(block)
                continue
            step = min(len(self._block), len(view) - done)
            view[done:done + step] = self._block[:step]
            self._block = self._block[step:]
            done += step
        return done

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        return bytes(buf[:self.readinto(memoryview(buf))])

    def chunk(self, n: int, pool: ChunkBuffers, size: int) -> tuple[memoryview, Callable[[], None]]:
        """The next `n` bytes (fewer at the end) in a buffer of `pool`, and how to give it back."""
        sealed = pool.take(size)
        view = memoryview(sealed)[:n]
        part = view[:self.readinto(view)]

        def done() -> None:
            part.release()
            view.release()
            pool.give(sealed)

        return part, done

    def close(self) -> None:
        stream = getattr(self, "_it", None)
        if hasattr(stream, "close"):
            stream.close()  # a stream that holds a file or a thread


class _FileReader(_Reader):
    """Exact-size reads from a binary file."""

    def __init__(self, source) -> None:
        self._source = source

    def readinto(self, view: memoryview) -> int:
        return fill(self._source, view)


class _MappedReader(_Reader):
    """Exact-size reads from a memory-mapped file: a chunk is decrypted where it lies, with no
    copy into a buffer of ours (that read cost half what a sha256 of the chunk costs)."""

    def __init__(self, data: mmap.mmap) -> None:
        self._data = data
        self._view = memoryview(data)
        self._at = 0

    def readinto(self, view: memoryview) -> int:
        part = self._next(len(view))
        view[:len(part)] = part
        return len(part)

    def _next(self, n: int) -> memoryview:
        part = self._view[self._at:self._at + n]
        self._at += len(part)
        return part

    def chunk(self, n: int, pool: ChunkBuffers, size: int) -> tuple[memoryview, Callable[[], None]]:
        start, part = self._at, self._next(n)
        end = start + len(part)

        def done() -> None:
            part.release()
            _drop_pages(self._data, start, end)

        return part, done

    def close(self) -> None:
        self._view.release()
        self._data.close()


def _reader_of(source) -> _Reader:
    """A reader of an encrypted object: a regular file mapped, another file (a pipe) read,
    blocks copied."""
    if not hasattr(source, "readinto"):
        return _Reader(source)
    try:
        fd = source.fileno()
        info = os.fstat(fd)
    except (AttributeError, OSError, ValueError):
        return _FileReader(source)
    if stat.S_ISREG(info.st_mode) and info.st_size:
        return _MappedReader(mmap.mmap(fd, info.st_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ))
    return _FileReader(source)


def decrypt_stream(
    data_key: bytes, backup_id: str, item: str, blocks, chunk_sha256: list[str],
    buffers: ChunkBuffers | None = None, chunk_bytes: int = CHUNK_BYTES, *, tags=None, hashes: bool = True,
) -> Iterator[bytes | memoryview]:
    """Check and decrypt an encrypted item (a binary file, or a stream of blocks) chunk by chunk
    against the manifest's chunk hashes.

    A chunk is yielded only once its tag (and, with `hashes`, its sha256) is checked; a missing,
    extra, reordered or altered chunk raises BackupIntegrityError naming the item and chunk. The
    tag alone is a complete check of a chunk and of its place: it authenticates the chunk under
    the data key with its backup, object, index and final flag as associated data, and the
    manifest (its MAC verified) gives the number of chunks. `tags`, a `tags_digest()`, is fed
    each checked tag in order. Reading, checking and decrypting run on a thread of their own, a
    chunk or two ahead of the consumer. With `buffers`, each chunk yielded is a view valid until
    the next one is asked for (its buffer is then reused); without, each is bytes of its own.
    """
    pool = buffers or ChunkBuffers()
    checked = _checked(data_key, backup_id, item, blocks, chunk_sha256, pool, chunk_bytes, tags, hashes)
    for out, size in ahead(checked):
        if buffers is None:
            yield bytes(memoryview(out)[:size])
        else:
            view = memoryview(out)[:size]
            yield view
            view.release()
        pool.give(out)


def _checked(
    data_key, backup_id, item, blocks, chunk_sha256, pool: ChunkBuffers, chunk_bytes: int, tags, hashes: bool,
) -> Iterator[tuple[bytearray, int]]:
    reader = _reader_of(blocks)
    try:
        yield from _checked_chunks(data_key, backup_id, item, reader, chunk_sha256, pool, chunk_bytes, tags, hashes)
    finally:
        reader.close()


def _checked_chunks(
    data_key, backup_id, item, reader: _Reader, chunk_sha256, pool: ChunkBuffers, chunk_bytes: int, tags, hashes: bool,
) -> Iterator[tuple[bytearray, int]]:
    where = f"backup {backup_id}, {item}"
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
        nonce = reader.read(_NONCE)
        body, done = reader.chunk(length, pool, max(length, chunk_bytes + _TAG))
        try:
            if len(nonce) < _NONCE or len(body) < length:
                raise BackupIntegrityError(f"{where}: truncated inside chunk {index} of {expected}")
            if hashes:
                digest = hashlib.sha256(head)
                digest.update(nonce)
                digest.update(body)
                if digest.hexdigest() != chunk_sha256[index]:
                    raise BackupIntegrityError(
                        f"{where}: chunk {index} does not match the manifest's sha256: tampered or corrupt"
                    )
            out = pool.take(max(length - _TAG, chunk_bytes))
            try:
                aes.decrypt_into(
                    nonce, body, chunk_aad(backup_id, item, index, index == expected - 1), memoryview(out)[:length - _TAG]
                )
            except InvalidTag:
                raise BackupIntegrityError(
                    f"{where}: chunk {index} fails authentication: tampered, reordered or from another backup"
                ) from None
            if tags is not None:
                tags.update(body[length - _TAG:])
        finally:
            done()
        yield out, length - _TAG
    if reader.read(1):
        raise BackupIntegrityError(f"{where}: bytes after the final chunk: the object was extended")
