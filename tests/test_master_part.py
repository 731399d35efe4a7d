"""One master part per physical part: the catalog first (brand and MPN after supersession), then
eBay's MPN, then the SKU; through the real inventory loader on both engines."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from assets.extracts import AMAZON_EXTRACTS, EBAY_EXTRACTS, WALMART_EXTRACTS
from illuma_pipelines.catalog import import_catalog_file
from illuma_pipelines.core.inventory import (
    CATALOG_MATCH,
    EBAY_MPN_MATCH,
    SKU_MATCH,
    load_inventory_partition,
)
from illuma_pipelines.core.tables import INVENTORY_SNAPSHOTS
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.raw_records import raw_table, split_records
from illuma_pipelines.registry import add_merchant

FIXTURES = Path(__file__).parent / "fixtures"
DAY = "2026-11-20"
SPECS = {s.channel: s for s in (*AMAZON_EXTRACTS, *EBAY_EXTRACTS, *WALMART_EXTRACTS) if s.dataset == "inventory"}
CATALOG = """sku,brand,mpn,part_type,unit_cost,cost_currency,superseded_by
AMZ-ACD-17D828,ACDelco,17D828,Brake Pad Set,21.80,USD,
WM-ACD-17D828-OLD,ACDelco,17D828-OLD,Brake Pad Set,20.10,USD,AMZ-ACD-17D828
EB-BS-593260,Briggs & Stratton,593260,Air Filter,6.42,USD,
"""


def _land(warehouse, mid, channel, records):
    spec = SPECS[channel]
    split = split_records(
        records, spec.rule, dataset=f"{channel}_inventory", source=f"{channel}.{spec.operation}", partition_date=DAY,
        window=(None, datetime.now(UTC)), extracted_at=datetime.now(UTC), run_id="test",
    )
    assert len(split.quarantine) == 0
    table = raw_table(channel, "inventory")
    with warehouse.merchant_scope(mid) as conn:
        conn.create_table(merchant_schema(mid), table)
        conn.replace_rows(merchant_schema(mid), table.name, {"partition_date": DAY}, split.raw)


def _amazon(sku: str, qty: int) -> dict:
    doc = json.loads((FIXTURES / "amazon" / "amazon_getInventorySummaries_sandbox_1.json").read_text())
    summary = doc["payload"]["inventorySummaries"][0]
    summary.update(sellerSku=sku, totalQuantity=qty)
    summary["inventoryDetails"]["fulfillableQuantity"] = qty
    return summary


def _ebay(sku: str, brand: str | None, mpn: str | None, qty: int) -> dict:
    doc = json.loads((FIXTURES / "ebay" / "ebay_getInventoryItems_doc_shape.json").read_text())
    item = doc["inventoryItems"][0]
    item["sku"] = sku
    item["product"].pop("mpn", None)
    item["product"].pop("brand", None)
    if mpn:
        item["product"]["mpn"] = mpn
    if brand:
        item["product"]["brand"] = brand
    item["availability"]["shipToLocationAvailability"]["quantity"] = qty
    return item


def test_one_part_on_three_channels_under_three_skus_is_one_master_part(warehouse, merchant_id, tmp_path):
    mid = merchant_id("parts")
    add_merchant(warehouse, mid)
    path = tmp_path / "catalog.csv"
    path.write_text(CATALOG)
    import_catalog_file(warehouse, mid, path, now=datetime(2026, 11, 1, tzinfo=UTC))
    _land(warehouse, mid, "amazon", [_amazon("AMZ-ACD-17D828", 5)])
    _land(warehouse, mid, "walmart", [
        {"sku": "WM-ACD-17D828-OLD", "quantity": {"unit": "EACH", "amount": 3}},
        {"sku": "WM-UNKNOWN-1", "quantity": {"unit": "EACH", "amount": 1}},
    ])
    _land(warehouse, mid, "ebay", [
        # Not in the catalog: eBay's brand and MPN (spelled its own way) meet the catalog's part.
        _ebay("EB-17D828-CERAMIC", "ACDELCO", "17d828", 2),
        # In the catalog: the catalog wins over what the listing says.
        _ebay("EB-BS-593260", "Briggs", "BS-593260-X", 4),
        # Neither: eBay's MPN alone.
        _ebay("EB-KOHLER-1", "Kohler", "12 050 01-S", 1),
    ])
    done = load_inventory_partition(warehouse, mid, DAY, "test")
    schema = merchant_schema(mid)
    with warehouse.merchant_scope(mid) as conn:
        rows = conn.fetchall(
            f"SELECT channel, sku, master_part, part_match, brand, mpn FROM {schema}.{INVENTORY_SNAPSHOTS.name} "
            "WHERE snapshot_date = ? ORDER BY channel, sku",
            [DAY],
        )
    got = {(channel, sku): (master, match, brand, mpn) for channel, sku, master, match, brand, mpn in rows}
    brake = "ACDELCO|17D828"
    assert got[("amazon", "AMZ-ACD-17D828")] == (brake, CATALOG_MATCH, "ACDelco", "17D828")
    assert got[("walmart", "WM-ACD-17D828-OLD")] == (brake, CATALOG_MATCH, "ACDelco", "17D828")
    assert got[("ebay", "EB-17D828-CERAMIC")] == (brake, EBAY_MPN_MATCH, "ACDelco", "17D828")
    assert got[("ebay", "EB-BS-593260")] == ("BRIGGS & STRATTON|593260", CATALOG_MATCH, "Briggs & Stratton", "593260")
    assert got[("ebay", "EB-KOHLER-1")] == ("KOHLER|12 050 01-S", EBAY_MPN_MATCH, "Kohler", "12 050 01-S")
    assert got[("walmart", "WM-UNKNOWN-1")] == ("WM-UNKNOWN-1", SKU_MATCH, None, None)
    # Three SKUs on three channels, one master part.
    assert {sku for (_, sku), v in got.items() if v[0] == brake} == {"AMZ-ACD-17D828", "WM-ACD-17D828-OLD", "EB-17D828-CERAMIC"}
    meta = done.metadata()
    assert (meta["skus_mapped_by_catalog"], meta["skus_mapped_by_ebay_mpn"], meta["skus_mapped_to_themselves"]) == (3, 2, 1)
    assert meta["master_parts"] == 4


def test_a_snapshot_uses_the_catalog_of_its_day(warehouse, merchant_id, tmp_path):
    """A supersession loaded after the day does not rewrite that day's master parts."""
    mid = merchant_id("parts")
    add_merchant(warehouse, mid)
    first = tmp_path / "first.csv"
    first.write_text("sku,brand,mpn,unit_cost,cost_currency\nOLD-1,Rotary,138024,3.10,USD\n")
    import_catalog_file(warehouse, mid, first, now=datetime(2026, 11, 1, tzinfo=UTC))
    later = tmp_path / "later.csv"
    later.write_text("sku,brand,mpn,unit_cost,cost_currency\nOLD-1 SUB= NEW-1,Rotary,138024,3.10,USD\nNEW-1,Rotary,145338,3.25,USD\n")
    import_catalog_file(warehouse, mid, later, now=datetime(2026, 11, 25, tzinfo=UTC))
    _land(warehouse, mid, "walmart", [{"sku": "OLD-1", "quantity": {"unit": "EACH", "amount": 3}}])
    load_inventory_partition(warehouse, mid, DAY, "test")
    with warehouse.merchant_scope(mid) as conn:
        (master,) = conn.fetchone(
            f"SELECT master_part FROM {merchant_schema(mid)}.{INVENTORY_SNAPSHOTS.name} WHERE sku = 'OLD-1'"
        )
    assert master == "ROTARY|138024"


def test_master_part_columns_follow_the_same_rule_for_order_lines():
    from illuma_pipelines.core.inventory import master_part_columns

    catalog = {"AMZ-1": ("ACDELCO|17D828", "ACDelco", "17D828")}
    by_key = {"ACDELCO|17D828": ("ACDELCO|17D828", "ACDelco", "17D828")}
    ebay = {"EB-1": ("17d828", "AcDelco"), "EB-2": ("BP-001", None)}
    masters, matches = master_part_columns(["AMZ-1", "EB-1", "EB-2", "WM-9", None], catalog, ebay, by_key)
    assert masters == ["ACDELCO|17D828", "ACDELCO|17D828", "|BP-001", "WM-9", None]
    assert matches == [CATALOG_MATCH, EBAY_MPN_MATCH, EBAY_MPN_MATCH, SKU_MATCH, None]
