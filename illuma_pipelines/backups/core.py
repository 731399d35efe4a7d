"""Warehouse backups: one encrypted, verifiable copy of the whole warehouse (ADR 0013).

- PostgreSQL: `pg_dump -Fc` of the warehouse database in one exported snapshot, by the read-only
  backup login (illuma_pipelines/backups/pg.py); per-table row counts and checksums are read in
  the same snapshot while the dump streams, so they describe exactly what the dump holds.
- DuckDB: each database file (the platform's, then every merchant's) after CHECKPOINT, copied
  while our connection holds the file's lock (no writer can change it meanwhile), its counts and
  checksums read by that connection.

Every object is encrypted while it streams (crypto.py) under a fresh data key wrapped by the
backup key, and the manifest, written last, says what the backup holds: objects, sizes, the
sha256 of each encrypted chunk, table counts and checksums, the merchants, the key id, and a MAC.
Key material is not in it: the PII vault's keys live in the key store (`var/keys/`, or a KMS),
never in the warehouse; the key store is backed up on its own (keystore.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from illuma_pipelines.backups.crypto import (
    CHUNK_BYTES,
    BackupError,
    BackupIntegrityError,
    BackupKeyring,
    ChunkBuffers,
    ItemStats,
    decrypt_stream,
    encrypt_stream,
    manifest_mac,
    tags_digest,
)
from illuma_pipelines.backups.store import MANIFEST, BackupStore, check_backup_id
from illuma_pipelines.warehouse import (
    DuckDBWarehouse,
    PostgresWarehouse,
    Warehouse,
    wait_for_duckdb_lock,
)

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "illuma-backup-manifest-1"
WAREHOUSE, KEYSTORE = "warehouse", "keystore"
MAIN = "main"  # the warehouse that holds the platform (ADR 0011)
DAGSTER = "dagster"  # the Dagster instance's PostgreSQL database, in production
DAGSTER_PG_URL_VAR = "DAGSTER_PG_URL"
PG_ITEM = "warehouse.pgdump"  # main's dump; a named warehouse's is `<name>.pgdump`
PLATFORM_ITEM = "platform.duckdb"
# A DuckDB table's checksum in the manifest: its file's, as copied: the digest of the file's
# chunk tags (crypto.tags_digest, a keyed checksum of its bytes: backups since 2026-12), or the
# sha256 of its bytes (backups before, still restored and verified that way).
FILE_TAGS_CHECKSUM = "file-gcm-tags:"
FILE_CHECKSUM = "file-sha256:"
COPIERS = 2  # DuckDB files encrypted and written at once


def file_checksum(item: dict) -> str | None:
    """The checksum a DuckDB file object's tables carry in the manifest; None for a backup from
    before file checksums (its tables' rows were hashed)."""
    if item.get("tags_sha256"):
        return FILE_TAGS_CHECKSUM + item["tags_sha256"]
    if item.get("plain_sha256"):
        return FILE_CHECKSUM + item["plain_sha256"]
    return None


def new_backup_id(kind: str, now: datetime) -> str:
    prefix = {WAREHOUSE: "wh", KEYSTORE: "ks"}[kind]
    return f"{prefix}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _redact(url: str) -> str:
    import re

    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


@dataclass(frozen=True)
class BackupInfo:
    backup_id: str
    kind: str
    created_at: datetime
    engine: str
    encrypted_bytes: int
    merchants: int
    tables: int

    @staticmethod
    def of(manifest: dict) -> BackupInfo:
        return BackupInfo(
            backup_id=manifest["backup_id"],
            kind=manifest["kind"],
            created_at=datetime.fromisoformat(manifest["created_at"]),
            engine=manifest.get("engine", ""),
            encrypted_bytes=sum(i["encrypted_bytes"] for i in manifest["items"]),
            merchants=len(manifest.get("merchants", [])),
            tables=len(manifest.get("tables", {})),
        )


class _Writer:
    """Encrypts objects of one backup into the store and collects their manifest entries."""

    def __init__(self, store: BackupStore, keyring: BackupKeyring, backup_id: str, chunk_bytes: int) -> None:
        self.store, self.backup_id, self.chunk_bytes = store, backup_id, chunk_bytes
        self.data_key = secrets.token_bytes(32)
        self.key_id, self.wrapped = keyring.wrap(backup_id, self.data_key)
        self.items: list[dict] = []
        self.buffers = ChunkBuffers()  # one set for every object of the backup

    def put(self, name: str, source, *, keep: bool = True, **extra) -> dict:
        """Encrypt binary file `source` (a file, a pipe) into the store as object `name`; its
        manifest entry is kept, unless the caller keeps it in an order of its own."""
        stats = ItemStats()
        blocks = encrypt_stream(self.data_key, self.backup_id, name, source, stats, self.chunk_bytes, self.buffers)
        self.store.write(self.backup_id, name, blocks)
        item = {
            "name": name, **extra, "plain_bytes": stats.plain_bytes,
            "encrypted_bytes": stats.encrypted_bytes, "chunk_bytes": self.chunk_bytes, "chunk_sha256": stats.chunk_sha256,
            "tags_sha256": stats.tags_sha256,
        }
        if keep:
            self.items.append(item)
        return item

    def finish(self, manifest: dict) -> dict:
        manifest.update(
            format=MANIFEST_FORMAT, backup_id=self.backup_id, key_id=self.key_id, wrapped_key=self.wrapped,
            items=self.items,
        )
        manifest["mac"] = manifest_mac(self.data_key, manifest)
        self.store.write(self.backup_id, MANIFEST, [json.dumps(manifest, indent=1, sort_keys=True).encode()])
        return manifest


def parts(wh: Warehouse) -> list[tuple[str, Warehouse]]:
    """(name, warehouse) of every warehouse behind `wh`: main first, then the named ones a
    `PlacedWarehouse` reaches (ILLUMA_WAREHOUSES, ADR 0011)."""
    from illuma_pipelines.placement import PlacedWarehouse

    if isinstance(wh, PlacedWarehouse):
        return [(name, wh.named(name)) for name in wh.warehouse_names()]
    return [(MAIN, wh)]


def main_of(wh: Warehouse) -> Warehouse:
    return parts(wh)[0][1]


def table_key(warehouse: str, name: str) -> str:
    """Manifest key of table `schema.table` of a warehouse: main's plain, a named one's prefixed."""
    return name if warehouse == MAIN else f"{warehouse}:{name}"


def pg_item(warehouse: str) -> str:
    return PG_ITEM if warehouse == MAIN else f"{warehouse}.pgdump"


def _duckdb_tables(conn, catalog: str | None = None) -> list[tuple[str, str, str]]:
    """(manifest name, schema, table) of every base table of DuckDB catalog `catalog` (default:
    the open file's)."""
    catalog = catalog or conn.fetchone("SELECT current_database()")[0]
    rows = conn.fetchall(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? AND NOT temporary ORDER BY 1, 2",
        [catalog],
    )
    # A merchant file's tables live in `main` of a catalog named after the schema, m_<id>.
    return [(f"{catalog if schema == 'main' else schema}.{table}", schema, table) for schema, table in rows]


def quoted_name(*names: str) -> str:
    """A DuckDB name (catalog, schema, table), each part quoted."""
    return ".".join('"' + name.replace('"', '""') + '"' for name in names)


def duckdb_counts(conn, catalog: str | None = None) -> dict[str, int]:
    """{"schema.table": rows} of every base table of DuckDB catalog `catalog` (default: the open
    file's), from its row groups' counts (no column is read), in one query."""
    catalog = catalog or conn.fetchone("SELECT current_database()")[0]
    tables = _duckdb_tables(conn, catalog)
    if not tables:
        return {}
    sql = " UNION ALL ".join(
        f"SELECT {n}, count(*) FROM {quoted_name(catalog, schema, table)}" for n, (_, schema, table) in enumerate(tables)
    )
    counts = dict(conn.fetchall(sql))
    return {name: int(counts[n]) for n, (name, _, _) in enumerate(tables)}


def duckdb_stats(conn, catalog: str | None = None) -> dict[str, dict]:
    """{"schema.table": {"rows", "checksum"}} with a logical checksum (every row read and hashed):
    what backups made before file checksums recorded, still compared when one is restored."""
    catalog = catalog or conn.fetchone("SELECT current_database()")[0]
    out = {}
    for name, schema, table in _duckdb_tables(conn, catalog):
        rows, checksum = conn.fetchone(
            f"SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0)::VARCHAR FROM {quoted_name(catalog, schema, table)} t"
        )
        out[name] = {"rows": int(rows), "checksum": checksum}
    return out


def _backup_duckdb(name: str, wh: DuckDBWarehouse, writer: _Writer) -> tuple[list[str], dict]:
    """Each file as it lies on disk after CHECKPOINT. A table's manifest entry is its row count and
    its file's sha256: a restore writes that file back byte for byte (every chunk checked) and
    proves it by the same sha256 and by counting every table of the restored file again. Hashing
    every row (what the first backups did) read and decompressed the whole warehouse a second
    time, for a proof the file's own checksum gives."""
    tables: dict[str, dict] = {}
    merchants = wh.merchant_ids()
    prefix = "" if name == MAIN else f"{name}."
    scopes = [(PLATFORM_ITEM, None, wh.path)] if name == MAIN else []
    scopes += [(prefix + wh.merchant_file(m).name, m, wh.merchant_file(m)) for m in merchants]
    # Files are attached, checkpointed and counted on a thread of their own, in order, a few
    # ahead; COPIERS of them are encrypted and written at once (one file's chunks are too few to
    # keep both cores busy: most merchant files are a few chunks).
    files = _AttachedFiles(wh)
    holds: dict[int, Future] = {}
    lock = threading.Lock()

    def hold(n: int) -> Future:
        with lock:
            if n not in holds:
                holds[n] = opener.submit(files.hold, scopes[n][2])
            return holds[n]

    def copy(n: int) -> tuple[dict, dict[str, int]]:
        item, merchant, path = scopes[n]
        if n + COPIERS < len(scopes):
            hold(n + COPIERS)
        held, counts = hold(n).result()
        with held, path.open("rb", buffering=0) as source, _mapped(source) as data:
            entry = writer.put(item, data, keep=False, format="duckdb", merchant_id=merchant, warehouse=name)
        return entry, counts

    opener = ThreadPoolExecutor(1, thread_name_prefix="backup-open")
    copiers = ThreadPoolExecutor(COPIERS, thread_name_prefix="backup-copy")
    copies: list[Future] = []
    try:
        for n in range(min(COPIERS, len(scopes))):
            hold(n)
        copies += [copiers.submit(copy, n) for n in range(len(scopes))]
        for done in copies:
            entry, counts = done.result()
            writer.items.append(entry)
            checksum = file_checksum(entry)
            tables.update({table_key(name, k): {"rows": rows, "checksum": checksum} for k, rows in counts.items()})
    finally:
        for pending in copies:
            pending.cancel()
        copiers.shutdown(wait=True)
        opener.shutdown(wait=True)
        files.close()  # detaches every file still attached (held ahead of a copy that failed)
    return merchants, tables


@contextlib.contextmanager
def _mapped(source) -> Iterator:
    """The file's bytes memory-mapped read-only (encrypted where they lie), or the file itself
    when empty (nothing to map). Nobody writes the file meanwhile: it is attached, so locked."""
    import mmap

    size = os.fstat(source.fileno()).st_size
    if not size:
        yield source
        return
    with mmap.mmap(source.fileno(), size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) as data:
        yield data


class _AttachedFiles:
    """One in-memory DuckDB to which each file of a warehouse is attached in turn, read-write:
    attached, the file is locked against every other process as when it is opened, but in 2 ms
    where opening it as a database of its own took 20 (DuckDB builds its catalog of functions for
    every database it opens)."""

    def __init__(self, wh: DuckDBWarehouse) -> None:
        import duckdb

        # One thread: it checkpoints and counts metadata, and the copy needs the other core.
        self._con = duckdb.connect(config={"memory_limit": wh.memory_limit, "threads": 1})
        self.lock_timeout = wh.lock_timeout

    def close(self) -> None:
        self._con.close()

    def hold(self, path: Path) -> tuple[contextlib.ExitStack, dict[str, int]]:
        """Attach `path` under its own catalog name (waiting while another process holds it),
        CHECKPOINT it and count its tables: the counts, and a stack whose closing detaches it.
        While it is attached, nobody writes the file: it is counted and copied as it is."""
        cursor = self._con.cursor()
        catalog = quoted_name(path.stem)
        self._attach(cursor, path, catalog)
        held = contextlib.ExitStack()
        held.callback(cursor.close)
        held.callback(cursor.execute, f"DETACH {catalog}")
        try:
            cursor.execute(f"CHECKPOINT {catalog}")
            wal = path.with_name(path.name + ".wal")
            if wal.exists() and wal.stat().st_size:
                raise BackupError(f"{path.name}: its write-ahead log is not empty after CHECKPOINT; retry the backup")
            return held, duckdb_counts(_Cursor(cursor), path.stem)
        except BaseException:
            held.close()
            raise

    def _attach(self, cursor, path: Path, catalog: str) -> None:
        sql = f"ATTACH '{str(path).replace(chr(39), chr(39) * 2)}' AS {catalog} (READ_WRITE)"
        wait_for_duckdb_lock(path, lambda: cursor.execute(sql), self.lock_timeout)


class _Cursor:
    """A DuckDB cursor with the calls the table counts use."""

    def __init__(self, cursor) -> None:
        self._cursor = cursor

    def fetchall(self, sql: str, params=()) -> list[tuple]:
        return self._cursor.execute(sql, list(params)).fetchall()

    def fetchone(self, sql: str, params=()) -> tuple | None:
        return self._cursor.execute(sql, list(params)).fetchone()


def _backup_postgres(name: str, wh: PostgresWarehouse, writer: _Writer, admin_url: str | None) -> tuple[list[str], dict, dict]:
    from illuma_pipelines.backups import pg

    dsn = pg.ensure_backup_login(wh.url, admin_url if name == MAIN else (wh.admin_url or admin_url))
    stats, versions = _dump_postgres(name, dsn, writer)
    return wh.merchant_ids(), stats, versions


def _dump_postgres(name: str, dsn: str, writer: _Writer) -> tuple[dict, dict]:
    """pg_dump of database `dsn` as object `<name>`, its table counts and checksums read in the
    dump's own snapshot."""
    import psycopg

    from illuma_pipelines.backups import pg

    with psycopg.connect(dsn, autocommit=True) as con:
        versions = pg.check_versions(con)
        con.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        (snapshot,) = con.execute("SELECT pg_export_snapshot()").fetchone()
        stats: dict = {}
        failure: list[BaseException] = []

        def read_stats() -> None:
            try:
                stats.update(pg.table_stats(con))
            except BaseException as exc:  # reported after the dump
                failure.append(exc)

        with pg.dump_process(dsn, snapshot) as proc:
            reader = threading.Thread(target=read_stats, name="backup-table-stats")
            reader.start()
            errors: list[bytes] = []
            drain = threading.Thread(target=lambda: errors.append(proc.stderr.read()), name="pg_dump-stderr")
            drain.start()
            try:
                writer.put(pg_item(name), proc.stdout, format="pg_dump-custom", warehouse=name)
            finally:
                reader.join()
                drain.join()
                code = proc.wait()
            if code != 0:
                message = b"".join(errors).decode(errors="replace").strip()
                raise BackupError(f"pg_dump of warehouse {name!r} failed (exit {code}): {message[-2000:]}")
        con.execute("COMMIT")
        if failure:
            raise BackupError(f"reading table counts in the dump's snapshot failed: {failure[0]}") from failure[0]
    return {table_key(name, k): v for k, v in stats.items()}, versions


def create_backup(
    wh: Warehouse,
    store: BackupStore,
    *,
    keyring: BackupKeyring | None = None,
    now: datetime | None = None,
    admin_url: str | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    include_dagster: bool = True,
) -> dict:
    """Back every warehouse up into `store` (and, when DAGSTER_PG_URL names one, the Dagster
    instance's database); returns the manifest. A failure deletes what was written, so the store
    never holds half a backup."""
    keyring = keyring or BackupKeyring.load()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    backup_id = new_backup_id(WAREHOUSE, now)
    writer = _Writer(store, keyring, backup_id, chunk_bytes)
    manifest: dict = {"kind": WAREHOUSE, "created_at": now.isoformat(), "source": _redact(wh.url)}
    started = time.monotonic()
    manifest.update(engine=wh.dialect, merchants=[], tables={}, warehouses={})
    try:
        for name, part in parts(wh):
            if isinstance(part, DuckDBWarehouse):
                merchants, tables = _backup_duckdb(name, part, writer)
                extra: dict = {}
            elif isinstance(part, PostgresWarehouse):
                merchants, tables, extra = _backup_postgres(name, part, writer, admin_url)
                manifest.update(extra)
            else:
                raise BackupError(f"no backup method for a {type(part).__name__}")
            manifest["merchants"] = sorted({*manifest["merchants"], *merchants})
            manifest["tables"].update(tables)
            manifest["warehouses"][name] = {"engine": part.dialect, "merchants": merchants, "source": _redact(part.url)}
        dagster_url = os.environ.get(DAGSTER_PG_URL_VAR)
        if dagster_url and include_dagster:
            # The Dagster instance's own database (production): its runs, schedules and sensors'
            # state, dumped by its own login (the instance owns it).
            from illuma_pipelines.backups import pg

            stats, _ = _dump_postgres(DAGSTER, pg.plain_dsn(dagster_url), writer)
            manifest["tables"].update(stats)
            manifest["warehouses"][DAGSTER] = {"engine": "postgres", "merchants": [], "source": _redact(dagster_url)}
        manifest["duration_seconds"] = round(time.monotonic() - started, 3)
        return writer.finish(manifest)
    except BaseException:
        store.delete(backup_id)
        raise


# ------------------------------------------------------------------------------ reading back
def read_manifest(store: BackupStore, backup_id: str) -> dict:
    check_backup_id(backup_id)
    try:
        manifest = json.loads(store.read_bytes(backup_id, MANIFEST))
    except ValueError:
        raise BackupIntegrityError(f"backup {backup_id}: its manifest is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or manifest.get("backup_id") != backup_id:
        raise BackupIntegrityError(f"backup {backup_id}: its manifest is not an ILLUMA backup manifest for this id")
    return manifest


def open_backup(store: BackupStore, backup_id: str, keyring: BackupKeyring | None = None) -> tuple[dict, bytes]:
    """The manifest, checked with its MAC, and the backup's data key."""
    import hmac

    manifest = read_manifest(store, backup_id)
    keyring = keyring or BackupKeyring.load(create=False)
    data_key = keyring.unwrap(backup_id, manifest["key_id"], manifest["wrapped_key"])
    if not hmac.compare_digest(manifest.get("mac", ""), manifest_mac(data_key, manifest)):
        raise BackupIntegrityError(f"backup {backup_id}: the manifest was altered (its MAC does not verify)")
    return manifest, data_key


def item_of(manifest: dict, name: str) -> dict:
    for item in manifest["items"]:
        if item["name"] == name:
            return item
    raise BackupError(f"backup {manifest['backup_id']} holds no {name}")


def decrypted(
    store: BackupStore, manifest: dict, data_key: bytes, name: str, buffers: ChunkBuffers | None = None,
    *, hashes: bool = True, direct: bool = False,
) -> Iterator[bytes | memoryview]:
    """The plaintext of object `name`, checked chunk by chunk (each chunk's tag and, with
    `hashes`, its sha256), then as a whole: its size, and the digest of its chunk tags (or, in a
    backup from before tag digests, the sha256 of its plaintext). With `buffers`, each block is a
    view valid until the next one is asked for: for a consumer that writes it at once. `direct`:
    read the object around the page cache where the store can (`BackupStore.reader`)."""
    item = item_of(manifest, name)
    where = f"backup {manifest['backup_id']}, {name}"
    size = 0
    tags = tags_digest() if item.get("tags_sha256") else None
    plain = hashlib.sha256() if item.get("plain_sha256") and tags is None else None
    # Closed in this order when the consumer stops early: the stream's thread, then the file.
    with (
        contextlib.closing(store.reader(manifest["backup_id"], name, direct=direct)) as source,
        contextlib.closing(decrypt_stream(
            data_key, manifest["backup_id"], name, source, item["chunk_sha256"],
            buffers, item.get("chunk_bytes") or CHUNK_BYTES, tags=tags, hashes=hashes,
        )) as blocks,
    ):
        for block in blocks:
            size += len(block)
            if plain is not None:
                plain.update(block)
            yield block
    if size != item["plain_bytes"]:
        raise BackupIntegrityError(f"{where}: {size} bytes decrypted, {item['plain_bytes']} in the manifest")
    if tags is not None and tags.hexdigest() != item["tags_sha256"]:
        raise BackupIntegrityError(f"{where}: its chunk tags do not match the manifest's digest of them")
    if plain is not None and plain.hexdigest() != item["plain_sha256"]:
        raise BackupIntegrityError(f"{where}: the plaintext does not match the manifest's sha256")


def verify_backup(store: BackupStore, backup_id: str, keyring: BackupKeyring | None = None) -> dict:
    """Decrypt and check every chunk of every object (nothing written); returns the manifest."""
    manifest, data_key = open_backup(store, backup_id, keyring)
    buffers = ChunkBuffers()
    for item in manifest["items"]:
        for _ in decrypted(store, manifest, data_key, item["name"], buffers, direct=True):
            pass
    return manifest


def list_backups(store: BackupStore, kind: str | None = None) -> list[BackupInfo]:
    """Complete backups, oldest first (manifests only: no key needed)."""
    out = []
    for backup_id in store.backup_ids():
        try:
            info = BackupInfo.of(read_manifest(store, backup_id))
        except (BackupError, KeyError, ValueError) as exc:
            logger.warning("backup %s: unreadable manifest (%s)", backup_id, exc)
            continue
        if kind is None or info.kind == kind:
            out.append(info)
    return sorted(out, key=lambda i: i.created_at)


def latest_backup(store: BackupStore, kind: str = WAREHOUSE) -> BackupInfo | None:
    backups = list_backups(store, kind)
    return backups[-1] if backups else None
