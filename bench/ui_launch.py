"""Benchmark: one merchant-day of `merchant_daily_job` launched as the UI's Launch button does (ADR 0012).

    .venv/bin/python bench/ui_launch.py [--executors multiprocess,in_process] [--dequeue-interval S] [--keep]

A throwaway state (ILLUMA_VAR_DIR with the DuckDB warehouse, DAGSTER_HOME with the local
instance's dagster.yaml from `illuma_pipelines.demo`: SQLite storage, queued runs, 3 `warehouse`
pool slots), the sandbox in a process of its own, one demo merchant onboarded. For each executor
named (ILLUMA_EXECUTOR, read by the code location at load; assets/concurrency.py), a
`dagster-webserver` and a `dagster-daemon` are started on that instance (the topology of `make ui`),
and the run is launched through the webserver's GraphQL API (`launchRun`, with the partition tags
the Launch button sets), then polled until it ends. Two days per executor: the first creates the
merchant's tables (printed, marked warm-up), the second is the figure. Then the same merchant-day
work in process (`execute_in_process`, what `make demo` does) for comparison.

Printed per run, from its event log: wall time from the launch request to the run's end; launch
(request to RUN_START), split into the queue (request to RUN_STARTING: the daemon's dequeue loop)
and the run worker's start (RUN_STARTING to RUN_START: a new process loading the code location);
steps' compute (STEP_START to STEP_SUCCESS, summed); step process start-up (STEP_WORKER_STARTING to
STEP_START, summed; multiprocess only); and the rest (executor waits and polling, event writes,
run teardown).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import LAUNCH_RUN  # noqa: E402
from bench.isolation import _free_port, complete_days, output_to, run_tags, sandbox_process  # noqa: E402

JOB_NAME = "merchant_daily_job"
MERCHANT = "acme_auto_parts"
STATUS = """query($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"""
LOCATION = """{ workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    import requests

    response = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for_location(url: str, proc: subprocess.Popen, log: Path) -> str:
    import requests

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the webserver exited with {proc.returncode}: see {log}")
        try:
            entries = graphql(url, LOCATION)["workspaceOrError"]["locationEntries"]
        except (requests.RequestException, RuntimeError):
            entries = []
        for entry in entries:
            loaded = entry["locationOrLoadError"]
            if loaded and loaded["__typename"] == "PythonError":
                raise RuntimeError(f"the code location failed to load: {loaded['message'][:500]}")
            if loaded and loaded["__typename"] == "RepositoryLocation":
                return entry["name"]
        time.sleep(0.5)
    raise RuntimeError(f"the code location did not load within 180 s: see {log}")


def launch_and_wait(url: str, location: str, tags: dict[str, str], timeout: float = 900) -> tuple[str, float]:
    params = {
        "selector": {"repositoryLocationName": location, "repositoryName": "__repository__", "jobName": JOB_NAME},
        "runConfigData": {},
        "mode": "default",
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }
    started = time.time()
    result = graphql(url, LAUNCH_RUN, {"params": params})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launchRun: {result}")
    run_id = result["run"]["runId"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = graphql(url, STATUS, {"runId": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return run_id, started
        time.sleep(0.5)
    raise RuntimeError(f"run {run_id} did not end within {timeout} s")


def breakdown(instance, run_id: str, requested: float) -> dict[str, float]:
    from dagster import DagsterEventType as E

    logs = instance.all_logs(run_id)
    first = {}
    worker, step_start = {}, {}
    compute = startup = 0.0
    steps = 0
    for entry in logs:
        event = entry.dagster_event
        if event is None:
            continue
        first.setdefault(event.event_type, entry.timestamp)
        key = entry.step_key
        if event.event_type == E.STEP_WORKER_STARTING:
            worker[key] = entry.timestamp
        elif event.event_type == E.STEP_START:
            step_start[key] = entry.timestamp
            if key in worker:
                startup += entry.timestamp - worker[key]
        elif event.event_type in (E.STEP_SUCCESS, E.STEP_FAILURE):
            steps += 1
            compute += entry.timestamp - step_start.get(key, entry.timestamp)
    end = max(e.timestamp for e in logs)
    run_start = first.get(E.RUN_START, end)
    starting = first.get(E.RUN_STARTING, run_start)
    wall = end - requested
    return {
        "wall": wall, "launch": run_start - requested, "queue": starting - requested, "worker": run_start - starting,
        "compute": compute, "startup": startup, "rest": wall - (run_start - requested) - compute - startup,
        "steps": steps,
    }


def show(label: str, run_status: str, figures: dict[str, float]) -> None:
    print(
        f"{label:<34} {run_status:<8} wall {figures['wall']:6.1f} s = launch {figures['launch']:5.1f}"
        f" (queue {figures['queue']:4.1f}, run worker start {figures['worker']:4.1f})"
        f" + step compute {figures['compute']:5.1f} ({figures['steps']:.0f} steps)"
        f" + step start-up {figures['startup']:5.1f} + rest {figures['rest']:5.1f}",
        flush=True,
    )


def ui_runs(executor: str, days: list[str], tmp: Path, log: Path) -> None:
    import dagster as dg

    from illuma_pipelines.definitions import defs

    os.environ["ILLUMA_EXECUTOR"] = executor
    job = defs().resolve_job_def(JOB_NAME)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    web = start([str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)], log)
    daemon = start([str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"], log)
    try:
        location = wait_for_location(url, web, log)
        instance = dg.DagsterInstance.get()
        for n, day in enumerate(days):
            run_id, requested = launch_and_wait(url, location, run_tags(job, MERCHANT, day))
            status = instance.get_run_by_id(run_id).status.value
            label = f"UI launch, {executor}, {day}" + (" (warm-up)" if n == 0 else "")
            show(label, status, breakdown(instance, run_id, requested))
    finally:
        stop(web)
        stop(daemon)


def in_process_run(day: str, log: Path) -> None:
    import dagster as dg

    from assets.partitions import merchant_date_key
    from illuma_pipelines.definitions import defs

    instance = dg.DagsterInstance.get()
    job = defs().resolve_job_def(JOB_NAME)
    started = time.time()
    with output_to(log):
        result = job.execute_in_process(
            instance=instance, partition_key=merchant_date_key(MERCHANT, day), raise_on_error=False,
            tags={k: v for k, v in run_tags(job, MERCHANT, day).items() if not k.startswith("dagster/partition")},
        )
    show(f"execute_in_process, {day}", "SUCCESS" if result.success else "FAILURE", breakdown(instance, result.run_id, started))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executors", default="multiprocess,in_process")
    parser.add_argument(
        "--dequeue-interval", type=int, metavar="S",
        help="the queued run coordinator's dequeue_interval_seconds (default: Dagster's, 5)",
    )
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    from illuma_pipelines.demo import DEMO_MERCHANTS, INSTANCE_YAML

    executors = args.executors.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="illuma-ui-launch-bench-"))
    var, home, log = tmp / "var", tmp / "dagster_home", tmp / "output.log"
    home.mkdir(parents=True)
    coordinator = "" if args.dequeue_interval is None else (
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: QueuedRunCoordinator\n"
        f"  config:\n    dequeue_interval_seconds: {args.dequeue_interval}\n"
    )
    (home / "dagster.yaml").write_text(INSTANCE_YAML + coordinator)
    os.environ.update(
        ILLUMA_ENV="local", ILLUMA_VAR_DIR=str(var), ILLUMA_DATA_DIR=str(var / "data"),
        ILLUMA_WAREHOUSE_URL=f"duckdb:///{var / 'data' / 'warehouse.duckdb'}", DAGSTER_HOME=str(home),
    )
    os.environ.pop("ILLUMA_WAREHOUSE_ADMIN_URL", None)
    days = complete_days(2 * len(executors) + 1)
    try:
        with sandbox_process(tmp / "sandbox.log") as sandbox_url:
            os.environ["ILLUMA_SANDBOX_URL"] = sandbox_url
            import dagster as dg

            from assets.partitions import MERCHANTS
            from illuma_pipelines.registry import ChannelConnection, add_merchant
            from illuma_pipelines.warehouse import Warehouse

            wh = Warehouse.from_url(os.environ["ILLUMA_WAREHOUSE_URL"])
            wh.ensure_platform()
            name, channels = DEMO_MERCHANTS[MERCHANT]
            add_merchant(
                wh, MERCHANT, display_name=name,
                channels={c: ChannelConnection(c, f"sandbox:{MERCHANT}") for c in channels}, actor="bench",
            )
            dg.DagsterInstance.get().add_dynamic_partitions(MERCHANTS, [MERCHANT])
            print(f"{os.cpu_count()} CPUs; throwaway state in {tmp}", flush=True)
            for k, executor in enumerate(executors):
                ui_runs(executor, days[2 * k : 2 * k + 2], tmp, log)
            in_process_run(days[-1], log)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
