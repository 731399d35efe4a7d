"""Distributed execution: `merchant_daily_job`'s steps on two Celery workers (ADR 0012).

Real parts only: RabbitMQ (broker) and Redis (results) on this machine, a Dagster instance on
PostgreSQL storage, the PostgreSQL warehouse (the pipeline's non-superuser login), the sandbox in
a process of its own, and two `dagster-celery worker start` processes started from
deploy/celery.yaml, each in a process group of its own and listening on a queue named for this
test run only, so no message left by another run reaches them. The runs are orchestrated by this
process (`dg.execute_job` with the code location's own job, ILLUMA_EXECUTOR=celery), as a run
worker launched by the daemon would orchestrate them.

With CI set, RabbitMQ, Redis or PostgreSQL down fails the tests; elsewhere they skip loudly.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.conftest import PG_PIPELINE_LOGIN, admin_dsn, pipeline_url, throwaway_database
from tests.processes import free_port, port_open, service_unavailable, stop_process_group

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JOB_NAME = "merchant_daily_job"
CHANNELS = ("amazon", "ebay")
# The partition days, in days before today. The sandbox runs on the real clock: an order of a
# recent day that ships or is delivered between a run and its re-run leaves the day's window, and
# the re-run lands one row fewer. These days end longer ago than any order can still change, so a
# re-run reads what the first run read; and they start within the 90 days Amazon lists
# settlement reports for.
PARTITION_DAYS_AGO = (71, 70)
INSTANCE_YAML = """\
storage:
  postgres:
    postgres_url:
      env: DAGSTER_PG_URL
concurrency:
  pools:
    default_limit: 4
telemetry:
  enabled: false
