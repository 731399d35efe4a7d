"""Restoring a warehouse backup, and why a restore never brings deleted data back (ADR 0013).

`restore_backup` decrypts and checks every chunk, restores into a database (or DuckDB path) you
name — never over the live warehouse without `force` — and compares every table's row count and
checksum with the manifest. Then it re-applies what the LIVE ledger (never the backup's) records
since the backup was taken:

- an erased merchant is never written at all: its DuckDB file is skipped, its PostgreSQL schema
  left out of pg_restore's list, so not one of its bytes reaches the target; its registry rows are
  deleted from the restored platform and the live ledger's rows of its erasure copied there;
- a merchant whose PII was purged since gets the purge again, in its own scope on the restored
  copy (purge.purge_pii with the merchant's live policy and the purge's time), so due rows are
  deleted and payloads redacted; and the values themselves stay unreadable whatever the copy
  holds, because their keys were destroyed in the live key store, which no warehouse backup
  contains (crypto-shredding, ADR 0007).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from illuma_pipelines.backups.core import (
    DAGSTER,
    DAGSTER_PG_URL_VAR,
    MAIN,
    PLATFORM_ITEM,
    WAREHOUSE,
    decrypted,
    duckdb_counts,
    duckdb_stats,
    file_checksum,
    latest_backup,
    main_of,
    open_backup,
    parts,
    pg_item,
    quoted_name,
    read_manifest,
    table_key,
)
from illuma_pipelines.backups.crypto import BackupError, BackupKeyring, ChunkBuffers
from illuma_pipelines.backups.directio import aligned_buffers, write_file
from illuma_pipelines.backups.store import BackupStore
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.retention import DEFAULT_POLICY, Category
from illuma_pipelines.warehouse import (
    PLATFORM_SCHEMA,
    DuckDBWarehouse,
    PostgresWarehouse,
    TableSpec,
    Warehouse,
    cols,
)

logger = logging.getLogger(__name__)


def pg_plain(url: str) -> str:
    from illuma_pipelines.backups import pg

    return pg.plain_dsn(url)

LEDGER = f"{PLATFORM_SCHEMA}.retention_ledger"
LEDGER_COLUMNS = (
    "ledger_id, merchant_id, rule_id, target, action, rows_affected, cutoff, policy_version, "
    "policy_fingerprint, purged_at, run_id"
)
# Rows a purge of buyer PII writes; a restore re-applies them.
PURGE_RULES = tuple(r.id for r in DEFAULT_POLICY.rules if r.category in (Category.BUYER_PII, Category.RAW_PAYLOAD_PII))
# A restore checks each chunk by its GCM tag, not also by the manifest's sha256 of it: the tag
# authenticates the chunk under the data key, bound to its backup, object, index and final flag,
# and the manifest (MAC verified) gives the count of chunks, so a tampered, swapped, dropped or
# added chunk fails either way; the sha256 (read every byte once more, the costliest stage of a
# DuckDB restore) is checked by `illuma backups verify`, which needs no target (ADR 0013).
CHUNK_SHA256_ON_RESTORE = False
# Platform tables whose rows of an erased merchant the erasure deletes; the audit log, the ledger
# and the rights requests stay (ADR 0004).
_KEPT_AFTER_ERASURE = {"audit_log", "retention_ledger", "data_requests"}

BACKUP_CHECKS = TableSpec(
    "backup_checks",
    cols(
        "check_id text!", "backup_id text!", "checked_at timestamptz!", "ok boolean!", "tables_compared bigint!",
        "mismatches json", "excluded_merchants json", "purges_reapplied json", "seconds double", "error text",
    ),
    primary_key=("check_id",),
)


@dataclass
class RestoreResult:
    backup_id: str
    target: str
    backup_created_at: datetime
    tables_compared: int = 0
    mismatches: list[str] = field(default_factory=list)
    excluded_merchants: list[str] = field(default_factory=list)
    purges_reapplied: dict[str, int] = field(default_factory=dict)
    warehouse: str = MAIN
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.mismatches


# ------------------------------------------------------------------ what the live ledger says
def erased_since(live: Warehouse, since: datetime) -> set[str]:
    """Merchants the live ledger records as erased (schema dropped or registry row deleted) at
    or after `since`."""
    with live.connect() as conn:
        rows = conn.fetchall(
            f"SELECT DISTINCT merchant_id FROM {LEDGER} WHERE purged_at >= ? AND "
            "(action = 'drop_schema' OR (rule_id = 'merchant_account' AND target = ?))",
            [since, f"{PLATFORM_SCHEMA}.merchants"],
        )
    return {r[0] for r in rows}


def purged_since(live: Warehouse, since: datetime) -> dict[str, datetime]:
    """merchant -> time of its latest buyer-PII purge recorded in the live ledger since `since`."""
    marks = ", ".join("?" * len(PURGE_RULES))
    with live.connect() as conn:
        rows = conn.fetchall(
            f"SELECT merchant_id, max(purged_at) FROM {LEDGER} WHERE purged_at >= ? AND rule_id IN ({marks}) "
            "GROUP BY merchant_id",
            [since, *PURGE_RULES],
        )
    return {m: t for m, t in rows}


# --------------------------------------------------------------------------------- restoring
def restore_backup(
    live: Warehouse,
    store: BackupStore,
    backup_id: str,
    into_url: str,
    *,
    force: bool = False,
    keyring: BackupKeyring | None = None,
    admin_url: str | None = None,
    warehouse: str = MAIN,
) -> RestoreResult:
    """Restore warehouse `warehouse` (main, or a named one of ILLUMA_WAREHOUSES) of backup
    `backup_id` into `into_url`, and re-apply the live ledger's erasures and purges since it was
    taken (module docstring).

    DuckDB: `duckdb:///path/warehouse.duckdb` (merchant files go beside it, as in the warehouse).
    PostgreSQL: a login that may create objects in the target database (the admin's), on a
    server that has the warehouse's roles; the database is created when missing.
    """
    started = time.monotonic()
    manifest, data_key = open_backup(store, backup_id, keyring)
    if manifest["kind"] != WAREHOUSE:
        raise BackupError(f"{backup_id} is a {manifest['kind']} backup, not a warehouse backup")
    held = manifest.get("warehouses") or {MAIN: {"engine": manifest["engine"], "merchants": manifest["merchants"]}}
    if warehouse not in held:
        raise BackupError(f"{backup_id} holds warehouse(s) {', '.join(sorted(held))}, not {warehouse!r}")
    created = datetime.fromisoformat(manifest["created_at"])
    result = RestoreResult(backup_id, _shown(into_url), created, warehouse=warehouse)
    here = set(held[warehouse]["merchants"])
    erased = erased_since(live, created) & here
    result.excluded_merchants = sorted(erased)
    live_part = dict(parts(live)).get(warehouse)
    if warehouse == DAGSTER and os.environ.get(DAGSTER_PG_URL_VAR):
        # Never over the live Dagster database either.
        live_part = PostgresWarehouse(pg_plain(os.environ[DAGSTER_PG_URL_VAR]))
    items = [i for i in manifest["items"] if i.get("warehouse", MAIN) == warehouse]
    engine = held[warehouse]["engine"]
    if engine == "duckdb":
        if not into_url.startswith("duckdb:///"):
            raise BackupError(f"{backup_id} is a DuckDB backup: restore it --into duckdb:///path/warehouse.duckdb")
        target = _restore_duckdb(live_part, store, manifest, data_key, items, Path(into_url[len("duckdb:///"):]), erased, force)
    elif engine == "postgres":
        if into_url.startswith("duckdb:"):
            raise BackupError(f"{backup_id} is a PostgreSQL backup: restore it --into postgresql://admin@host/db")
        target = _restore_postgres(
            live_part or main_of(live), store, manifest, data_key, warehouse, into_url, erased, force, admin_url
        )
    else:
        raise BackupError(f"{backup_id}: unknown engine {engine!r}")
    _compare(result, manifest, target, erased, warehouse)
    if warehouse == DAGSTER:
        result.notes.append(
            "the Dagster instance's database: the merchants sensor deletes erased merchants' runs and "
            "partitions again on its first tick (they are gone from the registry)"
        )
    elif warehouse != MAIN:
        result.notes.append(
            "a named warehouse restored alone: the platform (registry, ledger) is main's, so erased merchants "
            "were left out but purges were not re-run here; their values stay unreadable (keys destroyed)"
        )
    if warehouse != MAIN:
        result.seconds = round(time.monotonic() - started, 3)
        return result
    _reapply_erasures(live, target, erased, created)
    for merchant_id, at in sorted(purged_since(live, created).items()):
        if merchant_id in erased or merchant_id not in here:
            continue
        from illuma_pipelines import purge

        done = purge.purge_pii(
            target.warehouse, merchant_id, now=at, run_id=f"restore:{backup_id}",
            policy=purge.merchant_policy(live, merchant_id),
        )
        result.purges_reapplied[merchant_id] = done.total
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _shown(url: str) -> str:
    import re

    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


@dataclass
class _Target:
    warehouse: Warehouse  # the restored copy, opened as the pipeline opens a warehouse
    stats: dict


def _restore_duckdb(live, store, manifest, data_key, items, path: Path, erased: set[str], force: bool) -> _Target:
    if isinstance(live, DuckDBWarehouse) and path.resolve() == live.path.resolve() and not force:
        raise BackupError(f"{path} is the live warehouse: restore elsewhere, or pass --force to replace it")
    target = DuckDBWarehouse(path)
    if (path.exists() or target.merchants_dir.exists()) and not force:
        raise BackupError(f"{path} (or {target.merchants_dir.name}) exists: choose an empty place or pass --force")
    staging = path.parent / f".{path.name}.restoring-{secrets.token_hex(3)}"
    staging.mkdir(mode=0o700, parents=True)
    stats: dict = {}
    try:
        placed: list[tuple[Path, Path]] = []
        buffers, aligned = ChunkBuffers(), aligned_buffers()
        # Each file is counted on a thread while the next one is decrypted, attached read-only to
        # one in-memory DuckDB: opening each file as a database of its own cost 20 ms a file
        # (DuckDB builds its catalog of functions per database), attaching it 2 ms.
        # The counter's thread is joined before its database closes, on a failure too.
        with _Counter(target.memory_limit) as count, ThreadPoolExecutor(1, thread_name_prefix="restore-count") as counter:
            counting = []
            for n, item in enumerate(items):
                merchant = item.get("merchant_id")
                if merchant in erased:
                    continue  # never written: not one byte of an erased merchant reaches the target
                final = path if item["name"] == PLATFORM_ITEM else target.merchant_file(merchant)
                staged = staging / str(n) / final.name  # its final name: DuckDB names its catalog after it
                staged.parent.mkdir(mode=0o700)
                blocks = decrypted(
                    store, manifest, data_key, item["name"], buffers, hashes=CHUNK_SHA256_ON_RESTORE, direct=True
                )
                write_file(staged, blocks, aligned)
                placed.append((staged, final))
                counting.append(counter.submit(count, staged, item))
            for done in counting:
                stats.update(done.result())
        # Every object decrypted and checked: only now is the target touched.
        if force:
            for old in (path, path.with_name(path.name + ".wal")):
                old.unlink(missing_ok=True)
            shutil.rmtree(target.merchants_dir, ignore_errors=True)
        target.merchants_dir.mkdir(parents=True, exist_ok=True)
        for staged, final in placed:
            os.replace(staged, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _Target(target, stats)


class _Counter:
    """Counts the tables of restored DuckDB files, each attached read-only under its own name (the
    catalog name it has when opened) to one in-memory database."""

    def __init__(self, memory_limit: str) -> None:
        self.memory_limit = memory_limit
        self._con = None

    def __enter__(self) -> _Counter:
        import duckdb

        # One thread: it reads metadata only, and the restore's decryption needs the other core.
        self._con = duckdb.connect(config={"memory_limit": self.memory_limit, "threads": 1})
        return self

    def __exit__(self, *exc) -> None:
        self._con.close()

    def fetchall(self, sql: str, params=()) -> list[tuple]:
        return self._con.execute(sql, list(params)).fetchall()

    def fetchone(self, sql: str, params=()) -> tuple | None:
        return self._con.execute(sql, list(params)).fetchone()

    def __call__(self, staged: Path, item: dict) -> dict[str, dict]:
        """The tables of file `staged` as the manifest describes them: each one's row count,
        counted in the file, and the file's checksum (`decrypted` checked it against the
        manifest's while the file was written). A backup from before file checksums gets every
        row hashed, as it was made."""
        catalog = quoted_name(staged.stem)
        self._con.execute(f"ATTACH '{str(staged).replace(chr(39), chr(39) * 2)}' AS {catalog} (READ_ONLY)")
        try:
            checksum = file_checksum(item)
            if checksum is None:
                return duckdb_stats(self, staged.stem)
            counts = duckdb_counts(self, staged.stem)
            return {name: {"rows": rows, "checksum": checksum} for name, rows in counts.items()}
        finally:
            self._con.execute(f"DETACH {catalog}")


def _connect_or_create(into_url: str):
    import psycopg
    from psycopg.conninfo import make_conninfo

    from illuma_pipelines.backups import pg

    dsn = pg.plain_dsn(into_url)
    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise BackupError(f"cannot connect to {_shown(into_url)}: {exc}") from None
    dbname = pg.dbname_of(into_url)
    with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True) as con:
        con.execute(f"CREATE DATABASE {pg._quote(dbname)}")
    logger.info("created database %s for the restore", dbname)
    return psycopg.connect(dsn, autocommit=True)


def _feed(proc: subprocess.Popen, blocks) -> None:
    """Write `blocks` to the process's stdin until it stops reading (pg_restore -l reads the
    table of contents only: the rest is checked by the restore's own pass)."""
    for block in blocks:
        try:
            proc.stdin.write(block)
        except BrokenPipeError:
            break
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()


def _run_fed(cmd: list[str], env: dict, blocks, *, stdout) -> None:
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=stdout, stderr=err, env=env, start_new_session=True)
        try:
            _feed(proc, blocks)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code != 0:
            err.seek(0)
            raise BackupError(f"{Path(cmd[0]).name} failed (exit {code}): {err.read().decode(errors='replace')[-2000:]}")


