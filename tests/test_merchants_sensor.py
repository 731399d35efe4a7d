"""The merchants sensor keeps the dynamic partitions in step with the registry."""

import os
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg
import pytest

from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines import purge
from illuma_pipelines.registry import add_merchant, offboard_merchant
from illuma_pipelines.warehouse import Warehouse
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource
from sensors.compliance import pii_purge_schedule
from sensors.merchants import merchants_sensor, sync_merchant_partitions


def _tick(instance, url):
    context = dg.build_sensor_context(instance=instance, resources={"warehouse": WarehouseResource(url=url)})
    return merchants_sensor(context)


def _apply(instance, result):
    for request in result.dynamic_partitions_requests:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def _noop_job():
    @dg.op
    def noop() -> None:
        return None

    @dg.job
    def noop_job():
        noop()

    return noop_job


def test_sensor_adds_new_merchants(instance, warehouse, warehouse_url, merchant_id):
    a, b = merchant_id("a"), merchant_id("b")
    add_merchant(warehouse, a)
    add_merchant(warehouse, b)
    result = _tick(instance, warehouse_url)
    assert isinstance(result, dg.SensorResult)
    (request,) = result.dynamic_partitions_requests
    assert isinstance(request, dg.AddDynamicPartitionsRequest)
    assert {a, b} <= set(request.partition_keys)
    _apply(instance, result)
    assert isinstance(_tick(instance, warehouse_url), dg.SkipReason)


def _erase(warehouse, mid, tmp_path):
    purge.request_deletion(warehouse, mid, immediate=True, requested_by="test")
    vault = VaultResource(key_store_path=str(tmp_path / "ks.json"), master_key_file=str(tmp_path / "mk")).get(warehouse)
    purge.erase_account(warehouse, vault, mid, now=datetime.now(UTC), run_id="test")


def test_sensor_removes_erased_merchants_only_when_idle(instance, warehouse, warehouse_url, merchant_id, tmp_path):
    mid = merchant_id()
    add_merchant(warehouse, mid)
    _apply(instance, _tick(instance, warehouse_url))
    # Offboarded: extraction stops, but the partition stays for the PII purge and the erasure.
    offboard_merchant(warehouse, mid)
    assert isinstance(_tick(instance, warehouse_url), dg.SkipReason)
    _erase(warehouse, mid, tmp_path)

    # A run of the merchant is in flight (started, tagged as Dagster tags partitioned runs).
    run = instance.create_run_for_job(_noop_job(), tags={"dagster/partition/merchant": mid})
    instance.run_storage.handle_run_event(
        run.run_id, dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, run.job_name)
    )
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    skip = _tick(instance, warehouse_url)
    assert isinstance(skip, dg.SkipReason)
    assert f"waiting on in-flight runs of {mid}" in skip.skip_message
    assert mid in instance.get_dynamic_partitions(MERCHANTS)

    instance.report_run_failed(instance.get_run_by_id(run.run_id))
    result = _tick(instance, warehouse_url)
    (request,) = result.dynamic_partitions_requests
    assert isinstance(request, dg.DeleteDynamicPartitionsRequest)
    assert list(request.partition_keys) == [mid]


def test_a_failed_registry_read_changes_nothing(instance, warehouse, warehouse_url, merchant_id):
    mid = merchant_id()
    add_merchant(warehouse, mid)
    sync_merchant_partitions(instance, warehouse)
    before = sorted(instance.get_dynamic_partitions(MERCHANTS))
    broken = "postgresql://nobody@127.0.0.1:1/unreachable"
    with pytest.raises(Exception, match="cannot reach the PostgreSQL warehouse"):
        _tick(instance, broken)
    assert mid in before
    assert sorted(instance.get_dynamic_partitions(MERCHANTS)) == before


def test_sync_applies_the_same_plan(instance, warehouse, merchant_id, tmp_path):
    mid = merchant_id()
    add_merchant(warehouse, mid)
    assert mid in sync_merchant_partitions(instance, warehouse).to_add
    offboard_merchant(warehouse, mid)
    assert sync_merchant_partitions(instance, warehouse).to_remove == []
    _erase(warehouse, mid, tmp_path)
    assert sync_merchant_partitions(instance, warehouse).to_remove == [mid]
    assert mid not in instance.get_dynamic_partitions(MERCHANTS)
    assert merchant_date_key(mid, "2026-11-01").keys_by_dimension == {"date": "2026-11-01", "merchant": mid}


