"""The analytics dbt models (issue 15 §2) on hand-built core rows, on DuckDB and PostgreSQL.

One merchant sells on Amazon, eBay and Walmart. Its money arrives in two loads: the first holds
three settlements (Amazon's negative and crossing a month end, with a reserve held; eBay's short of
its reported total by exactly 2.35; Walmart's to the cent); the second a later Amazon settlement
that releases the reserve and carries a refund posted in January, and a Walmart report crossing a
month end. dbt runs as the Dagster asset runs it (build_dbt_vars, the merchant's own confinement),
once per load, then again unchanged and with --full-refresh: the incremental path, the re-run and
the full rebuild must give the same rows. Every figure asserted was worked out by hand from the
rows below.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import yaml

from illuma_pipelines.catalog import CATALOG_PARTS
from illuma_pipelines.core.tables import (
    FINANCIAL_EVENTS,
    INVENTORY_SNAPSHOTS,
    ORDER_ADJUSTMENTS,
    ORDER_LINES,
    ORDERS,
    SETTLEMENT_LINES,
    SETTLEMENTS,
)
from illuma_pipelines.dbt_vars import build_dbt_vars, dbt_target
from illuma_pipelines.demo import money_summary
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.paths import DBT_PROJECT_DIR
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.settlements import vocab
from illuma_pipelines.warehouse import TableSpec
from resources import dbt_executable

FIRST_BUILD, SECOND_BUILD = "2026-02-05", "2026-02-21"
MODELS = (
    "stg_orders", "stg_order_lines", "stg_order_adjustments", "stg_inventory_snapshots",
    "stg_catalog_parts", "stg_settlements", "stg_settlement_lines", "stg_financial_events",
    "stg_channel_connections", "int_settlement_lines", "settlement_reconciliation", "order_settlement_match",
    "fees_by_category_daily", "net_proceeds_daily", "sku_profit_monthly", "part_profit_monthly",
    "channel_mix_daily", "inventory_health", "fee_categories",
)
D = Decimal
AMAZON_US, AMAZON_DE = "ATVPDKIKX0DER", "A1PA6795UKMFR9"


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _insert(conn, schema: str, spec: TableSpec, rows: list[dict], landed: str) -> None:
    """Rows as the core loaders write them: the provenance columns filled for the day `landed`."""
    conn.create_table(schema, spec)
    names = {c.name for c in spec.columns}
    for row in rows:
        provenance = {"loaded_at": _at(landed + "T06:00:00"), "run_id": "test-run", "partition_date": date.fromisoformat(landed)}
        full = {**{k: v for k, v in provenance.items() if k in names}, **row}
        columns = list(full)
        conn.execute(
            f"INSERT INTO {schema}.{spec.name} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
            [full[c] for c in columns],
        )


def _order(channel, order_id, purchased, shipped, status, items, *, shipping="0", promotion="0", tax="0", marketplace=None):
    return {
        "channel": channel, "marketplace_order_id": order_id, "marketplace_id": marketplace, "purchased_at": _at(purchased),
        "shipped_at": _at(shipped) if shipped else None, "status": status, "channel_status": status,
        "fulfillment_channel": "marketplace", "currency": "USD", "items_subtotal": D(items),
        "shipping_total": D(shipping), "promotion_total": D(promotion), "tax_total": D(tax),
        "order_total": D(items) + D(shipping) - D(promotion) + D(tax),
    }


def _order_line(channel, order_id, sku, quantity, item_price, master_part):
    return {
        "channel": channel, "marketplace_order_id": order_id, "line_id": "1", "sku": sku,
        "quantity_ordered": quantity, "quantity_shipped": quantity, "item_price": D(item_price),
        "currency": "USD", "line_status": "shipped", "master_part": master_part, "part_match": "catalog",
    }


class Settlement:
    """A settlement and its lines, categorized by the vocabulary from the channel's own labels."""

    def __init__(self, channel, settlement_id, kind, start, end, deposit, *, short_by="0"):
        self.channel, self.settlement_id, self.kind = channel, settlement_id, kind
        self.start, self.end, self.deposit, self.short_by = start, end, deposit, D(short_by)
        self.lines: list[dict] = []

    def line(self, posted, transaction_type, amount_type, description, amount, *, order=None, sku=None, quantity=None):
        category, known = vocab.fee_category(self.channel, amount_type, description)
        assert known, (amount_type, description)
        self.lines.append({
            "channel": self.channel, "settlement_id": self.settlement_id, "line_seq": len(self.lines) + 1,
            "posted_at": _at(posted), "posted_date": _at(posted).date(), "transaction_type": transaction_type,
            "transaction_kind": vocab.transaction_kind(self.channel, transaction_type), "order_id": order,
            "sku": sku, "quantity": quantity, "amount_type": amount_type, "amount_description": description,
            "fee_category": category, "amount": D(amount), "currency": "USD",
        })
        return self

    def row(self) -> dict:
        lines_total = sum((line["amount"] for line in self.lines), D(0))
        reported = lines_total + self.short_by
        return {
            "channel": self.channel, "settlement_id": self.settlement_id, "kind": self.kind,
            "period_start": _at(self.start), "period_end": _at(self.end),
            "deposit_date": date.fromisoformat(self.deposit), "currency": "USD", "reported_total": reported,
            "lines_total": lines_total, "line_count": len(self.lines), "difference": reported - lines_total,
            "adds_up": reported == lines_total,
        }


