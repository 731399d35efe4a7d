"""The analytics refresh sensor, evaluated against a real Dagster instance: one dbt build per
merchant once its daily (or catalog) runs have succeeded, none again until new ones succeed, none
while a run of the merchant is queued or in flight, and a backfill of many days makes one build.

The daily and catalog runs are real runs of jobs named as the code location's, over cheap stand-in
assets with the same keys and partitions (the sensor reads runs and their tags, not what they
wrote); the analytics runs are the real `merchant_analytics_job` (dbt on a DuckDB warehouse)."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from assets.analytics import analytics_dbt_models, trailing_days
from assets.partitions import (
    MERCHANTS,
    merchant_daily_partitions,
    merchant_date_key,
    merchant_partitions,
)
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.warehouse import Warehouse
from resources import resources_for
from resources.warehouse import WarehouseResource
from sensors.analytics import (
    analytics_refresh_sensor,
    analytics_run_request,
    analytics_run_requests,
    build_merchant_analytics,
    plan_analytics_runs,
)
from sensors.jobs import merchant_analytics_job
from sensors.tags import MERCHANT_TAG
from tests.test_dbt import create_source_tables


def ago(days: int) -> str:
    """The UTC day `days` before today: the sensor judges days against today's trailing window."""
    return (datetime.now(UTC) - timedelta(days=days)).date().isoformat()


class StandInConfig(dg.Config):
    fail: bool = False


@dg.asset(key=["core", "orders"], partitions_def=merchant_daily_partitions)
def orders_stand_in(config: StandInConfig) -> None:
    """Stands in for the core orders of a merchant-day run."""
    if config.fail:
        raise dg.Failure("the day failed")


@dg.asset(key=["catalog", "parts"], partitions_def=merchant_partitions)
def catalog_stand_in() -> None:
    """Stands in for a catalog load."""


class Location:
    """The jobs the sensor watches and the one it requests, on one instance and warehouse."""

    def __init__(self, instance: dg.DagsterInstance, url: str) -> None:
        self.instance = instance
        self.definitions = dg.Definitions(
            assets=[orders_stand_in, catalog_stand_in, analytics_dbt_models],
            jobs=[
                dg.define_asset_job("merchant_daily_job", [orders_stand_in], partitions_def=merchant_daily_partitions),
                dg.define_asset_job("catalog_import_job", [catalog_stand_in], partitions_def=merchant_partitions),
                merchant_analytics_job,
            ],
            resources={**resources_for("local"), "warehouse": WarehouseResource(url=url)},
        )
        self.cursor: str | None = None

    def day(self, merchant_id: str, day: str, *, fail: bool = False) -> str:
        result = self.definitions.resolve_job_def("merchant_daily_job").execute_in_process(
            instance=self.instance,
            partition_key=merchant_date_key(merchant_id, day),
            tags={MERCHANT_TAG: merchant_id},
            run_config={"ops": {"core__orders": {"config": {"fail": fail}}}},
            raise_on_error=False,
        )
        assert result.success != fail
        return result.run_id

    def catalog(self, merchant_id: str) -> str:
        return self.definitions.resolve_job_def("catalog_import_job").execute_in_process(
            instance=self.instance, partition_key=merchant_id, tags={MERCHANT_TAG: merchant_id}
        ).run_id

    def queued(self, job_name: str, merchant_id: str, day: str | None = None) -> dg.DagsterRun:
        """A run waiting in the queue, as the webserver or the daemon submits one (a queued run
        names its code location), tagged as Dagster tags a launched partitioned run."""
        from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteRepositoryOrigin

        tags = {MERCHANT_TAG: merchant_id, "dagster/partition": merchant_id}
        if day:
            tags = {**tags, "dagster/partition": str(merchant_date_key(merchant_id, day)),
                    "dagster/partition/date": day, "dagster/partition/merchant": merchant_id}
        origin = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("illuma"), "__repository__")
        return self.instance.create_run_for_job(
            self.definitions.resolve_job_def(job_name),
            status=dg.DagsterRunStatus.QUEUED,
            tags=tags,
            remote_job_origin=origin.get_job_origin(job_name),
        )

    def tick(self) -> dg.SensorResult:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor)
        result = analytics_refresh_sensor(context)
        assert isinstance(result, dg.SensorResult)
        self.cursor = result.cursor
        return result

    def build(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """What the daemon does with a request: run the job for its partition, tags and config."""
        result = self.definitions.resolve_job_def(merchant_analytics_job.name).execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            run_config=request.run_config,
            tags={**request.tags, "dagster/run_key": request.run_key},
        )
        assert result.success
        return result


@pytest.fixture
def location(instance, tmp_path, merchant_id):
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    wh = Warehouse.from_url(url)
    ids = [merchant_id(name) for name in ("acme", "bolt", "cogs", "dent")]
    for mid in ids:
        add_merchant(wh, mid, channels={"amazon": ChannelConnection("amazon", f"sandbox:{mid}")})
        create_source_tables(wh, mid)
    instance.add_dynamic_partitions(MERCHANTS, ids)
    return Location(instance, url), ids


def _requested(result: dg.SensorResult) -> dict[str, dg.RunRequest]:
    return {r.partition_key: r for r in result.run_requests}


