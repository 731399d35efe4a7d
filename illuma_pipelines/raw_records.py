"""Raw extract rows: verbatim payloads with their provenance, and the quarantine for bad records.

No Dagster here. The extract assets call `split_records` and load the two frames it returns;
everything that reads raw payloads back (the core loaders, the quality checks, extracts that build
on another extract) reads them through `raw_payloads`, `raw_payload_batches` and `raw_row_count`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pandas as pd

from illuma_pipelines.marketplaces import raw_table_name
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.warehouse import Connection, TableSpec, any_of, cols

RAW_COLUMNS = cols(
    "partition_date date!",
    "source text!",
    "record_key text!",
    "payload json!",
    "window_start timestamptz",
    "window_end timestamptz",
    "extracted_at timestamptz!",
    "run_id text!",
    # The vault key version the payload's PII fields are sealed under; NULL: no PII sealed.
    "pii_key_version integer",
)
PII_KEY_VERSION = "pii_key_version"
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


def ensure_pii_key_column(conn: Connection, schema: str, table: str) -> None:
    """Add `pii_key_version` to a table created before payloads were sealed at landing."""
    conn.execute(f"ALTER TABLE {schema}.{table} ADD COLUMN IF NOT EXISTS {PII_KEY_VERSION} INTEGER")


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


def raw_payloads_of(
    conn: Connection, merchant_id: str, channel: str, dataset: str, record_keys: Sequence[str]
) -> list[tuple[str, str, str, datetime]]:
    """(partition date, record_key, payload JSON text, extracted_at) of the raw rows of these
    records in every partition of a raw table (an order lands again each day it changes)."""
    found = _raw_table_if_any(conn, merchant_id, channel, dataset)
    if not found or not record_keys:
        return []
    schema, table = found
    rows = conn.fetchall(
        f"SELECT CAST(partition_date AS TEXT), record_key, CAST(payload AS TEXT), extracted_at AT TIME ZONE 'UTC' "
        f"FROM {schema}.{table} WHERE {any_of(conn.dialect, 'record_key')}",
        [list(record_keys)],
    )
    return [(day, key, payload, as_utc(extracted)) for day, key, payload, extracted in rows]


def as_utc(moment: datetime) -> datetime:
    """A raw row's extracted_at (a UTC wall time) as an aware datetime."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


Reject = tuple[int | str, str]  # (record position or id, reason), as the normalizers report them


def locate_rejects(
    rejects: Sequence[Reject], texts: Sequence[str], rejected_alone: Callable[[str], Sequence[Reject]]
) -> list[tuple[int, str]]:
    """Each normalizer reject as (position of its record in `texts`, reason).

    A normalizer keys a reject by the record's position, or by its id when it has one. An id does
    not say which record: two records can carry it (a mangled copy next to the good order, an id
    repeated in the partition), and it need not be the raw row's key. The normalizers judge each
    record alone and report rejects in record order, so the record an id names is the first one
    after the previous reject that `rejected_alone(text)` (the normalizer run on that text alone)
    rejects with the same id and reason; records whose text holds the id are tried first.
    """
    located: list[tuple[int, str]] = []
    taken: set[int] = set()
    after = -1
    for ref, reason in rejects:
        if isinstance(ref, int) and not isinstance(ref, bool):
            if not 0 <= ref < len(texts):
                raise ValueError(f"a reject names record {ref} of a batch of {len(texts)}: {reason}")
            position = ref
        else:
            position = _position_of(str(ref), reason, texts, after, taken, rejected_alone)
        located.append((position, reason))
        taken.add(position)
        after = position
    return located


def _position_of(
    ref: str,
    reason: str,
    texts: Sequence[str],
    after: int,
    taken: set[int],
    rejected_alone: Callable[[str], Sequence[Reject]],
) -> int:
    # Record order first (the normalizers' order), then the rest, in case a normalizer does not
    # keep it; texts that spell the id out (plainly or JSON-escaped) first, then any text.
    spellings = {ref, json.dumps(ref)[1:-1], json.dumps(ref, ensure_ascii=False)[1:-1]}

    def order() -> Iterator[int]:
        return (i for i in itertools.chain(range(after + 1, len(texts)), range(after + 1)) if i not in taken)

    spelled = (i for i in order() if any(s in texts[i] for s in spellings))
    for i in itertools.chain(spelled, order()):
        if (ref, reason) in rejected_alone(texts[i]):
            return i
    raise ValueError(
        f"a normalizer rejected record {ref!r} ({reason}) but none of the {len(texts)} records of "
        "its batch is rejected so when normalized alone: the normalizer must judge each record alone"
    )


