"""One decision of the environment and its warehouse, shared by the CLI, the resources, the assets
and dbt: a merchant the CLI adds is the merchant the assets materialize."""

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from assets.analytics import analytics_dbt_models
from assets.extracts import extract_assets
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines.cli import main
from illuma_pipelines.dbt_vars import dbt_target
from illuma_pipelines.environment import (
    Environment,
    EnvironmentConfigError,
    current_environment,
    local_warehouse_url,
    warehouse_url,
)
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.registry import get_merchant, list_merchants
from illuma_pipelines.warehouse import Warehouse
from resources import resources_for
from resources.warehouse import WarehouseResource
from tests.sandbox_helpers import amazon_sandbox, sandbox_now

AMAZON_ORDERS = next(a for a in extract_assets if a.key.path[-1] == "amazon_orders")


@pytest.fixture
def clean_env(monkeypatch, tmp_path) -> Path:
    """No ILLUMA_ENV or ILLUMA_WAREHOUSE_URL from the caller; local state under tmp_path."""
    monkeypatch.delenv("ILLUMA_ENV", raising=False)
    monkeypatch.delenv("ILLUMA_WAREHOUSE_URL", raising=False)
    monkeypatch.setenv("ILLUMA_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ILLUMA_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data" / "warehouse.duckdb"


def test_local_is_the_default_on_the_project_local_duckdb_file(clean_env):
    assert current_environment() == Environment("local", f"duckdb:///{clean_env}")
    assert local_warehouse_url() == f"duckdb:///{clean_env}"
    assert WarehouseResource().resolved_url() == f"duckdb:///{clean_env}"


def test_a_warehouse_url_wins_in_either_environment(clean_env, monkeypatch):
    url = "postgresql://illuma@db.internal:5432/warehouse"
    monkeypatch.setenv("ILLUMA_WAREHOUSE_URL", url)
    assert current_environment() == Environment("local", url)
    monkeypatch.setenv("ILLUMA_ENV", "production")
    assert current_environment() == Environment("production", url)
    assert WarehouseResource().resolved_url() == url
    assert dbt_target(WarehouseResource().resolved_url()) == "postgres"
    # An explicit URL (tests, benchmarks) is used as given.
    assert WarehouseResource(url="duckdb:////tmp/x.duckdb").resolved_url() == "duckdb:////tmp/x.duckdb"


def test_production_requires_a_postgres_warehouse_and_says_so(clean_env, monkeypatch):
    monkeypatch.setenv("ILLUMA_ENV", "production")
    with pytest.raises(EnvironmentConfigError, match="production needs ILLUMA_WAREHOUSE_URL"):
        current_environment()
    with pytest.raises(EnvironmentConfigError, match="production needs ILLUMA_WAREHOUSE_URL"):
        WarehouseResource().resolved_url()
    monkeypatch.setenv("ILLUMA_WAREHOUSE_URL", f"duckdb:///{clean_env}")
    with pytest.raises(EnvironmentConfigError, match="not a DuckDB file"):
        warehouse_url()
    monkeypatch.delenv("ILLUMA_ENV")
    assert warehouse_url("local") == f"duckdb:///{clean_env}"


def test_an_unknown_environment_is_refused(clean_env, monkeypatch, capsys):
    monkeypatch.setenv("ILLUMA_ENV", "prod")
    with pytest.raises(EnvironmentConfigError, match="ILLUMA_ENV='prod' is not one of"):
        current_environment()
    with pytest.raises(ValueError, match="not one of"):
        resources_for("prod")
    # The CLI reports it like any other configuration error.
    assert main(["merchants", "list"]) == 2
    assert "ILLUMA_ENV='prod'" in capsys.readouterr().err


def test_cli_and_resources_share_the_local_duckdb_file(clean_env, merchant_id, capsys):
    mid = merchant_id("loc")
    assert main(["merchants", "add", mid]) == 0
    assert clean_env.exists()
    warehouse = resources_for(current_environment().name)["warehouse"]
    assert mid in [m.merchant_id for m in list_merchants(warehouse.get())]


def test_cli_and_assets_use_the_same_postgres_warehouse(clean_env, monkeypatch, pg_url, merchant_id, instance, capsys):
    # ILLUMA_WAREHOUSE_URL set, ILLUMA_ENV unset: the CLI used to write PostgreSQL while the
    # assets' local resources opened an empty DuckDB file ("merchant has no schema").
    monkeypatch.setenv("ILLUMA_WAREHOUSE_URL", pg_url)
    mid = merchant_id("env")
    assert main(["merchants", "add", mid, "--channel", "amazon"]) == 0
    # The CLI's partition sync, on the instance the fixture made DAGSTER_HOME.
    assert main(["merchants", "sync-partitions"]) == 0
    assert mid in instance.get_dynamic_partitions(MERCHANTS)

    day = (sandbox_now() - timedelta(days=2)).date().isoformat()
    with amazon_sandbox() as sandbox:
        monkeypatch.setenv("ILLUMA_SANDBOX_URL", sandbox.base_url)
        resources = resources_for(current_environment().name)
        assert resources["warehouse"].resolved_url() == pg_url
        result = dg.materialize(
            [AMAZON_ORDERS], partition_key=merchant_date_key(mid, day), resources=resources, instance=instance
        )
        built = dg.materialize([analytics_dbt_models], partition_key=mid, resources=resources, instance=instance)
    assert result.success and built.success
    (extract,) = result.asset_materializations_for_node(AMAZON_ORDERS.op.name)
    records = extract.metadata["records"].value
    assert records > 0

    warehouse = Warehouse.from_url(pg_url)
    assert get_merchant(warehouse, mid).channel_names == ("amazon",)
    with warehouse.merchant_scope(mid) as conn:
        (landed,) = conn.fetchone(
            f"SELECT count(*) FROM {merchant_schema(mid)}.raw_amazon_orders WHERE partition_date = ?", [day]
        )
        (connections,) = conn.fetchone(f"SELECT count(*) FROM {merchant_schema(mid)}.stg_channel_connections")
    assert landed == records  # the extract wrote where the CLI registered
    assert connections == 1  # and dbt built there too (target postgres)
    assert not clean_env.exists(), "nothing may open the local DuckDB file"