"""

pytestmark = [
    pytest.mark.timeout(600),
    # dagster-celery registers its task again for every step it submits; Celery warns each time.
    pytest.mark.filterwarnings("ignore:Task name 'execute_plan' is already registered"),
]


@pytest.fixture(scope="module")
def celery_services() -> None:
    down = [f"{name} at 127.0.0.1:{port}" for name, port in (("RabbitMQ", 5672), ("Redis", 6379))
            if not port_open(port)]
    if down:
        service_unavailable("Celery tests", f"{' and '.join(down)} unreachable: the Celery tests need both")


def _wait_for(predicate, what: str, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise AssertionError(f"{what} not within {timeout:.0f} s\n{tail}")
        time.sleep(0.2)


@dataclass
class Stack:
    env: dict[str, str]
    queue: str
    instance: object
    merchants: list[str]
    days: list[str]
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def worker_of(self, hostname: str) -> str:
        return next(name for name in self.workers if hostname.startswith(name + "@"))


def _start_worker(stack: Stack, name: str, tmp: Path) -> None:
    log = tmp / f"{name}.log"
    with log.open("ab") as out:
        stack.workers[name] = subprocess.Popen(
            [
                str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                "-y", str(ROOT / "deploy" / "celery.yaml"), "-q", stack.queue, "-n", name,
                "-i", "illuma_pipelines.definitions", "-l", "INFO", "--", "--concurrency=1",
                "--without-gossip", "--without-mingle",
            ],
            cwd=ROOT, env=stack.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    stack.logs[name] = log


def _delete_queue(queue: str) -> None:
    from kombu import Connection

    with contextlib.suppress(Exception), Connection("pyamqp://guest:guest@127.0.0.1:5672//") as conn:
        conn.default_channel.queue_delete(queue)


@pytest.fixture
def dagster_pg_url(pg_url) -> Iterator[str]:
    with throwaway_database("illuma_dagster", owner=PG_PIPELINE_LOGIN) as dbname:
        yield pipeline_url(dbname).replace("postgresql://", "postgresql+psycopg2://", 1)


@pytest.fixture(scope="module")
def queue(celery_services) -> Iterator[str]:
    """This module's queue. One for its tests: the code location is loaded once per process (as a
    code server does), so the executor keeps the queue it read at the first load."""
    name = f"illuma-test-{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        _delete_queue(name)


@pytest.fixture
def stack(queue, pg_url, dagster_pg_url, merchant_id, tmp_path, monkeypatch) -> Iterator[Stack]:
    import dagster as dg

    from assets.partitions import MERCHANTS
    from illuma_pipelines.registry import ChannelConnection, add_merchant
    from illuma_pipelines.warehouse import Warehouse

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    port = free_port()
    values = {
        "ILLUMA_ENV": "local",
        "ILLUMA_EXECUTOR": "celery",
        "ILLUMA_CELERY_QUEUE": queue,
        "ILLUMA_WAREHOUSE_URL": pg_url,
        "ILLUMA_WAREHOUSE_LOGIN_SECRET": "celery-test-" + secrets.token_hex(8),
        "ILLUMA_VAR_DIR": str(tmp_path / "var"),
        "ILLUMA_DATA_DIR": str(tmp_path / "var" / "data"),
        "ILLUMA_SANDBOX_URL": f"http://127.0.0.1:{port}",
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": dagster_pg_url,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    for key in ("ILLUMA_CELERY_BROKER", "ILLUMA_CELERY_BACKEND"):
        monkeypatch.delenv(key, raising=False)
    env = dict(os.environ)
    env.pop("ILLUMA_WAREHOUSE_ADMIN_URL", None)  # workers run the pipeline, never provisioning

    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=k)).isoformat() for k in PARTITION_DAYS_AGO]
    merchants = [merchant_id("celery_a"), merchant_id("celery_b")]
    wh = Warehouse.from_url(pg_url)
    for mid in merchants:
        add_merchant(wh, mid, channels={c: ChannelConnection(c, f"sandbox:{mid}") for c in CHANNELS}, actor="test")

    procs: list[subprocess.Popen] = []
    sandbox_log = tmp_path / "sandbox.log"
    with sandbox_log.open("ab") as out:
        sandbox = subprocess.Popen(
            [sys.executable, "-m", "illuma_pipelines.cli", "sandbox", "serve", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    procs.append(sandbox)
    try:
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions(MERCHANTS, merchants)
            stack = Stack(env=env, queue=queue, instance=instance, merchants=merchants, days=days)
            for name in (f"w1-{queue}", f"w2-{queue}"):
                _start_worker(stack, name, tmp_path)
                procs.append(stack.workers[name])
            _wait_for(lambda: port_open(port), "the sandbox answering", 60, sandbox_log)
            for name, log in stack.logs.items():
                _wait_for(lambda log=log: " ready." in log.read_text(), f"worker {name} ready", 300, log)
            yield stack
    finally:
        for proc in procs:
            stop_process_group(proc, grace=15)


def _job():
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module("illuma_pipelines.definitions", "defs", working_directory=str(ROOT))
    return repo.get_reconstructable_job(JOB_NAME)


def _run(stack: Stack, merchant: str, day: str):
    """One merchant-day of merchant_daily_job, its steps on the workers; the run's record."""
    import dagster as dg

    from assets.partitions import merchant_date_key
    from sensors.tags import MERCHANT_TAG

    recon = _job()
    job = recon.get_definition()
    assert job.executor_def.name == "illuma_celery"
    tags = {**job.get_tags_for_partition_key(merchant_date_key(merchant, day), None), MERCHANT_TAG: merchant}
    result = dg.execute_job(recon, instance=stack.instance, tags=tags, raise_on_error=False)
    return stack.instance.get_run_by_id(result.run_id)


def _events(instance, run_id: str):
    return [e for e in instance.all_logs(run_id) if e.dagster_event is not None]


def _worker_of_steps(instance, run_id: str) -> dict[str, list[str]]:
    """step key -> the Celery worker hostnames that executed it, in order (each execution is in the
    log twice: reported by the worker, and again among the events its task returned)."""
    out: dict[str, list[str]] = {}
    for entry in _events(instance, run_id):
        event = entry.dagster_event
        if event.event_type_value == "ENGINE_EVENT":
            host = event.engine_event_data.metadata.get("Celery worker")
            if host is not None:
                out.setdefault(entry.step_key, []).append(host.value)
    return out


