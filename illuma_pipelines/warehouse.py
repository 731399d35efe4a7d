"""The merchant warehouse: one interface, two engines (embedded DuckDB, production PostgreSQL).

Tenancy follows ADR 0001 (docs/decisions/0001-warehouse-tenancy.md): a `platform` schema for the
registry and the audit log, and one schema per merchant (`m_<merchant_id>`) that only the merchant's
scope reaches. On PostgreSQL a merchant scope is a session of the merchant's own login role, which
owns its schema and holds no other right; the pipeline's login is not a superuser and holds rights
on the platform schema only, so no platform statement ever runs on a merchant's objects. On DuckDB
each merchant is a file of its own, opened alone with file access and configuration changes
disabled; the platform is another file.

SQL in this project uses `?` placeholders; the PostgreSQL backend translates them.
"""

from __future__ import annotations

import contextlib
import csv
import getpass
import io
import logging
import os
import re
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from illuma_pipelines.merchant_ids import merchant_schema, validate_merchant_id
from illuma_pipelines.warehouse_logins import (
    login_ref,
    merchant_login_role,
    resolve_login_password,
    scram_verifier,
)

if TYPE_CHECKING:  # pandas costs half a second to import: where a frame is made, not by every user
    import pandas as pd

logger = logging.getLogger(__name__)

PLATFORM_SCHEMA = "platform"

# Portable column types, rendered per engine.
_TYPES = {
    "text": ("VARCHAR", "TEXT"),
    "bigint": ("BIGINT", "BIGINT"),
    "integer": ("INTEGER", "INTEGER"),
    "boolean": ("BOOLEAN", "BOOLEAN"),
    "date": ("DATE", "DATE"),
    "timestamptz": ("TIMESTAMPTZ", "TIMESTAMPTZ"),
    "money": ("DECIMAL(18,4)", "NUMERIC(18,4)"),
    "json": ("JSON", "JSONB"),
    "double": ("DOUBLE", "DOUBLE PRECISION"),
}
_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")


# An information_schema condition (two parameters: the schema name twice) for "in merchant
# schema ?": the schema on PostgreSQL; on DuckDB the `main` schema of the merchant's own file,
# whose catalog carries the schema's name (ADR 0001).
IN_SCHEMA = "(table_schema = ? OR (table_catalog = ? AND table_schema = 'main'))"


class WarehouseError(RuntimeError):
    """A warehouse operation failed for a reason the caller can act on."""


def _ident(name: str) -> str:
    if not _IDENT.fullmatch(name):
        raise WarehouseError(f"invalid SQL identifier {name!r}: use lowercase letters, digits, _")
    return name


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True

    def __post_init__(self) -> None:
        _ident(self.name)
        if self.type not in _TYPES:
            raise WarehouseError(f"unknown column type {self.type!r}; known: {sorted(_TYPES)}")


# DuckDB compresses text with FSST by default, whose analysis at checkpoint dominated loading raw
# payloads (4.3 s of 5 s for 20,000 Amazon orders of 4.8 kB; 8 s once their PII is sealed, as
# ciphertexts do not compress) while zstd took 0.1-0.4 s and a sixth of the space
# (bench/landing.py, ADR 0007).
_DUCKDB_COMPRESSION = {"json": " USING COMPRESSION zstd"}