def _restore_postgres(live, store, manifest, data_key, warehouse, into_url, erased, force, admin_url) -> _Target:
    from psycopg.conninfo import make_conninfo

    from illuma_pipelines.backups import pg

    if isinstance(live, PostgresWarehouse) and pg.same_database(into_url, live.url) and not force:
        raise BackupError(
            f"{_shown(into_url)} is the live warehouse database: restore into another database, or pass --force"
        )
    with _connect_or_create(into_url) as con:
        occupied = con.execute("SELECT to_regnamespace('platform') IS NOT NULL").fetchone()[0]
    if occupied and not force:
        raise BackupError(f"{_shown(into_url)} already holds a warehouse: choose an empty database or pass --force")
    workdir = Path(tempfile.mkdtemp(prefix="illuma-restore-"))
    try:
        # Pass 1: pg_restore reads the archive's table of contents (its first chunks, checked).
        toc_path = workdir / "toc.list"
        with toc_path.open("wb") as toc_out:
            blocks = decrypted(store, manifest, data_key, pg_item(warehouse), hashes=CHUNK_SHA256_ON_RESTORE)
            _run_fed([pg.tool("pg_restore"), "-l"], dict(os.environ), blocks, stdout=toc_out)
        toc, left_out = pg.toc_lines_without(toc_path.read_text(), {merchant_schema(m) for m in erased})
        list_path = workdir / "restore.list"
        list_path.write_text(toc)
        if erased:
            logger.info("restore leaves out %d archive entries of erased merchants %s", left_out, sorted(erased))
        # Pass 2: every chunk checked as it streams, in one transaction: a bad chunk or any failure
        # leaves the target as it was.
        cmd, env = pg.restore_command(pg.plain_dsn(into_url), str(list_path), clean=bool(occupied and force), no_owner=False)
        blocks = decrypted(store, manifest, data_key, pg_item(warehouse), ChunkBuffers(), hashes=CHUNK_SHA256_ON_RESTORE)
        _run_fed(cmd, env, blocks, stdout=subprocess.DEVNULL)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    stats = pg.table_stats_parallel(pg.plain_dsn(into_url))
    # The restored copy as the pipeline opens it: its own login, merchants in their own scopes.
    restored = PostgresWarehouse(make_conninfo(pg.plain_dsn(live.url), dbname=pg.dbname_of(into_url)), admin_url=admin_url)
    return _Target(restored, stats)


