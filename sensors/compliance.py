"""Compliance runs: the daily PII purge of every merchant, erasures when they fall due, and the
rights requests that near or pass their 30-day deadline."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.compliance import ACCOUNT_ERASURE_KEY, PII_PURGE_KEY
from assets.partitions import MERCHANTS, merchant_daily_partitions, merchant_date_key
from illuma_pipelines import purge
from illuma_pipelines.merchant_ids import MERCHANT_ID_PATTERN
from illuma_pipelines.warehouse import Warehouse
from resources.warehouse import WarehouseResource
from sensors.tags import MERCHANT_TAG

pii_purge_job = dg.define_asset_job(
    "pii_purge_job",
    selection=dg.AssetSelection.assets(PII_PURGE_KEY),
    partitions_def=merchant_daily_partitions,
    description="One merchant's daily PII purge (retention rules of ADR 0003).",
)
account_erasure_job = dg.define_asset_job(
    "account_erasure_job",
    selection=dg.AssetSelection.assets(ACCOUNT_ERASURE_KEY),
    partitions_def=merchant_daily_partitions,
    description="Erase one terminated merchant whose erasure is due.",
)


def _yesterday(moment: datetime) -> str:
    # The newest complete daily partition: a run only needs a partition to belong to.
    return (moment.astimezone(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")


@dg.schedule(
    job=pii_purge_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The PII purge of every registered merchant (offboarded ones included), daily.",
)
def pii_purge_schedule(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest]:
    day = _yesterday(context.scheduled_execution_time)
    for merchant_id in sorted(context.instance.get_dynamic_partitions(MERCHANTS)):
        if not MERCHANT_ID_PATTERN.fullmatch(merchant_id):
            # Added by hand in the UI; the merchants sensor removes it. Its run could only fail.
            context.log.warning(f"partition key {merchant_id!r} is not a merchant id: no PII purge requested for it")
            continue
        yield dg.RunRequest(
            run_key=f"pii_purge:{day}:{merchant_id}",
            partition_key=merchant_date_key(merchant_id, day),
            tags={MERCHANT_TAG: merchant_id},
        )


def erasure_requests(warehouse: Warehouse, now: datetime) -> list[dg.RunRequest]:
    """One account_erasure run per merchant whose erasure is due; retried the next day if it fails."""
    today = now.astimezone(UTC).strftime("%Y-%m-%d")
    return [
        dg.RunRequest(
            run_key=f"account_erasure:{status.merchant_id}:{today}",
            job_name=account_erasure_job.name,
            partition_key=merchant_date_key(status.merchant_id, _yesterday(now)),
            tags={MERCHANT_TAG: status.merchant_id},
        )
        for status in purge.due_erasures(warehouse, now)
    ]


@dg.sensor(
    jobs=[account_erasure_job],
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts account erasures when due (30 days after termination, at once on an "
    "immediate-deletion request) and reports rights requests near or past their deadline.",
)
def erasure_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult | dg.SkipReason:
    now = datetime.now(UTC)
    wh = warehouse.get()
    late = purge.late_requests(purge.requests_report(wh, now))
    for request in late:
        context.log.warning(
            f"rights request {request['request_id']} ({request['kind']}) of {request['merchant_id']} is "
            f"{request['status']}: deadline {request['deadline']}"
        )
    requests = erasure_requests(wh, now)
    if not requests:
        return dg.SkipReason(
            "no erasure due" + (f"; {len(late)} rights request(s) due soon or overdue" if late else "")
        )
    return dg.SensorResult(run_requests=requests)
