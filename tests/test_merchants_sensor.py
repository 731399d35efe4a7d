"""The merchants sensor keeps the dynamic partitions in step with the registry."""

from datetime import UTC, datetime

import dagster as dg
import pytest

from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines import purge
from illuma_pipelines.registry import add_merchant, offboard_merchant
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource
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
