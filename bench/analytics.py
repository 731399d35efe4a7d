"""Benchmark: one merchant's analytics dbt build (issue 15) against the same SQL run in the engine.

    .venv/bin/python bench/analytics.py [--order-lines 1000000] [--skus 20000] [--engines duckdb,postgres]
        [--repeat] [--keep]

One merchant with a year of history, written straight into its core tables as the core loaders
store them (each table's one TableSpec, provenance columns filled, `partition_date` the day a row
landed), generated in the engine (generate_series) for speed, deterministically:
- `--order-lines` order lines (1.25 per order; Amazon 60 %, eBay 30 %, Walmart 10 % of orders),
  purchased evenly over the 366 days 2025-01-01..2026-01-01, shipped a day or two later (one
  order in 97 cancelled), one line in 50 refunded three to four weeks after shipping;
- their settlement lines (principal, shipping, commission, FBA/WFS fulfillment or eBay shipping
  label, and for refunds the principal given back, the commission returned and a refund
  administration fee), in 26 biweekly Amazon settlements, daily eBay payouts and biweekly Walmart
  reconciliation reports; each settlement also carries lines of no order (storage, advertising,
  subscription, FBA inbound with a shipment id, Amazon reserves held and released), and one in six
  is short of its reported total (flagged, as in the sandbox);
- Amazon and eBay finance transactions (commission and fulfillment per sale), landed daily;
- the parts catalog (catalog.CATALOG_PARTS) with unit costs, one SKU in ten re-costed mid-year,
  one in fifty absent; inventory snapshots of the last 30 days (all SKUs on Amazon, half on eBay,
  a quarter on Walmart).

Per engine, in a throwaway warehouse (bench/common.py; dbt runs as the analytics asset runs it:
build_dbt_vars, dbt_target, resources.dbt_executable, the merchant's own login and password env on
PostgreSQL, the merchant's own file on DuckDB), each dbt step a subprocess of its own:
1. full: `dbt build --full-refresh` as of the last day of history;
2. a new day lands (2026-01-02: its orders, the orders shipped or delivered that day re-landed, the
   eBay payout, finance transactions, inventory snapshots), then `dbt build` as of that day:
   the incremental daily build, and its split into models and tests (dbt's own node timings);
3. direct: `dbt compile` as of the new day, then the compiled SQL of every model the incremental
   build ran, in its order, run in the engine over one connection as dbt's materializations would
   (table: DROP + CREATE TABLE AS; view: DROP + CREATE VIEW; incremental append: the model's
   pre-hook DELETE, as the build rendered it, + INSERT; delete+insert: the pre-hook, CREATE TEMP
   TABLE AS, DELETE by unique key, INSERT), then the compiled tests wrapped as dbt wraps them; on
   DuckDB with the engine settings dbt's profile gives it; only engine statements are timed, and
   on DuckDB the close of the file (the checkpoint that folds what they wrote into it, deferred
   to the close by dbt's `checkpoint_threshold` in both runs: dbt's process pays it as it exits);
4. dbt's own invocation cost: `dbt build` selecting nothing (start-up, project load, connection),
   the same parsing the whole project anew (what every build paid while the build's day was a
   var: any change of --vars makes dbt parse anew), `dbt run` of the one-row `fee_categories`
   model, and the incremental build minus the direct SQL.
Every dbt step runs as the asset runs it: seeded with the merchant's kept parse (the previous
step's), which it updates after; the first, with none, parses the project.
Each dbt step also prints where its time went, from dbt's JSON log: start-up (interpreter and
imports), parse, nodes, end, exit (closing the file), and the engine's time on dbt's own
statements; and the slowest nodes
of the daily build with dbt's node time, its statements' time and the direct SQL's.

Prints the data volumes, each figure and the peak RSS of each dbt process (/usr/bin/time; on
PostgreSQL the server's memory is not in it) and of this process (data generation and the direct
SQL on DuckDB run in it). Goals (issue 15): incremental daily build <= 1.5 x the direct SQL, and
<= 10 s on DuckDB.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import throwaway_warehouse_url  # noqa: E402

MERCHANT = "bench_analytics"
# What dagster-dbt adds to the environment of every dbt process it starts (no usage statistics).
DAGSTER_DBT_ENV = {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
START = date(2025, 1, 1)
HISTORY_DAYS = 366  # days 0..365: 2025-01-01..2026-01-01, the last day of history
LAST_DAY = HISTORY_DAYS - 1
NEW_DAY = HISTORY_DAYS
REFUND_EVERY = 50  # one order line in 50 is refunded
CANCEL_EVERY = 97
SHORT_EVERY = 6  # one settlement in six is short of its reported total (by 1.23)
MARKETPLACES = {"amazon": "ATVPDKIKX0DER", "ebay": "EBAY_US", "walmart": "WALMART_US"}


def day_sql(n: int | str) -> str:
    return f"(DATE '{START.isoformat()}' + CAST(({n}) AS INTEGER))"


def ts_sql(day: str, second: str) -> str:
    """The UTC instant `second` seconds into day number `day`."""
    return f"(TIMESTAMPTZ '{START.isoformat()} 00:00:00+00' + CAST((({day}) * 86400 + ({second})) AS BIGINT) * INTERVAL '1 second')"


def money_sql(cents: str) -> str:
    # Exact on both engines (DuckDB divides decimals in floating point, so no division here).
    return f"(CAST(({cents}) AS DECIMAL(18, 0)) * 0.01)"


def text_sql(n: str, width: int = 0) -> str:
    return f"lpad(CAST(({n}) AS VARCHAR), {width}, '0')" if width else f"CAST(({n}) AS VARCHAR)"


@dataclass
class Dialect:
    """The few things our generator SQL writes differently on the two engines."""

    name: str

    def div(self, a: str, b: str) -> str:
        """Integer division of non-negative integers."""
        return f"(({a}) // ({b}))" if self.name == "duckdb" else f"(({a}) / ({b}))"


# Settlement components: (channel, kind, transaction_type, amount_type, description, formula).
# Categories and kinds come from the vocabulary, as the settlement loader assigns them.
COMPONENTS = (
    ("amazon", "sale", "Order", "ItemPrice", "Principal", "item"),
    ("amazon", "sale", "Order", "ItemPrice", "Shipping", "ship"),
    ("amazon", "sale", "Order", "ItemFees", "Commission", "commission"),
    ("amazon", "sale", "Order", "ItemFees", "FBAPerUnitFulfillmentFee", "fulfillment"),
    ("amazon", "refund", "Refund", "ItemPrice", "Principal", "-item"),
    ("amazon", "refund", "Refund", "ItemFees", "Commission", "-commission"),
    ("amazon", "refund", "Refund", "ItemFees", "RefundCommission", "refund_admin"),
    ("ebay", "sale", "SALE", "SALE", None, "item"),
    ("ebay", "sale", "SALE", "SHIPPING", None, "ship"),
    ("ebay", "sale", "SALE", "FINAL_VALUE_FEE", None, "commission"),
    ("ebay", "sale", "SHIPPING_LABEL", "SHIPPING_LABEL", None, "fulfillment"),
    ("ebay", "refund", "REFUND", "REFUND", None, "-item"),
    ("ebay", "refund", "REFUND", "FINAL_VALUE_FEE", None, "-commission"),
    ("walmart", "sale", "SALE", "Product Price", None, "item"),
    ("walmart", "sale", "SALE", "Shipping Price", None, "ship"),
    ("walmart", "sale", "SALE", "Commission on Product", None, "commission"),
    ("walmart", "sale", "WFS Fee", "WFS Fulfillment Fee", None, "fulfillment"),
    ("walmart", "refund", "REFUND", "Product Price", None, "-item"),
    ("walmart", "refund", "REFUND", "Commission on Product", None, "-commission"),
    ("walmart", "refund", "REFUND", "Refund Administration Fee", None, "refund_admin"),
)
# Lines of no order, per settlement: (channel, seq, transaction_type, amount_type, description,
# cents expression over the settlement number k, order id expression or None, when).
POOL_LINES = (
    ("amazon", 1, "Previous Reserve Amount Balance", "other-transaction", "Previous Reserve Amount Balance",
     "100000 + ((k - 1) % 5) * 10000", None, "k > 0"),
    ("amazon", 2, "Current Reserve Amount", "other-transaction", "Current Reserve Amount",
     "-(100000 + (k % 5) * 10000)", None, "true"),
    ("amazon", 3, "Storage Fee", "other-transaction", "Storage Fee", "-(25000 + (k % 7) * 1731)", None, "k % 2 = 1"),
    ("amazon", 4, "ServiceFee", "Cost of Advertising", "TransactionTotalAmount", "-(60000 + (k % 9) * 2311)", None, "true"),
    ("amazon", 5, "Subscription Fee", "other-transaction", "Subscription Fee", "-3999", None, "k % 2 = 0"),
    ("amazon", 6, "FBA Inventory Fee", "other-transaction", "FBAInboundTransportationFee", "-(8000 + (k % 4) * 997)",
     "'FBA15' || lpad(CAST(k AS VARCHAR), 6, '0')", "true"),
    ("ebay", 1, "NON_SALE_CHARGE", "AD_FEE", None, "-(1500 + (k % 11) * 137)", None, "true"),
    ("ebay", 2, "NON_SALE_CHARGE", "SUBSCRIPTION_FEE", None, "-2795", None, "k % 30 = 0"),
    ("walmart", 1, "WFS Fee", "WFS Storage Fee", None, "-(9000 + (k % 5) * 733)", None, "true"),
    ("walmart", 2, "Fee", "Sponsored Products Fee", None, "-(12000 + (k % 3) * 1009)", None, "true"),
)


def settlement_schedule(channel: str, d: Dialect, posted_day: str) -> tuple[str, str]:
    """(settlement number, deposit day) of a line posted on day `posted_day`: Amazon settlements
    cover 14 days from day 0 and are deposited the day after; eBay pays each day out the next day;
    Walmart's reports cover 14 days from day -7 and are paid two days after."""
    if channel == "amazon":
        k = d.div(posted_day, "14")
        return k, f"({k} * 14 + 15)"
    if channel == "ebay":
        return f"({posted_day})", f"(({posted_day}) + 1)"
    k = d.div(f"({posted_day}) + 7", "14")
    return k, f"({k} * 14 + 9)"


