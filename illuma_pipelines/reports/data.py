"""The figures and tables of a merchant's monthly and settlement reports, read from its analytics
models only (dbt_project/models: the marts and their staging tables; never the raw extracts nor
the core tables, and nothing that holds buyer PII: order ids and SKUs are all a report names).

Both renderers (xlsx.py, pdf.py) draw from one `ReportData`, and every figure either shows goes
through `report_figures()`: the same Decimal, rounded to the cent (half away from zero) and
formatted once, so the workbook, the PDF and the warehouse cannot disagree.

Bases (issue 15's definitions, stated on every page that shows money):
- accrual: the lines posted in the month (`net_proceeds_daily`, `fees_by_category_daily`,
  `sku_profit_monthly` basis 'accrual');
- cash: the lines of the settlements deposited in the month (`stg_settlement_lines` of the
  settlements whose `deposit_date` falls in it; `sku_profit_monthly` basis 'cash');
- deposits are what the marketplaces reported paying in the month (`settlement_reconciliation`
  by deposit date): the same figure under either basis.
A settlement report is on the cash basis: every line of that one deposit.

Cost of goods, net profit and margin follow `sku_profit_monthly`: when any sale of the month has
no known cost they are unknown (None, shown as "unknown" with the units left uncosted), never a
total that silently counts those sales at zero cost.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

import pandas as pd

from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.settlements import vocab
from illuma_pipelines.warehouse import Connection, Warehouse

ACCRUAL, CASH = "accrual", "cash"
MONTHLY, SETTLEMENT = "monthly", "settlement"
BASIS_TEXT = {
    ACCRUAL: "accrual basis (money by the day each line was posted)",
    CASH: "cash basis (money by the day it was deposited)",
}
# The summary's figures in the order they are shown; fee:<category> rows follow fees_total.
FIGURES = (
    "revenue", "refunds", "fees_total", "cost_of_goods", "net_profit", "margin", "tax",
    "net_proceeds", "reserves_and_transfers", "deposits", "uncosted_units",
)
FIGURE_LABELS = {
    "revenue": "Revenue",
    "refunds": "Refunds",
    "fees_total": "Fees",
    "cost_of_goods": "Cost of goods",
    "net_profit": "Net profit",
    "margin": "Margin",
    "tax": "Tax passed through",
    "net_proceeds": "Net proceeds",
    "reserves_and_transfers": "Reserves and transfers",
    "deposits": "Deposits",
    "uncosted_units": "Units sold without a known cost",
    "reported_total": "Reported total",
    "lines_total": "Sum of the lines",
    "difference": "Difference (reported - lines)",
}
PERCENT_FIGURES = frozenset({"margin"})
COUNT_FIGURES = frozenset({"uncosted_units"})
TABLES = ("orders", "fees", "sku_profit", "inventory_health", "reconciliation_exceptions", "unsettled_orders")
CENT = Decimal("0.01")
RATIO = Decimal("0.0001")

Figures = dict[str, Decimal | None]


def figure_label(name: str) -> str:
    if name.startswith("fee:"):
        return "  " + name[4:].replace("_", " ").capitalize()
    return FIGURE_LABELS.get(name, name.replace("_", " ").capitalize())


@dataclass
class ReportData:
    """Everything a report shows. `summary` is on `basis` (currency -> figure -> value);
    `summaries` holds every basis the report shows (the monthly report: accrual and cash), with
    `summaries[basis] is summary`. Money is Decimal; `margin` is a ratio; None means unknown."""

    merchant_id: str
    merchant_name: str
    kind: Literal["monthly", "settlement"]
    period: str
    basis: str
    summary: dict[str, Figures]
    tables: dict[str, pd.DataFrame]
    empty: bool
    summaries: dict[str, dict[str, Figures]] = field(default_factory=dict)
    # What the pages say the period is ("January 2026", "amazon settlement 123, deposited ...").
    period_label: str = ""
    # The day the analytics were built as of (inventory health and unsettled orders are "as of").
    as_of: date | None = None
    # Day-by-day series for the charts (accrual): posted_date, currency, revenue, refunds, fees.
    daily: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Sales by channel and currency for the period (channel_mix_daily): orders, units, items_sales.
    channel_mix: pd.DataFrame = field(default_factory=pd.DataFrame)
    # The settlement report's own: its reconciliation row as figures (reported_total, ...).
    reconciliation: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.summaries:
            self.summaries = {self.basis: self.summary}
        if not self.period_label:
            self.period_label = self.period

    @property
    def title(self) -> str:
        what = "Monthly report" if self.kind == MONTHLY else "Settlement report"
        return f"{self.merchant_name}: {what}, {self.period_label}"


def cents(value: Decimal | float) -> Decimal:
    """Money as shown: rounded to the cent, half away from zero. A float (DuckDB hands DECIMAL
    columns to pandas as float64) is read back as the 4-decimal amount it stands for first."""
    if isinstance(value, float):
        value = Decimal(repr(value)).quantize(RATIO, rounding=ROUND_HALF_UP)
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def format_money(value: Decimal | None, currency: str) -> str:
    if value is None:
        return "unknown"
    return f"{currency} {cents(value):,.2f}"


def format_percent(value: Decimal | None) -> str:
    if value is None:
        return "unknown"
    return f"{(Decimal(value) * 100).quantize(CENT, rounding=ROUND_HALF_UP):,.2f}%"


def format_figure(name: str, value: Decimal | None, currency: str) -> str:
    if name in PERCENT_FIGURES:
        return format_percent(value)
    if name in COUNT_FIGURES:
        return "unknown" if value is None else f"{int(value):,}"
    return format_money(value, currency)


def shown_value(name: str, value: Decimal | None) -> Decimal | None:
    """The exact number a report stores for a figure: money in cents, a margin as its 4-decimal
    ratio (shown as a percent with 2 decimals), a count as it is."""
    if value is None:
        return None
    if name in PERCENT_FIGURES:
        return Decimal(value).quantize(RATIO, rounding=ROUND_HALF_UP)
    if name in COUNT_FIGURES:
        return Decimal(int(value))
    return cents(value)


def figure_key(basis: str, currency: str, name: str) -> str:
    return f"{basis}:{currency}:{name}"


def report_figures(data: ReportData) -> dict[str, str]:
    """Every summary figure as the text the PDF and the UI show, keyed `basis:currency:figure`."""
    return {
        figure_key(basis, currency, name): format_figure(name, value, currency)
        for basis, per_currency in data.summaries.items()
        for currency, figures in sorted(per_currency.items())
        for name, value in figures.items()
    }


def summary_markdown(data: ReportData) -> str:
    """The summary as a Markdown table (the UI's preview of a report)."""
    if data.empty:
        return f"**{data.title}**: {empty_text(data)}"
    columns = [(b, c) for b, per in data.summaries.items() for c in sorted(per)]
    names = figure_names(data)
    lines = [
        f"**{data.title}**",
        "",
        "| Figure | " + " | ".join(f"{c} ({b})" for b, c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name in names:
        cells = [
            format_figure(name, data.summaries[b][c][name], c) if name in data.summaries[b][c] else ""
            for b, c in columns
        ]
        lines.append(f"| {figure_label(name).strip()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure_names(data: ReportData) -> list[str]:
    """The figures the report shows, in order: the fixed ones with each fee category after the fees."""
    present = {name for per in data.summaries.values() for figures in per.values() for name in figures}
    fee_rows = [f"fee:{c}" for c in vocab.FEE_ONLY_CATEGORIES if f"fee:{c}" in present]
    ordered: list[str] = []
    for name in (*FIGURES, "reported_total", "lines_total", "difference"):
        if name in present:
            ordered.append(name)
            if name == "fees_total":
                ordered += fee_rows
    return ordered


def empty_text(data: ReportData) -> str:
    if data.kind == SETTLEMENT:
        return f"No lines were found for {data.period_label}."
    return (
        f"No activity in {data.period_label}: no orders, settled money or deposits were recorded "
        "for this merchant in the month."
    )


def month_bounds(month: str) -> tuple[date, date]:
    """[first day, first day of the next month) of "YYYY-MM"; a malformed month is refused."""
    try:
        year, number = (int(part) for part in month.split("-"))
        start = date(year, number, 1)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"report month {month!r} is not YYYY-MM") from exc
    if len(month) != 7:
        raise ValueError(f"report month {month!r} is not YYYY-MM")
    days = calendar.monthrange(year, number)[1]
    following = date.fromordinal(start.toordinal() + days)
    return start, following


def _in(names: tuple[str, ...]) -> str:
    # The vocabulary's own constants: no user input reaches these literals.
    return "(" + ", ".join(f"'{n}'" for n in names) + ")"


REVENUE_IN, TAX_IN, FEE_IN, BRIDGE_IN = (
    _in(vocab.REVENUE_CATEGORIES), _in(vocab.TAX_CATEGORIES), _in(vocab.FEE_ONLY_CATEGORIES), _in(vocab.BRIDGE_CATEGORIES),
)

# Per currency from settlement lines (alias l): the line-level figures of either basis.
_LINE_FIGURES = f"""
    l.currency,
    sum(case when l.fee_category in {REVENUE_IN} and l.transaction_kind <> 'refund' then l.amount else 0 end),
    -sum(case when l.fee_category in {REVENUE_IN} and l.transaction_kind = 'refund' then l.amount else 0 end),
    -sum(case when l.fee_category in {FEE_IN} then l.amount else 0 end),
    sum(case when l.fee_category in {TAX_IN} then l.amount else 0 end),
    sum(case when l.fee_category not in {BRIDGE_IN} then l.amount else 0 end),
    sum(case when l.fee_category in {BRIDGE_IN} then l.amount else 0 end)
"""

_PROFIT_FIGURES = """
    currency,
    sum(cost_of_goods),
    count(*) - count(cost_of_goods),
    sum(net_profit),
    count(*) - count(net_profit),
    coalesce(sum(uncosted_units), 0)
"""


def _ratio(numerator: Decimal | None, denominator: Decimal) -> Decimal | None:
    if numerator is None or denominator == 0:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(RATIO, rounding=ROUND_HALF_UP)


def _basis_figures(
    line_rows: list[tuple], fee_rows: list[tuple], profit_rows: list[tuple], deposit_rows: list[tuple]
) -> dict[str, Figures]:
    """Per currency: the line figures, fee categories, the profit model's cost and profit, deposits."""
    out: dict[str, Figures] = {}
    zero = Decimal(0)
    currencies = sorted({r[0] for r in (*line_rows, *profit_rows, *deposit_rows) if r[0] is not None})
    lines = {r[0]: r[1:] for r in line_rows}
    profit = {r[0]: r[1:] for r in profit_rows}
    deposits = {r[0]: r[1] for r in deposit_rows}
    for currency in currencies:
        revenue, refunds, fees, tax, net_proceeds, bridge = lines.get(currency, (zero,) * 6)
        cost, uncosted_rows, net_profit, unknown_profit_rows, uncosted_units = profit.get(currency, (zero, 0, zero, 0, 0))
        cost = None if uncosted_rows else (cost or zero)
        net_profit = None if unknown_profit_rows else (net_profit or zero)
        figures: Figures = {
            "revenue": revenue or zero,
            "refunds": refunds or zero,
            "fees_total": fees or zero,
        }
        for category, amount in sorted((r[1], r[2]) for r in fee_rows if r[0] == currency):
            figures[f"fee:{category}"] = amount or zero
        figures.update({
            "cost_of_goods": cost,
            "net_profit": net_profit,
            "margin": _ratio(net_profit, (revenue or zero) - (refunds or zero)),
            "tax": tax or zero,
            "net_proceeds": net_proceeds or zero,
            "reserves_and_transfers": bridge or zero,
            "deposits": deposits.get(currency) or zero,
            "uncosted_units": Decimal(int(uncosted_units or 0)),
        })
        out[currency] = figures
    return out


def _has(conn: Connection, schema: str, *tables: str) -> bool:
    return all(conn.table_exists(schema, t) for t in tables)


def _as_of(conn: Connection, schema: str) -> date | None:
    if not _has(conn, schema, "stg_channel_connections"):
        return None
    row = conn.fetchone(f"SELECT max(as_of_date) FROM {schema}.stg_channel_connections")
    return row[0] if row else None


MODELS = (
    "settlement_reconciliation", "order_settlement_match", "fees_by_category_daily", "net_proceeds_daily",
    "sku_profit_monthly", "channel_mix_daily", "inventory_health", "stg_orders", "stg_order_lines",
    "stg_settlements", "stg_settlement_lines",
)


def monthly_report_data(warehouse: Warehouse, merchant_id: str, month: str, merchant_name: str) -> ReportData:
    """The monthly report of `month` ("YYYY-MM") from the merchant's analytics models.

    A merchant whose models were never built, or with nothing in the month, gets an empty report
    (`empty=True`) that renders and says so."""
    start, following = month_bounds(month)
    label = start.strftime("%B %Y")
    schema = merchant_schema(merchant_id)
    window = [start, following]
    with warehouse.merchant_scope(merchant_id) as conn:
        if not _has(conn, schema, *MODELS):
            return ReportData(merchant_id, merchant_name, MONTHLY, month, ACCRUAL, {}, {}, True,
                              summaries={ACCRUAL: {}, CASH: {}}, period_label=label)
        as_of = _as_of(conn, schema)
        # Accrual: lines posted in the month (the marts' own day grain).
        accrual_lines = conn.fetchall(
            f"SELECT currency, sum(revenue), sum(refunds), sum(fees), sum(tax), sum(net_proceeds), "
            f"sum(reserve_held + reserve_released + transfer) FROM {schema}.net_proceeds_daily "
            "WHERE posted_date >= ? AND posted_date < ? GROUP BY currency",
            window,
        )
        accrual_fees = conn.fetchall(
            f"SELECT currency, fee_category, -sum(amount) FROM {schema}.fees_by_category_daily "
            "WHERE category_group = 'fee' AND posted_date >= ? AND posted_date < ? GROUP BY currency, fee_category",
            window,
        )
        # Cash: every line of the settlements deposited in the month.
        cash_from = (
            f"FROM {schema}.stg_settlement_lines AS l JOIN {schema}.stg_settlements AS s "
            "ON s.channel = l.channel AND s.settlement_id = l.settlement_id "
            "WHERE s.deposit_date >= ? AND s.deposit_date < ?"
        )
        cash_lines = conn.fetchall(f"SELECT {_LINE_FIGURES} {cash_from} GROUP BY l.currency", window)
        cash_fees = conn.fetchall(
            f"SELECT l.currency, l.fee_category, -sum(l.amount) {cash_from} AND l.fee_category IN {FEE_IN} "
            "GROUP BY l.currency, l.fee_category",
            window,
        )
        profit = {
            basis: conn.fetchall(
                f"SELECT {_PROFIT_FIGURES} FROM {schema}.sku_profit_monthly WHERE basis = ? AND month = ? GROUP BY currency",
                [basis, start],
            )
            for basis in (ACCRUAL, CASH)
        }
        deposits = conn.fetchall(
            f"SELECT currency, sum(deposit) FROM {schema}.settlement_reconciliation "
            "WHERE deposit_date >= ? AND deposit_date < ? GROUP BY currency",
            window,
        )
        tables = _monthly_tables(conn, schema, start, following)
        daily = conn.fetch_df(
            f"SELECT posted_date, currency, sum(revenue) AS revenue, sum(refunds) AS refunds, sum(fees) AS fees "
            f"FROM {schema}.net_proceeds_daily WHERE posted_date >= ? AND posted_date < ? "
            "GROUP BY posted_date, currency ORDER BY posted_date, currency",
            window,
        )
        mix = conn.fetch_df(
            f"SELECT channel, currency, sum(order_count) AS orders, sum(units) AS units, sum(items_sales) AS items_sales "
            f"FROM {schema}.channel_mix_daily WHERE purchased_date >= ? AND purchased_date < ? "
            "GROUP BY channel, currency ORDER BY currency, channel",
            window,
        )
    summaries = {
        ACCRUAL: _basis_figures(accrual_lines, accrual_fees, profit[ACCRUAL], deposits),
        CASH: _basis_figures(cash_lines, cash_fees, profit[CASH], deposits),
    }
    empty = not any(summaries.values()) and not len(tables["orders"])
    return ReportData(
        merchant_id, merchant_name, MONTHLY, month, ACCRUAL, summaries[ACCRUAL], tables, empty,
        summaries=summaries, period_label=label, as_of=as_of, daily=daily, channel_mix=mix,
    )


# The orders table's columns and how each is held: a month of a million order lines fits in about
# 150 MB when repeated labels are categories and money and quantities are float64 (the workbook
# stores numbers as IEEE doubles anyway), against about 700 MB as Python objects.
ORDER_COLUMNS = {
    "channel": "category", "order_id": "text", "purchased_date": "date", "shipped_date": "date",
    "status": "category", "line_id": "category", "sku": "category", "master_part": "category",
    "quantity_ordered": "number", "quantity_shipped": "number", "item_price": "number", "currency": "category",
    "match_status": "category",
}


def _fetch_compact(conn: Connection, sql: str, params: list, columns: dict[str, str], size: int = 25_000) -> pd.DataFrame:
    """A big result read in batches into compact columns (see ORDER_COLUMNS)."""
    parts: dict[str, list[pd.Series]] = {name: [] for name in columns}
    for rows in conn.iter_batches(sql, params, size=size):
        batch = pd.DataFrame.from_records(rows, columns=list(columns))
        for name, kind in columns.items():
            column = batch[name]
            if kind == "category":
                column = column.astype("category")
            elif kind == "number":
                column = pd.to_numeric(column, errors="coerce").astype("float64")
            elif kind == "date":
                column = pd.to_datetime(column)
            parts[name].append(column)
    if not parts[next(iter(columns))]:
        return pd.DataFrame({name: pd.Series(dtype="float64" if kind == "number" else object) for name, kind in columns.items()})
    return pd.DataFrame({
        name: (
            pd.Series(pd.api.types.union_categoricals(parts[name], sort_categories=True)) if kind == "category"
            else pd.concat(parts[name], ignore_index=True)
        )
        for name, kind in columns.items()
    })


def _monthly_tables(conn: Connection, schema: str, start: date, following: date) -> dict[str, pd.DataFrame]:
    window = [start, following]
    orders = _fetch_compact(
        conn,
        "SELECT o.channel, o.order_id, o.purchased_date, o.shipped_date, o.status, l.line_id, l.sku, l.master_part, "
        "l.quantity_ordered, l.quantity_shipped, l.item_price, coalesce(l.currency, o.currency), m.match_status "
        f"FROM {schema}.stg_orders AS o "
        f"LEFT JOIN {schema}.stg_order_lines AS l ON l.channel = o.channel AND l.order_id = o.order_id "
        f"LEFT JOIN {schema}.order_settlement_match AS m ON m.channel = o.channel AND m.order_id = o.order_id "
        "AND m.settlement_id IS NULL "
        "WHERE o.purchased_date >= ? AND o.purchased_date < ?",
        window,
        ORDER_COLUMNS,
    )
    # Sorted here, not by the engine: an in-process DuckDB would hold the whole sorted result
    # (about 130 MB more at a million lines) while the frame is built.
    orders = orders.sort_values(["purchased_date", "channel", "order_id", "line_id"], kind="stable", ignore_index=True)
    fees = conn.fetch_df(
        "SELECT channel, currency, category_group, fee_category, sum(amount) AS amount, sum(line_count) AS line_count "
        f"FROM {schema}.fees_by_category_daily WHERE posted_date >= ? AND posted_date < ? "
        "GROUP BY channel, currency, category_group, fee_category ORDER BY currency, channel, category_group, fee_category",
        window,
    )
    sku_profit = conn.fetch_df(
        "SELECT basis, channel, currency, sku, master_part, revenue, refunds, fees, units_sold, cost_of_goods, "
        "unattributed_fees, net_profit, margin, uncosted_units, cost_missing_reason "
        f"FROM {schema}.sku_profit_monthly WHERE month = ? ORDER BY basis, currency, net_profit DESC, channel, sku",
        [start],
    )
    inventory = conn.fetch_df(
        "SELECT channel, marketplace_id, sku, master_part, snapshot_date, available, inbound, reserved, stock_out, "
        f"stock_out_days_30d, units_sold_30d, units_sold_90d, days_of_cover, slow_mover FROM {schema}.inventory_health "
        "ORDER BY stock_out DESC, days_of_cover NULLS LAST, channel, marketplace_id, sku"
    )
    exceptions = conn.fetch_df(
        "SELECT 'settlement' AS level, channel, settlement_id, CAST(NULL AS VARCHAR) AS order_id, "
        "reconciliation_status AS status, currency, reported_total AS expected, lines_total AS settled, difference "
        f"FROM {schema}.settlement_reconciliation "
        "WHERE reconciliation_status <> 'adds_up' AND deposit_date >= ? AND deposit_date < ? "
        "UNION ALL "
        "SELECT 'order', channel, CAST(NULL AS VARCHAR), order_id, match_status, currency, "
        "items_subtotal + shipping_total - promotion_total, settled_principal + settled_shipping + settled_promotion, "
        "coalesce(principal_difference, 0) + coalesce(shipping_difference, 0) + coalesce(promotion_difference, 0) "
        f"FROM {schema}.order_settlement_match "
        "WHERE order_id IS NOT NULL AND ("
        "(match_status = 'settled' AND (principal_difference <> 0 OR shipping_difference <> 0 OR promotion_difference <> 0) "
        " AND shipped_date >= ? AND shipped_date < ?) "
        "OR (match_status IN ('settled_not_shipped', 'unknown_order') AND last_deposit_date >= ? AND last_deposit_date < ?)) "
        "ORDER BY 1 DESC, 2, 3, 4",
        [*window, *window, *window],
    )
    unsettled = conn.fetch_df(
        "SELECT channel, order_id, match_status, order_status, shipped_date, currency, items_subtotal, "
        "shipping_total, days_since_shipped, settlement_delay_days "
        f"FROM {schema}.order_settlement_match "
        "WHERE match_status IN ('pending', 'unsettled_overdue') AND shipped_date < ? "
        "ORDER BY match_status DESC, shipped_date, channel, order_id",
        [following],
    )
    return {
        "orders": orders, "fees": fees, "sku_profit": sku_profit, "inventory_health": inventory,
        "reconciliation_exceptions": exceptions, "unsettled_orders": unsettled,
    }


def settlement_period(channel: str, settlement_id: str) -> str:
    """A settlement report's period, safe as a folder name: "<channel>-<settlement id>", any other
    character than letters, digits, '.', '_' and '-' as '-' (Walmart's "US:11152026")."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{channel}-{settlement_id}")


def settlement_report_data(
    warehouse: Warehouse, merchant_id: str, channel: str, settlement_id: str, merchant_name: str
) -> ReportData:
    """One settlement's report (cash basis): its lines by category, its reconciliation and the
    orders it settled. `period` is "<channel>-<settlement_id>"; an unknown settlement is refused."""
    schema = merchant_schema(merchant_id)
    period = settlement_period(channel, settlement_id)
    with warehouse.merchant_scope(merchant_id) as conn:
        if not _has(conn, schema, *MODELS):
            raise LookupError(f"{merchant_id} has no analytics built: build them before reporting settlement {settlement_id}")
        recon = conn.fetch_df(
            "SELECT channel, settlement_id, kind, period_start, period_end, deposit_date, currency, reported_total, "
            "line_count, lines_total, difference, reconciliation_status, net_proceeds, reserve_held, reserve_released, "
            f"transfer, deposit FROM {schema}.settlement_reconciliation WHERE channel = ? AND settlement_id = ?",
            [channel, settlement_id],
        )
        if not len(recon):
            raise LookupError(f"settlement {channel} {settlement_id} is not in {merchant_id}'s settlement_reconciliation")
        raw = conn.fetchall(
            "SELECT channel, settlement_id, kind, period_start, period_end, deposit_date, currency, reported_total, "
            f"line_count, lines_total, difference, reconciliation_status FROM {schema}.settlement_reconciliation "
            "WHERE channel = ? AND settlement_id = ?",
            [channel, settlement_id],
        )[0]
        where = "WHERE l.channel = ? AND l.settlement_id = ?"
        key = [channel, settlement_id]
        lines = conn.fetchall(f"SELECT {_LINE_FIGURES} FROM {schema}.stg_settlement_lines AS l {where} GROUP BY l.currency", key)
        fee_rows = conn.fetchall(
            f"SELECT l.currency, l.fee_category, -sum(l.amount) FROM {schema}.stg_settlement_lines AS l {where} "
            f"AND l.fee_category IN {FEE_IN} GROUP BY l.currency, l.fee_category",
            key,
        )
        fees = conn.fetch_df(
            "SELECT l.channel, l.currency, "
            f"CASE WHEN l.fee_category IN {REVENUE_IN} THEN 'revenue' WHEN l.fee_category IN {TAX_IN} THEN 'tax' "
            f"WHEN l.fee_category IN {BRIDGE_IN} THEN 'bridge' ELSE 'fee' END AS category_group, "
            "l.fee_category, sum(l.amount) AS amount, count(*) AS line_count "
            f"FROM {schema}.stg_settlement_lines AS l {where} "
            "GROUP BY l.channel, l.currency, l.fee_category ORDER BY 2, 3, 4",
            key,
        )
        orders = conn.fetch_df(
            "SELECT l.channel, l.order_id, m.match_status, m.order_status, m.shipped_date, l.currency, "
            f"sum(case when l.fee_category IN {REVENUE_IN} and l.transaction_kind <> 'refund' then l.amount else 0 end) AS revenue, "
            f"-sum(case when l.fee_category IN {REVENUE_IN} and l.transaction_kind = 'refund' then l.amount else 0 end) AS refunds, "
            f"-sum(case when l.fee_category IN {FEE_IN} then l.amount else 0 end) AS fees, "
            "sum(l.amount) AS settled_in_this_settlement, m.items_subtotal, m.principal_difference "
            f"FROM {schema}.stg_settlement_lines AS l "
            f"LEFT JOIN {schema}.order_settlement_match AS m ON m.channel = l.channel AND m.order_id = l.order_id "
            f"AND m.settlement_id IS NULL {where} AND l.order_id IS NOT NULL "
            "GROUP BY l.channel, l.order_id, m.match_status, m.order_status, m.shipped_date, l.currency, "
            "m.items_subtotal, m.principal_difference ORDER BY l.order_id",
            key,
        )
        as_of = _as_of(conn, schema)
    (_, _, kind, period_start, period_end, deposit_date, currency, reported, line_count, lines_total, difference, status) = raw
    figures = _basis_figures(lines, fee_rows, [], [(currency, reported)])
    for per_currency in figures.values():
        # Cost is known per month (sku_profit_monthly), not per deposit: a settlement shows money.
        for name in ("cost_of_goods", "net_profit", "margin", "uncosted_units"):
            per_currency.pop(name)
        per_currency["deposits"] = Decimal(0)
    if currency in figures:
        figures[currency].update({
            "deposits": reported if reported is not None else None,
            "reported_total": reported,
            "lines_total": lines_total,
            "difference": difference,
        })
    exceptions = recon.loc[recon["reconciliation_status"] != "adds_up"]
    label = (
        f"{channel} {kind or 'settlement'} {settlement_id}"
        + (f", {_day(period_start)} to {_day(period_end)}" if period_start is not None else "")
        + (f", deposited {_day(deposit_date)}" if deposit_date is not None else "")
    )
    return ReportData(
        merchant_id, merchant_name, SETTLEMENT, period, CASH, figures,
        {"orders": orders, "fees": fees, "reconciliation": recon, "reconciliation_exceptions": exceptions},
        empty=not line_count, period_label=label, as_of=as_of,
        reconciliation={"status": status, "line_count": line_count, "currency": currency},
    )


def _day(value: object) -> str:
    return str(value)[:10]
