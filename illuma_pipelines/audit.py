"""The platform audit log: who (a user or a run) did what, to which merchant, when, with counts.

Writers: registry changes (registry.py), vault reveals (resources/vault.py), key rotation and
shredding (key_rotation.py), purges and exports (purge.py, export.py), and every materialization
and failed run, copied from the Dagster event log by `sensors.audit.audit_run_materializations`
(called by `audit_log_sensor`, by the merchants sensor before it deletes an erased merchant's
runs, and by the demo), which reads the run into plain `RunFacts` for `audit_run` here. Rows hold
identifiers and counts, never PII and never free text from payloads or error messages.

The log is append-only. On PostgreSQL the database enforces it (see `_secure_platform` in
warehouse.py): triggers refuse UPDATE and TRUNCATE always and DELETE unless the row is older than
12 months by the database clock *and* the transaction set `illuma.purge = 'security_logs'`, which
only `purge_security_logs` does; the `illuma_pipeline` role may only SELECT and INSERT. DuckDB has
neither triggers nor roles: there it is enforced by code, as nothing but `purge_security_logs`
issues an UPDATE, DELETE or TRUNCATE against platform.audit_log.

Plain domain code: no Dagster import. Reading the Dagster instance is sensors/audit.py's part.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from illuma_pipelines.merchant_ids import MERCHANT_ID_PATTERN
from illuma_pipelines.retention import DEFAULT_POLICY, Policy
from illuma_pipelines.retention.engine import rule_cutoff
from illuma_pipelines.warehouse import (
    PLATFORM_SCHEMA,
    PURGE_SETTING,
    SECURITY_LOG_PURGE,
    Connection,
    Warehouse,
)

MATERIALIZED = "asset.materialized"
RUN_FAILED = "run.failed"
RUN_CANCELED = "run.canceled"
SECURITY_LOGS_PURGED = "audit.security_logs_purged"
# Where a launching user's identity lands on a run: Dagster+ tags runs (and backfills) launched
# from the UI with the creator's email under "user"; "dagster/user" is accepted as well.
USER_TAGS = ("user", "dagster/user")
# How the run came about, when no user launched it.
LAUNCHER_TAGS = {
    "dagster/schedule_name": "schedule",
    "dagster/sensor_name": "sensor",
    "dagster/backfill": "backfill",
}
_ID_NAMESPACE = uuid.UUID("5b0d7a53-3c8e-4d8a-9a55-6c6c756d6161")
_INSERT_CHUNK = 200


@dataclass(frozen=True)
class AuditEvent:
    """One audit row. `event_id` is deterministic for events copied from elsewhere, so copying
    them again is a no-op."""

    event_id: str
    occurred_at: datetime
    actor: str
    action: str
    merchant_id: str | None
    details: Mapping[str, Any] = field(default_factory=dict)


def audit_event_id(*parts: object) -> str:
    """A stable 32-hex id for an event identified by `parts` (e.g. run id and storage id)."""
    return uuid.uuid5(_ID_NAMESPACE, "\x1f".join(str(p) for p in parts)).hex


def run_actor(run_id: str, tags: Mapping[str, str]) -> str:
    """`run:<id>`, prefixed with the launching user when the run names one."""
    user = next((tags[t] for t in USER_TAGS if tags.get(t)), None)
    return f"user:{user} run:{run_id}" if user else f"run:{run_id}"


def launched_by(tags: Mapping[str, str]) -> str | None:
    """`schedule:<name>`, `sensor:<name>` or `backfill:<id>`; None for a run launched by hand."""
    for tag, kind in LAUNCHER_TAGS.items():
        if tags.get(tag):
            return f"{kind}:{tags[tag]}"
    return None


def numeric_counts(metadata: Mapping[str, Any]) -> dict[str, int | float]:
    """The finite int and float values of a materialization's metadata (row counts, requests,
    seconds). Text, JSON, paths, booleans and the like are dropped: they may carry payload text."""
    counts: dict[str, int | float] = {}
    for key, entry in metadata.items():
        value = getattr(entry, "value", entry)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        counts[str(key)] = value
    return dict(sorted(counts.items()))


def _valid_merchant(value: object) -> str | None:
    return value if isinstance(value, str) and MERCHANT_ID_PATTERN.fullmatch(value) else None


def append_events(conn: Connection, events: Sequence[AuditEvent]) -> int:
    """Append the events whose ids are not in the log yet; return how many were written."""
    written = 0
    for start in range(0, len(events), _INSERT_CHUNK):
        chunk = events[start : start + _INSERT_CHUNK]
        values = ", ".join("(?, ?, ?, ?, ?, ?)" for _ in chunk)
        params: list[Any] = []
        for e in chunk:
            params += [
                e.event_id,
                e.occurred_at,
                e.actor,
                e.action,
                e.merchant_id,
                json.dumps(dict(e.details), sort_keys=True, default=str),
            ]
        rows = conn.fetchall(
            f"INSERT INTO {PLATFORM_SCHEMA}.audit_log "
            "(event_id, occurred_at, actor, action, merchant_id, details) "
            f"VALUES {values} ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            params,
        )
        written += len(rows)
    return written


def _registered(conn: Connection, candidates: Iterable[str]) -> set[str]:
    ids = sorted({c for c in candidates if _valid_merchant(c)})
    if not ids:
        return set()
    marks = ", ".join("?" for _ in ids)
    rows = conn.fetchall(
        f"SELECT merchant_id FROM {PLATFORM_SCHEMA}.merchants WHERE merchant_id IN ({marks})", ids
    )
    return {r[0] for r in rows}


def _timestamp(seconds: float | None) -> datetime:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else datetime.now(UTC)


@dataclass(frozen=True)
class MaterializationFacts:
    """One asset materialization of a run, as its event log records it."""

    storage_id: int
    asset_key: str  # user string, e.g. "extracts/amazon_orders"
    partition: str | None
    step: str | None
    timestamp: float | None  # seconds since the epoch
    metadata: Mapping[str, Any]
    merchant_hint: str | None = None  # the merchant its partition names (tag), unvalidated


@dataclass(frozen=True)
class RunFacts:
    """What the audit log records of one finished run, read from the Dagster instance by
    sensors/audit.py; plain data, so the events built from it are tested without Dagster."""

    run_id: str
    job: str
    tags: Mapping[str, str]
    partition: str | None
    # Tag values that may name the run's merchant, in order of trust; the first valid id wins.
    merchant_hints: tuple[str | None, ...] = ()
    outcome: str | None = None  # RUN_FAILED, RUN_CANCELED, or None for a run that succeeded
    ended_at: float | None = None
    failed_steps: tuple[str, ...] = ()
    materializations: tuple[MaterializationFacts, ...] = ()


def run_events(run: RunFacts, registered: Collection[str]) -> list[AuditEvent]:
    """The audit events of a finished run (see `audit_run`). `registered` holds the merchant ids,
    among the run's partition keys, that are in the registry: a partition key that is a registered
    merchant id is a merchant-partitioned asset's key."""
    actor = run_actor(run.run_id, run.tags)
    launcher = launched_by(run.tags)
    run_merchant = next((m for m in map(_valid_merchant, run.merchant_hints) if m), None)
    events = []
    for m in run.materializations:
        merchant = (
            _valid_merchant(m.merchant_hint)
            or (m.partition if m.partition in registered else None)
            or run_merchant
        )
        details = {
            "asset_key": m.asset_key,
            "partition": m.partition,
            "job": run.job,
            "step": m.step,
            "storage_id": m.storage_id,
            "counts": numeric_counts(m.metadata),
        }
        if launcher:
            details["launched_by"] = launcher
        events.append(
            AuditEvent(
                event_id=audit_event_id(run.run_id, m.storage_id, m.asset_key, m.partition),
                occurred_at=_timestamp(m.timestamp),
                actor=actor,
                action=MATERIALIZED,
                merchant_id=merchant,
                details=details,
            )
        )
    if run.outcome is not None:
        details = {
            "job": run.job,
            "partition": run.partition,
            "failed_steps": sorted(run.failed_steps),
            "materializations": len(run.materializations),
        }
        if launcher:
            details["launched_by"] = launcher
        events.append(
            AuditEvent(
                event_id=audit_event_id(run.run_id, run.outcome),
                occurred_at=_timestamp(run.ended_at),
                actor=actor,
                action=run.outcome,
                merchant_id=run_merchant or (run.partition if run.partition in registered else None),
                details=details,
            )
        )
    return events


