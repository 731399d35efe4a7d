"""A merchant's data export (privacy policy §10): everything ILLUMA holds on the merchant, in one
portable zip archive, with its bookkeeping (rights request, audit, retention).

The archive holds, for every table and view of the merchant's schema `m_<id>` (raw extracts,
core tables, dbt models, quarantine; column names kept) a Parquet file and a CSV file under
`data/`, the merchant's registry row and channel connections (without credential references)
under `account/`, and `manifest.json`: merchant, created_at, expires_at, policy version and, per
table, row count, columns, types and the sha256 of each file. The archive's own sha256 cannot be in
its manifest; it is recorded in `platform.exports` (and printed by the CLI).

Buyer PII (`core_buyer_pii`) is decrypted for the merchant through one audited batch reveal; a
vault ciphertext never appears in the archive (any left anywhere stops the export). PII whose
retention deadline has already passed (the purge is late) is left out, not exported: an export
must not outlive the PII rules it copies. The file expires after the `exports` rule (7 days) or
earlier when PII inside it falls due first, and `delete_expired_exports` removes it then.

No Dagster here: the CLI and (later) the daily purge call these functions.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from illuma_pipelines import retention
from illuma_pipelines.core.tables import BUYER_PII, ORDERS, PII_COLUMNS
from illuma_pipelines.marketplaces import CHANNELS, ORDER_DATASET, raw_datasets, raw_table_name
from illuma_pipelines.merchant_ids import merchant_schema, validate_merchant_id
from illuma_pipelines.paths import data_dir
from illuma_pipelines.raw_records import QUARANTINE
from illuma_pipelines.registry import RegistryError, record_audit
from illuma_pipelines.sealing import open_for_export
from illuma_pipelines.vault import CIPHERTEXT_REGEX, Vault
from illuma_pipelines.warehouse import IN_SCHEMA, PLATFORM_SCHEMA, Connection, Warehouse

FORMAT = "illuma-merchant-export/1"
MANIFEST = "manifest.json"
REVEAL_PURPOSE = "merchant data export"
REQUEST_KIND = "export"
CREATED_ACTION = "export.created"
EXPIRED_ACTION = "export.expired"
ERASED_ACTION = "export.deleted"
BUYER_PII_TABLE = BUYER_PII.name
ORDERS_TABLE = ORDERS.name
_CIPHERTEXT_SEARCH = re.compile(CIPHERTEXT_REGEX)
_PARTIAL_SUFFIX = ".partial"
_SAFE_NAME = re.compile(r"[a-z0-9_]{1,63}")


class ExportError(RuntimeError):
    """An export could not be made, or an archive does not match its manifest."""


class ExportVerificationError(ExportError):
    """An archive's files do not match its manifest (altered, truncated or incomplete)."""


@dataclass(frozen=True)
class ExportResult:
    export_id: str
    request_id: str
    merchant_id: str
    path: Path
    sha256: str
    created_at: datetime
    expires_at: datetime
    row_counts: dict[str, int] = field(default_factory=dict)  # archive table name -> rows
    pii_values_revealed: int = 0
    pii_values_withheld: int = 0  # past their retention deadline: left out

    @property
    def total_rows(self) -> int:
        return sum(self.row_counts.values())


# ------------------------------------------------------------------------------- column types


@dataclass(frozen=True)
class _Column:
    name: str
    kind: str  # portable type: text, bigint, integer, smallint, boolean, date, timestamptz,
    # timestamp, decimal(p,s), json, double, real
    arrow: pa.DataType

    @property
    def select(self) -> str:
        quoted = _quote(self.name)
        # JSON goes out as its text on both engines (psycopg would hand JSONB over as dicts);
        # anything without a portable type goes out as text rather than being dropped.
        return f"CAST({quoted} AS TEXT)" if self.kind in ("json", "text") else quoted


