"""The dbt models build once per merchant partition, over all of the merchant's dates, into that
merchant's schema, on both engines (ADR 0009)."""

import json
from datetime import UTC, datetime

import dagster as dg
import pytest

from assets.analytics import (
    ALL_DATES_OF_THE_MERCHANT,
    IllumaDbtTranslator,
    analytics_dbt_models,
    dbt_project,
    source_table_specs,
)
from assets.partitions import (
    MERCHANT_DIM,
    MERCHANTS,
    merchant_daily_partitions,
    merchant_partitions,
)
from illuma_pipelines.dbt_vars import (
    AS_OF_DATE_ENV,
    build_dbt_vars,
    dbt_target,
    keep_partial_parse,
    merchant_parse_cache,
    parse_cache_dir,
    seed_partial_parse,
    validate_as_of_date,
)
from illuma_pipelines.definitions import defs
from illuma_pipelines.merchant_ids import InvalidMerchantId, merchant_schema
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.warehouse import Warehouse
from resources import resources_for
from resources.warehouse import WarehouseResource
from tests.test_inventory_marketplaces import BEFORE as SNAPSHOTS_BEFORE_MARKETPLACES

ANALYTICS_OP = analytics_dbt_models.op.name


def test_dbt_vars_confine_dbt_to_the_merchant(warehouse, merchant_id):
    """DuckDB: the merchant's own file; PostgreSQL: the merchant's own login, its password only
    in the dbt process's environment."""
    mid = merchant_id("vars")
    add_merchant(warehouse, mid)
    dbt_vars, env = build_dbt_vars(mid, "2026-11-01", warehouse)
    assert dbt_vars["merchant_id"] == mid
    # The day changes every build: in the environment, so the vars (and dbt's parse) stay the same.
    assert env[AS_OF_DATE_ENV] == "2026-11-01" and build_dbt_vars(mid, "2026-11-02", warehouse)[0] == dbt_vars
    assert "partition_date" not in dbt_vars  # one build covers every date of the merchant
    if warehouse.dialect == "duckdb":
        assert dbt_vars["duckdb_path"] == str(warehouse.merchant_file(mid)) and set(env) == {AS_OF_DATE_ENV}
    else:
        with warehouse.connect() as conn:
            (role,) = conn.fetchone("SELECT role_name FROM platform.merchant_logins WHERE merchant_id = ?", [mid])
        assert dbt_vars["pg_user"] == role and dbt_vars["pg_host"] == "127.0.0.1" and dbt_vars["pg_port"] == "5432"
        assert set(env) == {AS_OF_DATE_ENV, "ILLUMA_PG_PASSWORD"} and len(env["ILLUMA_PG_PASSWORD"]) == 64
        assert env["ILLUMA_PG_PASSWORD"] not in repr(dbt_vars)  # the password stays in the environment
    with pytest.raises(InvalidMerchantId):
        build_dbt_vars("a;drop", "2026-11-01", warehouse)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        build_dbt_vars(mid, "2026-11-01' OR 1=1 --", warehouse)  # models put it in SQL as a literal


@pytest.mark.parametrize("value", ["20261101", "2026-W44-1", "2026-11-1", " 2026-11-01", "2026-02-30", "yesterday"])
def test_as_of_date_is_a_calendar_date_written_in_full(value):
    with pytest.raises(ValueError, match="as_of_date"):
        validate_as_of_date(value)


def test_dbt_targets():
    assert dbt_target("postgresql+psycopg://x@y/z") == "postgres"
    assert dbt_target("duckdb:////tmp/w.duckdb") == "duckdb"
    with pytest.raises(ValueError, match="no dbt target"):
        dbt_target("mysql://x")


def _source(name: str, asset_key: list[str]) -> dict:
    return {"resource_type": "source", "source_name": asset_key[0], "name": name, "meta": {"dagster": {"asset_key": asset_key}}}


def test_a_model_reads_every_date_of_its_merchants_core_sources():
    """The translator's mapping, whatever sources the manifest holds today: core sources (date ×
    merchant) map all of the merchant's dates; the catalog (per merchant) and the registry
    (unpartitioned) keep Dagster's inference; a model's parent model is the same partition."""
    translator = IllumaDbtTranslator()
    model = {"resource_type": "model", "name": "fct_settlements"}
    mapping = translator.get_partition_mapping(model, _source("core_settlements", ["core", "settlements"]))
    assert isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping)
    assert mapping.partition_dimension_name == MERCHANT_DIM
    assert translator.get_partition_mapping(model, _source("catalog_parts", ["catalog", "parts"])) is None
    assert translator.get_partition_mapping(model, _source("registry_channel_connections", ["platform", "channel_connections"])) is None
    assert translator.get_partition_mapping(model, {"resource_type": "model", "name": "stg_orders"}) is None


