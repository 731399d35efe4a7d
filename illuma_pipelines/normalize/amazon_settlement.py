"""Amazon ``GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE_V2`` (tab-separated) -> SettlementLine rows.

Format facts this parser relies on:

* The first line is a header; columns are mapped by name, never by position, because some
  files add columns (``promotion-id``) and the order is not guaranteed.
* The first data row is the settlement summary: settlement id, period, deposit date,
  ``total-amount`` and currency. Later rows leave those cells empty; they are forward-filled,
  and ``total-amount`` is the settlement's total, never something to sum.
* Fees, charges and adjustments are rows with ``amount-type`` / ``amount-description`` /
  ``amount``.
* European files write decimal commas (``-3,05``, ``1.234,56`` with grouping) and ``DD.MM.YYYY``
  dates; both are read. Where both marks appear the last is the decimal mark.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from ._common import RECORD_ERRORS, RecordError, describe, optional_int
from .model import SettlementLine, SettlementReport
from .money import MoneyError, check_currency, parse_amount
from .timeparse import parse_settlement_time

__all__ = ["SettlementFormatError", "parse_settlement_report", "settlement_format_problem"]

REQUIRED_COLUMNS = (
    "settlement-id",
    "settlement-start-date",
    "settlement-end-date",
    "deposit-date",
    "total-amount",
    "currency",
    "transaction-type",
    "amount-type",
    "amount-description",
    "amount",
)
_FILLED = (
    "settlement-id",
    "settlement-start-date",
    "settlement-end-date",
    "deposit-date",
    "total-amount",
    "currency",
)


class SettlementFormatError(ValueError):
    """The file as a whole is not a readable V2 settlement flat file."""


_GROUPED = re.compile(r"^[+-]?\d{1,3}(?:(?P<group>[.,])\d{3})+(?:(?P<mark>[.,])\d+)?$")


def _settlement_amount(raw: str, what: str) -> Decimal:
    """An amount as the file writes it: "1234.56" (US, UK), "-3,05" (EU decimal comma), and
    with grouping, "1.234,56" (EU) or "1,234.56": where both marks appear, the last is the decimal
    mark, and the groups before it must be whole thousands."""
    value = raw.strip()
    if "," in value or value.count(".") > 1:
        grouped = _GROUPED.match(value)
        if grouped and grouped["mark"] != grouped["group"]:
            value = value.replace(grouped["group"], "")
            if grouped["mark"]:
                value = value.replace(grouped["mark"], ".")
        elif value.count(",") == 1 and "." not in value:
            value = value.replace(",", ".")  # "-3,05": a decimal comma
        else:
            raise MoneyError(f"{what}: not an amount (mixed or misplaced separators): {raw!r}")
    return parse_amount(value, what)


def parse_settlement_report(text: str) -> SettlementReport:
    """Parse a V2 settlement flat file's text.

    Raises SettlementFormatError when the header or the summary row is unusable (the reason
    `settlement_format_problem` gives); a bad data row goes to ``rejects`` as
    ``(line number, reason)`` (1-based, header is line 1) and the others are still returned.
    """
    lines, header = _layout(text)
    rows: list[tuple[int, dict[str, str]]] = []
    rejects: list[tuple[int | str, str]] = []
    for number, row in _data_rows(lines, header):
        if isinstance(row, str):
            rejects.append((number, row))
        else:
            rows.append((number, row))
    if not rows:
        raise SettlementFormatError(_NO_SUMMARY)
    first_number, summary = rows[0]
    report = _summary_report(first_number, summary)
    settlement_id = report.settlement_id
    report.rejects.extend(rejects)

    filled = {name: summary[name] for name in _FILLED}
    for number, row in rows:
        for name in _FILLED:
            if row[name]:
                filled[name] = row[name]
        if row["settlement-id"] and row["settlement-id"] != settlement_id:
            report.rejects.append(
                (
                    number,
                    f"row belongs to settlement {row['settlement-id']}, "
                    f"file is settlement {settlement_id}",
                )
            )
            continue
        if not row["amount-type"] and not row["amount"]:
            if number == first_number:
                continue  # the summary row itself, with no amount of its own
            report.rejects.append((number, "row has neither amount-type nor amount"))
            continue
        try:
            report.lines.append(_line(report, filled, row, number))
        except RECORD_ERRORS as exc:
            report.rejects.append((number, describe(exc)))
    return report


_NO_SUMMARY = "settlement report has a header but no summary row"


def settlement_format_problem(text: Any) -> str | None:
    """Why `text` is not a readable V2 settlement flat file, or None if it is: the reason
    `parse_settlement_report` raises SettlementFormatError with (an old V1 layout lacks the
    amount columns), found from the header and the summary row alone."""
    if not isinstance(text, str):
        return f"settlement document is a {type(text).__name__}, expected the flat file's text"
    try:
        lines, header = _layout(text)
        first = next(((n, row) for n, row in _data_rows(lines, header) if not isinstance(row, str)), None)
        if first is None:
            raise SettlementFormatError(_NO_SUMMARY)
        _summary_report(*first)
    except SettlementFormatError as exc:
        return str(exc)
    return None


def _layout(text: str) -> tuple[list[str], list[str]]:
    """The file's lines from the header on, and its header (lowercase column names)."""
    lines = text.lstrip("\ufeff").splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise SettlementFormatError("settlement report is empty")
    header = [h.strip().lower() for h in lines[0].split("\t")]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise SettlementFormatError(
            f"settlement report header lacks {', '.join(missing)}; got {', '.join(header)}"
        )
    if len(set(header)) != len(header):
        raise SettlementFormatError("settlement report header repeats a column name")
    return lines, header