def _materializations(instance, run_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in _events(instance, run_id):
        if entry.dagster_event.event_type_value == "ASSET_MATERIALIZATION":
            key = entry.dagster_event.asset_key.to_user_string()
            counts[key] = counts.get(key, 0) + 1
    return counts


def _table_counts(pg_url: str, merchant: str) -> dict[str, int]:
    """Rows of every table in the merchant's schema (read as the admin: a check, not the pipeline)."""
    import psycopg
    from psycopg import sql

    schema = f"m_{merchant}"
    with psycopg.connect(admin_dsn(pg_url)) as con:
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            [schema],
        )]
        return {
            t: con.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(t))).fetchone()[0]
            for t in sorted(tables)
        }


def _no_run_started(instance) -> None:
    import dagster as dg

    stuck = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    assert not stuck, [r.run_id for r in stuck]


def test_deploy_celery_yaml_agrees_with_the_executor(monkeypatch):
    """The workers' config (deploy/celery.yaml) is the code location's executor config."""
    from assets.concurrency import (
        CELERY_BACKEND_VAR,
        CELERY_BROKER_VAR,
        CELERY_QUEUE_VAR,
        celery_config,
    )

    for key in (CELERY_BROKER_VAR, CELERY_BACKEND_VAR, CELERY_QUEUE_VAR):
        monkeypatch.delenv(key, raising=False)
    worker = yaml.safe_load((ROOT / "deploy" / "celery.yaml").read_text())["execution"]["config"]
    assert worker == celery_config()


def test_partition_days_have_settled_and_are_still_listed():
    """The partition days' windows (from 2 days before the day, Amazon finances, to its end) end
    longer ago than any sandbox order still changes, and start within Amazon's report listing."""
    from illuma_pipelines.sandbox import amazon, ebay
    from resources.amazon import REPORT_RETENTION

    lifetime = max(amazon.MAX_ORDER_LIFETIME, ebay.MAX_ORDER_LIFETIME)
    assert timedelta(days=min(PARTITION_DAYS_AGO) - 1) > lifetime
    assert timedelta(days=max(PARTITION_DAYS_AGO) + 3) < REPORT_RETENTION


def test_backfill_over_two_workers_lands_every_partition_once(stack, pg_url):
    runs = [_run(stack, m, d) for m in stack.merchants for d in stack.days]
    assert [r.status.value for r in runs] == ["SUCCESS"] * 4, [r.run_id for r in runs]
    job = _job().get_definition()
    expected = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    hosts = set()
    for run in runs:
        assert _materializations(stack.instance, run.run_id) == dict.fromkeys(expected, 1), run.run_id
        by_step = _worker_of_steps(stack.instance, run.run_id)
        assert by_step and all(len(set(h)) == 1 for h in by_step.values()), by_step
        hosts |= {stack.worker_of(h[0]) for h in by_step.values()}
    assert hosts == set(stack.workers), "both workers took steps"
    records = [stack.instance.get_run_record_by_id(r.run_id) for r in runs]
    walls = ", ".join(f"{r.end_time - r.start_time:.1f}" for r in records)
    print(f"\nmerchant-day runs on two Celery workers: {walls} s")  # a figure of ADR 0012 (pytest -s)
    # Landed once: running a partition again changes no table's row count.
    before = {m: _table_counts(pg_url, m) for m in stack.merchants}
    assert all(sum(c.values()) > 0 for c in before.values()), before
    again = _run(stack, stack.merchants[0], stack.days[0])
    assert again.status.value == "SUCCESS"
    assert {m: _table_counts(pg_url, m) for m in stack.merchants} == before
    _no_run_started(stack.instance)


