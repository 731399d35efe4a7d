"""Raw extract rows: verbatim payloads with their provenance, and the quarantine for bad records.

No Dagster here. The extract assets call `split_records` and load the two frames it returns;
everything that reads raw payloads back (the core loaders, the quality checks, extracts that build
on another extract) reads them through `raw_payloads`, `raw_payload_batches` and `raw_row_count`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pandas as pd

from illuma_pipelines.marketplaces import raw_table_name
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.warehouse import Connection, TableSpec, cols

RAW_COLUMNS = cols(
    "partition_date date!",
    "source text!",
    "record_key text!",
    "payload json!",
    "window_start timestamptz",
    "window_end timestamptz",
    "extracted_at timestamptz!",
    "run_id text!",
)
QUARANTINE = TableSpec(
    "raw_quarantine",
    cols(
        "partition_date date!",
        "dataset text!",
        "source text!",
        "position integer!",
        "reason text!",
        "payload text",
        "extracted_at timestamptz!",
        "run_id text!",
    ),
)


def raw_table(channel: str, dataset: str) -> TableSpec:
    return TableSpec(raw_table_name(channel, dataset), RAW_COLUMNS)


# ------------------------------------------------------------------------------------ reading
RawRow = tuple[str, str, datetime]  # (record_key, payload JSON text, extracted_at)


def _raw_table_if_any(conn: Connection, merchant_id: str, channel: str, dataset: str) -> tuple[str, str] | None:
    """(schema, table) of a raw dataset of the merchant, None before its first extract."""
    schema, table = merchant_schema(merchant_id), raw_table(channel, dataset).name
    return (schema, table) if conn.table_exists(schema, table) else None


def raw_payloads(conn: Connection, merchant_id: str, channel: str, dataset: str, partition_date: str) -> list[RawRow]:
    """(record_key, payload JSON text, extracted_at) of one raw table's partition, in key order.

    The payload is read as text on both engines; parse it with `normalize.loads` to keep amounts
    exact Decimals (psycopg would hand JSONB numbers over as floats).
    """
    found = _raw_table_if_any(conn, merchant_id, channel, dataset)
    return conn.fetchall(*_raw_query(*found, partition_date)) if found else []


def raw_payload_batches(
    conn: Connection, merchant_id: str, channel: str, dataset: str, partition_date: str, size: int
) -> Iterator[list[RawRow]]:
    """A raw table partition's (record_key, payload JSON text, extracted_at) rows in batches of
    `size`, streamed in stored order: sorting would hold every payload in the engine's memory at
    once."""
    found = _raw_table_if_any(conn, merchant_id, channel, dataset)
    if found:
        yield from conn.iter_batches(*_raw_query(*found, partition_date, ordered=False), size=size)


def raw_row_count(conn: Connection, merchant_id: str, channel: str, dataset: str, partition_date: str) -> int:
    found = _raw_table_if_any(conn, merchant_id, channel, dataset)
    return conn.row_count(*found, {"partition_date": partition_date}) if found else 0


def _raw_query(schema: str, table: str, partition_date: str, *, ordered: bool = True) -> tuple[str, list[str]]:
    # extracted_at as a UTC wall time: DuckDB hands a timestamptz to Python through a time zone
    # lookup per value, half the cost of the whole stream; `as_utc` puts the zone back.
    return (
        f"SELECT record_key, CAST(payload AS TEXT), extracted_at AT TIME ZONE 'UTC' FROM {schema}.{table} "
        f"WHERE partition_date = ?{' ORDER BY record_key' if ordered else ''}",
        [partition_date],
    )


def as_utc(moment: datetime) -> datetime:
    """A raw row's extracted_at (a UTC wall time) as an aware datetime."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def quarantine_frame(
    rejects: Sequence[tuple[int | str, str]],
    rows: Sequence[RawRow],
    *,
    dataset: str,
    source: str,
    partition_date: str,
    run_id: str,
    first_position: int = 0,
) -> pd.DataFrame:
    """raw_quarantine rows for normalizer rejects, keyed by position or record id; `rows` are the
    partition's raw rows from position `first_position` on."""
    position_of = {key: i for i, (key, _, _) in enumerate(rows)}
    out = []
    for ref, reason in rejects:
        index = ref if isinstance(ref, int) else position_of.get(ref, -1)
        payload = rows[index][1] if 0 <= index < len(rows) else None
        position = first_position + index if payload is not None else -1
        out.append(
            {
                "partition_date": partition_date,
                "dataset": dataset,
                "source": source,
                "position": position,
                "reason": reason,
                "payload": payload,
                "extracted_at": as_utc(rows[index][2]) if payload is not None else datetime.now(UTC),
                "run_id": run_id,
            }
        )
    return pd.DataFrame(out, columns=[c.name for c in QUARANTINE.columns])


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame(columns=[c.name for c in QUARANTINE.columns])


