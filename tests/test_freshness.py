"""The 09:00 UTC freshness check of each merchant's core orders, through its schedule, its job and
a real instance (issue 16: the data team sees a missed landing in the UI)."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.core import ORDERS_KEY
from assets.freshness import deadline_and_day, orders_landed_by_deadline
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines.registry import add_merchant, offboard_merchant
from resources import resources_for
from resources.warehouse import WarehouseResource
from sensors.freshness import freshness_job, freshness_schedule


def test_deadline_is_the_last_0900_utc_and_judges_the_day_before():
    assert deadline_and_day(datetime(2026, 12, 6, 10, 30, tzinfo=UTC)) == (datetime(2026, 12, 6, 9, tzinfo=UTC), "2026-12-05")
    assert deadline_and_day(datetime(2026, 12, 6, 8, 59, tzinfo=UTC)) == (datetime(2026, 12, 5, 9, tzinfo=UTC), "2026-12-04")


def _evaluate(instance, warehouse_url, at: datetime) -> dg.AssetCheckEvaluation:
    # A context is closed after use: it enters an instance of its own (from the given one's ref).
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=at) as context:
        (request,) = [freshness_schedule(context)]
    job = dg.Definitions(
        jobs=[freshness_job],
        assets=[dg.AssetSpec(ORDERS_KEY)],
        asset_checks=[orders_landed_by_deadline],
        resources={**resources_for("local"), "warehouse": WarehouseResource(url=warehouse_url)},
    ).resolve_job_def(freshness_job.name)
    result = job.execute_in_process(instance=instance, run_config=request.run_config)
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_missing_and_late_merchants_are_named(warehouse, warehouse_url, merchant_id, instance):
    on_time, missing, late, gone = (merchant_id(n) for n in ("ontime", "missing", "late", "gone"))
    for m in (on_time, missing, late, gone):
        add_merchant(warehouse, m)
    offboard_merchant(warehouse, gone)  # an offboarded merchant's orders are not expected
    instance.add_dynamic_partitions(MERCHANTS, [on_time, missing, late, gone])
    now = datetime.now(UTC)

    # Judged a day from now: a partition landed now is on time.
    tomorrow = now + timedelta(days=1)
    _, day = deadline_and_day(tomorrow)
    instance.report_runless_asset_event(dg.AssetMaterialization(ORDERS_KEY, partition=str(merchant_date_key(on_time, day))))
    evaluation = _evaluate(instance, warehouse_url, tomorrow)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert meta["day"] == day and sorted(meta["missing"]) == sorted([missing, late]) and meta["late"] == []

    # Judged now: the day due by the last deadline, landed only now, is late.
    deadline, day = deadline_and_day(now)
    for m in (on_time, missing):
        instance.report_runless_asset_event(dg.AssetMaterialization(ORDERS_KEY, partition=str(merchant_date_key(m, day))))
    instance.report_runless_asset_event(dg.AssetMaterialization(ORDERS_KEY, partition=str(merchant_date_key(late, day))))
    meta = {k: v.value for k, v in _evaluate(instance, warehouse_url, now).metadata.items()}
    assert meta["missing"] == [] and sorted(meta["late"]) == sorted([on_time, missing, late])
    assert deadline.isoformat() == meta["deadline"]
