"""The catalog inbox sensor, evaluated for real against a Dagster instance: one run per new file,
none for a file seen before (by name, size and mtime, or by content), unknown folders skipped."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import dagster as dg

from assets.catalog import CATALOG_FILE_TAG, CATALOG_SHA256_TAG, catalog_assets
from assets.partitions import MERCHANTS
from illuma_pipelines.catalog import file_sha256
from illuma_pipelines.registry import add_merchant
from resources.inbox import InboxResource
from resources.warehouse import WarehouseResource
from sensors.catalog import SETTLE_SECONDS, catalog_import_job, catalog_inbox_sensor
from sensors.tags import MERCHANT_TAG

FIXTURES = Path(__file__).parent / "fixtures" / "catalog"
GOOD = FIXTURES / "parts_outdoor_power.csv"
BAD = FIXTURES / "parts_bad_rows.csv"


def _drop(folder: Path, source: Path, name: str | None = None, age: float = 60.0) -> Path:
    """Copy `source` into an inbox folder, as finished `age` seconds ago."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or source.name)
    shutil.copyfile(source, target)
    then = time.time() - age
    os.utime(target, (then, then))
    return target


def _tick(instance, inbox: InboxResource, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"inbox": inbox})
    result = catalog_inbox_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_one_run_per_new_file_and_none_for_a_seen_one(instance, merchant_id, tmp_path):
    mid = merchant_id("inbox")
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    inbox = InboxResource(root=str(tmp_path / "inbox"))
    folder = inbox.merchant_dir(mid, "catalog")
    first = _drop(folder, GOOD)
    # Folders that are not a registered merchant's, and files that are not catalogs: skipped.
    _drop(tmp_path / "inbox" / "not_registered" / "catalog", GOOD)
    _drop(tmp_path / "inbox" / "Bad-Name" / "catalog", GOOD)
    _drop(folder, GOOD, name="notes.txt")
    _drop(folder, GOOD, name=".~lock.parts.csv")
    # A link out of the merchant's folder (to another merchant's file, say) is never followed.
    (folder / "linked.csv").symlink_to(tmp_path / "inbox" / "not_registered" / "catalog" / GOOD.name)

    result = _tick(instance, inbox, None)
    (request,) = result.run_requests
    sha = file_sha256(first)
    assert request.run_key == f"catalog:{mid}:{sha}"
    assert request.partition_key == mid
    assert request.tags == {MERCHANT_TAG: mid, CATALOG_FILE_TAG: GOOD.name, CATALOG_SHA256_TAG: sha}
    assert request.run_config == {"ops": {"catalog__parts": {"config": {"file": GOOD.name}}}}
    assert json.loads(result.cursor) == {f"{mid}/{GOOD.name}": [first.stat().st_size, first.stat().st_mtime_ns]}

    # Seen: no request, however often the sensor runs.
    again = _tick(instance, inbox, result.cursor)
    assert again.run_requests == [] and "no new catalog file" in again.skip_reason.skip_message
    assert again.cursor == result.cursor

    # A new file: one request for it alone.
    second = _drop(folder, BAD)
    result = _tick(instance, inbox, again.cursor)
    (request,) = result.run_requests
    assert request.run_key == f"catalog:{mid}:{file_sha256(second)}" and request.tags[CATALOG_FILE_TAG] == BAD.name

    # A file still being written waits until it has settled.
    fresh = _drop(folder, GOOD, name="arriving.csv", age=0)
    fresh.write_text(fresh.read_text() + "NEW-9,Stens,9,Belt,,1.00,USD,,,,,,,,,,,,US,\n")
    waiting = _tick(instance, inbox, result.cursor)
    assert waiting.run_requests == [] and "arriving.csv to settle" in waiting.skip_reason.skip_message
    old = time.time() - SETTLE_SECONDS - 1
    os.utime(fresh, (old, old))
    (request,) = _tick(instance, inbox, waiting.cursor).run_requests
    assert request.tags[CATALOG_FILE_TAG] == "arriving.csv"


def test_a_file_whose_content_already_ran_is_not_requested_again(instance, warehouse, warehouse_url, merchant_id, tmp_path):
    mid = merchant_id("inbox")
    add_merchant(warehouse, mid)
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    inbox = InboxResource(root=str(tmp_path / "inbox"))
    folder = inbox.merchant_dir(mid, "catalog")
    _drop(folder, GOOD)
    result = _tick(instance, inbox, None)
    (request,) = result.run_requests
    # The run the sensor asked for, executed for real on this instance.
    defs = dg.Definitions(
        assets=catalog_assets, jobs=[catalog_import_job], sensors=[catalog_inbox_sensor],
        resources={"warehouse": WarehouseResource(url=warehouse_url), "inbox": inbox},
    )
    run = defs.resolve_job_def(catalog_import_job.name).execute_in_process(
        instance=instance, partition_key=request.partition_key, run_config=request.run_config, tags=request.tags,
    )
    assert run.success
    (mat,) = run.asset_materializations_for_node("catalog__parts")
    assert mat.metadata["parts_new"].value == 9

    # The same content renamed (a merchant re-sends last week's file): seen by its SHA-256.
    _drop(folder, GOOD, name="parts-resent.csv")
    resent = _tick(instance, inbox, result.cursor)
    assert resent.run_requests == []
    assert f"{mid}/parts-resent.csv" in json.loads(resent.cursor)