def quarantine_frame(
    rejects: Sequence[Reject],
    rows: Sequence[RawRow],
    *,
    dataset: str,
    source: str,
    partition_date: str,
    run_id: str,
    first_position: int = 0,
    rejected_alone: Callable[[str], Sequence[Reject]] | None = None,
) -> pd.DataFrame:
    """raw_quarantine rows for normalizer rejects of `rows`, the partition's raw rows from
    position `first_position` on: each with the exact payload of its record and its position.

    Rejects keyed by position need nothing more; a reject keyed by record id is located with
    `rejected_alone` (see `locate_rejects`), never by matching the id to a raw row's key.
    """
    refs_by_id = [ref for ref, _ in rejects if not isinstance(ref, int) or isinstance(ref, bool)]
    if refs_by_id and rejected_alone is None:
        raise ValueError(
            f"rejects keyed by record id ({', '.join(map(repr, refs_by_id[:3]))}) cannot be placed "
            "without `rejected_alone`: an id may repeat in the partition or differ from the raw key"
        )
    located = locate_rejects(rejects, [row[1] for row in rows], rejected_alone or (lambda _: ()))
    out = [
        {
            "partition_date": partition_date,
            "dataset": dataset,
            "source": source,
            "position": first_position + index,
            "reason": reason,
            "payload": rows[index][1],
            "extracted_at": as_utc(rows[index][2]),
            "run_id": run_id,
        }
        for index, reason in located
    ]
    return pd.DataFrame(out, columns=[c.name for c in QUARANTINE.columns])


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame(columns=[c.name for c in QUARANTINE.columns])


def replace_day_and_quarantine(
    conn: Connection,
    schema: str,
    spec: TableSpec,
    where: dict[str, Any],
    frame: pd.DataFrame,
    *,
    dataset: str,
    partition_date: str,
    rejects: pd.DataFrame,
) -> None:
    """Replace a day's rows of a core table (those matching `where`) and that day's quarantine
    rows of `dataset`, in the connection's transaction: a re-run leaves no duplicate of either."""
    conn.create_table(schema, spec)
    conn.create_table(schema, QUARANTINE)
    conn.replace_rows(schema, spec.name, where, frame)
    conn.replace_rows(schema, QUARANTINE.name, {"partition_date": partition_date, "dataset": dataset}, rejects)


# ------------------------------------------------------------------------------------ landing


class _Markers:
    """Values set aside while a record is written as JSON: Decimals (json's float path would round
    them) and, when sealing, the string values of PII keys. Each stands in the text as a quoted
    marker with a per-call random token, so no API value can pass for one."""

    _PATTERN = re.compile('"__illuma_([0-9a-f]{12})_([dp])([0-9]+)__"')

    def __init__(self, pii_keys: frozenset[str] = frozenset(), token: str | None = None) -> None:
        self.token = token or secrets.token_hex(6)
        self.pii_keys = pii_keys
        self.decimals: list[Decimal] = []
        self.pii: list[tuple[str, str]] = []  # (JSON key, plaintext), in text order

    def walk(self, node: Any) -> Any:
        if isinstance(node, dict):
            keys = self.pii_keys
            if not keys or keys.isdisjoint(node):
                return {k: self.walk(v) for k, v in node.items()}
            out = {}
            for key, value in node.items():
                if key in keys and isinstance(value, str) and value and not value.startswith("v1."):
                    self.pii.append((key, value))
                    out[key] = f"__illuma_{self.token}_p{len(self.pii) - 1}__"
                else:
                    out[key] = self.walk(value)
            return out
        if isinstance(node, list | tuple):
            return [self.walk(v) for v in node]
        if isinstance(node, str | int | float | bool) or node is None:
            return node
        if isinstance(node, Decimal):
            self.decimals.append(node)
            return f"__illuma_{self.token}_d{len(self.decimals) - 1}__"
        if isinstance(node, datetime):
            return node.isoformat()
        return node

    def dumps(self, record: Any, *, sort_keys: bool = False) -> str:
        return json.dumps(self.walk(record), ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)

    def fill(self, text: str, sealed: Sequence[str] = ()) -> str:
        """The text with each marker replaced: a Decimal by its exact digits, a PII value by its
        sealed string (`sealed`, in the order of `self.pii`)."""
        if not self.decimals and not self.pii:
            return text

        token = self.token

        def put(match: re.Match[str]) -> str:
            if match.group(1) != token:
                return match.group(0)
            index = int(match.group(3))
            if match.group(2) == "d":
                return str(self.decimals[index])
            return f'"{sealed[index]}"'

        return self._PATTERN.sub(put, text)


