"""The normalized core: orders, their lines, adjustments, status history, encrypted buyer PII and
daily inventory snapshots, built from the raw extracts of one merchant and day.

The assets are thin: they call the loaders in `illuma_pipelines.core` (which read the partition's
raw payloads, normalize, encrypt and write) and return what was written as metadata.
"""

from collections.abc import Iterable

import dagster as dg
from pydantic import Field

from assets.catalog import CATALOG_PARTS_KEY
from assets.concurrency import MERCHANT_STEP_TAGS, WAREHOUSE_POOL
from assets.extracts import EXTRACT_SPECS, extract_key
from assets.partitions import merchant_daily_partitions, partition_parts
from illuma_pipelines.core.inventory import load_inventory_partition
from illuma_pipelines.core.orders import (
    MAX_NORMALIZE_WORKERS,
    RAW_BATCH_RECORDS,
    load_orders_partition,
)
from illuma_pipelines.core.tables import (
    BUYER_PII,
    INVENTORY_QUARANTINE_DATASET,
    ORDERS_QUARANTINE_DATASET,
    SETTLEMENTS_QUARANTINE_DATASET,
)
from illuma_pipelines.marketplaces import CHANNELS
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.raw_records import QUARANTINE
from illuma_pipelines.registry import record_audit
from illuma_pipelines.settlements.load import load_money_partition
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource

KINDS = {"python", "duckdb", "postgres"}
OWNERS = ["team:data"]

ORDERS_KEY = dg.AssetKey(["core", "orders"])
ORDER_LINES_KEY = dg.AssetKey(["core", "order_lines"])
ORDER_ADJUSTMENTS_KEY = dg.AssetKey(["core", "order_adjustments"])
ORDER_STATUS_HISTORY_KEY = dg.AssetKey(["core", "order_status_history"])
BUYER_PII_KEY = dg.AssetKey(["core", "buyer_pii"])
INVENTORY_SNAPSHOTS_KEY = dg.AssetKey(["core", "inventory_snapshots"])
SETTLEMENTS_KEY = dg.AssetKey(["core", "settlements"])
SETTLEMENT_LINES_KEY = dg.AssetKey(["core", "settlement_lines"])
FINANCIAL_EVENTS_KEY = dg.AssetKey(["core", "financial_events"])
# The raw datasets that hold money: settlements, payouts and what they paid, finance transactions.
MONEY_DATASETS = ("settlement_reports", "financial_transactions", "payouts", "payout_transactions")


class CoreOrdersConfig(dg.Config):
    batch_records: int = Field(default=RAW_BATCH_RECORDS, ge=1, le=1_000_000)
    """Raw order records normalized, encrypted and committed at a time: memory grows with it."""
    workers: int | None = Field(default=None, ge=0, le=MAX_NORMALIZE_WORKERS)
    """Worker processes normalizing batches while the asset writes; unset: one per core when the
    day spans several batches; 0: normalize in the asset's own process."""


_ORDER_DATASETS = {channel: extract_key(channel, "orders") for channel in CHANNELS}


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
            deps=[ORDERS_KEY, CATALOG_PARTS_KEY],
            description="The lines of each current order (SKU, quantities, prices, taxes, "
            "promotions, other charges, the master part sold), replaced together with their order.",
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
    op_tags=MERCHANT_STEP_TAGS,
)
def core_orders(
    context: dg.AssetExecutionContext,
    config: CoreOrdersConfig,
    warehouse: WarehouseResource,
    vault: VaultResource,
) -> Iterable[dg.MaterializeResult]:
    merchant_id, day = partition_parts(context)
    wh = warehouse.get()
    run_id = context.run.run_id
    done = load_orders_partition(
        wh, vault.get(wh), merchant_id, day, run_id, batch_records=config.batch_records, workers=config.workers
    )
    context.log.info(
        f"{done.orders_in_partition} order record(s) of {merchant_id} {day} normalized in batches of "
        f"{config.batch_records} by {done.workers or 'no'} worker process(es)"
    )
    if done.rejected:
        context.log.warning(
            f"{done.rejected} order record(s) of {merchant_id} {day} rejected by the normalizers; "
            f"see {merchant_schema(merchant_id)}.{QUARANTINE.name} (dataset {ORDERS_QUARANTINE_DATASET})"
        )
    with wh.connect() as conn:
        record_audit(
            conn,
            actor=f"dagster:core/buyer_pii:{run_id}",
            action="pii.encrypted",
            merchant_id=merchant_id,
            details={"table": BUYER_PII.name, "partition_date": day, "rows": done.pii_written},
        )
    yield dg.MaterializeResult(
        asset_key=ORDERS_KEY,
        metadata={
            "orders_in_partition": done.orders_in_partition,
            "orders_written": done.orders_written,
            "older_than_stored": done.orders_in_partition - done.orders_written,
            "rejected": done.rejected,
            **{f"orders_{channel}": n for channel, n in done.per_channel.items()},
        },
    )
    yield dg.MaterializeResult(asset_key=ORDER_LINES_KEY, metadata={"lines_written": done.lines_written})
    yield dg.MaterializeResult(
        asset_key=ORDER_ADJUSTMENTS_KEY,
        metadata={
            "adjustments_written": done.adjustments_written,
            **{f"kind_{k}": v for k, v in sorted(done.adjustment_kinds.items())},
        },
    )
    yield dg.MaterializeResult(
        asset_key=ORDER_STATUS_HISTORY_KEY, metadata={"status_changes_appended": done.status_changes}
    )
    yield dg.MaterializeResult(asset_key=BUYER_PII_KEY, metadata={"pii_rows_written": done.pii_written})


