"""Where encrypted backups are kept: a directory (default `var/backups/`, ILLUMA_BACKUP_DIR) or
an S3-compatible bucket through boto3 (ILLUMA_BACKUP_S3_BUCKET, optional ILLUMA_BACKUP_S3_ENDPOINT
and ILLUMA_BACKUP_S3_PREFIX; credentials the usual AWS way).

A backup is a folder (prefix) `<backup id>/` of encrypted objects and `manifest.json`, which is
written last: a backup without its manifest is incomplete and is neither listed nor restored.
Objects are written and read as streams of blocks, so memory stays at a chunk or an S3 part.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path

from illuma_pipelines.backups.crypto import BackupError
from illuma_pipelines.backups.directio import aligned_buffers, read_blocks, write_file
from illuma_pipelines.paths import var_dir

BACKUP_DIR_ENV = "ILLUMA_BACKUP_DIR"
S3_BUCKET_ENV = "ILLUMA_BACKUP_S3_BUCKET"
S3_ENDPOINT_ENV = "ILLUMA_BACKUP_S3_ENDPOINT"
S3_PREFIX_ENV = "ILLUMA_BACKUP_S3_PREFIX"
MANIFEST = "manifest.json"
BACKUP_ID = re.compile(r"(wh|ks)-\d{8}T\d{6}Z-[0-9a-f]{6}")
_OBJECT = re.compile(r"[A-Za-z0-9_.-]{1,120}")
_READ_BLOCK = 1024 * 1024


def check_backup_id(backup_id: str) -> str:
    if not BACKUP_ID.fullmatch(backup_id):
        raise BackupError(
            f"{backup_id!r} is not a backup id (like wh-20261206T020000Z-1a2b3c): see `illuma backups list`"
        )
    return backup_id


def _check_object(name: str) -> str:
    if not _OBJECT.fullmatch(name) or name in (".", ".."):
        raise BackupError(f"invalid backup object name {name!r}")
    return name


class BackupStore(ABC):
    """Objects grouped by backup id."""

    description: str

    @abstractmethod
    def write(self, backup_id: str, name: str, blocks: Iterable[bytes]) -> None:
        """Store object `name` of backup `backup_id` from a stream of blocks."""

    @abstractmethod
    def read(self, backup_id: str, name: str) -> Iterator[bytes]:
        """Stream object `name` of `backup_id`; BackupError when it is missing."""

    @abstractmethod
    def backup_ids(self) -> list[str]:
        """Every complete backup (manifest written), oldest first."""

    @abstractmethod
    def delete(self, backup_id: str) -> None:
        """Delete a backup, complete or not. Idempotent."""

    @abstractmethod
    def incomplete_ids(self) -> list[str]:
        """Backups started but without a manifest (a killed run)."""

    def read_bytes(self, backup_id: str, name: str) -> bytes:
        return b"".join(self.read(backup_id, name))

    def reader(self, backup_id: str, name: str, *, direct: bool = False):
        """Object `name` of `backup_id` for a consumer that reads it once, in order: a binary
        file (`readinto`, `close`) where the store has one, else the blocks of `read`. `direct`:
        a consumer that takes the bytes as fast as they come, for which a file store reads around
        the page cache."""
        return self.read(backup_id, name)


class DirectoryStore(BackupStore):
    """`<root>/<backup id>/<object>`, files 0600 in folders 0700.

    An object is flushed to disk (fsync) on a thread while the next one is written; the manifest
    is written only once every object of its backup is on disk, then flushed with its folder. A
    crash before that leaves a backup without a manifest: incomplete, never listed or restored."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.description = f"directory {self.root}"
        self._flushing: dict[str, list[tuple[threading.Thread, list[BaseException]]]] = {}
        self._buffers = aligned_buffers()  # objects are written and read around the page cache

    def _dir(self, backup_id: str) -> Path:
        return self.root / check_backup_id(backup_id)

    def write(self, backup_id: str, name: str, blocks: Iterable[bytes]) -> None:
        folder = self._dir(backup_id)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = folder / _check_object(name)
        tmp = folder / f".{name}.partial"
        if name == MANIFEST:
            self._wait_flushed(backup_id)
        try:
            if name == MANIFEST:
                with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
                    for block in blocks:
                        handle.write(block)
                    handle.flush()
                    os.fsync(handle.fileno())
            else:
                write_file(tmp, blocks, self._buffers)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if name == MANIFEST:
            _fsync(folder)
        else:
            failures: list[BaseException] = []
            flusher = threading.Thread(target=_fsync, args=(target, failures), name="backup-fsync", daemon=True)
            flusher.start()
            self._flushing.setdefault(backup_id, []).append((flusher, failures))

    def _wait_flushed(self, backup_id: str) -> None:
        for flusher, failures in self._flushing.pop(backup_id, []):
            flusher.join()
            if failures:
                raise BackupError(f"backup {backup_id}: writing an object to disk failed: {failures[0]}") from failures[0]
        _fsync(self._dir(backup_id))  # the objects' names

    def read(self, backup_id: str, name: str) -> Iterator[bytes]:
        path = self._dir(backup_id) / _check_object(name)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise BackupError(f"backup {backup_id} has no object {name} in {self.description}") from None
        with handle:
            while block := handle.read(_READ_BLOCK):
                yield block

    def reader(self, backup_id: str, name: str, *, direct: bool = False):
        """With `direct`, the object's bytes read around the page cache (directio.py), a few
        blocks ahead; else (or where the file system refuses that) the file, unbuffered. A restore
        of DuckDB files takes the bytes as fast as the disk gives them: direct. pg_restore takes
        them in bursts between the server's work: the kernel's read-ahead serves it better
        (ADR 0013)."""
        path = self._dir(backup_id) / _check_object(name)
        try:
            return (read_blocks(path, self._buffers) if direct else None) or path.open("rb", buffering=0)
        except FileNotFoundError:
            raise BackupError(f"backup {backup_id} has no object {name} in {self.description}") from None

    def _ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and BACKUP_ID.fullmatch(p.name))

    def backup_ids(self) -> list[str]:
        return [i for i in self._ids() if (self.root / i / MANIFEST).exists()]

    def incomplete_ids(self) -> list[str]:
        return [i for i in self._ids() if not (self.root / i / MANIFEST).exists()]

    def delete(self, backup_id: str) -> None:
        for flusher, _ in self._flushing.pop(backup_id, []):
            flusher.join()
        shutil.rmtree(self._dir(backup_id), ignore_errors=True)


