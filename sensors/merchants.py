"""Keep the `merchants` dynamic partitions in step with the registry (ADR 0006: merchants are
dynamic partitions, changed by this sensor only; a failed registry read changes nothing).

A partition key that is not a merchant id (the UI's "add partition" accepts any key) is reported
by name in the tick and removed once none of its runs is in flight: no registered merchant can
have it, so nothing can run in it, and it must not stop the sensor from registering the others.
"""

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from assets.partitions import MERCHANTS
from illuma_pipelines.merchant_ids import MERCHANT_ID_RULE, InvalidMerchantId, validate_merchant_id
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
    to_remove: list[str]  # erased merchants: their runs, run files and partition key go
    waiting: list[str]  # erased (or not a merchant id), but a run of theirs is in flight
    invalid: list[str] = field(default_factory=list)  # keys that are not merchant ids: removed

    def invalid_note(self) -> str:
        """The tick's words about keys that are not merchant ids ('' when there are none)."""
        bad = [k for k in self.waiting if not _is_merchant_id(k)]
        if not self.invalid and not bad:
            return ""
        parts = []
        if self.invalid:
            parts.append(f"removed {', '.join(map(repr, self.invalid))}")
        if bad:
            parts.append(f"{', '.join(map(repr, bad))} removed once no run of theirs is in flight")
        return f"partition keys that are not merchant ids ({MERCHANT_ID_RULE}): {'; '.join(parts)}"


def _is_merchant_id(key: str) -> bool:
    try:
        validate_merchant_id(key)
    except InvalidMerchantId:
        return False
    return True


def runs_in_flight(instance: dg.DagsterInstance, merchant_id: str) -> int:
    """Runs of this merchant (or partition key) that are queued or running, by partition tag or
    our own tag."""
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
    requests active merchants only). Keys that are not merchant ids are removed (only the key:
    their runs stay in the instance) once none of their runs is in flight.
    """
    registry = list_merchants(warehouse)
    active = {m.merchant_id for m in registry if m.status == ACTIVE}
    registered = {m.merchant_id for m in registry}
    current = set(instance.get_dynamic_partitions(MERCHANTS))
    invalid = sorted(k for k in current if not _is_merchant_id(k))
    retired = sorted(current - registered - set(invalid))
    busy = [m for m in retired + invalid if runs_in_flight(instance, m)]
    return PartitionChanges(
        to_add=sorted(active - current),
        to_remove=[m for m in retired if m not in busy],
        waiting=busy,
        invalid=[k for k in invalid if k not in busy],
    )


def sync_merchant_partitions(instance: dg.DagsterInstance, warehouse: Warehouse) -> PartitionChanges:
    """Apply the plan directly (CLI and demo); the sensor returns the same plan as requests."""
    changes = plan_partition_changes(instance, warehouse)
    if changes.to_add:
        instance.add_dynamic_partitions(MERCHANTS, changes.to_add)
    for merchant_id in changes.to_remove:
        forget_merchant(instance, merchant_id, warehouse)
    for key in changes.invalid:
        instance.delete_dynamic_partition(MERCHANTS, key)
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
    forgotten = forget_merchant_history(instance, merchant_id, warehouse, compact=False)
    if instance.has_dynamic_partition(MERCHANTS, merchant_id):
        instance.delete_dynamic_partition(MERCHANTS, merchant_id)
    forgotten["instance_files_compacted"] = compact_instance_files(instance)  # the key's bytes too
    return forgotten


def forget_merchant_history(
    instance: dg.DagsterInstance, merchant_id: str, warehouse: Warehouse | None = None, *, compact: bool = True
) -> dict[str, int]:
    """An erased merchant's runs: their event logs (materializations, checks, logs), their
    captured compute logs (which name its schema: dbt's output, for one) and the per-run files
    under the Dagster home; then the instance's SQLite files are compacted, so the deleted rows
    do not linger in free pages. Each run is written to the audit log first (idempotent), so
    deleting it loses no audit record."""
    validate_merchant_id(merchant_id)
    runs = _merchant_runs(instance, merchant_id)
    files = 0
    asset_keys: set[dg.AssetKey] = set()
    for run_id in sorted(runs):
        if warehouse is not None:
            audit_run_materializations(instance, run_id, warehouse)
        asset_keys |= _asset_keys_of_run(instance, run_id)
        files += delete_run_files(instance, run_id)
    if runs:
        _forget_index_rows_of_runs(instance, runs, asset_keys)
    compacted = compact_instance_files(instance) if runs and compact else 0
    return {"runs_deleted": len(runs), "run_files_deleted": files, "instance_files_compacted": compacted}


def _asset_keys_of_run(instance: dg.DagsterInstance, run_id: str) -> set[dg.AssetKey]:
    kinds = {
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        dg.DagsterEventType.ASSET_OBSERVATION,
    }
    records = instance.get_records_for_run(run_id, of_type=kinds, limit=100_000).records
    return {r.event_log_entry.dagster_event.asset_key for r in records if r.event_log_entry.dagster_event}


def _forget_index_rows_of_runs(instance: dg.DagsterInstance, run_ids: set[str], asset_keys: set[dg.AssetKey]) -> None:
    """What Dagster's asset index still holds of deleted runs, which `delete_run` leaves: each
    asset's cached partition status (recomputed when next read), its cached latest
    materialization when it came from one of the runs (reads then fall back to the event log, as
    after a wipe), and asset check executions. No public API removes these; the tables are
    Dagster's own (1.13), written through its index connection."""
    import sqlalchemy as sa
    from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, AssetKeyTable
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    if asset_keys:
        instance.wipe_asset_cached_status(sorted(asset_keys, key=lambda k: k.to_user_string()))
    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage):
        return
    with storage.index_connection() as conn:
        rows = conn.execute(sa.select(AssetKeyTable.c.id, AssetKeyTable.c.last_materialization, AssetKeyTable.c.last_run_id))
        for row_id, last, last_run in rows.fetchall():
            values = {}
            if last and any(run_id in last for run_id in run_ids):
                values["last_materialization"] = None
            if last_run in run_ids:
                values["last_run_id"] = None
            if values:
                conn.execute(AssetKeyTable.update().where(AssetKeyTable.c.id == row_id).values(**values))
        if storage.has_table(AssetCheckExecutionsTable.name):
            conn.execute(AssetCheckExecutionsTable.delete().where(AssetCheckExecutionsTable.c.run_id.in_(sorted(run_ids))))