def _lock_waiters(con, table: str) -> list[int]:
    """The backends of this database waiting for a lock on `table`."""
    return [pid for (pid,) in con.execute(
        "SELECT pid FROM pg_locks WHERE NOT granted AND relation = to_regclass(%s) "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        [table],
    )]


def test_worker_killed_mid_step_is_retried_on_the_other_worker(stack, pg_url):
    """SIGKILL to the worker running a step of a merchant-day run (its whole process group).

    Mid-step for certain: the test holds a lock on the table the Amazon orders extract writes, so
    that step stays inside its body, its write waiting on the lock, until the worker is killed;
    the lock is released after the kill (the killed worker's write, still queued, is rolled back
    as its server session finds its client gone)."""
    import dagster as dg
    import psycopg

    from assets.extracts import extract_key
    from illuma_pipelines.merchant_ids import merchant_schema
    from illuma_pipelines.raw_records import raw_table

    merchant, day = stack.merchants[0], stack.days[0]
    reference = _run(stack, merchant, day)  # a clean run of the partition: the counts to end with
    assert reference.status.value == "SUCCESS"
    clean = _table_counts(pg_url, merchant)
    step = extract_key("amazon", "orders").to_python_identifier()
    table = f"{merchant_schema(merchant)}.{raw_table('amazon', 'orders').name}"

    outcome: dict[str, object] = {}
    runner = threading.Thread(target=lambda: outcome.update(run=_run(stack, merchant, day)), daemon=True)
    killed: dict[str, object] = {}
    with psycopg.connect(admin_dsn(pg_url)) as lock, dg.DagsterInstance.get() as watcher:
        # The watcher: a connection of its own, beside the orchestrator's.
        lock.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # held until the rollback below
        runner.start()

        def step_blocked() -> bool:
            assert runner.is_alive(), f"the run ended before its step {step} waited for the lock: {outcome}"
            for run in watcher.get_runs(limit=3):
                if run.run_id == reference.run_id or run.job_name != JOB_NAME:
                    continue
                started = any(e.step_key == step and e.dagster_event.event_type_value == "STEP_START"
                              for e in _events(watcher, run.run_id))
                hosts = _worker_of_steps(watcher, run.run_id).get(step)
                if started and hosts and _lock_waiters(lock, table):
                    killed.update(step=step, worker=stack.worker_of(hosts[-1]), run_id=run.run_id)
                    return True
            return False

        _wait_for(step_blocked, f"step {step} started on a worker and waiting for the lock on {table}", 240)
        victim = stack.workers[killed["worker"]]
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        done = {e.step_key for e in _events(watcher, killed["run_id"])
                if e.dagster_event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE")}
        killed["mid_step"] = step not in done
        lock.rollback()
    runner.join(300)
    assert not runner.is_alive(), "the run did not end within 5 minutes of the kill"
    assert killed, "no step was seen running"
    run = outcome["run"]
    assert run.run_id == killed["run_id"]
    assert killed["mid_step"], killed
    # The killed worker had not acknowledged its task (acks late, rejected when its worker is lost):
    # the broker handed it to the surviving worker, which ran the step again, and the run succeeded.
    survivor = next(n for n in stack.workers if n != killed["worker"])
    assert run.status == dg.DagsterRunStatus.SUCCESS, run.run_id
    hosts = [stack.worker_of(h) for h in _worker_of_steps(stack.instance, run.run_id)[killed["step"]]]
    assert hosts[0] == killed["worker"] and hosts[-1] == survivor, hosts
    job = _job().get_definition()
    landed = _materializations(stack.instance, run.run_id)
    assert set(landed) == {k.to_user_string() for k in job.asset_layer.executable_asset_keys}, landed
    _no_run_started(stack.instance)
    # Never half-written: the partition holds what a clean run wrote, and a re-run changes nothing.
    assert _table_counts(pg_url, merchant) == clean
    assert _run(stack, merchant, day).status.value == "SUCCESS"
    assert _table_counts(pg_url, merchant) == clean
