"""Catalog files arriving in merchants' inboxes: one `catalog_import_job` run per new file.

The cursor remembers each file's (name, size, mtime): a file seen before is not even read again.
A new or changed file is hashed, and its run key is the merchant and the file's SHA-256, so the
same content never loads twice, whatever its name (the loader also refuses a file it already
loaded). Folders that are not a registered merchant's are logged and skipped; a file still being
written (modified in the last `SETTLE_SECONDS`) waits for the next tick.
"""

import json
import time
from pathlib import Path

import dagster as dg

from assets.catalog import CATALOG_FILE_TAG, CATALOG_PARTS_KEY, CATALOG_SHA256_TAG, catalog_parts
from assets.partitions import MERCHANTS, merchant_partitions
from illuma_pipelines.catalog import file_sha256, inbox_files
from illuma_pipelines.merchant_ids import MERCHANT_ID_PATTERN
from resources.inbox import InboxResource
from sensors.tags import MERCHANT_TAG

SETTLE_SECONDS = 10.0

catalog_import_job = dg.define_asset_job(
    "catalog_import_job",
    selection=dg.AssetSelection.assets(CATALOG_PARTS_KEY),
    partitions_def=merchant_partitions,
    description="Load catalog files of one merchant's inbox into its catalog tables.",
)


def _signature(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def catalog_run_request(merchant_id: str, path: Path, sha256: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"catalog:{merchant_id}:{sha256}",
        partition_key=merchant_id,
        run_config={"ops": {catalog_parts.op.name: {"config": {"file": path.name}}}},
        tags={MERCHANT_TAG: merchant_id, CATALOG_FILE_TAG: path.name, CATALOG_SHA256_TAG: sha256},
    )


@dg.sensor(
    job=catalog_import_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a catalog load for each new file in a merchant's catalog inbox folder "
    "(run key: merchant and the file's SHA-256, so a file never loads twice).",
)
def catalog_inbox_sensor(context: dg.SensorEvaluationContext, inbox: InboxResource) -> dg.SensorResult | dg.SkipReason:
    seen: dict[str, list[int]] = json.loads(context.cursor) if context.cursor else {}
    root = inbox.root_path()
    if not root.is_dir():
        return dg.SkipReason(f"no inbox folder {root}")
    merchants = set(context.instance.get_dynamic_partitions(MERCHANTS))
    now = time.time()
    requests, cursor, waiting = [], {}, []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        merchant_id = folder.name
        if not MERCHANT_ID_PATTERN.fullmatch(merchant_id) or merchant_id not in merchants:
            context.log.warning(f"inbox folder {folder} is not a registered merchant's: skipped")
            continue
        for path in inbox_files(inbox.merchant_dir(merchant_id, "catalog")):
            key = f"{merchant_id}/{path.name}"
            try:
                signature = _signature(path)
            except FileNotFoundError:
                continue  # removed meanwhile
            if seen.get(key) == signature:
                cursor[key] = signature
                continue
            if now - signature[1] / 1e9 < SETTLE_SECONDS:
                waiting.append(key)  # still being written, perhaps: next tick
                continue
            sha256 = file_sha256(path)
            cursor[key] = signature
            loaded = context.instance.get_run_records(
                dg.RunsFilter(tags={MERCHANT_TAG: merchant_id, CATALOG_SHA256_TAG: sha256}), limit=1
            )
            if loaded:
                context.log.info(f"{key}: the same content (sha256 {sha256[:12]}) was already requested; skipped")
                continue
            requests.append(catalog_run_request(merchant_id, path, sha256))
    note = f"; waiting for {', '.join(waiting)} to settle" if waiting else ""
    if not requests:
        return dg.SensorResult(skip_reason=f"no new catalog file{note}", cursor=json.dumps(cursor, sort_keys=True))
    context.log.info(f"requesting {len(requests)} catalog load(s){note}")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))
