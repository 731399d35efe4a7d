"""The production Dagster instance config (deploy/dagster.yaml) on the real PostgreSQL service."""

import shutil

import dagster as dg
import pytest

from assets.extracts import extract_assets
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines.paths import PROJECT_ROOT
from illuma_pipelines.registry import ChannelConnection, add_merchant
from resources import sandbox_clients
from resources.warehouse import WarehouseResource
from sensors.merchants import sync_merchant_partitions
from tests.conftest import PG_PIPELINE_LOGIN, pipeline_url, throwaway_database


@pytest.fixture
def dagster_pg_url(pg_url):
    """A database of its own for the Dagster instance's storage, owned by the pipeline's
    non-superuser login (the warehouse database gives that login the platform schema only)."""
    with throwaway_database("illuma_dagster", owner=PG_PIPELINE_LOGIN) as dbname:
        yield pipeline_url(dbname).replace("postgresql://", "postgresql+psycopg2://", 1)

def test_runs_record_their_events_on_postgres_storage(
    pg_url, dagster_pg_url, tmp_path, monkeypatch, merchant_id, vault_resource
):
    # The instance config names psycopg2 explicitly: psycopg 3 cannot bind dagster-postgres' NOTIFY.
    monkeypatch.setenv("DAGSTER_PG_URL", dagster_pg_url)
    shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        warehouse = WarehouseResource(url=pg_url).get()
        mid = merchant_id("pginst")
        add_merchant(warehouse, mid, channels={"ebay": ChannelConnection("ebay", f"sandbox:{mid}")})
        assert mid in sync_merchant_partitions(instance, warehouse).to_add
        assert mid in instance.get_dynamic_partitions(MERCHANTS)
        amazon_orders = next(a for a in extract_assets if a.key.path[-1] == "amazon_orders")
        result = dg.materialize(
            [amazon_orders],
            partition_key=merchant_date_key(mid, "2026-11-20"),
            resources={
                "warehouse": WarehouseResource(url=pg_url),
                "vault": vault_resource,
                **sandbox_clients("http://127.0.0.1:9"),
            },
            instance=instance,
        )
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition/merchant"] == mid
        record = instance.get_latest_materialization_event(amazon_orders.key)
        assert record is not None and record.run_id == result.run_id
