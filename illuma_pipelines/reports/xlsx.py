"""A report as an XLSX workbook: a summary sheet, then one sheet per table (orders, fees, SKU
profit, inventory health, reconciliation exceptions, unsettled orders).

openpyxl builds the workbook (styles, number formats, frozen header rows, filters, widths), but
the table sheets' rows are streamed into the saved package by `_stream_sheet_rows`: openpyxl
writes about 5,000 rows a second here (no lxml; write_only mode included), so a month of a million
order lines would take minutes, while the rows written as XML from whole columns take seconds
(bench/reports.py). The rows use the very style ids openpyxl registered for each column, so money
is a number with a currency format, dates are dates and percents are percents.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from illuma_pipelines.reports.data import (
    BASIS_TEXT,
    COUNT_FIGURES,
    PERCENT_FIGURES,
    SETTLEMENT,
    ReportData,
    empty_text,
    figure_label,
    figure_names,
    shown_value,
)

MONEY_FORMAT = "#,##0.00;-#,##0.00"
PERCENT_FORMAT = "0.00%"
COUNT_FORMAT = "#,##0"
DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm"
# Excel's last row is 1,048,576: a longer table continues on "<name> (2)".
MAX_DATA_ROWS = 1_048_575
CHUNK_ROWS = 50_000

SHEET_TITLES = {
    "orders": "Orders",
    "fees": "Fees",
    "sku_profit": "SKU profit",
    "inventory_health": "Inventory health",
    "reconciliation": "Reconciliation",
    "reconciliation_exceptions": "Reconciliation exceptions",
    "unsettled_orders": "Unsettled orders",
}
MONEY_COLUMNS = frozenset({
    "item_price", "amount", "revenue", "refunds", "fees", "cost_of_goods", "unattributed_fees", "net_profit",
    "expected", "settled", "difference", "items_subtotal", "shipping_total", "reported_total", "lines_total",
    "net_proceeds", "reserve_held", "reserve_released", "transfer", "deposit", "settled_in_this_settlement",
    "principal_difference", "items_sales",
})
PERCENT_COLUMNS = frozenset({"margin", "share_of_sales"})
HEADER_FONT = Font(bold=True)
HEADER_FILL = PatternFill("solid", fgColor="DDE4EE")
_EPOCH = pd.Timestamp("1899-12-30")
_NEEDS_ESCAPE = re.compile(r"[&<>]")
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def currency_format(currency: str) -> str:
    """A real currency number format: `USD 1,234.56`, `USD -1,234.56` (the PDF's text)."""
    return f'"{currency}" #,##0.00;"{currency}" -#,##0.00'


@dataclass
class _Column:
    name: str
    kind: str  # money | percent | count | date | datetime | bool | text
    style_id: int = 0


@dataclass
class _TableSheet:
    path: str
    frame: pd.DataFrame
    columns: list[_Column]


def render_xlsx(data: ReportData, path: Path | str) -> Path:
    """Write the report's workbook to `path` (replaced atomically) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb = Workbook()
    summary = wb.active
    summary.title = "Summary"
    _write_summary(summary, data)
    sheets: list[tuple[object, pd.DataFrame, list[_Column]]] = []
    for name, frame in data.tables.items():
        base = SHEET_TITLES.get(name, name.replace("_", " ").capitalize())
        parts = [frame.iloc[i:i + MAX_DATA_ROWS] for i in range(0, len(frame), MAX_DATA_ROWS)] or [frame]
        for n, part in enumerate(parts, 1):
            ws = wb.create_sheet(base if n == 1 else f"{base} ({n})")
            sheets.append((ws, part, _table_header(ws, part)))
    with tempfile.TemporaryDirectory(prefix="illuma-xlsx-", dir=path.parent) as work:
        skeleton = Path(work) / "skeleton.xlsx"
        wb.save(skeleton)
        # Paths are assigned by the save (xl/worksheets/sheetN.xml).
        tables = [_TableSheet(ws.path.lstrip("/"), frame, columns) for ws, frame, columns in sheets]
        partial = Path(work) / "report.xlsx"
        _stream_sheet_rows(skeleton, partial, tables)
        # The work directory sits beside the target: the rename is atomic.
        os.replace(partial, path)
    return path


def _write_summary(ws, data: ReportData) -> None:
    ws["A1"] = data.title
    ws["A1"].font = Font(bold=True, size=14)
    ws["A2"] = f"Merchant: {data.merchant_name} ({data.merchant_id})"
    ws["A3"] = "Basis: " + "; ".join(BASIS_TEXT.get(b, b) for b in data.summaries)
    ws["A4"] = f"Analytics as of {data.as_of}" if data.as_of else "Analytics not built yet"
    if data.empty:
        ws["A6"] = empty_text(data)
        ws["A6"].font = Font(bold=True)
        ws.freeze_panes = "A2"
        ws.column_dimensions["A"].width = max(40, len(ws["A6"].value) + 2)
        return
    columns = [(b, c) for b, per in data.summaries.items() for c in sorted(per)]
    header = ["Figure", "Key", *(f"{c} ({b})" for b, c in columns)]
    for j, text in enumerate(header, 1):
        cell = ws.cell(row=6, column=j, value=text)
        cell.font, cell.fill = HEADER_FONT, HEADER_FILL
        cell.alignment = Alignment(horizontal="left" if j <= 2 else "right")
    row = 7
    for name in figure_names(data):
        ws.cell(row=row, column=1, value=figure_label(name))
        ws.cell(row=row, column=2, value=name)
        for j, (basis, currency) in enumerate(columns, 3):
            figures = data.summaries[basis][currency]
            if name not in figures:
                continue
            value = shown_value(name, figures[name])
            cell = ws.cell(row=row, column=j)
            if value is None:
                cell.value = "unknown"
                cell.alignment = Alignment(horizontal="right")
            elif name in PERCENT_FIGURES:
                cell.value, cell.number_format = value, PERCENT_FORMAT
            elif name in COUNT_FIGURES:
                cell.value, cell.number_format = int(value), COUNT_FORMAT
            else:
                cell.value, cell.number_format = value, currency_format(currency)
        row += 1
    notes = [
        "Deposits: what the marketplaces reported paying out, by deposit date (the same under either basis).",
        "Cost of goods, net profit and margin are unknown when a sale has no known cost (see the SKU profit sheet).",
        "Margin = net profit / (revenue - refunds). Money in cents, rounded half away from zero.",
    ]
    if data.kind == SETTLEMENT and data.reconciliation:
        notes.insert(0, f"Reconciliation: {data.reconciliation.get('status')}, {data.reconciliation.get('line_count')} lines.")
    for note in notes:
        row += 1
        ws.cell(row=row, column=1, value=note).font = Font(italic=True)
    ws.freeze_panes = "C7"
    ws.auto_filter.ref = f"A6:{get_column_letter(len(header))}{6 + len(figure_names(data))}"
    ws.column_dimensions["A"].width = max(len(figure_label(n)) for n in figure_names(data)) + 4
    ws.column_dimensions["B"].width = max(len(n) for n in figure_names(data)) + 2
    for j in range(3, len(header) + 1):
        ws.column_dimensions[get_column_letter(j)].width = max(len(header[j - 1]), 18) + 2


def _kind(name: str, series: pd.Series) -> str:
    if name in MONEY_COLUMNS:
        return "money"
    if name in PERCENT_COLUMNS:
        return "percent"
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "count"
    if pd.api.types.is_float_dtype(series):
        return "count" if name.startswith(("units", "quantity")) or name.endswith(("_count", "_days_30d")) else "money"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "date" if name.endswith("date") else "datetime"
    sample = series.dropna()
    if len(sample):
        first = sample.iloc[0]
        if isinstance(first, bool):
            return "bool"
        if isinstance(first, int | np.integer):
            return "count"
        if isinstance(first, Decimal | float):
            return "count" if name.endswith(("days_of_cover", "days")) else "money"
        if hasattr(first, "year") and hasattr(first, "month"):
            return "date" if name.endswith("date") else "datetime"
    return "text"


_FORMATS = {"money": MONEY_FORMAT, "percent": PERCENT_FORMAT, "count": COUNT_FORMAT, "date": DATE_FORMAT, "datetime": DATETIME_FORMAT}
_WIDTHS = {"money": 14, "percent": 10, "count": 10, "date": 12, "datetime": 17, "bool": 7}


def _table_header(ws, frame: pd.DataFrame) -> list[_Column]:
    """The header row, frozen and filtered, and each column's style id and width."""
    columns = []
    for j, name in enumerate(frame.columns, 1):
        column = _Column(name, _kind(name, frame[name]))
        header = ws.cell(row=1, column=j, value=name)
        header.font, header.fill = HEADER_FONT, HEADER_FILL
        if column.kind in _FORMATS:
            # A cell with the column's format registers its style; the row is removed below, the
            # style id stays (openpyxl writes every registered style).
            probe = ws.cell(row=2, column=j)
            probe.number_format = _FORMATS[column.kind]
            column.style_id = probe.style_id
        width = _WIDTHS.get(column.kind)
        if width is None:
            values = frame[name].dropna()
            if isinstance(values.dtype, pd.CategoricalDtype):
                values = pd.Series(values.cat.categories)
            width = max((len(str(v)) for v in values.tolist()), default=8)
        ws.column_dimensions[get_column_letter(j)].width = min(max(width, len(name)) + 2, 60)
        columns.append(column)
    ws.delete_rows(2)
    ws.freeze_panes = "A2"
    if len(frame.columns):
        ws.auto_filter.ref = f"A1:{get_column_letter(len(frame.columns))}{len(frame) + 1}"
    return columns


def _stream_sheet_rows(skeleton: Path, target: Path, tables: list[_TableSheet]) -> None:
    """Copy the skeleton package to `target`, writing each table's rows into its sheet."""
    by_path = {t.path: t for t in tables}
    with zipfile.ZipFile(skeleton) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=3) as dst:
        for item in src.infolist():
            table = by_path.get(item.filename)
            if table is None:
                dst.writestr(item, src.read(item.filename))
                continue
            xml = src.read(item.filename).decode("utf-8")
            head, tail = xml.split("</sheetData>", 1)
            last = f"{get_column_letter(max(len(table.columns), 1))}{len(table.frame) + 1}"
            head, found = re.subn(r'<dimension ref="[^"]*"\s*/>', f'<dimension ref="A1:{last}"/>', head, count=1)
            if not found:
                raise RuntimeError(f"{item.filename} of the openpyxl skeleton has no <dimension>: cannot stream its rows")
            # Opened by name, the entry takes the archive's compression and level.
            with dst.open(item.filename, "w", force_zip64=True) as out:
                out.write(head.encode("utf-8"))
                for start in range(0, len(table.frame), CHUNK_ROWS):
                    chunk = table.frame.iloc[start:start + CHUNK_ROWS]
                    out.write(_rows_xml(chunk, table.columns, first_row=start + 2).encode("utf-8"))
                out.write(("</sheetData>" + tail).encode("utf-8"))


