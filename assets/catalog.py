"""Merchants' parts catalogs (group `catalog`, partitioned per merchant): the CSV and XLSX files
merchants drop in their inbox, loaded with their history, fitment and supersessions.

Thin: the work is `illuma_pipelines.catalog.import_catalog_file`, which the CLI
(`illuma merchants catalog import`) calls too. The catalog inbox sensor requests one run per new
file, naming it in the run config and the run tags.
"""

from datetime import datetime

import dagster as dg
from pydantic import Field

from assets.concurrency import MERCHANT_STEP_TAGS, WAREHOUSE_POOL
from assets.partitions import merchant_partitions
from illuma_pipelines.catalog import (
    CatalogFileError,
    CatalogImport,
    file_sha256,
    import_catalog_file,
    inbox_files,
    loaded_files,
)
from illuma_pipelines.merchant_ids import validate_merchant_id
from resources.inbox import InboxResource
from resources.warehouse import WarehouseResource

CATALOG_PARTS_KEY = dg.AssetKey(["catalog", "parts"])
KINDS = {"python", "duckdb", "postgres"}
OWNERS = ["team:data"]
# Run tags of a run requested for one inbox file (set by the catalog inbox sensor).
CATALOG_FILE_TAG = "illuma/catalog_file"
CATALOG_SHA256_TAG = "illuma/catalog_sha256"


class CatalogConfig(dg.Config):
    file: str = Field(default="", description="A file name in the merchant's catalog inbox folder.")
    """The file to load; empty: the file named by the run's `illuma/catalog_file` tag, or else every
    file of the folder not loaded yet, in name order."""
    effective_from: str = ""
    """When the file's costs took effect, an ISO 8601 time with its offset; empty: the load time."""


def _effective(config: CatalogConfig) -> datetime | None:
    if not config.effective_from:
        return None
    try:
        moment = datetime.fromisoformat(config.effective_from)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise dg.Failure(
            f"effective_from {config.effective_from!r} is not an ISO 8601 time with an offset, e.g. "
            "2026-03-01T00:00:00+00:00; leave it empty for the load time",
            allow_retries=False,
        )
    return moment


def _totals(done: list[CatalogImport]) -> dict:
    if len(done) == 1:
        return done[0].metadata()
    keys = ("rows_read", "rows_rejected", "parts_new", "parts_changed", "parts_unchanged", "parts_reresolved", "fitment_rows")
    return {
        "files": dg.MetadataValue.json([d.file for d in done]),
        **{k: sum(getattr(d, k) for d in done) for k in keys},
    }


@dg.asset(
    key=CATALOG_PARTS_KEY,
    partitions_def=merchant_partitions,
    group_name="catalog",
    kinds=KINDS,
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    op_tags=MERCHANT_STEP_TAGS,
)
def catalog_parts(
    context: dg.AssetExecutionContext, config: CatalogConfig, warehouse: WarehouseResource, inbox: InboxResource
) -> dg.MaterializeResult:
    """The merchant's parts catalog from the files in its inbox (`<inbox>/<merchant>/catalog/`,
    CSV or XLSX): one row per SKU version in `catalog_parts` (costs, MAP and price bounds, GTIN,
    supersession resolved to the current part, the master part; a change keeps the old version),
    fitment in `catalog_fitment`, bad rows with their reason in `catalog_rejects`."""
    merchant_id = validate_merchant_id(context.partition_key)
    name = config.file or context.run.tags.get(CATALOG_FILE_TAG, "")
    wh = warehouse.get()
    if name:
        try:
            paths = [inbox.file(merchant_id, "catalog", name)]
        except ValueError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from exc
        if not paths[0].is_file():
            raise dg.Failure(f"no catalog file {name!r} in {paths[0].parent}", allow_retries=False)
        if paths[0].is_symlink():
            raise dg.Failure(f"{paths[0]} is a link: catalog files are loaded from the merchant's own folder only", allow_retries=False)
    else:
        seen = loaded_files(wh, merchant_id)
        paths = [p for p in inbox_files(inbox.merchant_dir(merchant_id, "catalog")) if file_sha256(p) not in seen]
        if not paths:
            context.log.info(f"no new catalog file in {inbox.merchant_dir(merchant_id, 'catalog')}")
    effective = _effective(config)
    done = []
    for path in paths:
        try:
            summary = import_catalog_file(wh, merchant_id, path, effective_at=effective)
        except CatalogFileError as exc:
            # Not a catalog: nothing of it was loaded, and retrying cannot help.
            raise dg.Failure(f"{exc}. Nothing of {path.name} was loaded.", allow_retries=False) from exc
        context.log.info(summary.describe())
        if summary.rows_rejected:
            context.log.warning(f"{summary.rows_rejected} row(s) of {path.name} rejected: see catalog_rejects")
        done.append(summary)
    return dg.MaterializeResult(metadata=_totals(done) if done else {"files": 0})


catalog_assets = [catalog_parts]