def _compare(result: RestoreResult, manifest: dict, target: _Target, erased: set[str], warehouse: str) -> None:
    skipped = {merchant_schema(m) for m in erased}
    mine = {name: manifest["tables"].get(table_key(warehouse, name)) for name in _names_of(manifest, warehouse)}
    expected = {k: v for k, v in mine.items() if k.split(".", 1)[0] not in skipped}
    got = target.stats
    for name in sorted(expected.keys() | got.keys()):
        if name not in got:
            result.mismatches.append(f"{name}: in the backup, missing after the restore")
        elif name not in expected:
            if name.split(".", 1)[0] not in skipped:
                result.mismatches.append(f"{name}: restored but not in the manifest")
        elif got[name] != expected[name]:
            result.mismatches.append(
                f"{name}: {got[name]['rows']} rows (checksum {got[name]['checksum']}) restored, "
                f"{expected[name]['rows']} (checksum {expected[name]['checksum']}) in the manifest"
            )
    result.tables_compared = len(expected)


def _names_of(manifest: dict, warehouse: str) -> list[str]:
    """The plain `schema.table` names of one warehouse's tables in the manifest."""
    if warehouse == MAIN:
        return [k for k in manifest["tables"] if ":" not in k]
    prefix = f"{warehouse}:"
    return [k[len(prefix):] for k in manifest["tables"] if k.startswith(prefix)]


