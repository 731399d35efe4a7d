"""The executor of every job, chosen at load by ILLUMA_EXECUTOR (assets/concurrency.py, ADR 0012)."""

from __future__ import annotations

import sys
import threading
import time
import traceback

import dagster as dg
import pytest

from assets.concurrency import (
    CELERY_QUEUE_VAR,
    EXECUTOR_VAR,
    MERCHANT_STEP_TAG,
    MERCHANT_STEP_TAGS,
    WAREHOUSE_POOL,
    ExecutorConfigError,
    executor_name,
)
from illuma_pipelines.definitions import defs
from sensors.jobs import merchant_daily_job

JOBS = ("merchant_daily_job", "merchant_analytics_job", "pii_purge_job", "key_rotation_job")


@pytest.fixture
def local_duckdb(monkeypatch, tmp_path):
    monkeypatch.setenv("ILLUMA_ENV", "local")
    monkeypatch.setenv("ILLUMA_WAREHOUSE_URL", f"duckdb:///{tmp_path / 'warehouse.duckdb'}")


def test_in_process_by_default(monkeypatch, local_duckdb):
    monkeypatch.delenv(EXECUTOR_VAR, raising=False)
    assert executor_name() == "in_process"
    definitions = defs()
    for name in JOBS:
        assert definitions.resolve_job_def(name).executor_def is dg.in_process_executor, name


def test_every_step_of_the_daily_job_opens_merchant_data(local_duckdb):
    """Why in-process costs the merchant-day run no parallelism: every one of its steps carries the
    `illuma/warehouse` tag, which the multiprocess executor limited to one at a time per run."""
    job = defs().resolve_job_def(merchant_daily_job.name)
    nodes = job.graph.node_defs
    assert len(nodes) >= 15
    for node in nodes:
        assert node.tags.get(MERCHANT_STEP_TAG) == "merchant" and node.pool == WAREHOUSE_POOL, node.name


def test_no_job_has_steps_that_could_run_side_by_side(local_duckdb):
    """The same for every job: a step without the `illuma/warehouse` tag (a backup, say) is in a job
    whose steps all depend on one another, so no executor could run two of them at once. A job that
    breaks this may want ILLUMA_EXECUTOR=multiprocess or a per-job executor (ADR 0012)."""
    repository = defs().get_repository_def()
    for job in repository.get_all_jobs():
        if job.name.startswith("__"):
            continue
        free = [n.name for n in job.graph.node_defs if n.tags.get(MERCHANT_STEP_TAG) != "merchant"]
        if not free:
            continue
        names = [n.name for n in job.graph.nodes]
        ancestors = {name: _upstream(job.graph.dependency_structure, name, set()) for name in names}
        for a in free:
            for b in names:
                assert a == b or a in ancestors[b] or b in ancestors[a], f"{job.name}: {a} and {b} are independent"


def test_multiprocess_keeps_one_warehouse_step_per_run(monkeypatch, local_duckdb):
    monkeypatch.setenv(EXECUTOR_VAR, "multiprocess")
    definitions = defs()
    for name in JOBS:
        config = definitions.resolve_job_def(name).executor_def.config_schema.resolve_config({})
        assert config.success, name
        assert config.value["config"]["tag_concurrency_limits"] == [{"key": MERCHANT_STEP_TAG, "limit": 1}], name


def test_celery_with_a_duckdb_warehouse_fails_the_load(monkeypatch, local_duckdb):
    monkeypatch.setenv(EXECUTOR_VAR, "celery")
    with pytest.raises(ExecutorConfigError, match=r"ILLUMA_EXECUTOR=celery needs a PostgreSQL warehouse.*not duckdb"):
        defs()


def test_an_unknown_executor_fails_the_load(monkeypatch, local_duckdb):
    monkeypatch.setenv(EXECUTOR_VAR, "threads")
    with pytest.raises(ExecutorConfigError, match=r"ILLUMA_EXECUTOR='threads' is not one of"):
        defs()


def test_celery_with_postgres_runs_every_job_on_celery(monkeypatch):
    monkeypatch.setenv("ILLUMA_ENV", "local")
    monkeypatch.setenv("ILLUMA_WAREHOUSE_URL", "postgresql://illuma_app@127.0.0.1:5432/illuma")
    monkeypatch.setenv(EXECUTOR_VAR, "celery")
    monkeypatch.setenv(CELERY_QUEUE_VAR, "illuma-eu")
    definitions = defs()  # builds nothing that connects: the warehouse is opened by the runs
    for name in JOBS:
        executor = definitions.resolve_job_def(name).executor_def
        assert executor.name == "illuma_celery", name
        config = executor.config_schema.resolve_config({}).value["config"]
        assert config["config_source"]["task_default_queue"] == "illuma-eu"
        assert config["config_source"]["task_acks_late"] is True


