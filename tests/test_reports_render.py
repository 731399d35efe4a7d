"""The monthly and settlement reports (issue 16) rendered from real analytics models on both
engines and opened back: every summary figure of the workbook and of the PDF's text equals the
warehouse's, read here straight from the models (not through the report's own queries where a
second model holds the same figure); number formats, frozen headers and filters are in the
workbook; every PDF page names the merchant, the period, its number and, when it shows money, its
basis; an empty month and a merchant never built render reports that say so.

The models are built once per engine from tests/test_analytics_models.py's hand-made core rows
(both of its loads, one dbt build as of its second build day).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.reports.data import (
    ACCRUAL,
    CASH,
    format_figure,
    monthly_report_data,
    report_figures,
    settlement_report_data,
    shown_value,
)
from illuma_pipelines.reports.pdf import render_pdf
from illuma_pipelines.reports.xlsx import MONEY_FORMAT, PERCENT_FORMAT, currency_format, render_xlsx
from tests.test_analytics_models import (
    AMAZON_DE,
    AMAZON_US,
    SECOND_BUILD,
    _dbt_build,
    _first_load,
    _load,
    _rows,
    _second_load,
)

D = Decimal
NAME = "Acme Brakes & Filters <Test>"


@pytest.fixture
def built(warehouse, warehouse_url, merchant_id, tmp_path):
    mid = merchant_id("reports")
    add_merchant(warehouse, mid, display_name=NAME,
                 channels={c: ChannelConnection(c, f"sandbox:{mid}") for c in ("amazon", "ebay", "walmart")})
    _load(warehouse, mid, _first_load(), "2026-02-05")
    _load(warehouse, mid, _second_load(), SECOND_BUILD)
    _dbt_build(warehouse, warehouse_url, mid, SECOND_BUILD, tmp_path / "dbt", "--full-refresh")
    return mid


def _one(warehouse, mid: str, sql: str) -> tuple:
    [row] = _rows(warehouse, mid, sql)
    return row


def _pdf_pages(path) -> list[str]:
    return [page.extract_text() for page in PdfReader(path).pages]


def _summary_cells(path) -> tuple[dict[tuple[str, str, str], object], object]:
    """The workbook's summary as {(basis, currency, figure key): cell}, and the sheet."""
    ws = load_workbook(path)["Summary"]
    headers = {cell.column: cell.value for cell in ws[6] if cell.value}
    cells = {}
    for row in ws.iter_rows(min_row=7):
        key = row[1].value
        if not key:
            continue
        for cell in row[2:]:
            if cell.column in headers and cell.value is not None:
                currency, basis = headers[cell.column].rstrip(")").split(" (")
                cells[(basis, currency, key)] = cell
    return cells, ws


def _expected_month(warehouse, mid: str, month: str, following: str) -> dict[str, dict[str, Decimal | None]]:
    """The month's figures from the models, per basis (USD only in these rows)."""
    schema = merchant_schema(mid)
    window = f"'{month}' AND posted_date < DATE '{following}'"
    deposits = _one(warehouse, mid, f"SELECT sum(deposit) FROM {{schema}}.settlement_reconciliation "
                    f"WHERE deposit_date >= DATE '{month}' AND deposit_date < DATE '{following}'")[0]
    out = {}
    for basis in (ACCRUAL, CASH):
        revenue, refunds, fees, cost, profit, uncosted = _one(
            warehouse, mid,
            "SELECT sum(revenue), sum(refunds), sum(fees + unattributed_fees), "
            "CASE WHEN count(*) = count(cost_of_goods) THEN sum(cost_of_goods) END, "
            "CASE WHEN count(*) = count(net_profit) THEN sum(net_profit) END, sum(uncosted_units) "
            f"FROM {schema}.sku_profit_monthly WHERE basis = '{basis}' AND month = DATE '{month}'",
        )
        figures = {"revenue": revenue, "refunds": refunds, "fees_total": fees, "cost_of_goods": cost,
                   "net_profit": profit, "deposits": deposits, "uncosted_units": D(uncosted)}
        figures["margin"] = None if profit is None else (profit / (revenue - refunds))
        if basis == ACCRUAL:
            figures["net_proceeds"], figures["tax"] = _one(
                warehouse, mid, f"SELECT sum(net_proceeds), sum(tax) FROM {schema}.net_proceeds_daily "
                f"WHERE posted_date >= DATE {window}")
            for category, amount in _rows(warehouse, mid, f"SELECT fee_category, -sum(amount) FROM {schema}.fees_by_category_daily "
                                          f"WHERE category_group = 'fee' AND posted_date >= DATE {window} GROUP BY fee_category"):
                figures[f"fee:{category}"] = amount
        else:
            # Another model than the report reads for the cash basis: the reconciliation's own sums.
            figures["net_proceeds"] = _one(warehouse, mid, f"SELECT sum(net_proceeds) FROM {schema}.settlement_reconciliation "
                                           f"WHERE deposit_date >= DATE '{month}' AND deposit_date < DATE '{following}'")[0]
        out[basis] = figures
    return out