def delete_run_files(instance: dg.DagsterInstance, run_id: str) -> int:
    """Delete a run from the instance with every file of it: its captured compute logs (the
    local compute log manager keeps them in `<DAGSTER_HOME>/storage/<run_id>/`; other managers
    delete theirs by prefix) and, on SQLite event storage, its event log shard
    (`<DAGSTER_HOME>/history/runs/<run_id>.db`, which `delete_run` empties but leaves). Returns
    how many files went."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
    from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager

    removed = 0
    manager = instance.compute_log_manager
    if isinstance(manager, LocalComputeLogManager):
        folder = Path(manager.get_captured_local_path([run_id, "compute_logs", "x"], "out")).parents[1]
        removed += sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
    try:
        manager.delete_logs(prefix=[run_id])
    except NotImplementedError as exc:
        # Its logs name the erased merchant: leaving them would break the erasure promise.
        raise RuntimeError(
            f"the instance's compute log manager ({type(manager).__name__}) cannot delete the logs of "
            f"run {run_id}, so the erased merchant's compute logs would stay: configure a compute log "
            "manager that implements delete_logs (local, S3, GCS, Azure or no-op) and let the sensor retry"
        ) from exc
    instance.delete_run(run_id)
    storage = instance.event_log_storage
    if isinstance(storage, SqliteEventLogStorage):
        shard = Path(storage.path_for_shard(run_id))
        for path in (shard, Path(f"{shard}-wal"), Path(f"{shard}-shm"), Path(f"{shard}-journal")):
            if path.exists():
                path.unlink()
                removed += 1
    return removed


def compact_instance_files(instance: dg.DagsterInstance) -> int:
    """VACUUM the instance's SQLite databases (runs, event index) and truncate their WAL, so rows
    just deleted leave no bytes behind. Returns how many files were compacted; PostgreSQL storage
    has none here. A database another process holds locked for 30 s is left for the next time."""
    paths = []
    for connect in (getattr(instance.run_storage, "connect", None), getattr(instance.event_log_storage, "index_connection", None)):
        if connect is None:
            continue
        with connect() as conn:
            if conn.engine.dialect.name == "sqlite" and conn.engine.url.database:
                paths.append(conn.engine.url.database)
    compacted = 0
    for path in dict.fromkeys(paths):
        con = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            con.execute("VACUUM")
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            compacted += 1
        except sqlite3.OperationalError:
            pass
        finally:
            con.close()
    return compacted


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers new merchants as partitions; removes erased ones (partition, runs, run "
    "files and materialization history) once none of their runs is in flight, and partition keys "
    "that are not merchant ids.",
)
def merchants_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult | dg.SkipReason:
    changes = plan_partition_changes(context.instance, warehouse.get())
    notes = []
    if changes.invalid_note():
        notes.append(changes.invalid_note())
        context.log.warning(changes.invalid_note())
    erased_waiting = [m for m in changes.waiting if _is_merchant_id(m)]
    if erased_waiting:
        context.log.info(f"waiting for in-flight runs before retiring: {', '.join(erased_waiting)}")
        notes.append(f"waiting on in-flight runs of {', '.join(erased_waiting)}")
    if not changes.to_add and not changes.to_remove and not changes.invalid:
        return dg.SkipReason("; ".join(["registry and partitions agree", *notes]))
    requests = []
    if changes.to_add:
        requests.append(dg.AddDynamicPartitionsRequest(MERCHANTS, changes.to_add))
        notes.insert(0, f"added {', '.join(changes.to_add)}")
    for merchant_id in changes.to_remove:
        # An erased merchant: its history goes now; its partition key with the request below.
        forgotten = forget_merchant_history(context.instance, merchant_id, warehouse.get())
        context.log.info(f"erased merchant {merchant_id} removed from the instance: {forgotten}")
    if changes.to_remove:
        requests.append(dg.DeleteDynamicPartitionsRequest(MERCHANTS, changes.to_remove))
        notes.insert(0, f"retired erased {', '.join(changes.to_remove)}")
    if changes.invalid:
        requests.append(dg.DeleteDynamicPartitionsRequest(MERCHANTS, changes.invalid))
    return dg.SensorResult(dynamic_partitions_requests=requests, skip_reason="; ".join(notes))