def _rows_xml(chunk: pd.DataFrame, columns: list[_Column], first_row: int) -> str:
    numbers = range(first_row, first_row + len(chunk))
    cells = [
        _cells(get_column_letter(j), column, chunk[column.name], numbers) for j, column in enumerate(columns, 1)
    ]
    return "".join(f'<row r="{r}">{"".join(row)}</row>' for r, *row in zip(numbers, *cells, strict=True))


def _cells(letter: str, column: _Column, values: pd.Series, numbers: range) -> list[str]:
    """Each row's cell of one column as XML ("" for a missing value)."""
    s = column.style_id
    if column.kind in ("money", "percent", "count"):
        numeric = pd.to_numeric(values.map(_number) if values.dtype == object else values, errors="coerce")
        # Nullable integer columns (Int64) hold pd.NA, which compares to nothing: NaN instead.
        floats = [float("nan") if pd.isna(v) else v for v in numeric.tolist()]
        if column.kind == "count":
            texts = [repr(int(v)) if v == v else "" for v in floats]
        else:
            texts = [repr(v) if v == v else "" for v in floats]
        return [f'<c r="{letter}{r}" s="{s}"><v>{v}</v></c>' if v else "" for r, v in zip(numbers, texts, strict=True)]
    if column.kind in ("date", "datetime"):
        stamps = pd.to_datetime(values, utc=True, errors="coerce").dt.tz_localize(None)
        serials = ((stamps - _EPOCH) / pd.Timedelta(days=1)).tolist()
        return [
            f'<c r="{letter}{r}" s="{s}"><v>{v:.10g}</v></c>' if v == v else ""
            for r, v in zip(numbers, serials, strict=True)
        ]
    if column.kind == "bool":
        return [
            "" if pd.isna(v) else f'<c r="{letter}{r}" t="b"><v>{int(bool(v))}</v></c>'
            for r, v in zip(numbers, values.tolist(), strict=True)
        ]
    texts = values.astype(object).where(values.notna(), None).tolist()
    out = []
    for r, v in zip(numbers, texts, strict=True):
        if v is None:
            out.append("")
            continue
        v = str(v)
        if _NEEDS_ESCAPE.search(v):
            v = v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        if _ILLEGAL.search(v):
            v = _ILLEGAL.sub("", v)
        space = ' xml:space="preserve"' if v[:1].isspace() or v[-1:].isspace() else ""
        out.append(f'<c r="{letter}{r}" t="inlineStr"><is><t{space}>{v}</t></is></c>')
    return out


def _number(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    return value