def _assert_same_everywhere(data, expected, xlsx, pdf_text) -> None:
    cells, _ = _summary_cells(xlsx)
    for basis, figures in expected.items():
        ours = data.summaries[basis]["USD"]
        for name, value in figures.items():
            if name == "margin" and value is not None:
                value = shown_value("margin", value)
            assert ours[name] == value, (basis, name, ours[name], value)
            cell = cells[(basis, "USD", name)]
            if value is None:
                assert cell.value == "unknown"
            else:
                assert D(str(cell.value)) == shown_value(name, value), (basis, name, cell.value)
            assert format_figure(name, value, "USD") in pdf_text, (basis, name)
    for key, text in report_figures(data).items():
        assert text in pdf_text, key


def test_monthly_report_figures_equal_across_workbook_pdf_and_warehouse(built, warehouse, tmp_path):
    mid = built
    data = monthly_report_data(warehouse, mid, "2026-02", NAME)
    assert not data.empty and data.period == "2026-02" and data.as_of == date(2026, 2, 21)
    xlsx = render_xlsx(data, tmp_path / "out" / "monthly.xlsx")
    pdf = render_pdf(data, tmp_path / "out" / "monthly.pdf")
    pages = _pdf_pages(pdf)
    text = "\n".join(pages)
    expected = _expected_month(warehouse, mid, "2026-02-01", "2026-03-01")
    _assert_same_everywhere(data, expected, xlsx, text)
    # Worked out by hand (test_analytics_models.py): AMZ-S1 -9.99, WM-R2 19.10, AMZ-S2 -25 deposited
    # in February; accrual profit -38.99 - 3.00 on 27.00 of revenue.
    figures = report_figures(data)
    assert figures["accrual:USD:deposits"] == figures["cash:USD:deposits"] == "USD -15.89"
    assert figures["accrual:USD:net_profit"] == "USD -41.99"
    assert figures["accrual:USD:margin"] == "-155.52%"

    # Every page: the merchant, the period, its number; the basis where money is shown.
    assert len(pages) == 5
    for number, page in enumerate(pages, 1):
        assert NAME in page and "February 2026" in page and f"Page {number} of 5" in page, number
    assert all("Basis:" in page for page in pages[:4]) and "Basis:" not in pages[4]
    assert "accrual basis" in pages[0] and "cash basis" in pages[0]
    png = pdf.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    cells, summary = _summary_cells(xlsx)
    assert summary.freeze_panes == "C7" and summary.auto_filter.ref.startswith("A6:")
    assert cells[(ACCRUAL, "USD", "revenue")].number_format == currency_format("USD")
    assert cells[(ACCRUAL, "USD", "margin")].number_format == PERCENT_FORMAT
    wb = load_workbook(xlsx)
    assert wb.sheetnames == ["Summary", "Orders", "Fees", "SKU profit", "Inventory health",
                             "Reconciliation exceptions", "Unsettled orders"]
    for ws in wb.worksheets[1:]:
        assert ws.freeze_panes == "A2", ws.title
        assert ws.auto_filter.ref == f"A1:{ws.cell(row=1, column=ws.max_column).column_letter}{ws.max_row}", ws.title
        assert ws.column_dimensions["A"].width >= len(ws["A1"].value), ws.title
    orders = [[c.value for c in row] for row in wb["Orders"].iter_rows()]
    header = orders[0]
    assert {r[header.index("order_id")] for r in orders[1:]} == {"E3"}  # the one order bought in February
    e3 = orders[1]
    assert e3[header.index("item_price")] == 28.0 and e3[header.index("purchased_date")] == datetime(2026, 2, 9)
    price = wb["Orders"].cell(row=2, column=header.index("item_price") + 1)
    assert price.number_format == MONEY_FORMAT and isinstance(price.value, float)
    profit = [[c.value for c in row] for row in wb["SKU profit"].iter_rows()]
    h = profit[0]
    rows = {(r[h.index("basis")], r[h.index("channel")], r[h.index("sku")]): r for r in profit[1:]}
    assert rows[(ACCRUAL, "amazon", "FLT-2")][h.index("net_profit")] == -38.99
    flt = 2 + profit[1:].index(rows[(ACCRUAL, "amazon", "FLT-2")])
    margin = wb["SKU profit"].cell(row=flt, column=h.index("margin") + 1)
    assert margin.value == -1.4441 and margin.number_format == PERCENT_FORMAT
    # Read-only readers trust each sheet's <dimension>: it covers the streamed rows.
    streamed = load_workbook(xlsx, read_only=True)
    assert [streamed[t].max_row for t in ("Orders", "SKU profit")] == [len(orders), len(profit)]
    health = [[c.value for c in row] for row in wb["Inventory health"].iter_rows()]
    hh = health[0]
    assert {(r[hh.index("marketplace_id")], r[hh.index("sku")]): r[hh.index("stock_out")] for r in health[1:]} == {
        (AMAZON_US, "FLT-2"): True, (AMAZON_US, "BRK-1"): False, (AMAZON_DE, "BRK-1"): False, ("*", "OLD-7"): False,
    }
    unsettled = [[c.value for c in row] for row in wb["Unsettled orders"].iter_rows()]
    assert sorted(r[1] for r in unsettled[1:]) == ["A3", "E3"]

    # January: MYST-9 has no cost, so cost of goods and profit are unknown, never a partial sum.
    january = monthly_report_data(warehouse, mid, "2026-01", NAME)
    jan_xlsx = render_xlsx(january, tmp_path / "out" / "january.xlsx")
    jan_text = "\n".join(_pdf_pages(render_pdf(january, tmp_path / "out" / "january.pdf")))
    _assert_same_everywhere(january, _expected_month(warehouse, mid, "2026-01-01", "2026-02-01"), jan_xlsx, jan_text)
    assert january.summaries[ACCRUAL]["USD"]["net_profit"] is None
    assert january.summaries[ACCRUAL]["USD"]["uncosted_units"] == 2
    exceptions = [[c.value for c in row] for row in load_workbook(jan_xlsx)["Reconciliation exceptions"].iter_rows()]
    h = exceptions[0]
    # EB-P1 deposited on January 25, short by 2.35; E2 settled 1.00 under its order.
    assert {(r[h.index("settlement_id")] or r[h.index("order_id")], r[h.index("difference")]) for r in exceptions[1:]} == {
        ("EB-P1", 2.35), ("E2", -1.0)
    }