def _column(name: str, data_type: str, precision: Any, scale: Any) -> _Column:
    t = data_type.strip().lower()
    simple = {
        "bigint": ("bigint", pa.int64()),
        "integer": ("integer", pa.int32()),
        "int": ("integer", pa.int32()),
        "smallint": ("smallint", pa.int16()),
        "boolean": ("boolean", pa.bool_()),
        "date": ("date", pa.date32()),
        "timestamp with time zone": ("timestamptz", pa.timestamp("us", tz="UTC")),
        "timestamptz": ("timestamptz", pa.timestamp("us", tz="UTC")),
        "timestamp without time zone": ("timestamp", pa.timestamp("us")),
        "timestamp": ("timestamp", pa.timestamp("us")),
        "double": ("double", pa.float64()),
        "double precision": ("double", pa.float64()),
        "real": ("real", pa.float32()),
        "float": ("real", pa.float32()),
        "json": ("json", pa.string()),
        "jsonb": ("json", pa.string()),
    }
    if t in simple:
        kind, arrow = simple[t]
        return _Column(name, kind, arrow)
    if t.startswith(("decimal", "numeric")):
        if precision is None or scale is None:
            # Unconstrained numeric (e.g. a dbt model's sum): its scale is settled from the data.
            return _Column(name, "numeric", pa.string())
        p, s = int(precision), int(scale)
        if 0 < p <= 38:
            return _Column(name, f"decimal({p},{s})", pa.decimal128(p, s))
    # varchar, text, uuid, intervals, unconstrained numeric, enums...: exported as text.
    return _Column(name, "text", pa.string())


def _settle_numeric(columns: list[_Column], rows: list[list[Any]]) -> list[_Column]:
    """Give unconstrained numeric columns the smallest exact decimal type their values fit
    (decimal(38, max scale)); values beyond 38 digits, NaN or infinities go out as exact text."""
    out = []
    for i, col in enumerate(columns):
        if col.kind != "numeric":
            out.append(col)
            continue
        scale, whole, exact = 0, 1, True
        for row in rows:
            value = row[i]
            if value is None:
                continue
            if not isinstance(value, Decimal) or not value.is_finite():
                exact = False
                break
            sign, digits, exponent = value.as_tuple()
            scale = max(scale, -int(exponent))
            whole = max(whole, len(digits) + int(exponent))
        if exact and whole + scale <= 38:
            out.append(_Column(col.name, f"decimal(38,{scale})", pa.decimal128(38, scale)))
        else:
            for row in rows:
                row[i] = None if row[i] is None else _csv_cell(row[i])
            out.append(_Column(col.name, "text", pa.string()))
    return out


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


# ------------------------------------------------------------------------------------ formats


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return _to_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _csv_bytes(columns: Sequence[_Column], rows: Sequence[Sequence[Any]]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([c.name for c in columns])
    for row in rows:
        writer.writerow([_csv_cell(v) for v in row])
    return buf.getvalue().encode("utf-8")


def _parquet_bytes(columns: Sequence[_Column], rows: Sequence[Sequence[Any]]) -> bytes:
    arrays = []
    for index, col in enumerate(columns):
        values = [row[index] for row in rows]
        if col.kind == "timestamptz":
            values = [None if v is None else _to_utc(v) for v in values]
        try:
            arrays.append(pa.array(values, type=col.arrow))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise ExportError(f"column {col.name!r} ({col.kind}) cannot be written to Parquet: {exc}") from None
    schema = pa.schema([pa.field(c.name, c.arrow) for c in columns])
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), buf, compression="zstd")
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ExportError(f"{what} must be a timezone-aware datetime (e.g. datetime.now(UTC))")
    return value.astimezone(UTC)


# ------------------------------------------------------------------------------------ reading


@dataclass
class _Table:
    name: str  # name inside the archive
    source: str  # schema.table it came from
    kind: str  # table | view
    columns: list[_Column]
    rows: list[list[Any]]


