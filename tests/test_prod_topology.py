"""`make prod-up`'s topology itself, on the PostgreSQL service: code server, webserver, daemon and
sandbox as separate processes; the daemon evaluates a tick of `merchant_daily_schedule` and its runs
succeed; the merchants sensor picks up a merchant added with the CLI; `down` leaves nothing behind.

Bounded: every wait has a deadline, and the topology is stopped (its process groups killed) and its
databases dropped in `finally`.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from illuma_pipelines import prod
from illuma_pipelines.paths import PROJECT_ROOT
from tests.conftest import PG_ADMIN_URL, PG_PIPELINE_LOGIN
from tests.processes import free_port

# Bounded by the waits below, which are generous: CI's machine is at times twice as slow.
pytestmark = [pytest.mark.postgres, pytest.mark.timeout(900)]

RUN_DEADLINE_SECONDS = 330
DEQUEUE_DEADLINE_SECONDS = 120  # the daemon's run queue takes a launched run off the queue
START_TIMEOUT_SECONDS = 300  # for each process of `up` (the default 120 s is for a machine of its own)
GRAPHQL_TIMEOUT_SECONDS = 60  # a schedule's state and a launch go through the code server over gRPC


def _illuma(config: prod.ProdConfig, *args: str) -> str:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "illuma"), *args],
        cwd=PROJECT_ROOT, env=prod.cli_env(config), capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _drop_databases(config: prod.ProdConfig) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as con:
        for db in (config.dagster_db, config.warehouse_db):
            con.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


_LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""


def _launch_params(merchant: str, day: str) -> dict:
    """What the UI's Launch button sends for one merchant-day of merchant_daily_job."""
    tags = {
        "dagster/partition": f"{day}|{merchant}",
        "dagster/partition/date": day,
        "dagster/partition/merchant": merchant,
        "illuma/merchant": merchant,
    }
    return {
        "selector": {"repositoryLocationName": prod.LOCATION_NAME, "repositoryName": "__repository__",
                     "jobName": "merchant_daily_job"},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        "runConfigData": {},
    }


@pytest.fixture
def config(pg_url, tmp_path) -> prod.ProdConfig:
    # pg_url: PostgreSQL is reachable (under CI an unreachable server fails the test).
    tag = secrets.token_hex(4)
    return prod.ProdConfig(
        root=tmp_path / "prod",
        webserver_port=free_port(),
        grpc_port=free_port(),
        sandbox_port=free_port(),
        admin_url=PG_ADMIN_URL,
        login=PG_PIPELINE_LOGIN,
        dagster_db=f"illuma_prodtest_dagster_{tag}",
        warehouse_db=f"illuma_prodtest_wh_{tag}",
        start_timeout_seconds=START_TIMEOUT_SECONDS,
    )