def _reapply_erasures(live: Warehouse, target: _Target, erased: set[str], since: datetime) -> None:
    if not erased:
        return
    ids = sorted(erased)
    marks = ", ".join("?" * len(ids))
    with live.connect() as conn:
        ledger_rows = conn.fetchall(
            f"SELECT {LEDGER_COLUMNS} FROM {LEDGER} WHERE merchant_id IN ({marks}) AND purged_at >= ?", [*ids, since]
        )
    with target.warehouse.connect() as conn:
        tables = [r[0] for r in conn.fetchall(
            "SELECT DISTINCT table_name FROM information_schema.columns WHERE table_schema = ? AND column_name = 'merchant_id'",
            [PLATFORM_SCHEMA],
        )]
        for table in sorted(set(tables) - _KEPT_AFTER_ERASURE):
            conn.execute(f"DELETE FROM {PLATFORM_SCHEMA}.{table} WHERE merchant_id IN ({marks})", ids)
        conn.execute(
            f"UPDATE {PLATFORM_SCHEMA}.data_requests SET completed_at = coalesce(completed_at, ?), "
            f"outcome = coalesce(outcome, 'erased') WHERE merchant_id IN ({marks})",
            [datetime.now(UTC), *ids],
        )
        have = {r[0] for r in conn.fetchall(f"SELECT ledger_id FROM {LEDGER} WHERE merchant_id IN ({marks})", ids)}
        for row in ledger_rows:
            if row[0] not in have:
                conn.execute(f"INSERT INTO {LEDGER} ({LEDGER_COLUMNS}) VALUES ({', '.join('?' * len(row))})", list(row))