def _relations(conn: Connection, schema: str) -> list[tuple[str, str, list[_Column]]]:
    """(name, table|view, columns) of every relation in `schema`, by name."""
    found = conn.fetchall(
        f"SELECT table_name, table_type FROM information_schema.tables WHERE {IN_SCHEMA} ORDER BY table_name",
        [schema, schema],
    )
    columns: dict[str, list[_Column]] = {}
    for table, c, t, p, s in conn.fetchall(
        "SELECT table_name, column_name, data_type, numeric_precision, numeric_scale "
        f"FROM information_schema.columns WHERE {IN_SCHEMA} ORDER BY table_name, ordinal_position",
        [schema, schema],
    ):
        columns.setdefault(table, []).append(_column(c, t, p, s))
    return [
        (name, "view" if "VIEW" in str(table_type).upper() else "table", columns.get(name, []))
        for name, table_type in found
    ]


def _read(conn: Connection, schema: str, name: str, columns: Sequence[_Column]) -> list[list[Any]]:
    if not columns:
        return []
    exprs = ", ".join(c.select for c in columns)
    # A total order on every column: the same data always gives the same files and checksums.
    order = ", ".join(str(i) for i in range(1, len(columns) + 1))
    return [
        list(r)
        for r in conn.fetchall(f"SELECT {exprs} FROM {schema}.{_quote(name)} ORDER BY {order}")
    ]


def _pii_due_dates(conn: Connection, schema: str, names: set[str]) -> dict[tuple[str, str], datetime | None]:
    """(channel, marketplace_order_id) -> when the order's buyer PII must be gone (None: not yet
    known, the order is neither shipped nor cancelled)."""
    if ORDERS_TABLE not in names:
        return {}
    rows = conn.fetchall(
        f"SELECT channel, marketplace_order_id, shipped_at, delivered_at, status, last_updated_at "
        f"FROM {schema}.{ORDERS_TABLE}"
    )
    return {
        (channel, order_id): retention.pii_due_date(
            channel,
            shipped,
            delivered,
            # A cancelled order's last update is its cancellation (ADR 0003).
            cancelled_at=updated if status == "cancelled" else None,
        )
        for channel, order_id, shipped, delivered, status, updated in rows
    }


def _reveal_pii(
    vault: Vault | None, merchant_id: str, table: _Table, due: dict[tuple[str, str], datetime | None],
    created: datetime, actor: str,
) -> tuple[int, int, list[datetime]]:
    """Decrypt the PII columns of `table` in place. Values whose order's PII is already past its
    deadline are set to None instead (withheld). Returns (revealed, withheld, due dates held)."""
    index = {c.name: i for i, c in enumerate(table.columns)}
    missing = [c for c in ("channel", "marketplace_order_id") if c not in index]
    if missing:
        raise ExportError(f"{table.source} has no {', '.join(missing)} column: cannot bind its PII to orders")
    pii_cols = [c for c in PII_COLUMNS if c in index]
    items: list[tuple[str, str, str | None]] = []
    slots: list[tuple[int, int]] = []
    withheld = 0
    held_due: list[datetime] = []
    for row_no, row in enumerate(table.rows):
        key = (row[index["channel"]], row[index["marketplace_order_id"]])
        order_due = due.get(key)
        overdue = order_due is not None and order_due <= created
        has_value = False
        for column in pii_cols:
            value = row[index[column]]
            if value is None:
                continue
            if overdue:
                row[index[column]] = None
                withheld += 1
                continue
            has_value = True
            items.append((f"{key[0]}:{key[1]}", column, value))
            slots.append((row_no, index[column]))
        if has_value and order_due is not None:
            held_due.append(order_due)
    if items and vault is None:
        raise ExportError(
            f"{table.source} holds {len(items)} encrypted PII values but no vault was given to "
            "decrypt them: provide the master key (ILLUMA_MASTER_KEY or the key file) and retry"
        )
    if items:
        plain = vault.reveal_batch(merchant_id, BUYER_PII_TABLE, items, actor=actor, purpose=REVEAL_PURPOSE)
        for (row_no, col_no), value in zip(slots, plain, strict=True):
            table.rows[row_no][col_no] = value
    return len(items), withheld, held_due