def _first_load() -> dict[TableSpec, list[dict]]:
    amazon = (
        Settlement("amazon", "AMZ-S1", "settlement", "2026-01-06", "2026-02-03", "2026-02-05")
        .line("2026-01-12T10:00:00", "Order", "ItemPrice", "Principal", "50.00", order="A1", sku="BRK-1", quantity=2)
        .line("2026-01-12T10:00:00", "Order", "ItemPrice", "Shipping", "5.00", order="A1", sku="BRK-1")
        .line("2026-01-12T10:00:00", "Order", "ItemPrice", "Tax", "4.00", order="A1", sku="BRK-1")
        .line("2026-01-12T10:00:00", "Order", "ItemWithheldTax", "MarketplaceFacilitatorTax-Principal", "-4.00", order="A1", sku="BRK-1")
        .line("2026-01-12T10:00:00", "Order", "ItemFees", "Commission", "-7.50", order="A1", sku="BRK-1")
        .line("2026-01-12T10:00:00", "Order", "ItemFees", "FBAPerUnitFulfillmentFee", "-6.00", order="A1", sku="BRK-1")
        # A2 was bought in January and posted in February: the settlement crosses the month end.
        .line("2026-02-01T08:00:00", "Order", "ItemPrice", "Principal", "30.00", order="A2", sku="FLT-2", quantity=3)
        .line("2026-02-01T08:00:00", "Order", "Promotion", "Principal", "-3.00", order="A2", sku="FLT-2")
        .line("2026-02-01T08:00:00", "Order", "ItemFees", "Commission", "-4.50", order="A2", sku="FLT-2")
        .line("2026-01-31T12:00:00", "Storage Fee", "other-transaction", "Storage Fee", "-12.00")
        # An FBA shipment id where an order id would be: no order we hold, no SKU.
        .line("2026-01-25T12:00:00", "FBA Inventory Fee", "other-transaction", "FBAInboundTransportationFee", "-2.00", order="FBA15XYZ")
        .line("2026-02-03T00:00:00", "Current Reserve Amount", "other-transaction", "Current Reserve Amount", "-20.00")
        .line("2026-02-02T09:00:00", "Subscription Fee", "other-transaction", "Subscription Fee", "-39.99")
    )
    ebay = (
        Settlement("ebay", "EB-P1", "payout", "2026-01-15", "2026-01-24", "2026-01-25", short_by="2.35")
        # As eBay's payouts come: no SKU, no quantity on the sale; its one-SKU order supplies both.
        .line("2026-01-15T10:00:00", "SALE", "SALE", None, "28.00", order="E1")
        .line("2026-01-15T10:00:00", "SALE", "SHIPPING", None, "4.00", order="E1", sku="BRK-1")
        .line("2026-01-15T10:00:00", "SALE", "FINAL_VALUE_FEE", None, "-4.20", order="E1", sku="BRK-1")
        .line("2026-01-21T10:00:00", "SALE", "SALE", None, "30.00", order="E2", sku="MYST-9", quantity=2)
        .line("2026-01-21T10:00:00", "SALE", "FINAL_VALUE_FEE", None, "-4.50", order="E2", sku="MYST-9")
        # An ad fee names its order only: E2 has one SKU, which carries it.
        .line("2026-01-22T10:00:00", "NON_SALE_CHARGE", "AD_FEE", None, "-1.50", order="E2")
    )
    walmart = (
        Settlement("walmart", "WM-R1", "recon_report", "2026-01-16", "2026-01-29", "2026-01-31")
        .line("2026-01-20T15:00:00", "SALE", "Product Price", None, "22.00", order="W1", sku="FLT-2", quantity=2)
        .line("2026-01-20T15:00:00", "SALE", "Commission on Product", None, "-3.30", order="W1", sku="FLT-2")
        .line("2026-01-20T15:00:00", "SALE", "Product tax", None, "1.76", order="W1", sku="FLT-2")
        .line("2026-01-20T15:00:00", "SALE", "Product tax withheld", None, "-1.76", order="W1", sku="FLT-2")
        .line("2026-01-28T15:00:00", "WFS Fee", "WFS Storage Fee", None, "-5.00")
    )
    settlements = (amazon, ebay, walmart)
    catalog = [
        # BRK-1 cost 10.00 until 2026-01-20, 12.00 since; FLT-2 4.50; MYST-9 is not in the catalog.
        _part("BRK-1", "ACME|BP100", "10.00", "1970-01-01", "2026-01-20"),
        _part("BRK-1", "ACME|BP100", "12.00", "2026-01-20", None),
        _part("FLT-2", "ACME|OF200", "4.50", "1970-01-01", None),
    ]
    return {
        ORDERS: [
            _order("amazon", "A1", "2026-01-10T09:00:00", "2026-01-11T09:00:00", "shipped", "50.00", shipping="5.00", tax="4.00", marketplace=AMAZON_US),
            _order("amazon", "A2", "2026-01-25T09:00:00", "2026-01-26T09:00:00", "delivered", "30.00", promotion="3.00", marketplace=AMAZON_US),
            _order("amazon", "A3", "2026-01-27T09:00:00", "2026-01-28T09:00:00", "shipped", "25.00", marketplace=AMAZON_US),
            _order("amazon", "A4", "2026-01-27T09:00:00", None, "cancelled", "25.00", marketplace=AMAZON_US),
            _order("ebay", "E1", "2026-01-14T09:00:00", "2026-01-15T09:00:00", "shipped", "28.00", shipping="4.00"),
            # The order says 31.00; 30.00 settled.
            _order("ebay", "E2", "2026-01-20T09:00:00", "2026-01-21T09:00:00", "delivered", "31.00"),
            _order("walmart", "W1", "2026-01-20T10:00:00", "2026-01-20T16:00:00", "shipped", "22.00"),
            _order("walmart", "W2", "2026-01-29T10:00:00", "2026-01-30T10:00:00", "shipped", "26.00"),
        ],
        ORDER_LINES: [
            _order_line("amazon", "A1", "BRK-1", 2, "50.00", "ACME|BP100"),
            _order_line("amazon", "A2", "FLT-2", 3, "30.00", "ACME|OF200"),
            _order_line("amazon", "A3", "BRK-1", 1, "25.00", "ACME|BP100"),
            _order_line("amazon", "A4", "BRK-1", 1, "25.00", "ACME|BP100"),
            _order_line("ebay", "E1", "BRK-1", 1, "28.00", "ACME|BP100"),
            _order_line("ebay", "E2", "MYST-9", 2, "31.00", "MYST-9"),
            _order_line("walmart", "W1", "FLT-2", 2, "22.00", "ACME|OF200"),
            _order_line("walmart", "W2", "BRK-1", 1, "26.00", "ACME|BP100"),
        ],
        ORDER_ADJUSTMENTS: [],
        CATALOG_PARTS: catalog,
        SETTLEMENTS: [s.row() for s in settlements],
        SETTLEMENT_LINES: [line for s in settlements for line in s.lines],
        FINANCIAL_EVENTS: [{
            # A3's commission, known from Amazon Finances before any settlement carries it.
            "channel": "amazon", "transaction_id": "T-A3", "transaction_type": "Shipment", "component_seq": 1,
            "transaction_kind": "sale", "posted_at": _at("2026-01-28T10:00:00"), "posted_date": date(2026, 1, 28),
            "order_id": "A3", "sku": "BRK-1", "amount_type": "ProductCharges/Commission", "fee_category": "commission",
            "amount": D("-3.75"), "currency": "USD",
        }],
        INVENTORY_SNAPSHOTS: [],
    }


