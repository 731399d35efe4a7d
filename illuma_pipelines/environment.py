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

Read at call time, never at import time: the code location reads it when it loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from illuma_pipelines.paths import data_dir

ENV_VAR = "ILLUMA_ENV"
WAREHOUSE_URL_VAR = "ILLUMA_WAREHOUSE_URL"
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
