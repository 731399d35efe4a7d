"""Merchants placed across warehouses (ADR 0011): configuration, the CLI's --warehouse, DuckDB
placement, and two merchants in two PostgreSQL databases through extracts, core, analytics (dbt),
purge, export and erasure, each merchant's data only in its own database and the platform only in
the main one."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
import pytest

from assets.analytics import analytics_dbt_models
from assets.compliance import compliance_assets
from assets.partitions import MERCHANTS
from illuma_pipelines import purge
from illuma_pipelines.cli import main
from illuma_pipelines.dbt_vars import build_dbt_vars
from illuma_pipelines.environment import EnvironmentConfigError, named_warehouses
from illuma_pipelines.export import export_merchant
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.placement import PlacedWarehouse, open_warehouse
from illuma_pipelines.registry import ChannelConnection, RegistryError, add_merchant, get_merchant
from illuma_pipelines.sandbox.server import SandboxClock, SandboxConfig, SandboxServer
from illuma_pipelines.warehouse import PLACED_TABLES, PostgresWarehouse, WarehouseError
from resources import resources_for
from resources.warehouse import WarehouseResource
from tests.conftest import PG_ADMIN_URL, admin_dsn, pipeline_url, throwaway_database
from tests.sandbox_helpers import sandbox_now
from tests.test_compliance_assets import _compliance
from tests.test_core_assets import CHANNELS, _materialize, _vault_resource

PLATFORM_ONLY = ("merchants", "channel_connections", "audit_log", "retention_ledger", "exports", "merchant_warehouses")


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("value", "env", "message"),
    [
        ("{not json", "local", "ILLUMA_WAREHOUSES is not valid JSON"),
        ('["duckdb:///x.duckdb"]', "local", "must be a JSON object"),
        ('{"main": "duckdb:///x.duckdb"}', "local", "the main warehouse is ILLUMA_WAREHOUSE_URL"),
        ('{"EU-2": "duckdb:///x.duckdb"}', "local", "invalid warehouse name 'EU-2'"),
        ('{"eu2": "mysql://db/x"}', "local", "is not a warehouse URL"),
        ('{"eu2": "postgresql://illuma_app@db2/x"}', "local", "is postgres but the main warehouse is duckdb"),
        ('{"eu2": "duckdb:///MAIN"}', "local", "same database as warehouse 'main'"),
        ('{"eu2": "duckdb:///x.duckdb"}', "production", "PostgreSQL warehouses only"),
    ],
)
def test_bad_warehouse_configuration_is_refused_clearly(tmp_path, monkeypatch, value, env, message):
    main_url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    monkeypatch.setenv("ILLUMA_WAREHOUSES", value.replace("MAIN", str(tmp_path / "w.duckdb")))
    monkeypatch.setenv("ILLUMA_ENV", env)
    with pytest.raises(EnvironmentConfigError, match=message):
        named_warehouses(main_url)


def test_production_named_postgres_warehouses_are_accepted(monkeypatch):
    monkeypatch.setenv("ILLUMA_ENV", "production")
    monkeypatch.setenv(
        "ILLUMA_WAREHOUSES",
        json.dumps({"eu2": "postgresql://illuma_app@db2:5432/illuma", "us1": "postgresql://illuma_app@db3/illuma"}),
    )
    got = named_warehouses("postgresql://illuma_app@db1:5432/illuma")
    assert sorted(got) == ["eu2", "us1"]
    monkeypatch.setenv("ILLUMA_WAREHOUSES", json.dumps({"eu2": "postgresql://other@db1/illuma"}))
    with pytest.raises(EnvironmentConfigError, match="same database as warehouse 'main'"):
        named_warehouses("postgresql://illuma_app@db1:5432/illuma")


# ----------------------------------------------------------------------------- DuckDB and the CLI
def test_cli_places_merchants_in_named_duckdb_warehouses(tmp_path, monkeypatch, merchant_id, capsys):
    main_url = f"duckdb:///{tmp_path / 'main.duckdb'}"
    monkeypatch.setenv("ILLUMA_WAREHOUSE_URL", main_url)
    monkeypatch.setenv("ILLUMA_WAREHOUSES", json.dumps({"second": f"duckdb:///{tmp_path / 'second.duckdb'}"}))
    here, there = merchant_id("here"), merchant_id("there")
    assert main(["merchants", "add", here, "--channel", "ebay"]) == 0
    assert main(["merchants", "add", there, "--channel", "ebay", "--warehouse", "second"]) == 0
    assert "warehouse: second" in capsys.readouterr().out
    main_files = {p.name for p in (tmp_path / "main.merchants").glob("*.duckdb")}
    second_files = {p.name for p in (tmp_path / "second.merchants").glob("*.duckdb")}
    assert main_files == {f"{merchant_schema(here)}.duckdb"}
    assert second_files == {f"{merchant_schema(there)}.duckdb"}
    assert not (tmp_path / "second.duckdb").exists()  # the platform is main's alone

    wh = open_warehouse(main_url)
    assert (wh.warehouse_of(here), wh.warehouse_of(there)) == ("main", "second")
    assert get_merchant(wh, there).warehouse == "second"
    assert wh.merchant_ids() == sorted([here, there])
    with wh.merchant_scope(there) as conn:
        conn.execute(f"CREATE TABLE {merchant_schema(there)}.probe (x INTEGER)")
    vars_, _ = build_dbt_vars(there, "2026-11-20", wh)  # dbt opens the merchant's own file
    assert vars_["duckdb_path"] == str(tmp_path / "second.merchants" / f"{merchant_schema(there)}.duckdb")
    # Re-adding without --warehouse keeps the placement; moving a merchant with data is refused.
    assert main(["merchants", "add", there, "--channel", "walmart"]) == 0
    assert wh.merchant_warehouse(there).merchant_file(there).exists()
    capsys.readouterr()
    assert main(["merchants", "add", there, "--warehouse", "main"]) == 2
    assert "has data in warehouse 'second': moving a merchant between warehouses is not supported" in capsys.readouterr().err
    # Unknown names and bad characters: a clear error and a nonzero exit, nothing registered.
    fresh = merchant_id("fresh")
    assert main(["merchants", "add", fresh, "--warehouse", "eu9"]) == 2
    assert "unknown warehouse 'eu9': configured are main, second" in capsys.readouterr().err
    assert main(["merchants", "add", fresh, "--warehouse", "Bad-Name"]) == 2
    assert "invalid warehouse name 'Bad-Name'" in capsys.readouterr().err
    assert fresh not in [m for m in wh.merchant_ids()]
    with pytest.raises(RegistryError, match="unknown merchant"):
        get_merchant(wh, fresh)
    # A process whose configuration lacks the merchant's warehouse refuses rather than guess.
    monkeypatch.delenv("ILLUMA_WAREHOUSES")
    with pytest.raises(WarehouseError, match="placed in warehouse 'second', which this process's configuration"):
        open_warehouse(main_url).merchant_scope(there).__enter__()
    assert main(["merchants", "list"]) == 0
    listing = capsys.readouterr().out
    assert any(there in line and "second" in line for line in listing.splitlines())


# ----------------------------------------------------------------------------- PostgreSQL end to end
def _superuser(dbname: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(admin_dsn(pipeline_url(dbname)), autocommit=True) as con:
        cur = con.execute(sql, list(params) or None)
        return cur.fetchall() if cur.description else []


def _schemas(dbname: str) -> set[str]:
    return {r[0] for r in _superuser(dbname, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'm\\_%'")}


def _count(dbname: str, table: str, merchant: str) -> int:
    return _superuser(dbname, f"SELECT count(*) FROM {table} WHERE merchant_id = %s", [merchant])[0][0]


def _core_orders(dbname: str, merchant: str) -> int:
    return _superuser(dbname, f"SELECT count(*) FROM {merchant_schema(merchant)}.core_orders")[0][0]


def test_two_merchants_in_two_postgres_databases_end_to_end(pg_url, merchant_id, instance, tmp_path, monkeypatch):
    monkeypatch.setenv("ILLUMA_DATA_DIR", str(tmp_path / "data"))
    with throwaway_database("illuma_main") as main_db, throwaway_database("illuma_eu2") as eu2_db:
        main_url = pipeline_url(main_db)
        PostgresWarehouse(main_url, admin_url=PG_ADMIN_URL).provision()
        # The named warehouse's admin: ILLUMA_WAREHOUSE_ADMIN_URL (conftest), on the same server.
        monkeypatch.setenv("ILLUMA_WAREHOUSES", json.dumps({"eu2": pipeline_url(eu2_db)}))
        wh = open_warehouse(main_url)
        assert isinstance(wh, PlacedWarehouse) and wh.warehouse_names() == ("main", "eu2")
        a, b = merchant_id("home"), merchant_id("away")
        channels = {m: {c: ChannelConnection(c, f"sandbox:{m}") for c in CHANNELS} for m in (a, b)}
        add_merchant(wh, a, channels=channels[a])
        add_merchant(wh, b, channels=channels[b], placement="eu2")
        instance.add_dynamic_partitions(MERCHANTS, [a, b])
        vault_res = _vault_resource(tmp_path)

        # Extracts and core, through the sandbox and the real clients.
        now = sandbox_now()
        day = (now - timedelta(days=3)).date()
        t1 = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1, minutes=10)
        config = SandboxConfig(seed=5, clock=SandboxClock.fixed_at(t1), history_start=day - timedelta(days=60))
        with SandboxServer(config) as sandbox:
            for m in (a, b):
                _materialize(instance, main_url, sandbox.base_url, vault_res, m, day.isoformat())
        assert _schemas(main_db) == {merchant_schema(a)} and _schemas(eu2_db) == {merchant_schema(b)}
        orders = {a: _core_orders(main_db, a), b: _core_orders(eu2_db, b)}
        assert orders[a] > 0 and orders[b] > 0

        # Analytics: dbt logs in as each merchant's own login, in the merchant's own database.
        resources = {**resources_for("local"), "warehouse": WarehouseResource(url=main_url)}
        for m in (a, b):
            result = dg.materialize(
                [analytics_dbt_models],
                partition_key=m,
                resources=resources,
                instance=instance,
                run_config={"ops": {analytics_dbt_models.op.name: {"config": {"as_of_date": day.isoformat()}}}},
            )
            assert result.success
        for m, db in ((a, main_db), (b, eu2_db)):
            owner, rows = _superuser(
                db,
                f"SELECT tableowner, (SELECT count(*) FROM {merchant_schema(m)}.stg_channel_connections) "
                "FROM pg_tables WHERE schemaname = %s AND tablename = 'stg_channel_connections'",
                [merchant_schema(m)],
            )[0]
            assert owner.startswith(f"m_{m}_") and rows == len(CHANNELS)

        # The platform only in main: the registry, audit log and placement rows of both merchants
        # are there; eu2 keeps only the bookkeeping of its own merchant logins.
        for m in (a, b):
            assert _count(main_db, "platform.merchants", m) == 1
            assert _count(main_db, "platform.audit_log", m) > 0
        assert _superuser(main_db, "SELECT merchant_id, warehouse FROM platform.merchant_warehouses ORDER BY 2 DESC") == [
            (a, "main"), (b, "eu2")
        ]
        eu2_platform = {r[0] for r in _superuser(
            eu2_db, "SELECT tablename FROM pg_tables WHERE schemaname = 'platform'"
        )}
        assert eu2_platform == {t.name for t in PLACED_TABLES}
        assert not eu2_platform & set(PLATFORM_ONLY)
        assert _superuser(eu2_db, "SELECT merchant_id FROM platform.merchant_logins") == [(b,)]
        assert _superuser(main_db, "SELECT merchant_id FROM platform.merchant_logins") == [(a,)]

        # Purge a year on: each merchant's PII goes from its own database, the ledger is main's.
        later = t1 + timedelta(days=365)
        for m in (a, b):
            purged = _compliance(instance, main_url, vault_res, m, day.isoformat(), later, [compliance_assets[0]])
            assert purged.success
            assert _count(main_db, "platform.retention_ledger", m) > 0
        assert _superuser(eu2_db, f"SELECT count(*) FROM {merchant_schema(b)}.retention_outbox")[0][0] == 0

        # Export: read from the merchant's own database, registered in main's platform.exports.
        vault = vault_res.get(wh)
        for m in (a, b):
            exported = export_merchant(wh, vault, m, requested_by="merchant", out_dir=tmp_path / "exports" / m)
            (orders_name,) = [n for n in exported.row_counts if n.endswith("core_orders")]
            assert exported.row_counts[orders_name] == orders[m]
            with zipfile.ZipFile(exported.path) as archive:
                assert any(name.endswith("core_orders.csv") for name in archive.namelist())
            assert _count(main_db, "platform.exports", m) == 1

        # Erasure of the main one, as before; of the placed one, across two databases: the
        # drop fails after its ledger row (the pipeline lost EXECUTE on eu2's erasure function),
        # a withdrawal is then refused, and the next run completes without a second ledger row.
        for m in (a, b):
            purge.request_deletion(wh, m, immediate=True, requested_by="merchant", now=later)
        assert _compliance(instance, main_url, vault_res, a, day.isoformat(), later, [compliance_assets[1]]).success
        assert _schemas(main_db) == set()
        assert _superuser(eu2_db, "SELECT count(*) FROM pg_roles WHERE rolname LIKE %s", [f"m\\_{a}\\_%"])[0][0] == 0
        (b_login,) = _superuser(eu2_db, "SELECT role_name FROM platform.merchant_logins WHERE merchant_id = %s", [b])[0]
        _superuser(eu2_db, "REVOKE EXECUTE ON FUNCTION platform.erase_merchant_warehouse(text) FROM illuma_pipeline")
        failed = _compliance(instance, main_url, vault_res, b, day.isoformat(), later, [compliance_assets[1]])
        assert not failed.success
        assert "permission denied" in str(failed.get_step_failure_events()[0].event_specific_data.error)
        drops = (
            "SELECT count(*) FROM platform.retention_ledger WHERE merchant_id = %s AND action = 'drop_schema'"
        )
        assert _superuser(main_db, drops, [b])[0][0] == 1
        assert _schemas(eu2_db) == {merchant_schema(b)} and _count(main_db, "platform.merchants", b) == 1
        with pytest.raises(RegistryError, match="erasure of .* has begun"):
            purge.withdraw_deletion(wh, b, requested_by="merchant", now=later)
        wh.named("eu2").provision()  # the operator restores the grant
        again = _compliance(instance, main_url, vault_res, b, day.isoformat(), later, [compliance_assets[1]])
        assert again.success
        assert _superuser(main_db, drops, [b])[0][0] == 1
        assert _schemas(eu2_db) == set()
        assert _superuser(eu2_db, "SELECT count(*) FROM pg_roles WHERE rolname = %s", [b_login])[0][0] == 0
        assert _superuser(eu2_db, "SELECT count(*) FROM platform.merchant_logins")[0][0] == 0
        # Nothing of either merchant is left in any table of eu2 (only the placement tag row).
        for schema, table in _superuser(
            eu2_db, "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ):
            text = " ".join(str(r) for r in _superuser(eu2_db, f"SELECT * FROM {schema}.{table}"))
            assert a not in text and b not in text, (schema, table)
        for m in (a, b):
            assert _count(main_db, "platform.merchants", m) == 0
            assert _count(main_db, "platform.merchant_warehouses", m) == 0
            assert _count(main_db, "platform.retention_ledger", m) > 0  # the proof stays
        wh.forget_placement(b)
        assert wh.warehouse_of(b) == "main"  # an erased merchant can be added again anywhere
