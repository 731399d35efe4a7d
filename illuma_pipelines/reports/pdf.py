"""A report as a PDF with charts (matplotlib, drawn on Figure objects with the Agg canvas: no
pyplot state, safe in a multi-threaded run), and a PNG of its first page for the UI.

Pages: the summary (every figure of `report_figures`, as text the PDF keeps searchable: TrueType
fonts, not Type 3), then for a monthly report revenue and fees by day, the channel mix, the top and
bottom SKUs by profit, stock-outs and days of cover; for a settlement report its lines by category
and the orders it settled. Every page carries the merchant's name, the period and its number;
every page that shows money names its basis.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from illuma_pipelines.reports.data import (  # noqa: E402
    ACCRUAL,
    BASIS_TEXT,
    CASH,
    MONTHLY,
    ReportData,
    empty_text,
    figure_label,
    figure_names,
    format_figure,
    format_money,
    format_percent,
)

A4 = (8.27, 11.69)
A4_LANDSCAPE = (11.69, 8.27)
TOP_SKUS = 10
RC = {"pdf.fonttype": 42, "font.size": 9, "axes.titlesize": 11}
REVENUE_COLOR, FEES_COLOR, LOSS_COLOR, STOCK_COLOR = "#2a6f97", "#c8553d", "#b23a48", "#6a994e"


def render_pdf(data: ReportData, path: Path | str) -> Path:
    """Write the report's PDF to `path` and its first page to `<stem>.png`; return the PDF path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(RC):
        pages: list[tuple[Figure, str | None]] = [_summary_page(data)]
        if not data.empty:
            pages += _monthly_pages(data) if data.kind == MONTHLY else _settlement_pages(data)
        partial = path.with_name(path.name + ".partial")
        with PdfPages(partial, metadata={"Title": data.title, "Subject": f"{data.kind} report {data.period}"}) as pdf:
            for number, (fig, basis) in enumerate(pages, 1):
                _frame(fig, data, number, len(pages), basis)
                pdf.savefig(fig)
        pages[0][0].savefig(path.with_suffix(".png"), dpi=110)
        partial.replace(path)
    return path


def _frame(fig: Figure, data: ReportData, number: int, total: int, basis: str | None) -> None:
    """The header and footer every page has."""
    fig.text(0.05, 0.975, data.merchant_name, fontsize=10, fontweight="bold", va="top")
    fig.text(0.95, 0.975, f"{'Monthly report' if data.kind == MONTHLY else 'Settlement report'}: {data.period_label}",
             fontsize=9, ha="right", va="top")
    if basis:
        fig.text(0.05, 0.02, f"Basis: {basis}", fontsize=8, va="bottom")
    fig.text(0.95, 0.02, f"Page {number} of {total}", fontsize=8, ha="right", va="bottom")


def _summary_page(data: ReportData) -> tuple[Figure, str | None]:
    fig = Figure(figsize=A4)
    fig.text(0.05, 0.93, data.title, fontsize=14, fontweight="bold", va="top", wrap=True)
    if data.as_of:
        fig.text(0.05, 0.895, f"Analytics as of {data.as_of}", fontsize=9, va="top")
    if data.empty:
        fig.text(0.05, 0.8, empty_text(data), fontsize=11, va="top", wrap=True)
        return fig, None
    columns = [(b, c) for b, per in data.summaries.items() for c in sorted(per)]
    names = figure_names(data)
    x_label, width = 0.05, 0.9
    xs = [0.45 + i * (width - 0.4) / max(len(columns), 1) + (width - 0.4) / max(len(columns), 1) for i in range(len(columns))]
    y, step = 0.85, min(0.028, 0.7 / max(len(names) + 1, 1))
    fig.text(x_label, y, "Figure", fontweight="bold")
    for x, (basis, currency) in zip(xs, columns, strict=True):
        fig.text(x, y, f"{currency} ({basis})", fontweight="bold", ha="right")
    for name in names:
        y -= step
        fig.text(x_label, y, figure_label(name))
        for x, (basis, currency) in zip(xs, columns, strict=True):
            figures = data.summaries[basis][currency]
            if name in figures:
                fig.text(x, y, format_figure(name, figures[name], currency), ha="right")
    y -= 2 * step
    notes = ["Bases: " + "; ".join(BASIS_TEXT.get(b, b) for b in data.summaries) + "."]
    notes.append("Deposits are what the marketplaces reported paying out, by deposit date.")
    if data.kind == MONTHLY:
        notes.append("Cost of goods, net profit and margin are unknown when a sale has no known cost.")
    else:
        notes.append(f"Reconciliation: {data.reconciliation.get('status')}, {data.reconciliation.get('line_count')} lines.")
    for note in notes:
        fig.text(x_label, y, note, fontsize=8, style="italic", wrap=True)
        y -= step
    return fig, " and ".join(BASIS_TEXT.get(b, b) for b in data.summaries)


