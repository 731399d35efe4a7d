"""Shared test fixtures: warehouses on both engines, a Dagster instance, unique merchant ids."""

from __future__ import annotations

import contextlib
import os
import secrets
import weakref
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.processes import service_unavailable

# Hypothesis fails an example that runs over 200 ms, and a test whose data generation seems slow:
# on the shared two-core CI machine a GC pause or a stall of hundreds of ms says nothing about the
# code. Loaded here, before any test module builds its @settings (which inherit from the profile
# in force then); example counts are unchanged.
settings.register_profile(
    "illuma", parent=settings.default, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("illuma")

PG_ADMIN_URL = os.environ.get("ILLUMA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# The pipeline never connects as a superuser (ADR 0001): the tests' warehouse URLs log in as this
# non-superuser login, which provisioning creates; the admin URL is for provisioning only.
PG_PIPELINE_LOGIN = os.environ.get("ILLUMA_TEST_PG_LOGIN", "illuma_app")
os.environ.setdefault("ILLUMA_WAREHOUSE_ADMIN_URL", PG_ADMIN_URL)


def admin_dsn(url: str) -> str:
    """The superuser's connection string to the database of pipeline URL `url`: for tests that
    check what a superuser sees or cannot do (the pipeline itself never logs in so)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    return make_conninfo(PG_ADMIN_URL, dbname=conninfo_to_dict(url)["dbname"])


def pipeline_url(dbname: str) -> str:
    """The pipeline's non-superuser login to database `dbname`."""
    return f"postgresql://{PG_PIPELINE_LOGIN}@127.0.0.1:5432/{dbname}"


@contextlib.contextmanager
def throwaway_database(prefix: str, *, template: str | None = None, owner: str | None = None) -> Iterator[str]:
    """A new database on the PostgreSQL service (made by the admin), dropped afterwards; its name."""
    import psycopg

    dbname = f"{prefix}_{secrets.token_hex(4)}"
    options = (f" TEMPLATE {template}" if template else "") + (f" OWNER {owner}" if owner else "")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as con:
        if template:
            # A template may have no other session: the pipeline's pooled ones included.
            con.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [template])
        con.execute(f"CREATE DATABASE {dbname}{options}")
    try:
        yield dbname
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


def _pg_reachable() -> str | None:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return str(exc)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL service for this test session, dropped afterwards.

    With CI set an unreachable server fails the run; elsewhere the Postgres tests skip loudly.
    """
    import psycopg

    problem = _pg_reachable()
    if problem:
        service_unavailable("Postgres tests", f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {problem}")
    from illuma_pipelines.warehouse import PostgresWarehouse

    with throwaway_database("illuma_test") as dbname:
        url = pipeline_url(dbname)
        PostgresWarehouse(url, admin_url=PG_ADMIN_URL).provision()
        yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as con:
        # Merchant roles are cluster-wide; ours carry this session's random prefix (see merchant_id).
        for (role,) in con.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"m\\_{_SESSION_TAG}%",)
        ).fetchall():
            con.execute(f"DROP ROLE IF EXISTS {role}")


_SESSION_TAG = "t" + secrets.token_hex(3)


@pytest.fixture
def merchant_id() -> callable:
    """Make unique, valid merchant ids (roles are cluster-wide; parallel runs must not collide)."""

    def make(name: str = "acme") -> str:
        return f"{_SESSION_TAG}_{name}_{secrets.token_hex(4)}"

    return make


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def warehouse(warehouse_url: str):
    from illuma_pipelines.warehouse import Warehouse

    wh = Warehouse.from_url(warehouse_url)
    wh.ensure_platform()
    return wh


@pytest.fixture
def instance():
    import dagster as dg

    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def vault_resource(tmp_path):
    """A PII vault on a key store and master key of the test's own (never the project's var/keys)."""
    from resources.vault import VaultResource

    keys = tmp_path / "vault-keys"
    return VaultResource(key_store_path=str(keys / "keystore.json"), master_key_file=str(keys / "master.key"))


@pytest.fixture
def backup_key(monkeypatch, tmp_path):
    """A backup key of the test's own, and a var dir in tmp: the project's var/ is never touched."""
    import base64

    monkeypatch.setenv("ILLUMA_BACKUP_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    monkeypatch.setenv("ILLUMA_VAR_DIR", str(tmp_path / "var"))


@pytest.fixture(autouse=True)
def _stop_signals_reach_child_processes() -> None:
    """Each test starts with SIGINT and SIGTERM neither ignored nor blocked in this process.

    Dagster points SIGTERM at SIGINT's handler whenever it runs a job in the main thread; where
    SIGINT is ignored (a pytest-xdist worker) SIGTERM then is too, and so is it in every child
    process, which inherit ignored and blocked signals: the `tail` processes that mirror a run's
    captured logs then outlive the SIGTERM Dagster ends them with, and the run waits 30 s per
    process before it fails. The pipeline's own processes start with the default dispositions."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


# For the warning below: the first test after which each defs-state storage was seen current.
_CURRENT_AFTER: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@pytest.fixture(autouse=True)
def _no_dead_dagster_instance_is_current(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with no disposed Dagster instance left as the current one.

    Entering a DagsterInstance puts its definitions-state storage in a context variable
    (dagster._core.storage.defs_state.base) that loading any Definitions then reads; the storage
    holds its instance by a weak reference. Instances exited out of order (enter A, enter B, exit
    A, exit B: B's exit restores A's) leave a storage whose instance is later gone, and every
    later load of the project's definitions on that worker fails with "Attempted to resolve
    undefined DagsterInstance weakref" (3 errors in test_ui_browser in a full run on two
    workers, test_quality_checks once before; each passes alone: five tests built schedule
    contexts they never closed). The test that finds such a storage fails, naming the first test
    after which it was seen current, which is the one (or whose fixture) to mend; it is cleared, so
    the tests after it run."""
    from dagster._core.storage.defs_state import base

    storage = base.DefsStateStorage.get()
    instance_ref = getattr(storage, "_instance_weakref", None)
    if storage is not None and instance_ref is not None and instance_ref() is None:
        base._current_storage.set(None)  # one failure here, not one in every later test
        pytest.fail(
            "a disposed Dagster instance's state storage is still current, first seen after "
            f"{_CURRENT_AFTER.get(storage, '(not seen after any test)')}: that test (or a fixture it used) "
            "left an instance entered, e.g. a schedule context built with an instance and never closed "
            "(use it as `with dg.build_schedule_context(...) as context`)"
        )
    yield
    left = base.DefsStateStorage.get()
    if left is not None:
        _CURRENT_AFTER.setdefault(left, request.node.nodeid)