def test_settlement_report_and_empty_reports(built, warehouse, merchant_id, tmp_path):
    mid = built
    data = settlement_report_data(warehouse, mid, "ebay", "EB-P1", NAME)
    xlsx = render_xlsx(data, tmp_path / "settlement.xlsx")
    pages = _pdf_pages(render_pdf(data, tmp_path / "settlement.pdf"))
    text = "\n".join(pages)
    reported, lines_total, difference, proceeds = _one(
        warehouse, mid, "SELECT reported_total, lines_total, difference, net_proceeds FROM {schema}.settlement_reconciliation "
        "WHERE settlement_id = 'EB-P1'",
    )
    revenue, fees = _one(warehouse, mid, "SELECT sum(revenue), sum(fees + unattributed_fees) FROM {schema}.sku_profit_monthly "
                         "WHERE basis = 'cash' AND month = DATE '2026-01-01' AND channel = 'ebay'")
    expected = {CASH: {"reported_total": reported, "lines_total": lines_total, "difference": difference,
                       "deposits": reported, "net_proceeds": proceeds, "revenue": revenue, "fees_total": fees}}
    _assert_same_everywhere(data, expected, xlsx, text)
    assert report_figures(data)["cash:USD:difference"] == "USD 2.35"
    for number, page in enumerate(pages, 1):
        assert NAME in page and "EB-P1" in page and f"Page {number} of {len(pages)}" in page and "Basis: cash" in page
    wb = load_workbook(xlsx)
    orders = [[c.value for c in row] for row in wb["Orders"].iter_rows()]
    assert sorted(r[1] for r in orders[1:]) == ["E1", "E2"]
    recon = [[c.value for c in row] for row in wb["Reconciliation"].iter_rows()]
    assert recon[1][recon[0].index("reconciliation_status")] == "does_not_add_up"
    with pytest.raises(LookupError, match="NOPE"):
        settlement_report_data(warehouse, mid, "ebay", "NOPE", NAME)

    # An empty month of a built merchant, and a new merchant with no analytics at all.
    fresh = merchant_id("fresh")
    add_merchant(warehouse, fresh, display_name="New Seller", channels={"ebay": ChannelConnection("ebay", f"sandbox:{fresh}")})
    for who, name, month, label in ((mid, NAME, "2025-06", "June 2025"), (fresh, "New Seller", "2026-02", "February 2026")):
        empty = monthly_report_data(warehouse, who, month, name)
        assert empty.empty and report_figures(empty) == {}
        out = render_xlsx(empty, tmp_path / who / "monthly.xlsx")
        pdf = render_pdf(empty, tmp_path / who / "monthly.pdf")
        [page] = _pdf_pages(pdf)
        assert f"No activity in {label}" in page and name in page and "Page 1 of 1" in page
        summary = load_workbook(out)["Summary"]
        assert summary["A6"].value.startswith(f"No activity in {label}")
        assert pdf.with_suffix(".png").exists()


def test_missing_counts_render_as_empty_cells(tmp_path):
    """Nullable integer and boolean columns (a quantity or a flag the channel left out) hold pd.NA:
    their cells are left empty, never a crash (seen on the demo's sandbox data)."""
    import pandas as pd

    from illuma_pipelines.reports.data import ReportData

    orders = pd.DataFrame({
        "marketplace_order_id": ["A1", "A2"], "sku": ["BRK-1", "FLT-2"],
        "quantity_ordered": pd.array([2, None], dtype="Int64"), "item_price": [Decimal("50.00"), Decimal("9.99")],
        "is_business": pd.array([True, None], dtype="boolean"),
    })
    data = ReportData(
        merchant_id="m", merchant_name=NAME, kind="monthly", period="2026-01", basis="accrual",
        summary={"USD": {"revenue": Decimal("59.99")}}, tables={"orders": orders}, empty=False,
    )
    ws = load_workbook(render_xlsx(data, tmp_path / "r.xlsx"))["Orders"]
    rows = [row for row in ws.iter_rows(min_row=2, values_only=True) if row[0]]
    assert [r[2] for r in rows] == [2, None] and [r[4] for r in rows] == [True, None]
