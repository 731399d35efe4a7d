"""dbt models, run per merchant partition into that merchant's own schema."""


import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from dagster_dbt.dbt_project import DagsterDbtProjectPreparer
from dagster_shared.record import replace

from assets.concurrency import MERCHANT_STEP_TAGS, WAREHOUSE_POOL
from assets.partitions import merchant_daily_partitions, partition_parts
from illuma_pipelines.dbt_vars import build_dbt_vars, dbt_target
from illuma_pipelines.paths import DBT_PROJECT_DIR
from resources import dbt_executable
from resources.warehouse import WarehouseResource


class VenvDbtProjectPreparer(DagsterDbtProjectPreparer):
    """dagster-dbt's preparer (`dbt deps` if needed, `dbt parse`, under a lock file), run with the
    same dbt as the dbt resource: `resources.dbt_executable()`, the one beside this interpreter.

    The stock preparer runs `dbt` from PATH, so `dagster dev` started without the venv's bin on
    PATH failed to load the code location ("The dbt executable 'dbt' was not found on PATH").
    dagster-dbt 0.29 builds its dbt resource in these two hooks and offers no other way to choose
    the executable; tests/test_dbt_prepare.py loads the code location with such a PATH, so a
    change in dagster-dbt that bypasses them fails there.
    """

    def _dbt(self, project: DbtProject) -> DbtCliResource:
        return DbtCliResource(project_dir=project, dbt_executable=dbt_executable())

    def _prepare_packages(self, project: DbtProject) -> None:
        self._dbt(project).cli(["deps", "--quiet"], target_path=project.target_path).wait()

    def _prepare_manifest(self, project: DbtProject) -> None:
        self._dbt(project).cli(self._prepare_project_cli_args, target_path=project.target_path).wait()
        self._invalidate_seeds_in_partial_parse(project)


@cache
def dbt_project() -> DbtProject:
    # DbtProject takes no preparer argument; its record is copied with ours in place.
    project = replace(
        DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR),
        preparer=VenvDbtProjectPreparer(),
    )
    # Under `dagster dev` the manifest is rebuilt on load; elsewhere `make` prepares it.
    project.prepare_if_dev()
    return project


class IllumaDbtTranslator(DagsterDbtTranslator):
    """Models become ["analytics", name] in the `analytics` group; sources keep their meta key."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey(["analytics", dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "analytics"

    def get_owners(self, dbt_resource_props: Mapping[str, Any]) -> list[str] | None:
        return ["team:data"]


@dbt_assets(
    manifest=dbt_project().manifest_path,
    project=dbt_project(),
    partitions_def=merchant_daily_partitions,
    dagster_dbt_translator=IllumaDbtTranslator(),
    pool=WAREHOUSE_POOL,
    op_tags=MERCHANT_STEP_TAGS,
)
def analytics_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    merchant_id, date = partition_parts(context)
    url = warehouse.resolved_url()
    wh = warehouse.get()
    if not wh.merchant_schema_exists(merchant_id):
        raise dg.Failure(
            f"merchant {merchant_id!r} has no warehouse schema: onboard it with "
            "'illuma merchants add' before materializing its partitions"
        )
    dbt_vars, secret_env = build_dbt_vars(merchant_id, date, wh)
    args = ["build", "--target", dbt_target(url), "--vars", json.dumps(dbt_vars)]
    with _process_env(secret_env):
        # dagster-dbt copies os.environ when it starts dbt: the merchant login's password reaches
        # that process's environment only, never its arguments, vars or logs.
        invocation = dbt.cli(args, context=context)
    yield from invocation.stream()


@contextlib.contextmanager
def _process_env(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
