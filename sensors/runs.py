"""Runs left behind: a run whose process died (killed, crashed) must not stay STARTED holding the
`warehouse` pool. Used where no daemon watches the runs (`make demo`, `illuma runs recover`,
`make ui` before it starts): dead runs are failed with a clear message and their pool slots
freed; a live run of another process is waited for, saying so."""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import dagster as dg

from illuma_pipelines.run_slots import free_run_slots  # noqa: F401 - re-exported for the sensors and the demo

# The pool of every step that opens merchant data (assets.concurrency.WAREHOUSE_POOL).
WAREHOUSE_POOL = "warehouse"
# Set on the demo's runs: where the run's process lives, so a later demo can tell a dead run from
# a live one (Dagster records the pids of a run's processes in its events, not the host).
HOST_TAG, PID_TAG = "illuma/host", "illuma/pid"

_RUN_PROCESS_EVENTS = {
    "RUN_START", "LOGS_CAPTURED", "RESOURCE_INIT_STARTED", "RESOURCE_INIT_SUCCESS",
    "RESOURCE_INIT_FAILURE", "ASSET_MATERIALIZATION", "ASSET_OBSERVATION", "ASSET_CHECK_EVALUATION",
    "HANDLED_OUTPUT", "LOADED_INPUT",
}


@dataclass(frozen=True)
class RunCheck:
    """What `recover_dead_runs` found about one run, and what it did."""

    run_id: str
    job_name: str
    partition: str | None
    status: str  # as found: STARTED, STARTING, NOT_STARTED, CANCELING, or a finished status
    action: str  # "failed", "canceled", "slots_freed", "alive", "starting", "elsewhere"
    pids: tuple[int, ...] = ()
    slots_freed: int = 0
    host: str = ""

    @property
    def cleaned(self) -> bool:
        return self.action in ("failed", "canceled", "slots_freed")

    def line(self) -> str:
        what = f"run {self.run_id[:8]} ({self.job_name}{', ' + self.partition if self.partition else ''})"
        pids = ", ".join(map(str, self.pids)) or "none recorded"
        if self.action in ("failed", "canceled"):
            return (
                f"cleaned {what}: {self.status} but its process (pid {pids}) is gone; marked "
                f"{self.action}, {self.slots_freed} pool slot(s) freed"
            )
        if self.action == "slots_freed":
            return f"cleaned {what}: ended {self.status} but still held {self.slots_freed} pool slot(s); freed"
        if self.action == "alive":
            return f"{what} is {self.status} in live process {pids}: left running"
        if self.action == "starting":
            return f"{what} is {self.status} and no process of it is recorded yet: left to start"
        return f"{what} is {self.status} on host {self.host}: its process cannot be checked from here; left alone"


def recover_dead_runs(
    instance: dg.DagsterInstance, *, run_ids: list[str] | None = None, by: str = "illuma runs recover"
) -> list[RunCheck]:
    """Fail the runs whose process is gone and free their pool slots; report the live ones.

    A run that is NOT_STARTED, STARTING, STARTED or CANCELING is checked against the processes
    that worked on it: the pids its events record (and the demo's `illuma/pid` tag), on this host
    (the `illuma/host` tag, or this machine for the local SQLite instance). When none is alive (a
    pid whose process started after the run's event is a new process under a reused pid), the run
    is reported failed (canceled if it was canceling) with a message saying why, and its
    concurrency slots are freed, so the next run of the pool proceeds. A run with no process
    recorded is failed once older than the instance's start timeout, as the daemon would. Finished
    runs that still hold pool slots (marked failed by hand, say) have them freed. Only runs this
    function can decide about are touched: a live run, or one on another host, is only reported.
    """
    import dagster as dg

    in_flight = [
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ]
    records = instance.get_run_records(dg.RunsFilter(statuses=in_flight, run_ids=run_ids))
    checks = [_check_run(instance, record, by) for record in records]
    checks += free_slots_of_finished_runs(instance, run_ids)
    return checks


def _check_run(instance: dg.DagsterInstance, record: dg.RunRecord, by: str) -> RunCheck:
    import dagster as dg

    run = record.dagster_run
    host = run.tags.get(HOST_TAG) or (socket.gethostname() if _is_local_instance(instance) else "")
    check = RunCheck(
        run.run_id, run.job_name, run.tags.get("dagster/partition"), run.status.value, "elsewhere", host=host or "unknown"
    )
    if host != socket.gethostname():
        return check
    processes = run_processes(instance, run, record.create_timestamp.timestamp())
    alive = tuple(pid for pid, since in sorted(processes.items()) if process_alive(pid, since))
    if alive:
        return replace(check, action="alive", pids=alive)
    pids = tuple(sorted(processes))
    if not pids and run.status in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING):
        timeout = instance.run_monitoring_start_timeout_seconds if instance.run_monitoring_enabled else 180
        if time.time() - record.update_timestamp.timestamp() < timeout:
            return replace(check, action="starting")
    gone = f"pid {', '.join(map(str, pids))} on {host}" if pids else f"none recorded on {host}"
    message = (
        f"The run's process ({gone}) is gone: it was killed or crashed while the run was "
        f"{run.status.value}. Marked {'canceled' if run.status == dg.DagsterRunStatus.CANCELING else 'failed'} "
        f"by `{by}`, and its pool slots freed, so other runs can proceed; re-run the partition "
        "(a re-run replaces it)."
    )
    if run.status == dg.DagsterRunStatus.CANCELING:
        instance.report_run_canceled(run, message)
        action = "canceled"
    else:
        instance.report_run_failed(run, message)
        action = "failed"
    return replace(check, action=action, pids=pids, slots_freed=free_run_slots(instance, run.run_id))