def _second_load() -> dict[TableSpec, list[dict]]:
    amazon = (
        Settlement("amazon", "AMZ-S2", "settlement", "2026-02-03", "2026-02-17", "2026-02-19")
        # A refund posted on January 30, reported only now: it corrects January (accrual).
        .line("2026-01-30T11:00:00", "Refund", "ItemPrice", "Principal", "-25.00", order="A1", sku="BRK-1", quantity=1)
        .line("2026-01-30T11:00:00", "Refund", "ItemFees", "Commission", "3.75", order="A1", sku="BRK-1")
        .line("2026-01-30T11:00:00", "Refund", "ItemFees", "RefundCommission", "-0.75", order="A1", sku="BRK-1")
        .line("2026-02-03T00:00:00", "Previous Reserve Amount Balance", "other-transaction", "Previous Reserve Amount Balance", "20.00")
        .line("2026-02-17T00:00:00", "Current Reserve Amount", "other-transaction", "Current Reserve Amount", "-15.00")
        .line("2026-02-10T00:00:00", "ServiceFee", "Cost of Advertising", "TransactionTotalAmount", "-8.00")
    )
    walmart = (
        Settlement("walmart", "WM-R2", "recon_report", "2026-01-30", "2026-02-12", "2026-02-14")
        .line("2026-01-31T15:00:00", "SALE", "Product Price", None, "26.00", order="W2", sku="BRK-1", quantity=1)
        .line("2026-01-31T15:00:00", "SALE", "Commission on Product", None, "-3.90", order="W2", sku="BRK-1")
        .line("2026-02-02T15:00:00", "WFS Fee", "WFS Fulfillment Fee", None, "-3.00", order="W2", sku="BRK-1")
    )
    snapshot = {"part_match": "catalog", "inbound": 0, "reserved": 0, "units_sold_30d": 0}
    return {
        ORDERS: [_order("ebay", "E3", "2026-02-09T09:00:00", "2026-02-10T09:00:00", "shipped", "28.00")],
        ORDER_LINES: [_order_line("ebay", "E3", "BRK-1", 1, "28.00", "ACME|BP100")],
        SETTLEMENTS: [amazon.row(), walmart.row()],
        SETTLEMENT_LINES: [*amazon.lines, *walmart.lines],
        INVENTORY_SNAPSHOTS: [
            # Read before stock was per marketplace: dropped once the SKU has later pools.
            {**snapshot, "snapshot_date": date(2026, 2, 18), "channel": "amazon", "marketplace_id": "*", "sku": "BRK-1",
             "master_part": "ACME|BP100", "available": 0, "stock_out": True},
            {**snapshot, "snapshot_date": date(2026, 2, 20), "channel": "amazon", "marketplace_id": AMAZON_US, "sku": "BRK-1",
             "master_part": "ACME|BP100", "available": 6, "stock_out": False},
            # The same SKU's own pool in Amazon.de, where it has not sold: never summed with the US's.
            {**snapshot, "snapshot_date": date(2026, 2, 20), "channel": "amazon", "marketplace_id": AMAZON_DE, "sku": "BRK-1",
             "master_part": "ACME|BP100", "available": 4, "stock_out": False},
            {**snapshot, "snapshot_date": date(2026, 2, 19), "channel": "amazon", "marketplace_id": AMAZON_US, "sku": "FLT-2",
             "master_part": "ACME|OF200", "available": 0, "stock_out": True},
            {**snapshot, "snapshot_date": date(2026, 2, 20), "channel": "amazon", "marketplace_id": AMAZON_US, "sku": "FLT-2",
             "master_part": "ACME|OF200", "available": 0, "stock_out": True},
            {**snapshot, "snapshot_date": date(2026, 2, 20), "channel": "walmart", "marketplace_id": "*", "sku": "OLD-7",
             "master_part": "OLD-7", "available": 40, "stock_out": False},
        ],
    }