def test_the_graph_maps_each_analytics_partition_to_its_merchants_slice(instance):
    """In the loaded code location, every upstream of the analytics models outside them resolves
    to: the merchant's dates (date × merchant), the merchant (per merchant), or all (unpartitioned);
    and merchant acme's partition needs exactly acme's days, no other merchant's."""
    graph = defs().get_repository_def().asset_graph
    instance.add_dynamic_partitions(MERCHANTS, ["acme", "bolt"])
    seen = set()
    for key in analytics_dbt_models.keys:
        assert graph.get(key).partitions_def == merchant_partitions
        for parent in graph.get(key).parent_keys - set(analytics_dbt_models.keys):
            mapping, upstream = graph.get_partition_mapping(key, parent), graph.get(parent).partitions_def
            seen.add(parent.to_user_string())
            if upstream is None:
                assert isinstance(mapping, dg.AllPartitionMapping), parent
            elif upstream == merchant_partitions:
                assert isinstance(mapping, dg.IdentityPartitionMapping), parent
            else:
                assert upstream == merchant_daily_partitions and mapping == ALL_DATES_OF_THE_MERCHANT, parent
                mapped = mapping.get_upstream_mapped_partitions_result_for_partitions(
                    merchant_partitions.empty_subset().with_partition_keys(["acme"]),
                    merchant_partitions,
                    upstream,
                    current_time=datetime(2025, 1, 4, tzinfo=UTC),
                    dynamic_partitions_store=instance,
                )
                assert sorted(mapped.partitions_subset.get_partition_keys()) == [
                    f"2025-01-0{d}|acme" for d in (1, 2, 3)
                ], parent
    assert "platform/channel_connections" in seen


def create_source_tables(warehouse, merchant_id: str) -> list[str]:
    """The (empty) merchant tables every dbt source of the manifest reads, as the core and
    catalog assets would have created them (the analytics asset also does, before dbt runs)."""
    specs = source_table_specs()
    for spec in specs:
        warehouse.ensure_merchant_table(merchant_id, spec)
    return [spec.name for spec in specs]


def test_staging_model_materializes_into_the_merchant_schema(warehouse, warehouse_url, merchant_id, instance):
    mid, other = merchant_id("dbt"), merchant_id("other")
    add_merchant(warehouse, mid, channels={
        "amazon": ChannelConnection("amazon", f"sandbox:{mid}"),
        "walmart": ChannelConnection("walmart", f"sandbox:{mid}"),
    })
    add_merchant(warehouse, other, channels={"ebay": ChannelConnection("ebay", f"sandbox:{other}")})
    # No core or catalog table yet (a merchant just onboarded): the asset creates them empty; but
    # an inventory snapshot table from before stock was per marketplace, which it migrates first.
    with warehouse.merchant_scope(mid) as conn:
        conn.create_table(merchant_schema(mid), SNAPSHOTS_BEFORE_MARKETPLACES)
        conn.execute(
            f"INSERT INTO {merchant_schema(mid)}.core_inventory_snapshots (snapshot_date, channel, sku, master_part, "
            "part_match, available, units_sold_30d, stock_out, loaded_at, run_id) "
            "VALUES (DATE '2026-11-19', 'amazon', 'BRK-1', 'BRK-1', 'sku', 5, 0, false, TIMESTAMPTZ '2026-11-19 06:00:00+00', 'r')"
        )
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    resources = {**resources_for("local"), "warehouse": WarehouseResource(url=warehouse_url)}
    for full_refresh in (False, True):  # a re-run replaces, never duplicates; so does a full refresh
        result = dg.materialize(
            [analytics_dbt_models],
            partition_key=mid,
            resources=resources,
            instance=instance,
            run_config={"ops": {ANALYTICS_OP: {"config": {"as_of_date": "2026-11-20", "full_refresh": full_refresh}}}},
        )
        assert result.success
        assert {m.partition for m in result.get_asset_materialization_events()} == {mid}
        (command,) = [e.message for e in instance.all_logs(result.run_id) if "Running dbt command" in e.message]
        assert ("--full-refresh" in command) == full_refresh, command
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    with warehouse.merchant_scope(mid) as conn:
        rows = conn.fetchall(
            f"SELECT merchant_id, channel, CAST(as_of_date AS VARCHAR) FROM {merchant_schema(mid)}.stg_channel_connections ORDER BY channel"
        )
    with warehouse.merchant_scope(other) as conn:
        assert not conn.table_exists(merchant_schema(other), "stg_channel_connections")
    assert rows == [(mid, "amazon", "2026-11-20"), (mid, "walmart", "2026-11-20")]
    with warehouse.merchant_scope(mid) as conn:
        health = conn.fetchall(f"SELECT channel, marketplace_id, sku, available FROM {merchant_schema(mid)}.inventory_health")
    assert health == [("amazon", "*", "BRK-1", 5)]
    if warehouse.dialect == "postgres":
        with warehouse.merchant_scope(mid) as conn:
            owner, me = conn.fetchone(
                "SELECT tableowner, session_user FROM pg_tables WHERE schemaname = ? AND tablename = 'stg_channel_connections'",
                [merchant_schema(mid)],
            )
        assert owner == me and me.startswith(f"m_{mid}_")  # dbt logged in as the merchant's own login
    else:
        # dbt wrote into the merchant's own file, and nothing of it into the platform file.
        with warehouse.connect() as conn:
            assert not conn.fetchall("SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'stg_%'")