# --------------------------------------------------------------------------- restore checks
def ensure_backup_checks_table(live: Warehouse, admin_url: str | None = None) -> None:
    """platform.backup_checks, made by the admin on PostgreSQL (the platform schema is the
    admin's; the pipeline may read and append)."""
    live = main_of(live)
    if isinstance(live, DuckDBWarehouse):
        with live.connect() as conn:
            conn.create_table(PLATFORM_SCHEMA, BACKUP_CHECKS)
        return
    with live.connect() as conn:
        if conn.table_exists(PLATFORM_SCHEMA, BACKUP_CHECKS.name):
            return
    import psycopg
    from psycopg.conninfo import make_conninfo

    from illuma_pipelines.backups import pg
    from illuma_pipelines.warehouse import PIPELINE_ROLE

    if not admin_url:
        raise BackupError("platform.backup_checks is missing: set ILLUMA_WAREHOUSE_ADMIN_URL once to create it")
    with psycopg.connect(make_conninfo(pg.plain_dsn(admin_url), dbname=pg.dbname_of(live.url)), autocommit=True) as con:
        con.execute(BACKUP_CHECKS.ddl(PLATFORM_SCHEMA, "postgres"))
        con.execute(f"REVOKE ALL ON {PLATFORM_SCHEMA}.backup_checks FROM PUBLIC")
        con.execute(f"GRANT SELECT, INSERT ON {PLATFORM_SCHEMA}.backup_checks TO {PIPELINE_ROLE}")


