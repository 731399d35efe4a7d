"""Copy every finished run's materializations (and failures) into platform.audit_log.

`audit_run_materializations` reads one run from the Dagster instance (its tags, materializations,
failed steps, outcome) into plain `RunFacts`; `illuma_pipelines.audit.audit_run` builds and appends
the rows. `audit_log_sensor` calls it for every finished run; the merchants sensor before it
deletes an erased merchant's runs; the demo after each of its in-process runs.

A plain sensor with its own cursor rather than a `run_status_sensor`, for two measured reasons
(dagster 1.13): a run status sensor advances its cursor past a run even when the evaluation for it
raised, so a warehouse outage would lose that run's audit rows for good; and it only matches runs
launched from this code location, so runs executed in-process (the demo, `dg.materialize`) would
never be audited. Here the cursor moves only past runs whose rows are written, a failed tick
retries them, and the writes are idempotent, so every finished run is audited exactly once.
"""


import dagster as dg

from illuma_pipelines.audit import (
    RUN_CANCELED,
    RUN_FAILED,
    MaterializationFacts,
    RunFacts,
    audit_run,
)
from illuma_pipelines.warehouse import Warehouse
from resources.warehouse import WarehouseResource
from sensors.tags import MERCHANT_PARTITION_TAG, MERCHANT_TAG, PARTITION_TAG

FINISHED_RUN_EVENTS = (
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
)
# Runs audited per tick: each costs a few event-log reads and one warehouse transaction.
RUNS_PER_TICK = 100
_OUTCOMES = {dg.DagsterRunStatus.FAILURE: RUN_FAILED, dg.DagsterRunStatus.CANCELED: RUN_CANCELED}


def run_facts(instance: dg.DagsterInstance, run_id: str) -> RunFacts:
    """What the audit log records of a run, read from the instance's run and event log storage."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ValueError(
            f"run {run_id!r} is not in this Dagster instance: audit it against the instance that "
            "executed it (DAGSTER_HOME)"
        )
    tags = dict(run.tags)
    records = instance.get_records_for_run(
        run_id,
        of_type={dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.STEP_FAILURE},
    ).records
    materializations = []
    failed_steps = set()
    for record in records:
        entry = record.event_log_entry
        if entry.dagster_event_type == dg.DagsterEventType.STEP_FAILURE:
            if entry.step_key:
                failed_steps.add(entry.step_key)
            continue
        if entry.dagster_event_type != dg.DagsterEventType.ASSET_MATERIALIZATION:
            continue
        materialization = entry.asset_materialization
        materializations.append(
            MaterializationFacts(
                storage_id=record.storage_id,
                asset_key=materialization.asset_key.to_user_string(),
                partition=materialization.partition,
                step=entry.step_key,
                timestamp=entry.timestamp,
                metadata=materialization.metadata,
                merchant_hint=(materialization.tags or {}).get(MERCHANT_PARTITION_TAG),
            )
        )
    outcome = _OUTCOMES.get(run.status)
    ended_at = None
    if outcome is not None:
        run_record = instance.get_run_record_by_id(run_id)
        ended_at = run_record.end_time if run_record else None
    return RunFacts(
        run_id=run_id,
        job=run.job_name,
        tags=tags,
        partition=tags.get(PARTITION_TAG),
        merchant_hints=(tags.get(MERCHANT_PARTITION_TAG), tags.get(MERCHANT_TAG)),
        outcome=outcome,
        ended_at=ended_at,
        failed_steps=tuple(sorted(failed_steps)),
        materializations=tuple(materializations),
    )


def audit_run_materializations(instance: dg.DagsterInstance, run_id: str, warehouse: Warehouse) -> int:
    """Copy a run's asset materializations (and, for a failed or canceled run, its outcome) from
    the Dagster instance into platform.audit_log; idempotent. Returns how many rows were added
    (the rows are described at `illuma_pipelines.audit.audit_run`)."""
    return audit_run(warehouse, run_facts(instance, run_id))


def finished_runs_after(
    instance: dg.DagsterInstance, after_storage_id: int, limit: int = RUNS_PER_TICK
) -> list[tuple[int, str]]:
    """(storage id, run id) of the next `limit` run-finished events after `after_storage_id`,
    oldest first, with no gap: a later event is never returned before an earlier one."""
    pages = []
    for event_type in FINISHED_RUN_EVENTS:
        result = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=after_storage_id),
            limit=limit,
            ascending=True,
        )
        pages.append((result.records, len(result.records) >= limit))
    # A full page may have more beyond it: stop at the lowest last id among full pages, so no
    # event of another type that lies in between is skipped.
    bound = min((records[-1].storage_id for records, full in pages if full), default=None)
    merged = sorted(
        (r.storage_id, r.run_id)
        for records, _ in pages
        for r in records
        if bound is None or r.storage_id <= bound
    )
    return merged[:limit]


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Writes one platform.audit_log row per asset materialization (who, what, which merchant, "
        "when, counts) and one per failed or canceled run, for every finished run."
    ),
)
def audit_log_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult:
    after = int(context.cursor) if context.cursor else 0
    finished = finished_runs_after(context.instance, after)
    if not finished:
        return dg.SensorResult(skip_reason="no run finished since the last tick")
    wh = warehouse.get()
    wh.ensure_platform()
    written = 0
    for storage_id, run_id in finished:
        # An error here fails the tick without moving the cursor: the run is retried next tick.
        written += audit_run_materializations(context.instance, run_id, wh)
        after = storage_id
    return dg.SensorResult(
        skip_reason=f"audited {len(finished)} finished run(s): {written} new audit row(s)",
        cursor=str(after),
    )
