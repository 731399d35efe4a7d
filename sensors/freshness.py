"""The daily freshness check of the merchants' core orders: its job and its 09:00 UTC schedule."""

from datetime import UTC

import dagster as dg

from assets.freshness import DEADLINE_HOUR_UTC, orders_landed_by_deadline

freshness_job = dg.define_asset_job(
    "freshness_job",
    selection=dg.AssetSelection.checks(orders_landed_by_deadline),
    description="Checks that each active merchant's yesterday landed by 09:00 UTC.",
)


@dg.schedule(
    job=freshness_job,
    cron_schedule=f"0 {DEADLINE_HOUR_UTC} * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At 09:00 UTC: did every active merchant's yesterday land?",
)
def freshness_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    at = context.scheduled_execution_time.astimezone(UTC)
    return dg.RunRequest(
        run_key=f"freshness:{at:%Y-%m-%d}",
        run_config={"ops": {orders_landed_by_deadline.node_def.name: {"config": {"as_of": at.isoformat()}}}},
    )
