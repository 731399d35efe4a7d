"""What the benchmarks share: a throwaway warehouse on either engine, provisioned as the pipeline
runs it (ADR 0001), and the engine-level access their bare baselines need.

PostgreSQL: the throwaway database is created with the superuser admin URL (ILLUMA_BENCH_PG_URL)
and provisioned with it; the pipeline then logs in as a non-superuser login (ILLUMA_BENCH_PG_LOGIN,
default `illuma_app`, created by provisioning when missing) and onboarding a merchant reaches the
admin through ILLUMA_WAREHOUSE_ADMIN_URL, which `throwaway_warehouse_url` sets for its duration
(child processes started meanwhile inherit it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

PG_ADMIN = os.environ.get("ILLUMA_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_LOGIN = os.environ.get("ILLUMA_BENCH_PG_LOGIN", "illuma_app")
# Read by PostgresWarehouse when no admin URL is given: onboarding a merchant is provisioning.
ADMIN_URL_VAR = "ILLUMA_WAREHOUSE_ADMIN_URL"
# The merchant logins' passwords derive from this secret; a throwaway one per warehouse keeps the
# benchmarks out of the project's var/keys (unless the caller set one).
LOGIN_SECRET_VAR = "ILLUMA_WAREHOUSE_LOGIN_SECRET"


def pg_dbname(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def pipeline_url(dbname: str) -> str:
    """The pipeline's (non-superuser) login to database `dbname` of the admin URL's server."""
    admin = urlsplit(PG_ADMIN)
    server = f"{admin.hostname or '127.0.0.1'}:{admin.port or 5432}"
    return urlunsplit(admin._replace(netloc=f"{PG_LOGIN}@{server}", path=f"/{dbname}"))


def admin_url(dbname: str) -> str:
    """The superuser admin's URL to database `dbname`: for bare baselines (plain engine statements,
    which measure the engine, not the pipeline's access rules) and for setting up and tearing down."""
    return urlunsplit(urlsplit(PG_ADMIN)._replace(path=f"/{dbname}"))


def terminate_sessions(dbname: str) -> None:
    """End every other session on `dbname` (the pipeline keeps pooled connections open in-process;
    they reconnect on their next use). Needed before `CREATE DATABASE ... TEMPLATE dbname`."""
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as con:
        con.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname],
        )


def copy_pg_database(dbname: str, copy: str) -> None:
    """`CREATE DATABASE copy TEMPLATE dbname`, after ending the sessions that would block it."""
    import psycopg

    terminate_sessions(dbname)
    with psycopg.connect(PG_ADMIN, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {copy} TEMPLATE {dbname}")


@contextlib.contextmanager
def _env(**values: str | None) -> Iterator[None]:
    """Set (or, for None, leave as is) environment variables for the block; restore them after."""
    before = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if value is not None:
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def throwaway_warehouse_url(engine: str, work: Path, merchant_id: str) -> Iterator[str]:
    """A DuckDB warehouse under `work` (the platform file `bench.duckdb`, each merchant its own file
    in `bench.merchants/`), or a new PostgreSQL database provisioned for the pipeline's login,
    whose URL is yielded; the database (with any `<name>_bare` copy) and the merchant logins made
    in it are dropped afterwards."""
    if engine == "duckdb":
        yield f"duckdb:///{work / 'bench.duckdb'}"
        return
    import psycopg

    from illuma_pipelines.warehouse import PostgresWarehouse

    dbname = f"illuma_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {dbname}")
    try:
        url = pipeline_url(dbname)
        secret = None if os.environ.get(LOGIN_SECRET_VAR) else secrets.token_hex(32)
        with _env(**{ADMIN_URL_VAR: PG_ADMIN, LOGIN_SECRET_VAR: secret}):
            PostgresWarehouse(url, admin_url=PG_ADMIN).provision()
            yield url
    finally:
        _drop_pg(dbname, merchant_id)


def _drop_pg(dbname: str, merchant_id: str) -> None:
    """Drop the database and its `_bare` copy, then the merchant logins made for it: roles are
    cluster-wide and outlive the database. They are looked up before the database goes: those
    `platform.merchant_logins` names and every merchant login carrying its placement tag."""
    import psycopg

    roles: set[str] = set()
    try:
        with psycopg.connect(admin_url(dbname), autocommit=True) as db:
            roles |= {r[0] for r in db.execute("SELECT role_name FROM platform.merchant_logins").fetchall()}
            tags = [r[0] for r in db.execute("SELECT tag FROM platform.placement").fetchall()]
            for tag in tags:
                roles |= {r[0] for r in db.execute(
                    "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", [f"m\\_%\\_{tag}"]
                ).fetchall()}
    except psycopg.Error:
        # Never provisioned (or already gone): at most this merchant's logins, by name.
        with psycopg.connect(PG_ADMIN, autocommit=True) as con:
            roles |= {r[0] for r in con.execute(
                "SELECT rolname FROM pg_roles WHERE rolname ~ %s", [f"^m_{merchant_id}_[0-9a-f]{{8}}$"]
            ).fetchall()}
    with psycopg.connect(PG_ADMIN, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        con.execute(f"DROP DATABASE IF EXISTS {dbname}_bare WITH (FORCE)")
        for role in sorted(roles):
            try:
                con.execute(f'DROP ROLE IF EXISTS "{role}"')
            except psycopg.Error as exc:  # still owns objects in another database: not ours
                print(f"note: merchant login {role} not dropped: {exc}")


# The webserver's GraphQL mutation behind the Launch button (bench/ui_launch.py, bench/daily_refresh.py).
LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}
"""
