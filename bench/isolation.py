"""Benchmark: what the rebuilt tenant isolation buys and costs (ADR 0001, 0006).

    .venv/bin/python bench/isolation.py [--skip-duckdb] [--skip-postgres] [--samples 300] [--keep]

1. DuckDB: three merchants' daily runs, one after the other vs all three at once. A throwaway
   var dir (ILLUMA_VAR_DIR: DuckDB warehouse, keys) and Dagster instance (DAGSTER_HOME, SQLite
   storage, the local instance's `warehouse` pool slots: 3, as many as its runs at once),
   the sandbox served by `illuma sandbox serve` in a process of its own on a free port
   (ILLUMA_SANDBOX_URL), and `illuma_pipelines.demo.DEMO_MERCHANTS` onboarded with sandbox
   credentials as `make demo` does. Each run is `merchant_daily_job` for one merchant-day, executed
   with `dg.execute_job` on `dg.reconstructable(merchant_daily_job)`, a module-level function of
   this file returning the job from `illuma_pipelines.definitions.defs()`: so each run uses the code
   location's own executor (assets/concurrency.py EXECUTOR: multiprocess, at most one
   `illuma/warehouse=merchant` step at a time per run) and takes the instance's `warehouse` pool
   slots, as runs launched by the daemon would. The parallel runs each have an orchestrating
   process of their own (multiprocessing spawn), started and loaded before the clock starts; the
   sequential ones are orchestrated by this process, also loaded first: the figures hold run time.
   Days are the last complete UTC days: the oldest is a warm-up (all three merchants at once,
   untimed: tables created, dbt and the OS caches warm), then one day sequential (the three runs
   one after the other) and the next day in parallel (the three runs started together, their
   steps sharing the three pool slots). Every run must succeed. Prints the wall seconds of each mode
   and the speed-up sequential / parallel (goal >= 1.6x), and where the time went: per run, from
   its event log, waiting (no step of it holding a slot: pool waits, the executor's polling, a
   finished step's process exiting), step processes' start-up (STEP_WORKER_STARTING to
   STEP_START: process start, loading the code location) and the steps' own work; per mode, how
   busy the three pool slots and the machine's CPUs (/proc/stat) were, and what the DuckDB files
   cost the step processes: every unit of work on the platform file and on the merchants' files,
   with the time spent opening them (waiting for another process's lock included) and holding
   them, noted by `instrument_duckdb_opens`, which `merchant_daily_job` installs in each process
   that rebuilds the job (timing only). How busy the CPUs were in the 3 s before the start is
   printed first: the benchmark is only meaningful on an otherwise idle machine. About 10 minutes on 2 cores (9 runs of 20 steps).

2. PostgreSQL: the cost of per-merchant logins. A throwaway database (made with the superuser
   ILLUMA_BENCH_PG_URL, provisioned with `PostgresWarehouse(url, admin_url).provision()`, the
   pipeline logging in as `illuma_app`, one merchant onboarded with `add_merchant`; dropped at the
   end WITH (FORCE), and the merchant's login role with it). Measures, interleaved, the median of
   (a) a merchant scope, `wh.merchant_scope(m)` with `SELECT 1` (the pooled per-merchant login)
   and (b) the old shared-login unit: a fresh psycopg connection as `illuma_app`, a transaction with
   `SET LOCAL search_path` and `SELECT 1`, commit, close (`SET LOCAL ROLE` to the merchant is no
   longer possible: `illuma_app` is not a member of the merchant's login). Then (c) runs the
   merchant's `merchant_daily_job` for two days with `execute_in_process` on the PostgreSQL
   warehouse (the first creates the tables; the second is measured), counting the merchant scopes
   it opens by wrapping `PostgresWarehouse.merchant_scope` in this process (and the new
   merchant-login connections, by wrapping `PostgresWarehouse._raw`), and prints
   overhead = scopes x (a - b) / run wall time (goal <= 5%; negative: the new way is cheaper).
   In-process execution has no step-process start-up, so its wall time is the smaller denominator;
   its connection pool lives through the whole run, whereas under the multiprocess executor each
   step process fills its own (its first scope opens a connection, as every old unit did).

Output of the runs (Dagster's warnings, dbt, step processes) goes to `<tmp>/run-output.log`; the
console shows the figures only. `--keep` keeps the temp dir (var dir, instance, logs) for a look.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get("ILLUMA_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_LOGIN = os.environ.get("ILLUMA_BENCH_PG_LOGIN", "illuma_app")
JOB_NAME = "merchant_daily_job"
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
INSTANCE_YAML = """\
# Throwaway instance of bench/isolation.py: as many `warehouse` pool slots as the local instance
# (illuma_pipelines/demo.py), where they equal the runs at once (ADR 0006: a run waiting inside for
# a slot makes Dagster's executor busy-wait; with 2 slots the parallel runs here took 0.88x).
concurrency:
  pools:
    default_limit: 3
