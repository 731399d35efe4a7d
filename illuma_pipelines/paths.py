"""Where the project keeps its local state. Read at call time, never at import time.

Which warehouse a process uses is decided in `illuma_pipelines.environment`, not here.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"


def var_dir() -> Path:
    """Project-local state: the DuckDB warehouse, the Dagster home, the keyring."""
    return Path(os.environ.get("ILLUMA_VAR_DIR", PROJECT_ROOT / "var"))


def data_dir() -> Path:
    """The data folder: the DuckDB file, exports. Key material never lives here."""
    return Path(os.environ.get("ILLUMA_DATA_DIR", var_dir() / "data"))