# ------------------------------------------------------------------------------------ landing


def _with_markers(node: Any, found: list[Decimal]) -> Any:
    if isinstance(node, Decimal):
        found.append(node)
        return f"__illuma_decimal_{len(found) - 1}__"
    if isinstance(node, dict):
        return {k: _with_markers(v, found) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_with_markers(v, found) for v in node]
    if isinstance(node, datetime):
        return node.isoformat()
    return node


def dumps_payload(record: Any, *, sort_keys: bool = False) -> str:
    """JSON text of a record as the API sent it: Decimals written with their exact digits."""
    found: list[Decimal] = []
    text = json.dumps(
        _with_markers(record, found), ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys
    )
    for index in range(len(found) - 1, -1, -1):
        # json's float path would round; splice the Decimal's own text in as a JSON number.
        text = text.replace(f'"__illuma_decimal_{index}__"', str(found[index]))
    return text


def fallback_key(record: Any) -> str:
    """A stable key for a record without an id: the hash of its canonical JSON."""
    canonical = dumps_payload(record, sort_keys=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class RecordRule:
    """How to key and sanity-check one dataset's records before they land."""

    key_fields: Sequence[str] = ()  # first non-empty wins; none: content hash
    required: Sequence[str] = ()  # dotted paths that must be present and non-empty
    check: Callable[[dict], str | None] | None = None  # extra check; returns a reason or None


def _dig(record: dict, path: str) -> Any:
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def record_key(record: dict, rule: RecordRule) -> str | None:
    for name in rule.key_fields:
        value = _dig(record, name)
        if isinstance(value, str | int) and str(value).strip():
            return str(value)
    return None if rule.key_fields else fallback_key(record)


def problem_with(record: Any, rule: RecordRule) -> str | None:
    """Why a record cannot land as a raw row (None if it can)."""
    if not isinstance(record, dict):
        return f"record is a {type(record).__name__}, expected a JSON object"
    for path in rule.required:
        value = _dig(record, path)
        if value is None or (isinstance(value, str) and not value.strip()):
            return f"required field {path!r} is missing or empty"
    if rule.key_fields and record_key(record, rule) is None:
        return f"no record id in any of {', '.join(rule.key_fields)}"
    if rule.check is not None:
        return rule.check(record)
    return None


@dataclass
class SplitRecords:
    raw: pd.DataFrame
    quarantine: pd.DataFrame
    duplicates: int


def split_records(
    records: Iterable[Any],
    rule: RecordRule,
    *,
    dataset: str,
    source: str,
    partition_date: str,
    window: tuple[datetime | None, datetime | None],
    extracted_at: datetime,
    run_id: str,
) -> SplitRecords:
    """Raw rows for the good records (one per key, the last seen wins) and quarantine rows."""
    good: dict[str, str] = {}
    bad: list[dict[str, Any]] = []
    duplicates = 0
    for position, record in enumerate(records):
        reason = problem_with(record, rule)
        if reason is not None:
            bad.append(
                {
                    "partition_date": partition_date,
                    "dataset": dataset,
                    "source": source,
                    "position": position,
                    "reason": reason,
                    "payload": dumps_payload(record),
                    "extracted_at": extracted_at,
                    "run_id": run_id,
                }
            )
            continue
        key = record_key(record, rule)
        assert key is not None
        if key in good:
            duplicates += 1
        good[key] = dumps_payload(record)
    raw = pd.DataFrame(
        {
            "partition_date": [partition_date] * len(good),
            "source": [source] * len(good),
            "record_key": list(good),
            "payload": list(good.values()),
            "window_start": [window[0]] * len(good),
            "window_end": [window[1]] * len(good),
            "extracted_at": [extracted_at] * len(good),
            "run_id": [run_id] * len(good),
        },
        columns=[c.name for c in RAW_COLUMNS],
    )
    quarantine = pd.DataFrame(bad, columns=[c.name for c in QUARANTINE.columns])
    return SplitRecords(raw, quarantine, duplicates)