def audit_run(warehouse: Warehouse, run: RunFacts) -> int:
    """Copy a finished run's asset materializations (and, for a failed or canceled run, the run's
    outcome) into platform.audit_log. Returns how many rows were added.

    One `asset.materialized` row per materialization: actor `run:<id>` (with the launching user
    when tagged), the merchant of its partition, its time, and details holding the asset key, the
    partition, the job, the step and the numeric metadata (counts). A failed run also gets one
    `run.failed` row (`run.canceled` for a canceled one) with its failed steps' keys; error
    messages are left out, as they can quote payloads. Idempotent: row ids derive from the run
    and the event's storage id, so a second call adds nothing.
    """
    if not run.materializations and run.outcome is None:
        return 0
    with warehouse.connect() as conn:
        partitions = [m.partition for m in run.materializations] + [run.partition]
        registered = _registered(conn, [p for p in partitions if p])
        return append_events(conn, run_events(run, registered))


def purge_security_logs(
    warehouse: Warehouse,
    now: datetime,
    *,
    actor: str = "retention:security_logs",
    policy: Policy = DEFAULT_POLICY,
) -> int:
    """Delete the audit rows whose security-log minimum (12 months by default) has fully passed
    at `now`, and record the purge itself (cutoff and count) as a new audit row. Returns how many
    rows were deleted.

    The cutoff follows the retention engine's day semantics (`rule_cutoff`, the set-based form of
    `can_delete_security_log`): a row may go from 00:00 UTC on the day after
    day(occurred_at) + 12 months, never a moment early. `now` is an
    argument so the rule can be tested. On PostgreSQL the database checks again with its own clock:
    the trigger lets a row go only if it is older than 12 months by `now()` and the transaction set
    `illuma.purge = 'security_logs'` (set here, SET LOCAL). The trigger can only refuse rows this
    function chose, never add any, so it can only be stricter: a `now` ahead of the real clock
    deletes nothing young, the whole purge fails instead (and deletes nothing).
    On DuckDB (no triggers) this function is the only code that deletes audit rows.
    """
    rule = policy.rule(SECURITY_LOG_PURGE)
    cutoff = rule_cutoff(rule, now)
    table = f"{PLATFORM_SCHEMA}.audit_log"
    with warehouse.connect() as conn:
        if conn.dialect == "postgres":
            conn.execute(f"SET LOCAL {PURGE_SETTING} = '{SECURITY_LOG_PURGE}'")
            (deleted,) = conn.fetchone(
                f"WITH gone AS (DELETE FROM {table} WHERE occurred_at < ? RETURNING 1) "
                "SELECT count(*) FROM gone",
                [cutoff],
            )
        else:
            # One transaction on a single-writer file: the count is the deleted rows' count.
            (deleted,) = conn.fetchone(f"SELECT count(*) FROM {table} WHERE occurred_at < ?", [cutoff])
            conn.execute(f"DELETE FROM {table} WHERE occurred_at < ?", [cutoff])
        details = {
            "rule": rule.id,
            "as_of": now.isoformat(),
            "cutoff": cutoff.isoformat(),
            "rows_deleted": int(deleted),
            "policy_version": policy.version,
        }
        # Dated by the real clock: this row records when the purge happened. A purge that deleted
        # nothing (most days: every merchant's daily run calls it) adds no row.
        if deleted:
            append_events(
                conn,
                [AuditEvent(uuid.uuid4().hex, datetime.now(UTC), actor, SECURITY_LOGS_PURGED, None, details)],
            )
    return int(deleted)
