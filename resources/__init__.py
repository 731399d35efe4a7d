"""Resources per environment. The environment is chosen in one place: `current_environment()`."""


import os

import dagster as dg
from dagster_dbt import DbtCliResource

from illuma_pipelines.paths import DBT_PROJECT_DIR
from resources.warehouse import WarehouseResource

ENVIRONMENTS = ("local", "production")


def current_environment() -> str:
    """`local` (embedded DuckDB, local sandbox) unless ILLUMA_ENV says `production`."""
    env = os.environ.get("ILLUMA_ENV", "local")
    if env not in ENVIRONMENTS:
        raise ValueError(f"ILLUMA_ENV={env!r} is not one of {ENVIRONMENTS}")
    return env


def resources_for(env: str) -> dict[str, object]:
    dbt = DbtCliResource(project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR))
    by_env: dict[str, dict[str, object]] = {
        "local": {"warehouse": WarehouseResource(), "dbt": dbt},
        "production": {
            "warehouse": WarehouseResource(url=dg.EnvVar("ILLUMA_WAREHOUSE_URL")),
            "dbt": dbt,
        },
    }
    return by_env[env]