telemetry:
  enabled: false
"""


def merchant_daily_job():
    """The code location's job, with its resources and executor: what `reconstructable` points
    at, so every step process rebuilds it from `defs()` (the environment comes with os.environ)."""
    from illuma_pipelines.definitions import defs

    instrument_duckdb_opens()
    return defs().resolve_job_def(JOB_NAME)


# ------------------------------------------------------------------- DuckDB opens, per process
OPENS_LOG_VAR = "ILLUMA_BENCH_DUCKDB_OPENS"


def instrument_duckdb_opens() -> None:
    """In this process, note every DuckDB unit of work (`DuckDBWarehouse._open`: file, seconds
    spent opening it, waiting for another process's lock included, and seconds it was held open)
    and every bare open outside one (`_refuse_shared_layout`), one line each in the file named by
    ILLUMA_BENCH_DUCKDB_OPENS. Only timing is added; what the product does is unchanged."""
    target = os.environ.get(OPENS_LOG_VAR)
    from illuma_pipelines import warehouse

    if not target or getattr(warehouse._duckdb_connect, "_bench_timed", False):
        return
    connect, open_unit = warehouse._duckdb_connect, warehouse.DuckDBWarehouse._open
    state = threading.local()

    def note(name: str, waited: float, held: float) -> None:
        with open(target, "a") as out:
            out.write(f"{time.time():.3f} {name} {waited:.4f} {held:.4f}\n")

    def timed_connect(path, config, timeout):
        started = time.perf_counter()
        try:
            return connect(path, config, timeout)
        finally:
            waited = time.perf_counter() - started
            if getattr(state, "unit", False):
                state.waited = waited
            else:
                note(Path(path).name, waited, waited)  # opened for one catalog read, then closed

    @contextlib.contextmanager
    def timed_open(self, path, config):
        started, state.unit, state.waited = time.perf_counter(), True, 0.0
        waited = None
        try:
            with open_unit(self, path, config) as conn:
                waited, state.unit = state.waited, False  # before any unit nested in this one
                yield conn
        finally:
            state.unit = False
            note(Path(path).name, state.waited if waited is None else waited, time.perf_counter() - started)

    timed_connect._bench_timed = True
    warehouse._duckdb_connect, warehouse.DuckDBWarehouse._open = timed_connect, timed_open


def duckdb_opens(log: Path, since: float, until: float) -> dict[str, list[float]]:
    """{"platform" | "merchant": [units, seconds waiting to open, seconds held]} in [since, until]."""
    out = {"platform": [0, 0.0, 0.0], "merchant": [0, 0.0, 0.0]}
    if not log.exists():
        return out
    for line in log.read_text().splitlines():
        at, name, waited, held = line.split()
        if since <= float(at) <= until:
            row = out["merchant" if name.startswith("m_") else "platform"]
            row[0] += 1
            row[1] += float(waited)
            row[2] += float(held)
    return out


class CpuBusy:
    """The machine's CPU time busy (not idle or iowait) between start() and stop(), from /proc/stat."""

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    def start(self) -> CpuBusy:
        self._from = self._read()
        return self

    def stop(self) -> float:
        busy, total = self._read()
        return (busy - self._from[0]) / max(1, total - self._from[1])


# --------------------------------------------------------------------------------- environment
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def sandbox_process(log: Path) -> Iterator[str]:
    """`illuma sandbox serve` on a free port, in its own process (not this one's GIL)."""
    import requests

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "illuma_pipelines.cli", "sandbox", "serve", "--port", str(port)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the sandbox exited with {proc.returncode}: see {log}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox did not answer at {url} within 60 s: see {log}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """fds 1 and 2 (this process's and its children's output) to `log` meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("ab") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def complete_days(n: int) -> list[str]:
    """The n complete UTC days before today, oldest first."""
    today = datetime.now(UTC).date()
    return [(today - timedelta(days=k)).isoformat() for k in range(n, 0, -1)]


# ------------------------------------------------------------------------------------ the runs
@dataclass
class RunTiming:
    merchant_id: str
    day: str
    run_id: str
    status: str
    started: float  # time.time()
    ended: float
    held: float = 0.0  # steps holding a pool slot: step process launched .. step ended, summed
    startup: float = 0.0  # of which step process launched .. STEP_START (spawn, code location load)
    compute: float = 0.0  # of which STEP_START .. STEP_SUCCESS/FAILURE
    steps: int = 0

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def run_tags(job, merchant_id: str, day: str) -> dict[str, str]:
    from assets.partitions import merchant_date_key
    from sensors.tags import MERCHANT_TAG

    return {**job.get_tags_for_partition_key(merchant_date_key(merchant_id, day), None), MERCHANT_TAG: merchant_id}


def execute_run(instance, recon_job, job, merchant_id: str, day: str) -> RunTiming:
    import dagster as dg

    started = time.time()
    result = dg.execute_job(
        recon_job, instance=instance, run_config=RUN_CONFIG, tags=run_tags(job, merchant_id, day), raise_on_error=False
    )
    ended = time.time()
    run = instance.get_run_by_id(result.run_id)  # not `with result`: that rebuilds the resources
    return RunTiming(merchant_id, day, result.run_id, run.status.value if run else "MISSING", started, ended)


def _run_child(merchant_id: str, day: str, go, results) -> None:
    """A spawned process: load everything, say ready, wait for `go`, run one merchant-day."""
    try:
        import dagster as dg

        instance = dg.DagsterInstance.get()
        recon = dg.reconstructable(merchant_daily_job)
        job = recon.get_definition()
        results.put(("ready", merchant_id))
        go.wait()
        results.put(("done", execute_run(instance, recon, job, merchant_id, day)))
    except BaseException as exc:  # the parent must hear of it, not wait forever
        results.put(("error", f"{merchant_id} {day}: {type(exc).__name__}: {exc}"))
        raise


def run_parallel(merchants: list[str], day: str) -> tuple[float, list[RunTiming]]:
    """The merchants' runs of `day` started together, each from its own loaded process."""
    ctx = multiprocessing.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_run_child, args=(m, day, go, results), daemon=False) for m in merchants]
    for proc in procs:
        proc.start()
    try:
        for _ in merchants:
            kind, value = results.get(timeout=600)
            if kind == "error":
                raise RuntimeError(value)
        started = time.perf_counter()
        go.set()
        timings = []
        for _ in merchants:
            kind, value = results.get(timeout=3600)
            if kind == "error":
                raise RuntimeError(value)
            timings.append(value)
        wall = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.terminate()
    return wall, sorted(timings, key=lambda t: t.started)