def test_prod_topology_runs_the_daily_schedule_and_picks_up_new_merchants(config, merchant_id, capsys):
    from sensors.schedules import merchant_daily_schedule

    first, second = merchant_id("prodday"), merchant_id("prodnew")
    started: dict[str, prod.Started] = {}
    try:
        prod.provision(config)
        _illuma(config, "merchants", "add", first, "--channel", "ebay")
        # The CLI syncs the partitions now; the daemon's sensor would within a minute, and the
        # schedule runs only for merchants that have their partition.
        _illuma(config, "merchants", "sync-partitions")
        # The daemon evaluates the tick the schedule "missed" in the last day (Dagster's catch-up):
        # the real cron, evaluated by the daemon, without waiting for 06:00 UTC.
        prod.running_since(
            config, merchant_daily_schedule.name, merchant_daily_schedule.cron_schedule, time.time() - 86_400 + 60
        )
        started_at = time.monotonic()
        assert prod.up(config) is True
        up_seconds = time.monotonic() - started_at
        assert all(prod.status(config).values())
        started = prod.recorded(config)
        # Idempotent: a second `up` says so and starts nothing.
        assert prod.up(config) is False
        assert "already up" in capsys.readouterr().out
        assert prod.recorded(config) == started

        # Schedules and sensors are on in this instance (default status RUNNING in code).
        data = prod.graphql(
            config,
            """query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) {
                 __typename ... on Schedule { scheduleState { status } } } }""",
            {"s": {"repositoryLocationName": prod.LOCATION_NAME, "repositoryName": "__repository__",
                   "scheduleName": merchant_daily_schedule.name}},
            timeout=GRAPHQL_TIMEOUT_SECONDS,
        )
        assert data["scheduleOrError"]["scheduleState"]["status"] == "RUNNING"

        # A merchant added while the topology runs: the daemon's merchants sensor adds its partition.
        _illuma(config, "merchants", "add", second, "--channel", "walmart")

        import dagster as dg

        deadline = time.monotonic() + RUN_DEADLINE_SECONDS
        with prod.open_instance(config) as instance:
            runs, partitions = [], []
            while time.monotonic() < deadline:
                runs = instance.get_runs(dg.RunsFilter(tags={"dagster/schedule_name": merchant_daily_schedule.name}))
                partitions = instance.get_dynamic_partitions("merchants")
                done = runs and all(r.is_finished for r in runs)
                if done and second in partitions:
                    break
                time.sleep(3)
            assert second in partitions, f"the merchants sensor did not add {second}: {partitions}"
            assert [r.tags.get("illuma/merchant") for r in runs] == [first], runs
            run = runs[0]
            assert run.status == dg.DagsterRunStatus.SUCCESS, (
                f"run {run.run_id} {run.status}; logs: {config.log_dir}"
            )
            # The run went through the queue with the tags its limits use (deploy/dagster.yaml).
            assert run.tags["illuma/channel/ebay"] == "true"
            assert "illuma/channel/amazon" not in run.tags
            record = instance.get_run_record_by_id(run.run_id)
            run_seconds = record.end_time - record.create_timestamp.timestamp()
            print(f"\nprod-up {up_seconds:.1f} s; merchant-day run (queue to end) {run_seconds:.1f} s")

            # A run launched from the UI (GraphQL, as the Launch button) that `down` interrupts is
            # not left STARTED, holding its merchant's run slot.
            day = run.tags["dagster/partition/date"]
            launched = prod.graphql(
                config, _LAUNCH, {"p": _launch_params(second, day)}, timeout=GRAPHQL_TIMEOUT_SECONDS
            )["launchRun"]
            assert launched["__typename"] == "LaunchRunSuccess", launched
            interrupted = launched["run"]["runId"]
            # Its own deadline: the scheduled run's wait above may have used most of that one.
            dequeued_by = time.monotonic() + DEQUEUE_DEADLINE_SECONDS
            while time.monotonic() < dequeued_by:
                if instance.get_run_by_id(interrupted).status != dg.DagsterRunStatus.QUEUED:
                    break
                time.sleep(0.5)
            launched_status = instance.get_run_by_id(interrupted).status
            assert launched_status in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED), (
                f"the launched run {interrupted} is {launched_status.value} after up to "
                f"{DEQUEUE_DEADLINE_SECONDS} s; logs: {config.log_dir}"
            )

        stopping = time.monotonic()
        stopped = prod.down(config)
        print(f"prod-down {time.monotonic() - stopping:.1f} s")
        assert stopped == list(reversed(prod.PROCESSES))
        with prod.open_instance(config) as instance:
            status = instance.get_run_by_id(interrupted).status
            ended = instance.all_logs(interrupted, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED), status
        print(f"interrupted run: {status.value}: {ended[-1].message if ended else ''}")
        for proc in started.values():
            assert not proc.alive()
            assert prod.group_members(proc.pid) == [], f"{proc.name} left processes behind"
        for name, port in prod.ports(config).items():
            # Free again (connections in TIME_WAIT aside, as a restarted server would bind it).
            assert prod.port_free(config.host, port), f"{name}'s port {port} is still held"
        assert not any(prod.status(config).values())
        assert not list(config.run_dir.glob("*.pid"))
        # Logs are files under the topology's folder.
        assert (config.log_dir / "daemon.log").stat().st_size > 0
    finally:
        prod.down(config, quiet=True)
        for proc in started.values():
            assert prod.group_members(proc.pid) == []
        _drop_databases(config)


def test_down_stops_only_what_up_started(tmp_path):
    """A pid file naming a process `up` did not start (a reused pid) is never signalled."""
    config = prod.ProdConfig(root=tmp_path / "prod")
    config.run_dir.mkdir(parents=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        real_ticks = prod._start_ticks(bystander.pid)
        # Same pid, another start time: not the process `up` recorded.
        (config.run_dir / "sandbox.pid").write_text(
            f'{{"pid": {bystander.pid}, "start_ticks": {real_ticks - 1}, "argv": []}}'
        )
        assert prod.status(config)["sandbox"] is False
        prod.down(config, quiet=True)
        assert bystander.poll() is None, "down signalled a process it did not start"
        assert not (config.run_dir / "sandbox.pid").exists()
    finally:
        bystander.kill()
        bystander.wait(timeout=10)


def test_up_refuses_a_port_in_use_and_starts_nothing(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = prod.ProdConfig(root=tmp_path / "prod", webserver_port=port, grpc_port=free_port(),
                                 sandbox_port=free_port())
        with pytest.raises(prod.ProdError, match=f"webserver port {port}.*ILLUMA_PROD_WEBSERVER_PORT"):
            prod.up(config)
    assert not any(prod.status(config).values())
    assert not config.run_dir.exists() or not list(config.run_dir.glob("*.pid"))


def test_config_from_the_environment(tmp_path):
    config = prod.ProdConfig.from_env({"ILLUMA_PROD_DIR": "/srv/illuma-prod", "ILLUMA_PROD_WEBSERVER_PORT": "3999",
                                       "ILLUMA_PROD_WAREHOUSE_DB": "wh_x"})
    assert config.dagster_home == Path("/srv/illuma-prod/dagster_home")
    assert config.ui_url == "http://127.0.0.1:3999"
    assert config.warehouse_url == "postgresql://illuma_app@127.0.0.1:5432/wh_x"
    assert config.dagster_pg_url.startswith("postgresql+psycopg2://illuma_app@127.0.0.1:5432/")
    with pytest.raises(prod.ProdError, match="not a TCP port"):
        prod.ProdConfig.from_env({"ILLUMA_PROD_GRPC_PORT": "http"})
    # Dagster and the pipeline never get the admin URL; the CLI (onboarding) does.
    env = prod.process_env(prod.ProdConfig(root=tmp_path / "prod"),
                           base={"ILLUMA_WAREHOUSE_ADMIN_URL": "postgresql://postgres@x/postgres"})
    assert "ILLUMA_WAREHOUSE_ADMIN_URL" not in env
    assert env["ILLUMA_ENV"] == "production" and env["ILLUMA_MARKETPLACE_BASE_URL"].startswith("http://127.0.0.1:")
