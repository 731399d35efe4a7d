"""Which environment this process runs in, and which warehouse that implies: decided here, once.

Everything that opens the warehouse asks `current_environment()` (or `warehouse_url()`, the same
decision): the `illuma` CLI and the demo, `resources_for` and `WarehouseResource` (so every asset,
sensor and schedule), the dbt asset (its `--target` and `--vars` come from the warehouse resource's
URL), and anything else that needs "the" warehouse rather than one it made for itself. Before,
the CLI honoured ILLUMA_WAREHOUSE_URL while the local Dagster resources always opened the DuckDB
file, so a merchant added on PostgreSQL was missing from the warehouse the assets read.

- ILLUMA_ENV: `local` (default) or `production`.
- ILLUMA_WAREHOUSE_URL: the warehouse, in either environment (`postgresql://...`, `duckdb:///...`).
  Unset, `local` means the project-local DuckDB file (`<data dir>/warehouse.duckdb`); `production`
  has no default and must name a PostgreSQL warehouse (ADR 0001: isolation is PostgreSQL's).
  This is the `main` warehouse: the platform schema lives there, and merchants are placed there
  unless their registry row names another.
- ILLUMA_WAREHOUSES: more warehouses merchants can be placed in, a JSON object of name to URL
  (`{"eu2": "postgresql://illuma_app@db2:5432/illuma"}`; ADR 0011). Same engine as `main`;
  PostgreSQL only in production. ILLUMA_WAREHOUSE_ADMIN_URLS (same shape) gives each one's admin
  URL for provisioning when it is not on the server of ILLUMA_WAREHOUSE_ADMIN_URL.

Read at call time, never at import time: the code location reads it when it loads.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from illuma_pipelines.paths import data_dir

ENV_VAR = "ILLUMA_ENV"
WAREHOUSE_URL_VAR = "ILLUMA_WAREHOUSE_URL"
WAREHOUSES_VAR = "ILLUMA_WAREHOUSES"
WAREHOUSE_ADMIN_URLS_VAR = "ILLUMA_WAREHOUSE_ADMIN_URLS"
MAIN_WAREHOUSE = "main"
WAREHOUSE_NAME = re.compile(r"[a-z][a-z0-9_]{0,29}")
LOCAL, PRODUCTION = "local", "production"
ENVIRONMENTS = (LOCAL, PRODUCTION)


class EnvironmentConfigError(ValueError):
    """ILLUMA_ENV or ILLUMA_WAREHOUSE_URL is missing or wrong; the message says what to set."""


@dataclass(frozen=True)
class Environment:
    """An environment's name and the warehouse it runs on."""

    name: str
    warehouse_url: str


def environment_name() -> str:
    """ILLUMA_ENV, validated: `local` when unset or empty."""
    name = os.environ.get(ENV_VAR) or LOCAL
    if name not in ENVIRONMENTS:
        raise EnvironmentConfigError(f"{ENV_VAR}={name!r} is not one of {ENVIRONMENTS}")
    return name


def local_warehouse_url() -> str:
    """The project-local DuckDB file: the local environment's warehouse when no URL is given."""
    return f"duckdb:///{data_dir() / 'warehouse.duckdb'}"


def warehouse_url(name: str | None = None) -> str:
    """The warehouse of environment `name` (default: this process's, from ILLUMA_ENV).

    ILLUMA_WAREHOUSE_URL when set, in either environment; otherwise the local DuckDB file, or, in
    production, an error: production never falls back to an embedded file.
    """
    name = environment_name() if name is None else name
    if name not in ENVIRONMENTS:
        raise EnvironmentConfigError(f"environment {name!r} is not one of {ENVIRONMENTS}")
    url = os.environ.get(WAREHOUSE_URL_VAR, "")
    if name == PRODUCTION:
        if not url:
            raise EnvironmentConfigError(
                f"{ENV_VAR}=production needs {WAREHOUSE_URL_VAR} (postgresql://user@host:5432/db): "
                "production has no default warehouse"
            )
        if url.startswith("duckdb:"):
            raise EnvironmentConfigError(
                f"{ENV_VAR}=production needs a PostgreSQL {WAREHOUSE_URL_VAR}, not a DuckDB file: "
                "merchant isolation is PostgreSQL's (ADR 0001)"
            )
        return url
    return url or local_warehouse_url()


