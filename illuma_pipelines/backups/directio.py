"""Files of a backup or restore written and read around the page cache (O_DIRECT).

A backup writes, and a restore reads and writes, gigabytes once each: through the page cache
every byte lands in a freshly allocated page first. On this platform's VMs, memory freed a few
seconds earlier has gone back to the host, and touching a fresh page costs 1-3 s a GiB (a 3.7 GB
kernel copy: 1.7 s when it reuses pages freed a moment before, 6-12 s a few seconds later;
ADR 0013). O_DIRECT moves the bytes between our few reused buffers and the disk (1-1.6 GB/s
here) without a page-cache copy, and a backup no longer evicts the warehouse's hot pages.

Where a file system refuses O_DIRECT (tmpfs, some network file systems) the plain path is used.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from illuma_pipelines.backups.crypto import ChunkBuffers, ahead, fill

ALIGN = 4096  # O_DIRECT wants buffer address, file offset and length aligned to the block size
BLOCK_BYTES = 8 * 1024 * 1024


def _aligned(size: int) -> memoryview:
    return memoryview(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))


def aligned_buffers() -> ChunkBuffers:
    """Page-aligned buffers, reused by every file of a backup or restore (a fresh buffer per
    block would cost the page faults O_DIRECT is there to save)."""
    return ChunkBuffers(_aligned)


def open_direct(path: Path, flags: int, mode: int = 0o600) -> int | None:
    """A descriptor of `path` opened with O_DIRECT, or None where the file system refuses it
    (EINVAL); any other error (a missing file) is raised."""
    try:
        return os.open(path, flags | os.O_DIRECT, mode)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return None


def write_file(path: Path, blocks: Iterable[bytes | memoryview], buffers: ChunkBuffers) -> None:
    """Write `blocks` to a new file `path` (0600): with O_DIRECT where possible, one aligned
    buffer filled while the one before is written on a thread (the disk stays busy); the last,
    partial block through the page cache. Not flushed: fsync it for the metadata."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = open_direct(path, flags)
    if fd is None:
        with open(os.open(path, flags, 0o600), "wb") as handle:
            for block in blocks:
                handle.write(block)
        return
    held = [buffers.take(BLOCK_BYTES), buffers.take(BLOCK_BYTES)]
    writing: list[Future | None] = [None, None]
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="backup-write") as writer:
            try:
                cur, at = 0, 0
                for block in blocks:
                    data = memoryview(block)
                    while data:
                        n = min(len(data), BLOCK_BYTES - at)
                        held[cur][at:at + n] = data[:n]
                        data, at = data[n:], at + n
                        if at == BLOCK_BYTES:
                            writing[cur] = writer.submit(_write_all, fd, held[cur])
                            cur, at = 1 - cur, 0
                            _wait(writing, cur)
                _wait(writing, 1 - cur)
                whole = at - at % ALIGN
                if whole:
                    _write_all(fd, held[cur][:whole])
                if at > whole:
                    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                    _write_all(fd, held[cur][whole:at])
            finally:
                for pending in writing:
                    if pending is not None:
                        pending.exception()  # the buffers are not given back while written
    finally:
        os.close(fd)
        for buf in held:
            buffers.give(buf)


def _wait(writing: list[Future | None], index: int) -> None:
    pending, writing[index] = writing[index], None
    if pending is not None:
        pending.result()


def _write_all(fd: int, view: memoryview) -> None:
    done = 0
    while done < len(view):
        done += os.write(fd, view[done:])


def read_blocks(path: Path, buffers: ChunkBuffers, depth: int = 2) -> DirectBlocks | None:
    """The bytes of `path` in aligned blocks read with O_DIRECT, `depth` blocks ahead on a
    thread; None where the file system refuses O_DIRECT."""
    fd = open_direct(path, os.O_RDONLY)
    return None if fd is None else DirectBlocks(fd, buffers, depth)


class DirectBlocks:
    """An iterator of a file's blocks, each valid until the next one is asked for. `close`
    releases the file, the reading thread and the buffers, whether reading began or not."""

    def __init__(self, fd: int, buffers: ChunkBuffers, depth: int) -> None:
        self._file, self._buffers = open(fd, "rb", buffering=0), buffers
        self._ring = [buffers.take(BLOCK_BYTES) for _ in range(depth + 2)]  # queued, being filled, held
        self._blocks = ahead(self._read(), depth)

    def __iter__(self) -> DirectBlocks:
        return self

    def __next__(self) -> memoryview:
        return next(self._blocks)

    def _read(self) -> Iterator[memoryview]:
        for n in range(1 << 62):
            buf = self._ring[n % len(self._ring)]
            got = fill(self._file, buf)  # short only at the end of the file
            yield buf[:got]
            if got < BLOCK_BYTES:
                return

    def close(self) -> None:
        self._blocks.close()  # stops and joins the reading thread, if it started
        if not self._file.closed:
            self._file.close()
            for buf in self._ring:
                self._buffers.give(buf)
            self._ring = []