def test_as_of_date_defaults_to_today_and_a_bad_one_fails_clearly(tmp_path, merchant_id, instance):
    mid = merchant_id("asof")
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    wh = Warehouse.from_url(url)
    add_merchant(wh, mid, channels={"ebay": ChannelConnection("ebay", f"sandbox:{mid}")})
    create_source_tables(wh, mid)
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    resources = {**resources_for("local"), "warehouse": WarehouseResource(url=url)}
    before = datetime.now(UTC).date().isoformat()
    assert dg.materialize([analytics_dbt_models], partition_key=mid, resources=resources, instance=instance).success
    after = datetime.now(UTC).date().isoformat()  # the same day, unless the build crossed midnight
    with wh.merchant_scope(mid) as conn:
        assert conn.fetchall(f"SELECT CAST(as_of_date AS VARCHAR) FROM {merchant_schema(mid)}.stg_channel_connections") in ([(before,)], [(after,)])
    bad = dg.materialize(
        [analytics_dbt_models], partition_key=mid, resources=resources, instance=instance, raise_on_error=False,
        run_config={"ops": {ANALYTICS_OP: {"config": {"as_of_date": "2026-13-01"}}}},
    )
    assert not bad.success
    assert "fix the run config's as_of_date" in str(bad.get_step_failure_events()[0].event_specific_data.error)


def _parse_messages(run_id: str, mid: str) -> list[str]:
    """What dbt said about parsing in the run's build (its log, in the build's own target path)."""
    (log,) = (dbt_project().project_dir / dbt_project().target_path).glob(f"{mid}-{run_id[:8]}-*/dbt.log")
    return [
        event["info"]["msg"]
        for event in map(json.loads, log.read_text().splitlines())
        if event["info"]["name"] in ("UnableToPartialParse", "PartialParsingEnabled", "PartialParsingSkipParsing")
    ]


def test_the_next_build_reuses_the_merchants_parse_and_runs_as_of_its_own_day(tmp_path, merchant_id, instance):
    """The build's day reaches dbt outside --vars: the merchant's next build, a day later, reuses
    the parse its first build kept (dbt parses nothing), and its models still stand on the new day."""
    mid, other = merchant_id("parse"), merchant_id("other")
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    wh = Warehouse.from_url(url)
    resources = {**resources_for("local"), "warehouse": WarehouseResource(url=url)}
    for m in (mid, other):
        add_merchant(wh, m, channels={"ebay": ChannelConnection("ebay", f"sandbox:{m}")})
        instance.add_dynamic_partitions(MERCHANTS, [m])
    cache = merchant_parse_cache(parse_cache_dir(), "duckdb", mid)
    assert cache != merchant_parse_cache(parse_cache_dir(), "duckdb", other)  # builds side by side never share one
    for day in ("2026-11-20", "2026-11-21"):
        result = dg.materialize(
            [analytics_dbt_models], partition_key=mid, resources=resources, instance=instance,
            run_config={"ops": {ANALYTICS_OP: {"config": {"as_of_date": day}}}},
        )
        assert result.success and cache.exists()
        with wh.merchant_scope(mid) as conn:
            assert conn.fetchall(f"SELECT CAST(as_of_date AS VARCHAR) FROM {merchant_schema(mid)}.stg_channel_connections") == [(day,)]
    said = _parse_messages(result.run_id, mid)
    assert said[0] == "Partial parsing enabled: 0 files deleted, 0 files added, 0 files changed.", said
    assert not [m for m in said if m.startswith("Unable to do partial parsing")], said


def test_a_kept_parse_is_replaced_whole(tmp_path):
    cache = merchant_parse_cache(tmp_path / "cache", "postgres", "acme")
    assert cache == tmp_path / "cache" / "postgres" / "acme.msgpack"
    with pytest.raises(InvalidMerchantId):
        merchant_parse_cache(tmp_path, "duckdb", "../acme")
    first, second = tmp_path / "first", tmp_path / "second"
    assert not seed_partial_parse(cache, first)  # nothing kept yet: dbt parses the project
    keep_partial_parse(first, cache)  # dbt failed before it parsed: nothing to keep
    assert not cache.exists()
    (first / "partial_parse.msgpack").write_bytes(b"parse 1")
    keep_partial_parse(first, cache)
    assert seed_partial_parse(cache, second) and (second / "partial_parse.msgpack").read_bytes() == b"parse 1"
    (second / "partial_parse.msgpack").write_bytes(b"parse 2")
    keep_partial_parse(second, cache)
    assert cache.read_bytes() == b"parse 2" and [p.name for p in cache.parent.iterdir()] == ["acme.msgpack"]


def test_unonboarded_merchant_partition_fails_clearly(tmp_path, merchant_id, instance):
    mid = merchant_id()
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    result = dg.materialize(
        [analytics_dbt_models],
        partition_key=mid,
        resources={**resources_for("local"), "warehouse": WarehouseResource(url=url)},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert "onboard it with 'illuma merchants add'" in str(failure.event_specific_data.error)