def _fsync(path: Path, failures: list[BaseException] | None = None) -> None:
    """Flush a file's (or a folder's entries') data to disk; fsync acts on the file, whichever
    descriptor asks."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if failures is None:
            raise
        failures.append(exc)


class S3Store(BackupStore):
    """An S3-compatible bucket. Objects are uploaded in parts (multipart upload), so a large
    dump never sits in memory; a failed upload is aborted."""

    PART_BYTES = 16 * 1024 * 1024  # S3 parts must be at least 5 MiB (but the last)

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None, client=None) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url or None)
        self.description = f"s3://{bucket}/{self.prefix}"

    def _key(self, backup_id: str, name: str) -> str:
        return f"{self.prefix}{check_backup_id(backup_id)}/{_check_object(name)}"

    def write(self, backup_id: str, name: str, blocks: Iterable[bytes]) -> None:
        key = self._key(backup_id, name)
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        parts: list[dict] = []
        try:
            buf = bytearray()

            def send(data: bytes) -> None:
                number = len(parts) + 1
                answer = self.client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number, Body=data
                )
                parts.append({"ETag": answer["ETag"], "PartNumber": number})

            for block in blocks:
                buf += block
                if len(buf) >= self.PART_BYTES:
                    send(bytes(buf))
                    buf.clear()
            if buf or not parts:
                send(bytes(buf))
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            raise

    def read(self, backup_id: str, name: str) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(backup_id, name))["Body"]
        except ClientError as exc:
            raise BackupError(
                f"backup {backup_id} has no object {name} in {self.description} ({exc.response['Error']['Code']})"
            ) from None
        try:
            yield from body.iter_chunks(_READ_BLOCK)
        finally:
            body.close()

    def _objects(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                rest = item["Key"][len(self.prefix):]
                backup_id, _, name = rest.partition("/")
                if BACKUP_ID.fullmatch(backup_id):
                    out.setdefault(backup_id, set()).add(name)
        return out

    def backup_ids(self) -> list[str]:
        return sorted(i for i, names in self._objects().items() if MANIFEST in names)

    def incomplete_ids(self) -> list[str]:
        return sorted(i for i, names in self._objects().items() if MANIFEST not in names)

    def delete(self, backup_id: str) -> None:
        names = self._objects().get(check_backup_id(backup_id), set())
        keys = [{"Key": f"{self.prefix}{backup_id}/{n}"} for n in sorted(names)]
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[start:start + 1000]})


def default_store() -> BackupStore:
    """The bucket when ILLUMA_BACKUP_S3_BUCKET is set, else the directory (ILLUMA_BACKUP_DIR, or
    `var/backups/`)."""
    bucket = os.environ.get(S3_BUCKET_ENV)
    if bucket:
        return S3Store(bucket, prefix=os.environ.get(S3_PREFIX_ENV, ""),
                       endpoint_url=os.environ.get(S3_ENDPOINT_ENV) or None)
    return DirectoryStore(os.environ.get(BACKUP_DIR_ENV) or var_dir() / "backups")
