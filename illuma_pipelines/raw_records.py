"""Raw extract rows: verbatim payloads with their provenance, and the quarantine for bad records.

No Dagster here: the extract assets call `split_records` and load the two frames it returns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import pandas as pd

from illuma_pipelines.warehouse import TableSpec, cols

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
    return TableSpec(f"raw_{channel}_{dataset}", RAW_COLUMNS)


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