def run_sequential(instance, merchants: list[str], day: str) -> tuple[float, list[RunTiming]]:
    import dagster as dg

    recon = dg.reconstructable(merchant_daily_job)
    job = recon.get_definition()
    started = time.perf_counter()
    timings = [execute_run(instance, recon, job, m, day) for m in merchants]
    return time.perf_counter() - started, timings


def add_step_times(instance, timing: RunTiming) -> None:
    """Where a run's time went, from its event log."""
    from dagster import DagsterEventType

    launched: dict[str, float] = {}
    started: dict[str, float] = {}
    for entry in instance.all_logs(timing.run_id):
        event, key = entry.dagster_event, entry.step_key
        if event is None or key is None:
            continue
        kind = event.event_type
        if kind == DagsterEventType.STEP_WORKER_STARTING:
            launched[key] = entry.timestamp
        elif kind == DagsterEventType.STEP_START:
            started[key] = entry.timestamp
        elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            timing.steps += 1
            if key in started:
                timing.compute += entry.timestamp - started[key]
            if key in launched:
                timing.held += entry.timestamp - launched[key]
                timing.startup += started.get(key, entry.timestamp) - launched[key]


def check_runs(instance, timings: list[RunTiming], log: Path) -> None:
    from dagster import DagsterEventType

    failed = [t for t in timings if t.status != "SUCCESS"]
    for t in failed:
        print(f"FAILED: {t.day} {t.merchant_id} run {t.run_id} ({t.status})", file=sys.stderr)
        for entry in instance.all_logs(t.run_id, of_type=DagsterEventType.STEP_FAILURE):
            error = entry.dagster_event.step_failure_data.error
            while error is not None and error.cause is not None:  # the root cause says what went wrong
                error = error.cause
            lines = (error.message.strip() if error else "?").splitlines() or ["?"]
            print(f"  {entry.step_key}: {lines[-1][:300]}", file=sys.stderr)
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed; step output in {log}")


