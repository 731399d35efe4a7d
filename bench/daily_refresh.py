"""Benchmark: the daily refresh of N merchants (200 by default) through the production topology (issue 17).

    .venv/bin/python bench/daily_refresh.py [--merchants 200] [--mode default|celery] [--stress]
        [--enforce-quotas] [--no-warm-up] [--timeout S] [--keep]

Setup. A topology of `illuma_pipelines.prod` of its own (`ProdConfig` with a temp root, free ports,
throwaway databases): the sandbox (no quotas unless --enforce-quotas; with them, sped up 60x), the
code location's gRPC server (which runs the launched runs: Dagster's default run launcher), the
webserver and the daemon (schedules, sensors, the queued run coordinator, run monitoring and
retries), on PostgreSQL storage (deploy/dagster.yaml as is: 8 runs at once, one per merchant, 6 per
marketplace) and a PostgreSQL warehouse, all as the pipeline's non-superuser login. N merchants
(`bench_m000`...; channels cycling through the demo merchants' three channel sets) are onboarded
in this process with `registry.add_merchant` and sandbox credentials, and their `merchants`
partitions are registered directly with `add_dynamic_partitions` (what the daemon's merchants
sensor does within a minute: done directly so onboarding stays out of the figures).

Steady state. A merchant-day run's extract windows are its own day (plus a 2 h lookback; 48 h for
Amazon's transactions): no watermark reaches back weeks. What a merchant's first run does that a
daily one does not is create its tables, keys and first dbt build. So, unless --no-warm-up, the day
before the measured one is a warm-up: one `merchant_daily_job` run per merchant launched through
the webserver's GraphQL API (`launchRun`, the Launch button, with the tags the schedule sets), and
the analytics runs the daemon's `analytics_refresh_sensor` launches after them; its wall time is
printed as what the warm-up cost. The topology is then stopped, the schedule's recorded state (no
tick yet) removed, and started again.

The measured day goes the real way: `merchant_daily_schedule`'s tick evaluated by the daemon
(`prod.running_since`: the daemon catches up the last 06:00 UTC tick, as after a deployment, so
the day is the one before that tick), its runs queued and launched by the daemon, plus the
analytics runs the sensor launches after them: the daily refresh as production runs it. Wall time
is from the first run's creation (the tick's first RunRequest) to the last run's end. Other runs
the daemon launches meanwhile (a settlement report once a settlement closed: rendered, not sent,
as the merchants have no report e-mail) are waited for and listed by job and status,
outside the figures and the checks.

Printed (every run of the phase; a per-run CSV, runs.csv, in the temp dir):
- wall time; merchant-day runs per minute;
- per run (median / p90 / max): wall (created -> end), queued (created -> RUN_DEQUEUED), launch
  (dequeued -> RUN_START: the launcher, process start, code location load), pre-step (RUN_START ->
  first STEP_START), step compute (union of the STEP_START -> STEP_SUCCESS/FAILURE intervals; the sum
  too, larger when Celery runs steps side by side), between steps (first step start -> last step
  end, minus compute: the executor, event writes), teardown (last step end -> run end);
- orchestration share, two ways: run-based, 1 - sum(step compute) / sum(run wall), with and without
  the queue wait (a queued run waits for capacity, not for orchestration); wall-based,
  1 - sum(step compute) / (wall x CPUs), the share of the machine's core-seconds of the wall time
  not spent inside a step (steps waiting for a CPU count as compute: a lower bound);
- CPU seconds and peak memory per process kind, sampled from /proc every 0.5 s over every process
  of the topology's process groups (sandbox, code server, runs, webserver, daemon, Celery workers;
  PostgreSQL's own processes are not counted): peak of the sum of RSS, and the peak of each kind.

Modes. `--mode default`: ILLUMA_EXECUTOR unset (in-process executor, assets/concurrency.py), runs
launched by the default run launcher. `--mode celery`: ILLUMA_EXECUTOR=celery, two
`dagster-celery worker start` processes (deploy/celery.yaml, concurrency 1, a queue of this run's
own on the local RabbitMQ, results in Redis); each run's orchestrator still runs in the code
server's run process. `--stress`: the sandbox injects 10% faults of every kind (--faults 0.1; in
the warm-up too), and once a quarter of the measured merchant-day runs have ended, one Celery
worker (celery: the one running a step in flight) or one run process (default: a run with a step
in flight) is killed with SIGKILL. The cost is printed: that run's time against the others', failed
attempts, run retries. (Measured at 4 merchants: a killed run process is marked failed within
seconds and re-run by the daemon's run retries; a killed Celery worker's task goes to the other
worker and the run succeeds.) The clients pace the sandbox 60x faster than the marketplaces'
documented rates (ILLUMA_MARKETPLACE_RATE_SPEEDUP=60): before, a throttle fault (429) made a
client wait at Amazon's real rate, over 12 minutes in one trial.

Checks (the exit status is 1 if any fails): every merchant's measured partition has exactly one
successful `merchant_daily_job` run, whose materializations are one per asset; no run is left
in flight (STARTED, STARTING, QUEUED...) once the phase ends (a killed run still in flight 300 s
after the kill is no longer waited for, and fails this check); every merchant-day and analytics run
succeeded (without --stress; under stress, failed attempts and run retries are counted and printed
as its cost). Materializations of failed attempts are counted and printed (their writes replace the
partition). Rows per merchant in the core tables are not compared with the sandbox's counts.

Output of the topology goes to `<tmp>/prod/logs/`, the benchmark's own (prod up/down lines,
Dagster warnings) to `<tmp>/output.log`. Throwaway databases, the merchants' logins and the Celery
queue are removed at the end; `--keep` keeps the temp dir and the databases.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import LAUNCH_RUN, PG_ADMIN, PG_LOGIN, _drop_pg  # noqa: E402

JOB = "merchant_daily_job"
# The daily refresh: the schedule's merchant-day runs and the dbt builds the analytics sensor
# launches after them. Other runs the daemon launches meanwhile (a settlement report when a
# settlement closed) are waited for and listed, but stay out of the figures and the checks.
SCOPE = (JOB, "merchant_analytics_job")
SCHEDULE = "merchant_daily_schedule"
BIN = Path(sys.executable).parent
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING", "MANAGED")
# The run's process, as the gRPC server reports starting it, or as the in-process executor reports
# running the steps in it.
PID_MESSAGE = re.compile(r"(?:Started process for run|Executing steps in process) \(pid: (\d+)\)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tick_days(now: datetime) -> tuple[str, str]:
    """(measured day, warm-up day): the schedule's last 06:00 UTC tick asks for the day before it."""
    tick = now.replace(hour=6, minute=0, second=0, microsecond=0)
    if tick > now:
        tick -= timedelta(days=1)
    measured = tick.date() - timedelta(days=1)
    return measured.isoformat(), (measured - timedelta(days=1)).isoformat()