def free_slots_of_finished_runs(instance: dg.DagsterInstance, run_ids: list[str] | None = None) -> list[RunCheck]:
    """Free the pool slots and pending claims of runs that have ended (or were deleted): an ended
    run never needs them, and one left behind blocks the pool for every later run."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders: set[str] = set()
    for info in storage.get_concurrency_infos(sorted(storage.get_concurrency_keys())).values():
        holders |= {s.run_id for s in info.claimed_slots} | {p.run_id for p in info.pending_steps}
    out = []
    for run_id in sorted(h for h in holders if h and (run_ids is None or h in run_ids)):
        record = instance.get_run_record_by_id(run_id)
        if record is not None and not record.dagster_run.is_finished:
            continue
        run = record.dagster_run if record else None
        freed = free_run_slots(instance, run_id)
        out.append(RunCheck(
            run_id, run.job_name if run else "deleted run", run.tags.get("dagster/partition") if run else None,
            run.status.value if run else "DELETED", "slots_freed", slots_freed=freed,
        ))
    return out


def run_processes(instance: dg.DagsterInstance, run: dg.DagsterRun, created: float) -> dict[int, float]:
    """pid -> when first seen, of every process that worked on `run`: the pid of the events its
    own processes wrote (run start, steps, resources, outputs; not the daemon's or the webserver's
    enqueue/launch/cancel events), the pids engine events name (run worker, step subprocesses),
    and the demo's `illuma/pid` tag."""
    seen: dict[int, float] = {}
    if run.tags.get(PID_TAG, "").isdigit():
        seen[int(run.tags[PID_TAG])] = created
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type_value
        if (kind.startswith("STEP_") or kind in _RUN_PROCESS_EVENTS) and event.pid:
            seen.setdefault(event.pid, entry.timestamp)
        if kind == "ENGINE_EVENT":
            pid = getattr(getattr(event.event_specific_data, "metadata", {}).get("pid"), "value", None)
            if isinstance(pid, str | int) and str(pid).isdigit():
                seen.setdefault(int(pid), entry.timestamp)
    return seen


def process_alive(pid: int, since: float | None = None) -> bool:
    """Whether process `pid` of this machine is alive and is the one seen at `since` (epoch s):
    a zombie is dead, and so is a pid a later process reuses (it started after `since`; with 30 s
    of slack, as /proc's start times drift from the wall clock over a long uptime)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    except (OSError, StopIteration, IndexError, ValueError):
        return True  # no /proc (macOS): the signal check is all there is
    if fields[0] in ("Z", "X"):
        return False
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return since is None or started <= since + 30.0


def _is_local_instance(instance: dg.DagsterInstance) -> bool:
    from dagster._core.storage.runs.sqlite import SqliteRunStorage

    return isinstance(instance.run_storage, SqliteRunStorage)


def wait_for_pool(
    instance: dg.DagsterInstance,
    pool: str,
    *,
    out: TextIO | None = None,
    poll_seconds: float = 1.0,
    note_every: float = 15.0,
    by: str = "make demo",
) -> float:
    """Block until `pool` has a free slot, saying which run holds it and how long it has waited
    (every `note_every` seconds); a holder whose process dies meanwhile is cleaned at once. Returns
    the seconds waited. Interruptible: a signal handler that raises stops it."""
    out = out or sys.stdout
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return 0.0
    started = time.monotonic()
    next_note = started
    while True:
        info = storage.get_concurrency_info(pool)
        holders = sorted({s.run_id for s in info.claimed_slots if s.run_id})
        if info.limit is None or len(info.claimed_slots) < info.limit:
            waited = time.monotonic() - started
            if waited >= poll_seconds:
                print(f"the {pool} pool is free: waited {waited:.0f} s", file=out, flush=True)
            return waited
        checks = recover_dead_runs(instance, run_ids=holders, by=by) if holders else []
        for check in checks:
            if check.cleaned:
                print(check.line(), file=out, flush=True)
        if any(c.cleaned for c in checks):
            continue
        now = time.monotonic()
        if now >= next_note:
            who = "; ".join(c.line() for c in checks) or f"runs {', '.join(h[:8] for h in holders)}"
            print(
                f"waiting for the {pool} pool (limit {info.limit}), held by {who}: waited "
                f"{now - started:.0f} s so far (Ctrl-C stops the demo)",
                file=out,
                flush=True,
            )
            next_note = now + note_every
        time.sleep(poll_seconds)


def abandon_own_runs(instance: dg.DagsterInstance, why: str) -> list[str]:
    """Mark this process's in-flight runs failed and free their pool slots (the process is about
    to exit without finishing them: call it last, after its child processes are stopped, since
    Dagster's executor re-queues a waiting step's claim until it sees the run end)."""
    import dagster as dg

    records = instance.get_run_records(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED],
            tags={PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()},
        )
    )
    lines = []
    for record in records:
        run = record.dagster_run
        instance.report_run_failed(run, f"The demo was stopped ({why}) while this run was {run.status.value}: re-run the partition.")
        freed = free_run_slots(instance, run.run_id)
        lines.append(f"run {run.run_id[:8]} marked failed, {freed} pool slot(s) freed")
    return lines
