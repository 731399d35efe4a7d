"""Resources per environment. The environment is chosen in one place: `current_environment()`."""


import os
import shutil
import sys
from pathlib import Path

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


def dbt_executable() -> str:
    """The dbt installed beside this interpreter (the venv's), even when the venv is not on PATH."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def resources_for(env: str) -> dict[str, object]:
    dbt = DbtCliResource(
        project_dir=str(DBT_PROJECT_DIR),
        profiles_dir=str(DBT_PROJECT_DIR),
        dbt_executable=dbt_executable(),
    )
    by_env: dict[str, dict[str, object]] = {
        "local": {"warehouse": WarehouseResource(), "dbt": dbt},
        "production": {
            "warehouse": WarehouseResource(url=dg.EnvVar("ILLUMA_WAREHOUSE_URL")),
            "dbt": dbt,
        },
    }
    return by_env[env]
