"""`make demo`'s catalog path: the merchants' files dropped in the inbox as merchants drop them,
and the catalog inbox sensor evaluated against the Dagster instance, with its cursor kept there
(issue 14)."""

from __future__ import annotations

import os
import time

import dagster as dg

from assets.partitions import MERCHANTS
from illuma_pipelines.demo import catalog_sensor_requests, drop_files_in_inbox
from resources.inbox import InboxResource
from tests.sandbox_helpers import amazon_sandbox


def test_the_demo_drops_catalogs_and_the_sensor_requests_each_once(tmp_path):
    merchants = ["demo_inbox_a", "demo_inbox_b"]
    inbox = InboxResource(root=str(tmp_path / "inbox"))
    definitions = dg.Definitions(resources={"inbox": inbox})
    with amazon_sandbox() as sandbox:
        dropped = drop_files_in_inbox(sandbox.base_url, merchants, inbox.root_path())
    assert [p.parent for p in dropped] == [inbox.merchant_dir(m, "catalog") for m in merchants]
    assert all(p.read_text().startswith("SKU,Brand,MPN") for p in dropped)
    assert not list(tmp_path.rglob("*.part"))  # only whole files are left in the folder
    for m in merchants:
        assert (inbox.merchant_dir(m, "pricing_rules") / "pricing_rules.csv").read_text().startswith("part_type,")

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(MERCHANTS, merchants)
        requests = catalog_sensor_requests(instance, definitions)
        assert sorted(r.partition_key for r in requests) == merchants
        assert all(r.run_config["ops"]["catalog__parts"]["config"]["file"].endswith("-catalog.csv") for r in requests)
        # The cursor is kept on the instance: the same files are not requested again.
        assert catalog_sensor_requests(instance, definitions) == []
        # A merchant's new export is.
        drop = inbox.merchant_dir(merchants[0], "catalog") / "march.csv"
        drop.write_text("sku,unit_cost,cost_currency\nA-1,2.50,USD\n")
        settled = time.time() - 60
        os.utime(drop, (settled, settled))
        (again,) = catalog_sensor_requests(instance, definitions)
        assert again.partition_key == merchants[0] and again.tags["illuma/catalog_file"] == "march.csv"