def dumps_payload(record: Any, *, sort_keys: bool = False) -> str:
    """JSON text of a record as the API sent it: Decimals written with their exact digits."""
    markers = _Markers()
    return markers.fill(markers.dumps(record, sort_keys=sort_keys))


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
    # Dotted paths whose values, when present, qualify the key: a record the API returns once per
    # marketplace (a SKU's stock or price) is keyed "marketplace:SKU", so one does not replace
    # another in the partition.
    scope: Sequence[str] = ()


def _dig(record: dict, path: str) -> Any:
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def record_key(record: dict, rule: RecordRule) -> str | None:
    scope = [str(v) for v in (_dig(record, path) for path in rule.scope) if isinstance(v, str | int) and str(v).strip()]
    for name in rule.key_fields:
        value = _dig(record, name)
        if isinstance(value, str | int) and str(value).strip():
            return ":".join([*scope, str(value)])
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


@dataclass(frozen=True)
class Sealer:
    """Seals the PII values of records as they land (ADR 0007): the JSON keys whose string values
    are PII, and a function sealing (record ids, plaintexts) in one batch, returning the sealed
    strings and the key version."""

    pii_keys: frozenset[str]
    seal: Callable[[list[str], list[str]], tuple[list[str], int | None]]


@dataclass
class SplitRecords:
    raw: pd.DataFrame
    quarantine: pd.DataFrame
    duplicates: int
    sealed: int = 0  # PII values sealed


def _sealed_texts(
    entries: Sequence[tuple[str, _Markers, str]], sealer: Sealer | None
) -> tuple[list[str], list[int | None], int]:
    """(record id, markers, text with markers) -> final texts, key version per text, values sealed."""
    ids: list[str] = []
    values: list[str] = []
    for record_id, markers, _ in entries:
        for key, value in markers.pii:
            ids.append(f"{record_id}/{key}")
            values.append(value)
    sealed, version = sealer.seal(ids, values) if (sealer is not None and values) else ([], None)
    texts, versions = [], []
    offset = 0
    for _, markers, text in entries:
        count = len(markers.pii)
        texts.append(markers.fill(text, sealed[offset : offset + count]))
        versions.append(version if count else None)
        offset += count
    return texts, versions, len(values)


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
    sealer: Sealer | None = None,
    quarantine_sealer: Sealer | None = None,
) -> SplitRecords:
    """Raw rows for the good records (one per key, the last seen wins) and quarantine rows. With
    sealers, every PII value is sealed before the text is made (ADR 0007): plaintext PII never
    reaches the frames. Quarantine rows are bound to `<dataset>/<partition_date>/<position>`."""
    good: dict[str, tuple[str, _Markers, str]] = {}
    bad: list[dict[str, Any]] = []
    bad_entries: list[tuple[str, _Markers, str]] = []
    duplicates = 0
    token = secrets.token_hex(6)
    for position, record in enumerate(records):
        reason = problem_with(record, rule)
        if reason is not None:
            markers = _Markers(quarantine_sealer.pii_keys if quarantine_sealer else frozenset(), token)
            bad_entries.append((f"{dataset}/{partition_date}/{position}", markers, markers.dumps(record)))
            bad.append(
                {
                    "partition_date": partition_date,
                    "dataset": dataset,
                    "source": source,
                    "position": position,
                    "reason": reason,
                    "payload": None,
                    "extracted_at": extracted_at,
                    "run_id": run_id,
                }
            )
            continue
        key = record_key(record, rule)
        assert key is not None
        if key in good:
            duplicates += 1
        markers = _Markers(sealer.pii_keys if sealer else frozenset(), token)
        good[key] = (key, markers, markers.dumps(record))
    texts, versions, sealed = _sealed_texts(list(good.values()), sealer)
    bad_texts, _, bad_sealed = _sealed_texts(bad_entries, quarantine_sealer)
    for row, text in zip(bad, bad_texts, strict=True):
        row["payload"] = text
    raw = pd.DataFrame(
        {
            "partition_date": [partition_date] * len(good),
            "source": [source] * len(good),
            "record_key": list(good),
            "payload": texts,
            "window_start": [window[0]] * len(good),
            "window_end": [window[1]] * len(good),
            "extracted_at": [extracted_at] * len(good),
            "run_id": [run_id] * len(good),
            PII_KEY_VERSION: pd.Series(versions, dtype="Int64"),
        },
        columns=[c.name for c in RAW_COLUMNS],
    )
    quarantine = pd.DataFrame(bad, columns=[c.name for c in QUARANTINE.columns])
    return SplitRecords(raw, quarantine, duplicates, sealed + bad_sealed)