@dataclass(frozen=True)
class TableSpec:
    """A table's columns and key, rendered to DDL for either engine."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self, schema: str, dialect: str) -> str:
        cols = [self.column_ddl(c, dialect) for c in self.columns]
        if self.primary_key:
            cols.append(f"PRIMARY KEY ({', '.join(_ident(k) for k in self.primary_key)})")
        return f"CREATE TABLE IF NOT EXISTS {_ident(schema)}.{_ident(self.name)} ({', '.join(cols)})"


    @staticmethod
    def column_ddl(column: Column, dialect: str) -> str:
        idx = 0 if dialect == "duckdb" else 1
        return (
            f"{_ident(column.name)} {_TYPES[column.type][idx]}"
            f"{_DUCKDB_COMPRESSION.get(column.type, '') if idx == 0 else ''}"
            f"{'' if column.nullable else ' NOT NULL'}"
        )


def any_of(dialect: str, column: str) -> str:
    """A condition on `column` taking a whole list of values as one parameter: a hashed semi-join
    on DuckDB, `= ANY(array)` (hashed or by index) on PostgreSQL."""
    if dialect == "postgres":
        return f"{column} = ANY(?)"
    return f"{column} IN (SELECT unnest(CAST(? AS VARCHAR[])))"


def cols(*spec: str) -> tuple[Column, ...]:
    """`cols("merchant_id text!", "note text")`: a trailing ! marks NOT NULL."""
    out = []
    for item in spec:
        name, typ = item.split()
        out.append(Column(name, typ.rstrip("!"), nullable=not typ.endswith("!")))
    return tuple(out)


PLATFORM_TABLES: tuple[TableSpec, ...] = (
    # One row: this database's placement tag (part of every merchant login's name, so two
    # databases of one server never share a role) and the ledger signing key (never leaves the
    # platform schema; merchant scopes cannot read it).
    # PostgreSQL also records which database the tag was made in: a copy of the database (a
    # restore, CREATE DATABASE ... TEMPLATE) gets a tag and merchant logins of its own.
    TableSpec(
        "placement",
        cols("tag text!", "ledger_key text!", "created_at timestamptz!", "database_oid bigint"),
        primary_key=("tag",),
    ),
    # PostgreSQL: each merchant's login role and the reference its password resolves from.
    TableSpec(
        "merchant_logins",
        cols("merchant_id text!", "role_name text!", "credential_ref text!", "created_at timestamptz!"),
        primary_key=("merchant_id",),
    ),
    # Which warehouse holds each merchant's schema (ADR 0011): a name from the configuration
    # (`main`, or one of ILLUMA_WAREHOUSES). A merchant without a row is in `main`.
    TableSpec(
        "merchant_warehouses",
        cols("merchant_id text!", "warehouse text!", "placed_at timestamptz!"),
        primary_key=("merchant_id",),
    ),
    TableSpec(
        "merchants",
        cols(
            "merchant_id text!",
            "display_name text!",
            "status text!",
            "created_at timestamptz!",
            "offboarded_at timestamptz",
            "deletion_requested_at timestamptz",
            "immediate_deletion boolean",
        ),
        primary_key=("merchant_id",),
    ),
    TableSpec(
        "channel_connections",
        cols(
            "merchant_id text!",
            "channel text!",
            "credential_ref text!",
            "marketplace_ids text",
            "connected_at timestamptz!",
        ),
        primary_key=("merchant_id", "channel"),
    ),
    TableSpec(
        "audit_log",
        cols(
            "event_id text!",
            "occurred_at timestamptz!",
            "actor text!",
            "action text!",
            "merchant_id text",
            "details json",
        ),
        primary_key=("event_id",),
    ),
    # One row per purge action that changed something: merchant, rule, what, how many, when, by
    # which run. Never a PII value. Kept after account erasure (the proof it happened).
    TableSpec(
        "retention_ledger",
        cols(
            "ledger_id text!",
            "merchant_id text!",
            "rule_id text!",
            "target text!",
            "action text!",
            "rows_affected bigint!",
            "cutoff timestamptz",
            "policy_version text!",
            "policy_fingerprint text!",
            "purged_at timestamptz!",
            "run_id text!",
        ),
        primary_key=("ledger_id",),
    ),
    # Per-merchant retention overrides (rule id -> period), each checked by
    # retention.effective_policy: a maximum may only be shortened, a minimum only lengthened.
    TableSpec(
        "retention_overrides",
        cols("merchant_id text!", "rule_id text!", "period text!", "set_at timestamptz!", "set_by text!"),
        primary_key=("merchant_id", "rule_id"),
    ),
    # Rights requests (privacy policy §10): deletion, immediate deletion and export, answered
    # within 30 days of receipt.
    TableSpec(
        "data_requests",
        cols(
            "request_id text!",
            "merchant_id text!",
            "kind text!",
            "received_at timestamptz!",
            "deadline timestamptz!",
            "requested_by text!",
            "completed_at timestamptz",
            "outcome text",
        ),
        primary_key=("request_id",),
    ),
    # Export archives made for merchants; each expires under the `exports` retention rule (or
    # earlier when PII inside it is due first) and is then deleted by the daily purge.
    TableSpec(
        "exports",
        cols(
            "export_id text!",
            "merchant_id text!",
            "path text!",
            "created_at timestamptz!",
            "expires_at timestamptz!",
            "sha256 text!",
            "row_count bigint!",
            "requested_by text!",
            "deleted_at timestamptz",
        ),
        primary_key=("export_id",),
    ),
    # Where each merchant's reports are sent (illuma merchants add --report-email,
    # illuma merchants set-report-email); a merchant without a row gets its reports rendered, not sent.
    TableSpec(
        "report_recipients",
        cols("merchant_id text!", "email text!", "set_at timestamptz!", "set_by text!"),
        primary_key=("merchant_id",),
    ),
    # Every rendered report (illuma_pipelines/reports/store.py): its files under
    # <data dir>/reports/<merchant>/<period>/ (name, sha256, bytes) and when it was last delivered.
    TableSpec(
        "reports",
        cols(
            "merchant_id text!",
            "kind text!",
            "period text!",
            "files json!",
            "rendered_at timestamptz!",
            "delivered_at timestamptz",
        ),
        primary_key=("merchant_id", "kind", "period"),
    ),
    # Each attempt to send a report: claimed ('sending') before the provider is called, then 'sent'
    # with the provider's message id, 'failed' or 'suppressed'. A period is sent once; a forced
    # re-send is a new attempt, audited.
    TableSpec(
        "report_deliveries",
        cols(
            "merchant_id text!",
            "kind text!",
            "period text!",
            "attempt integer!",
            "recipient text!",
            "provider text!",
            "message_id text",
            "status text!",
            "error text",
            "started_at timestamptz!",
            "sent_at timestamptz",
            "forced boolean!",
        ),
        primary_key=("merchant_id", "kind", "period", "attempt"),
    ),
    # Addresses a provider reported inactive (Postmark ErrorCode 406: hard bounce, spam complaint,
    # manual suppression): nothing is sent to them again until the address is set again.
    TableSpec(
        "report_suppressions",
        cols(
            "recipient text!",
            "merchant_id text!",
            "provider text!",
            "error_code integer",
            "suppressed_at timestamptz!",
        ),
        primary_key=("recipient",),
    ),
)

# A warehouse merchants are placed in besides the main one holds no registry, audit log or ledger:
# its `platform` schema keeps only what its own merchant logins need (ADR 0011).
PLACED_TABLES: tuple[TableSpec, ...] = tuple(t for t in PLATFORM_TABLES if t.name in ("placement", "merchant_logins"))
MAIN = "main"  # the name of the warehouse that holds the platform (environment.MAIN_WAREHOUSE)


class Connection(ABC):
    """One unit of work on one engine connection; commits on clean exit, rolls back on error."""

    dialect: str

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    @abstractmethod
    def execute_count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run an UPDATE or DELETE and return how many rows it changed."""

    @abstractmethod
    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...

    @abstractmethod
    def fetch_df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame: ...

    @abstractmethod
    def fetch_text(self, sql: str) -> pd.DataFrame:
        """A query's result (no parameters) with every column as text ('' for NULL), in pandas'
        Arrow-backed string dtype: for comparing many rows by value without a Python object per
        value. Cast in SQL what must read the same on both engines (amounts: CAST AS VARCHAR)."""

    @abstractmethod
    def iter_batches(self, sql: str, params: Sequence[Any] = (), size: int = 10_000) -> Iterator[list[tuple]]:
        """The rows of a query, `size` at a time, without holding all of them; other statements
        may run on this connection between batches. Stream committed data only: on DuckDB the rows
        come from a second connection of the same database, which does not see this one's
        uncommitted writes."""

    @abstractmethod
    def load_frame(self, schema: str, table: str, frame: pd.DataFrame) -> int:
        """Bulk-append `frame` (columns named as the table's) through the engine's fast path."""

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None

    def table_columns(self, schema: str, table: str) -> list[str]:
        """The columns of `schema.table`, in order (none when it does not exist)."""
        return [r[0] for r in self.fetchall(
            f"SELECT column_name FROM information_schema.columns WHERE table_name = ? AND {IN_SCHEMA} "
            "ORDER BY ordinal_position",
            [table, schema, schema],
        )]

    def create_table(self, schema: str, spec: TableSpec) -> None:
        """Create the table if it is missing, and add the nullable columns a newer `spec` has
        that an existing table lacks (additive evolution: rows already there read NULL)."""
        self.execute(spec.ddl(schema, self.dialect))
        present = set(self.table_columns(schema, spec.name))
        for column in spec.columns:
            if not present or column.name in present:
                continue
            if not column.nullable:
                raise WarehouseError(
                    f"{schema}.{spec.name} lacks the NOT NULL column {column.name}: it cannot be added "
                    "to rows already there; migrate the table (or rebuild it) first"
                )
            self.execute(
                f"ALTER TABLE {_ident(schema)}.{_ident(spec.name)} ADD COLUMN {spec.column_ddl(column, self.dialect)}"
            )

    def rebuild_table(self, schema: str, spec: TableSpec, values: Mapping[str, Any] | None = None) -> None:
        """Rebuild the existing table `spec.name` as `spec` has it, within the transaction: its
        rows copied by column name into a new table, which then takes its name. A column of `spec`
        the table lacks takes `values[column]` (a bound value) in every row; a column it has that
        `spec` has not is left behind. For the changes DuckDB cannot make in place: a new primary
        key, or dropping a column that a later column's index depends on. (A view over the table
        binds by name when it is queried.)"""
        old = set(self.table_columns(schema, spec.name))
        added = {name: value for name, value in (values or {}).items() if name not in old}
        kept = [name for name in spec.column_names if name in old]
        rebuilt = TableSpec(f"{spec.name}_rebuilt", spec.columns, spec.primary_key)
        self.create_table(schema, rebuilt)
        self.execute(
            f"INSERT INTO {_ident(schema)}.{rebuilt.name} ({', '.join([*kept, *added])}) "
            f"SELECT {', '.join([*kept, *('?' for _ in added)])} FROM {_ident(schema)}.{_ident(spec.name)}",
            list(added.values()),
        )
        self.execute(f"DROP TABLE {_ident(schema)}.{_ident(spec.name)}")
        self.execute(f"ALTER TABLE {_ident(schema)}.{rebuilt.name} RENAME TO {_ident(spec.name)}")

    def replace_rows(
        self, schema: str, table: str, where: Mapping[str, Any], frame: pd.DataFrame
    ) -> int:
        """Replace the rows matching `where` (a partition's window) with `frame`, atomically.

        Delete-then-insert inside the connection's transaction: a re-run never duplicates and a
        run killed midway leaves the previous rows in place.
        """
        clause = " AND ".join(f"{_ident(k)} = ?" for k in where) or "TRUE"
        self.execute(f"DELETE FROM {_ident(schema)}.{_ident(table)} WHERE {clause}", list(where.values()))
        return self.load_frame(schema, table, frame) if len(frame) else 0

    def table_exists(self, schema: str, table: str) -> bool:
        row = self.fetchone(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, table],
        )
        return bool(row and row[0])

    def schema_exists(self, schema: str) -> bool:
        row = self.fetchone(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?", [schema]
        )
        return bool(row and row[0])

    def base_tables(self, schema: str) -> list[str]:
        """The base tables of `schema`, by name (on DuckDB also those of the catalog so named:
        a merchant's file)."""
        return [r[0] for r in self.fetchall(
            f"SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND {IN_SCHEMA} "
            "ORDER BY table_name",
            [schema, schema],
        )]

    def row_count(self, schema: str, table: str, where: Mapping[str, Any] | None = None) -> int:
        where = where or {}
        clause = " AND ".join(f"{_ident(k)} = ?" for k in where) or "TRUE"
        row = self.fetchone(
            f"SELECT count(*) FROM {_ident(schema)}.{_ident(table)} WHERE {clause}", list(where.values())
        )
        return int(row[0]) if row else 0