_SEALED_RAW_TABLES = {raw_table_name(c, d): (c, d) for c, d in raw_datasets(may_name_buyer=True)}


def _open_payloads(
    vault: Vault | None, merchant_id: str, table: _Table, due: dict[tuple[str, str], datetime | None],
    created: datetime, actor: str,
) -> tuple[int, int]:
    """Open the PII sealed inside the payloads of a raw table or the quarantine (ADR 0007) in
    place, through one audited batch reveal. Fields of orders past their PII deadline, of keys
    already destroyed, and of core quarantine copies (sealed with the raw row they came from)
    become null. Returns (revealed, withheld)."""
    index = {c.name: i for i, c in enumerate(table.columns)}
    if "payload" not in index or (table.name not in _SEALED_RAW_TABLES and table.name != QUARANTINE.name):
        return 0, 0
    rows: list[tuple[str, str, str]] = []
    slots: list[int] = []
    withhold: set[int] = set()
    for row_no, row in enumerate(table.rows):
        text = row[index["payload"]]
        if text is None:
            continue
        if not isinstance(text, str):
            text = json.dumps(text)
        if table.name in _SEALED_RAW_TABLES:
            channel, dataset = _SEALED_RAW_TABLES[table.name]
            record_id = str(row[index["record_key"]])
            order_due = due.get((channel, record_id)) if dataset == ORDER_DATASET else None
            if order_due is not None and order_due <= created:
                withhold.add(len(rows))
        else:
            channel = str(row[index["source"]]).split(".", 1)[0]
            if channel not in CHANNELS:
                continue
            day = row[index["partition_date"]]
            record_id = f"{row[index['dataset']]}/{day.isoformat() if hasattr(day, 'isoformat') else day}/{row[index['position']]}"
            if str(row[index["dataset"]]).startswith("core_"):
                withhold.add(len(rows))
        rows.append((channel, record_id, text))
        slots.append(row_no)
    if not rows or vault is None:
        if any(_CIPHERTEXT_SEARCH.search(text) for _, _, text in rows):
            raise ExportError(
                f"{table.source} holds sealed PII but no vault was given to open it: provide the "
                "master key (ILLUMA_MASTER_KEY or the key file) and retry"
            )
        return 0, 0
    live = vault.live_versions(merchant_id)
    texts, revealed, withheld = open_for_export(
        vault, merchant_id, table.name, rows, live_versions=live, withhold=withhold, actor=actor,
        purpose=REVEAL_PURPOSE,
    )
    for row_no, text in zip(slots, texts, strict=True):
        table.rows[row_no][index["payload"]] = text
    return revealed, withheld


def _refuse_ciphertext(table: _Table) -> None:
    for col_no, col in enumerate(table.columns):
        if col.arrow != pa.string():
            continue
        for row in table.rows:
            value = row[col_no]
            if isinstance(value, str) and "v1." in value and _CIPHERTEXT_SEARCH.search(value):
                raise ExportError(
                    f"{table.source}.{col.name} holds a vault ciphertext the export does not "
                    f"decrypt (only {BUYER_PII_TABLE} columns {', '.join(PII_COLUMNS)} are); an "
                    "export never carries ciphertext: add the column to illuma_pipelines.export "
                    "or keep PII out of that table"
                )


def _account_tables(conn: Connection, merchant_id: str) -> list[_Table]:
    merchant_cols = [
        _column("merchant_id", "text", None, None),
        _column("display_name", "text", None, None),
        _column("status", "text", None, None),
        _column("created_at", "timestamptz", None, None),
        _column("offboarded_at", "timestamptz", None, None),
        _column("deletion_requested_at", "timestamptz", None, None),
        _column("immediate_deletion", "boolean", None, None),
    ]
    # credential_ref is left out on purpose: it says where a secret lives, and is ILLUMA's, not
    # the merchant's data.
    connection_cols = [
        _column("merchant_id", "text", None, None),
        _column("channel", "text", None, None),
        _column("marketplace_ids", "text", None, None),
        _column("connected_at", "timestamptz", None, None),
    ]
    out = []
    for name, source, cols in (
        ("merchant", "merchants", merchant_cols),
        ("channel_connections", "channel_connections", connection_cols),
    ):
        names = ", ".join(c.name for c in cols)
        rows = conn.fetchall(
            f"SELECT {names} FROM {PLATFORM_SCHEMA}.{source} WHERE merchant_id = ? ORDER BY {names}",
            [merchant_id],
        )
        out.append(_Table(name, f"{PLATFORM_SCHEMA}.{source}", "table", cols, [list(r) for r in rows]))
    return out


