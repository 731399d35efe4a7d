"""Freeing a run's concurrency slots: for the run-recovery sensor, the demo and `illuma prod down`,
which all fail runs whose process is gone and must not leave their pool slots held."""

import dagster as dg


def free_run_slots(instance: dg.DagsterInstance, run_id: str) -> int:
    """Free every concurrency slot (and pending claim) of a run; the number of slots it held."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return 0
    held = sum(
        1
        for info in storage.get_concurrency_infos(sorted(storage.get_concurrency_keys())).values()
        for slot in info.claimed_slots
        if slot.run_id == run_id
    )
    storage.free_concurrency_slots_for_run(run_id)
    return held
