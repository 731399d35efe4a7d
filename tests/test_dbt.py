"""The dbt staging model runs for a merchant partition into that merchant's schema, on both engines."""

import dagster as dg
import pytest

from assets.analytics import analytics_dbt_models
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines.dbt_vars import build_dbt_vars, dbt_target
from illuma_pipelines.merchant_ids import InvalidMerchantId, merchant_schema
from illuma_pipelines.registry import ChannelConnection, add_merchant
from resources import resources_for
from resources.warehouse import WarehouseResource


def test_dbt_vars_confine_dbt_to_the_merchant(warehouse, merchant_id):
    """DuckDB: the merchant's own file; PostgreSQL: the merchant's own login, its password only
    in the dbt process's environment."""
    mid = merchant_id("vars")
    add_merchant(warehouse, mid)
    dbt_vars, env = build_dbt_vars(mid, "2026-11-01", warehouse)
    assert dbt_vars["merchant_id"] == mid and dbt_vars["partition_date"] == "2026-11-01"
    if warehouse.dialect == "duckdb":
        assert dbt_vars["duckdb_path"] == str(warehouse.merchant_file(mid)) and env == {}
    else:
        with warehouse.connect() as conn:
            (role,) = conn.fetchone("SELECT role_name FROM platform.merchant_logins WHERE merchant_id = ?", [mid])
        assert dbt_vars["pg_user"] == role and dbt_vars["pg_host"] == "127.0.0.1" and dbt_vars["pg_port"] == "5432"
        assert set(env) == {"ILLUMA_PG_PASSWORD"} and len(env["ILLUMA_PG_PASSWORD"]) == 64
        assert env["ILLUMA_PG_PASSWORD"] not in repr(dbt_vars)  # the password stays in the environment
    with pytest.raises(InvalidMerchantId):
        build_dbt_vars("a;drop", "2026-11-01", warehouse)


def test_dbt_targets():
    assert dbt_target("postgresql+psycopg://x@y/z") == "postgres"
    assert dbt_target("duckdb:////tmp/w.duckdb") == "duckdb"
    with pytest.raises(ValueError, match="no dbt target"):
        dbt_target("mysql://x")


def test_staging_model_materializes_into_the_merchant_schema(warehouse, warehouse_url, merchant_id, instance):
    mid, other = merchant_id("dbt"), merchant_id("other")
    add_merchant(warehouse, mid, channels={
        "amazon": ChannelConnection("amazon", f"sandbox:{mid}"),
        "walmart": ChannelConnection("walmart", f"sandbox:{mid}"),
    })
    add_merchant(warehouse, other, channels={"ebay": ChannelConnection("ebay", f"sandbox:{other}")})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    resources = {**resources_for("local"), "warehouse": WarehouseResource(url=warehouse_url)}
    for _ in range(2):  # a re-run replaces, never duplicates
        result = dg.materialize(
            [analytics_dbt_models],
            partition_key=merchant_date_key(mid, "2026-11-20"),
            resources=resources,
            instance=instance,
        )
        assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    with warehouse.merchant_scope(mid) as conn:
        rows = conn.fetchall(
            f"SELECT merchant_id, channel, CAST(as_of_date AS VARCHAR) FROM {merchant_schema(mid)}.stg_channel_connections ORDER BY channel"
        )
    with warehouse.merchant_scope(other) as conn:
        assert not conn.table_exists(merchant_schema(other), "stg_channel_connections")
    assert rows == [(mid, "amazon", "2026-11-20"), (mid, "walmart", "2026-11-20")]
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


def test_unonboarded_merchant_partition_fails_clearly(tmp_path, merchant_id, instance):
    mid = merchant_id()
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    result = dg.materialize(
        [analytics_dbt_models],
        partition_key=merchant_date_key(mid, "2026-11-20"),
        resources={**resources_for("local"), "warehouse": WarehouseResource(url=url)},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert "onboard it with 'illuma merchants add'" in str(failure.event_specific_data.error)
