"""The code location loads, and every job, schedule and sensor resolves; it reads the
environment when it loads, not when it is imported."""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import dagster as dg
import pytest

from assets.partitions import MERCHANTS
from illuma_pipelines.definitions import defs
from illuma_pipelines.environment import EnvironmentConfigError
from illuma_pipelines.paths import PROJECT_ROOT


def test_every_job_schedule_and_sensor_resolves():
    repo = defs().get_repository_def()
    assert {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")} >= {"merchant_daily_job"}
    assert {s.name for s in repo.schedule_defs} == {
        "merchant_daily_schedule", "key_rotation_schedule", "pii_purge_schedule", "freshness_schedule",
        "monthly_reports_schedule", "privacy_statements_schedule",
        "backup_schedule", "restore_check_schedule", "backup_health_schedule",
    }
    assert {s.name for s in repo.sensor_defs} >= {"merchants_sensor", "erasure_sensor"}
    for job in repo.get_all_jobs():
        assert job.name
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert "analytics/stg_channel_connections" in keys
    assert "platform/channel_connections" in keys
    assert {"core/orders", "core/buyer_pii", "core/inventory_snapshots"} <= keys
    assert {"compliance/pii_purge", "compliance/account_erasure"} <= keys
    assert {"backups/warehouse", "backups/restore_check"} <= keys
    check_names = {k.name for k in repo.asset_graph.asset_check_keys}
    assert {"orders_quality", "no_plaintext_pii", "inventory_quality"} <= check_names
    assert "backups_recent_and_restore_tested" in check_names


def test_schedule_requests_yesterday_for_every_active_merchant(tmp_path):
    from illuma_pipelines.registry import add_merchant, offboard_merchant
    from illuma_pipelines.warehouse import Warehouse
    from resources.warehouse import WarehouseResource

    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    wh = Warehouse.from_url(url)
    for mid in ("acme_parts", "bolt_power", "gone_gaskets"):
        add_merchant(wh, mid)
    offboard_merchant(wh, "gone_gaskets")  # keeps its partition until erased; nothing extracted
    definitions = defs()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(MERCHANTS, ["acme_parts", "bolt_power", "gone_gaskets"])
        with dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 11, 27, 6, tzinfo=UTC),
            repository_def=definitions.get_repository_def(),
            resources={"warehouse": WarehouseResource(url=url)},
        ) as context:
            schedule = definitions.resolve_schedule_def("merchant_daily_schedule")
            requests = list(schedule.evaluate_tick(context).run_requests)
    assert [r.run_key for r in requests] == [
        "merchant_daily:2026-11-26:acme_parts",
        "merchant_daily:2026-11-26:bolt_power",
    ]
    assert requests[0].partition_key.keys_by_dimension == {"date": "2026-11-26", "merchant": "acme_parts"}


@pytest.mark.timeout(600)
def test_dagster_definitions_validate_and_load_fast(tmp_path):
    """`dagster definitions validate` passes, and loading the location imports none of the heavy
    libraries (great_expectations, dbt's runtime): that is what keeps the load fast. Wall time is
    printed, not asserted: on a loaded CI machine process start-up alone varies twofold."""
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    validated = time.monotonic()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All code locations passed validation" in out.stdout + out.stderr
    # Heavy imports (great_expectations, dbt's runtime) must stay out of load time.
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, illuma_pipelines.definitions as d; d.defs(); "
         "print(','.join(m for m in ('great_expectations','dbt.cli.main') if m in sys.modules))"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "", f"loading the definitions imported {probe.stdout.strip()}"
    print(f"\ndefinitions validate {validated - started:.1f} s; import and load {time.monotonic() - validated:.1f} s")


def test_the_environment_is_read_when_the_location_loads_not_at_import(monkeypatch):
    # Importing with a wrong environment is harmless; loading says what is wrong.
    probe = subprocess.run(
        [sys.executable, "-c", "import illuma_pipelines.definitions"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "ILLUMA_ENV": "staging"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    monkeypatch.setenv("ILLUMA_ENV", "staging")
    with pytest.raises(EnvironmentConfigError, match="ILLUMA_ENV='staging' is not one of"):
        defs()
    monkeypatch.setenv("ILLUMA_ENV", "production")
    monkeypatch.delenv("ILLUMA_WAREHOUSE_URL", raising=False)
    with pytest.raises(EnvironmentConfigError, match="production needs ILLUMA_WAREHOUSE_URL"):
        defs()


def test_production_loads_with_production_resources(monkeypatch):
    url = "postgresql://illuma_pipeline@db.internal:5432/warehouse"
    monkeypatch.setenv("ILLUMA_ENV", "production")
    monkeypatch.setenv("ILLUMA_WAREHOUSE_URL", url)
    definitions = defs()
    assert definitions.resources["warehouse"].resolved_url() == url
    assert definitions.resources["vault"].generate_master_key is False
