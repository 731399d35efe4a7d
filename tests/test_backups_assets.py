"""The backup assets, their check and schedules through Dagster (ADR 0013), on both engines."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from assets.backups import (
    BACKUP_HEALTH_CHECK,
    BACKUP_KEY,
    backup_health,
    backup_restore_check,
    backups_recent_and_restore_tested,
    warehouse_backup,
)
from illuma_pipelines.backups import DirectoryStore, list_backups
from illuma_pipelines.registry import add_merchant
from resources.warehouse import WarehouseResource
from sensors.backups import backup_health_schedule, backup_schedule, restore_check_schedule
from tests.conftest import PG_ADMIN_URL


@pytest.fixture(autouse=True)
def backup_env(backup_key, monkeypatch, tmp_path):
    monkeypatch.setenv("ILLUMA_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("ILLUMA_WAREHOUSE_ADMIN_URL", PG_ADMIN_URL)
    monkeypatch.delenv("ILLUMA_BACKUP_S3_BUCKET", raising=False)


def test_backup_health_names_what_is_overdue():
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    assert backup_health(now - timedelta(hours=25), now - timedelta(days=91), now)[0]
    ok, why = backup_health(now - timedelta(hours=27), now - timedelta(days=10), now)
    assert not ok and "27 h old" in why
    ok, why = backup_health(now - timedelta(hours=1), now - timedelta(days=93), now)
    assert not ok and "93 days old" in why
    ok, why = backup_health(None, None, now)
    assert not ok and "no warehouse backup" in why and "no successful restore test" in why


def _check_passed(result: dg.ExecuteInProcessResult) -> bool:
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == BACKUP_HEALTH_CHECK
    return evaluation.passed


def test_backup_then_restore_check_through_dagster(warehouse, warehouse_url, merchant_id, vault_resource, tmp_path, instance):
    mid = merchant_id("assets")
    add_merchant(warehouse, mid)
    resources = {"warehouse": WarehouseResource(url=warehouse_url), "vault": vault_resource}
    vault_resource.get(warehouse).ensure_key(mid)  # a key store to back up apart

    result = dg.materialize([warehouse_backup, backups_recent_and_restore_tested], resources=resources, instance=instance)
    assert result.success
    meta = result.asset_materializations_for_node("backups__warehouse")[0].metadata
    assert meta["backup_id"].value.startswith("wh-") and meta["key_store_backup_id"].value.startswith("ks-")
    assert meta["merchants"].value >= 1 and meta["encrypted_bytes"].value > 0
    assert not _check_passed(result)  # a backup, but no restore tested yet
    kinds = sorted(b.kind for b in list_backups(DirectoryStore(tmp_path / "backups")))
    assert kinds == ["keystore", "warehouse"]

    checked = dg.materialize([backup_restore_check], resources=resources, instance=instance)
    assert checked.success
    meta = checked.asset_materializations_for_node("backups__restore_check")[0].metadata
    assert meta["tables_compared"].value >= 10
    with warehouse.connect() as conn:
        rows = conn.fetchall("SELECT backup_id, ok, tables_compared FROM platform.backup_checks")
    assert rows == [(meta["backup_id"].value, True, meta["tables_compared"].value)]
    if warehouse.dialect == "postgres":  # the scratch database is gone
        import psycopg

        with psycopg.connect(PG_ADMIN_URL) as con:
            assert not con.execute("SELECT datname FROM pg_database WHERE datname LIKE 'illuma_restore_check%'").fetchall()

    job = dg.Definitions(
        assets=[warehouse_backup], asset_checks=[backups_recent_and_restore_tested], resources=resources,
        jobs=[dg.define_asset_job("health", selection=dg.AssetSelection.checks(backups_recent_and_restore_tested))],
    ).resolve_job_def("health")
    assert _check_passed(job.execute_in_process(instance=instance))


def test_a_tampered_backup_fails_the_restore_check_and_is_recorded(tmp_path, instance, vault_resource):
    from illuma_pipelines.warehouse import Warehouse

    url = f"duckdb:///{tmp_path / 'var' / 'data' / 'warehouse.duckdb'}"
    wh = Warehouse.from_url(url)
    wh.ensure_platform()
    resources = {"warehouse": WarehouseResource(url=url), "vault": vault_resource}
    assert dg.materialize([warehouse_backup], resources=resources, instance=instance).success
    (backup,) = list_backups(DirectoryStore(tmp_path / "backups"))
    obj = tmp_path / "backups" / backup.backup_id / "platform.duckdb"
    data = bytearray(obj.read_bytes())
    data[-40] ^= 0xFF
    obj.write_bytes(bytes(data))
    result = dg.materialize([backup_restore_check], resources=resources, instance=instance, raise_on_error=False)
    assert not result.success
    with wh.connect() as conn:
        ok, error = conn.fetchone("SELECT ok, error FROM platform.backup_checks")
    assert not ok and "BackupIntegrityError" in error and "chunk" in error


def test_schedules_request_deterministic_runs():
    when = datetime(2027, 1, 1, 5, tzinfo=UTC)
    for schedule, key in ((backup_schedule, "backup:2027-01-01"), (restore_check_schedule, "restore_check:2027-01-01"),
                          (backup_health_schedule, "backup_health:2027-01-01T05")):
        with dg.build_schedule_context(scheduled_execution_time=when) as context:
            assert schedule.evaluate_tick(context).run_requests[0].run_key == key
    assert restore_check_schedule.cron_schedule == "0 5 1 1,4,7,10 *"
    assert BACKUP_KEY.path == ["backups", "warehouse"]