BAD_KEY = "Acme-Parts"  # a key the UI's "add partition" accepts, but not a merchant id


def test_a_key_that_is_not_a_merchant_id_is_reported_removed_and_blocks_no_one(
    instance, warehouse, warehouse_url, merchant_id
):
    instance.add_dynamic_partitions(MERCHANTS, [BAD_KEY])
    mid = merchant_id("new")
    add_merchant(warehouse, mid)
    result = _tick(instance, warehouse_url)
    assert isinstance(result, dg.SensorResult)
    added, removed = result.dynamic_partitions_requests
    assert isinstance(added, dg.AddDynamicPartitionsRequest) and mid in added.partition_keys
    assert isinstance(removed, dg.DeleteDynamicPartitionsRequest) and list(removed.partition_keys) == [BAD_KEY]
    assert f"'{BAD_KEY}'" in result.skip_reason.skip_message
    assert "not merchant ids" in result.skip_reason.skip_message
    _apply(instance, result)
    assert BAD_KEY not in instance.get_dynamic_partitions(MERCHANTS)
    assert mid in instance.get_dynamic_partitions(MERCHANTS)
    assert isinstance(_tick(instance, warehouse_url), dg.SkipReason)


def test_a_bad_key_with_a_run_in_flight_waits_and_onboarding_goes_on(instance, warehouse, warehouse_url, merchant_id):
    instance.add_dynamic_partitions(MERCHANTS, [BAD_KEY])
    run = instance.create_run_for_job(_noop_job(), tags={"dagster/partition/merchant": BAD_KEY})
    instance.run_storage.handle_run_event(
        run.run_id, dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, run.job_name)
    )
    mid = merchant_id("next")
    add_merchant(warehouse, mid)
    result = _tick(instance, warehouse_url)
    (added,) = result.dynamic_partitions_requests
    assert mid in added.partition_keys
    assert f"'{BAD_KEY}' removed once no run of theirs is in flight" in result.skip_reason.skip_message
    _apply(instance, result)
    assert BAD_KEY in instance.get_dynamic_partitions(MERCHANTS)

    instance.report_run_failed(instance.get_run_by_id(run.run_id))
    changes = sync_merchant_partitions(instance, warehouse)
    assert changes.invalid == [BAD_KEY] and BAD_KEY not in instance.get_dynamic_partitions(MERCHANTS)
    # Only the key goes: a key that is not a merchant id has no merchant history to erase.
    assert instance.get_run_by_id(run.run_id) is not None


def test_the_pii_purge_schedule_skips_a_key_that_is_not_a_merchant_id(instance, merchant_id):
    mid = merchant_id()
    instance.add_dynamic_partitions(MERCHANTS, [BAD_KEY, mid])
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2026, 11, 27, 2, tzinfo=UTC)) as context:
        requests = list(pii_purge_schedule(context))
    assert [r.tags["illuma/merchant"] for r in requests] == [mid]


def test_cli_sync_partitions_works_from_a_fresh_checkout(tmp_path, merchant_id):
    # No DAGSTER_HOME, no var/ yet: the command makes the project-local instance, as `make demo`.
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "ILLUMA_WAREHOUSE_URL", "ILLUMA_DATA_DIR")}
    env["ILLUMA_VAR_DIR"] = str(var)
    (var / "data").mkdir(parents=True)
    mid = merchant_id()
    add_merchant(Warehouse.from_url(f"duckdb:///{var / 'data' / 'warehouse.duckdb'}"), mid)

    def sync():
        return subprocess.run(
            [sys.executable, "-m", "illuma_pipelines.cli", "merchants", "sync-partitions"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )

    out = sync()
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"added: {mid};" in out.stdout
    home = var / "dagster_home"
    assert (home / "dagster.yaml").exists()
    with dg.DagsterInstance.from_config(str(home)) as local:
        assert local.get_dynamic_partitions(MERCHANTS) == [mid]
        local.add_dynamic_partitions(MERCHANTS, [BAD_KEY])
    out = sync()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "added: -" in out.stdout and f"removed '{BAD_KEY}'" in out.stdout
    with dg.DagsterInstance.from_config(str(home)) as local:
        assert local.get_dynamic_partitions(MERCHANTS) == [mid]
