"""Runs cannot wedge the local instance (issue 11): a run whose process is killed with SIGKILL is
failed and its `warehouse` pool slot freed by the same recovery `make demo` runs first, and the
partition then re-runs to completion; the demo waits for a live run visibly, stops on SIGINT and
SIGTERM within seconds (its sandbox with it), and refuses a service on the sandbox port that is
not this checkout's sandbox. Real Dagster instances, processes, signals and DuckDB files."""

import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.partitions import MERCHANTS
from illuma_pipelines.demo import (
    INSTANCE_YAML,
    DemoError,
    StopSignals,
    check_sandbox_identity,
    ensure_local_instance_home,
)
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.paths import PROJECT_ROOT
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.sandbox.server import SandboxClock, SandboxConfig, SandboxServer
from illuma_pipelines.warehouse import Warehouse
from sensors.runs import recover_dead_runs, run_processes
from tests.processes import free_port

EARLIER_INSTANCE_YAML = """\
# Project-local Dagster instance (SQLite storage) for the demo and `make ui`.
# DuckDB allows one writer process per file: every warehouse writer shares the `warehouse` pool.
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""

# One merchant-day of Amazon orders, materialized in the instance of DAGSTER_HOME, into the
# environment's warehouse (ILLUMA_VAR_DIR's DuckDB file): an in-process run, as the demo's.
EXTRACT_SCRIPT = """
import sys
import dagster as dg
from assets.extracts import extract_assets
from assets.partitions import merchant_date_key
from resources import sandbox_clients
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource

base_url, merchant_id, day, keys = sys.argv[1:5]
result = dg.materialize(
    [a for a in extract_assets if a.key.path[-1] == "amazon_orders"],
    partition_key=merchant_date_key(merchant_id, day),
    resources={
        "warehouse": WarehouseResource(),
        "amazon": sandbox_clients(base_url)["amazon"],
        "vault": VaultResource(key_store_path=keys + "/keystore.json", master_key_file=keys + "/master.key"),
    },
    instance=dg.DagsterInstance.get(),
    tags={"illuma/merchant": merchant_id},
    raise_on_error=False,
)
sys.exit(0 if result.success else 1)
"""

# A live run holding the warehouse pool: one step that sleeps.
HOLDER_SCRIPT = """
import time
import dagster as dg

@dg.op(pool="warehouse")
def hold_the_pool():
    time.sleep(600)

@dg.job
def pool_holder():
    hold_the_pool()

pool_holder.execute_in_process(instance=dg.DagsterInstance.get(), raise_on_error=False)
"""

# A run of this process blocked by Dagster itself on the busy pool (the wait Dagster does not
# interrupt), under the demo's stop handling.
BLOCKED_SCRIPT = """
import os
import socket
import dagster as dg
from illuma_pipelines.demo import StopSignals
from sensors.runs import HOST_TAG, PID_TAG

@dg.op(pool="warehouse")
def write():
    pass

@dg.job
def blocked_writer():
    write()

