"""Backup objects and restored files are written and read around the page cache (O_DIRECT,
illuma_pipelines/backups/directio.py); DuckDB files are copied two at a time. Through real files
on this machine's file system."""

from __future__ import annotations

import errno
import os
import secrets

import duckdb
import pytest

from illuma_pipelines.backups import DirectoryStore, create_backup, restore_backup
from illuma_pipelines.backups.core import PLATFORM_ITEM
from illuma_pipelines.backups.directio import (
    BLOCK_BYTES,
    aligned_buffers,
    open_direct,
    read_blocks,
    write_file,
)
from illuma_pipelines.registry import add_merchant
from illuma_pipelines.warehouse import DuckDBWarehouse

pytestmark = pytest.mark.usefixtures("backup_key")

SIZES = [0, 1, 4095, 4096, BLOCK_BYTES - 1, BLOCK_BYTES, BLOCK_BYTES + 1, 2 * BLOCK_BYTES + 4097]


def _pieces(data: bytes):
    """Blocks of uneven sizes, as the encryption hands them on (a chunk's head, its body)."""
    at, sizes = 0, [28, 3 * 1024 * 1024 + 7, 5 * 1024 * 1024]
    for n in range(1 << 30):
        if at >= len(data):
            return
        step = sizes[n % len(sizes)]
        yield memoryview(data)[at:at + step]
        at += step


@pytest.mark.parametrize("size", SIZES)
def test_a_file_written_and_read_around_the_page_cache_round_trips(size, tmp_path):
    probe = open_direct(tmp_path / "probe", os.O_WRONLY | os.O_CREAT)
    assert probe is not None, f"{tmp_path} refuses O_DIRECT: this test would not test it"
    os.close(probe)
    data, buffers = secrets.token_bytes(size), aligned_buffers()
    path = tmp_path / "object"
    write_file(path, _pieces(data), buffers)
    assert path.read_bytes() == data
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    blocks = read_blocks(path, buffers)
    assert blocks is not None
    assert b"".join(bytes(b) for b in blocks) == data


def test_where_the_file_system_refuses_o_direct_the_page_cache_is_used(tmp_path, monkeypatch):
    real_open = os.open

    def refusing(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing)
    data, buffers = secrets.token_bytes(BLOCK_BYTES + 5), aligned_buffers()
    path = tmp_path / "object"
    write_file(path, _pieces(data), buffers)
    assert path.read_bytes() == data
    assert read_blocks(path, buffers) is None


def test_files_copied_two_at_a_time_keep_the_manifest_in_order_and_restore(tmp_path):
    wh = DuckDBWarehouse(tmp_path / "data" / "warehouse.duckdb")
    wh.ensure_platform()
    mids = [f"copy_{n:02d}" for n in range(7)]
    for n, mid in enumerate(mids):
        add_merchant(wh, mid)
        con = duckdb.connect(str(wh.merchant_file(mid)))
        con.execute(f"CREATE TABLE main.t AS SELECT range AS i FROM range({(n + 1) * 1000})")
        con.close()
    store = DirectoryStore(tmp_path / "backups")
    manifest = create_backup(wh, store)
    names = [i["name"] for i in manifest["items"]]
    assert names == [PLATFORM_ITEM] + sorted(wh.merchant_file(m).name for m in mids)
    for n, mid in enumerate(mids):
        assert manifest["tables"][f"m_{mid}.t"]["rows"] == (n + 1) * 1000
    result = restore_backup(wh, store, manifest["backup_id"], f"duckdb:///{tmp_path / 'restored' / 'warehouse.duckdb'}")
    assert result.ok and result.tables_compared >= len(mids)


def test_a_failed_copy_leaves_no_file_attached_and_no_backup(tmp_path):
    """A store that fails on the third object: the backup fails with that error, every file is
    released (another process could open it), and no complete backup is listed."""
    wh = DuckDBWarehouse(tmp_path / "data" / "warehouse.duckdb")
    wh.ensure_platform()
    mids = [f"fail_{n:02d}" for n in range(6)]
    for mid in mids:
        add_merchant(wh, mid)

    class FullDisk(DirectoryStore):
        written = 0

        def write(self, backup_id, name, blocks):
            FullDisk.written += 1
            if FullDisk.written == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(backup_id, name, blocks)

    store = FullDisk(tmp_path / "backups")
    with pytest.raises(OSError, match="No space left"):
        create_backup(wh, store)
    assert store.backup_ids() == []
    for mid in mids:
        con = duckdb.connect(str(wh.merchant_file(mid)))  # raises while our process still holds it
        con.close()
    assert create_backup(wh, DirectoryStore(tmp_path / "again"))["tables"]


def test_a_reader_closed_before_or_while_reading_releases_its_file(tmp_path):
    """A restore that fails before reading an object, or stops inside it, leaves no descriptor
    open and no reading thread behind."""
    import threading

    path, buffers = tmp_path / "object", aligned_buffers()
    write_file(path, [secrets.token_bytes(3 * BLOCK_BYTES + 5)], buffers)
    open_fds = len(os.listdir("/proc/self/fd"))
    threads = threading.active_count()
    unstarted = read_blocks(path, buffers)
    assert len(os.listdir("/proc/self/fd")) == open_fds + 1
    unstarted.close()
    assert len(os.listdir("/proc/self/fd")) == open_fds
    stopped = read_blocks(path, buffers)
    assert len(next(stopped)) == BLOCK_BYTES
    stopped.close()
    assert len(os.listdir("/proc/self/fd")) == open_fds
    assert threading.active_count() == threads
