"""Keep the `merchants` dynamic partitions in step with the registry (ADR 0006: merchants are
dynamic partitions, changed by this sensor only; a failed registry read changes nothing)."""


from dataclasses import dataclass

import dagster as dg

from assets.partitions import MERCHANTS
from illuma_pipelines.merchant_ids import validate_merchant_id
from illuma_pipelines.registry import ACTIVE, list_merchants
from illuma_pipelines.warehouse import Warehouse
from resources.warehouse import WarehouseResource
from sensors.audit import audit_run_materializations
from sensors.tags import MERCHANT_RUN_TAGS

_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dataclass(frozen=True)
class PartitionChanges:
    to_add: list[str]
    to_remove: list[str]
    waiting: list[str]  # erased from the registry, but a run of theirs is in flight


def runs_in_flight(instance: dg.DagsterInstance, merchant_id: str) -> int:
    """Runs of this merchant that are queued or running (by partition tag or our own tag)."""
    count = 0
    for tag in MERCHANT_RUN_TAGS:
        count += len(
            instance.get_run_records(dg.RunsFilter(statuses=_IN_FLIGHT, tags={tag: merchant_id}), limit=1)
        )
    return count


def plan_partition_changes(instance: dg.DagsterInstance, warehouse: Warehouse) -> PartitionChanges:
    """What to add and retire. A failed registry read raises: it never means "no merchants".

    Offboarded merchants keep their partitions until their account is erased: the daily PII purge
    and the erasure itself run in them. Extraction stops at offboarding (the daily schedule
    requests active merchants only).
    """
    registry = list_merchants(warehouse)
    active = {m.merchant_id for m in registry if m.status == ACTIVE}
    registered = {m.merchant_id for m in registry}
    current = set(instance.get_dynamic_partitions(MERCHANTS))
    retired = sorted(current - registered)
    busy = [m for m in retired if runs_in_flight(instance, m)]
    return PartitionChanges(
        to_add=sorted(active - current),
        to_remove=[m for m in retired if m not in busy],
        waiting=busy,
    )


def sync_merchant_partitions(instance: dg.DagsterInstance, warehouse: Warehouse) -> PartitionChanges:
    """Apply the plan directly (CLI and demo); the sensor returns the same plan as requests."""
    changes = plan_partition_changes(instance, warehouse)
    if changes.to_add:
        instance.add_dynamic_partitions(MERCHANTS, changes.to_add)
    for merchant_id in changes.to_remove:
        forget_merchant(instance, merchant_id, warehouse)
    return changes


def _merchant_runs(instance: dg.DagsterInstance, merchant_id: str) -> set[str]:
    run_ids: set[str] = set()
    for tag in MERCHANT_RUN_TAGS:
        run_ids.update(
            r.dagster_run.run_id for r in instance.get_run_records(dg.RunsFilter(tags={tag: merchant_id}))
        )
    return run_ids


def forget_merchant(
    instance: dg.DagsterInstance, merchant_id: str, warehouse: Warehouse | None = None
) -> dict[str, int]:
    """Remove an erased merchant from the Dagster instance: its history and its partition key.
    Call only when none of its runs is in flight (`runs_in_flight`)."""
    forgotten = forget_merchant_history(instance, merchant_id, warehouse)
    if instance.has_dynamic_partition(MERCHANTS, merchant_id):
        instance.delete_dynamic_partition(MERCHANTS, merchant_id)
    return forgotten


def forget_merchant_history(
    instance: dg.DagsterInstance, merchant_id: str, warehouse: Warehouse | None = None
) -> dict[str, int]:
    """An erased merchant's runs, with their event logs (materializations, checks, logs). Each
    run is written to the audit log first (idempotent), so deleting it loses no audit record."""
    validate_merchant_id(merchant_id)
    runs = _merchant_runs(instance, merchant_id)
    for run_id in runs:
        if warehouse is not None:
            audit_run_materializations(instance, run_id, warehouse)
        instance.delete_run(run_id)
    return {"runs_deleted": len(runs)}


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers new merchants as partitions; removes erased ones (partition, runs and "
    "materialization history) once none of their runs is in flight.",
)
def merchants_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult | dg.SkipReason:
    changes = plan_partition_changes(context.instance, warehouse.get())
    if changes.waiting:
        context.log.info(f"waiting for in-flight runs before retiring: {', '.join(changes.waiting)}")
    if not changes.to_add and not changes.to_remove:
        return dg.SkipReason(
            "registry and partitions agree"
            + (f"; waiting on in-flight runs of {', '.join(changes.waiting)}" if changes.waiting else "")
        )
    requests = []
    if changes.to_add:
        requests.append(dg.AddDynamicPartitionsRequest(MERCHANTS, changes.to_add))
    for merchant_id in changes.to_remove:
        # An erased merchant: its history goes now; its partition key with the request below.
        forgotten = forget_merchant_history(context.instance, merchant_id, warehouse.get())
        context.log.info(f"erased merchant {merchant_id} removed from the instance: {forgotten}")
    if changes.to_remove:
        requests.append(dg.DeleteDynamicPartitionsRequest(MERCHANTS, changes.to_remove))
    return dg.SensorResult(dynamic_partitions_requests=requests)
