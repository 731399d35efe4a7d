"""Amazon V2 settlement flat file parsing (tests/fixtures/amazon/amazon_settlement_*.txt)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from illuma_pipelines.normalize import SettlementFormatError, parse_settlement_report, to_frame

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