def current_environment() -> Environment:
    """This process's environment and its warehouse, both validated (the one decision)."""
    name = environment_name()
    return Environment(name=name, warehouse_url=warehouse_url(name))


def validate_warehouse_name(name: str) -> str:
    """`name` if it can name a warehouse: lowercase letters, digits and _, starting with a letter,
    at most 30 characters."""
    if not isinstance(name, str) or not WAREHOUSE_NAME.fullmatch(name):
        raise EnvironmentConfigError(
            f"invalid warehouse name {name!r}: use lowercase letters, digits and _, starting with a "
            "letter, at most 30 characters (e.g. eu2)"
        )
    return name


def _engine(url: str) -> str | None:
    if url.startswith("duckdb:///"):
        return "duckdb"
    if url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        return "postgres"
    return None


def _json_object(var: str) -> dict[str, str]:
    text = os.environ.get(var, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EnvironmentConfigError(
            f'{var} is not valid JSON ({exc.msg}): give an object such as {{"eu2": "postgresql://..."}}'
        ) from None
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise EnvironmentConfigError(f'{var} must be a JSON object of warehouse name to URL, e.g. {{"eu2": "postgresql://..."}}')
    return value


def _database_identity(url: str) -> tuple:
    """What makes two URLs the same database: the file, or the server and database name."""
    if url.startswith("duckdb:///"):
        return ("duckdb", os.path.abspath(url[len("duckdb:///"):]))
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(re.sub(r"^postgres(ql)?(\+psycopg2?)?://", "postgresql://", url))
    return ("postgres", info.get("host") or "localhost", str(info.get("port") or 5432), info.get("dbname") or info.get("user"))


def named_warehouses(main_url: str, name: str | None = None) -> dict[str, str]:
    """The warehouses merchants can be placed in besides `main` (whose URL is `main_url`), by name,
    from ILLUMA_WAREHOUSES, validated for environment `name` (default: this process's): names,
    URLs, one engine throughout (a merchant scope's SQL is written for one dialect), PostgreSQL in
    production, and no database named twice."""
    name = environment_name() if name is None else name
    urls = _json_object(WAREHOUSES_VAR)
    main_engine = _engine(main_url)
    seen = {_database_identity(main_url): MAIN_WAREHOUSE} if main_engine else {}
    out: dict[str, str] = {}
    for key in sorted(urls):
        url = urls[key]
        if key == MAIN_WAREHOUSE:
            raise EnvironmentConfigError(
                f"{WAREHOUSES_VAR} names {MAIN_WAREHOUSE!r}: the main warehouse is {WAREHOUSE_URL_VAR} "
                f"(or the local default); list only the others"
            )
        validate_warehouse_name(key)
        engine = _engine(url)
        if engine is None:
            raise EnvironmentConfigError(
                f"{WAREHOUSES_VAR}[{key!r}] is not a warehouse URL: use postgresql://user@host:port/dbname "
                "or duckdb:///path/to/file.duckdb"
            )
        if name == PRODUCTION and engine == "duckdb":
            raise EnvironmentConfigError(
                f"{WAREHOUSES_VAR}[{key!r}] is a DuckDB file: {ENV_VAR}=production places merchants on "
                "PostgreSQL warehouses only (ADR 0001: isolation is PostgreSQL's)"
            )
        if main_engine and engine != main_engine:
            raise EnvironmentConfigError(
                f"{WAREHOUSES_VAR}[{key!r}] is {engine} but the main warehouse is {main_engine}: every "
                "warehouse of one deployment uses the same engine (ADR 0011)"
            )
        identity = _database_identity(url)
        if identity in seen:
            raise EnvironmentConfigError(
                f"{WAREHOUSES_VAR}[{key!r}] is the same database as warehouse {seen[identity]!r}: "
                "each name must be a database of its own"
            )
        seen[identity] = key
        out[key] = url
    return out


def warehouse_admin_urls() -> dict[str, str]:
    """ILLUMA_WAREHOUSE_ADMIN_URLS: the admin URL of each named warehouse that has its own."""
    urls = _json_object(WAREHOUSE_ADMIN_URLS_VAR)
    for key in urls:
        validate_warehouse_name(key)
    return urls