def _data_rows(lines: list[str], header: list[str]) -> Iterator[tuple[int, dict[str, str] | str]]:
    """(line number, cells by column name) of each data row, or (line number, reason) for a row
    too wide for the header; blank lines skipped."""
    width = len(header)
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        cells = raw.split("\t")
        if len(cells) > width:
            yield number, f"{len(cells)} cells for {width} header columns"
            continue
        cells.extend([""] * (width - len(cells)))
        yield number, dict(zip(header, (c.strip() for c in cells), strict=True))


def _summary_report(number: int, summary: dict[str, str]) -> SettlementReport:
    """The report of a summary row (the first data row), without lines yet."""
    try:
        settlement_id = summary["settlement-id"]
        if not settlement_id:
            raise RecordError("summary row has no settlement-id")
        if not summary["total-amount"]:
            raise RecordError("summary row has no total-amount")
        return SettlementReport(
            settlement_id=settlement_id,
            settlement_start=parse_settlement_time(
                summary["settlement-start-date"], "settlement-start-date"
            ),
            settlement_end=parse_settlement_time(
                summary["settlement-end-date"], "settlement-end-date"
            ),
            deposit_date=parse_settlement_time(summary["deposit-date"], "deposit-date"),
            total_amount=_settlement_amount(summary["total-amount"], "total-amount"),
            currency=check_currency(summary["currency"], "currency"),
        )
    except RECORD_ERRORS as exc:
        raise SettlementFormatError(f"line {number}: {describe(exc)}") from None


# The forward-filled header times repeat on every row of a file; parse each distinct text once.
_header_cache: dict[tuple[str, str], datetime | None] = {}


def _header_time(raw: str, what: str) -> datetime | None:
    key = (raw, what)
    if key not in _header_cache:
        if len(_header_cache) > 4096:
            _header_cache.clear()
        _header_cache[key] = parse_settlement_time(raw, what)
    return _header_cache[key]


def _line(
    report: SettlementReport, filled: dict[str, str], row: dict[str, str], number: int
) -> SettlementLine:
    def cell(name: str) -> str | None:
        value = row.get(name)
        return value if value and value != '""' else None

    raw_amount = row["amount"]
    if not raw_amount:
        raise RecordError("amount is empty")
    total = filled["total-amount"]
    posted = parse_settlement_time(row.get("posted-date"), "posted-date")
    return SettlementLine(
        settlement_id=report.settlement_id,
        settlement_start=_header_time(filled["settlement-start-date"], "settlement-start-date"),
        settlement_end=_header_time(filled["settlement-end-date"], "settlement-end-date"),
        deposit_date=_header_time(filled["deposit-date"], "deposit-date"),
        total_amount=_settlement_amount(total, "total-amount") if total else None,
        currency=check_currency(filled["currency"], "currency"),
        transaction_type=cell("transaction-type"),
        order_id=cell("order-id"),
        merchant_order_id=cell("merchant-order-id"),
        adjustment_id=cell("adjustment-id"),
        shipment_id=cell("shipment-id"),
        marketplace_name=cell("marketplace-name"),
        amount_type=cell("amount-type"),
        amount_description=cell("amount-description"),
        amount=_settlement_amount(raw_amount, "amount"),
        fulfillment_id=cell("fulfillment-id"),
        posted_date=posted.date() if posted is not None else None,
        posted_at=parse_settlement_time(row.get("posted-date-time"), "posted-date-time"),
        order_item_code=cell("order-item-code"),
        merchant_order_item_id=cell("merchant-order-item-id"),
        merchant_adjustment_item_id=cell("merchant-adjustment-item-id"),
        sku=cell("sku"),
        quantity_purchased=optional_int(row.get("quantity-purchased"), "quantity-purchased"),
        promotion_id=cell("promotion-id"),
        row_number=number,
    )
