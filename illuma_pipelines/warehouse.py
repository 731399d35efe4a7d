"""The merchant warehouse: one interface, two engines (embedded DuckDB, production PostgreSQL).

Tenancy follows ADR 0001 (docs/decisions/0001-warehouse-tenancy.md): a `platform` schema for the
registry and the audit log, and one schema per merchant (`m_<merchant_id>`). On PostgreSQL each
merchant schema is owned by its own role that can reach nothing else, and merchant-scoped work runs
under that role, so the database itself refuses cross-merchant access. DuckDB has no privileges:
there the merchant scope refuses statements that name another schema before they run.

SQL in this project uses `?` placeholders; the PostgreSQL backend translates them.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from illuma_pipelines.merchant_ids import merchant_role, merchant_schema, validate_merchant_id

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


class WarehouseError(RuntimeError):
    """A warehouse operation failed for a reason the caller can act on."""


class CrossMerchantAccess(WarehouseError):
    """A merchant-scoped statement named a schema other than the merchant's own."""


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
        idx = 0 if dialect == "duckdb" else 1
        cols = [
            f"{_ident(c.name)} {_TYPES[c.type][idx]}{_DUCKDB_COMPRESSION.get(c.type, '') if idx == 0 else ''}"
            f"{'' if c.nullable else ' NOT NULL'}"
            for c in self.columns
        ]
        if self.primary_key:
            cols.append(f"PRIMARY KEY ({', '.join(_ident(k) for k in self.primary_key)})")
        return f"CREATE TABLE IF NOT EXISTS {_ident(schema)}.{_ident(self.name)} ({', '.join(cols)})"


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
)


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

    def create_table(self, schema: str, spec: TableSpec) -> None:
        self.execute(spec.ddl(schema, self.dialect))

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

    def row_count(self, schema: str, table: str, where: Mapping[str, Any] | None = None) -> int:
        where = where or {}
        clause = " AND ".join(f"{_ident(k)} = ?" for k in where) or "TRUE"
        row = self.fetchone(
            f"SELECT count(*) FROM {_ident(schema)}.{_ident(table)} WHERE {clause}", list(where.values())
        )
        return int(row[0]) if row else 0


class Warehouse(ABC):
    """Engine-neutral entry point. Build one with `Warehouse.from_url`."""

    dialect: str
    url: str

    @staticmethod
    def from_url(url: str) -> Warehouse:
        if url.startswith("duckdb:///"):
            return DuckDBWarehouse(Path(url[len("duckdb:///") :]))
        if url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            return PostgresWarehouse(url)
        raise WarehouseError(
            f"unsupported warehouse url {_redact(url)!r}: use duckdb:///path/to/file.duckdb or "
            "postgresql://user@host:port/dbname"
        )

    @abstractmethod
    def connect(self) -> contextlib.AbstractContextManager[Connection]: ...

    @abstractmethod
    def merchant_scope(self, merchant_id: str) -> contextlib.AbstractContextManager[Connection]:
        """A connection that can reach only `merchant_id`'s schema."""

    @abstractmethod
    def _create_merchant_schema(self, conn: Connection, merchant_id: str) -> None: ...

    @abstractmethod
    def _drop_merchant_schema(self, conn: Connection, merchant_id: str) -> None: ...

    def ensure_platform(self) -> None:
        with self.connect() as conn:
            self._lock_platform_setup(conn)
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {PLATFORM_SCHEMA}")
            for spec in PLATFORM_TABLES:
                conn.create_table(PLATFORM_SCHEMA, spec)
            self._secure_platform(conn)

    def _lock_platform_setup(self, conn: Connection) -> None:
        """Serialize concurrent platform setups (DuckDB: one writer per file already)."""
        return None

    def _secure_platform(self, conn: Connection) -> None:
        """Engine-enforced protection of platform tables. DuckDB has no triggers or roles: there
        platform.audit_log is append-only by code (only `audit.purge_security_logs` deletes)."""
        return None

    def create_merchant_schema(self, merchant_id: str) -> str:
        """Create the merchant's schema (and, on PostgreSQL, its role). Idempotent."""
        validate_merchant_id(merchant_id)
        with self.connect() as conn:
            self._create_merchant_schema(conn, merchant_id)
        return merchant_schema(merchant_id)

    def drop_merchant_schema(self, merchant_id: str) -> None:
        """Drop the merchant's schema with everything in it (and its role). Idempotent."""
        validate_merchant_id(merchant_id)
        with self.connect() as conn:
            self._drop_merchant_schema(conn, merchant_id)

    def drop_merchant_schema_in(self, conn: Connection, merchant_id: str) -> None:
        """As drop_merchant_schema, inside the caller's transaction (e.g. with its ledger row)."""
        validate_merchant_id(merchant_id)
        self._drop_merchant_schema(conn, merchant_id)

    def merchant_schema_exists(self, merchant_id: str) -> bool:
        with self.connect() as conn:
            return conn.schema_exists(merchant_schema(merchant_id))

    def ensure_merchant_table(self, merchant_id: str, spec: TableSpec) -> None:
        with self.merchant_scope(merchant_id) as conn:
            conn.create_table(merchant_schema(merchant_id), spec)


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


