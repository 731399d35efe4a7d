"""What drives the merchant reports (issue 16): the monthly and quarterly schedules, the sensor
that reports each newly closed settlement once, and the alert the data team gets for a failed run.
"""

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from assets.partitions import MERCHANT_DIM, MONTH_DIM, QUARTER_DIM, active_merchant_partitions
from assets.reports import (
    MONTHLY_REPORT_KEY,
    PRIVACY_STATEMENT_KEY,
    SETTLEMENT_REPORTS_KEY,
    settlements_to_report,
)
from illuma_pipelines.merchant_ids import validate_merchant_id
from illuma_pipelines.reports.delivery import ReportMessage
from resources.delivery import DeliveryResource
from resources.warehouse import WarehouseResource
from sensors.tags import MERCHANT_TAG

SETTLEMENT_RECONCILIATION_KEY = dg.AssetKey(["analytics", "settlement_reconciliation"])
UI_BASE_URL_ENV = "ILLUMA_UI_BASE_URL"
DEFAULT_UI_BASE_URL = "http://127.0.0.1:3000"

monthly_report_job = dg.define_asset_job(
    "monthly_report_job", selection=dg.AssetSelection.assets(MONTHLY_REPORT_KEY),
    description="One merchant's monthly report for one month: rendered, scanned for PII, delivered once.",
)
settlement_report_job = dg.define_asset_job(
    "settlement_report_job", selection=dg.AssetSelection.assets(SETTLEMENT_REPORTS_KEY),
    description="One merchant's reports of its newly closed settlements.",
)
privacy_statement_job = dg.define_asset_job(
    "privacy_statement_job", selection=dg.AssetSelection.assets(PRIVACY_STATEMENT_KEY),
    description="One merchant's quarterly privacy statement.",
)


def previous_month(moment: datetime) -> str:
    """The first day of the calendar month before `moment`'s."""
    first = moment.date().replace(day=1)
    return (first - timedelta(days=1)).replace(day=1).isoformat()


def previous_quarter(moment: datetime) -> str:
    """The first day of the quarter before `moment`'s."""
    start_month = 3 * ((moment.month - 1) // 3) + 1
    first = date(moment.year, start_month, 1) - timedelta(days=1)
    return date(first.year, 3 * ((first.month - 1) // 3) + 1, 1).isoformat()


@dg.schedule(
    job=monthly_report_job,
    cron_schedule="0 7 2 * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="On the 2nd of each month: the previous month's report, one run per active merchant.",
)
def monthly_reports_schedule(
    context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource
) -> Iterator[dg.RunRequest]:
    month = previous_month(context.scheduled_execution_time.astimezone(UTC))
    yield from _period_requests(context, warehouse, "monthly_report", MONTH_DIM, month, month[:7])


@dg.schedule(
    job=privacy_statement_job,
    cron_schedule="0 8 2 1,4,7,10 *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="On the 2nd day of each quarter: the previous quarter's privacy statement, per active merchant.",
)
def privacy_statements_schedule(
    context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource
) -> Iterator[dg.RunRequest]:
    quarter = previous_quarter(context.scheduled_execution_time.astimezone(UTC))
    yield from _period_requests(context, warehouse, "privacy_statement", QUARTER_DIM, quarter, quarter)


def _period_requests(
    context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource, kind: str, dimension: str, first_day: str, label: str
) -> Iterator[dg.RunRequest]:
    """One run per active merchant for one period, keyed by kind, period and merchant."""
    for merchant_id in active_merchant_partitions(context.instance, warehouse.get()):
        yield dg.RunRequest(
            run_key=f"{kind}:{label}:{merchant_id}",
            partition_key=dg.MultiPartitionKey({dimension: first_day, MERCHANT_DIM: merchant_id}),
            tags={MERCHANT_TAG: merchant_id},
        )


@dg.sensor(
    job=settlement_report_job,
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a merchant's settlement_reconciliation materializes with settlements that have "
    "no report yet, request their report (each settlement is reported once).",
)
def settlement_report_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SETTLEMENT_RECONCILIATION_KEY, after_storage_id=after), limit=1000, ascending=True
    ).records
    if not records:
        return dg.SensorResult(run_requests=[], cursor=context.cursor)
    wh = warehouse.get()
    requests = []
    for merchant_id in sorted({r.partition_key for r in records if r.partition_key}):
        validate_merchant_id(merchant_id)
        new = settlements_to_report(wh, merchant_id, [])
        if not new:
            continue
        wanted = [f"{channel}:{sid}" for channel, sid in new]
        requests.append(
            dg.RunRequest(
                # The same settlements are asked for once, whatever the sensor sees again.
                run_key=f"settlement_report:{merchant_id}:{','.join(wanted)}",
                partition_key=merchant_id,
                run_config={"ops": {"reports__settlements": {"config": {"settlements": wanted}}}},
                tags={MERCHANT_TAG: merchant_id},
            )
        )
    return dg.SensorResult(run_requests=requests, cursor=str(max(r.storage_id for r in records)))


def alert_message(run: dg.DagsterRun, step: str | None, error: str | None, to: str) -> ReportMessage:
    """The data team's alert for a failed run: job, partition, step, the error's first line and a
    link to the run; nothing else (no PII, no secret: error texts of our code never carry them)."""
    first_line = (error or "no error message").strip().splitlines()[0][:300]
    partition = run.tags.get("dagster/partition", "none")
    base = os.environ.get(UI_BASE_URL_ENV, DEFAULT_UI_BASE_URL).rstrip("/")
    return ReportMessage(
        to=to,
        subject=f"[illuma] {run.job_name} failed ({partition})",
        text=(
            f"Job: {run.job_name}\nPartition: {partition}\nStep: {step or 'the run itself'}\n"
            f"Error: {first_line}\nRun: {base}/runs/{run.run_id}\n"
        ),
    )


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One e-mail to the data team per failed run (its job, partition, step, the error's "
    "first line and a link to the run), through the delivery resource.",
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, delivery: DeliveryResource) -> None:
    if not delivery.alert_address:
        context.log.warning("run failure not e-mailed: the delivery resource has no alert_address")
        return
    step, error = None, context.failure_event.message
    steps = context.get_step_failure_events()
    if steps:
        step = steps[0].step_key
        info = getattr(steps[0].event_specific_data, "error", None)
        # Dagster wraps the op's own error: the innermost cause says what went wrong.
        while info is not None and getattr(info, "cause", None) is not None:
            info = info.cause
        error = getattr(info, "message", None) or error
    result = delivery.get().send(alert_message(context.dagster_run, step, error, delivery.alert_address))
    if result.status != "sent":
        raise RuntimeError(f"the alert for run {context.dagster_run.run_id} was not sent: {result.error}")