def _monthly_pages(data: ReportData) -> list[tuple[Figure, str | None]]:
    return [_trend_page(data), _channel_page(data), _sku_page(data), _inventory_page(data)]


def _nothing(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _trend_page(data: ReportData) -> tuple[Figure, str | None]:
    fig = Figure(figsize=A4_LANDSCAPE)
    daily = data.daily
    currencies = sorted(daily["currency"].unique()) if len(daily) else [None]
    axes = fig.subplots(len(currencies), 1, squeeze=False)[:, 0]
    fig.suptitle("Revenue and fees by day", y=0.93)
    for ax, currency in zip(axes, currencies, strict=True):
        if currency is None:
            _nothing(ax, "No settled money in the month")
            continue
        rows = daily.loc[daily["currency"] == currency].sort_values("posted_date")
        days = pd.to_datetime(rows["posted_date"])
        ax.plot(days, rows["revenue"].astype(float), marker="o", color=REVENUE_COLOR, label="Revenue")
        ax.plot(days, rows["fees"].astype(float), marker="o", color=FEES_COLOR, label="Fees")
        ax.set_ylabel(currency)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
        totals = data.summaries.get(ACCRUAL, {}).get(currency, {})
        ax.set_title(
            f"{currency}: revenue {format_money(totals.get('revenue'), currency)}, "
            f"fees {format_money(totals.get('fees_total'), currency)}",
            fontsize=9,
        )
        ax.tick_params(axis="x", rotation=30)
    fig.subplots_adjust(top=0.86, bottom=0.14, hspace=0.45)
    return fig, BASIS_TEXT[ACCRUAL]


def _channel_page(data: ReportData) -> tuple[Figure, str | None]:
    fig = Figure(figsize=A4_LANDSCAPE)
    mix = data.channel_mix
    currencies = sorted(mix["currency"].unique()) if len(mix) else [None]
    axes = fig.subplots(1, len(currencies), squeeze=False)[0]
    fig.suptitle("Channel mix: items sold by channel", y=0.93)
    for ax, currency in zip(axes, currencies, strict=True):
        if currency is None:
            _nothing(ax, "No orders in the month")
            continue
        rows = mix.loc[mix["currency"] == currency].sort_values("items_sales", ascending=False)
        sales = rows["items_sales"].astype(float)
        bars = ax.bar(rows["channel"], sales, color=REVENUE_COLOR)
        total = sum((_decimal(v) for v in rows["items_sales"]), Decimal(0))
        labels = [
            f"{format_money(_decimal(v), currency)}\n{format_percent(_decimal(v) / total if total else None)}"
            f" · {int(o):,} orders"
            for v, o in zip(rows["items_sales"], rows["orders"], strict=True)
        ]
        ax.bar_label(bars, labels=labels, fontsize=8, padding=2)
        ax.set_ylabel(f"Items sales ({currency})")
        ax.set_ylim(0, max(sales.max(), 1) * 1.25)
        ax.grid(axis="y", alpha=0.3)
    fig.subplots_adjust(top=0.85, bottom=0.12)
    return fig, "accrual basis for orders (money by the day each order was placed)"


def _decimal(value: object) -> Decimal:
    """A model's money as fetched (Decimal on PostgreSQL, a float of 4 decimals from DuckDB's frames)."""
    return value if isinstance(value, Decimal) else Decimal(repr(float(value))).quantize(Decimal("0.0001"))


def _sku_page(data: ReportData) -> tuple[Figure, str | None]:
    fig = Figure(figsize=A4_LANDSCAPE)
    profit = data.tables.get("sku_profit", pd.DataFrame())
    if len(profit):
        profit = profit.loc[(profit["basis"] == ACCRUAL) & profit["net_profit"].notna() & profit["sku"].notna()].copy()
    fig.suptitle(f"Top and bottom {TOP_SKUS} SKUs by net profit", y=0.93)
    top_ax, bottom_ax = fig.subplots(1, 2)
    if not len(profit):
        _nothing(top_ax, "No SKU with a known profit")
        _nothing(bottom_ax, "No SKU with a known profit")
    else:
        profit["profit"] = profit["net_profit"].astype(float)
        for ax, rows, title in (
            (top_ax, profit.nlargest(TOP_SKUS, "profit"), "Most profitable"),
            (bottom_ax, profit.nsmallest(TOP_SKUS, "profit"), "Least profitable"),
        ):
            rows = rows.iloc[::-1]
            labels = [f"{s} ({c})" for s, c in zip(rows["sku"], rows["channel"], strict=True)]
            colors = [REVENUE_COLOR if v >= 0 else LOSS_COLOR for v in rows["profit"]]
            bars = ax.barh(labels, rows["profit"], color=colors)
            ax.bar_label(
                bars, labels=[format_money(v, c) for v, c in zip(rows["net_profit"], rows["currency"], strict=True)],
                fontsize=7, padding=2,
            )
            ax.set_title(title)
            ax.axvline(0, color="#444", linewidth=0.6)
            span = max(abs(rows["profit"]).max(), 1)
            ax.set_xlim(min(rows["profit"].min(), 0) - span * 0.45, max(rows["profit"].max(), 0) + span * 0.45)
            ax.tick_params(axis="y", labelsize=7)
    fig.subplots_adjust(top=0.85, bottom=0.1, left=0.16, right=0.97, wspace=0.55)
    return fig, BASIS_TEXT[ACCRUAL]


COVER_BUCKETS = (
    (0, 7, "under 7 days"), (7, 30, "7-29"), (30, 90, "30-89"), (90, 180, "90-179"), (180, float("inf"), "180 or more"),
)


def _inventory_page(data: ReportData) -> tuple[Figure, str | None]:
    fig = Figure(figsize=A4_LANDSCAPE)
    health = data.tables.get("inventory_health", pd.DataFrame())
    fig.suptitle(f"Stock-outs and days of cover (as of {data.as_of})", y=0.93)
    outs_ax, cover_ax = fig.subplots(1, 2)
    if not len(health):
        _nothing(outs_ax, "No inventory snapshots")
        _nothing(cover_ax, "No inventory snapshots")
    else:
        outs = health.loc[health["stock_out_days_30d"].astype(float) > 0].copy()
        out_now = int(health["stock_out"].fillna(False).astype(bool).sum())
        outs_ax.set_title(f"{out_now:,} SKUs out of stock now; most stock-out days in 30")
        if len(outs):
            outs["days"] = outs["stock_out_days_30d"].astype(float)
            rows = outs.nlargest(15, "days").iloc[::-1]
            # A SKU has a pool per marketplace: name it, unless the pool is the channel's ("*").
            labels = [
                f"{s} ({c})" if m in (None, "*") else f"{s} ({c} {m})"
                for s, c, m in zip(rows["sku"], rows["channel"], rows.get("marketplace_id", [None] * len(rows)), strict=True)
            ]
            bars = outs_ax.barh(labels, rows["days"], color=LOSS_COLOR)
            outs_ax.bar_label(bars, labels=[f"{int(d)}" for d in rows["days"]], fontsize=7, padding=2)
            outs_ax.tick_params(axis="y", labelsize=7)
        else:
            _nothing(outs_ax, "No stock-out in the last 30 days")
        cover = pd.to_numeric(health["days_of_cover"], errors="coerce")
        counts = [int(((cover >= lo) & (cover < hi) if lo else (cover < hi)).sum()) for lo, hi, _ in COVER_BUCKETS]
        counts.append(int(cover.isna().sum()))
        names = [b[2] for b in COVER_BUCKETS] + ["no sales in 30 days"]
        bars = cover_ax.bar(names, counts, color=STOCK_COLOR)
        cover_ax.bar_label(bars, labels=[f"{c:,}" for c in counts], fontsize=8, padding=2)
        cover_ax.set_title(f"SKUs by days of cover ({len(health):,} SKUs)")
        cover_ax.tick_params(axis="x", rotation=20)
    fig.subplots_adjust(top=0.85, bottom=0.15, left=0.16, right=0.97, wspace=0.4)
    return fig, None


def _settlement_pages(data: ReportData) -> list[tuple[Figure, str | None]]:
    fig = Figure(figsize=A4_LANDSCAPE)
    fees = data.tables.get("fees", pd.DataFrame())
    fig.suptitle("Lines by category", y=0.93)
    ax = fig.subplots()
    if len(fees):
        rows = fees.assign(value=fees["amount"].astype(float)).sort_values("value")
        labels = [f"{c} ({g})" for c, g in zip(rows["fee_category"], rows["category_group"], strict=True)]
        bars = ax.barh(labels, rows["value"], color=[REVENUE_COLOR if v >= 0 else FEES_COLOR for v in rows["value"]])
        ax.bar_label(bars, labels=[format_money(v, c) for v, c in zip(rows["amount"], rows["currency"], strict=True)], fontsize=8, padding=2)
        span = max(abs(rows["value"]).max(), 1)
        ax.set_xlim(min(rows["value"].min(), 0) - span * 0.4, max(rows["value"].max(), 0) + span * 0.4)
        ax.axvline(0, color="#444", linewidth=0.6)
    else:
        _nothing(ax, "No lines")
    fig.subplots_adjust(top=0.85, bottom=0.1, left=0.28, right=0.95)
    return [(fig, BASIS_TEXT[CASH]), _orders_page(data)]


ORDERS_PER_PAGE = 40


def _orders_page(data: ReportData) -> tuple[Figure, str | None]:
    fig = Figure(figsize=A4)
    orders = data.tables.get("orders", pd.DataFrame())
    fig.text(0.05, 0.93, f"Orders settled: {len(orders):,}", fontsize=12, fontweight="bold", va="top")
    header = ("Order", "Channel", "Status", "Revenue", "Fees", "Settled here")
    xs = (0.05, 0.3, 0.42, 0.66, 0.79, 0.95)
    y = 0.88
    for x, text in zip(xs, header, strict=True):
        fig.text(x, y, text, fontweight="bold", ha="left" if x < 0.6 else "right")
    for row in orders.head(ORDERS_PER_PAGE).itertuples(index=False):
        y -= 0.019
        cells = (
            str(row.order_id), str(row.channel), str(row.match_status or ""),
            format_money(row.revenue, row.currency), format_money(row.fees, row.currency),
            format_money(row.settled_in_this_settlement, row.currency),
        )
        for x, text in zip(xs, cells, strict=True):
            fig.text(x, y, text, fontsize=8, ha="left" if x < 0.6 else "right")
    if len(orders) > ORDERS_PER_PAGE:
        fig.text(0.05, y - 0.03, f"... and {len(orders) - ORDERS_PER_PAGE:,} more in the workbook's Orders sheet.", fontsize=8)
    return fig, BASIS_TEXT[CASH]
