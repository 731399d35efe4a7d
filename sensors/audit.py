"""Copy every finished run's materializations (and failures) into platform.audit_log.

A plain sensor with its own cursor rather than a `run_status_sensor`, for two measured reasons
(dagster 1.13): a run status sensor advances its cursor past a run even when the evaluation for it
raised, so a warehouse outage would lose that run's audit rows for good; and it only matches runs
launched from this code location, so runs executed in-process (the demo, `dg.materialize`) would
never be audited. Here the cursor moves only past runs whose rows are written, a failed tick
retries them, and the writes are idempotent, so every finished run is audited exactly once.
"""


import dagster as dg

from illuma_pipelines.audit import audit_run_materializations
from resources.warehouse import WarehouseResource

FINISHED_RUN_EVENTS = (
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
)
# Runs audited per tick: each costs a few event-log reads and one warehouse transaction.
RUNS_PER_TICK = 100


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