def _part(sku, master_part, unit_cost, valid_from, valid_to):
    return {
        "sku": sku, "current_sku": sku, "master_part": master_part, "unit_cost": D(unit_cost),
        "cost_currency": "USD", "file_id": 1, "source_row": 2,
        "valid_from": _at(valid_from), "valid_to": _at(valid_to) if valid_to else None, "content_hash": sku + unit_cost,
    }


def _load(warehouse, mid: str, tables: dict[TableSpec, list[dict]], landed: str) -> None:
    schema = merchant_schema(mid)
    with warehouse.merchant_scope(mid) as conn:
        for spec, rows in tables.items():
            _insert(conn, schema, spec, rows, landed)


def _dbt_build(warehouse, warehouse_url: str, mid: str, as_of: str, work: Path, *flags: str, **extra_vars) -> dict:
    """`dbt build` as the analytics asset runs it; the run's results (run_results.json)."""
    dbt_vars, secret_env = build_dbt_vars(mid, as_of, warehouse)
    dbt_vars = {**dbt_vars, "as_of_date": as_of, "settlement_delay_days": {"ebay": 10}, **extra_vars}
    work.mkdir(parents=True, exist_ok=True)
    # A target and log path of the build's own: the project's manifest stays as `make` left it.
    args = [
        dbt_executable(), "build", "--target", dbt_target(warehouse_url), "--vars", json.dumps(dbt_vars),
        "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
        "--target-path", str(work / "target"), "--log-path", str(work / "logs"), *flags,
    ]
    done = subprocess.run(
        args, cwd=DBT_PROJECT_DIR, env={**os.environ, **secret_env}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    return json.loads((work / "target" / "run_results.json").read_text())


def _reland(warehouse, mid: str, channel: str, settlement_id: str, line_seq: int, landed: str) -> None:
    """A settlement line landed again as the core loader lands it: its row replaced, with the new
    day's provenance."""
    with warehouse.merchant_scope(mid) as conn:
        conn.execute(
            f"UPDATE {merchant_schema(mid)}.{SETTLEMENT_LINES.name} SET partition_date = ?, loaded_at = ? "
            "WHERE channel = ? AND settlement_id = ? AND line_seq = ?",
            [date.fromisoformat(landed), _at(landed + "T06:00:00"), channel, settlement_id, line_seq],
        )


def _rows(warehouse, mid: str, sql: str) -> list[tuple]:
    with warehouse.merchant_scope(mid) as conn:
        return conn.fetchall(sql.replace("{schema}", merchant_schema(mid)))


def _snapshot(warehouse, mid: str) -> dict[str, list[tuple]]:
    """Every model's rows, in a stable order."""
    return {m: sorted(_rows(warehouse, mid, f"SELECT * FROM {{schema}}.{m}"), key=repr) for m in MODELS}


def _profit(warehouse, mid: str, basis: str, month: str) -> dict[tuple, tuple]:
    rows = _rows(
        warehouse, mid,
        "SELECT channel, sku, master_part, revenue, refunds, fees, units_sold, cost_of_goods, unattributed_fees, "
        "net_profit, margin, uncosted_units, cost_missing_reason FROM {schema}.sku_profit_monthly "
        f"WHERE basis = '{basis}' AND month = DATE '{month}'",
    )
    return {(r[0], r[1]): r[2:] for r in rows}


def _statuses(results: dict) -> dict[str, tuple[str, int | None]]:
    return {r["unique_id"]: (r["status"], r.get("failures")) for r in results["results"]}


def test_settlement_analytics_to_the_cent_incremental_equals_full_refresh(warehouse, warehouse_url, merchant_id, tmp_path):
    mid = merchant_id("money")
    add_merchant(warehouse, mid, channels={c: ChannelConnection(c, f"sandbox:{mid}") for c in ("amazon", "ebay", "walmart")})
    _load(warehouse, mid, _first_load(), FIRST_BUILD)

    # --- First build: January as known on February 5.
    first = _statuses(_dbt_build(warehouse, warehouse_url, mid, FIRST_BUILD, tmp_path / "b1", "--full-refresh"))
    assert first["test.illuma.settlements_add_up"] == ("warn", 1)  # EB-P1, shown not plugged
    assert all(status in ("success", "pass") for uid, (status, _) in first.items() if uid != "test.illuma.settlements_add_up")
    before = _profit(warehouse, mid, "accrual", "2026-01-01")
    # 55 revenue - 13.50 fees - 2 × 10.00 cost - 14.00 unattributed (storage 12 + FBA inbound 2)
    assert before[("amazon", "BRK-1")] == ("ACME|BP100", D("55.0000"), D("0.0000"), D("13.5000"), 2, D("20.0000"),
                                           D("14.0000"), D("7.5000"), D("0.1364"), 0, None)
    pending = dict(_rows(warehouse, mid, "SELECT order_id, match_status FROM {schema}.order_settlement_match WHERE order_id IN ('A3', 'W2')"))
    assert pending == {"A3": "pending", "W2": "pending"}

    # --- Second build, incremental: a later Amazon settlement with a January refund, Walmart's next report.
    _load(warehouse, mid, _second_load(), SECOND_BUILD)
    # eBay sends E1's sale line of EB-P1 again (posted, and first landed, before the window): the
    # loader replaces its core row, landed anew; the build must replace its copy, not add one.
    _reland(warehouse, mid, "ebay", "EB-P1", 1, SECOND_BUILD)
    # A 10-day window: January is recomputed only because lines posted in it landed since.
    second = _statuses(_dbt_build(warehouse, warehouse_url, mid, SECOND_BUILD, tmp_path / "b2", trailing_days=10))
    assert second["test.illuma.settlements_add_up"] == ("warn", 1)
    assert all(status in ("success", "pass") for uid, (status, _) in second.items() if uid != "test.illuma.settlements_add_up")
    assert {uid for uid in second if uid.startswith("model.")} == {f"model.illuma.{m}" for m in MODELS}

    recon = {
        r[0]: r[1:]
        for r in _rows(
            warehouse, mid,
            "SELECT settlement_id, reported_total, lines_total, difference, adds_up, reconciliation_status, "
            "net_proceeds, reserve_held, reserve_released, transfer, deposit, line_count, loader_agrees "
            "FROM {schema}.settlement_reconciliation",
        )
    }
    assert recon == {
        # Negative, and crossing the month end; the reserve held comes back in AMZ-S2.
        "AMZ-S1": (D("-9.99"), D("-9.99"), D("0"), True, "adds_up", D("10.01"), D("-20"), D("0"), D("0"), D("-9.99"), 13, True),
        "AMZ-S2": (D("-25"), D("-25"), D("0"), True, "adds_up", D("-30"), D("-15"), D("20"), D("0"), D("-25"), 6, True),
        "EB-P1": (D("54.15"), D("51.80"), D("2.35"), False, "does_not_add_up", D("51.80"), D("0"), D("0"), D("0"), D("54.15"), 6, True),
        "WM-R1": (D("13.70"), D("13.70"), D("0"), True, "adds_up", D("13.70"), D("0"), D("0"), D("0"), D("13.70"), 5, True),
        "WM-R2": (D("19.10"), D("19.10"), D("0"), True, "adds_up", D("19.10"), D("0"), D("0"), D("0"), D("19.10"), 3, True),
    }

    accrual_jan = _profit(warehouse, mid, "accrual", "2026-01-01")
    assert accrual_jan == {
        # The late refund corrected January: 55 - 25 refunded - 10.50 fees (13.50 - 3.75 returned
        # + 0.75 refund commission) - 20 cost - 14 unattributed.
        ("amazon", "BRK-1"): ("ACME|BP100", D("55"), D("25"), D("10.5"), 2, D("20"), D("14"), D("-14.5"), D("-0.4833"), 0, None),
        ("ebay", "BRK-1"): ("ACME|BP100", D("32"), D("0"), D("4.2"), 1, D("10"), D("0"), D("17.8"), D("0.5563"), 0, None),
        # Not in the catalog: no cost, no profit, and why (the ad fee of its single-SKU order is its own).
        ("ebay", "MYST-9"): ("MYST-9", D("30"), D("0"), D("6"), 2, None, D("0"), None, None, 2, "sku_not_in_catalog"),
        # The 5.00 storage fee spread by revenue 22 : 26; the remainder on the bigger seller.
        ("walmart", "FLT-2"): ("ACME|OF200", D("22"), D("0"), D("3.3"), 2, D("9"), D("2.2917"), D("7.4083"), D("0.3367"), 0, None),
        # Bought on January 29: the cost valid then is 12.00.
        ("walmart", "BRK-1"): ("ACME|BP100", D("26"), D("0"), D("3.9"), 1, D("12"), D("2.7083"), D("7.3917"), D("0.2843"), 0, None),
    }
    accrual_feb = _profit(warehouse, mid, "accrual", "2026-02-01")
    assert accrual_feb == {
        # Posted February 1 from a settlement opened in January; subscription 39.99 + ads 8 unattributed.
        ("amazon", "FLT-2"): ("ACME|OF200", D("27"), D("0"), D("4.5"), 3, D("13.5"), D("47.99"), D("-38.99"), D("-1.4441"), 0, None),
        ("walmart", "BRK-1"): ("ACME|BP100", D("0"), D("0"), D("3"), 0, D("0"), D("0"), D("-3"), None, 0, None),
    }
    cash_feb = _profit(warehouse, mid, "cash", "2026-02-01")
    assert cash_feb == {
        # Both Amazon settlements deposited in February: pool 61.99 spread 55 : 27.
        ("amazon", "BRK-1"): ("ACME|BP100", D("55"), D("25"), D("10.5"), 2, D("20"), D("41.5787"), D("-42.0787"), D("-1.4026"), 0, None),
        ("amazon", "FLT-2"): ("ACME|OF200", D("27"), D("0"), D("4.5"), 3, D("13.5"), D("20.4113"), D("-11.4113"), D("-0.4226"), 0, None),
        ("walmart", "BRK-1"): ("ACME|BP100", D("26"), D("0"), D("6.9"), 1, D("12"), D("0"), D("7.1"), D("0.2731"), 0, None),
    }
    cash_jan = _profit(warehouse, mid, "cash", "2026-01-01")
    assert cash_jan[("walmart", "FLT-2")][6:8] == (D("5"), D("4.7"))  # the whole storage fee: its only seller
    assert set(cash_jan) == {("ebay", "BRK-1"), ("ebay", "MYST-9"), ("walmart", "FLT-2")}

    parts = {
        r[0]: r[1:]
        for r in _rows(
            warehouse, mid,
            "SELECT master_part, revenue, refunds, fees, cost_of_goods, unattributed_fees, net_profit, cost_missing_reason "
            "FROM {schema}.part_profit_monthly WHERE basis = 'accrual' AND month = DATE '2026-01-01'",
        )
    }
    assert parts == {
        "ACME|BP100": (D("113"), D("25"), D("18.6"), D("42"), D("16.7083"), D("10.6917"), None),
        "ACME|OF200": (D("22"), D("0"), D("3.3"), D("9"), D("2.2917"), D("7.4083"), None),
        "MYST-9": (D("30"), D("0"), D("6"), None, D("0"), None, "sku_not_in_catalog"),
    }
    # Accrual profit before cost adds up, month by month, to the proceeds net of tax and bridge.
    for month, following in (("2026-01-01", "2026-02-01"), ("2026-02-01", "2026-03-01")):
        [(profit,)] = _rows(warehouse, mid, "SELECT sum(revenue - refunds - fees - unattributed_fees) FROM {schema}.sku_profit_monthly "
                            f"WHERE basis = 'accrual' AND month = DATE '{month}'")
        [(proceeds,)] = _rows(warehouse, mid, "SELECT sum(net_proceeds - tax) FROM {schema}.net_proceeds_daily "
                              f"WHERE posted_date >= DATE '{month}' AND posted_date < DATE '{following}'")
        assert profit == proceeds, month
    groups = {
        "revenue": vocab.REVENUE_CATEGORIES, "tax": vocab.TAX_CATEGORIES,
        "fee": vocab.FEE_ONLY_CATEGORIES, "bridge": vocab.BRIDGE_CATEGORIES,
    }
    assert sorted(_rows(warehouse, mid, "SELECT fee_category, category_group FROM {schema}.fee_categories")) == sorted(
        (name, group) for group, names in groups.items() for name in names
    )
    assert sorted(n for names in groups.values() for n in names) == sorted(vocab.FEE_CATEGORIES)

    match = {
        r[0]: r[1:]
        for r in _rows(
            warehouse, mid,
            "SELECT coalesce(order_id, settlement_id), match_status, settlement_delay_days, principal_difference, "
            "promotion_difference, settled_fees, refunded, financial_event_fees, settlement_count "
            "FROM {schema}.order_settlement_match",
        )
    }
    assert match == {
        "A1": ("settled", 14, D("0"), D("0"), D("-10.5"), D("-25"), None, 2),
        "A2": ("settled", 14, D("0"), D("0"), D("-4.5"), D("0"), None, 1),
        "A3": ("unsettled_overdue", 14, None, None, None, None, D("-3.75"), 0),  # shipped 24 days ago
        "FBA15XYZ": ("unknown_order", 14, None, None, D("-2"), D("0"), None, 1),
        "E1": ("settled", 10, D("0"), D("0"), D("-4.2"), D("0"), None, 1),
        "E2": ("settled", 10, D("-1"), D("0"), D("-6"), D("0"), None, 1),  # the order said 31.00
        "E3": ("unsettled_overdue", 10, None, None, None, None, None, 0),  # 11 days > eBay's 10 (overridden)
        "W1": ("settled", 14, D("0"), D("0"), D("-3.3"), D("0"), None, 1),
        "W2": ("settled", 14, D("0"), D("0"), D("-6.9"), D("0"), None, 1),
        # The unattributed pool, per settlement: storage, subscription (and the reserve, bridge).
        "AMZ-S1": ("unattributed", None, None, None, D("-51.99"), None, None, 1),
        "AMZ-S2": ("unattributed", None, None, None, D("-8"), None, None, 1),
        "WM-R1": ("unattributed", None, None, None, D("-5"), None, None, 1),
    }

    fees = dict(
        ((r[0], r[1], r[2]), r[3:])
        for r in _rows(warehouse, mid, "SELECT channel, CAST(posted_date AS VARCHAR), fee_category, amount, category_group, line_count FROM {schema}.fees_by_category_daily")
    )
    assert fees[("amazon", "2026-01-12", "commission")] == (D("-7.5"), "fee", 1)
    assert fees[("amazon", "2026-01-30", "commission")] == (D("3.75"), "fee", 1)  # returned with the refund
    assert fees[("amazon", "2026-02-03", "reserve_held")] == (D("-20"), "bridge", 1)
    assert fees[("walmart", "2026-01-20", "marketplace_withheld_tax")] == (D("-1.76"), "tax", 1)
    daily = {
        (r[0], r[1]): r[2:]
        for r in _rows(
            warehouse, mid,
            "SELECT channel, CAST(posted_date AS VARCHAR), revenue, refunds, fees, tax, net_proceeds, reserve_held, "
            "reserve_released, lines_total FROM {schema}.net_proceeds_daily",
        )
    }
    assert daily[("amazon", "2026-01-12")] == (D("55"), D("0"), D("13.5"), D("0"), D("41.5"), D("0"), D("0"), D("41.5"))
    assert daily[("amazon", "2026-02-03")] == (D("0"), D("0"), D("0"), D("0"), D("0"), D("-20"), D("20"), D("0"))
    mix = {
        r[0]: r[1:]
        for r in _rows(warehouse, mid, "SELECT channel, order_count, units, items_sales, share_of_sales FROM {schema}.channel_mix_daily WHERE purchased_date = DATE '2026-01-20'")
    }
    assert mix == {"ebay": (1, 2, D("31"), D("0.5849")), "walmart": (1, 2, D("22"), D("0.4151"))}
    health = {
        (r[0], r[1], r[2]): r[3:]
        for r in _rows(
            warehouse, mid,
            "SELECT channel, marketplace_id, sku, available, units_sold_30d, units_sold_90d, days_of_cover, stock_out, "
            "stock_out_days_30d, slow_mover FROM {schema}.inventory_health",
        )
    }
    assert health == {
        ("amazon", AMAZON_US, "BRK-1"): (6, 1, 3, D("180"), False, 0, False),  # A3 in 30 days, A1 too in 90
        ("amazon", AMAZON_DE, "BRK-1"): (4, 0, 0, None, False, 0, True),  # its own pool, no sale there
        ("amazon", AMAZON_US, "FLT-2"): (0, 3, 3, D("0"), True, 2, False),
        ("walmart", "*", "OLD-7"): (40, 0, 0, None, False, 0, True),  # stock and no sale in 90 days
    }
    # The demo's money summary reads these models: the short payout is listed with its difference.
    summary = money_summary(warehouse, mid)
    assert "1 flagged" in summary[0] and "    flagged: ebay EB-P1 does not add up by USD 2.35" in summary
    connections = _rows(warehouse, mid, "SELECT channel, CAST(as_of_date AS VARCHAR) FROM {schema}.stg_channel_connections ORDER BY channel")
    assert connections == [("amazon", SECOND_BUILD), ("ebay", SECOND_BUILD), ("walmart", SECOND_BUILD)]

    # --- The same build again changes nothing; a full refresh gives the incremental path's rows.
    incremental = _snapshot(warehouse, mid)
    _dbt_build(warehouse, warehouse_url, mid, SECOND_BUILD, tmp_path / "b3", trailing_days=10)
    assert _snapshot(warehouse, mid) == incremental
    _dbt_build(warehouse, warehouse_url, mid, SECOND_BUILD, tmp_path / "b4", "--full-refresh", trailing_days=10)
    assert _snapshot(warehouse, mid) == incremental


def test_dbt_accepted_values_are_vocab_py():
    """The accepted values of the dbt tests on categories and kinds are vocab.py's (the models'
    category groups are checked through the `fee_categories` model in the build above)."""
    staging = yaml.safe_load((DBT_PROJECT_DIR / "models" / "staging" / "schema.yml").read_text())
    accepted: dict[tuple[str, str], list[str]] = {}
    for model in staging["models"]:
        for column in model.get("columns", []):
            for test in column.get("data_tests", []):
                if isinstance(test, dict) and "accepted_values" in test:
                    accepted[(model["name"], column["name"])] = test["accepted_values"]["arguments"]["values"]
    for model in ("stg_settlement_lines", "stg_financial_events"):
        assert accepted[(model, "fee_category")] == list(vocab.FEE_CATEGORIES)
        assert accepted[(model, "transaction_kind")] == list(vocab.TRANSACTION_KINDS)
