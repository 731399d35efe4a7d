"""Amazon V2 settlement flat file parsing (tests/fixtures/amazon/amazon_settlement_*.txt)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from illuma_pipelines.normalize import SettlementFormatError, parse_settlement_report, to_frame
from illuma_pipelines.normalize.amazon_settlement import settlement_format_problem

FIXTURES = Path(__file__).parent / "fixtures" / "amazon"


def read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_us_sample() -> None:
    report = parse_settlement_report(read("amazon_settlement_v2_flat_sample.txt"))
    assert report.rejects == []
    assert report.settlement_id == "11223344556" and report.currency == "USD"
    assert report.total_amount == Decimal("45.39")
    assert report.deposit_date == datetime(2026, 2, 17, 7, 36, 12, tzinfo=UTC)
    assert len(report.lines) == 24
    # The summary total equals the sum of the amount rows; total-amount itself is never summed.
    assert sum(line.amount for line in report.lines) == report.total_amount
    assert {line.total_amount for line in report.lines} == {Decimal("45.39")}
    assert {line.settlement_start for line in report.lines} == {
        datetime(2026, 2, 1, 7, 36, 12, tzinfo=UTC)
    }
    assert {line.currency for line in report.lines} == {"USD"}
    promo = next(line for line in report.lines if line.amount_type == "Promotion")
    assert promo.promotion_id == "PLM-BRAKE10" and promo.amount == Decimal("-4.00")
    principal = report.lines[0]
    assert principal.order_id == "112-1111111-2222222" and principal.quantity_purchased == 2
    assert principal.posted_date == date(2026, 2, 3)
    assert principal.posted_at == datetime(2026, 2, 3, 14, 22, 8, tzinfo=UTC)
    assert principal.row_number == 3
    fees = [line for line in report.lines if line.amount_type == "ItemFees"]
    assert sum(line.amount for line in fees) == Decimal("-38.45")
    refund = [line for line in report.lines if line.transaction_type == "Refund"]
    assert {line.adjustment_id for line in refund} == {"amzn1.adj.0000000001"}


def test_european_file_reordered_columns_decimal_commas_crlf() -> None:
    report = parse_settlement_report(read("amazon_settlement_v2_flat_de_sample.txt"))
    assert report.rejects == []
    assert report.currency == "EUR" and report.total_amount == Decimal("20.78")
    assert report.settlement_start == datetime(2026, 3, 1, 6, tzinfo=UTC)
    assert [line.amount for line in report.lines] == [
        Decimal("29.99"),
        Decimal("-4.50"),
        Decimal("-4.71"),
    ]
    assert sum(line.amount for line in report.lines) == report.total_amount
    assert all(line.promotion_id is None for line in report.lines)
    assert report.lines[0].posted_date == date(2026, 3, 5)


def test_bad_rows_are_rejected_and_the_rest_kept() -> None:
    lines = read("amazon_settlement_v2_flat_sample.txt").splitlines()
    header = lines[0].split("\t")
    amount_at = header.index("amount")
    broken = lines[2].split("\t")
    broken[amount_at] = "twelve"
    foreign = lines[3].split("\t")
    foreign[0] = "999"
    text = "\n".join([lines[0], lines[1], "\t".join(broken), "\t".join(foreign), *lines[4:]])
    report = parse_settlement_report(text)
    assert len(report.lines) == 22
    reasons = dict(report.rejects)
    assert "twelve" in reasons[3]
    assert "999" in reasons[4]


def test_unusable_files_raise() -> None:
    with pytest.raises(SettlementFormatError, match="empty"):
        parse_settlement_report("")
    with pytest.raises(SettlementFormatError, match="amount-type"):
        parse_settlement_report("settlement-id\tamount\n1\t2\n")
    text = read("amazon_settlement_v2_flat_sample.txt").replace("\tUSD\t", "\tUS$\t", 1)
    with pytest.raises(SettlementFormatError, match="US\\$"):
        parse_settlement_report(text)


@settings(max_examples=25, deadline=None)
@given(st.permutations(list(range(24))))
def test_columns_are_mapped_by_name(order: list[int]) -> None:
    rows = [line.split("\t") for line in read("amazon_settlement_v2_flat_sample.txt").splitlines()]
    shuffled = "\n".join("\t".join(row[i] for i in order) for row in rows)
    original = parse_settlement_report(read("amazon_settlement_v2_flat_sample.txt"))
    report = parse_settlement_report(shuffled)
    assert report.lines == original.lines


def test_settlement_frame() -> None:
    report = parse_settlement_report(read("amazon_settlement_v2_flat_sample.txt"))
    frame = to_frame(report.lines)
    assert list(frame.columns)[:3] == ["settlement_id", "settlement_start", "settlement_end"]
    assert str(frame["amount"].dtype) == "decimal128(18, 4)[pyarrow]"
    assert str(frame["posted_date"].dtype) == "date32[day][pyarrow]"
    assert frame["amount"].sum() == Decimal("45.39")


# The old V1 layout (GET_FLAT_FILE_PAYMENT_SETTLEMENT_DATA) still arrives from some UK accounts:
# amounts sit in per-kind columns (price-amount, item-related-fee-amount, ...), with no
# amount-type / amount-description / amount columns.
V1_COLUMNS = (
    "settlement-id", "settlement-start-date", "settlement-end-date", "deposit-date", "total-amount",
    "currency", "transaction-type", "order-id", "merchant-order-id", "adjustment-id", "shipment-id",
    "marketplace-name", "shipment-fee-type", "shipment-fee-amount", "order-fee-type",
    "order-fee-amount", "fulfillment-id", "posted-date", "order-item-code", "merchant-order-item-id",
    "merchant-adjustment-item-id", "sku", "quantity-purchased", "price-type", "price-amount",
    "item-related-fee-type", "item-related-fee-amount", "misc-fee-amount", "other-fee-amount",
    "other-fee-reason-description", "promotion-id", "promotion-type", "promotion-amount",
    "direct-payment-type", "direct-payment-amount", "other-amount",
)


def _v1_row(**cells: str) -> str:
    return "\t".join(cells.get(c.replace("-", "_"), "") for c in V1_COLUMNS)


V1_SETTLEMENT_UK = "\r\n".join(
    [
        "\t".join(V1_COLUMNS),
        _v1_row(
            settlement_id="23456789012", settlement_start_date="01.02.2026 00:09:13 UTC",
            settlement_end_date="15.02.2026 00:09:13 UTC", deposit_date="17.02.2026 00:09:13 UTC",
            total_amount="41.17", currency="GBP",
        ),
        _v1_row(
            settlement_id="23456789012", transaction_type="Order", order_id="026-1234567-7654321",
            shipment_id="DkL9mQ2Zp", marketplace_name="Amazon.co.uk", fulfillment_id="AFN",
            posted_date="03.02.2026", order_item_code="61234567890123", sku="WIPER-600-UK",
            quantity_purchased="3", price_type="Principal", price_amount="56.97",
        ),
        _v1_row(
            settlement_id="23456789012", transaction_type="Order", order_id="026-1234567-7654321",
            marketplace_name="Amazon.co.uk", fulfillment_id="AFN", posted_date="03.02.2026",
            order_item_code="61234567890123", sku="WIPER-600-UK", item_related_fee_type="Commission",
            item_related_fee_amount="-7.69",
        ),
        _v1_row(
            settlement_id="23456789012", transaction_type="Order", order_id="026-1234567-7654321",
            marketplace_name="Amazon.co.uk", fulfillment_id="AFN", posted_date="03.02.2026",
            order_item_code="61234567890123", sku="WIPER-600-UK", promotion_id="UK-WIPER-3FOR2",
            promotion_type="Principal", promotion_amount="-8.11",
        ),
    ]
) + "\r\n"


def test_v1_layout_is_refused_with_the_same_reason_by_the_parser_and_the_format_check() -> None:
    reason = settlement_format_problem(V1_SETTLEMENT_UK)
    assert reason is not None
    assert reason.startswith("settlement report header lacks amount-type, amount-description, amount;")
    with pytest.raises(SettlementFormatError) as raised:
        parse_settlement_report(V1_SETTLEMENT_UK)
    assert str(raised.value) == reason


REQUIRED_V2_HEADER = (
    "settlement-id", "settlement-start-date", "settlement-end-date", "deposit-date", "total-amount",
    "currency", "transaction-type", "amount-type", "amount-description", "amount",
)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\ufeff\r\n\r\n",
        "<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>",
        "\t".join(REQUIRED_V2_HEADER) + "\n",
        "\t".join(REQUIRED_V2_HEADER + ("currency",)) + "\n",
        "\t".join(REQUIRED_V2_HEADER) + "\n\t01.03.2026\t15.03.2026\t17.03.2026\t\tEUR\t\t\t\t\n",
        "\t".join(REQUIRED_V2_HEADER) + "\n99\t01.03.2026\t15.03.2026\t17.03.2026\t20,78\tEURO\t\t\t\t\n",
    ],
)
def test_unreadable_documents_get_the_parser_reason(text: str) -> None:
    reason = settlement_format_problem(text)
    assert reason
    with pytest.raises(SettlementFormatError) as raised:
        parse_settlement_report(text)
    assert str(raised.value) == reason


def test_readable_documents_pass_the_format_check() -> None:
    us = read("amazon_settlement_v2_flat_sample.txt")
    de = read("amazon_settlement_v2_flat_de_sample.txt")
    assert settlement_format_problem(us) is None and settlement_format_problem(de) is None
    # A byte-order mark, blank lines before the header and a first row too wide for the header
    # (rejected as a row, the summary is the next one): readable, as the parser reads it.
    lines = de.splitlines()
    odd = "\ufeff\r\n" + "\r\n".join([lines[0], lines[1] + "\textra\tcells", *lines[1:]])
    assert settlement_format_problem(odd) is None
    report = parse_settlement_report(odd)
    assert report.settlement_id == "99887766554" and [n for n, _ in report.rejects] == [2]
    assert settlement_format_problem(de.encode("cp1252")) == (
        "settlement document is a bytes, expected the flat file's text"
    )


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1234.56", "1234.56"), ("-3,05", "-3.05"), ("1.234,56", "1234.56"), ("-12.345.678,90", "-12345678.90"),
     ("1,234.56", "1234.56"), ("0,5", "0.5")],
)
def test_amounts_read_as_the_file_writes_them(raw: str, value: str) -> None:
    """EU files write a decimal comma and group thousands with a dot; where both marks appear the
    last is the decimal mark."""
    from illuma_pipelines.normalize.amazon_settlement import _settlement_amount

    assert _settlement_amount(raw, "amount") == Decimal(value)


@pytest.mark.parametrize("raw", ["1.23,45", "1,2.3", "1,234,56", "1.234.56", "12,34,5"])
def test_misplaced_separators_are_refused(raw: str) -> None:
    from illuma_pipelines.normalize.amazon_settlement import _settlement_amount
    from illuma_pipelines.normalize.money import MoneyError

    with pytest.raises(MoneyError, match="separators"):
        _settlement_amount(raw, "amount")