instance = dg.DagsterInstance.get()
with StopSignals(instance=instance):
    blocked_writer.execute_in_process(
        instance=instance, raise_on_error=False, tags={HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    )
"""


# A stop is "within seconds" but not a benchmark: a run Dagster does not interrupt is stopped by
# force once StopSignals.grace has passed (children stopped, runs failed in SQLite, slots freed),
# and that path is taken exactly when the machine is slow. The limit tells "stopped" from "hangs".
STOP_LIMIT = StopSignals.grace + 20
STOP_WAIT = STOP_LIMIT + 30  # the wait itself, longer, so that a slow stop fails with its time


@pytest.fixture
def local(tmp_path, monkeypatch):
    """A project-local set-up of its own: var dir, Dagster home (as `make demo` writes it), and
    the environment's DuckDB warehouse inside it."""
    var = tmp_path / "var"
    monkeypatch.setenv("ILLUMA_VAR_DIR", str(var))
    monkeypatch.setenv("DAGSTER_HOME", str(var / "dagster_home"))
    for name in ("ILLUMA_WAREHOUSE_URL", "ILLUMA_DATA_DIR", "ILLUMA_ENV", "ILLUMA_SANDBOX_URL"):
        monkeypatch.delenv(name, raising=False)
    home = ensure_local_instance_home()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance, env, var


def _script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _slot_holder(instance) -> str | None:
    """The run holding the warehouse pool's slot, once it is STARTED."""
    claimed = instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots
    for slot in claimed:
        run = instance.get_run_by_id(slot.run_id)
        if run is not None and run.status == dg.DagsterRunStatus.STARTED:
            return slot.run_id
    return None


def _keys(warehouse, merchant_id, day):
    with warehouse.merchant_scope(merchant_id) as conn:
        return sorted(
            r[0]
            for r in conn.fetchall(
                f"SELECT record_key FROM {merchant_schema(merchant_id)}.raw_amazon_orders WHERE partition_date = ?",
                [day],
            )
        )


def test_a_killed_run_is_failed_its_slot_freed_and_its_partition_reruns(local, tmp_path, merchant_id):
    instance, env, var = local
    mid = merchant_id("wedge")
    warehouse = Warehouse.from_url(f"duckdb:///{var / 'data' / 'warehouse.duckdb'}")
    add_merchant(warehouse, mid, channels={"amazon": ChannelConnection("amazon", f"sandbox:{mid}")})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    now = datetime.now(UTC).replace(microsecond=0)
    day = (now - timedelta(days=2)).date().isoformat()
    script = _script(tmp_path, "extract.py", EXTRACT_SCRIPT)
    keys = str(tmp_path / "keys")
    config = SandboxConfig(seed=3, clock=SandboxClock.fixed_at(now), history_start=(now - timedelta(days=30)).date())

    def extract(base_url: str, name: str) -> subprocess.Popen:
        log = (tmp_path / f"{name}.log").open("w")  # a file, not a pipe: a full pipe would block it
        return subprocess.Popen(
            [sys.executable, script, base_url, mid, day, keys], env=env, cwd=PROJECT_ROOT, stdout=log, stderr=log
        )

    def completes(proc: subprocess.Popen, name: str) -> None:
        assert proc.wait(timeout=120) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]

    with SandboxServer(config) as sandbox:
        completes(extract(sandbox.base_url, "first"), "first")
    landed = _keys(warehouse, mid, day)
    assert landed, "the sandbox served no order for the day: the re-run check below would prove nothing"

    # A marketplace that accepts the connection and never answers: the run holds the pool slot,
    # in the middle of its step, until it is killed.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        victim = extract(f"http://127.0.0.1:{silent.getsockname()[1]}", "victim")
        run_id = _wait_for(lambda: _slot_holder(instance), 90, "the run to hold the warehouse slot", victim)
        run = instance.get_run_by_id(run_id)
        assert victim.pid in run_processes(instance, run, time.time())
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)

    # The wedge: the run stays STARTED and keeps the slot; nothing of the partition changed.
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
    assert _slot_holder(instance) == run_id
    assert _keys(warehouse, mid, day) == landed

    (check,) = [c for c in recover_dead_runs(instance, by="make demo") if c.run_id == run_id]
    assert (check.action, check.pids, check.slots_freed) == ("failed", (victim.pid,), 1)
    assert f"pid {victim.pid}" in check.line() and "marked failed" in check.line()
    failed = instance.get_run_record_by_id(run_id)
    assert failed.dagster_run.status == dg.DagsterRunStatus.FAILURE
    failure = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert "is gone" in failure[-1].event_log_entry.message
    assert instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots == []
    assert recover_dead_runs(instance) == []  # nothing left to clean

    # The same partition now runs to completion unattended, and replaces the partition.
    with SandboxServer(config) as sandbox:
        completes(extract(sandbox.base_url, "again"), "again")
    assert _keys(warehouse, mid, day) == landed