# ------------------------------------------------------------------------------------ writing


@contextmanager
def _partial_file(final: Path) -> Iterator[Path]:
    """A private (0600) temporary file next to `final`, removed unless the caller renamed it."""
    final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}{_PARTIAL_SUFFIX}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_member(zf: zipfile.ZipFile, name: str, data: bytes, stamp: tuple[int, ...]) -> str:
    info = zipfile.ZipInfo(name, date_time=stamp[:6])  # type: ignore[arg-type]
    # Parquet files are compressed already (zstd); deflating them again only costs time.
    info.compress_type = zipfile.ZIP_STORED if name.endswith(".parquet") else zipfile.ZIP_DEFLATED
    info.external_attr = 0o600 << 16
    zf.writestr(info, data)
    return _sha256(data)


def _member_name(directory: str, table: str, ext: str) -> str:
    if not _SAFE_NAME.fullmatch(table):
        table = re.sub(r"[^a-z0-9_]", "_", table.lower())[:63] or "table"
    return f"{directory}/{table}.{ext}"


def export_merchant(
    warehouse: Warehouse,
    vault: Vault | None,
    merchant_id: str,
    *,
    requested_by: str,
    now: datetime | None = None,
    out_dir: Path | str | None = None,
) -> ExportResult:
    """Write everything held on `merchant_id` to one zip archive and register it.

    The archive goes to `out_dir` (default `data_dir()/exports/<merchant_id>/`), written to a
    temporary file and renamed in the same step that registers it in `platform.exports`, so a
    killed export never leaves a half archive registered. Records a `platform.data_requests` row
    of kind 'export' (open while the export runs, completed at the end) and an `export.created`
    audit event (counts, never PII). Offboarded merchants can export (their data is kept until
    erasure); an unknown merchant raises RegistryError. `vault` may be None only when the
    merchant holds no encrypted PII (ExportError otherwise).
    """
    validate_merchant_id(merchant_id)
    if not isinstance(requested_by, str) or not requested_by.strip():
        raise ExportError("requested_by must name who asked for the export (it goes to the audit log)")
    created = _aware(now, "now") if now is not None else datetime.now(UTC)
    schema = merchant_schema(merchant_id)
    export_id, request_id = uuid.uuid4().hex, uuid.uuid4().hex
    directory = Path(out_dir) if out_dir is not None else data_dir() / "exports" / merchant_id
    final = directory.resolve() / f"{merchant_id}-{created:%Y%m%dT%H%M%SZ}-{export_id[:8]}.zip"

    with warehouse.connect() as conn:
        known = conn.table_exists(PLATFORM_SCHEMA, "merchants") and conn.fetchone(
            f"SELECT status FROM {PLATFORM_SCHEMA}.merchants WHERE merchant_id = ?", [merchant_id]
        )
        if not known:
            raise RegistryError(f"unknown merchant {merchant_id!r}: see 'illuma merchants list'")
        account = _account_tables(conn, merchant_id)
        conn.execute(
            f"INSERT INTO {PLATFORM_SCHEMA}.data_requests (request_id, merchant_id, kind, received_at, "
            "deadline, requested_by, completed_at, outcome) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
            [request_id, merchant_id, REQUEST_KIND, created, retention.request_deadline(created), requested_by],
        )
    try:
        # Listed in the merchant's own scope, where everything in its schema is its own: the
        # platform's login has no access to a merchant's schema (ADR 0001).
        relations = []
        if warehouse.merchant_schema_exists(merchant_id):
            with warehouse.merchant_scope(merchant_id) as conn:
                relations = _relations(conn, schema)
        return _export(
            warehouse, vault, merchant_id, schema, known[0], relations, account, export_id, request_id,
            final, created, requested_by, completed=now is not None,
        )
    except BaseException as exc:
        # The request stays open (its deadline still runs); say why this attempt failed. The
        # export's own error is the one raised, whatever happens to this note.
        try:
            with warehouse.connect() as conn:
                conn.execute(
                    f"UPDATE {PLATFORM_SCHEMA}.data_requests SET outcome = ? WHERE request_id = ?",
                    [f"failed: {type(exc).__name__}", request_id],
                )
        except Exception as note_exc:
            exc.add_note(f"also failed to mark data request {request_id} as failed: {note_exc}")
        raise