class Warehouse(ABC):
    """Engine-neutral entry point. Build one with `Warehouse.from_url`.

    `connect()` is the platform's connection: the `platform` schema only, never a merchant's
    objects. `merchant_scope(merchant_id)` is the only way to a merchant's data: on PostgreSQL a
    session of the merchant's own login role, on DuckDB the merchant's own file opened alone with
    file access and configuration changes disabled (ADR 0001).
    """

    dialect: str
    url: str
    platform_tables: tuple[TableSpec, ...] = PLATFORM_TABLES

    @staticmethod
    def from_url(url: str, admin_url: str | None = None) -> Warehouse:
        if url.startswith("duckdb:///"):
            return DuckDBWarehouse(Path(url[len("duckdb:///") :]))
        if url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            return PostgresWarehouse(url, admin_url=admin_url)
        raise WarehouseError(
            f"unsupported warehouse url {_redact(url)!r}: use duckdb:///path/to/file.duckdb or "
            "postgresql://user@host:port/dbname"
        )

    @abstractmethod
    def connect(self) -> contextlib.AbstractContextManager[Connection]: ...

    @abstractmethod
    def merchant_scope(self, merchant_id: str) -> contextlib.AbstractContextManager[Connection]:
        """A connection that can reach only `merchant_id`'s data."""

    @abstractmethod
    def ensure_platform(self) -> None:
        """The platform schema, its tables and guards, in place and current."""

    @abstractmethod
    def create_merchant_schema(self, merchant_id: str) -> str:
        """Provision the merchant's own schema (and login, or file). Idempotent."""

    @abstractmethod
    def drop_merchant_schema(self, merchant_id: str) -> None:
        """Erase the merchant's schema with everything in it (and its login, or file). Idempotent."""

    @abstractmethod
    def drop_merchant_schema_in(self, conn: Connection, merchant_id: str) -> None:
        """As drop_merchant_schema, with the platform connection `conn` of the caller's
        transaction (its ledger row): on PostgreSQL the drop commits or rolls back with it."""

    @abstractmethod
    def merchant_schema_exists(self, merchant_id: str) -> bool: ...

    @abstractmethod
    def merchant_ids(self) -> list[str]:
        """Every merchant that has a schema (or file) in this warehouse."""

    def ensure_merchant_table(self, merchant_id: str, spec: TableSpec) -> None:
        with self.merchant_scope(merchant_id) as conn:
            conn.create_table(merchant_schema(merchant_id), spec)

    # Placement (ADR 0011). A warehouse on its own is the `main` one and holds every merchant;
    # `illuma_pipelines.placement.PlacedWarehouse` routes each merchant to the warehouse it is
    # placed in.
    def warehouse_names(self) -> tuple[str, ...]:
        """The names merchants can be placed under, `main` first."""
        return (MAIN,)

    def warehouse_of(self, merchant_id: str) -> str:
        """The name of the warehouse holding the merchant's schema."""
        validate_merchant_id(merchant_id)
        return MAIN

    def merchant_warehouse(self, merchant_id: str) -> Warehouse:
        """The engine-level warehouse holding the merchant's schema (for dbt's target and file)."""
        validate_merchant_id(merchant_id)
        return self

    def drops_with_platform(self, merchant_id: str) -> bool:
        """Whether drop_merchant_schema_in drops within the platform connection's transaction (or,
        on DuckDB, alongside it): true unless the merchant lives in another database."""
        return True

    def forget_placement(self, merchant_id: str) -> None:
        """Drop any cached placement of the merchant (it was just placed or erased)."""
        return None  # a single warehouse caches none

    def _platform_ddl(self) -> list[str]:
        out = [f"CREATE SCHEMA IF NOT EXISTS {PLATFORM_SCHEMA}"]
        out += [spec.ddl(PLATFORM_SCHEMA, self.dialect) for spec in self.platform_tables]
        return out

    def _ensure_placement(self, conn: Connection) -> None:
        if not conn.fetchone(f"SELECT 1 FROM {PLATFORM_SCHEMA}.placement"):
            conn.execute(
                f"INSERT INTO {PLATFORM_SCHEMA}.placement (tag, ledger_key, created_at) VALUES (?, ?, ?)",
                [secrets.token_hex(4), secrets.token_hex(32), datetime.now(UTC)],
            )

    def placement(self) -> tuple[str, bytes]:
        """This database's placement tag (in merchant login names) and the key that signs the
        ledger rows a merchant scope hands to the platform (illuma_pipelines/purge.py)."""
        with self.connect() as conn:
            row = conn.fetchone(f"SELECT tag, ledger_key FROM {PLATFORM_SCHEMA}.placement")
        if row is None:
            raise WarehouseError("the warehouse platform is not provisioned: run `illuma warehouse provision`")
        return row[0], bytes.fromhex(row[1])


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


# ----------------------------------------------------------------------------------------- DuckDB


class _DuckDBConnection(Connection):
    dialect = "duckdb"

    def __init__(self, con: Any) -> None:
        self._con = con

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._con.execute(sql, list(params))

    def execute_count(self, sql: str, params: Sequence[Any] = ()) -> int:
        # DuckDB answers an UPDATE or DELETE with one row: the number of rows it changed.
        row = self._con.execute(sql, list(params)).fetchone()
        return int(row[0]) if row else 0

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._con.execute(sql, list(params)).fetchall()

    def fetch_df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        return self._con.execute(sql, list(params)).df()

    def fetch_text(self, sql: str) -> pd.DataFrame:
        frame = self._con.execute(sql).df()
        for name in frame.columns:
            frame[name] = frame[name].astype("str").where(frame[name].notna(), "")
        return frame

    def iter_batches(self, sql: str, params: Sequence[Any] = (), size: int = 10_000) -> Iterator[list[tuple]]:
        # A pending result is dropped by the next statement on the same DuckDB connection, so the
        # stream gets its own connection (its own snapshot) to the same database.
        reader = self._con.cursor()
        try:
            reader.execute(sql, list(params))
            while rows := reader.fetchmany(size):
                yield rows
        finally:
            reader.close()

    # A merchant's tables live in the `main` schema of its own file, whose catalog is named like
    # its schema on PostgreSQL (`m_<id>`): `m_<id>.orders` means the same on both engines.
    def table_exists(self, schema: str, table: str) -> bool:
        row = self.fetchone(
            f"SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND {IN_SCHEMA}",
            [table, schema, schema],
        )
        return bool(row and row[0])

    def schema_exists(self, schema: str) -> bool:
        row = self.fetchone(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ? OR catalog_name = ?",
            [schema, schema],
        )
        return bool(row and row[0])

    def load_frame(self, schema: str, table: str, frame: pd.DataFrame) -> int:
        if not len(frame):
            return 0
        names = ", ".join(_ident(c) for c in frame.columns)
        # Arrow-backed replacement scan: the whole frame goes in one vectorised statement.
        self._con.register("_illuma_frame", frame)
        try:
            self._con.execute(
                f"INSERT INTO {_ident(schema)}.{_ident(table)} ({names}) SELECT {names} FROM _illuma_frame"
            )
        finally:
            # After a failed insert the transaction is aborted and unregister raises too; the
            # insert's own error is the one worth reporting.
            with contextlib.suppress(Exception):
                self._con.unregister("_illuma_frame")
        return len(frame)


