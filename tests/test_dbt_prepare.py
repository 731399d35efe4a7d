"""The code location loads however Dagster is started: under `dagster dev` (which prepares the dbt
manifest on load) without the venv's bin on PATH, the manifest is built by the venv's dbt."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from assets.analytics import VenvDbtProjectPreparer, dbt_project
from illuma_pipelines.paths import PROJECT_ROOT
from resources import dbt_executable

BARE_PATH = os.pathsep.join(("/usr/bin", "/bin"))


def test_the_project_prepares_with_the_resource_dbt():
    project = dbt_project()
    assert isinstance(project.preparer, VenvDbtProjectPreparer)
    assert project.preparer._dbt(project).dbt_executable == dbt_executable()
    assert Path(dbt_executable()).parent == Path(sys.executable).parent


def test_dagster_dev_loads_the_location_without_the_venv_on_path(tmp_path):
    assert shutil.which("dbt", path=BARE_PATH) is None, "this PATH must not offer a dbt of its own"
    dagster = Path(sys.executable).parent / "dagster"
    env = {
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PATH": BARE_PATH,
        "DAGSTER_HOME": str(tmp_path),
        # What `dagster dev` sets for its code servers (dagster/_cli/dev.py); dagster-dbt's
        # `prepare_if_dev` parses the dbt project when it is set.
        "DAGSTER_IS_DEV_CLI": "1",
    }
    out = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert "All code locations passed validation" in log
    assert f"Running dbt command: `{dbt_executable()} parse --quiet`" in log
