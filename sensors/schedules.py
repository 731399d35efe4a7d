"""Schedules: every merchant's data, every day, unattended."""


from collections.abc import Iterator
from datetime import timedelta

import dagster as dg

from assets.partitions import active_merchant_partitions, merchant_date_key
from illuma_pipelines.registry import ACTIVE, list_merchants
from resources.warehouse import WarehouseResource
from sensors.jobs import merchant_daily_job
from sensors.tags import merchant_run_tags


@dg.schedule(
    job=merchant_daily_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Yesterday's partition for every active merchant, one run each.",
)
def merchant_daily_schedule(
    context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource
) -> Iterator[dg.RunRequest]:
    day = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
    wh = warehouse.get()
    # The run calls each of the merchant's marketplaces: tag them (per-marketplace run limits).
    channels = {m.merchant_id: m.channel_names for m in list_merchants(wh, status=ACTIVE)}
    # Merchants of one date only: never enumerate the whole date × merchant key space.
    for merchant_id in active_merchant_partitions(context.instance, wh):
        yield dg.RunRequest(
            run_key=f"merchant_daily:{day}:{merchant_id}",
            partition_key=merchant_date_key(merchant_id, day),
            tags=merchant_run_tags(merchant_id, channels.get(merchant_id, ())),
        )
