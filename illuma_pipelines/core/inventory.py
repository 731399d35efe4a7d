"""Daily inventory snapshots: one row per day, channel, marketplace and SKU from the inventory
extracts, mapped to the master part, with days of cover at the last 30 days' sales in that
marketplace and a stock-out flag.

Each marketplace's stock is its own pool (a DE/UK seller ships from two): Amazon summaries and
Walmart records carry the marketplace they were read in. eBay's inventory items are the seller's,
on every site: their rows carry CHANNEL_WIDE, and their cover counts the sales of every site.

The master part of a SKU comes from the merchant's catalog first (brand and MPN of its current part,
after supersession, in the catalog version valid at the end of the day), then from eBay's product
MPN (itself mapped through the catalog when the catalog knows that brand and MPN), then the SKU
itself; `part_match` says which (PART_MATCHES). So one part sold under three SKUs on three
channels is one master part."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from illuma_pipelines import normalize
from illuma_pipelines.catalog import (
    catalog_day_end,
    master_part_key,
    master_parts,
    master_parts_by_own_key,
)
from illuma_pipelines.core.tables import (
    CHANNEL_WIDE,
    INVENTORY_QUARANTINE_DATASET,
    INVENTORY_SNAPSHOTS,
    ORDER_LINES,
    ORDERS,
)
from illuma_pipelines.marketplaces import CHANNELS, normalizer
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.raw_records import (
    as_utc,
    empty_quarantine,
    quarantine_frame,
    raw_payloads,
    replace_day_and_quarantine,
)
from illuma_pipelines.warehouse import Connection, Warehouse

SALES_WINDOW_DAYS = 30
# `part_match`: where a snapshot row's master part came from.
CATALOG_MATCH, EBAY_MPN_MATCH, SKU_MATCH = "catalog", "ebay_mpn", "sku"
PART_MATCHES = (CATALOG_MATCH, EBAY_MPN_MATCH, SKU_MATCH)

Part = tuple[str, str | None, str | None]  # (master part, brand, MPN)


def _sum_known(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def master_parts_from_ebay(payloads: Iterable[dict]) -> dict[str, tuple[str, str | None]]:
    """SKU -> (MPN, brand) from eBay inventory items, which carry the product's MPN and brand."""
    out = {}
    for item in payloads:
        product = item.get("product") or {}
        mpn, sku = product.get("mpn"), item.get("sku")
        if isinstance(sku, str) and isinstance(mpn, str) and mpn.strip():
            brand = product.get("brand")
            out[sku] = (mpn.strip(), brand.strip() if isinstance(brand, str) and brand.strip() else None)
    return out


def master_part_of(
    sku: str,
    catalog: dict[str, Part],
    ebay: dict[str, tuple[str, str | None]],
    catalog_by_key: dict[str, Part] | None = None,
) -> tuple[Part, str]:
    """((master part, brand, MPN), part_match) of a SKU: the catalog, then eBay's MPN (mapped to the
    catalog's master part when the catalog lists that brand and MPN), then the SKU itself."""
    if sku in catalog:
        return catalog[sku], CATALOG_MATCH
    if sku in ebay:
        mpn, brand = ebay[sku]
        key = master_part_key(brand, mpn, sku)
        known = (catalog_by_key or {}).get(key)
        return (known if known else (key, brand, mpn)), EBAY_MPN_MATCH
    return (sku, None, None), SKU_MATCH


def master_part_columns(
    skus: Sequence[str | None],
    catalog: dict[str, Part],
    ebay: dict[str, tuple[str, str | None]] | None = None,
    catalog_by_key: dict[str, Part] | None = None,
) -> tuple[list[str | None], list[str | None]]:
    """(master parts, part matches) for a column of SKUs (order lines, say): the rule of
    `master_part_of`; a line without a SKU has neither."""
    masters: list[str | None] = []
    matches: list[str | None] = []
    ebay = ebay or {}
    for sku in skus:
        if not sku:
            masters.append(None)
            matches.append(None)
            continue
        (master, _, _), match = master_part_of(sku, catalog, ebay, catalog_by_key)
        masters.append(master)
        matches.append(match)
    return masters, matches