# DuckDB's own default is 80% of the machine's memory per process, most of it a cache of every
# block read. Pipelines run several processes at once, and a big partition would otherwise keep
# its whole raw extract cached: cap it, and let larger work spill to `<file>.tmp`.
DUCKDB_MEMORY_LIMIT_ENV = "ILLUMA_DUCKDB_MEMORY_LIMIT"
DEFAULT_DUCKDB_MEMORY_LIMIT = "512MB"
# How long opening a DuckDB file waits for another process's lock before failing with its PID.
DUCKDB_LOCK_TIMEOUT_ENV = "ILLUMA_DUCKDB_LOCK_TIMEOUT"
DEFAULT_DUCKDB_LOCK_TIMEOUT = 300.0
# A merchant scope's file is opened with no way out: no file access (ATTACH, COPY, read_*,
# extensions) and its configuration locked, so SQL inside it reaches its own file and nothing else.
_CONFINED = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


T = TypeVar("T")


def _duckdb_connect(path: Path, config: dict, timeout: float) -> Any:
    """Open `path`, waiting (and saying so) while another process holds its write lock."""
    import duckdb

    return wait_for_duckdb_lock(path, lambda: duckdb.connect(str(path), config=config), timeout)


def wait_for_duckdb_lock(path: Path, open_: Callable[[], T], timeout: float) -> T:
    """`open_()` (a connect, an ATTACH) of DuckDB file `path`, retried with backoff while another
    process holds the file's lock, saying so after 5 s; WarehouseError after `timeout` seconds."""
    import duckdb

    started = time.monotonic()
    delay, warned = 0.02, False
    while True:
        try:
            return open_()
        except duckdb.Error as exc:
            waited = time.monotonic() - started
            if not any(word in str(exc).lower() for word in ("lock", "conflict")):
                raise
            if waited >= timeout:
                raise WarehouseError(
                    f"{path.name} stayed locked by another process for {waited:.0f} s ({exc}); "
                    f"raise {DUCKDB_LOCK_TIMEOUT_ENV} or stop the process named there"
                ) from exc
            if not warned and waited > 5:
                logger.warning("waiting for the lock on %s: %s", path, exc)
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


class DuckDBWarehouse(Warehouse):
    """The platform in `<path>`, each merchant in `<path stem>.merchants/m_<id>.duckdb`."""

    dialect = "duckdb"

    def __init__(self, path: Path, memory_limit: str | None = None) -> None:
        self.path = Path(path)
        self.url = f"duckdb:///{self.path}"
        limit = memory_limit or os.environ.get(DUCKDB_MEMORY_LIMIT_ENV) or DEFAULT_DUCKDB_MEMORY_LIMIT
        if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", limit.strip(), re.IGNORECASE):
            raise WarehouseError(
                f"invalid DuckDB memory limit {limit!r} (from {DUCKDB_MEMORY_LIMIT_ENV} or the caller): "
                "give a size such as 1GB or 512MB"
            )
        self.memory_limit = limit.strip()
        raw_timeout = os.environ.get(DUCKDB_LOCK_TIMEOUT_ENV) or str(DEFAULT_DUCKDB_LOCK_TIMEOUT)
        try:
            self.lock_timeout = float(raw_timeout)
        except ValueError:
            raise WarehouseError(f"{DUCKDB_LOCK_TIMEOUT_ENV}={raw_timeout!r} is not a number of seconds") from None

    @property
    def merchants_dir(self) -> Path:
        return self.path.parent / f"{self.path.stem}.merchants"

    def merchant_file(self, merchant_id: str) -> Path:
        """The merchant's own database file; its catalog name is its schema name, `m_<id>`."""
        return self.merchants_dir / f"{merchant_schema(merchant_id)}.duckdb"

    @contextlib.contextmanager
    def _open(self, path: Path, config: dict) -> Iterator[Connection]:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One short-lived connection per unit of work: DuckDB allows one writer process per file,
        # and dbt (a separate process) must be able to open it between our steps.
        con = _duckdb_connect(path, {"memory_limit": self.memory_limit, **config}, self.lock_timeout)
        try:
            con.execute("BEGIN TRANSACTION")
            yield _DuckDBConnection(con)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def connect(self) -> contextlib.AbstractContextManager[Connection]:
        if self.path.exists():
            self._refuse_shared_layout()
        return self._open(self.path, {})

    def _refuse_shared_layout(self) -> None:
        """A file from before the per-merchant layout holds merchant schemas beside the platform;
        say so instead of reading it as empty."""
        if getattr(self, "_layout_checked", False):
            return
        import duckdb

        con = _duckdb_connect(self.path, {"memory_limit": self.memory_limit}, self.lock_timeout)
        try:
            old = con.execute(
                "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'm\\_%' ESCAPE '\\'"
            ).fetchall()
        except duckdb.Error:
            old = []
        finally:
            con.close()
        if old:
            raise WarehouseError(
                f"{self.path} holds merchant schemas ({', '.join(r[0] for r in old[:3])}...) in the "
                "platform file: that is the layout before ADR 0001's per-merchant files. Move it aside "
                "and rebuild (`make clean && make demo` locally)"
            )
        self._layout_checked = True

    @contextlib.contextmanager
    def merchant_scope(self, merchant_id: str) -> Iterator[Connection]:
        path = self.merchant_file(merchant_id)
        if not path.exists():
            raise WarehouseError(
                f"merchant {merchant_id!r} has no warehouse file {path.name}: onboard it first "
                "(illuma merchants add)"
            )
        with self._open(path, _CONFINED) as conn:
            yield conn

    def ensure_platform(self) -> None:
        with self.connect() as conn:
            for ddl in self._platform_ddl():
                conn.execute(ddl)
            self._ensure_placement(conn)

    def create_merchant_schema(self, merchant_id: str) -> str:
        validate_merchant_id(merchant_id)
        path = self.merchant_file(merchant_id)
        if not path.exists():
            with self._open(path, _CONFINED):
                pass  # creates the file, with nothing in it yet
        return merchant_schema(merchant_id)

    def drop_merchant_schema_in(self, conn: Connection, merchant_id: str) -> None:
        self.drop_merchant_schema(merchant_id)

    def drop_merchant_schema(self, merchant_id: str) -> None:
        """Delete the merchant's file and its write-ahead log and spill folder: nothing of it is
        left in a shared file, so no freed pages of it either."""
        path = self.merchant_file(merchant_id)
        for leftover in (path, path.with_name(path.name + ".wal")):
            leftover.unlink(missing_ok=True)
        spill = path.with_name(path.name + ".tmp")
        if spill.is_dir():
            import shutil

            shutil.rmtree(spill, ignore_errors=True)

    def merchant_schema_exists(self, merchant_id: str) -> bool:
        return self.merchant_file(merchant_id).exists()

    def merchant_ids(self) -> list[str]:
        if not self.merchants_dir.is_dir():
            return []
        return sorted(p.stem[2:] for p in self.merchants_dir.glob("m_*.duckdb"))