def _export(
    warehouse: Warehouse, vault: Vault | None, merchant_id: str, schema: str, status: str,
    relations: list[tuple[str, str, list[_Column]]], account: list[_Table], export_id: str,
    request_id: str, final: Path, created: datetime, requested_by: str, *, completed: bool,
) -> ExportResult:
    stamp = created.timetuple()[:6]
    manifest_tables: list[dict[str, Any]] = []
    revealed = withheld = 0
    held_due: list[datetime] = []
    seen_members: set[str] = set()
    row_counts: dict[str, int] = {}

    def add(zf: zipfile.ZipFile, directory: str, table: _Table) -> None:
        files = {}
        table.columns = _settle_numeric(table.columns, table.rows)
        for ext, render in (("parquet", _parquet_bytes), ("csv", _csv_bytes)):
            member = _member_name(directory, table.name, ext)
            if member in seen_members:
                raise ExportError(f"two tables map to the archive file {member}: rename one of them")
            seen_members.add(member)
            data = render(table.columns, table.rows)
            files[member] = {"sha256": _write_member(zf, member, data, stamp), "bytes": len(data)}
        row_counts[table.name if directory == "data" else f"{directory}/{table.name}"] = len(table.rows)
        manifest_tables.append(
            {
                "name": table.name,
                "source": table.source,
                "kind": table.kind,
                "row_count": len(table.rows),
                "columns": [c.name for c in table.columns],
                "types": [c.kind for c in table.columns],
                "files": files,
            }
        )

    with _partial_file(final) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            with warehouse.merchant_scope(merchant_id) as conn:
                due = _pii_due_dates(conn, schema, {name for name, _, _ in relations})
                for name, kind, columns in relations:
                    table = _Table(name, f"{schema}.{name}", kind, columns, _read(conn, schema, name, columns))
                    if name == BUYER_PII_TABLE:
                        r, w, d = _reveal_pii(vault, merchant_id, table, due, created, requested_by)
                        revealed, withheld = revealed + r, withheld + w
                        held_due += d
                    r, w = _open_payloads(vault, merchant_id, table, due, created, requested_by)
                    revealed, withheld = revealed + r, withheld + w
                    _refuse_ciphertext(table)
                    add(zf, "data", table)
                    del table  # one table in memory at a time
            for table in account:
                add(zf, "account", table)
            expires = retention.export_expires_at(created, held_due)
            manifest = {
                "format": FORMAT,
                "export_id": export_id,
                "merchant_id": merchant_id,
                "merchant_status": status,
                "created_at": created.isoformat(),
                "expires_at": expires.isoformat(),
                "policy_version": retention.POLICY_VERSION,
                "requested_by": requested_by,
                "pii": {
                    "table": BUYER_PII_TABLE,
                    "columns": list(PII_COLUMNS),
                    "decrypted": True,
                    "values_revealed": revealed,
                    "values_withheld_past_retention": withheld,
                },
                "row_count": sum(t["row_count"] for t in manifest_tables),
                "tables": manifest_tables,
            }
            body = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
            _write_member(zf, MANIFEST, body, stamp)
        _fsync(tmp)
        digest = _file_sha256(tmp)
        total = manifest["row_count"]
        completed_at = created if completed else datetime.now(UTC)
        renamed = False
        try:
            with warehouse.connect() as conn:
                conn.execute(
                    f"INSERT INTO {PLATFORM_SCHEMA}.exports (export_id, merchant_id, path, created_at, "
                    "expires_at, sha256, row_count, requested_by, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                    [export_id, merchant_id, str(final), created, expires, digest, total, requested_by],
                )
                conn.execute(
                    f"UPDATE {PLATFORM_SCHEMA}.data_requests SET completed_at = ?, outcome = ? WHERE request_id = ?",
                    [completed_at, f"completed: export {export_id}", request_id],
                )
                record_audit(
                    conn,
                    actor=requested_by,
                    action=CREATED_ACTION,
                    merchant_id=merchant_id,
                    details={
                        "export_id": export_id,
                        "request_id": request_id,
                        "file": final.name,
                        "sha256": digest,
                        "tables": len(manifest_tables),
                        "rows": total,
                        "pii_values_revealed": revealed,
                        "pii_values_withheld": withheld,
                        "expires_at": expires.isoformat(),
                        "policy_version": retention.POLICY_VERSION,
                    },
                    at=created,
                )
                # Last step before the commit: the archive appears under its name only together
                # with its registration; a failed commit removes it again below.
                os.replace(tmp, final)
                renamed = True
                _fsync(final.parent)
        except BaseException:
            if renamed:
                final.unlink(missing_ok=True)
            raise
    return ExportResult(
        export_id=export_id,
        request_id=request_id,
        merchant_id=merchant_id,
        path=final,
        sha256=digest,
        created_at=created,
        expires_at=expires,
        row_counts=row_counts,
        pii_values_revealed=revealed,
        pii_values_withheld=withheld,
    )


