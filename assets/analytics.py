"""dbt models, built once per merchant partition into that merchant's own schema, over all of the
merchant's dates (docs/decisions/0009-analytics-per-merchant.md)."""


import contextlib
import json
import os
import uuid
import warnings
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from dagster_dbt.dbt_project import DagsterDbtProjectPreparer
from dagster_shared.record import replace
from pydantic import Field

from assets.concurrency import MERCHANT_STEP_TAGS, WAREHOUSE_POOL
from assets.partitions import MERCHANT_DIM, merchant_partitions
from illuma_pipelines.catalog import CATALOG_TABLES
from illuma_pipelines.core.inventory import migrate_inventory_snapshots
from illuma_pipelines.core.tables import CORE_TABLES
from illuma_pipelines.dbt_vars import (
    build_dbt_vars,
    dbt_target,
    keep_partial_parse,
    merchant_parse_cache,
    parse_cache_dir,
    seed_partial_parse,
    validate_as_of_date,
)
from illuma_pipelines.merchant_ids import merchant_schema, validate_merchant_id
from illuma_pipelines.paths import DBT_PROJECT_DIR
from illuma_pipelines.warehouse import TableSpec
from resources import dbt_executable
from resources.warehouse import WarehouseResource

# Asset-key layers whose assets are partitioned date × merchant (ADR 0006): a merchant's analytics
# read every date of that merchant's slice of them. Other sources keep Dagster's inferred mapping:
# the catalog is per merchant already (identity), the platform registry is unpartitioned (all).
DATE_MERCHANT_LAYERS = frozenset({"core"})
with warnings.catch_warnings():
    # Beta in Dagster 1.13, yet the very mapping Dagster infers for this pair: its warning adds nothing.
    warnings.simplefilter("ignore", dg.BetaWarning)
    ALL_DATES_OF_THE_MERCHANT = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=MERCHANT_DIM)


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


def trailing_days() -> int:
    """How many days back an incremental build recomputes: the dbt project's `trailing_days` var
    (dbt_project.yml, the one place it is set). A day that lands older than that needs a full
    refresh to reach the models."""
    import yaml

    path = DBT_PROJECT_DIR / "dbt_project.yml"
    days = (yaml.safe_load(path.read_text()).get("vars") or {}).get("trailing_days")
    if not isinstance(days, int) or days < 1:
        raise ValueError(f"{path}: vars.trailing_days must be a positive number of days, not {days!r}")
    return days


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
    """Models become ["analytics", name] in the `analytics` group; sources keep their meta key.
    A model's partition (a merchant) depends on all the dates of that merchant's core sources."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey(["analytics", dbt_resource_props["name"]])

    def get_partition_mapping(
        self, dbt_resource_props: Mapping[str, Any], dbt_parent_resource_props: Mapping[str, Any]
    ) -> dg.PartitionMapping | None:
        # Set, not left to Dagster's inference: inference picks the same mapping today, but a
        # wrong guess (a new dimension, say) would silently change what "stale" means.
        if dbt_parent_resource_props["resource_type"] != "source":
            return None  # model to model: the same merchant partition
        if self.get_asset_key(dbt_parent_resource_props).path[0] in DATE_MERCHANT_LAYERS:
            return ALL_DATES_OF_THE_MERCHANT
        return None

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "analytics"

    def get_owners(self, dbt_resource_props: Mapping[str, Any]) -> list[str] | None:
        return ["team:data"]


class AnalyticsConfig(dg.Config):
    """What one merchant's dbt build runs as of, and whether it rebuilds everything."""

    as_of_date: str | None = Field(
        default=None,
        description="The build's day, YYYY-MM-DD (dbt var `as_of_date`): incremental models "
        "rebuild their trailing window ending there. Default: today (UTC).",
    )
    full_refresh: bool = Field(
        default=False,
        description="Rebuild incremental models from scratch (dbt --full-refresh): after a late "
        "correction older than the trailing window, or a change of a model's logic.",
    )


@dbt_assets(
    manifest=dbt_project().manifest_path,
    project=dbt_project(),
    partitions_def=merchant_partitions,
    dagster_dbt_translator=IllumaDbtTranslator(),
    pool=WAREHOUSE_POOL,
    op_tags=MERCHANT_STEP_TAGS,
)
def analytics_dbt_models(
    context: dg.AssetExecutionContext, config: AnalyticsConfig, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    # Partition keys can be added by hand in the UI: validate before they reach SQL or paths.
    merchant_id = validate_merchant_id(context.partition_key)
    try:
        as_of_date = validate_as_of_date(config.as_of_date or datetime.now(UTC).date().isoformat())
    except ValueError as exc:
        raise dg.Failure(f"{exc}: fix the run config's as_of_date, or leave it out for today (UTC)") from None
    url = warehouse.resolved_url()
    wh = warehouse.get()
    if not wh.merchant_schema_exists(merchant_id):
        raise dg.Failure(
            f"merchant {merchant_id!r} has no warehouse schema: onboard it with "
            "'illuma merchants add' before materializing its partitions"
        )
    # A snapshot table from before stock was read per marketplace gains its key column first (a
    # NOT NULL column cannot be added to rows already there).
    with wh.merchant_scope(merchant_id) as conn:
        migrate_inventory_snapshots(conn, merchant_schema(merchant_id))
    # A merchant with no catalog yet, or no settlement so far, still gets every model (empty).
    for spec in source_table_specs():
        wh.ensure_merchant_table(merchant_id, spec)
    dbt_vars, dbt_env = build_dbt_vars(merchant_id, as_of_date, wh)
    target = dbt_target(url)
    args = ["build", "--target", target, "--vars", json.dumps(dbt_vars)]
    if config.full_refresh:
        args.append("--full-refresh")
    # A target path of the build's own (as dagster-dbt makes one), seeded with the merchant's
    # kept parse: its vars are the same from build to build, so dbt reparses only the files that
    # changed instead of the whole project (2 s and more at every build, bench/analytics.py).
    cache = merchant_parse_cache(parse_cache_dir(), target, merchant_id)
    run_dir = f"{merchant_id}-{context.run.run_id[:8]}-{uuid.uuid4().hex[:7]}"
    target_path = dbt_project().project_dir / dbt_project().target_path / run_dir
    seed_partial_parse(cache, target_path)
    context.log.info(f"dbt build of {merchant_id} as of {as_of_date}{' (full refresh)' if config.full_refresh else ''}")
    with _process_env(dbt_env):
        # dagster-dbt copies os.environ when it starts dbt: the build's day (kept out of the vars)
        # and the merchant login's password reach that process's environment only; the password
        # never its arguments, vars or logs.
        invocation = dbt.cli(args, context=context, target_path=target_path)
    try:
        yield from invocation.stream()
    finally:
        keep_partial_parse(target_path, cache)


@cache
def source_table_specs() -> tuple[TableSpec, ...]:
    """The merchant tables the dbt sources read (every source but the registry's copy), by
    their one definition in core/tables.py or catalog.py; a source with none fails here."""
    specs = {spec.name: spec for spec in (*CORE_TABLES, *CATALOG_TABLES)}
    manifest = json.loads(dbt_project().manifest_path.read_text())
    names = sorted({s["name"] for s in manifest["sources"].values() if s["source_name"] != "registry"})
    missing = [n for n in names if n not in specs]
    if missing:
        raise ValueError(f"dbt sources with no table definition in core/tables.py or catalog.py: {missing}")
    return tuple(specs[n] for n in names)


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