def duckdb_figure(log: Path, merchants: dict[str, tuple[str, tuple[str, ...]]]) -> None:
    import dagster as dg

    from assets.partitions import MERCHANTS
    from illuma_pipelines.registry import ChannelConnection, add_merchant
    from illuma_pipelines.warehouse import Warehouse

    wh = Warehouse.from_url(os.environ["ILLUMA_WAREHOUSE_URL"])
    wh.ensure_platform()
    for merchant_id, (name, channels) in merchants.items():
        add_merchant(
            wh, merchant_id, display_name=name,
            channels={c: ChannelConnection(c, f"sandbox:{merchant_id}") for c in channels}, actor="bench",
        )
    instance = dg.DagsterInstance.get()
    ids = list(merchants)
    instance.add_dynamic_partitions(MERCHANTS, ids)
    warm_day, seq_day, par_day = complete_days(3)

    with output_to(log):
        warm_wall, warm = run_parallel(ids, warm_day)
    check_runs(instance, warm, log)
    print(f"warm-up  {warm_day}: {len(ids)} runs at once, {warm_wall:5.1f} s (untimed)", flush=True)
    cpu = CpuBusy().start()
    with output_to(log):
        seq_wall, seq = run_sequential(instance, ids, seq_day)
    seq_cpu = cpu.stop()
    check_runs(instance, seq, log)
    cpu = CpuBusy().start()
    with output_to(log):
        par_wall, par = run_parallel(ids, par_day)
    par_cpu = cpu.stop()
    check_runs(instance, par, log)

    speedup = seq_wall / par_wall
    verdict = "met" if speedup >= 1.6 else "NOT met"
    print(f"sequential {seq_day}: {len(ids)} runs one after the other {seq_wall:6.1f} s")
    print(f"parallel   {par_day}: {len(ids)} runs at once (3 pool slots) {par_wall:6.1f} s")
    print(f"speed-up sequential/parallel: {speedup:.2f}x (goal >= 1.6x: {verdict})")
    origin = min(t.started for t in par)
    print("per run: wall = waiting (for a pool slot, the executor's polling) + holding a slot: step processes'")
    print("         start-up (process start, code location load) + the steps' own work")
    for mode, timings in (("seq", seq), ("par", par)):
        for t in timings:
            add_step_times(instance, t)
            at = f", started +{t.started - origin:3.1f} s" if mode == "par" else ""
            print(
                f"  {mode} {t.merchant_id:<18} {t.seconds:6.1f} s = {t.seconds - t.held:5.1f} waiting + "
                f"{t.startup:5.1f} start-up + {t.compute:5.1f} work ({t.steps} steps{at})"
            )
    opens_log = Path(os.environ[OPENS_LOG_VAR])
    for mode, wall, timings, busy in (("sequential", seq_wall, seq, seq_cpu), ("parallel", par_wall, par, par_cpu)):
        held = sum(t.held for t in timings)
        opens = duckdb_opens(opens_log, min(t.started for t in timings), max(t.ended for t in timings))
        print(f"{mode}: the 3 pool slots held {held / (3 * wall):.0%} of the wall time; machine CPU busy {busy:.0%}")
        print("  DuckDB units of work in the steps: " + "; ".join(
            f"{kind} {'file' if kind == 'platform' else 'files'} {n}, {w:.1f} s opening (lock waits included), "
            f"{h:.1f} s held"
            for kind, (n, w, h) in opens.items()
        ))