@dg.asset(
    key=INVENTORY_SNAPSHOTS_KEY,
    deps=[*(extract_key(c, "inventory") for c in CHANNELS), ORDER_LINES_KEY, ORDERS_KEY, CATALOG_PARTS_KEY],
    partitions_def=merchant_daily_partitions,
    group_name="core",
    kinds=KINDS,
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    op_tags=MERCHANT_STEP_TAGS,
)
def inventory_snapshots(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One row per day, channel, marketplace and SKU from the inventory extracts (each marketplace's
    stock is its own pool; eBay's is the seller's, marketplace `*`): FBA/WFS fulfillable, inbound,
    reserved and unfulfillable, merchant-fulfilled (eBay, Walmart) stock, the master part (the
    catalog's brand and MPN after supersession, else eBay's MPN, else the SKU; `part_match` says
    which), days of cover at the last 30 days' sales there, and a stock-out flag."""
    merchant_id, day = partition_parts(context)
    done = load_inventory_partition(warehouse.get(), merchant_id, day, context.run.run_id)
    if done.rejected:
        context.log.warning(
            f"{done.rejected} inventory record(s) of {merchant_id} {day} rejected by the normalizers; "
            f"see {merchant_schema(merchant_id)}.{QUARANTINE.name} (dataset {INVENTORY_QUARANTINE_DATASET})"
        )
    return dg.MaterializeResult(metadata=done.metadata())


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            SETTLEMENTS_KEY,
            deps=[spec.key for spec in EXTRACT_SPECS if spec.dataset in MONEY_DATASETS],
            description="One row per settlement: an Amazon settlement report, an eBay payout or a "
            "Walmart reconciliation report, with its period, deposit date, the total the marketplace "
            "reports, the sum of its stored lines and whether they add up (the difference is never "
            "plugged).",
            group_name="core", kinds=KINDS, owners=OWNERS,
        ),
        dg.AssetSpec(
            SETTLEMENT_LINES_KEY,
            deps=[SETTLEMENTS_KEY],
            description="Every signed amount of each settlement: posted at (UTC), transaction type "
            "and kind, order, SKU, quantity, the channel's amount type and description and our fee "
            "category beside them (an unknown label lands as `other`, counted in the metadata).",
            group_name="core", kinds=KINDS, owners=OWNERS,
        ),
        dg.AssetSpec(
            FINANCIAL_EVENTS_KEY,
            deps=[SETTLEMENTS_KEY],
            description="Amazon Finances 2024-06-19 and eBay Finances transactions by component, "
            "categorized as settlement lines are, so an order's fees are known before its "
            "settlement closes.",
            group_name="core", kinds=KINDS, owners=OWNERS,
        ),
    ],
    partitions_def=merchant_daily_partitions,
    pool=WAREHOUSE_POOL,
    op_tags=MERCHANT_STEP_TAGS,
)
def core_money(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> Iterable[dg.MaterializeResult]:
    merchant_id, day = partition_parts(context)
    done = load_money_partition(warehouse.get(), merchant_id, day, context.run.run_id)
    for s in done.not_adding_up:
        context.log.warning(
            f"{s['channel']} settlement {s['settlement_id']} of {merchant_id} does not add up: reported "
            f"{s['reported_total']} {s['currency']}, lines {s['lines_total']} (difference {s['difference']})"
        )
    if done.rejects:
        context.log.warning(
            f"{len(done.rejects)} money record(s) or line(s) of {merchant_id} {day} could not be read; see "
            f"{merchant_schema(merchant_id)}.{QUARANTINE.name} (datasets {SETTLEMENTS_QUARANTINE_DATASET}, "
            "core_financial_events)"
        )
    labels = {f"{channel}: {label}": n for (channel, label), n in done.unknown_labels.most_common(20)}
    yield dg.MaterializeResult(
        asset_key=SETTLEMENTS_KEY,
        metadata={
            **done.settlement_metadata(),
            "flagged": [f"{s['channel']}:{s['settlement_id']} ({s['difference']})" for s in done.not_adding_up],
        },
    )
    yield dg.MaterializeResult(
        asset_key=SETTLEMENT_LINES_KEY,
        metadata={"lines": len(done.lines), "labels_as_other": sum(done.unknown_labels.values()), "other_labels": labels},
    )
    yield dg.MaterializeResult(asset_key=FINANCIAL_EVENTS_KEY, metadata=done.event_metadata())


core_assets = [core_orders, inventory_snapshots, core_money]