def snapshot_rows(
    records: Sequence[normalize.InventoryRecord],
    parts: dict[str, tuple[str, str | None]],
    units_sold: dict[tuple[str, str, str], int],
    snapshot_date: str,
    catalog: dict[str, Part] | None = None,
    catalog_by_key: dict[str, Part] | None = None,
) -> list[dict[str, Any]]:
    """One row per (channel, marketplace, SKU): location rows summed, mapped to the master part,
    with cover. `units_sold`: (channel, marketplace, SKU) -> units (`units_sold_last_30_days`); a
    CHANNEL_WIDE row's cover counts every marketplace's. `parts`: SKU -> (MPN, brand) from eBay;
    `catalog`: SKU -> (master part, brand, MPN) from the catalog (`catalog.master_parts`);
    `catalog_by_key`: the catalog's parts by their own `BRAND|MPN`
    (`catalog.master_parts_by_own_key`)."""
    catalog = catalog or {}
    grouped: dict[tuple[str, str, str], list[normalize.InventoryRecord]] = defaultdict(list)
    for rec in records:
        grouped[(rec.channel, rec.marketplace_id or CHANNEL_WIDE, rec.sku)].append(rec)
    sold_anywhere: dict[tuple[str, str], int] = defaultdict(int)
    for (channel, _, sku), units in units_sold.items():
        sold_anywhere[(channel, sku)] += units
    rows = []
    for (channel, marketplace, sku), recs in sorted(grouped.items()):
        qty = {
            name: _sum_known(getattr(r, name) for r in recs)
            for name in ("fulfillable", "inbound", "reserved", "unfulfillable", "merchant_fulfilled", "total_quantity")
        }
        available = (qty["fulfillable"] or 0) + (qty["merchant_fulfilled"] or 0)
        sold = (
            sold_anywhere.get((channel, sku), 0)
            if marketplace == CHANNEL_WIDE
            else units_sold.get((channel, marketplace, sku), 0)
        )
        (master, brand, mpn), match = master_part_of(sku, catalog, parts, catalog_by_key)
        stamps = [r.as_of for r in recs if r.as_of is not None]
        rows.append(
            {
                "snapshot_date": snapshot_date,
                "channel": channel,
                "marketplace_id": marketplace,
                "sku": sku,
                "master_part": master,
                "mpn": mpn,
                "brand": brand,
                "part_match": match,
                "asin_or_item_id": next((r.asin_or_item_id for r in recs if r.asin_or_item_id), None),
                **qty,
                "available": available,
                "units_sold_30d": sold,
                # Cover at the last 30 days' average daily sales; no sales: unbounded (None).
                "days_of_cover": round(available * SALES_WINDOW_DAYS / sold, 1) if sold else None,
                "stock_out": available == 0,
                "as_of": max(stamps) if stamps else None,
            }
        )
    return rows


def units_sold_last_30_days(conn: Connection, schema: str, snapshot_date: str) -> dict[tuple[str, str, str], int]:
    """(channel, marketplace, SKU) -> units ordered in the 30 days up to the snapshot day,
    cancellations excluded (an order without a marketplace counts under CHANNEL_WIDE)."""
    if not (conn.table_exists(schema, ORDERS.name) and conn.table_exists(schema, ORDER_LINES.name)):
        return {}
    end = datetime.fromisoformat(snapshot_date).replace(tzinfo=UTC) + timedelta(days=1)
    start = end - timedelta(days=SALES_WINDOW_DAYS)
    rows = conn.fetchall(
        f"SELECT l.channel, COALESCE(o.marketplace_id, '{CHANNEL_WIDE}'), l.sku, SUM(COALESCE(l.quantity_ordered, 0)) "
        f"FROM {schema}.{ORDER_LINES.name} l JOIN {schema}.{ORDERS.name} o "
        "ON o.channel = l.channel AND o.marketplace_order_id = l.marketplace_order_id "
        "WHERE o.purchased_at >= ? AND o.purchased_at < ? AND o.status <> 'cancelled' "
        "AND l.line_status <> 'cancelled' AND l.sku IS NOT NULL GROUP BY 1, 2, 3",
        [start, end],
    )
    return {(channel, marketplace, sku): int(units) for channel, marketplace, sku, units in rows}


def migrate_inventory_snapshots(conn: Connection, schema: str) -> None:
    """Give a snapshot table made before stock was read per marketplace its `marketplace_id` (in
    the key): its rows get CHANNEL_WIDE, as the marketplace they were read in was not recorded
    (the connection's first, for Amazon and Walmart). Nothing to do for a new or migrated table.

    PostgreSQL changes the table in place (a view reads it: it cannot be dropped); DuckDB cannot
    change a primary key, so the table is rebuilt under the same name in the transaction."""
    table = f"{schema}.{INVENTORY_SNAPSHOTS.name}"
    columns = conn.table_columns(schema, INVENTORY_SNAPSHOTS.name)
    if not columns or "marketplace_id" in columns:
        return
    if conn.dialect != "postgres":
        conn.rebuild_table(schema, INVENTORY_SNAPSHOTS, {"marketplace_id": CHANNEL_WIDE})
        return
    key = ", ".join(INVENTORY_SNAPSHOTS.primary_key)
    conn.execute(f"ALTER TABLE {table} ADD COLUMN marketplace_id TEXT")
    conn.execute(f"UPDATE {table} SET marketplace_id = ?", [CHANNEL_WIDE])
    conn.execute(f"ALTER TABLE {table} ALTER COLUMN marketplace_id SET NOT NULL")
    for (name,) in conn.fetchall(
        "SELECT constraint_name FROM information_schema.table_constraints "
        "WHERE table_schema = ? AND table_name = ? AND constraint_type = 'PRIMARY KEY'",
        [schema, INVENTORY_SNAPSHOTS.name],
    ):
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({key})")