def test_the_demo_waits_for_a_live_run_and_stops_on_sigint(local, tmp_path):
    instance, env, var = local
    # A full pool: one slot here (the local default is 2), so the one holder below fills it.
    instance.event_log_storage.set_concurrency_slots("warehouse", 1)
    holder = subprocess.Popen(
        [sys.executable, _script(tmp_path, "holder.py", HOLDER_SCRIPT)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    port = free_port()
    demo = None
    try:
        held_by = _wait_for(lambda: _slot_holder(instance), 60, "the holder to take the warehouse slot", holder)
        demo = subprocess.Popen(
            [sys.executable, "-m", "illuma_pipelines.cli", "demo", "--days", "1"],
            env={**env, "ILLUMA_SANDBOX_URL": f"http://127.0.0.1:{port}"},
            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(demo.stdout), daemon=True)
        reader.start()
        _wait_for(lambda: any("waiting for the warehouse pool" in line for line in lines), 120,
                  "the demo to say it waits", demo)
        text = "".join(lines)
        assert f"run {held_by[:8]} (pool_holder) is STARTED in live process {holder.pid}: left running" in text
        assert f"sandbox: started this checkout's sandbox at http://127.0.0.1:{port}" in text
        assert "held by run " + held_by[:8] in text
        assert re.search(r"waited \d+ s so far", text), text

        sent = time.monotonic()
        demo.send_signal(signal.SIGINT)
        code = demo.wait(timeout=STOP_WAIT)
        took = time.monotonic() - sent
        reader.join(timeout=5)
        assert code == 128 + signal.SIGINT
        assert took < STOP_LIMIT, f"the demo took {took:.1f} s to stop"
        # Its own way out, on stderr: the watcher's forced exit writes to stdout.
        assert "demo stopped by SIGINT" in demo.stderr.read()
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "the demo's sandbox still serves"
        # The live run was left alone.
        assert holder.poll() is None
        assert _slot_holder(instance) == held_by

        # A run Dagster itself keeps waiting for the pool: stopped after the grace period, its run
        # failed and its claim on the pool dropped.
        blocked = subprocess.Popen(
            [sys.executable, _script(tmp_path, "blocked.py", BLOCKED_SCRIPT)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        waiting = _wait_for(lambda: [
            p.run_id for p in instance.event_log_storage.get_concurrency_info("warehouse").pending_steps
            if p.run_id != held_by
        ], 60, "the blocked run to queue for the pool", blocked)
        sent = time.monotonic()
        blocked.send_signal(signal.SIGINT)
        assert blocked.wait(timeout=STOP_WAIT) == 128 + signal.SIGINT
        took = time.monotonic() - sent
        assert took < STOP_LIMIT, f"the blocked run's process took {took:.1f} s to stop"
        assert "demo stopped by SIGINT (no stop within 6 s)" in blocked.stdout.read()
        assert instance.get_run_by_id(waiting[0]).status == dg.DagsterRunStatus.FAILURE
        assert [p.run_id for p in instance.event_log_storage.get_concurrency_info("warehouse").pending_steps] == [held_by]
        assert holder.poll() is None

        # Killed, then marked failed by hand (the UI's "mark as failed"): Dagster keeps its slot;
        # the recovery frees it.
        holder.kill()
        holder.wait()
        instance.report_run_failed(instance.get_run_by_id(held_by))
        assert _slot_holder(instance) is None and instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots
        (check,) = recover_dead_runs(instance)
        assert (check.run_id, check.action, check.slots_freed) == (held_by, "slots_freed", 1)
        assert instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots == []
    finally:
        for proc in (demo, holder):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_sigterm_during_a_run_stops_the_demo_and_leaves_no_run_going(local, tmp_path):
    instance, env, var = local
    port = free_port()
    log = tmp_path / "demo.log"
    demo = subprocess.Popen(
        [sys.executable, "-m", "illuma_pipelines.cli", "demo", "--days", "1"],
        env={**env, "ILLUMA_SANDBOX_URL": f"http://127.0.0.1:{port}"},
        cwd=PROJECT_ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    try:
        in_flight = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
        # The daily run, not the quick catalog load before it: it is still going a second later.
        run = _wait_for(
            lambda: instance.get_runs(dg.RunsFilter(job_name="merchant_daily_job", statuses=in_flight)),
            120, "the demo's first daily run", demo,
        )[0]
        assert run.tags["illuma/pid"] == str(demo.pid)
        time.sleep(1.0)  # into its steps
        sent = time.monotonic()
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(timeout=STOP_WAIT)
        took = time.monotonic() - sent
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    output = log.read_text()
    assert code == 128 + signal.SIGTERM, output
    assert took < STOP_LIMIT, f"the demo took {took:.1f} s to stop"
    assert "demo stopped by SIGTERM" in output
    assert instance.get_runs(dg.RunsFilter(statuses=[*in_flight, dg.DagsterRunStatus.NOT_STARTED])) == []
    assert instance.get_run_by_id(run.run_id).status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
    assert instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots == [], output
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the demo's sandbox still serves"


def test_the_demo_refuses_a_foreign_service_on_the_sandbox_port(local):
    _, env, _ = local

    class Other(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}')

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(DemoError, match="not the ILLUMA sandbox"):
            check_sandbox_identity(url, 7)
        out = subprocess.run(
            [sys.executable, "-m", "illuma_pipelines.cli", "demo", "--days", "1"],
            env={**env, "ILLUMA_SANDBOX_URL": url}, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
        )
    finally:
        server.shutdown()
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"illuma: error: {url} is taken by something that is not the ILLUMA sandbox" in out.stderr
    assert "ILLUMA_SANDBOX_URL" in out.stderr


def test_the_sandbox_on_the_port_must_be_this_checkouts_with_the_demos_seed():
    with SandboxServer(SandboxConfig(seed=7)) as ours:
        check_sandbox_identity(ours.base_url, 7)
        with pytest.raises(DemoError, match="serves world seed 7, not the demo's 8"):
            check_sandbox_identity(ours.base_url, 8)


def test_an_instance_home_written_before_gets_run_monitoring(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "old"))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "dagster.yaml").write_text(EARLIER_INSTANCE_YAML)
    home = ensure_local_instance_home()
    assert (home / "dagster.yaml").read_text() == INSTANCE_YAML
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
        # Three runs and as many warehouse slots, one run per merchant (ADR 0001: a file per merchant).
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == config.run_queue_config.max_concurrent_runs == 3
        assert [(lim["key"], lim["limit"]) for lim in config.run_queue_config.tag_concurrency_limits] == [
            ("illuma/merchant", 1)
        ]

    # A hand-written one keeps its settings and gains ours; its own run monitoring would stand.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "own"))
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 3\n")
    home = ensure_local_instance_home()
    settings = yaml.safe_load((home / "dagster.yaml").read_text())
    assert settings["concurrency"]["pools"]["default_limit"] == 3
    assert settings["run_monitoring"]["enabled"] is True
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_enabled


def test_the_production_instance_monitors_runs_and_frees_their_slots():
    settings = yaml.safe_load((PROJECT_ROOT / "deploy" / "dagster.yaml").read_text())["run_monitoring"]
    assert settings["enabled"] is True
    # The default run launcher cannot resume runs: Dagster refuses any other value with it.
    assert settings["max_resume_run_attempts"] == 0
    # It cannot see a dead worker either: the runtime limit is what ends a STARTED run whose worker died.
    assert 0 < settings["max_runtime_seconds"] <= 24 * 3600
    assert settings["free_slots_after_run_end_seconds"] > 0
    assert settings["start_timeout_seconds"] > 0 and settings["cancel_timeout_seconds"] > 0


@pytest.mark.parametrize("name", ["local", "production"])
def test_no_admitted_run_waits_for_a_warehouse_slot(name):
    """As many `warehouse` pool slots as runs at once (a run holds at most one): a run whose step
    waits for a slot makes Dagster's multiprocess executor busy-wait, a core per waiting run."""
    text = INSTANCE_YAML if name == "local" else (PROJECT_ROOT / "deploy" / "dagster.yaml").read_text()
    concurrency = yaml.safe_load(text)["concurrency"]
    assert concurrency["runs"]["max_concurrent_runs"] <= concurrency["pools"]["default_limit"]

