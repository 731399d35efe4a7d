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


def test_dbt_vars_for_duckdb_and_postgres():
    assert build_dbt_vars("acme", "2026-11-01", "duckdb:////tmp/w.duckdb") == {
        "merchant_id": "acme",
        "partition_date": "2026-11-01",
        "duckdb_path": "/tmp/w.duckdb",
    }
    pg = build_dbt_vars("acme", "2026-11-01", "postgresql://svc:pw@db.internal:6543/wh")
    assert pg["pg_host"] == "db.internal" and pg["pg_port"] == "6543"
    assert pg["pg_user"] == "svc" and pg["pg_dbname"] == "wh"
    assert pg["merchant_role"] == "m_acme_rw"
    assert "pw" not in repr(pg)  # the password stays in the environment
    assert dbt_target("postgresql+psycopg://x@y/z") == "postgres"
    with pytest.raises(InvalidMerchantId):
        build_dbt_vars("a;drop", "2026-11-01", "duckdb:////tmp/w.duckdb")
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
    with warehouse.connect() as conn:
        rows = conn.fetchall(
            f"SELECT merchant_id, channel, CAST(as_of_date AS VARCHAR) FROM {merchant_schema(mid)}.stg_channel_connections ORDER BY channel"
        )
        assert not conn.table_exists(merchant_schema(other), "stg_channel_connections")
    assert rows == [(mid, "amazon", "2026-11-20"), (mid, "walmart", "2026-11-20")]
    if warehouse.dialect == "postgres":
        with warehouse.connect() as conn:
            owner = conn.fetchone(
                "SELECT tableowner FROM pg_tables WHERE schemaname = ? AND tablename = 'stg_channel_connections'",
                [merchant_schema(mid)],
            )[0]
        assert owner == f"m_{mid}_rw"  # dbt ran under the merchant's own role


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