@dataclass
class InventoryLoaded:
    """What `load_inventory_partition` wrote (the inventory_snapshots asset's metadata)."""

    rows: list[dict[str, Any]]
    rejected: int

    def metadata(self) -> dict[str, int]:
        matched = {m: sum(1 for r in self.rows if r["part_match"] == m) for m in PART_MATCHES}
        return {
            "rows": len(self.rows),
            "skus_mapped_by_catalog": matched[CATALOG_MATCH],
            "skus_mapped_by_ebay_mpn": matched[EBAY_MPN_MATCH],
            "skus_mapped_to_themselves": matched[SKU_MATCH],
            "master_parts": len({r["master_part"] for r in self.rows}),
            "stock_outs": sum(1 for r in self.rows if r["stock_out"]),
            "rejected": self.rejected,
            **{f"rows_{c}": sum(1 for r in self.rows if r["channel"] == c) for c in CHANNELS},
        }


_QUANTITIES = (
    "fulfillable", "inbound", "reserved", "unfulfillable", "merchant_fulfilled", "total_quantity", "available",
    "units_sold_30d",
)


def load_inventory_partition(wh: Warehouse, merchant_id: str, day: str, run_id: str) -> InventoryLoaded:
    """Replace the merchant's snapshot of `day` with one built from that day's inventory extracts
    of every channel; records the normalizers reject replace the day's inventory quarantine rows."""
    schema = merchant_schema(merchant_id)
    loaded_at = datetime.now(UTC)
    records: list[normalize.InventoryRecord] = []
    quarantine = []
    ebay_payloads: list[dict] = []
    with wh.merchant_scope(merchant_id) as conn:
        for channel in CHANNELS:
            rows = raw_payloads(conn, merchant_id, channel, "inventory", day)
            payloads = [normalize.loads(r[1]) for r in rows]
            if channel == "ebay":
                ebay_payloads = payloads
            as_of = max((as_utc(r[2]) for r in rows), default=None)
            part = normalizer(channel).normalize_inventory(payloads, as_of=as_of)
            records.extend(part.inventory)
            if part.rejects:
                quarantine.append(
                    quarantine_frame(
                        part.rejects, rows, dataset=INVENTORY_QUARANTINE_DATASET,
                        source=f"{channel}.normalize_inventory", partition_date=day, run_id=run_id,
                        rejected_alone=lambda text, c=channel, t=as_of: normalizer(c).normalize_inventory(
                            [normalize.loads(text)], as_of=t
                        ).rejects,
                    )
                )
        sold = units_sold_last_30_days(conn, schema, day)
        catalog = master_parts(conn, schema, catalog_day_end(day))
        catalog_by_key = master_parts_by_own_key(conn, schema, catalog_day_end(day))
    rows = snapshot_rows(records, master_parts_from_ebay(ebay_payloads), sold, day, catalog, catalog_by_key)
    frame = pd.DataFrame(rows, columns=[c.name for c in INVENTORY_SNAPSHOTS.columns if c.name not in ("loaded_at", "run_id")])
    for name in _QUANTITIES:
        frame[name] = frame[name].astype("Int64")
    frame["days_of_cover"] = frame["days_of_cover"].astype("Float64")
    frame["stock_out"] = frame["stock_out"].astype("boolean")
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True)
    frame["loaded_at"] = pd.Timestamp(loaded_at).as_unit("us")  # broadcast: no Python list per row
    frame["run_id"] = run_id
    rejects = pd.concat(quarantine) if quarantine else empty_quarantine()
    with wh.merchant_scope(merchant_id) as conn:
        migrate_inventory_snapshots(conn, schema)
        replace_day_and_quarantine(
            conn, schema, INVENTORY_SNAPSHOTS, {"snapshot_date": day}, frame,
            dataset=INVENTORY_QUARANTINE_DATASET, partition_date=day, rejects=rejects,
        )
    return InventoryLoaded(rows, len(rejects))
