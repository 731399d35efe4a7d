"""The schedules and sensors that drive the merchant reports, through Dagster's own evaluation
against a real instance and warehouse (issue 16): one run per active merchant per month and per
quarter, each closed settlement reported once, one alert per failed run."""

import email
from datetime import UTC, datetime

import dagster as dg

from assets.partitions import MERCHANTS
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.registry import add_merchant, offboard_merchant
from illuma_pipelines.reports.data import settlement_period
from illuma_pipelines.reports.store import record_report, reports_dir
from resources.delivery import DeliveryResource
from resources.warehouse import WarehouseResource
from sensors.reports import (
    SETTLEMENT_RECONCILIATION_KEY,
    monthly_reports_schedule,
    previous_month,
    previous_quarter,
    privacy_statements_schedule,
    run_failure_alert_sensor,
    settlement_report_sensor,
)


def _merchants(warehouse, instance, merchant_id) -> tuple[str, str]:
    a, b, gone = merchant_id("rep_a"), merchant_id("rep_b"), merchant_id("rep_gone")
    for m in (a, b, gone):
        add_merchant(warehouse, m)
    offboard_merchant(warehouse, gone)
    instance.add_dynamic_partitions(MERCHANTS, [a, b, gone])
    return a, b


def test_periods_before():
    assert previous_month(datetime(2026, 1, 2, 7, tzinfo=UTC)) == "2025-12-01"
    assert previous_quarter(datetime(2026, 1, 2, tzinfo=UTC)) == "2025-10-01"
    assert previous_quarter(datetime(2026, 8, 2, tzinfo=UTC)) == "2026-04-01"


def test_one_monthly_and_one_quarterly_run_per_active_merchant(warehouse, warehouse_url, merchant_id, instance):
    a, b = _merchants(warehouse, instance, merchant_id)
    resources = {"warehouse": WarehouseResource(url=warehouse_url)}
    def requests(schedule, at: datetime) -> list[dg.RunRequest]:
        # As a context manager: the context's resources are torn down after the evaluation.
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=at, resources=resources) as context:
            return list(schedule(context))

    monthly = requests(monthly_reports_schedule, datetime(2026, 12, 2, 7, tzinfo=UTC))
    assert [(r.partition_key.keys_by_dimension["merchant"], r.partition_key.keys_by_dimension["month"]) for r in monthly] == [
        (a, "2026-11-01"), (b, "2026-11-01")
    ]
    assert [r.run_key for r in monthly] == [f"monthly_report:2026-11:{a}", f"monthly_report:2026-11:{b}"]
    quarterly = requests(privacy_statements_schedule, datetime(2026, 10, 2, 8, tzinfo=UTC))
    assert {r.partition_key.keys_by_dimension["quarter"] for r in quarterly} == {"2026-07-01"}
    assert len(quarterly) == 2


def _reconciliation(warehouse, mid: str, settlements: list[tuple[str, str, str]]) -> None:
    """The merchant's settlement_reconciliation model as dbt leaves it (the columns the sensor reads)."""
    schema = merchant_schema(mid)
    with warehouse.merchant_scope(mid) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {schema}.settlement_reconciliation")
        conn.execute(f"CREATE TABLE {schema}.settlement_reconciliation (channel TEXT, settlement_id TEXT, deposit_date DATE)")
        for row in settlements:
            conn.execute(f"INSERT INTO {schema}.settlement_reconciliation VALUES (?, ?, CAST(? AS DATE))", list(row))


def test_each_closed_settlement_is_reported_once(warehouse, warehouse_url, merchant_id, instance, tmp_path, monkeypatch):
    monkeypatch.setenv("ILLUMA_DATA_DIR", str(tmp_path / "data"))
    a, b = _merchants(warehouse, instance, merchant_id)
    _reconciliation(warehouse, a, [("amazon", "555001", "2026-11-10"), ("walmart", "US:11152026", "2026-11-15")])
    _reconciliation(warehouse, b, [])
    resources = {"warehouse": WarehouseResource(url=warehouse_url)}

    def tick(cursor):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        return settlement_report_sensor(context)

    first = tick(None)
    assert first.run_requests == []  # nothing materialized yet
    for m in (a, b):
        instance.report_runless_asset_event(dg.AssetMaterialization(SETTLEMENT_RECONCILIATION_KEY, partition=m))
    second = tick(first.cursor)
    (request,) = second.run_requests  # b has no settlement
    assert request.partition_key == a
    assert request.run_config["ops"]["reports__settlements"]["config"]["settlements"] == [
        "amazon:555001", "walmart:US:11152026"
    ]
    assert tick(second.cursor).run_requests == []  # seen once

    # One was reported; the analytics build again with a new settlement: only the new one is asked for.
    folder = reports_dir(a, settlement_period("amazon", "555001"))
    folder.mkdir(parents=True)
    (folder / "r.pdf").write_bytes(b"%PDF-1.4")
    record_report(warehouse, a, "settlement", settlement_period("amazon", "555001"), [folder / "r.pdf"])
    _reconciliation(warehouse, a, [("amazon", "555001", "2026-11-10"), ("walmart", "US:11152026", "2026-11-15"), ("ebay", "7001", "2026-11-20")])
    instance.report_runless_asset_event(dg.AssetMaterialization(SETTLEMENT_RECONCILIATION_KEY, partition=a))
    (again,) = tick(second.cursor).run_requests
    assert again.run_config["ops"]["reports__settlements"]["config"]["settlements"] == ["walmart:US:11152026", "ebay:7001"]


@dg.op
def _breaks():
    raise ValueError("the marketplace answered 503 three times\nsecond line never mailed")


@dg.job
def _failing_job():
    _breaks()


def test_a_failed_run_sends_one_alert_to_the_data_team(instance, tmp_path, monkeypatch):
    monkeypatch.setenv("ILLUMA_UI_BASE_URL", "https://dagster.example.test")
    result = _failing_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    outbox = tmp_path / "outbox"
    context = dg.build_run_status_sensor_context(
        sensor_name=run_failure_alert_sensor.name, dagster_event=failure, dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"delivery": DeliveryResource(outbox_dir=str(outbox), alert_address="data-team@example.test")},
    ).for_run_failure()
    run_failure_alert_sensor(context)
    (sent,) = list(outbox.rglob("*.eml"))
    message = email.message_from_bytes(sent.read_bytes())
    body = message.get_payload(decode=True).decode() if not message.is_multipart() else message.get_payload(0).get_payload(decode=True).decode()
    assert message["To"] == "data-team@example.test" and "_failing_job" in message["Subject"]
    assert "Step: _breaks" in body and "the marketplace answered 503 three times" in body
    assert "second line" not in body
    assert f"https://dagster.example.test/runs/{result.run_id}" in body