# ------------------------------------------------------------------------------------- PostgreSQL


def _pg_sql(sql: str) -> str:
    # Our SQL uses `?`; psycopg uses `%s`. Literal percent signs must be doubled for psycopg.
    return sql.replace("%", "%%").replace("?", "%s")


class _PostgresConnection(Connection):
    dialect = "postgres"

    def __init__(self, con: Any) -> None:
        self._con = con

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._con.execute(_pg_sql(sql), list(params) or None)

    def execute_count(self, sql: str, params: Sequence[Any] = ()) -> int:
        return max(self._con.execute(_pg_sql(sql), list(params) or None).rowcount, 0)

    def create_table(self, schema: str, spec: TableSpec) -> None:
        # Steps side by side (Celery workers, a merchant's first run) may create one missing table
        # at once, and CREATE TABLE IF NOT EXISTS alone then fails one of them on pg_type's unique
        # index. Whoever finds it missing locks its name until its transaction ends; the others
        # wait, then find it. A table that exists takes no lock.
        if not self.table_exists(schema, spec.name):
            self.execute(
                "SELECT pg_advisory_xact_lock(hashtext('illuma.create_table'), hashtext(?))",
                [f"{schema}.{spec.name}"],
            )
        super().create_table(schema, spec)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._con.execute(_pg_sql(sql), list(params) or None).fetchall()

    def iter_batches(self, sql: str, params: Sequence[Any] = (), size: int = 10_000) -> Iterator[list[tuple]]:
        # A server-side cursor inside this connection's transaction: other statements may run
        # between fetches.
        with self._con.cursor(name=f"illuma_stream_{secrets.token_hex(4)}") as cur:
            cur.execute(_pg_sql(sql), list(params) or None)
            while rows := cur.fetchmany(size):
                yield rows

    def fetch_df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        cur = self._con.execute(_pg_sql(sql), list(params) or None)
        import pandas as pd

        names = [d.name for d in cur.description] if cur.description else []
        return pd.DataFrame(cur.fetchall(), columns=names)

    def fetch_text(self, sql: str) -> pd.DataFrame:
        # The server writes the rows as CSV and Arrow parses them, both in C: a fetch builds a
        # Python tuple and an object per value (0.5 s for 200,000 rows of 7 columns, against 0.1 s).
        import pandas as pd
        import pyarrow as pa
        import pyarrow.csv as pcsv

        with self._con.cursor() as cur:
            buf = io.BytesIO()
            with cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv, HEADER)") as copy:
                for chunk in copy:
                    buf.write(chunk)
        data = buf.getbuffer()
        # The header (always written, rows or none) names the columns, each read as text.
        names = next(csv.reader([bytes(data[: 1 << 16]).split(b"\n", 1)[0].decode()]))
        table = pcsv.read_csv(
            pa.py_buffer(data),
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=1),
            # A value with a line break comes quoted; NULL is the unquoted empty field, read as
            # '' like an empty string (strings_can_be_null=False).
            parse_options=pcsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
            convert_options=pcsv.ConvertOptions(
                column_types={name: pa.large_string() for name in names}, strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        return pd.DataFrame({
            name: pd.array(column, dtype="str") for name, column in zip(table.column_names, table.columns, strict=True)
        })

    def load_frame(self, schema: str, table: str, frame: pd.DataFrame) -> int:
        if not len(frame):
            return 0
        names = ", ".join(_ident(c) for c in frame.columns)
        target = f"COPY {_ident(schema)}.{_ident(table)} ({names}) FROM STDIN"
        step = 50_000  # rows per chunk written to COPY

        # The fast path: Arrow's CSV writer (about 15 times pandas' speed), taken when every column
        # has a type whose Arrow text PostgreSQL reads as the same value as pandas' text: text,
        # integers, booleans, floats (NaN is NULL, as in pandas), exact decimals (Decimal objects),
        # dates, naive or UTC timestamps. Not for binary, nested (dicts, lists), categorical,
        # durations or other time zones (Arrow writes timestamps in UTC: loaded into a date, the
        # UTC text could fall on another day than the local one).
        arrow = None
        if frame.columns.is_unique:
            import pyarrow as pa

            with contextlib.suppress(pa.ArrowException, TypeError, ValueError, OverflowError):
                arrow = pa.Table.from_pandas(frame, preserve_index=False)
            for column_type in arrow.schema.types if arrow is not None else ():
                t = pa.types
                if t.is_timestamp(column_type):
                    fits = column_type.tz is None or column_type.tz in ("UTC", "Etc/UTC", "+00:00", "Z", "GMT")
                else:
                    fits = (
                        t.is_string(column_type) or t.is_large_string(column_type) or t.is_integer(column_type)
                        or t.is_boolean(column_type) or t.is_floating(column_type) or t.is_decimal(column_type)
                        or t.is_date32(column_type) or t.is_null(column_type)
                    )
                if not fits:
                    arrow = None
                    break
        with self._con.cursor() as cur:
            if arrow is not None:
                import pyarrow.csv as pcsv

                # Every string is quoted, so an empty string is `""` and a null the unquoted empty
                # field that COPY's CSV format reads as NULL.
                options = pcsv.WriteOptions(include_header=False, batch_size=step)
                with cur.copy(f"{target} (FORMAT csv)") as copy:
                    for batch in arrow.to_batches(max_chunksize=step):
                        sink = pa.BufferOutputStream()
                        pcsv.write_csv(batch, sink, options)
                        copy.write(memoryview(sink.getvalue()))
                return len(frame)
            with cur.copy(f"{target} (FORMAT csv, NULL '\\N')") as copy:
                # pandas' CSV, chunk by chunk.
                for start in range(0, len(frame), step):
                    buf = io.StringIO()
                    frame.iloc[start : start + step].to_csv(buf, header=False, index=False, na_rep="\\N")
                    copy.write(buf.getvalue())
        return len(frame)


# DISCARD ALL without its DEALLOCATE ALL, which would drop the statements psycopg prepared and
# still believes exist.
_RESET_SESSION = (
    "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; "
    "SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES"
)


class _Pool:
    """Idle PostgreSQL connections per login, reused across the units of work of a process (a run's
    step opens dozens). A connection goes back only when its transaction ended cleanly, after
    _RESET_SESSION (the settings, temp tables and locks of the unit before are gone). At most
    MAX_IDLE idle connections in all, the least recently used closed first: a process that visits
    many merchants (the tests, an operator's script) holds no more than that. Keyed by process: a
    forked worker never touches its parent's sockets."""

    MAX_IDLE = 6

    def __init__(self) -> None:
        self._idle: list[tuple[str, Any]] = []  # least recently returned first
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def take(self, key: str, connect: Any) -> Any:
        from psycopg.pq import TransactionStatus

        with self._lock:
            if self._pid != os.getpid():
                self._idle, self._pid = [], os.getpid()
            for i in range(len(self._idle) - 1, -1, -1):
                if self._idle[i][0] == key:
                    con = self._idle.pop(i)[1]
                    if not con.closed and con.info.transaction_status == TransactionStatus.IDLE:
                        return con
        return connect()

    def give(self, key: str, con: Any) -> None:
        from psycopg.pq import TransactionStatus

        if con.closed or con.info.transaction_status != TransactionStatus.IDLE or self._pid != os.getpid():
            con.close()
            return
        try:
            con.execute(_RESET_SESSION)
        except Exception:
            con.close()
            return
        with self._lock:
            self._idle.append((key, con))
            evicted = self._idle[: -self.MAX_IDLE] if len(self._idle) > self.MAX_IDLE else []
            del self._idle[: len(evicted)]
        for _, old in evicted:
            old.close()

    def drop(self, key: str) -> None:
        with self._lock:
            mine = self._pid == os.getpid()
            gone = [c for k, c in self._idle if k == key] if mine else []
            self._idle = [(k, c) for k, c in self._idle if k != key] if mine else []
        for con in gone:
            con.close()


_POOL = _Pool()


# platform.audit_log is append-only on PostgreSQL: the database refuses every UPDATE and TRUNCATE,
# and every DELETE except of a row older than AUDIT_LOG_MIN_RETENTION by the database's own clock
# in a transaction that declared itself the retention purge (`SET LOCAL illuma.purge =
# 'security_logs'`, see audit.purge_security_logs). Triggers bind superusers and owners too; they
# are enabled ALWAYS, so `session_replication_role = replica` does not skip them either.
PIPELINE_ROLE = "illuma_pipeline"  # NOLOGIN group of the pipeline's logins: platform rights only
AUDIT_LOG_MIN_RETENTION = "12 months"  # the `security_logs` minimum of the retention policy
PURGE_SETTING, SECURITY_LOG_PURGE = "illuma.purge", "security_logs"
ADMIN_URL_VAR = "ILLUMA_WAREHOUSE_ADMIN_URL"
_AUDIT_GUARD = f"{PLATFORM_SCHEMA}.audit_log_append_only"
_AUDIT_TRIGGERS = {
    "audit_log_append_only": f"BEFORE UPDATE OR DELETE ON {PLATFORM_SCHEMA}.audit_log FOR EACH ROW",
    "audit_log_no_truncate": f"BEFORE TRUNCATE ON {PLATFORM_SCHEMA}.audit_log FOR EACH STATEMENT",
}
# No `?` or `%` in here: the text goes through _pg_sql.
_AUDIT_GUARD_BODY = f"""
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF current_setting('{PURGE_SETTING}', true) = '{SECURITY_LOG_PURGE}'
           AND (OLD.occurred_at AT TIME ZONE 'UTC')
               < (now() AT TIME ZONE 'UTC') - interval '{AUDIT_LOG_MIN_RETENTION}' THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION USING
        ERRCODE = 'insufficient_privilege',
        MESSAGE = 'platform.audit_log is append-only: ' || TG_OP || ' refused',
        HINT = 'only the security-log retention purge (illuma_pipelines.audit.purge_security_logs) '
            || 'deletes audit rows, and only rows older than {AUDIT_LOG_MIN_RETENTION}';
END
"""
# No `?` or `%` in here either. Erasure's one privileged step, owned by the provisioning admin and executable by the pipeline's
# logins only: drop the merchant's schema, everything its login owns in this database, and the
# login. DROP runs no trigger, rule or function of the merchant (only superusers can create event
# triggers), so nothing of the merchant's runs with these rights. The role name comes from the
# platform's own table, never from the caller.
_ERASE_FUNCTION = f"{PLATFORM_SCHEMA}.erase_merchant_warehouse"
_ERASE_BODY = f"""
DECLARE
    login text;
BEGIN
    IF p_merchant !~ '^[a-z][a-z0-9_]{{1,39}}$' THEN
        RAISE EXCEPTION 'invalid merchant id';
    END IF;
    SELECT role_name INTO login FROM {PLATFORM_SCHEMA}.merchant_logins WHERE merchant_id = p_merchant;
    EXECUTE 'DROP SCHEMA IF EXISTS ' || quote_ident('m_' || p_merchant) || ' CASCADE';
    IF login IS NOT NULL AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = login) THEN
        EXECUTE 'DROP OWNED BY ' || quote_ident(login);
        EXECUTE 'DROP ROLE ' || quote_ident(login);
    END IF;
    DELETE FROM {PLATFORM_SCHEMA}.merchant_logins WHERE merchant_id = p_merchant;
END
"""
_CREATE_PIPELINE_ROLE = f"""
DO $illuma$
BEGIN
    CREATE ROLE {PIPELINE_ROLE} NOLOGIN;
EXCEPTION
    -- Roles are cluster-wide: another session (another database, even) created it meanwhile.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$illuma$
"""
# Serializes concurrent platform setups of one database (advisory locks are per database).
_PLATFORM_SETUP_LOCK = 0x696C6C756D61
# Bumped with any change of the provisioning below; ensure_platform compares it.
_PROVISIONING_VERSION = "4"


class PostgresWarehouse(Warehouse):
    """The pipeline connects with its own non-superuser login (the URL); only provisioning (the
    platform schema, a merchant's schema and login) uses the admin URL, and logs that it does."""

    dialect = "postgres"

    def __init__(
        self, url: str, admin_url: str | None = None, platform_tables: tuple[TableSpec, ...] = PLATFORM_TABLES
    ) -> None:
        from psycopg.conninfo import conninfo_to_dict

        # psycopg 3 is the driver; accept SQLAlchemy-style URLs too.
        self.url = url
        self._dsn = _plain_dsn(url)
        self.admin_url = admin_url if admin_url is not None else os.environ.get(ADMIN_URL_VAR) or None
        info = conninfo_to_dict(self._dsn)
        self.dbname = info.get("dbname") or info.get("user") or "postgres"
        self.login = info.get("user") or os.environ.get("PGUSER") or getpass.getuser()
        self._logins: dict[str, tuple[str, str]] = {}
        # PLACED_TABLES for a warehouse that only holds placed merchants (ADR 0011).
        self.platform_tables = platform_tables

    def _raw(self, dsn: str, shown: str, **kwargs: Any) -> Any:
        import psycopg

        try:
            return psycopg.connect(dsn, connect_timeout=10, autocommit=True, **kwargs)
        except psycopg.OperationalError as exc:
            raise WarehouseError(
                f"cannot reach the PostgreSQL warehouse as {shown}: {exc}. Check ILLUMA_WAREHOUSE_URL "
                "and that the server is running."
            ) from exc

    def _platform_raw(self) -> Any:
        con = self._raw(self._dsn, _redact(self.url))
        if (self._dsn, os.getpid()) not in _CHECKED_LOGINS:
            row = con.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
            if row and row[0]:
                con.close()
                raise _LoginRefused(
                    f"the warehouse login {self.login!r} is a superuser: the pipeline runs as a "
                    f"non-superuser login (ADR 0001). Give the admin URL as {ADMIN_URL_VAR} and a "
                    "pipeline login as ILLUMA_WAREHOUSE_URL, then run `illuma warehouse provision`"
                )
            _CHECKED_LOGINS.add((self._dsn, os.getpid()))
        return con

    @contextlib.contextmanager
    def _unit(self, key: str, connect: Any) -> Iterator[Connection]:
        import psycopg

        con = _POOL.take(key, connect)
        transaction = con.transaction()
        try:
            transaction.__enter__()
        except psycopg.OperationalError:
            # A pooled connection the server closed meanwhile (restart, idle timeout, terminated):
            # nothing ran on it yet, so a fresh one takes its place.
            con.close()
            con = connect()
            transaction = con.transaction()
            transaction.__enter__()
        try:
            with contextlib.ExitStack() as stack:
                stack.push(transaction)
                yield _PostgresConnection(con)
        finally:
            _POOL.give(key, con)

    def connect(self) -> contextlib.AbstractContextManager[Connection]:
        return self._unit(self._dsn, self._platform_raw)

    def _merchant_login(self, merchant_id: str) -> tuple[str, str]:
        validate_merchant_id(merchant_id)
        if merchant_id not in self._logins:
            with self.connect() as conn:
                row = conn.fetchone(
                    f"SELECT role_name, credential_ref FROM {PLATFORM_SCHEMA}.merchant_logins WHERE merchant_id = ?",
                    [merchant_id],
                ) if conn.table_exists(PLATFORM_SCHEMA, "merchant_logins") else None
            if row is None:
                raise WarehouseError(
                    f"merchant {merchant_id!r} has no warehouse schema or login: onboard it first "
                    "(illuma merchants add)"
                )
            self._logins[merchant_id] = (row[0], row[1])
        return self._logins[merchant_id]

    def merchant_dsn(self, merchant_id: str) -> tuple[str, str]:
        """The merchant login's DSN without its password, and the password (for dbt's env)."""
        from psycopg.conninfo import make_conninfo

        role, ref = self._merchant_login(merchant_id)
        return make_conninfo(self._dsn, user=role, password=""), resolve_login_password(ref)

    @contextlib.contextmanager
    def merchant_scope(self, merchant_id: str) -> Iterator[Connection]:
        from psycopg.conninfo import make_conninfo

        role, ref = self._merchant_login(merchant_id)
        dsn = make_conninfo(self._dsn, user=role)
        schema = merchant_schema(merchant_id)

        def connect() -> Any:
            return self._raw(make_conninfo(dsn, password=resolve_login_password(ref)), f"{role} (merchant login)")

        with self._unit(dsn, connect) as conn:
            conn.execute(f"SET LOCAL search_path TO {schema}")
            yield conn

    # ------------------------------------------------------------------------ provisioning
    @contextlib.contextmanager
    def _admin(self, why: str) -> Iterator[Connection]:
        if not self.admin_url:
            raise WarehouseError(
                f"{why} is provisioning and needs the admin connection: set {ADMIN_URL_VAR} "
                "(a superuser, or a role with CREATEROLE that owns the database)"
            )
        from psycopg.conninfo import make_conninfo

        # The admin URL may name another database of the server: provisioning happens in ours.
        admin_dsn = make_conninfo(_plain_dsn(self.admin_url), dbname=self.dbname)
        logger.info("provisioning (%s): connecting as the admin %s", why, _redact(self.admin_url))
        con = self._raw(admin_dsn, f"the admin {_redact(self.admin_url)}")
        try:
            with con.transaction():
                conn = _PostgresConnection(con)
                conn.execute(f"SELECT pg_advisory_xact_lock({_PLATFORM_SETUP_LOCK})")
                yield conn
        finally:
            con.close()

    def _provisioned(self) -> bool:
        with self.connect() as conn:
            if not conn.table_exists(PLATFORM_SCHEMA, "placement"):
                return False
            row = conn.fetchone(
                "SELECT pg_has_role(current_user, ?, 'USAGE'), obj_description(to_regnamespace(?), 'pg_namespace'), "
                f"(SELECT database_oid FROM {PLATFORM_SCHEMA}.placement) = "
                "(SELECT oid::bigint FROM pg_database WHERE datname = current_database())",
                [PIPELINE_ROLE, PLATFORM_SCHEMA],
            )
        return bool(row and row[0] and row[1] == self._provisioning_marker() and row[2])

    def _provisioning_marker(self) -> str:
        import hashlib

        text = "\n".join([_PROVISIONING_VERSION, *self._platform_ddl(), _AUDIT_GUARD_BODY, _ERASE_BODY])
        return "illuma provisioning " + hashlib.sha256(text.encode()).hexdigest()[:16]

    def ensure_platform(self) -> None:
        """Cheap when provisioned (catalog reads on the pipeline's login); otherwise provisions
        through the admin connection, or says how to."""
        try:
            if self._provisioned():
                return
        except _LoginRefused:
            raise
        except WarehouseError:
            # The pipeline's login may not exist, or may not be let in, before provisioning.
            if not self.admin_url:
                raise
        self.provision()

    def provision(self) -> None:
        """Create or bring up to date, as the admin: the platform schema and tables (owned by the
        admin), the audit guard, the erasure function, the pipeline group role and its grants,
        the pipeline login, and the database's default privileges taken from PUBLIC."""
        with self._admin("setting up the platform schema") as conn:
            for ddl in self._platform_ddl():
                conn.execute(ddl)
            self._ensure_placement(conn)
            self._retag_if_copied(conn)
            conn.execute(f"REVOKE ALL ON SCHEMA {PLATFORM_SCHEMA} FROM PUBLIC")
            if any(spec.name == "audit_log" for spec in self.platform_tables):
                self._secure_audit_log(conn)
            if not conn.fetchone("SELECT 1 FROM pg_roles WHERE rolname = ?", [PIPELINE_ROLE]):
                conn.execute(_CREATE_PIPELINE_ROLE)
            conn.execute(
                f"CREATE OR REPLACE FUNCTION {_ERASE_FUNCTION}(p_merchant text) RETURNS void LANGUAGE plpgsql "
                f"SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $illuma${_ERASE_BODY}$illuma$"
            )
            conn.execute(f"REVOKE ALL ON FUNCTION {_ERASE_FUNCTION}(text) FROM PUBLIC")
            conn.execute(f"GRANT EXECUTE ON FUNCTION {_ERASE_FUNCTION}(text) TO {PIPELINE_ROLE}")
            # Platform rights, on the platform schema only. The audit log: read, append, and
            # delete what its trigger allows (the security-log purge); no UPDATE, no TRUNCATE.
            conn.execute(f"GRANT USAGE ON SCHEMA {PLATFORM_SCHEMA} TO {PIPELINE_ROLE}")
            for spec in self.platform_tables:
                table = f"{PLATFORM_SCHEMA}.{spec.name}"
                conn.execute(f"REVOKE ALL ON {table} FROM PUBLIC")
                if spec.name == "audit_log":
                    conn.execute(f"REVOKE ALL ON {table} FROM {PIPELINE_ROLE}")
                    conn.execute(f"GRANT SELECT, INSERT, DELETE ON {table} TO {PIPELINE_ROLE}")
                elif spec.name == "placement":
                    conn.execute(f"GRANT SELECT ON {table} TO {PIPELINE_ROLE}")
                else:
                    conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {PIPELINE_ROLE}")
            # Nobody connects, or makes temp tables, or creates in `public`, by default.
            conn.execute(f"REVOKE ALL ON DATABASE {_quote(self.dbname)} FROM PUBLIC")
            conn.execute(f"GRANT CONNECT ON DATABASE {_quote(self.dbname)} TO {PIPELINE_ROLE}")
            conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            self._ensure_pipeline_login(conn)
            conn.execute(f"COMMENT ON SCHEMA {PLATFORM_SCHEMA} IS '{self._provisioning_marker()}'")

    def _ensure_pipeline_login(self, conn: Connection) -> None:
        row = conn.fetchone("SELECT rolsuper FROM pg_roles WHERE rolname = ?", [self.login])
        if row and row[0]:
            raise WarehouseError(
                f"ILLUMA_WAREHOUSE_URL logs in as {self.login!r}, a superuser: give the pipeline a "
                "login of its own (provisioning creates it when it does not exist)"
            )
        if row is None:
            _ident(self.login)
            conn.execute(
                f"CREATE ROLE {self.login} LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
            )
        conn.execute(f"GRANT {PIPELINE_ROLE} TO {_quote(self.login)}")

    def _secure_audit_log(self, conn: Connection) -> None:
        table = f"{PLATFORM_SCHEMA}.audit_log"
        row = conn.fetchone("SELECT prosrc FROM pg_proc WHERE oid = to_regproc(?)::oid", [_AUDIT_GUARD])
        if row is None or row[0] != _AUDIT_GUARD_BODY:
            conn.execute(
                f"CREATE OR REPLACE FUNCTION {_AUDIT_GUARD}() RETURNS trigger LANGUAGE plpgsql "
                f"AS $illuma${_AUDIT_GUARD_BODY}$illuma$"
            )
        enabled = dict(
            conn.fetchall(
                "SELECT tgname, tgenabled::text FROM pg_trigger WHERE tgrelid = to_regclass(?) AND NOT tgisinternal",
                [table],
            )
        )
        for name, when in _AUDIT_TRIGGERS.items():
            if name not in enabled:
                conn.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION {_AUDIT_GUARD}()")
            if enabled.get(name) != "A":
                conn.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}")
        conn.execute(f"REVOKE ALL ON FUNCTION {_AUDIT_GUARD}() FROM PUBLIC")

    def create_merchant_schema(self, merchant_id: str) -> str:
        """Provision, as the admin: the merchant's login role (named with this database's placement
        tag; no inherited, granted or special rights; CONNECT and TEMPORARY on this database
        only), and its schema, owned by that login and closed to everyone else."""
        validate_merchant_id(merchant_id)
        self.ensure_platform()
        schema = merchant_schema(merchant_id)
        tag, _ = self.placement()
        role = merchant_login_role(merchant_id, tag)
        with self._admin(f"onboarding merchant {merchant_id!r}") as conn:
            self._ensure_login(conn, role)
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {role}")
            conn.execute(f"ALTER SCHEMA {schema} OWNER TO {role}")
            conn.execute(f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC")
            conn.execute(f"ALTER ROLE {role} IN DATABASE {_quote(self.dbname)} SET search_path = {schema}")
            conn.execute(
                f"INSERT INTO {PLATFORM_SCHEMA}.merchant_logins (merchant_id, role_name, credential_ref, created_at) "
                "VALUES (?, ?, ?, now()) ON CONFLICT (merchant_id) DO UPDATE SET role_name = EXCLUDED.role_name, "
                "credential_ref = EXCLUDED.credential_ref",
                [merchant_id, role, login_ref(role)],
            )
        self._logins.pop(merchant_id, None)
        return schema

    def _ensure_login(self, conn: Connection, role: str) -> None:
        """The merchant login `role`: no inherited, granted or special rights; CONNECT and
        TEMPORARY on this database only; its password from its reference, given as a verifier."""
        verifier = scram_verifier(resolve_login_password(login_ref(role)))
        attrs = "LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 32"
        verb = "ALTER" if conn.fetchone("SELECT 1 FROM pg_roles WHERE rolname = ?", [role]) else "CREATE"
        conn.execute(f"{verb} ROLE {role} {attrs} PASSWORD '{verifier}'")
        conn.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {_quote(self.dbname)} TO {role}")

    def _retag_if_copied(self, conn: Connection) -> None:
        """A database copied from another (a restore on the same server, CREATE DATABASE ...
        TEMPLATE) carries the original's placement tag, so its merchants would share the original's
        logins, and erasing one in either database would fail on the other's objects. Give the copy
        a tag of its own and each merchant a login of the new name, owning here what the old one
        owned here; the old logins keep the original database."""
        tag, made_in = conn.fetchone(f"SELECT tag, database_oid FROM {PLATFORM_SCHEMA}.placement")
        (here,) = conn.fetchone("SELECT oid::bigint FROM pg_database WHERE datname = current_database()")
        if made_in == here:
            return
        new_tag = tag if made_in is None else secrets.token_hex(4)
        conn.execute(f"UPDATE {PLATFORM_SCHEMA}.placement SET tag = ?, database_oid = ?", [new_tag, here])
        if new_tag == tag:
            return
        logins = conn.fetchall(f"SELECT merchant_id, role_name FROM {PLATFORM_SCHEMA}.merchant_logins")
        logger.warning(
            "database %s is a copy of another (placement %s): %d merchant login(s) renamed to its own tag %s",
            self.dbname, tag, len(logins), new_tag,
        )
        for merchant_id, old in logins:
            role = merchant_login_role(merchant_id, new_tag)
            self._ensure_login(conn, role)
            conn.execute(f"ALTER ROLE {role} IN DATABASE {_quote(self.dbname)} SET search_path = {merchant_schema(merchant_id)}")
            if conn.fetchone("SELECT 1 FROM pg_roles WHERE rolname = ?", [old]):
                conn.execute(f"REASSIGN OWNED BY {_quote(old)} TO {role}")
                conn.execute(f"REVOKE ALL ON DATABASE {_quote(self.dbname)} FROM {_quote(old)}")
            conn.execute(
                f"UPDATE {PLATFORM_SCHEMA}.merchant_logins SET role_name = ?, credential_ref = ? WHERE merchant_id = ?",
                [role, login_ref(role), merchant_id],
            )
        self._logins.clear()

    def drop_merchant_schema(self, merchant_id: str) -> None:
        """Erase the merchant's schema, everything its login owns here, and the login, through the
        admin-owned `platform.erase_merchant_warehouse` (the pipeline's login cannot drop roles)."""
        with self.connect() as conn:
            self.drop_merchant_schema_in(conn, merchant_id)

    def drop_merchant_schema_in(self, conn: Connection, merchant_id: str) -> None:
        validate_merchant_id(merchant_id)
        if merchant_id in self._logins:
            from psycopg.conninfo import make_conninfo

            _POOL.drop(make_conninfo(self._dsn, user=self._logins.pop(merchant_id)[0]))
        conn.execute(f"SELECT {_ERASE_FUNCTION}(?)", [merchant_id])

    def merchant_schema_exists(self, merchant_id: str) -> bool:
        with self.connect() as conn:
            row = conn.fetchone("SELECT to_regnamespace(?) IS NOT NULL", [merchant_schema(merchant_id)])
        return bool(row and row[0])

    def merchant_ids(self) -> list[str]:
        with self.connect() as conn:
            if not conn.table_exists(PLATFORM_SCHEMA, "merchant_logins"):
                return []
            return [r[0] for r in conn.fetchall(
                f"SELECT merchant_id FROM {PLATFORM_SCHEMA}.merchant_logins "
                "WHERE to_regnamespace('m_' || merchant_id) IS NOT NULL ORDER BY merchant_id"
            )]


_CHECKED_LOGINS: set[tuple[str, int]] = set()


class _LoginRefused(WarehouseError):
    """The pipeline's login is a superuser: refused before it runs anything."""


def _plain_dsn(url: str) -> str:
    return re.sub(r"^postgres(ql)?(\+psycopg2?)?://", "postgresql://", url)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
