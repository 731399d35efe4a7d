"""The normalized core: orders, their lines, adjustments, status history, encrypted buyer PII and
daily inventory snapshots, built from the raw extracts of one merchant and day.

Assets are thin: read the partition's raw payloads, call `illuma_pipelines.normalize`, write.
Orders are current-state tables keyed by (channel, marketplace_order_id): a partition replaces an
order (and its lines, adjustments and PII) only with a version at least as recent as the stored
one, so re-runs and out-of-order backfills never duplicate or regress an order. Records the
normalizers reject go to `raw_quarantine` with the reason; the rest lands.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import pandas as pd

from assets.extracts import WAREHOUSE_POOL
from assets.partitions import merchant_daily_partitions, partition_parts
from illuma_pipelines import normalize
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.normalize import BuyerPII, Order, OrderAdjustment, OrderLine
from illuma_pipelines.raw_records import QUARANTINE, raw_table
from illuma_pipelines.registry import CHANNELS, record_audit
from illuma_pipelines.warehouse import Connection, TableSpec, Warehouse, cols
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource

KINDS = {"python", "duckdb", "postgres"}
OWNERS = ["team:data"]
_PROVENANCE = ("partition_date date!", "loaded_at timestamptz!", "run_id text!")

ORDERS = TableSpec(
    "core_orders",
    cols(
        "channel text!", "marketplace_order_id text!", "marketplace_id text",
        "purchased_at timestamptz", "last_updated_at timestamptz", "shipped_at timestamptz",
        "delivered_at timestamptz", "status text!", "channel_status text!",
        "fulfillment_channel text!", "currency text", "order_total money", "items_subtotal money",
        "tax_total money", "shipping_total money", "promotion_total money",
        "marketplace_fee_total money", "is_business boolean", "country_code text", *_PROVENANCE,
    ),
    primary_key=("channel", "marketplace_order_id"),
)
ORDER_LINES = TableSpec(
    "core_order_lines",
    cols(
        "channel text!", "marketplace_order_id text!", "line_id text!", "sku text",
        "asin_or_item_id text", "title text", "quantity_ordered integer", "quantity_shipped integer",
        "unit_price money", "item_price money", "item_tax money", "shipping_price money",
        "shipping_tax money", "promotion_discount money", "gift_wrap_price money",
        "gift_wrap_tax money", "currency text", "line_status text!", "channel_line_status text",
        *_PROVENANCE,
    ),
    primary_key=("channel", "marketplace_order_id", "line_id"),
)
ORDER_ADJUSTMENTS = TableSpec(
    "core_order_adjustments",
    cols(
        "channel text!", "marketplace_order_id text!", "adjustment_seq integer!", "line_id text",
        "kind text!", "amount money", "currency text", "occurred_at timestamptz", "reason text",
        "adjustment_id text", "status text", *_PROVENANCE,
    ),
    primary_key=("channel", "marketplace_order_id", "adjustment_seq"),
)
ORDER_STATUS_HISTORY = TableSpec(
    "core_order_status_history",
    cols(
        "channel text!", "marketplace_order_id text!", "status text!", "previous_status text",
        "channel_status text!", "changed_at timestamptz", *_PROVENANCE,
    ),
)
PII_COLUMNS = (
    "buyer_name", "buyer_email", "buyer_phone", "ship_name", "address_line1", "address_line2",
    "address_line3", "city", "state_or_region", "postal_code", "country_code",
)
BUYER_PII = TableSpec(
    "core_buyer_pii",
    cols("channel text!", "marketplace_order_id text!", *(f"{c} text" for c in PII_COLUMNS), *_PROVENANCE),
    primary_key=("channel", "marketplace_order_id"),
)
INVENTORY_SNAPSHOTS = TableSpec(
    "core_inventory_snapshots",
    cols(
        "snapshot_date date!", "channel text!", "sku text!", "master_part text!", "mpn text",
        "brand text", "part_match text!", "asin_or_item_id text", "fulfillable integer",
        "inbound integer", "reserved integer", "unfulfillable integer", "merchant_fulfilled integer",
        "total_quantity integer", "available integer!", "units_sold_30d integer!",
        "days_of_cover double", "stock_out boolean!", "as_of timestamptz", "loaded_at timestamptz!",
        "run_id text!",
    ),
    primary_key=("snapshot_date", "sku", "channel"),
)
CORE_TABLES = (ORDERS, ORDER_LINES, ORDER_ADJUSTMENTS, ORDER_STATUS_HISTORY, BUYER_PII, INVENTORY_SNAPSHOTS)

ORDERS_KEY = dg.AssetKey(["core", "orders"])
ORDER_LINES_KEY = dg.AssetKey(["core", "order_lines"])
ORDER_ADJUSTMENTS_KEY = dg.AssetKey(["core", "order_adjustments"])
ORDER_STATUS_HISTORY_KEY = dg.AssetKey(["core", "order_status_history"])
BUYER_PII_KEY = dg.AssetKey(["core", "buyer_pii"])
INVENTORY_SNAPSHOTS_KEY = dg.AssetKey(["core", "inventory_snapshots"])
ORDERS_QUARANTINE_DATASET = "core_orders"
INVENTORY_QUARANTINE_DATASET = "core_inventory_snapshots"
SALES_WINDOW_DAYS = 30
_IN_CHUNK = 500


def _extract_key(channel: str, dataset: str) -> dg.AssetKey:
    return dg.AssetKey(["extracts", f"{channel}_{dataset}"])


# ------------------------------------------------------------------------------------ reading
def raw_payloads(
    conn: Connection, merchant_id: str, channel: str, dataset: str, partition_date: str
) -> list[tuple[str, str, datetime]]:
    """(record_key, payload JSON text, extracted_at) of one raw table's partition, in key order.

    The payload is read as text on both engines and parsed with `normalize.loads`, so amounts stay
    exact Decimals (psycopg would hand JSONB numbers over as floats).
    """
    schema, table = merchant_schema(merchant_id), raw_table(channel, dataset).name
    if not conn.table_exists(schema, table):
        return []
    return conn.fetchall(
        f"SELECT record_key, CAST(payload AS TEXT), extracted_at FROM {schema}.{table} "
        "WHERE partition_date = ? ORDER BY record_key",
        [partition_date],
    )


def quarantine_frame(
    rejects: Sequence[tuple[int | str, str]],
    rows: Sequence[tuple[str, str, datetime]],
    *,
    dataset: str,
    source: str,
    partition_date: str,
    run_id: str,
) -> pd.DataFrame:
    """raw_quarantine rows for normalizer rejects, keyed by position or record id."""
    position_of = {key: i for i, (key, _, _) in enumerate(rows)}
    out = []
    for ref, reason in rejects:
        position = ref if isinstance(ref, int) else position_of.get(ref, -1)
        payload = rows[position][1] if 0 <= position < len(rows) else None
        out.append(
            {
                "partition_date": partition_date,
                "dataset": dataset,
                "source": source,
                "position": position,
                "reason": reason,
                "payload": payload,
                "extracted_at": rows[position][2] if payload is not None else datetime.now(UTC),
                "run_id": run_id,
            }
        )
    return pd.DataFrame(out, columns=[c.name for c in QUARANTINE.columns])


# ------------------------------------------------------------------------------------ writing
def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _by_channel(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for channel, order_id in keys:
        grouped[channel].append(order_id)
    return grouped


def delete_orders(conn: Connection, schema: str, table: str, keys: Iterable[tuple[str, str]]) -> None:
    for channel, ids in _by_channel(keys).items():
        for chunk in _chunks(ids):
            marks = ", ".join("?" * len(chunk))
            conn.execute(
                f"DELETE FROM {schema}.{table} WHERE channel = ? AND marketplace_order_id IN ({marks})",
                [channel, *chunk],
            )


def stored_versions(
    conn: Connection, schema: str, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[datetime | None, date, str]]:
    """(last_updated_at, partition_date, status) of the stored current row of each order key."""
    found = {}
    for channel, ids in _by_channel(keys).items():
        for chunk in _chunks(ids):
            marks = ", ".join("?" * len(chunk))
            for order_id, updated, pdate, status in conn.fetchall(
                f"SELECT marketplace_order_id, last_updated_at, partition_date, status "
                f"FROM {schema}.{ORDERS.name} WHERE channel = ? AND marketplace_order_id IN ({marks})",
                [channel, *chunk],
            ):
                found[(channel, order_id)] = (updated, _as_date(pdate), status)
    return found


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def is_newer_or_same(
    incoming: tuple[datetime | None, date], stored: tuple[datetime | None, date] | None
) -> bool:
    """Whether an incoming order version replaces the stored one: a later update time wins, then a
    later partition; an equal version replaces it (a re-run), an older one never does."""
    if stored is None:
        return True
    return (incoming[0] or _EPOCH, incoming[1]) >= (stored[0] or _EPOCH, stored[1])


def _with_provenance(frame: pd.DataFrame, partition_date: str, loaded_at: datetime, run_id: str) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame["partition_date"] = partition_date
    frame["loaded_at"] = pd.Series([loaded_at] * len(frame), dtype="datetime64[us, UTC]")
    frame["run_id"] = run_id
    return frame


def adjustments_frame(adjustments: Sequence[OrderAdjustment]) -> pd.DataFrame:
    frame = normalize.to_frame(adjustments, OrderAdjustment)
    seq: dict[tuple[str, str], int] = defaultdict(int)
    numbers = []
    for adj in adjustments:
        key = (adj.channel, adj.marketplace_order_id)
        numbers.append(seq[key])
        seq[key] += 1
    frame.insert(2, "adjustment_seq", pd.Series(numbers, dtype="Int64"))
    return frame


def encrypted_pii_frame(vault: Any, merchant_id: str, pii: Sequence[BuyerPII]) -> pd.DataFrame:
    """The buyer PII rows with every PII column replaced by its vault ciphertext."""
    record_ids = [f"{p.channel}:{p.marketplace_order_id}" for p in pii]
    data: dict[str, Any] = {
        "channel": pd.Series([p.channel for p in pii], dtype="string"),
        "marketplace_order_id": pd.Series([p.marketplace_order_id for p in pii], dtype="string"),
    }
    for column in PII_COLUMNS:
        values = [getattr(p, column) for p in pii]
        data[column] = pd.Series(
            vault.encrypt_column(merchant_id, BUYER_PII.name, column, record_ids, values), dtype="string"
        )
    return pd.DataFrame(data)


# ------------------------------------------------------------------------------------- orders
_ORDER_DATASETS = {channel: _extract_key(channel, "orders") for channel in CHANNELS}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            ORDERS_KEY,
            deps=list(_ORDER_DATASETS.values()),
            description="One current row per marketplace order (channel, marketplace_order_id), "
            "normalized from the Amazon, eBay and Walmart order extracts; a later extract updates "
            "the order in place. Amounts are exact decimals.",
            group_name="core", kinds=KINDS, owners=OWNERS,
        ),
        dg.AssetSpec(
            ORDER_LINES_KEY,
            deps=[ORDERS_KEY],
            description="The lines of each current order (SKU, quantities, prices, taxes, "
            "promotions), replaced together with their order.",
            group_name="core", kinds=KINDS, owners=OWNERS,
        ),
        dg.AssetSpec(
            ORDER_ADJUSTMENTS_KEY,
            deps=[ORDERS_KEY],
            description="Refunds, returns and cancellations of each current order, one row each, "
            "with the positive amount given back and its kind.",
            group_name="core", kinds=KINDS, owners=OWNERS,
        ),
        dg.AssetSpec(
            ORDER_STATUS_HISTORY_KEY,
            deps=[ORDERS_KEY],
            description="One row each time an order's status changes (and when it is first "
            "seen), with the previous status; re-runs append nothing.",
            group_name="core", kinds=KINDS, owners=OWNERS,
        ),
        dg.AssetSpec(
            BUYER_PII_KEY,
            deps=[ORDERS_KEY],
            description="Buyer and ship-to identity per order, every column encrypted by the PII "
            "vault (AES-256-GCM, bound to the order), kept apart from the order facts so purging "
            "PII never touches them.",
            group_name="core", kinds=KINDS, owners=OWNERS,
        ),
    ],
    partitions_def=merchant_daily_partitions,
    pool=WAREHOUSE_POOL,
)
def core_orders(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, vault: VaultResource
) -> Iterable[dg.MaterializeResult]:
    merchant_id, day = partition_parts(context)
    wh = warehouse.get()
    schema = merchant_schema(merchant_id)
    run_id, loaded_at = context.run.run_id, datetime.now(UTC)
    pdate = date.fromisoformat(day)

    # Normalizing allocates hundreds of containers per record and keeps every row of the
    # partition alive until the write, so automatic cyclic GC would re-walk them (and the whole
    # process) again and again. The rows hold no reference cycles: refcounting frees them, and
    # any cycle made meanwhile (pandas, drivers) is collected once GC resumes.
    with normalize.paused_gc():
        result = normalize.NormalizeResult()
        quarantine: list[pd.DataFrame] = []
        per_channel: dict[str, int] = {}
        with wh.merchant_scope(merchant_id) as conn:
            for channel in CHANNELS:
                rows = raw_payloads(conn, merchant_id, channel, "orders", day)
                part = normalize.normalize_order_payloads(channel, (r[1] for r in rows))
                per_channel[channel] = len(part.orders)
                for name in ("orders", "lines", "adjustments", "pii"):
                    getattr(result, name).extend(getattr(part, name))
                if part.rejects:
                    quarantine.append(
                        quarantine_frame(
                            part.rejects, rows, dataset=ORDERS_QUARANTINE_DATASET,
                            source=f"{channel}.normalize_orders", partition_date=day, run_id=run_id,
                        )
                    )

        keys = [(o.channel, o.marketplace_order_id) for o in result.orders]
        # Encrypt before opening the write transaction: the vault may touch its key store first.
        pii_frame = encrypted_pii_frame(vault.get(wh), merchant_id, result.pii)
        with wh.merchant_scope(merchant_id) as conn:
            for spec in (ORDERS, ORDER_LINES, ORDER_ADJUSTMENTS, ORDER_STATUS_HISTORY, BUYER_PII, QUARANTINE):
                conn.create_table(schema, spec)
            stored = stored_versions(conn, schema, keys)
            winners: list[Order] = []
            history: list[dict[str, Any]] = []
            for order in result.orders:
                key = (order.channel, order.marketplace_order_id)
                previous = stored.get(key)
                if not is_newer_or_same((order.last_updated_at, pdate), previous and previous[:2]):
                    continue
                winners.append(order)
                previous_status = previous[2] if previous else None
                if previous_status != str(order.status):
                    history.append(
                        {
                            "channel": order.channel,
                            "marketplace_order_id": order.marketplace_order_id,
                            "status": str(order.status),
                            "previous_status": previous_status,
                            "channel_status": order.channel_status,
                            "changed_at": order.last_updated_at,
                        }
                    )
            won = {(o.channel, o.marketplace_order_id) for o in winners}

            def keep(rows: Sequence[Any]) -> list[Any]:
                return [r for r in rows if (r.channel, r.marketplace_order_id) in won]

            lines, adjustments = keep(result.lines), keep(result.adjustments)
            won_pii = [
                (c, o) in won for c, o in zip(pii_frame["channel"], pii_frame["marketplace_order_id"], strict=True)
            ]
            pii_rows = pii_frame.loc[pd.Series(won_pii, index=pii_frame.index, dtype=bool)]
            frames = {
                ORDERS.name: normalize.to_frame(winners, Order),
                ORDER_LINES.name: normalize.to_frame(lines, OrderLine),
                ORDER_ADJUSTMENTS.name: adjustments_frame(adjustments),
                BUYER_PII.name: pii_rows,
            }
            for table, frame in frames.items():
                delete_orders(conn, schema, table, sorted(won))
                conn.load_frame(schema, table, _with_provenance(frame, day, loaded_at, run_id))
            history_frame = pd.DataFrame(
                history,
                columns=["channel", "marketplace_order_id", "status", "previous_status", "channel_status", "changed_at"],
            )
            history_frame["changed_at"] = pd.to_datetime(history_frame["changed_at"], utc=True)
            conn.load_frame(schema, ORDER_STATUS_HISTORY.name, _with_provenance(history_frame, day, loaded_at, run_id))
            rejects = pd.concat(quarantine) if quarantine else pd.DataFrame(columns=[c.name for c in QUARANTINE.columns])
            conn.replace_rows(
                schema, QUARANTINE.name, {"partition_date": day, "dataset": ORDERS_QUARANTINE_DATASET}, rejects
            )
        if len(rejects):
            context.log.warning(
                f"{len(rejects)} order record(s) of {merchant_id} {day} rejected by the normalizers; "
                f"see {schema}.{QUARANTINE.name} (dataset {ORDERS_QUARANTINE_DATASET})"
            )
        with wh.connect() as conn:
            record_audit(
                conn,
                actor=f"dagster:core/buyer_pii:{run_id}",
                action="pii.encrypted",
                merchant_id=merchant_id,
                details={"table": BUYER_PII.name, "partition_date": day, "rows": len(pii_rows)},
            )

    kinds = defaultdict(int)
    for adj in adjustments:
        kinds[str(adj.kind)] += 1
    yield dg.MaterializeResult(
        asset_key=ORDERS_KEY,
        metadata={
            "orders_in_partition": len(result.orders),
            "orders_written": len(winners),
            "older_than_stored": len(result.orders) - len(winners),
            "rejected": len(rejects),
            **{f"orders_{channel}": n for channel, n in per_channel.items()},
        },
    )
    yield dg.MaterializeResult(asset_key=ORDER_LINES_KEY, metadata={"lines_written": len(lines)})
    yield dg.MaterializeResult(
        asset_key=ORDER_ADJUSTMENTS_KEY,
        metadata={"adjustments_written": len(adjustments), **{f"kind_{k}": v for k, v in sorted(kinds.items())}},
    )
    yield dg.MaterializeResult(asset_key=ORDER_STATUS_HISTORY_KEY, metadata={"status_changes_appended": len(history)})
    yield dg.MaterializeResult(asset_key=BUYER_PII_KEY, metadata={"pii_rows_written": len(pii_rows)})


# ---------------------------------------------------------------------------------- inventory
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


def snapshot_rows(
    records: Sequence[normalize.InventoryRecord],
    parts: dict[str, tuple[str, str | None]],
    units_sold: dict[tuple[str, str], int],
    snapshot_date: str,
) -> list[dict[str, Any]]:
    """One row per (channel, SKU): location rows summed, mapped to the master part, with cover."""
    grouped: dict[tuple[str, str], list[normalize.InventoryRecord]] = defaultdict(list)
    for rec in records:
        grouped[(rec.channel, rec.sku)].append(rec)
    rows = []
    for (channel, sku), recs in sorted(grouped.items()):
        qty = {
            name: _sum_known(getattr(r, name) for r in recs)
            for name in ("fulfillable", "inbound", "reserved", "unfulfillable", "merchant_fulfilled", "total_quantity")
        }
        available = (qty["fulfillable"] or 0) + (qty["merchant_fulfilled"] or 0)
        sold = units_sold.get((channel, sku), 0)
        mpn, brand = parts.get(sku, (None, None))
        stamps = [r.as_of for r in recs if r.as_of is not None]
        rows.append(
            {
                "snapshot_date": snapshot_date,
                "channel": channel,
                "sku": sku,
                "master_part": f"{brand or ''}|{mpn}" if mpn else sku,
                "mpn": mpn,
                "brand": brand,
                "part_match": "mpn" if mpn else "sku",
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


def units_sold_last_30_days(conn: Connection, schema: str, snapshot_date: str) -> dict[tuple[str, str], int]:
    """(channel, SKU) -> units ordered in the 30 days up to the snapshot day, cancellations excluded."""
    if not (conn.table_exists(schema, ORDERS.name) and conn.table_exists(schema, ORDER_LINES.name)):
        return {}
    end = datetime.fromisoformat(snapshot_date).replace(tzinfo=UTC) + timedelta(days=1)
    start = end - timedelta(days=SALES_WINDOW_DAYS)
    rows = conn.fetchall(
        f"SELECT l.channel, l.sku, SUM(COALESCE(l.quantity_ordered, 0)) "
        f"FROM {schema}.{ORDER_LINES.name} l JOIN {schema}.{ORDERS.name} o "
        "ON o.channel = l.channel AND o.marketplace_order_id = l.marketplace_order_id "
        "WHERE o.purchased_at >= ? AND o.purchased_at < ? AND o.status <> 'cancelled' "
        "AND l.line_status <> 'cancelled' AND l.sku IS NOT NULL GROUP BY l.channel, l.sku",
        [start, end],
    )
    return {(channel, sku): int(units) for channel, sku, units in rows}


def _normalize_inventory(channel: str, records: list[dict], as_of: datetime | None) -> normalize.NormalizeResult:
    module = getattr(normalize, channel)
    return module.normalize_inventory(records, as_of=as_of)


@dg.asset(
    key=INVENTORY_SNAPSHOTS_KEY,
    deps=[*(_extract_key(c, "inventory") for c in CHANNELS), ORDER_LINES_KEY, ORDERS_KEY],
    partitions_def=merchant_daily_partitions,
    group_name="core",
    kinds=KINDS,
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
)
def inventory_snapshots(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One row per day, SKU and channel from the inventory extracts: FBA/WFS fulfillable, inbound,
    reserved and unfulfillable, merchant-fulfilled (eBay, Walmart) stock, the master part (MPN and
    brand from eBay's product data where listed, else the SKU itself), days of cover at the last 30
    days' sales from core order lines, and a stock-out flag."""
    merchant_id, day = partition_parts(context)
    wh: Warehouse = warehouse.get()
    schema = merchant_schema(merchant_id)
    run_id, loaded_at = context.run.run_id, datetime.now(UTC)
    records: list[normalize.InventoryRecord] = []
    quarantine = []
    ebay_payloads: list[dict] = []
    with wh.merchant_scope(merchant_id) as conn:
        for channel in CHANNELS:
            rows = raw_payloads(conn, merchant_id, channel, "inventory", day)
            payloads = [normalize.loads(r[1]) for r in rows]
            if channel == "ebay":
                ebay_payloads = payloads
            as_of = max((r[2] for r in rows), default=None)
            part = _normalize_inventory(channel, payloads, as_of)
            records.extend(part.inventory)
            if part.rejects:
                quarantine.append(
                    quarantine_frame(
                        part.rejects, rows, dataset=INVENTORY_QUARANTINE_DATASET,
                        source=f"{channel}.normalize_inventory", partition_date=day, run_id=run_id,
                    )
                )
        sold = units_sold_last_30_days(conn, schema, day)
    parts = master_parts_from_ebay(ebay_payloads)
    rows = snapshot_rows(records, parts, sold, day)
    frame = pd.DataFrame(rows, columns=[c.name for c in INVENTORY_SNAPSHOTS.columns if c.name not in ("loaded_at", "run_id")])
    for name in ("fulfillable", "inbound", "reserved", "unfulfillable", "merchant_fulfilled", "total_quantity", "available", "units_sold_30d"):
        frame[name] = frame[name].astype("Int64")
    frame["days_of_cover"] = frame["days_of_cover"].astype("Float64")
    frame["stock_out"] = frame["stock_out"].astype("boolean")
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True)
    frame["loaded_at"] = pd.Series([loaded_at] * len(frame), dtype="datetime64[us, UTC]")
    frame["run_id"] = run_id
    rejects = pd.concat(quarantine) if quarantine else pd.DataFrame(columns=[c.name for c in QUARANTINE.columns])
    with wh.merchant_scope(merchant_id) as conn:
        conn.create_table(schema, INVENTORY_SNAPSHOTS)
        conn.create_table(schema, QUARANTINE)
        conn.replace_rows(schema, INVENTORY_SNAPSHOTS.name, {"snapshot_date": day}, frame)
        conn.replace_rows(
            schema, QUARANTINE.name, {"partition_date": day, "dataset": INVENTORY_QUARANTINE_DATASET}, rejects
        )
    if len(rejects):
        context.log.warning(
            f"{len(rejects)} inventory record(s) of {merchant_id} {day} rejected by the normalizers; "
            f"see {schema}.{QUARANTINE.name} (dataset {INVENTORY_QUARANTINE_DATASET})"
        )
    mapped = sum(1 for r in rows if r["part_match"] == "mpn")
    return dg.MaterializeResult(
        metadata={
            "rows": len(rows),
            "skus_mapped_to_mpn": mapped,
            "skus_mapped_to_themselves": len(rows) - mapped,
            "stock_outs": sum(1 for r in rows if r["stock_out"]),
            "rejected": len(rejects),
            **{f"rows_{c}": sum(1 for r in rows if r["channel"] == c) for c in CHANNELS},
        }
    )


core_assets = [core_orders, inventory_snapshots]