# ----------------------------------------------------------------------------------------- DuckDB


class _DuckDBConnection(Connection):
    dialect = "duckdb"

    def __init__(self, con: Any, only_schema: str | None = None) -> None:
        self._con = con
        self._only_schema = only_schema

    def _guard(self, sql: str) -> None:
        # DuckDB has no privileges; refuse any qualified name outside the merchant's schema.
        if self._only_schema is None:
            return
        for schema in re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\.\s*[A-Za-z_\"]", sql):
            low = schema.lower()
            if low != self._only_schema and (low.startswith("m_") or low in {PLATFORM_SCHEMA, "main"}):
                raise CrossMerchantAccess(
                    f"statement names schema {schema!r} from the scope of {self._only_schema!r}: "
                    "merchant-scoped work may only touch its own schema"
                )

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._guard(sql)
        self._con.execute(sql, list(params))

    def execute_count(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._guard(sql)
        # DuckDB answers an UPDATE or DELETE with one row: the number of rows it changed.
        row = self._con.execute(sql, list(params)).fetchone()
        return int(row[0]) if row else 0

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        self._guard(sql)
        return self._con.execute(sql, list(params)).fetchall()

    def fetch_df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        self._guard(sql)
        return self._con.execute(sql, list(params)).df()

    def iter_batches(self, sql: str, params: Sequence[Any] = (), size: int = 10_000) -> Iterator[list[tuple]]:
        self._guard(sql)
        # A pending result is dropped by the next statement on the same DuckDB connection, so the
        # stream gets its own connection (its own snapshot) to the same database.
        reader = self._con.cursor()
        try:
            reader.execute(sql, list(params))
            while rows := reader.fetchmany(size):
                yield rows
        finally:
            reader.close()

    def load_frame(self, schema: str, table: str, frame: pd.DataFrame) -> int:
        if self._only_schema is not None and schema != self._only_schema:
            raise CrossMerchantAccess(f"cannot load into {schema!r} from the scope of {self._only_schema!r}")
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


class DuckDBWarehouse(Warehouse):
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

    @contextlib.contextmanager
    def _open(self, only_schema: str | None) -> Iterator[Connection]:
        import duckdb

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One short-lived connection per unit of work: DuckDB allows one writer process per file,
        # and dbt (a separate process) must be able to open it between our steps.
        con = duckdb.connect(str(self.path))
        try:
            con.execute(f"SET memory_limit = '{self.memory_limit}'")
            con.execute("BEGIN TRANSACTION")
            yield _DuckDBConnection(con, only_schema)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def connect(self) -> contextlib.AbstractContextManager[Connection]:
        return self._open(None)

    @contextlib.contextmanager
    def merchant_scope(self, merchant_id: str) -> Iterator[Connection]:
        schema = merchant_schema(merchant_id)
        with self._open(schema) as conn:
            if not conn.schema_exists(schema):
                raise WarehouseError(
                    f"merchant {merchant_id!r} has no schema {schema!r}: onboard it first "
                    "(illuma merchants add)"
                )
            yield conn

    def _create_merchant_schema(self, conn: Connection, merchant_id: str) -> None:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {merchant_schema(merchant_id)}")

    def _drop_merchant_schema(self, conn: Connection, merchant_id: str) -> None:
        conn.execute(f"DROP SCHEMA IF EXISTS {merchant_schema(merchant_id)} CASCADE")


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
        names = [d.name for d in cur.description] if cur.description else []
        return pd.DataFrame(cur.fetchall(), columns=names)

    def load_frame(self, schema: str, table: str, frame: pd.DataFrame) -> int:
        if not len(frame):
            return 0
        names = ", ".join(_ident(c) for c in frame.columns)
        copy_sql = (
            f"COPY {_ident(schema)}.{_ident(table)} ({names}) FROM STDIN "
            "(FORMAT csv, NULL '\\N')"
        )
        with self._con.cursor() as cur, cur.copy(copy_sql) as copy:
            # CSV chunks through COPY: the fast path, without a Python call per row.
            step = 100_000
            for start in range(0, len(frame), step):
                buf = io.StringIO()
                frame.iloc[start : start + step].to_csv(buf, header=False, index=False, na_rep="\\N")
                copy.write(buf.getvalue())
        return len(frame)


# platform.audit_log is append-only on PostgreSQL: the database refuses every UPDATE and TRUNCATE,
# and every DELETE except of a row older than AUDIT_LOG_MIN_RETENTION by the database's own clock
# in a transaction that declared itself the retention purge (`SET LOCAL illuma.purge =
# 'security_logs'`, see audit.purge_security_logs). Triggers bind superusers and owners too; they
# are enabled ALWAYS, so `session_replication_role = replica` does not skip them either.
PIPELINE_ROLE = "illuma_pipeline"  # NOLOGIN; may read and append to the audit log, nothing more
AUDIT_LOG_MIN_RETENTION = "12 months"  # the `security_logs` minimum of the retention policy
PURGE_SETTING, SECURITY_LOG_PURGE = "illuma.purge", "security_logs"
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


class PostgresWarehouse(Warehouse):
    dialect = "postgres"

    def __init__(self, url: str) -> None:
        # psycopg 3 is the driver; accept SQLAlchemy-style URLs too.
        self.url = url
        self._dsn = re.sub(r"^postgres(ql)?(\+psycopg)?://", "postgresql://", url)

    def _connect_raw(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self._dsn, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise WarehouseError(
                f"cannot reach the PostgreSQL warehouse at {_redact(self.url)}: {exc}. Check "
                "ILLUMA_WAREHOUSE_URL and that the server is running."
            ) from exc

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        con = self._connect_raw()
        try:
            with con.transaction():
                yield _PostgresConnection(con)
        finally:
            con.close()

    @contextlib.contextmanager
    def merchant_scope(self, merchant_id: str) -> Iterator[Connection]:
        schema, role = merchant_schema(merchant_id), merchant_role(merchant_id)
        con = self._connect_raw()
        try:
            with con.transaction():
                conn = _PostgresConnection(con)
                if not conn.schema_exists(schema):
                    raise WarehouseError(
                        f"merchant {merchant_id!r} has no schema {schema!r}: onboard it first "
                        "(illuma merchants add)"
                    )
                # SET LOCAL: the role and search path end with this transaction.
                conn.execute(f"SET LOCAL ROLE {role}")
                conn.execute(f"SET LOCAL search_path TO {schema}")
                yield conn
        finally:
            con.close()

    def _create_merchant_schema(self, conn: Connection, merchant_id: str) -> None:
        schema, role = merchant_schema(merchant_id), merchant_role(merchant_id)
        exists = conn.fetchone("SELECT 1 FROM pg_roles WHERE rolname = ?", [role])
        if not exists:
            conn.execute(f"CREATE ROLE {role} NOLOGIN NOINHERIT")
        # The pipeline's login role must be able to SET ROLE to the merchant role.
        conn.execute(f"GRANT {role} TO CURRENT_USER")
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {role}")
        conn.execute(f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC")

    def _drop_merchant_schema(self, conn: Connection, merchant_id: str) -> None:
        schema, role = merchant_schema(merchant_id), merchant_role(merchant_id)
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        if conn.fetchone("SELECT 1 FROM pg_roles WHERE rolname = ?", [role]):
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


    def _lock_platform_setup(self, conn: Connection) -> None:
        # Concurrent CREATE ... IF NOT EXISTS, CREATE OR REPLACE FUNCTION and GRANT on the same
        # objects can fail ("duplicate key", "tuple concurrently updated"): one setup at a time.
        conn.execute(f"SELECT pg_advisory_xact_lock({_PLATFORM_SETUP_LOCK})")

    def _secure_platform(self, conn: Connection) -> None:
        """Make platform.audit_log append-only and give PIPELINE_ROLE SELECT and INSERT on it only.

        Idempotent and cheap when everything is in place (catalog reads only); safe when several
        sessions set up the same database (see _lock_platform_setup), or the same cluster, at once.
        """
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
        if not conn.fetchone("SELECT 1 FROM pg_roles WHERE rolname = ?", [PIPELINE_ROLE]):
            conn.execute(_CREATE_PIPELINE_ROLE)
        usage, select, insert, more = conn.fetchone(
            "SELECT has_schema_privilege(?, ?, 'USAGE'), has_table_privilege(?, ?, 'SELECT'), "
            "has_table_privilege(?, ?, 'INSERT'), has_table_privilege(?, ?, 'UPDATE, DELETE, TRUNCATE')",
            [PIPELINE_ROLE, PLATFORM_SCHEMA, *[PIPELINE_ROLE, table] * 3],
        )
        if not (usage and select and insert) or more:
            conn.execute(f"GRANT USAGE ON SCHEMA {PLATFORM_SCHEMA} TO {PIPELINE_ROLE}")
            conn.execute(f"REVOKE ALL ON {table} FROM {PIPELINE_ROLE}")
            conn.execute(f"GRANT SELECT, INSERT ON {table} TO {PIPELINE_ROLE}")