def period_sql(channel: str) -> tuple[str, str]:
    """(first day, last day) of settlement number k."""
    return {"amazon": ("k * 14", "k * 14 + 13"), "ebay": ("k", "k"), "walmart": ("k * 14 - 7", "k * 14 + 6")}[channel]


def settlement_id_sql(channel: str) -> str:
    return {
        "amazon": "'2' || lpad(CAST(k AS VARCHAR), 10, '0')",
        "ebay": "'7' || lpad(CAST(k AS VARCHAR), 9, '0')",
        "walmart": "'RR-' || lpad(CAST(k AS VARCHAR), 6, '0')",
    }[channel]


def order_id_sql() -> str:
    return (
        "CASE WHEN o % 10 < 6 THEN '114-' || lpad(CAST(o AS VARCHAR), 7, '0') || '-' || lpad(CAST((o * 7919) % 10000000 AS VARCHAR), 7, '0')"
        " WHEN o % 10 < 9 THEN '12-' || lpad(CAST(o % 99991 AS VARCHAR), 5, '0') || '-' || lpad(CAST(o AS VARCHAR), 7, '0')"
        " ELSE CAST(108000000000000 + o AS VARCHAR) END"
    )


@dataclass
class Shape:
    orders: int  # over the year of history
    skus: int

    def first_order(self, day: int) -> int:
        """The first order number purchased on `day` (orders are spread evenly over the year)."""
        return -(-day * self.orders // HISTORY_DAYS) + 1


def series(first: int | str, last: int | str) -> str:
    """generate_series over BIGINT on both engines (products of order numbers overflow INTEGER)."""
    return f"generate_series(CAST({first} AS BIGINT), CAST({last} AS BIGINT))"


def _fill(conn, *, schema: str, d: Dialect, shape: Shape, first_day: int, horizon: int, after: int) -> None:
    """Land what the core loaders would hold at the end of day `horizon`: the orders purchased
    from `first_day` on (those already there are replaced, as the loader replaces by key), the
    settlements deposited and refunds and finance transactions posted after day `after`, the
    inventory snapshots of the last 30 days up to `horizon` (at most) and, the first time, the
    catalog. Scratch tables in the merchant's schema hold the orders' attributes meanwhile."""
    from illuma_pipelines.settlements import vocab

    o_lo, o_hi = shape.first_order(first_day), shape.first_order(horizon + 1) - 1
    # The orders whose sales or refunds can post after `after` (refunds: up to 31 days after the sale).
    o_scratch = shape.first_order(max(0, after - 50)) if after >= 0 else 1
    loaded = ts_sql(str(horizon), "6 * 3600")
    run_id = "'bench-analytics'"
    for scratch in ("bench_settle", "bench_lines", "bench_orders"):
        conn.execute(f"DROP TABLE IF EXISTS {schema}.{scratch}")
    conn.execute(f"""
        CREATE TABLE {schema}.bench_orders AS
        SELECT o, channel, order_id, day_p, sec, ship_day,
            CASE WHEN o % {CANCEL_EVERY} = 0 THEN 'cancelled'
                 WHEN ship_day > {horizon} THEN 'unshipped'
                 WHEN ship_day + 4 <= {horizon} THEN 'delivered' ELSE 'shipped' END AS status
        FROM (
            SELECT o, day_p, (o * 7919) % 86400 AS sec, day_p + 1 + CASE WHEN o % 3 = 0 THEN 1 ELSE 0 END AS ship_day,
                CASE WHEN o % 10 < 6 THEN 'amazon' WHEN o % 10 < 9 THEN 'ebay' ELSE 'walmart' END AS channel,
                {order_id_sql()} AS order_id
            FROM (SELECT o, {d.div(f"(o - 1) * {HISTORY_DAYS}", str(shape.orders))} AS day_p
                  FROM {series(o_scratch, o_hi)} AS g(o)) AS numbered
        ) AS base
    """)
    conn.execute(f"""
        CREATE TABLE {schema}.bench_lines AS
        SELECT x.*, 'SKU-' || lpad(CAST(s AS VARCHAR), 6, '0') AS sku, (500 + (s * 379) % 20000) * qty AS item_cents,
            CASE WHEN channel = 'amazon' OR l > 1 THEN 0 ELSE 599 END AS ship_cents,
            (o * l) % {REFUND_EVERY} = 3 AND status <> 'cancelled' AS refunded,
            ship_day + 20 + o % 10 AS refund_day
        FROM (
            SELECT b.*, g.l, (b.o * 31 + g.l * 17) % {shape.skus} AS s, CASE WHEN b.o % 5 = 0 THEN 2 ELSE 1 END AS qty
            FROM {schema}.bench_orders AS b JOIN {series(1, 2)} AS g(l) ON g.l = 1 OR b.o % 4 = 0
        ) AS x
    """)
    # ---- orders and lines (replaced from first_day on)
    if first_day > 0:
        since = ts_sql(str(first_day), "0")
        conn.execute(f"""DELETE FROM {schema}.core_order_lines WHERE EXISTS (
            SELECT 1 FROM {schema}.core_orders AS o WHERE o.channel = core_order_lines.channel
              AND o.marketplace_order_id = core_order_lines.marketplace_order_id AND o.purchased_at >= {since})""")
        conn.execute(f"DELETE FROM {schema}.core_orders WHERE purchased_at >= {since}")
    shipped = "status IN ('shipped', 'delivered')"
    landed = f"CASE WHEN status = 'delivered' THEN ship_day + 4 WHEN {shipped} THEN ship_day ELSE day_p END"
    tax = d.div("item_cents * 7", "100")
    conn.execute(f"""
        INSERT INTO {schema}.core_order_lines (channel, marketplace_order_id, line_id, sku, asin_or_item_id, title,
            quantity_ordered, quantity_shipped, unit_price, item_price, item_tax, shipping_price, shipping_tax,
            promotion_discount, currency, line_status, channel_line_status, master_part, part_match,
            partition_date, loaded_at, run_id)
        SELECT channel, order_id, CAST(l AS VARCHAR), sku, 'B0' || lpad(CAST(s AS VARCHAR), 8, '0'),
            'Part ' || sku, qty, CASE WHEN {shipped} THEN qty ELSE 0 END,
            {money_sql(d.div('item_cents', 'qty'))}, {money_sql('item_cents')}, {money_sql(tax)},
            {money_sql('ship_cents')}, {money_sql('0')}, {money_sql('0')}, 'USD', status, status,
            CASE WHEN s % 50 = 7 THEN sku ELSE 'BR' || CAST(s % 10 AS VARCHAR) || '|MPN' || lpad(CAST(s AS VARCHAR), 6, '0') END,
            CASE WHEN s % 50 = 7 THEN 'sku' ELSE 'catalog' END,
            {day_sql(landed)}, {loaded}, {run_id}
        FROM {schema}.bench_lines WHERE o >= {o_lo}
    """)
    conn.execute(f"""
        INSERT INTO {schema}.core_orders (channel, marketplace_order_id, marketplace_id, purchased_at, last_updated_at,
            shipped_at, delivered_at, status, channel_status, fulfillment_channel, currency, order_total,
            items_subtotal, tax_total, shipping_total, promotion_total, marketplace_fee_total, is_business,
            country_code, partition_date, loaded_at, run_id)
        SELECT channel, order_id, {_marketplace_case('channel')}, {ts_sql('day_p', 'sec')}, {ts_sql(landed, 'sec')},
            CASE WHEN {shipped} THEN {ts_sql('ship_day', 'sec')} END,
            CASE WHEN status = 'delivered' THEN {ts_sql('ship_day + 4', 'sec')} END,
            status, status, CASE WHEN channel = 'amazon' THEN 'AFN' ELSE 'MFN' END, 'USD',
            {money_sql(f"items + ship + {d.div('items * 7', '100')}")}, {money_sql('items')},
            {money_sql(d.div('items * 7', '100'))}, {money_sql('ship')}, {money_sql('0')}, NULL, false, 'US',
            {day_sql(landed)}, {loaded}, {run_id}
        FROM {schema}.bench_orders AS b
        JOIN (SELECT o AS t_o, sum(item_cents) AS items, sum(ship_cents) AS ship FROM {schema}.bench_lines GROUP BY o) AS t
            ON t.t_o = b.o
        WHERE b.o >= {o_lo}
    """)
    conn.execute(f"""
        INSERT INTO {schema}.core_order_adjustments (channel, marketplace_order_id, adjustment_seq, line_id, kind,
            amount, currency, occurred_at, reason, adjustment_id, status, partition_date, loaded_at, run_id)
        SELECT channel, order_id, l, CAST(l AS VARCHAR), 'refund', {money_sql('-item_cents')}, 'USD',
            {ts_sql('refund_day', 'sec')}, 'CustomerReturn', 'R' || CAST(o AS VARCHAR) || '-' || CAST(l AS VARCHAR),
            'completed', {day_sql('refund_day')}, {loaded}, {run_id}
        FROM {schema}.bench_lines
        WHERE refunded AND refund_day > {after} AND refund_day <= {horizon}
    """)

    # ---- settlement lines of the orders, then the lines of no order, then the settlements
    comp_rows = []
    for i, (channel, kind, ttype, atype, desc, formula) in enumerate(COMPONENTS):
        category, known = vocab.fee_category(channel, atype, desc)
        assert known, (channel, atype, desc)
        comp_rows.append(
            f"({i}, '{channel}', '{kind}', '{ttype}', '{atype}', {_lit(desc)}, '{category}', "
            f"'{vocab.transaction_kind(channel, ttype)}', '{formula}')"
        )
    components = (
        "(VALUES " + ", ".join(comp_rows) + ") AS c(comp, c_channel, kind, ttype, atype, descr, category, tkind, formula)"
    )
    # Over bench_lines × components: the line's signed amount in cents.
    commission = d.div("item_cents * CASE channel WHEN 'ebay' THEN 13 ELSE 15 END + 50", "100")
    cents = f"""CASE formula
        WHEN 'item' THEN item_cents WHEN '-item' THEN -item_cents WHEN 'ship' THEN ship_cents
        WHEN 'commission' THEN -{commission} WHEN '-commission' THEN {commission}
        WHEN 'fulfillment' THEN -(CASE channel WHEN 'ebay' THEN 450 ELSE 310 END + 55 * qty)
        WHEN 'refund_admin' THEN -least(500, {d.div(commission, '5')}) END"""
    unions = []
    for channel in MARKETPLACES:
        k, deposit = settlement_schedule(channel, d, "posted_day")
        unions.append(f"""
            SELECT y.*, {k} AS k, {deposit} AS deposit_day
            FROM (
                SELECT channel, o, l, comp, ttype, atype, descr, category, tkind, order_id, sku, s,
                    CASE WHEN formula IN ('item', '-item') THEN qty END AS quantity, sec,
                    CASE WHEN kind = 'sale' THEN ship_day ELSE refund_day END AS posted_day, {cents} AS cents
                FROM {schema}.bench_lines JOIN {components} ON c_channel = channel
                WHERE channel = '{channel}' AND status IN ('shipped', 'delivered')
                    AND (kind = 'sale' OR refunded) AND (formula <> 'ship' OR ship_cents > 0)
            ) AS y""")
    conn.execute(f"""
        CREATE TABLE {schema}.bench_settle AS
        SELECT * FROM ({' UNION ALL '.join(unions)}) AS z
        WHERE posted_day <= {horizon} AND deposit_day > {after} AND deposit_day <= {horizon}
    """)
    conn.execute(f"""
        INSERT INTO {schema}.core_settlement_lines (channel, settlement_id, line_seq, posted_at, posted_date,
            transaction_type, transaction_kind, transaction_id, order_id, sku, product_id, quantity, amount_type,
            amount_description, fee_category, amount, currency, marketplace_id, partition_date, loaded_at, run_id)
        SELECT channel, {_settlement_id_case()}, 100 + row_number() OVER (PARTITION BY channel, k ORDER BY o, l, comp),
            {ts_sql('posted_day', 'sec')}, {day_sql('posted_day')}, ttype, tkind,
            order_id || '-' || CAST(l AS VARCHAR), order_id, sku, 'B0' || lpad(CAST(s AS VARCHAR), 8, '0'), quantity,
            atype, descr, category, {money_sql('cents')}, 'USD', {_marketplace_case('channel')},
            {day_sql('deposit_day')}, {loaded}, {run_id}
        FROM {schema}.bench_settle
    """)
    for channel in MARKETPLACES:
        first, last = period_sql(channel)
        k_hi = {"amazon": horizon // 14, "ebay": horizon, "walmart": (horizon + 7) // 14}[channel]
        _k, deposit = settlement_schedule(channel, d, last)
        closed = f"{deposit} > {after} AND {deposit} <= {horizon}"
        for ch, seq, ttype, atype, desc, amount, order_expr, when in POOL_LINES:
            if ch != channel:
                continue
            category, known = vocab.fee_category(channel, atype, desc)
            assert known, (channel, atype, desc)
            conn.execute(f"""
                INSERT INTO {schema}.core_settlement_lines (channel, settlement_id, line_seq, posted_at, posted_date,
                    transaction_type, transaction_kind, order_id, amount_type, amount_description, fee_category,
                    amount, currency, marketplace_id, partition_date, loaded_at, run_id)
                SELECT '{channel}', {settlement_id_sql(channel)}, {seq}, {ts_sql(last, '43200')}, {day_sql(last)},
                    '{ttype}', '{vocab.transaction_kind(channel, ttype)}', {order_expr or 'NULL'}, '{atype}',
                    {_lit(desc)}, '{category}', {money_sql(amount)}, 'USD', '{MARKETPLACES[channel]}',
                    {day_sql(deposit)}, {loaded}, {run_id}
                FROM {series(0, k_hi)} AS g(k)
                WHERE {when} AND {closed}
            """)
        kind = {"amazon": "settlement", "ebay": "payout", "walmart": "recon_report"}[channel]
        conn.execute(f"""
            INSERT INTO {schema}.core_settlements (channel, settlement_id, kind, marketplace_id, period_start,
                period_end, deposit_date, currency, reported_total, lines_total, line_count, difference, adds_up,
                status, partition_date, loaded_at, run_id)
            SELECT '{channel}', sid, '{kind}', '{MARKETPLACES[channel]}', {ts_sql(first, '0')},
                {ts_sql(last, '86399')}, {day_sql(deposit)}, 'USD', total + short, total, n, short, short = 0,
                'closed', {day_sql(deposit)}, {loaded}, {run_id}
            FROM (
                SELECT k, {settlement_id_sql(channel)} AS sid,
                    CASE WHEN k % {SHORT_EVERY} = {SHORT_EVERY - 1} THEN 1.23 ELSE 0 END AS short
                FROM {series(0, k_hi)} AS g(k)
                WHERE {closed}
            ) AS s
            JOIN (SELECT settlement_id, sum(amount) AS total, count(*) AS n FROM {schema}.core_settlement_lines
                  WHERE channel = '{channel}' GROUP BY settlement_id) AS t ON t.settlement_id = s.sid
        """)

    # ---- finance transactions: the Amazon and eBay fees of each sale, on its posting day
    conn.execute(f"""
        INSERT INTO {schema}.core_financial_events (channel, transaction_id, transaction_type, component_seq,
            transaction_kind, status, posted_at, posted_date, order_id, sku, amount_type, amount_description,
            fee_category, amount, currency, marketplace_id, group_id, partition_date, loaded_at, run_id)
        SELECT channel, order_id || '-' || CAST(l AS VARCHAR), ttype, comp, tkind, 'RELEASED',
            {ts_sql('ship_day', 'sec')}, {day_sql('ship_day')}, order_id, sku, atype, descr, category,
            {money_sql(cents)}, 'USD', {_marketplace_case('channel')}, NULL, {day_sql('ship_day')}, {loaded}, {run_id}
        FROM {schema}.bench_lines JOIN {components} ON c_channel = channel
        WHERE formula IN ('commission', 'fulfillment') AND kind = 'sale' AND channel IN ('amazon', 'ebay')
            AND status IN ('shipped', 'delivered') AND ship_day > {after} AND ship_day <= {horizon}
    """)

    # ---- inventory snapshots of the last 30 days (at most) up to the horizon
    sku = "'SKU-' || lpad(CAST(s AS VARCHAR), 6, '0')"
    conn.execute(f"""
        INSERT INTO {schema}.core_inventory_snapshots (snapshot_date, channel, marketplace_id, sku, master_part, mpn, brand, part_match,
            asin_or_item_id, fulfillable, inbound, reserved, unfulfillable, merchant_fulfilled, total_quantity,
            available, units_sold_30d, days_of_cover, stock_out, as_of, loaded_at, run_id)
        SELECT {day_sql('day')}, channel, '*', {sku},
            CASE WHEN s % 50 = 7 THEN {sku} ELSE 'BR' || CAST(s % 10 AS VARCHAR) || '|MPN' || lpad(CAST(s AS VARCHAR), 6, '0') END,
            'MPN' || lpad(CAST(s AS VARCHAR), 6, '0'), 'BR' || CAST(s % 10 AS VARCHAR),
            CASE WHEN s % 50 = 7 THEN 'sku' ELSE 'catalog' END, 'B0' || lpad(CAST(s AS VARCHAR), 8, '0'),
            qty, (s % 7) * 3, s % 3, 0, 0, qty + (s % 7) * 3 + s % 3, qty, (s * 13) % 41, NULL, qty = 0,
            {ts_sql('day', '7200')}, {loaded}, {run_id}
        FROM (
            SELECT day, s, channel, greatest((s * 7 + day * 3) % 60 - 5, 0) AS qty
            FROM {series(max(after + 1, horizon - 29), horizon)} AS dd(day)
            CROSS JOIN {series(0, shape.skus - 1)} AS ss(s)
            JOIN (VALUES ('amazon', 1), ('ebay', 2), ('walmart', 4)) AS ch(channel, every) ON s % every = 0
        ) AS base
    """)

    # ---- the parts catalog, the first time: a version per SKU, a second for one in ten (re-costed mid-year)
    if after < 0:
        for version, valid_from, valid_to, cost, where in (
            (1, "TIMESTAMPTZ '2024-01-01 00:00:00+00'", f"CASE WHEN s % 10 = 3 THEN {ts_sql('181', '0')} END",
             "300 + (s * 211) % 12000", "true"),
            (2, ts_sql("181", "0"), "NULL", d.div("(300 + (s * 211) % 12000) * 21", "20"), "s % 10 = 3"),
        ):
            conn.execute(f"""
                INSERT INTO {schema}.catalog_parts (sku, brand, mpn, part_type, gtin, unit_cost, cost_currency,
                    landed_cost, current_sku, master_part, source_file, source_sha256, source_row, valid_from,
                    valid_to, loaded_at, content_hash)
                SELECT {sku}, 'BR' || CAST(s % 10 AS VARCHAR), 'MPN' || lpad(CAST(s AS VARCHAR), 6, '0'), 'Filter',
                    lpad(CAST(s * 104729 AS VARCHAR), 12, '0'), {money_sql(cost)}, 'USD', NULL,
                    {sku}, 'BR' || CAST(s % 10 AS VARCHAR) || '|MPN' || lpad(CAST(s AS VARCHAR), 6, '0'),
                    'parts-v{version}.csv', '{str(version) * 64}', s + 2, {valid_from}, {valid_to}, {loaded},
                    'h{version}-' || CAST(s AS VARCHAR)
                FROM {series(0, shape.skus - 1)} AS g(s)
                WHERE s % 50 <> 7 AND {where}
            """)
    for scratch in ("bench_settle", "bench_lines", "bench_orders"):
        conn.execute(f"DROP TABLE {schema}.{scratch}")


def _lit(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def _marketplace_case(column: str) -> str:
    return "CASE " + column + "".join(f" WHEN '{c}' THEN '{m}'" for c, m in MARKETPLACES.items()) + " END"


def _settlement_id_case() -> str:
    return "CASE channel " + "".join(f" WHEN '{c}' THEN {settlement_id_sql(c)}" for c in MARKETPLACES) + " END"


SOURCE_COUNTS = (
    "core_orders", "core_order_lines", "core_order_adjustments", "core_settlements", "core_settlement_lines",
    "core_financial_events", "core_inventory_snapshots", "catalog_parts",
)


def land(wh, engine: str, shape: Shape, *, first_day: int, horizon: int, after: int) -> float:
    """Land the data as the merchant (its own file; its own login, in one transaction); on
    PostgreSQL the tables are analyzed after, as autovacuum would have before a build. Over plain
    engine connections: the warehouse's execute() reads `?` and `%` as parameter marks on
    PostgreSQL, and the generator's SQL is full of modulo signs."""
    from illuma_pipelines.merchant_ids import merchant_schema

    schema = merchant_schema(MERCHANT)
    fill = functools.partial(_fill, schema=schema, d=Dialect(engine), shape=shape, first_day=first_day,
                             horizon=horizon, after=after)
    started = time.perf_counter()
    if engine == "duckdb":
        import duckdb

        # Statement by statement, without the pipeline's memory cap: the loaders land a year in
        # daily units; one transaction of all of it (and its key indexes) would not fit in 512 MB.
        con = duckdb.connect(str(wh.merchant_file(MERCHANT)))
        try:
            fill(con)
        finally:
            con.close()
        return time.perf_counter() - started
    import psycopg

    dsn, password = wh.merchant_dsn(MERCHANT)
    with psycopg.connect(dsn, password=password) as con:
        fill(con)
        con.commit()
        for table in SOURCE_COUNTS:
            con.execute(f"ANALYZE {schema}.{table}")
    return time.perf_counter() - started


def counts(wh) -> dict[str, int]:
    from illuma_pipelines.merchant_ids import merchant_schema

    schema = merchant_schema(MERCHANT)
    with wh.merchant_scope(MERCHANT) as conn:
        return {t: conn.fetchone(f"SELECT count(*) FROM {schema}.{t}")[0] for t in SOURCE_COUNTS}


# ------------------------------------------------------------------------------------ dbt


@dataclass
class DbtRun:
    seconds: float
    max_rss_mb: float
    work: Path
    results: dict = field(default_factory=dict)
    started_at: float = 0.0  # the process's start and end, wall clock (time.time())
    ended_at: float = 0.0

    def nodes(self, kind: str) -> list[dict]:
        return [r for r in self.results.get("results", []) if r["unique_id"].startswith(kind + ".")]

    def node_seconds(self, kind: str) -> float:
        return sum(r["execution_time"] for r in self.nodes(kind))

    def log_events(self) -> Iterator[dict]:
        with open(self.work / "logs" / "dbt.log") as fh:
            for line in fh:
                if line.startswith("{"):
                    yield json.loads(line)

    def phases(self) -> dict[str, float]:
        """Where the invocation's wall time went, from dbt's own log: start-up (interpreter and
        imports, before dbt's first event), project load and parse, the nodes, the end (artifacts),
        the exit (after dbt's last event: on DuckDB, closing the file folds the write-ahead log into
        it, the checkpoint `checkpoint_threshold` defers to the close) and the engine's time as dbt
        measured it (each statement's `SQL status: OK in` seconds)."""
        ts: dict[str, float] = {}
        engine: dict[str, float] = {}
        for event in self.log_events():
            name = event["info"]["name"]
            at = datetime.fromisoformat(event["info"]["ts"].replace("Z", "+00:00")).timestamp()
            ts.setdefault(name, at)
            if name in ("FinishedRunningStats", "CommandCompleted"):
                ts[name] = at
            if name == "SQLQueryStatus":
                node = (event["data"].get("node_info") or {}).get("unique_id", "-")
                engine[node] = engine.get(node, 0.0) + float(event["data"]["elapsed"])
        first = ts["MainReportVersion"]
        out = {
            "start-up": first - self.started_at,
            "parse": ts.get("FoundStats", first) - first,
            "nodes": ts.get("FinishedRunningStats", ts["CommandCompleted"]) - ts.get("FoundStats", first),
            "end": ts["CommandCompleted"] - ts.get("FinishedRunningStats", ts["CommandCompleted"]),
            "exit": self.ended_at - ts["CommandCompleted"],
            "engine (dbt's statements)": sum(engine.values()),
        }
        self.engine_by_node = engine
        return out

    def partial_parse(self) -> str:
        for event in self.log_events():
            if event["info"]["name"] in ("UnableToPartialParse", "PartialParsingNotEnabled", "PartialParsingEnabled"):
                return event["info"]["msg"]
        return "partial parse used"


def run_dbt(wh, url: str, as_of: str, work: Path, *args: str, keep_parse: bool = True) -> DbtRun:
    """One dbt invocation as the analytics asset makes it (its vars, target, environment), by
    subprocess, with a target and log path of its own seeded with the merchant's kept parse, which
    it updates after (`keep_parse`), or, without, with the project's partial_parse.msgpack as
    dagster-dbt seeds it (what every build parsed before the parse was kept); wall time and the dbt
    process's peak RSS (measured by /usr/bin/time: a child forked from this process would count
    our pages too)."""
    from illuma_pipelines.dbt_vars import (
        build_dbt_vars,
        dbt_target,
        keep_partial_parse,
        merchant_parse_cache,
        seed_partial_parse,
    )
    from illuma_pipelines.paths import DBT_PROJECT_DIR
    from resources import dbt_executable

    dbt_vars, dbt_env = build_dbt_vars(MERCHANT, as_of, wh)
    cache = merchant_parse_cache(work.parent / "merchant_parse", dbt_target(url), MERCHANT)
    (work / "target").mkdir(parents=True, exist_ok=True)
    if keep_parse:
        seed_partial_parse(cache, work / "target")
    elif (DBT_PROJECT_DIR / "target" / "partial_parse.msgpack").exists():
        shutil.copy(DBT_PROJECT_DIR / "target" / "partial_parse.msgpack", work / "target")
    rss_file = work / "maxrss.txt"
    command = [
        "/usr/bin/time", "-f", "%M", "-o", str(rss_file),
        dbt_executable(), *args[:1], "--target", dbt_target(url), "--vars", json.dumps(dbt_vars),
        "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
        "--target-path", str(work / "target"), "--log-path", str(work / "logs"),
        "--log-format-file", "json", "--log-level-file", "debug", *args[1:],
    ]
    with open(work / "stdout.txt", "w") as out:
        started, started_at = time.perf_counter(), time.time()
        done = subprocess.run(command, cwd=DBT_PROJECT_DIR, env={**os.environ, **DAGSTER_DBT_ENV, **dbt_env},
                              stdout=out, stderr=subprocess.STDOUT)
        seconds, ended_at = time.perf_counter() - started, time.time()
    if keep_parse:
        keep_partial_parse(work / "target", cache)
    if done.returncode != 0:
        tail = (work / "stdout.txt").read_text()[-4000:]
        raise RuntimeError(f"dbt {' '.join(args)} failed ({done.returncode}):\n{tail}")
    results_path = work / "target" / "run_results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    return DbtRun(seconds, int(rss_file.read_text().split()[-1]) / 1024, work, results, started_at, ended_at)


# ------------------------------------------------------------------------------------ direct SQL

_COMMENT = re.compile(r"^\s*/\*.*?\*/\s*", re.S)


def _hooks(build: DbtRun) -> dict[str, list[str]]:
    """Each incremental model's pre-hook statements as the build rendered and ran them: the
    statements dbt logged for the node before its materialization began (dbt runs pre-hooks
    first, and ours are the only `delete from` it issues before creating the new relation)."""
    hooks: dict[str, list[str]] = {}
    started: set[str] = set()
    for event in build.log_events():
        if event.get("info", {}).get("name") != "SQLQuery":
            continue
        node = (event.get("data", {}).get("node_info") or {}).get("unique_id", "")
        sql = _COMMENT.sub("", event["data"]["sql"]).strip()
        if not node.startswith("model.") or node in started:
            continue
        if sql.lower().startswith("delete from"):
            hooks.setdefault(node, []).append(sql)
        elif re.match(r"(?is)^create\s+(temporary\s+|temp\s+)?(table|view)", sql):
            started.add(node)
    return hooks


def _node_sql(compiled: DbtRun, build: DbtRun) -> list[tuple[str, dict]]:
    """The models and tests the build ran, in its order, with their compiled node from the
    compile step's manifest (compiled_code, materialization, unique key, relation)."""
    manifest = json.loads((compiled.work / "target" / "manifest.json").read_text())
    return [(r["unique_id"], manifest["nodes"][r["unique_id"]]) for r in build.results["results"]]


def direct_statements(compiled: DbtRun, build: DbtRun) -> list[tuple[str, str, list[str]]]:
    """(node id, kind, statements): each model's work as a hand-written materialization, each
    test's query wrapped as dbt wraps it (failures counted; warn/error decided on the count)."""
    hooks = _hooks(build)
    out = []
    for uid, node in _node_sql(compiled, build):
        code = node["compiled_code"].strip().rstrip(";")
        if uid.startswith("test."):
            out.append((uid, "test", [f"select count(*) as failures from ({code}) dbt_internal_test"]))
            continue
        relation = node["relation_name"]
        config = node["config"]
        if config["materialized"] == "table":
            out.append((uid, "table", [f"drop table if exists {relation}", f"create table {relation} as ({code})"]))
            continue
        if config["materialized"] == "view":
            out.append((uid, "view", [f"drop view if exists {relation}", f"create view {relation} as ({code})"]))
            continue
        assert config["materialized"] == "incremental", (uid, config["materialized"])
        statements = list(hooks.get(uid, []))
        if config.get("incremental_strategy") == "delete+insert":
            keys = config["unique_key"] if isinstance(config["unique_key"], list) else [config["unique_key"]]
            match = " and ".join(f"{relation}.{k} = bench_tmp.{k}" for k in keys)
            statements += [
                "drop table if exists bench_tmp",
                f"create temporary table bench_tmp as ({code})",
                f"delete from {relation} using bench_tmp where {match}",
                f"insert into {relation} select * from bench_tmp",
                "drop table bench_tmp",
            ]
        else:
            statements.append(f"insert into {relation} select * from ({code}) as bench_new")
        out.append((uid, "incremental", statements))
    return out


def dbt_duckdb_settings() -> dict[str, str]:
    """The DuckDB settings dbt's profile opens the merchant's file with (memory limit, checkpoint
    threshold, no external access), rendered as dbt renders them: the direct SQL runs alike."""
    import jinja2
    import yaml

    from illuma_pipelines.paths import DBT_PROJECT_DIR

    profile = yaml.safe_load((DBT_PROJECT_DIR / "profiles.yml").read_text())
    settings = profile["illuma"]["outputs"]["duckdb"].get("settings") or {}
    env = jinja2.Environment()
    return {
        name: env.from_string(str(value)).render(env_var=lambda key, default=None: os.environ.get(key, default))
        for name, value in settings.items()
    }


def run_direct(wh, engine: str, statements: list[tuple[str, str, list[str]]]) -> dict[str, float]:
    """Run the statements over one connection of the merchant's (its file; its login), a commit
    per node as dbt makes one; the seconds spent in the engine, per node, and on DuckDB in closing
    the file (`close`): with dbt's `checkpoint_threshold` the write-ahead log of everything the
    statements wrote is folded into the file then, as it is when dbt's process closes it."""
    from illuma_pipelines.dbt_vars import build_dbt_vars

    timings: dict[str, float] = {}
    if engine == "duckdb":
        import duckdb

        dbt_vars, _ = build_dbt_vars(MERCHANT, "2026-01-01", wh)
        con = duckdb.connect(dbt_vars["duckdb_path"], config=dbt_duckdb_settings())
        try:
            for uid, _kind, sqls in statements:
                started = time.perf_counter()
                con.execute("begin")
                for sql in sqls:
                    con.execute(sql)
                con.execute("commit")
                timings[uid] = time.perf_counter() - started
        finally:
            started = time.perf_counter()
            con.close()
            timings["close"] = time.perf_counter() - started
        return timings
    import psycopg

    dsn, password = wh.merchant_dsn(MERCHANT)
    with psycopg.connect(dsn, password=password) as con:
        for uid, _kind, sqls in statements:
            started = time.perf_counter()
            for sql in sqls:
                con.execute(sql.replace("%", "%%"))
            con.commit()
            timings[uid] = time.perf_counter() - started
    return timings


# ------------------------------------------------------------------------------------ the run


def _short(uid: str) -> str:
    return uid.split(".", 2)[-1]


def run_engine(engine: str, shape: Shape, work: Path, rows: list[tuple], repeat: bool) -> None:
    from illuma_pipelines.catalog import CATALOG_PARTS
    from illuma_pipelines.core.tables import CORE_TABLES
    from illuma_pipelines.merchant_ids import merchant_schema
    from illuma_pipelines.registry import ChannelConnection, add_merchant
    from illuma_pipelines.warehouse import Warehouse

    work.mkdir(parents=True, exist_ok=True)
    last, new = (START + timedelta(days=LAST_DAY)).isoformat(), (START + timedelta(days=NEW_DAY)).isoformat()
    with throwaway_warehouse_url(engine, work, MERCHANT) as url:
        wh = Warehouse.from_url(url)
        wh.ensure_platform()
        add_merchant(wh, MERCHANT, channels={c: ChannelConnection(c, f"sandbox:{MERCHANT}") for c in MARKETPLACES})
        with wh.merchant_scope(MERCHANT) as conn:
            for spec in (*CORE_TABLES, CATALOG_PARTS):
                conn.create_table(merchant_schema(MERCHANT), spec)
        seconds = land(wh, engine, shape, first_day=0, horizon=LAST_DAY, after=-1)
        volumes = counts(wh)
        print(f"{engine:<9} history landed in {seconds:.1f} s: " + ", ".join(f"{t} {n:,}" for t, n in volumes.items()), flush=True)

        def show(label: str, run: DbtRun, note: str = "") -> None:
            rows.append((engine, label, run.seconds, run.max_rss_mb, note))
            print(f"{engine:<9} {label:<34} {run.seconds:7.2f} s  dbt peak RSS {run.max_rss_mb:5.0f} MB  {note}", flush=True)
            phases = run.phases()
            print(f"{'':<11}" + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()) + f"; {run.partial_parse()}", flush=True)

        full = run_dbt(wh, url, last, work / "full", "build", "--full-refresh")
        show("1 full rebuild (--full-refresh)", full, _split(full))
        seconds = land(wh, engine, shape, first_day=LAST_DAY - 5, horizon=NEW_DAY, after=LAST_DAY)
        after = counts(wh)
        print(f"{engine:<9} new day {new} landed in {seconds:.1f} s: "
              + ", ".join(f"{t} +{after[t] - volumes[t]:,}" for t in SOURCE_COUNTS), flush=True)
        compiled = run_dbt(wh, url, new, work / "compile", "compile")
        daily = run_dbt(wh, url, new, work / "daily", "build")
        show("2 incremental daily build", daily, _split(daily))
        statements = direct_statements(compiled, daily)
        started = time.perf_counter()
        timings = run_direct(wh, engine, statements)
        direct_wall = time.perf_counter() - started
        models = sum(t for uid, t in timings.items() if uid.startswith("model."))
        tests = sum(t for uid, t in timings.items() if uid.startswith("test."))
        close = timings.get("close", 0.0)
        rows.append((engine, "3 direct SQL: models", models, None, ""))
        rows.append((engine, "3 direct SQL: tests", tests, None, ""))
        rows.append((engine, "3 direct SQL: close (checkpoint)", close, None, ""))
        print(f"{engine:<9} 3 direct SQL: models {models:6.2f} s, tests {tests:6.2f} s, close {close:5.2f} s "
              f"({len(timings) - ('close' in timings)} nodes, {direct_wall:.2f} s with Python)", flush=True)
        if repeat:
            again = run_dbt(wh, url, new, work / "again", "build")
            show("2' the same daily build again", again, _split(again))
        nothing = run_dbt(wh, url, new, work / "nothing", "build", "--select", "tag:bench_selects_nothing")
        show("4 dbt build of nothing", nothing)
        # The same, parsing the whole project again, as every build did while the build's day was
        # a var (a change of --vars makes dbt parse anew): what keeping the parse saves.
        reparsed = run_dbt(wh, url, new, work / "nothing-again", "build", "--select", "tag:bench_selects_nothing",
                           keep_parse=False)
        show("4 the same, parsing anew", reparsed)
        trivial = run_dbt(wh, url, new, work / "trivial", "run", "--select", "fee_categories")
        show("4 dbt run of fee_categories", trivial)
        # Where the time goes: the slowest nodes of the daily build, dbt's, the engine's within
        # dbt, and the engine's alone.
        dbt_times = {r["unique_id"]: r["execution_time"] for r in daily.results["results"]}
        in_dbt = daily.engine_by_node
        slowest = sorted(dbt_times, key=dbt_times.get, reverse=True)[:10]
        print(f"{engine:<9} slowest nodes of the daily build (dbt node s / its statements s / direct s):", flush=True)
        for uid in slowest:
            print(f"{'':<11}{_short(uid)[:66]:<66} {dbt_times[uid]:6.2f} / {in_dbt.get(uid, 0):6.2f} / {timings.get(uid, 0):6.2f}", flush=True)
        direct = models + tests + close
        ratio = daily.seconds / direct
        ratio_models = daily.seconds / models
        overhead = daily.seconds - direct
        print(f"{engine:<9} incremental / direct (models + tests + close) = {ratio:.2f} (goal <= 1.5); "
              f"/ direct models alone = {ratio_models:.2f}; dbt overhead (2 - 3) = {overhead:.2f} s "
              f"over {len(dbt_times)} nodes", flush=True)
        rows.append((engine, "4 overhead: daily - direct", overhead, None, f"ratio {ratio:.2f}"))


def _split(run: DbtRun) -> str:
    return (f"(models {run.node_seconds('model'):.2f} s in {len(run.nodes('model'))}, "
            f"tests {run.node_seconds('test'):.2f} s in {len(run.nodes('test'))})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order-lines", type=int, default=1_000_000, help="order lines over the year of history")
    parser.add_argument("--skus", type=int, default=20_000)
    parser.add_argument("--engines", default="duckdb,postgres")
    parser.add_argument("--repeat", action="store_true", help="run the daily build a second time (warm; its spread)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (DuckDB files, dbt logs and targets)")
    args = parser.parse_args()
    shape = Shape(orders=max(HISTORY_DAYS, args.order_lines * 4 // 5), skus=args.skus)
    tmp = tempfile.mkdtemp(prefix="illuma-analytics-bench-")
    print(f"{args.order_lines:,} order lines ({shape.orders:,} orders), {args.skus:,} SKUs, {HISTORY_DAYS} days; "
          "goals: incremental <= 1.5 x direct SQL, <= 10 s on DuckDB", flush=True)
    rows: list[tuple] = []
    try:
        for engine in args.engines.split(","):
            run_engine(engine, shape, Path(tmp) / engine, rows, args.repeat)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"{'engine':<9} {'step':<34} {'seconds':>8} {'dbt peak RSS':>13}")
    for engine, label, seconds, rss, note in rows:
        print(f"{engine:<9} {label:<34} {seconds:8.2f} {'' if rss is None else f'{rss:10.0f} MB':>13}  {note}")
    print(f"this process's peak RSS (data generation, direct SQL on DuckDB): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