# ---------------------------------------------------------------------------------- verifying


def verify_export(path: Path | str, *, sha256: str | None = None) -> dict[str, Any]:
    """Re-read an archive and check every file against its manifest: sha256, row count (Parquet
    and CSV), columns, and that nothing is missing or extra. With `sha256`, check the archive's
    own hash too (as recorded in platform.exports). Returns the manifest; raises
    ExportVerificationError naming the first mismatch."""
    path = Path(path)
    if not path.is_file():
        raise ExportVerificationError(f"no export archive at {path}")
    if sha256 is not None and _file_sha256(path) != sha256:
        raise ExportVerificationError(
            f"{path.name}: archive sha256 differs from the recorded {sha256}: the file was altered "
            "or replaced; make a new export"
        )
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ExportVerificationError(f"{path.name} is not a readable zip archive: {exc}") from None
    with zf:
        names = set(zf.namelist())
        if MANIFEST not in names:
            raise ExportVerificationError(f"{path.name} has no {MANIFEST}")
        manifest = json.loads(zf.read(MANIFEST))
        if manifest.get("format") != FORMAT:
            raise ExportVerificationError(f"{path.name}: unknown format {manifest.get('format')!r}")
        listed = {MANIFEST}
        total = 0
        for table in manifest["tables"]:
            expected_rows = int(table["row_count"])
            total += expected_rows
            for member, meta in table["files"].items():
                listed.add(member)
                if member not in names:
                    raise ExportVerificationError(f"{path.name}: {member} is listed in the manifest but missing")
                data = zf.read(member)
                if _sha256(data) != meta["sha256"]:
                    raise ExportVerificationError(
                        f"{path.name}: {member} sha256 {_sha256(data)} differs from the manifest's {meta['sha256']}"
                    )
                if member.endswith(".parquet"):
                    pf = pq.ParquetFile(io.BytesIO(data))
                    rows, columns = pf.metadata.num_rows, pf.schema_arrow.names
                else:
                    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
                    columns = next(reader, [])
                    rows = sum(1 for _ in reader)
                if rows != expected_rows:
                    raise ExportVerificationError(
                        f"{path.name}: {member} holds {rows} rows, the manifest says {expected_rows}"
                    )
                if list(columns) != list(table["columns"]):
                    raise ExportVerificationError(
                        f"{path.name}: {member} columns {list(columns)} differ from the manifest's {table['columns']}"
                    )
        if int(manifest["row_count"]) != total:
            raise ExportVerificationError(
                f"{path.name}: manifest row_count {manifest['row_count']} is not the sum of its tables ({total})"
            )
        extra = sorted(names - listed)
        if extra:
            raise ExportVerificationError(f"{path.name} holds files its manifest does not list: {', '.join(extra)}")
    return manifest