def test_one_build_per_merchant_after_its_runs_and_not_again_until_new_ones(location):
    loc, (acme, bolt, cogs, dent) = location
    # acme: a backfill of three days; bolt: a catalog load; cogs: nothing; dent: a failed day.
    days = [loc.day(acme, ago(n)) for n in (4, 3, 2)]
    catalog_run = loc.catalog(bolt)
    loc.day(dent, ago(2), fail=True)

    first = loc.tick()
    requested = _requested(first)
    assert set(requested) == {acme, bolt}
    # The run key names the merchant and the newest run seen: one build for the whole backfill.
    assert requested[acme].run_key == f"merchant_analytics:{acme}:{days[-1]}"
    assert requested[bolt].run_key == f"merchant_analytics:{bolt}:{catalog_run}"
    assert requested[acme].tags == {MERCHANT_TAG: acme} and requested[acme].run_config == {}

    # Nothing new: nothing requested, however often the sensor runs.
    assert loc.tick().run_requests == []
    assert loc.tick().run_requests == []

    built = loc.build(requested[acme])
    assert {e.partition for e in built.get_asset_materialization_events()} == {acme}
    assert {e.asset_key for e in built.get_asset_materialization_events()} == set(analytics_dbt_models.keys)
    assert loc.tick().run_requests == []

    # A new day of acme: one more build, keyed by that day's run.
    later = loc.day(acme, ago(1))
    again = loc.tick()
    assert [(r.partition_key, r.run_key) for r in again.run_requests] == [(acme, f"merchant_analytics:{acme}:{later}")]


def test_no_build_while_a_run_of_the_merchant_is_queued_or_in_flight(location):
    loc, (acme, bolt, _, _) = location
    loc.day(acme, ago(2))
    in_flight = loc.queued(merchant_analytics_job.name, acme)  # a build already queued
    # bolt's backfill: one day done, the next still queued.
    loc.day(bolt, ago(2))
    next_day = loc.queued("merchant_daily_job", bolt, ago(1))

    waiting = loc.tick()
    assert waiting.run_requests == []
    assert "2 merchant(s) waiting" in waiting.skip_reason.skip_message
    assert set(json.loads(waiting.cursor)["pending"]) == {acme, bolt}  # remembered, not dropped
    assert loc.tick().run_requests == []

    # The queued build went (canceled: it built nothing), the backfill's last day succeeded.
    loc.instance.report_run_canceled(in_flight)
    loc.instance.delete_run(next_day.run_id)
    last = loc.day(bolt, ago(1))
    requested = _requested(loc.tick())
    assert set(requested) == {acme, bolt}
    assert requested[bolt].run_key == f"merchant_analytics:{bolt}:{last}"  # one build for both days
    assert json.loads(loc.cursor)["pending"] == {}


def test_a_build_started_after_the_runs_covers_them(location):
    """A merchant whose analytics were built (by hand, say) after its new runs ended needs no
    other build; one built before them does."""
    loc, (acme, bolt, _, _) = location
    loc.day(acme, ago(1))
    loc.day(bolt, ago(1))
    for request in analytics_run_requests([acme]):
        loc.build(request)
    plan = plan_analytics_runs(loc.instance, None)
    assert [r.partition_key for r in plan.requests] == [bolt] and plan.covered == [acme]


def test_a_day_older_than_the_trailing_window_makes_a_full_refresh(location):
    """An incremental build recomputes the last `trailing_days` only: a backfill reaching further
    back is built with --full-refresh, once, with the rest of the backfill."""
    loc, (acme, bolt, _, _) = location
    window = trailing_days()
    loc.day(acme, ago(window + 3))
    newest = loc.day(acme, ago(1))
    loc.day(bolt, ago(window - 1))  # still inside the window
    requested = _requested(loc.tick())
    assert requested[acme].run_key == f"merchant_analytics:{acme}:{newest}:full"
    assert requested[acme].run_config == {"ops": {"analytics_dbt_models": {"config": {"full_refresh": True}}}}
    assert requested[bolt].run_config == {}


def test_the_cursor_always_advances_through_many_runs_at_once(location):
    """More new runs than one tick reads (small pages here): the next tick reads the rest, even
    when they all ended within the seconds each tick reads again."""
    loc, ids = location
    runs = {mid: loc.day(mid, ago(1)) for mid in ids}
    first = plan_analytics_runs(loc.instance, None, page_size=1, pages_per_tick=3)
    assert [r.partition_key for r in first.requests] == sorted(ids[:3])
    second = plan_analytics_runs(loc.instance, first.cursor, page_size=1, pages_per_tick=3)
    assert [(r.partition_key, r.run_key) for r in second.requests] == [(ids[3], f"merchant_analytics:{ids[3]}:{runs[ids[3]]}")]
    assert plan_analytics_runs(loc.instance, second.cursor, page_size=1, pages_per_tick=3).requests == []


def test_merchants_built_in_process_for_the_demo(location):
    loc, (acme, bolt, _, _) = location
    results = build_merchant_analytics(
        loc.definitions, loc.instance, [acme, bolt], as_of_date="2026-11-20", tags={"illuma/test": "1"}
    )
    assert set(results) == {acme, bolt} and all(r.success for r in results.values())
    run = results[bolt].dagster_run
    assert run.job_name == merchant_analytics_job.name and run.tags[MERCHANT_TAG] == bolt
    assert run.tags["dagster/partition"] == bolt and run.tags["illuma/test"] == "1"
    assert run.run_config["ops"]["analytics_dbt_models"]["config"] == {"as_of_date": "2026-11-20"}
    request = analytics_run_request(acme, full_refresh=True)
    assert request.run_config == {"ops": {"analytics_dbt_models": {"config": {"full_refresh": True}}}}
    with pytest.raises(ValueError, match="as_of_date"):
        analytics_run_request(acme, as_of_date="2026-11-31")