# ------------------------------------------------------------------------------------ PostgreSQL
@contextlib.contextmanager
def throwaway_pg_database() -> Iterator[tuple[str, str]]:
    import psycopg

    dbname = f"illuma_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {dbname}")
    admin = urlsplit(PG_ADMIN)
    server = f"{admin.hostname or '127.0.0.1'}:{admin.port or 5432}"
    roles: list[str] = []
    try:
        yield urlunsplit(admin._replace(netloc=f"{PG_LOGIN}@{server}", path=f"/{dbname}")), dbname
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as con:
            # Merchant logins are cluster-wide: read them before the database goes.
            with contextlib.suppress(psycopg.Error):
                with psycopg.connect(urlunsplit(admin._replace(path=f"/{dbname}")), autocommit=True) as db:
                    roles = [r[0] for r in db.execute("SELECT role_name FROM platform.merchant_logins").fetchall()]
            con.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            for role in roles:
                con.execute(f'DROP ROLE IF EXISTS "{role}"')


def postgres_figure(log: Path, samples: int) -> None:
    import dagster as dg
    import psycopg

    from assets.partitions import MERCHANTS, merchant_date_key
    from illuma_pipelines.definitions import defs
    from illuma_pipelines.merchant_ids import merchant_schema
    from illuma_pipelines.registry import ChannelConnection, add_merchant
    from illuma_pipelines.warehouse import PostgresWarehouse, _plain_dsn
    from sensors.tags import MERCHANT_TAG

    merchant_id = f"bench_iso_{secrets.token_hex(3)}"
    schema = merchant_schema(merchant_id)
    with throwaway_pg_database() as (url, _dbname):
        wh = PostgresWarehouse(url, admin_url=PG_ADMIN)
        wh.provision()
        add_merchant(
            wh, merchant_id, channels={c: ChannelConnection(c, f"sandbox:{merchant_id}") for c in ("amazon", "ebay", "walmart")},
            actor="bench",
        )
        dsn = _plain_dsn(url)

        def pooled() -> float:
            started = time.perf_counter()
            with wh.merchant_scope(merchant_id) as conn:
                conn.fetchone("SELECT 1")
            return time.perf_counter() - started

        def fresh_shared_login() -> float:
            started = time.perf_counter()
            con = psycopg.connect(dsn, connect_timeout=10, autocommit=True)
            try:
                with con.transaction():
                    con.execute(f"SET LOCAL search_path TO {schema}")
                    con.execute("SELECT 1").fetchone()
            finally:
                con.close()
            return time.perf_counter() - started

        for _ in range(10):  # connections made, caches warm
            pooled(), fresh_shared_login()
        a_times, b_times = [], []
        for _ in range(samples):  # interleaved: a busy moment weighs on both alike
            a_times.append(pooled())
            b_times.append(fresh_shared_login())
        a, b = statistics.median(a_times), statistics.median(b_times)

        # (c): a real merchant-day run on this warehouse, in this process, scopes counted.
        counted = {"scopes": 0, "logins": 0}
        original, original_raw = PostgresWarehouse.merchant_scope, PostgresWarehouse._raw

        def counting_scope(self, mid):
            counted["scopes"] += 1
            return original(self, mid)

        def counting_raw(self, dsn, shown, **kwargs):
            counted["logins"] += "(merchant login)" in shown  # a new merchant-login connection
            return original_raw(self, dsn, shown, **kwargs)

        instance = dg.DagsterInstance.get()
        instance.add_dynamic_partitions(MERCHANTS, [merchant_id])
        previous_url = os.environ.get("ILLUMA_WAREHOUSE_URL")
        os.environ["ILLUMA_WAREHOUSE_URL"] = url
        PostgresWarehouse.merchant_scope, PostgresWarehouse._raw = counting_scope, counting_raw
        try:
            job = defs().resolve_job_def(JOB_NAME)
            runs = []
            for day in complete_days(2):
                counted.update(scopes=0, logins=0)
                started = time.perf_counter()
                with output_to(log):
                    result = job.execute_in_process(
                        instance=instance, partition_key=merchant_date_key(merchant_id, day),
                        tags={MERCHANT_TAG: merchant_id}, run_config=RUN_CONFIG, raise_on_error=False,
                    )
                seconds = time.perf_counter() - started
                timing = RunTiming(merchant_id, day, result.run_id, result.dagster_run.status.value, 0, seconds)
                check_runs(instance, [timing], log)
                runs.append((day, counted["scopes"], counted["logins"], seconds))
        finally:
            PostgresWarehouse.merchant_scope, PostgresWarehouse._raw = original, original_raw
            if previous_url is None:
                os.environ.pop("ILLUMA_WAREHOUSE_URL", None)
            else:
                os.environ["ILLUMA_WAREHOUSE_URL"] = previous_url

    day, scopes, logins, seconds = runs[-1]
    overhead = scopes * (a - b) / seconds
    verdict = "met" if overhead <= 0.05 else "NOT met"
    print(f"(a) merchant scope, pooled per-merchant login, SELECT 1: {a * 1e3:6.2f} ms median of {samples}")
    print(f"(b) old unit: fresh connection as {PG_LOGIN}, SET LOCAL search_path, SELECT 1: {b * 1e3:6.2f} ms median")
    print(
        f"(c) merchant-day run {day} (in process): {scopes} merchant scopes, {logins} new merchant-login "
        f"connection(s), {seconds:.1f} s (first day {runs[0][0]}: {runs[0][1]} scopes, {runs[0][2]} new, {runs[0][3]:.1f} s)"
    )
    print(f"overhead = scopes x (a - b) / run = {overhead:+.2%} (goal <= 5%: {verdict})")