# ---------------------------------------------------------------------------------- deleting


def _delete(
    warehouse: Warehouse, rows: list[tuple[str, str, str]], now: datetime, action: str, actor: str, reason: str
) -> list[str]:
    deleted = []
    for export_id, merchant_id, path in rows:
        file = Path(path)
        found = file.exists()
        # File first, then the row: a run killed in between finds the row again, and a missing
        # file is not an error.
        file.unlink(missing_ok=True)
        with warehouse.connect() as conn:
            conn.execute(
                f"UPDATE {PLATFORM_SCHEMA}.exports SET deleted_at = ? WHERE export_id = ? AND deleted_at IS NULL",
                [now, export_id],
            )
            record_audit(
                conn,
                actor=actor,
                action=action,
                merchant_id=merchant_id,
                details={"export_id": export_id, "file": file.name, "file_found": found, "reason": reason},
                at=now,
            )
        deleted.append(export_id)
    return deleted


def _platform_ready(warehouse: Warehouse) -> bool:
    with warehouse.connect() as conn:
        return conn.table_exists(PLATFORM_SCHEMA, "exports")


def delete_expired_exports(
    warehouse: Warehouse, now: datetime, merchant_id: str | None = None, *, actor: str = "retention:exports"
) -> list[str]:
    """Delete every export archive whose expires_at <= now and that is not deleted yet (of one
    merchant, or all): remove the file, set deleted_at, audit `export.expired`. Idempotent; a file
    already gone is not an error. Returns the export ids handled."""
    now = _aware(now, "now")
    if merchant_id is not None:
        validate_merchant_id(merchant_id)
    if not _platform_ready(warehouse):
        return []
    where, params = "deleted_at IS NULL AND expires_at <= ?", [now]
    if merchant_id is not None:
        where += " AND merchant_id = ?"
        params.append(merchant_id)
    with warehouse.connect() as conn:
        rows = conn.fetchall(
            f"SELECT export_id, merchant_id, path FROM {PLATFORM_SCHEMA}.exports WHERE {where} "
            "ORDER BY expires_at, export_id",
            params,
        )
    return _delete(warehouse, rows, now, EXPIRED_ACTION, actor, "expired")


def delete_merchant_exports(
    warehouse: Warehouse, merchant_id: str, now: datetime, *, actor: str = "retention:erasure"
) -> int:
    """Delete every export file of the merchant (account erasure), whatever its expiry: remove
    the file, set deleted_at, audit `export.deleted`. Also sweeps unregistered leftovers (an
    export killed mid-write) from the merchant's default export folder. Idempotent. Returns how
    many registered exports were deleted by this call."""
    validate_merchant_id(merchant_id)
    now = _aware(now, "now")
    count = 0
    if _platform_ready(warehouse):
        with warehouse.connect() as conn:
            rows = conn.fetchall(
                f"SELECT export_id, merchant_id, path FROM {PLATFORM_SCHEMA}.exports "
                "WHERE merchant_id = ? AND deleted_at IS NULL ORDER BY created_at, export_id",
                [merchant_id],
            )
        count = len(_delete(warehouse, rows, now, ERASED_ACTION, actor, "account_erasure"))
    folder = data_dir() / "exports" / merchant_id
    if folder.is_dir():
        for leftover in folder.iterdir():
            if leftover.is_file() and (leftover.suffix == ".zip" or leftover.name.endswith(_PARTIAL_SUFFIX)):
                leftover.unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()
    return count