def _scratch(live: Warehouse, engine: str, admin_url: str | None) -> tuple[str, callable]:
    """A scratch target of `engine` for a restore check, and how to drop it."""
    name = f"illuma_restore_check_{secrets.token_hex(4)}"
    main = main_of(live)
    if engine == "duckdb":
        base = main.path.parent.parent if isinstance(main, DuckDBWarehouse) else None
        folder = Path(tempfile.mkdtemp(prefix=name + "-", dir=base))
        return f"duckdb:///{folder / 'warehouse.duckdb'}", lambda: shutil.rmtree(folder, ignore_errors=True)
    import psycopg
    from psycopg.conninfo import make_conninfo

    from illuma_pipelines.backups import pg

    if not admin_url:
        raise BackupError("a restore check on PostgreSQL needs ILLUMA_WAREHOUSE_ADMIN_URL (it creates a scratch database)")
    admin = pg.plain_dsn(admin_url)
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return make_conninfo(admin, dbname=name), drop


def restore_check(
    live: Warehouse,
    store: BackupStore,
    *,
    backup_id: str | None = None,
    keyring: BackupKeyring | None = None,
    admin_url: str | None = None,
    now: datetime | None = None,
) -> RestoreResult:
    """Restore the latest (or the given) warehouse backup — each of its warehouses in turn, main
    first, into a scratch database or folder of its own — compare every table with the manifest,
    record the outcome in platform.backup_checks, drop the scratch copies. A failure is recorded
    too, then raised. The result is main's, with every warehouse's tables and mismatches."""
    import json

    now = (now or datetime.now(UTC)).astimezone(UTC)
    ensure_backup_checks_table(live, admin_url)
    if backup_id is None:
        latest = latest_backup(store, WAREHOUSE)
        if latest is None:
            raise BackupError(f"no warehouse backup in {store.description} to check: run `illuma backups create`")
        backup_id = latest.backup_id
    started = time.monotonic()
    result, error = None, None
    try:
        manifest = read_manifest(store, backup_id)
        held = manifest.get("warehouses") or {MAIN: {"engine": manifest["engine"]}}
        admins = {name: getattr(part, "admin_url", None) or admin_url for name, part in parts(live)}
        for name in sorted(held, key=lambda n: (n != MAIN, n)):
            into, drop = _scratch(live, held[name]["engine"], admins.get(name) or admin_url)
            try:
                one = restore_backup(live, store, backup_id, into, keyring=keyring, admin_url=admin_url, warehouse=name)
            finally:
                drop()
            if result is None:
                result = one
            else:
                result.tables_compared += one.tables_compared
                result.mismatches += [f"[{name}] {m}" for m in one.mismatches]
                result.excluded_merchants += one.excluded_merchants
    except Exception as exc:
        error = exc
    with live.connect() as conn:
        conn.execute(
            f"INSERT INTO {PLATFORM_SCHEMA}.backup_checks (check_id, backup_id, checked_at, ok, tables_compared, "
            "mismatches, excluded_merchants, purges_reapplied, seconds, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                secrets.token_hex(8), backup_id, now, bool(result and result.ok and error is None),
                result.tables_compared if result else 0,
                json.dumps(result.mismatches if result else []), json.dumps(result.excluded_merchants if result else []),
                json.dumps(result.purges_reapplied if result else {}), round(time.monotonic() - started, 3),
                None if error is None else f"{type(error).__name__}: {error}"[:2000],
            ],
        )
    if error is not None:
        raise error
    result.seconds = round(time.monotonic() - started, 3)
    return result


def last_successful_check(live: Warehouse) -> datetime | None:
    with live.connect() as conn:
        if not conn.table_exists(PLATFORM_SCHEMA, BACKUP_CHECKS.name):
            return None
        row = conn.fetchone(f"SELECT max(checked_at) FROM {PLATFORM_SCHEMA}.backup_checks WHERE ok")
    return row[0] if row else None
