"""The platform audit log: who (a user or a run) did what, to which merchant, when, with counts.

Writers: registry changes (registry.py), vault reveals (resources/vault.py), key rotation and
shredding (assets/keys.py), purges and exports (their assets), and every asset materialization
and failed run, copied from the Dagster event log by `audit_run_materializations` (called by
sensors/audit.py's `audit_log_sensor` and by the demo). Rows hold identifiers and counts, never
PII and never free text from payloads or error messages.

The log is append-only. On PostgreSQL the database enforces it (see `_secure_platform` in
warehouse.py): triggers refuse UPDATE and TRUNCATE always and DELETE unless the row is older than
12 months by the database clock *and* the transaction set `illuma.purge = 'security_logs'`, which
only `purge_security_logs` does; the `illuma_pipeline` role may only SELECT and INSERT. DuckDB has
neither triggers nor roles: there it is enforced by code, as nothing but `purge_security_logs`
issues an UPDATE, DELETE or TRUNCATE against platform.audit_log.

Dagster is imported only where the event log is read, so the rest stays plain domain code.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    import dagster as dg

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


def audit_run_materializations(instance: dg.DagsterInstance, run_id: str, warehouse: Warehouse) -> int:
    """Copy a run's asset materializations (and, for a failed or canceled run, the run's outcome)
    from the Dagster instance into platform.audit_log. Returns how many rows were added.

    One `asset.materialized` row per materialization: actor `run:<id>` (with the launching user
    when tagged), the merchant of its partition, its time, and details holding the asset key, the
    partition, the job, the step and the numeric metadata (counts). A failed run also gets one
    `run.failed` row (`run.canceled` for a canceled one) with its failed steps' keys; error
    messages are left out, as they can quote payloads. Idempotent: row ids derive from the run
    and the event's storage id, so a second call adds nothing.
    """
    import dagster as dg

    from assets.partitions import MERCHANT_DIM
    from sensors.merchants import MERCHANT_TAG

    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ValueError(
            f"run {run_id!r} is not in this Dagster instance: audit it against the instance that "
            "executed it (DAGSTER_HOME)"
        )
    tags = dict(run.tags)
    actor = run_actor(run_id, tags)
    launcher = launched_by(tags)
    dim_tag = f"dagster/partition/{MERCHANT_DIM}"
    records = instance.get_records_for_run(
        run_id,
        of_type={dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.STEP_FAILURE},
    ).records
    materializations = [
        r for r in records if r.event_log_entry.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    ]
    failed_steps = sorted(
        {
            r.event_log_entry.step_key
            for r in records
            if r.event_log_entry.dagster_event_type == dg.DagsterEventType.STEP_FAILURE
            and r.event_log_entry.step_key
        }
    )
    outcome = {
        dg.DagsterRunStatus.FAILURE: RUN_FAILED,
        dg.DagsterRunStatus.CANCELED: RUN_CANCELED,
    }.get(run.status)
    if not materializations and outcome is None:
        return 0
    run_partition = tags.get("dagster/partition")
    run_merchant = _valid_merchant(tags.get(dim_tag)) or _valid_merchant(tags.get(MERCHANT_TAG))

    with warehouse.connect() as conn:
        # A partition key that is a registered merchant id is a merchant-partitioned asset's key.
        partitions = [
            r.event_log_entry.dagster_event.partition for r in materializations
        ] + [run_partition]
        registered = _registered(conn, [p for p in partitions if p])
        events = []
        for record in materializations:
            entry = record.event_log_entry
            materialization = entry.asset_materialization
            partition = materialization.partition
            merchant = (
                _valid_merchant(materialization.tags.get(dim_tag) if materialization.tags else None)
                or (partition if partition in registered else None)
                or run_merchant
            )
            asset_key = materialization.asset_key.to_user_string()
            details = {
                "asset_key": asset_key,
                "partition": partition,
                "job": run.job_name,
                "step": entry.step_key,
                "storage_id": record.storage_id,
                "counts": numeric_counts(materialization.metadata),
            }
            if launcher:
                details["launched_by"] = launcher
            events.append(
                AuditEvent(
                    event_id=audit_event_id(run_id, record.storage_id, asset_key, partition),
                    occurred_at=_timestamp(entry.timestamp),
                    actor=actor,
                    action=MATERIALIZED,
                    merchant_id=merchant,
                    details=details,
                )
            )
        if outcome is not None:
            run_record = instance.get_run_record_by_id(run_id)
            details = {
                "job": run.job_name,
                "partition": run_partition,
                "failed_steps": failed_steps,
                "materializations": len(materializations),
            }
            if launcher:
                details["launched_by"] = launcher
            events.append(
                AuditEvent(
                    event_id=audit_event_id(run_id, outcome),
                    occurred_at=_timestamp(run_record.end_time if run_record else None),
                    actor=actor,
                    action=outcome,
                    merchant_id=run_merchant
                    or (run_partition if run_partition in registered else None),
                    details=details,
                )
            )
        return append_events(conn, events)


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