# ------------------------------------------------------------------------------ processes sampled
class Sampler:
    """RSS and CPU of every process of the named process groups, every `interval` seconds."""

    def __init__(self, groups: dict[int, str], interval: float = 0.5) -> None:
        self.groups = groups  # pgid -> kind of its processes
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.tick = os.sysconf("SC_CLK_TCK")
        self.peak_total = 0
        self.peak_by_kind: dict[str, int] = {}
        self.cpu_by_kind: dict[str, float] = {}
        self._cpu_last: dict[int, tuple[str, float]] = {}
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def kind(self, pid: int, pgid: int) -> str:
        kind = self.groups[pgid]
        if kind != "code-server" or pid == pgid:
            return kind
        try:
            cmd = (Path(f"/proc/{pid}") / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return kind
        # The gRPC server itself is `dagster api grpc`; a run it launches is a process it spawns.
        return "code-server" if " api grpc" in cmd else "run"

    def sample(self) -> None:
        totals: dict[str, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                pgid = int(fields[2])
                if pgid not in self.groups or fields[0] == "Z":
                    continue
                rss = int((entry / "statm").read_text().split()[1]) * self.page
            except (OSError, IndexError, ValueError):
                continue
            pid = int(entry.name)
            kind = self._cpu_last[pid][0] if pid in self._cpu_last else self.kind(pid, pgid)
            cpu = (int(fields[11]) + int(fields[12])) / self.tick
            before = self._cpu_last.get(pid, (kind, 0.0))[1]
            self.cpu_by_kind[kind] = self.cpu_by_kind.get(kind, 0.0) + cpu - before
            self._cpu_last[pid] = (kind, cpu)
            totals[kind] = totals.get(kind, 0) + rss
        self.peak_total = max(self.peak_total, sum(totals.values()))
        for kind, rss in totals.items():
            self.peak_by_kind[kind] = max(self.peak_by_kind.get(kind, 0), rss)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def reset(self) -> None:
        """Start the figures afresh (the measured phase), keeping the processes' CPU baselines."""
        self.peak_total, self.peak_by_kind, self.cpu_by_kind = 0, {}, {}

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(5)


# ------------------------------------------------------------------------------ Celery workers
def start_worker(name: str, queue: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                "-y", str(ROOT / "deploy" / "celery.yaml"), "-q", queue, "-n", name,
                "-i", "illuma_pipelines.definitions", "-l", "INFO", "--", "--concurrency=1",
                "--without-gossip", "--without-mingle",
            ],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


def stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def delete_queue(queue: str) -> None:
    from kombu import Connection

    from assets.concurrency import DEFAULT_CELERY_BROKER

    with contextlib.suppress(Exception), Connection(DEFAULT_CELERY_BROKER) as conn:
        conn.default_channel.queue_delete(queue)


# ------------------------------------------------------------------------------ the schedule
def forget_schedule(config) -> None:
    """Remove the state the warm-up's daemon recorded for the schedule (it had no tick), so that
    `prod.running_since` can have the next daemon catch up the last tick."""
    from illuma_pipelines import prod

    state = prod.schedule_state(config, SCHEDULE, "0 6 * * *")
    with prod.open_instance(config) as instance:
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
        if ticks:
            raise RuntimeError(
                f"{SCHEDULE} ticked during the warm-up (06:00 UTC passed?): run the benchmark again away from 06:00 UTC"
            )
        if instance.get_instigator_state(state.instigator_origin_id, state.selector_id) is not None:
            instance.delete_instigator_state(state.instigator_origin_id, state.selector_id)


# ------------------------------------------------------------------------------ runs
def phase_runs(instance, since: datetime) -> list:
    import dagster as dg

    return list(instance.get_run_records(dg.RunsFilter(created_after=since)))


def wait_phase(instance, since: datetime, partitions: set[str], timeout: float, quiet: float = 75.0,
               on_poll=None, given_up=lambda run: False) -> tuple[list, bool]:
    """Poll until every partition has a run, no run of the phase is in flight (but those `given_up`
    says no longer to wait for) and none was created or ended for `quiet` seconds (the analytics
    sensor evaluates every 60 s). (records, in time)."""
    deadline = time.monotonic() + timeout
    records: list = []
    while time.monotonic() < deadline:
        records = phase_runs(instance, since)
        if on_poll is not None:
            on_poll(records)
        seen = {r.dagster_run.tags.get("dagster/partition") for r in records if r.dagster_run.job_name == JOB}
        in_flight = [r for r in records if r.dagster_run.status.value in IN_FLIGHT and not given_up(r.dagster_run)]
        if partitions <= seen and not in_flight:
            last = max(max(r.create_timestamp.timestamp(), r.end_time or 0.0) for r in records)
            if time.time() - last >= quiet:
                return records, True
        time.sleep(3)
    return records, False


def breakdown(instance, record) -> dict:
    """Where one run's time went, from its record and its event log."""
    run = record.dagster_run
    created = record.create_timestamp.timestamp()
    end = record.end_time or time.time()
    first: dict[str, float] = {}
    starts: dict[str, float] = {}
    intervals: list[tuple[float, float]] = []
    materialized: dict[str, int] = {}
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None:
            continue
        # The enum's name: its value for the run events is still PIPELINE_* (RUN_START is "PIPELINE_START").
        kind = event.event_type.name
        first.setdefault(kind, entry.timestamp)
        if kind == "STEP_START":
            starts[entry.step_key] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and entry.step_key in starts:
            intervals.append((starts.pop(entry.step_key), entry.timestamp))
        elif kind == "ASSET_MATERIALIZATION":
            key = event.asset_key.to_user_string()
            materialized[key] = materialized.get(key, 0) + 1
    union, covered_to = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > covered_to:
            union += b - max(a, covered_to)
            covered_to = b
    dequeued = first.get("RUN_DEQUEUED", first.get("RUN_STARTING", created))
    run_start = first.get("RUN_START", dequeued)
    step_first = min((a for a, _ in intervals), default=run_start)
    step_last = max((b for _, b in intervals), default=step_first)
    return {
        "run_id": run.run_id, "job": run.job_name, "partition": run.tags.get("dagster/partition", ""),
        "status": run.status.value, "retry_of": run.tags.get("dagster/parent_run_id", ""),
        "created": created, "end": end, "wall": end - created,
        "queued": dequeued - created, "launch": run_start - dequeued, "pre_step": step_first - run_start,
        "compute": union, "compute_sum": sum(b - a for a, b in intervals), "steps": len(intervals),
        "between_steps": (step_last - step_first) - union, "teardown": end - step_last,
        "materialized": materialized,
    }


def stats(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return f"{statistics.median(ordered):6.1f} {p90:6.1f} {ordered[-1]:6.1f}"


def write_csv(rows: list[dict], path: Path) -> None:
    columns = ["run_id", "job", "partition", "status", "retry_of", "created", "end", "wall", "queued", "launch",
               "pre_step", "compute", "compute_sum", "between_steps", "teardown", "steps"]
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in row.items()})


# ------------------------------------------------------------------------------ stress: one kill
@dataclass
class Killer:
    """Under --stress: once a merchant-day run of the measured phase has a step in flight (and a few
    runs have ended, so the kill lands mid-refresh), SIGKILL one Celery worker or that run's process."""

    mode: str
    workers: dict[str, subprocess.Popen]
    instance: object
    after_runs: int
    # How long a killed run may stay in flight before the wait stops waiting for it (and the check
    # "no run left in flight" fails): longer than run monitoring's poll (60 s) and start timeout.
    grace: float = 300.0
    done: dict = field(default_factory=dict)

    def given_up(self, run) -> bool:
        return bool(self.done) and run.run_id == self.done["run_id"] and time.time() - self.done["at"] > self.grace

    def __call__(self, records: list) -> None:
        if self.done:
            return
        ended = sum(1 for r in records if r.dagster_run.job_name == JOB and r.dagster_run.is_finished)
        if ended < self.after_runs:
            return
        for record in records:
            run = record.dagster_run
            if run.job_name != JOB or run.status.value != "STARTED":
                continue
            events = [e for e in self.instance.all_logs(run.run_id) if e.dagster_event is not None]
            ended_steps = {e.step_key for e in events if e.dagster_event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE")}
            running = [e.step_key for e in events if e.dagster_event.event_type_value == "STEP_START"
                       and e.step_key not in ended_steps]
            if not running:
                continue
            if self.mode == "celery":
                hosts = [e.dagster_event.engine_event_data.metadata.get("Celery worker") for e in events
                         if e.dagster_event.event_type_value == "ENGINE_EVENT" and e.step_key == running[0]]
                hosts = [h.value for h in hosts if h is not None]
                name = next((n for n in self.workers if hosts and hosts[-1].startswith(n + "@")), None)
                if name is None:
                    continue
                os.killpg(self.workers[name].pid, signal.SIGKILL)
                self.done.update(what=f"Celery worker {name}", run_id=run.run_id, step=running[0], at=time.time())
            else:
                pids = [int(m.group(1)) for e in events
                        if (m := PID_MESSAGE.search(f"{e.user_message} {e.dagster_event.message or ''}"))]
                if not pids:
                    continue
                os.kill(pids[-1], signal.SIGKILL)
                self.done.update(what=f"run process {pids[-1]}", run_id=run.run_id, step=running[0], at=time.time())
            return


# ------------------------------------------------------------------------------ main
def graphql(config, query: str, variables: dict) -> dict:
    from illuma_pipelines import prod

    return prod.graphql(config, query, variables, timeout=60)


def launch_day(config, job, merchants: dict[str, tuple[str, ...]], day: str) -> None:
    """One run of `day` per merchant through the webserver's GraphQL API, tagged as the schedule tags them."""
    from assets.partitions import merchant_date_key
    from illuma_pipelines import prod
    from sensors.tags import merchant_run_tags

    for merchant_id, channels in merchants.items():
        tags = {**job.get_tags_for_partition_key(merchant_date_key(merchant_id, day), None),
                **merchant_run_tags(merchant_id, channels)}
        params = {
            "selector": {"repositoryLocationName": prod.LOCATION_NAME, "repositoryName": "__repository__", "jobName": JOB},
            "runConfigData": {}, "mode": "default",
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        result = graphql(config, LAUNCH_RUN, {"params": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launchRun for {merchant_id} {day}: {result}")


def note_others(records: list) -> None:
    """Runs outside the refresh's scope (SCOPE), by job and status."""
    if records:
        counts: dict[str, int] = {}
        for r in records:
            key = f"{r.dagster_run.job_name} {r.dagster_run.status.value}"
            counts[key] = counts.get(key, 0) + 1
        print(f"  note: other runs the daemon launched meanwhile (not in the figures): {counts}", flush=True)


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def main() -> int:  # noqa: C901, PLR0912, PLR0915 - one linear script, as the other benchmarks
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merchants", type=int, default=200)
    parser.add_argument("--mode", choices=["default", "celery"], default="default")
    parser.add_argument("--stress", action="store_true", help="sandbox faults 10%% and one worker/run process killed")
    parser.add_argument("--enforce-quotas", action="store_true", help="the sandbox enforces quotas (sped up 60x)")
    parser.add_argument("--no-warm-up", action="store_true", help="measure the merchants' first runs")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per phase (default 600 + 45 x merchants)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if args.merchants < 1:
        parser.error("--merchants must be at least 1")
    timeout = args.timeout or 600 + 45 * args.merchants

    import psycopg

    from illuma_pipelines import prod
    from illuma_pipelines.demo import DEMO_MERCHANTS

    tmp = Path(tempfile.mkdtemp(prefix="illuma-daily-refresh-"))
    log = tmp / "output.log"
    tag = secrets.token_hex(4)
    queue = f"illuma-bench-{tag}"
    sandbox_args: tuple[str, ...] = ()
    if args.enforce_quotas:
        sandbox_args += ("--enforce-quotas", "--quota-speedup", "60")
    if args.stress:
        sandbox_args += ("--faults", "0.1")
    # The clients pace the sandbox 60x faster than the documented rates (its quota speed-up): the
    # API is not what this measures, and a throttle fault must not stall a run for minutes.
    extra_env = {"ILLUMA_WAREHOUSE_LOGIN_SECRET": secrets.token_hex(32), "ILLUMA_CELERY_QUEUE": queue,
                 "ILLUMA_EXECUTOR": "celery" if args.mode == "celery" else "",
                 "ILLUMA_MARKETPLACE_RATE_SPEEDUP": "60"}
    config = prod.ProdConfig(
        root=tmp / "prod", webserver_port=free_port(), grpc_port=free_port(), sandbox_port=free_port(),
        admin_url=PG_ADMIN, login=PG_LOGIN, dagster_db=f"illuma_bench_dr_{tag}_dagster",
        warehouse_db=f"illuma_bench_dr_{tag}", sandbox_args=sandbox_args, extra_env=extra_env,
    )
    os.environ.update(prod.cli_env(config))  # onboarding in this process: the admin URL too
    channel_sets = [channels for _, channels in DEMO_MERCHANTS.values()]
    merchants = {f"bench_m{i:03d}": channel_sets[i % len(channel_sets)] for i in range(args.merchants)}
    measured_day, warm_day = tick_days(datetime.now(UTC))
    workers: dict[str, subprocess.Popen] = {}
    sampler: Sampler | None = None
    failures: list[str] = []
    print(f"{os.cpu_count()} CPUs; {args.merchants} merchants; mode {args.mode}"
          f"{'; stress' if args.stress else ''}; measured day {measured_day}; temp dir {tmp}", flush=True)
    try:
        with contextlib.redirect_stdout(log.open("a")):
            prod.provision(config)

        from assets.partitions import MERCHANTS, merchant_date_key
        from illuma_pipelines.registry import ChannelConnection, add_merchant
        from illuma_pipelines.warehouse import Warehouse

        started = time.monotonic()
        wh = Warehouse.from_url(config.warehouse_url)
        for merchant_id, channels in merchants.items():
            add_merchant(wh, merchant_id, channels={c: ChannelConnection(c, f"sandbox:{merchant_id}") for c in channels},
                         actor="bench")
        with prod.open_instance(config) as instance:
            instance.add_dynamic_partitions(MERCHANTS, list(merchants))
        print(f"onboarded {len(merchants)} merchants (schemas, logins, partitions) in {time.monotonic() - started:.1f} s",
              flush=True)

        if args.mode == "celery":
            worker_env = prod.process_env(config)
            # `dagster-celery worker start` runs `celery` by name: the venv's bin first on PATH.
            worker_env.update(PYTHONPATH=str(ROOT), PATH=f"{BIN}{os.pathsep}{worker_env.get('PATH', '')}")
            for name in ("w1", "w2"):
                workers[f"{name}-{tag}"] = start_worker(f"{name}-{tag}", queue, worker_env, tmp / f"worker-{name}.log")
            deadline = time.monotonic() + 180
            while not all(" ready." in (tmp / f"worker-{n}.log").read_text() for n in ("w1", "w2")):
                if time.monotonic() > deadline or any(w.poll() is not None for w in workers.values()):
                    raise RuntimeError(f"the Celery workers did not start: see {tmp}/worker-w1.log")
                time.sleep(0.5)

        groups = {w.pid: "celery-worker" for w in workers.values()}

        def watch() -> None:
            for name, proc in prod.recorded(config).items():
                sampler.groups[proc.pid] = name

        sampler = Sampler(groups)
        sampler.start()
        job = None
        if not args.no_warm_up:
            from illuma_pipelines.definitions import defs

            job = defs().resolve_job_def(JOB)
            with contextlib.redirect_stdout(log.open("a")):
                prod.up(config)
            watch()
            since = datetime.now(UTC)
            started = time.monotonic()
            launch_day(config, job, merchants, warm_day)
            with prod.open_instance(config) as instance:
                records, in_time = wait_phase(
                    instance, since, {merchant_date_key(m, warm_day) for m in merchants}, timeout
                )
                warm = [breakdown(instance, r) for r in records if r.dagster_run.job_name in SCOPE]
            others = [r for r in records if r.dagster_run.job_name not in SCOPE]
            bad = [r for r in warm if r["status"] != "SUCCESS"]
            warm_wall = max(r["end"] for r in warm) - min(r["created"] for r in warm)
            first_runs = [r["wall"] - r["queued"] for r in warm if r["job"] == JOB]
            print(f"warm-up day {warm_day} (untimed below): {len(warm)} runs in {warm_wall:.0f} s"
                  f"{'' if in_time else ' (TIMED OUT)'}; merchant-day run once launched, median "
                  f"{statistics.median(first_runs):.1f} s; not succeeded: {len(bad)}", flush=True)
            note_others(others)
            if bad or not in_time:
                failures.append(f"warm-up: {len(bad)} run(s) did not succeed, in time: {in_time}")
            with contextlib.redirect_stdout(log.open("a")):
                prod.down(config)
            forget_schedule(config)

        from sensors.schedules import merchant_daily_schedule

        prod.running_since(config, SCHEDULE, merchant_daily_schedule.cron_schedule, time.time() - 86_400 + 60)
        since = datetime.now(UTC)
        sampler.reset()
        up_started = time.time()
        with contextlib.redirect_stdout(log.open("a")):
            prod.up(config)
        watch()
        print(f"topology up in {time.time() - up_started:.1f} s; the daemon evaluates the tick", flush=True)
        partitions = {merchant_date_key(m, measured_day) for m in merchants}
        with prod.open_instance(config) as instance:
            killer = None
            if args.stress:
                killer = Killer(args.mode, workers, instance, after_runs=max(1, len(merchants) // 4))
            records, in_time = wait_phase(instance, since, partitions, timeout, on_poll=killer,
                                          given_up=killer.given_up if killer else lambda run: False)
            if not in_time:
                failures.append(f"the measured phase did not end within {timeout:.0f} s")
            rows = [breakdown(instance, r) for r in records if r.dagster_run.job_name in SCOPE]
            others = [r for r in records if r.dagster_run.job_name not in SCOPE]
            cpu_by_kind, peak_total, peak_by_kind = dict(sampler.cpu_by_kind), sampler.peak_total, dict(sampler.peak_by_kind)
            left = [r.dagster_run for r in phase_runs(instance, since) if r.dagster_run.status.value in IN_FLIGHT]
        write_csv(rows, tmp / "runs.csv")

        daily = [r for r in rows if r["job"] == JOB]
        first = min(r["created"] for r in rows)
        last = max(r["end"] for r in rows)
        wall = last - first
        ok_daily = [r for r in daily if r["status"] == "SUCCESS"]
        cpus = os.cpu_count() or 1
        print(f"\nmeasured day {measured_day}: {len(rows)} runs ({len(daily)} merchant-day, "
              f"{len(rows) - len(daily)} analytics)")
        note_others(others)
        print(f"wall {wall:.1f} s (first run created -> last run ended); the tick created the merchant-day runs "
              f"over {max(r['created'] for r in daily) - min(r['created'] for r in daily):.1f} s")
        daily_wall = max(r["end"] for r in daily) - first
        print(f"merchant-day runs alone: {daily_wall:.1f} s from the first run created to the last merchant-day run ended")
        print(f"merchant-day runs per minute: {len(ok_daily) / (wall / 60):.2f} "
              f"(all {len(merchants)} merchants -> {len(merchants) / (len(ok_daily) / wall) / 60 if ok_daily else 0:.1f} min)")
        print("per run, seconds            median    p90    max")
        for job_name in sorted({r["job"] for r in rows}):
            subset = [r for r in rows if r["job"] == job_name]
            print(f"  {job_name} ({len(subset)} runs)")
            for key in ("wall", "queued", "launch", "pre_step", "compute", "compute_sum", "between_steps", "teardown"):
                print(f"    {key:<22} {stats([r[key] for r in subset])}")
        compute = sum(r["compute"] for r in rows)
        run_wall = sum(r["wall"] for r in rows)
        unqueued = sum(r["wall"] - r["queued"] for r in rows)
        print(f"orchestration share, run-based: 1 - compute/run wall = {1 - compute / run_wall:.1%} "
              f"(queue wait excluded: {1 - compute / unqueued:.1%})")
        print(f"orchestration share, wall-based: 1 - compute/(wall x {cpus} CPUs) = {1 - compute / (wall * cpus):.1%}")
        print("CPU seconds by process kind: "
              + ", ".join(f"{k} {v:.0f}" for k, v in sorted(cpu_by_kind.items(), key=lambda kv: -kv[1]))
              + f" (of {wall * cpus:.0f} core-seconds of wall)")
        print(f"peak memory (sum of RSS) {mib(peak_total)}; peak per kind: "
              + ", ".join(f"{k} {mib(v)}" for k, v in sorted(peak_by_kind.items(), key=lambda kv: -kv[1])))

        # Checks.
        expected = {k.to_user_string() for k in (job or _job()).asset_layer.executable_asset_keys}
        by_partition: dict[str, list[dict]] = {}
        for r in daily:
            by_partition.setdefault(r["partition"], []).append(r)
        extra, landed = 0, 0
        for pk in sorted(partitions):
            attempts = by_partition.get(pk, [])
            wins = [r for r in attempts if r["status"] == "SUCCESS"]
            if len(wins) != 1:
                failures.append(f"{pk}: {len(wins)} successful runs (of {len(attempts)})")
                continue
            counts = wins[0]["materialized"]
            if not counts or any(v != 1 for v in counts.values()) or not set(counts) <= expected:
                failures.append(f"{pk}: run {wins[0]['run_id']} materializations {counts}")
            else:
                landed += 1
            extra += sum(sum(r["materialized"].values()) for r in attempts if r is not wins[0])
        if left:
            failures.append(f"runs left in flight: {[(r.run_id, r.status.value) for r in left]}")
        not_ok = [r for r in rows if r["status"] != "SUCCESS"]
        retried = [r for r in rows if r["retry_of"]]
        print(f"partitions landed once: {landed} of "
              f"{len(partitions)}; runs not succeeded {len(not_ok)}, retries {len(retried)}, materializations by "
              f"failed attempts {extra}; runs left in flight {len(left)}")
        if args.stress:
            kill = killer.done if killer else {}
            if not kill:
                failures.append("stress: nothing was killed (no run with a step in flight was seen)")
            else:
                hit = next((r for r in rows if r["run_id"] == kill["run_id"]), None)
                rest = [r["wall"] - r["queued"] for r in ok_daily if r is not hit]
                print(f"stress: killed {kill['what']} during step {kill['step']} of run {kill['run_id'][:8]}: "
                      f"that run {hit['status'] if hit else '?'}, {hit['wall'] - hit['queued'] if hit else 0:.1f} s once "
                      f"launched (the other merchant-day runs: median {statistics.median(rest) if rest else 0:.1f} s)")
            print(f"stress cost: {len(not_ok)} failed attempt(s), {len(retried)} retry run(s); see runs.csv for each")
        elif not_ok:
            failures.append(f"runs not succeeded: {[(r['run_id'], r['job'], r['status']) for r in not_ok]}")
        if len(ok_daily):
            per_run = statistics.median(r["wall"] - r["queued"] for r in ok_daily)
            cpu = sum(cpu_by_kind.values())
            print(f"estimate at 200 merchants: {200 / (len(ok_daily) / wall) / 60:.1f} min at this run rate (a small "
                  f"run is latency-bound) "
                  f"(median merchant-day run {per_run:.1f} s once launched); CPU-bound: {cpu:.0f} CPU-s for "
                  f"{len(merchants)} merchants -> {cpu / len(merchants) * 200 / cpus / 60:.1f} min on {cpus} CPUs")
        print(f"per-run CSV: {tmp / 'runs.csv'}; logs: {config.log_dir}, {log}")
    finally:
        if sampler is not None:
            sampler.stop()
        with contextlib.redirect_stdout(log.open("a")):
            prod.down(config, quiet=True)
        for proc in workers.values():
            stop_group(proc)
        if args.mode == "celery":
            delete_queue(queue)
        if args.keep:
            print(f"kept {tmp} and the databases {config.warehouse_db}, {config.dagster_db}")
        else:
            _drop_pg(config.warehouse_db, "bench_m000")
            with psycopg.connect(PG_ADMIN, autocommit=True) as con:
                con.execute(f"DROP DATABASE IF EXISTS {config.dagster_db} WITH (FORCE)")
            shutil.rmtree(tmp, ignore_errors=True)
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    return 1 if failures else 0


def _job():
    from illuma_pipelines.definitions import defs

    return defs().resolve_job_def(JOB)


if __name__ == "__main__":
    sys.exit(main())