def _upstream(structure, name: str, seen: set[str]) -> set[str]:
    """Every node `name` depends on, transitively."""
    for output in structure.all_upstream_outputs_from_node(name):
        if output.node_name not in seen:
            seen.add(output.node_name)
            _upstream(structure, output.node_name, seen)
    return seen


# ---------------------------------------------------------------- pools under the in-process executor
@dg.op(pool=WAREHOUSE_POOL, tags=MERCHANT_STEP_TAGS)
def first_write() -> int:
    return 1


@dg.op(pool=WAREHOUSE_POOL, tags=MERCHANT_STEP_TAGS)
def second_write(value: int) -> int:
    return value + 1


@dg.job(executor_def=dg.in_process_executor)
def two_pool_steps():
    second_write(first_write())


# Times the waiting run asks how long to sleep: the spin proven by a count, not by CPU time (a
# spinning thread gets little of a core on a loaded machine). A loop that sleeps even 50 ms
# between checks makes no more than 1,200 in a minute.
SPINS = 2000


def test_in_process_steps_claim_the_pool_and_wait_for_it(tmp_path, monkeypatch):
    """Dagster 1.13's in-process executor claims a `warehouse` slot per step: with the pool full
    (another run holds its one slot) a run waits before its first step and goes on once the slot is
    freed. While it waits it spins, as the multiprocess executor does (ADR 0006, 0012):
    `InstanceConcurrencyContext.interval_to_next_pending_claim_check` returns min(0, ...), so
    `sleep_til_ready` never sleeps. Hence the instances keep as many pool slots as runs at once, and a
    run (one step at a time) never waits inside. Should an upgrade fix the spin, the canary below
    fails: that rule may then be relaxed."""
    from dagster._core.execution.plan.active import ActiveExecution

    asked = {"times": 0, "slept": 0}  # the executor's loop, asking how long to sleep (one writer)
    sleep_interval = ActiveExecution.sleep_interval

    def counted(self) -> float:
        interval = sleep_interval(self)
        asked["times"] += 1
        asked["slept"] += interval > 0
        return interval

    monkeypatch.setattr(ActiveExecution, "sleep_interval", counted)
    with dg.instance_for_test(
        temp_dir=str(tmp_path), overrides={"concurrency": {"pools": {"default_limit": 1}}}
    ) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots(WAREHOUSE_POOL, 1)
        assert storage.claim_concurrency_slot(WAREHOUSE_POOL, "other-run", "other_step").is_claimed
        outcome = {}

        def run() -> None:
            outcome["result"] = two_pool_steps.execute_in_process(instance=instance, raise_on_error=False)

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        deadline = time.monotonic() + 60
        while not _blocked(instance) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _blocked(instance), "the run's first step must wait for the pool slot"
        before = dict(asked)
        deadline = time.monotonic() + 60
        while asked["times"] - before["times"] < SPINS and time.monotonic() < deadline:
            time.sleep(0.1)
        times, slept = asked["times"] - before["times"], asked["slept"] - before["slept"]
        waiting = instance.get_runs(limit=1)[0]
        starts = instance.all_logs(waiting.run_id, of_type=dg.DagsterEventType.STEP_START)
        assert runner.is_alive() and not starts, "the run must still wait for the pool slot"
        assert times >= SPINS, f"the waiting run asked how long to sleep only {times} times in 60 s: has Dagster stopped spinning?"
        assert slept == 0, f"the waiting run slept {slept} of {times} times: has Dagster stopped spinning?"
        storage.free_concurrency_slots_for_run("other-run")
        runner.join(120)
        assert not runner.is_alive(), f"the run did not end 120 s after the slot was freed; it is at:\n{_stack(runner)}"
        result = outcome["result"]
        assert result.success and result.output_for_node("second_write") == 2
        # Each step claimed the one slot in turn and released it: nothing is held after the run.
        assert storage.get_concurrency_info(WAREHOUSE_POOL).active_slot_count == 0


def _stack(thread: threading.Thread) -> str:
    """Where `thread` is now: what a failure message needs to say why a run did not end."""
    frame = sys._current_frames().get(thread.ident)
    return "".join(traceback.format_stack(frame)) if frame else "(thread gone)"


def _blocked(instance: dg.DagsterInstance) -> bool:
    runs = instance.get_runs(limit=1)
    return bool(runs) and any(
        "blocked by limit for pool" in (e.user_message or "")
        for e in instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    )
