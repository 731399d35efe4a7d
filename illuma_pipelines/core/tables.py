"""The core tables: each table's one definition (name, columns, key), read by the core loaders,
the quality checks, the PII purge, export, key rotation, the benchmarks and the tests."""

from __future__ import annotations

from illuma_pipelines.warehouse import TableSpec, cols

_PROVENANCE = ("partition_date date!", "loaded_at timestamptz!", "run_id text!")

ORDERS = TableSpec(
    "core_orders",
    cols(
        "channel text!", "marketplace_order_id text!", "marketplace_id text",
        "purchased_at timestamptz", "last_updated_at timestamptz", "shipped_at timestamptz",
        "delivered_at timestamptz", "status text!", "channel_status text!",
        "fulfillment_channel text!", "currency text", "order_total money", "items_subtotal money",
        "tax_total money", "shipping_total money", "promotion_total money",
        "marketplace_fee_total money", "is_business boolean", "country_code text",
        "other_charges_total money", *_PROVENANCE,
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
        "other_charges money",
        # The part sold: the catalog's (brand + MPN after supersession), else eBay's MPN, else
        # the SKU; `part_match` says which (as in core_inventory_snapshots).
        "master_part text", "part_match text", *_PROVENANCE,
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
# The buyer identity of an order: every one of these columns holds a vault ciphertext.
PII_COLUMNS = (
    "buyer_name", "buyer_email", "buyer_phone", "ship_name", "address_line1", "address_line2",
    "address_line3", "city", "state_or_region", "postal_code", "country_code",
)
BUYER_PII = TableSpec(
    "core_buyer_pii",
    cols(
        "channel text!", "marketplace_order_id text!", *(f"{c} text" for c in PII_COLUMNS), *_PROVENANCE,
        # The vault key version the row's values are sealed under (ADR 0007).
        "pii_key_version integer",
    ),
    primary_key=("channel", "marketplace_order_id"),
)
# One row per day, channel, marketplace and SKU: each marketplace's stock is a pool of its own
# (Amazon's Marketplace granularity, Walmart's WM_MARKET). A channel whose stock is not per
# marketplace (eBay's inventory items are the seller's, listed on every site), and rows landed
# before stock was read per marketplace, carry CHANNEL_WIDE (see migrate_inventory_snapshots).
CHANNEL_WIDE = "*"
INVENTORY_SNAPSHOTS = TableSpec(
    "core_inventory_snapshots",
    cols(
        "snapshot_date date!", "channel text!", "marketplace_id text!", "sku text!", "master_part text!",
        "mpn text", "brand text", "part_match text!", "asin_or_item_id text", "fulfillable integer",
        "inbound integer", "reserved integer", "unfulfillable integer", "merchant_fulfilled integer",
        "total_quantity integer", "available integer!", "units_sold_30d integer!",
        "days_of_cover double", "stock_out boolean!", "as_of timestamptz", "loaded_at timestamptz!",
        "run_id text!",
    ),
    primary_key=("snapshot_date", "channel", "marketplace_id", "sku"),
)
# The money (issue 15): a settlement is an Amazon settlement report, an eBay payout or a Walmart
# reconciliation report; its lines are every signed amount in it, each with our fee category
# (illuma_pipelines/settlements/vocab.py) beside the channel's own labels. `reported_total` is what
# the marketplace says it pays; `lines_total` the sum of the lines we stored; `difference` is
# reported - lines (never plugged). Financial events are the finance transactions (Amazon Finances
# 2024-06-19, eBay Finances) by component, before and after they settle.
SETTLEMENTS = TableSpec(
    "core_settlements",
    cols(
        "channel text!", "settlement_id text!", "kind text!", "marketplace_id text",
        "period_start timestamptz", "period_end timestamptz", "deposit_date date", "currency text!",
        "reported_total money", "lines_total money!", "line_count integer!", "difference money",
        "adds_up boolean!", "status text", *_PROVENANCE,
    ),
    primary_key=("channel", "settlement_id"),
)
SETTLEMENT_LINES = TableSpec(
    "core_settlement_lines",
    cols(
        "channel text!", "settlement_id text!", "line_seq integer!", "posted_at timestamptz",
        "posted_date date", "transaction_type text", "transaction_kind text!", "transaction_id text",
        "order_id text", "sku text", "product_id text", "quantity integer", "amount_type text",
        "amount_description text", "fee_category text!", "amount money!", "currency text!",
        "marketplace_id text", *_PROVENANCE,
    ),
    primary_key=("channel", "settlement_id", "line_seq"),
)
FINANCIAL_EVENTS = TableSpec(
    "core_financial_events",
    cols(
        "channel text!", "transaction_id text!", "transaction_type text!", "component_seq integer!",
        "transaction_kind text!", "status text", "posted_at timestamptz", "posted_date date",
        "order_id text", "sku text", "amount_type text", "amount_description text",
        "fee_category text!", "amount money!", "currency text!", "marketplace_id text",
        "group_id text", *_PROVENANCE,
    ),
    primary_key=("channel", "transaction_id", "transaction_type", "component_seq"),
)
MONEY_TABLES = (SETTLEMENTS, SETTLEMENT_LINES, FINANCIAL_EVENTS)
CORE_TABLES = (
    ORDERS, ORDER_LINES, ORDER_ADJUSTMENTS, ORDER_STATUS_HISTORY, BUYER_PII, INVENTORY_SNAPSHOTS,
    *MONEY_TABLES,
)

# `raw_quarantine.dataset` of the records the core normalizers reject.
ORDERS_QUARANTINE_DATASET = "core_orders"
INVENTORY_QUARANTINE_DATASET = "core_inventory_snapshots"
SETTLEMENTS_QUARANTINE_DATASET = "core_settlements"
FINANCIAL_EVENTS_QUARANTINE_DATASET = "core_financial_events"
