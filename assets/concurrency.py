"""The one concurrency rule for every step that opens a merchant's warehouse data (ADR 0001, 0006),
and the executor that runs every job's steps (ADR 0012).

Each step that opens merchant data (extracts, core tables, dbt, compliance, key rotation, and the
asset checks that read what they wrote) carries both:
- the `warehouse` pool: how many warehouse steps the instance runs at once, across all runs (the
  local instance allows 3, as many as its runs at once; production 8). Dagster 1.13 claims a slot
  per step under every executor used here (in-process, multiprocess, Celery), and the in-process
  and multiprocess executors spin while a step waits for one: hence as many slots as runs;
- the op tag `illuma/warehouse=merchant`: at most one such step at a time within a run. A run is
  one merchant's, and the instance runs one run per merchant at a time (the `illuma/merchant` run
  tag), so no two processes open one merchant's DuckDB file at once, while different merchants,
  each in a file of its own, run side by side. Pools are named per definition, not per partition,
  so the per-merchant half of the rule is the run tag and this op tag rather than a pool per
  merchant.

The executor, chosen when the code location loads (`selected_executor`, from ILLUMA_EXECUTOR):
- `in_process` (the default): a run's steps one after the other in the run's own process. In
  every job the steps either all open merchant data, so the op-tag rule already ran them one at a
  time under the multiprocess executor, or depend on one another (tests/test_executors.py): that
  executor only added a process per step. A merchant-day run launched from the UI took 55 to 64 s
  there and takes 22 s in process (ADR 0012 has the breakdown). One step at a time per run is the
  in-process executor's nature, so the rule holds by construction.
- `multiprocess`: each step in a process of its own (forked from a server that preloaded the code
  location), the op tag limited to 1 per run. Isolates a step that crashes its process; slower.
- `celery`: steps on Celery workers (dagster-celery; deploy/celery.yaml starts them), for the
  PostgreSQL warehouse only: a run's independent steps then run side by side on different workers,
  which PostgreSQL allows and a DuckDB file (one writer process) does not, so selecting it with a
  DuckDB warehouse fails the load.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from illuma_pipelines.environment import Environment

WAREHOUSE_POOL = "warehouse"
MERCHANT_STEP_TAG = "illuma/warehouse"
MERCHANT_STEP_TAGS = {MERCHANT_STEP_TAG: "merchant"}

EXECUTOR_VAR = "ILLUMA_EXECUTOR"
IN_PROCESS, MULTIPROCESS, CELERY = "in_process", "multiprocess", "celery"
EXECUTOR_NAMES = (IN_PROCESS, MULTIPROCESS, CELERY)

# Celery's broker, result backend and queue: the defaults are the services on this machine
# (RabbitMQ, Redis); deploy/celery.yaml gives the workers the same values.
CELERY_BROKER_VAR, CELERY_BACKEND_VAR, CELERY_QUEUE_VAR = (
    "ILLUMA_CELERY_BROKER", "ILLUMA_CELERY_BACKEND", "ILLUMA_CELERY_QUEUE",
)
DEFAULT_CELERY_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
DEFAULT_CELERY_BACKEND = "redis://127.0.0.1:6379/0"
DEFAULT_CELERY_QUEUE = "illuma"


class ExecutorConfigError(ValueError):
    """ILLUMA_EXECUTOR names no executor, or one the warehouse cannot take; the message says what to set."""


# Each step in a process of its own, at most one at a time of those that open the merchant's data.
# Step processes fork from a server that has imported the code location once per run: importing it
# (dagster-dbt, dbt) costs 3.3 s, which each step otherwise paid again (bench/isolation.py).
MULTIPROCESS_EXECUTOR = dg.multiprocess_executor.configured(
    {
        "tag_concurrency_limits": [{"key": MERCHANT_STEP_TAG, "limit": 1}],
        "start_method": {"forkserver": {"preload_modules": ["illuma_pipelines.definitions"]}},
    },
    name="illuma_multiprocess",
)


def executor_name() -> str:
    """ILLUMA_EXECUTOR, validated: `in_process` when unset or empty."""
    name = os.environ.get(EXECUTOR_VAR) or IN_PROCESS
    if name not in EXECUTOR_NAMES:
        raise ExecutorConfigError(f"{EXECUTOR_VAR}={name!r} is not one of {EXECUTOR_NAMES}")
    return name


def celery_config() -> dict:
    """The Celery executor's config: broker, backend and queue from the environment (defaults: this
    machine's RabbitMQ and Redis, queue `illuma`). A worker killed mid-step leaves its task
    unacknowledged, so the broker hands it to another worker (acks late, rejected when its worker
    is lost); the step's writes replace its partition in one transaction, so running it again is
    safe."""
    return {
        "broker": os.environ.get(CELERY_BROKER_VAR) or DEFAULT_CELERY_BROKER,
        "backend": os.environ.get(CELERY_BACKEND_VAR) or DEFAULT_CELERY_BACKEND,
        "config_source": {
            "task_default_queue": os.environ.get(CELERY_QUEUE_VAR) or DEFAULT_CELERY_QUEUE,
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
        },
    }


def selected_executor(environment: Environment) -> dg.ExecutorDefinition:
    """The executor of every job, from ILLUMA_EXECUTOR, checked against the environment's warehouse."""
    name = executor_name()
    if name == IN_PROCESS:
        return dg.in_process_executor
    if name == MULTIPROCESS:
        return MULTIPROCESS_EXECUTOR
    if not environment.warehouse_url.startswith(("postgresql:", "postgresql+", "postgres:")):
        raise ExecutorConfigError(
            f"{EXECUTOR_VAR}=celery needs a PostgreSQL warehouse (ILLUMA_WAREHOUSE_URL=postgresql://...), "
            f"not {environment.warehouse_url.split(':', 1)[0]}: a DuckDB file takes one writer process, and "
            f"Celery runs a run's steps on several workers at once. Unset {EXECUTOR_VAR} to run in process."
        )
    from dagster_celery import celery_executor

    return celery_executor.configured(celery_config(), name="illuma_celery")
