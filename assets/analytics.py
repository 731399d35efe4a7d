"""dbt models, run per merchant partition into that merchant's own schema."""


import json
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from assets.partitions import merchant_daily_partitions, partition_parts
from illuma_pipelines.dbt_vars import build_dbt_vars, dbt_target
from illuma_pipelines.paths import DBT_PROJECT_DIR
from resources.warehouse import WarehouseResource

WAREHOUSE_POOL = "warehouse"


@cache
def dbt_project() -> DbtProject:
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
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
)
def analytics_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    merchant_id, date = partition_parts(context)
    url = warehouse.resolved_url()
    if not warehouse.get().merchant_schema_exists(merchant_id):
        raise dg.Failure(
            f"merchant {merchant_id!r} has no warehouse schema: onboard it with "
            "'illuma merchants add' before materializing its partitions"
        )
    args = [
        "build",
        "--target",
        dbt_target(url),
        "--vars",
        json.dumps(build_dbt_vars(merchant_id, date, url)),
    ]
    yield from dbt.cli(args, context=context).stream()