# ------------------------------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-duckdb", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--samples", type=int, default=300, help="PostgreSQL scope timings per kind")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (var dir, instance, logs)")
    args = parser.parse_args()

    from illuma_pipelines.demo import DEMO_MERCHANTS

    tmp = Path(tempfile.mkdtemp(prefix="illuma-isolation-bench-"))
    var = tmp / "var"
    home = tmp / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    log = tmp / "run-output.log"
    # Everything this process and its children read to find their state: all under tmp.
    os.environ.update(
        ILLUMA_ENV="local",
        ILLUMA_VAR_DIR=str(var),
        ILLUMA_DATA_DIR=str(var / "data"),
        ILLUMA_WAREHOUSE_URL=f"duckdb:///{var / 'data' / 'warehouse.duckdb'}",
        DAGSTER_HOME=str(home),
        **{OPENS_LOG_VAR: str(tmp / "duckdb-opens.log")},
    )
    os.environ.pop("ILLUMA_WAREHOUSE_ADMIN_URL", None)
    try:
        with sandbox_process(tmp / "sandbox.log") as sandbox_url:
            os.environ["ILLUMA_SANDBOX_URL"] = sandbox_url
            cpu = CpuBusy().start()
            time.sleep(3)
            idle_busy = cpu.stop()
            warning = "" if idle_busy < 0.2 else ": the machine is busy with other work, the figures will be off"
            print(
                f"{os.cpu_count()} CPUs, {idle_busy:.0%} busy before the start{warning}; throwaway state in {tmp}",
                flush=True,
            )
            if not args.skip_duckdb:
                duckdb_figure(log, DEMO_MERCHANTS)
            if not args.skip_postgres:
                postgres_figure(log, args.samples)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
