"""Keep the `merchants` dynamic partitions in step with the registry (DESIGN.md §3)."""


from dataclasses import dataclass

import dagster as dg

from assets.partitions import MERCHANT_DIM, MERCHANTS
from illuma_pipelines.registry import ACTIVE, list_merchants
from illuma_pipelines.warehouse import Warehouse
from resources.warehouse import WarehouseResource

MERCHANT_TAG = "illuma/merchant"
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
    waiting: list[str]  # retired in the registry, but a run of theirs is in flight


def runs_in_flight(instance: dg.DagsterInstance, merchant_id: str) -> int:
    """Runs of this merchant that are queued or running (by partition tag or our own tag)."""
    count = 0
    for tags in (
        {f"dagster/partition/{MERCHANT_DIM}": merchant_id},
        {"dagster/partition": merchant_id},
        {MERCHANT_TAG: merchant_id},
    ):
        count += len(
            instance.get_run_records(dg.RunsFilter(statuses=_IN_FLIGHT, tags=tags), limit=1)
        )
    return count


def plan_partition_changes(instance: dg.DagsterInstance, warehouse: Warehouse) -> PartitionChanges:
    """What to add and retire. A failed registry read raises: it never means "no merchants"."""
    registry = list_merchants(warehouse)
    active = {m.merchant_id for m in registry if m.status == ACTIVE}
    current = set(instance.get_dynamic_partitions(MERCHANTS))
    retired = sorted(current - active)
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
        instance.delete_dynamic_partition(MERCHANTS, merchant_id)
    return changes


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers new merchants as partitions and retires offboarded ones once idle.",
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
    if changes.to_remove:
        requests.append(dg.DeleteDynamicPartitionsRequest(MERCHANTS, changes.to_remove))
    return dg.SensorResult(dynamic_partitions_requests=requests)
