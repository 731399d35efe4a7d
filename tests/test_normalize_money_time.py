"""Exact money and timestamp parsing used by every normalizer."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from illuma_pipelines.normalize import ISO_4217_ACTIVE, MoneyError, check_currency, loads
from illuma_pipelines.normalize._common import RecordError, parse_bool, parse_int
from illuma_pipelines.normalize.money import parse_amount, parse_optional_amount
from illuma_pipelines.normalize.timeparse import (
    TimeParseError,
    parse_amazon_time,
    parse_epoch_millis,
    parse_epoch_seconds,
    parse_iso,
    parse_mdy,
    parse_settlement_time,
)
from illuma_pipelines.normalize.vocab import OrderStatus, rollup_status

cents = st.integers(min_value=-(10**12), max_value=10**12)


@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False))
def test_any_percent_2f_string_parses_exactly(value: float) -> None:
    text = f"{value:.2f}"  # the "%.2f" rendering
    parsed = parse_amount(text)
    assert parsed == Decimal(text)
    assert str(parsed) == text
    assert parsed.as_tuple().exponent == -2


@given(st.lists(cents, min_size=1, max_size=50))
def test_line_sums_are_exact(values: list[int]) -> None:
    texts = [f"{'-' if v < 0 else ''}{abs(v) // 100}.{abs(v) % 100:02d}" for v in values]
    total = sum((parse_amount(t) for t in texts), Decimal(0))
    assert total == Decimal(sum(values)) / 100
    # The float route is what this whole module exists to avoid.
    assert total.as_tuple().exponent >= -2


@given(cents)
def test_json_numbers_via_loads_stay_exact(value: int) -> None:
    text = f"{'-' if value < 0 else ''}{abs(value) // 100}.{abs(value) % 100:02d}"
    body = loads(json.dumps({"amount": 0}).replace("0", text, 1))
    assert parse_amount(body["amount"]) == Decimal(text)


@given(st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_floats_go_through_repr(value: float) -> None:
    assert parse_amount(value) == Decimal(repr(value))


def test_float_uses_shortest_repr_not_binary_expansion() -> None:
    assert parse_amount(0.8) == Decimal("0.8")
    assert parse_amount(25.37) == Decimal("25.37")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("11.01", "11.01"),
        ("19940", "19940"),
        (10, "10"),
        (" 5.0 ", "5.0"),
        (Decimal("0.80"), "0.80"),
        ("1E+2", "1E+2"),
        ("-3.05", "-3.05"),
    ],
)
def test_amount_forms(raw: object, expected: str) -> None:
    assert parse_amount(raw) == Decimal(expected)


@pytest.mark.parametrize("raw", ["", '""', "abc", "NaN", "Infinity", True, None, [], "1,234.00"])
def test_bad_amounts_name_the_problem(raw: object) -> None:
    with pytest.raises(MoneyError, match="price"):
        parse_amount(raw, "price")


def test_optional_amount_blank_means_unreported() -> None:
    assert parse_optional_amount(None) is None
    assert parse_optional_amount('""') is None
    assert parse_optional_amount("0") == Decimal(0)


def test_currency_codes() -> None:
    assert check_currency("JPY") == "JPY"
    assert {"USD", "EUR", "GBP", "JPY", "BRL", "TRY", "CAD", "MXN"} <= ISO_4217_ACTIVE
    for bad in ("string", "usd", "XAU", "", None, "ZZZ"):
        with pytest.raises(MoneyError, match="ISO 4217"):
            check_currency(bad)


def test_counts_and_booleans_sent_as_strings() -> None:
    assert parse_int("1", "n") == 1
    assert parse_int(Decimal("2"), "n") == 2
    for bad in ("1.5", "-1", True, None, "x"):
        with pytest.raises(RecordError):
            parse_int(bad, "n")
    assert parse_bool("false", "b") is False
    assert parse_bool("TRUE", "b") is True
    assert parse_bool(None, "b") is None
    with pytest.raises(RecordError):
        parse_bool("yes", "b")


def test_iso_timestamps() -> None:
    assert parse_iso("2019-05-07T15:42:57.058Z") == datetime(
        2019, 5, 7, 15, 42, 57, 58000, tzinfo=UTC
    )
    assert parse_iso("2024-12-25T10:30:00+01:00") == datetime(2024, 12, 25, 9, 30, tzinfo=UTC)
    assert parse_iso("") is None
    with pytest.raises(TimeParseError, match="no UTC offset"):
        parse_iso("2024-12-25T10:30:00")
    with pytest.raises(TimeParseError):
        parse_iso("yesterday")


def test_amazon_epoch_seconds_string() -> None:
    expected = datetime(2019, 9, 26, 18, 16, 22, 42000, tzinfo=UTC)
    assert parse_amazon_time("1.569521782042E9") == expected
    assert parse_epoch_seconds("1.569521782042E9") == expected
    assert parse_amazon_time("2017-01-20T19:49:35Z") == datetime(
        2017, 1, 20, 19, 49, 35, tzinfo=UTC
    )
    assert parse_amazon_time("") is None


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_epoch_millis_round_trip(millis: int) -> None:
    parsed = parse_epoch_millis(millis)
    assert parsed is not None and parsed.tzinfo is UTC
    assert round(parsed.timestamp() * 1000) == millis


def test_walmart_dates() -> None:
    assert parse_epoch_millis(1568466571000) == datetime(2019, 9, 14, 13, 9, 31, tzinfo=UTC)
    assert parse_epoch_millis("1568466571000") == datetime(2019, 9, 14, 13, 9, 31, tzinfo=UTC)
    assert parse_mdy("12/19/2025") == date(2025, 12, 19)
    assert parse_mdy('""') is None
    with pytest.raises(TimeParseError, match="MM/DD/YYYY"):
        parse_mdy("2025-12-19")


def test_settlement_times() -> None:
    assert parse_settlement_time("2026-02-01 07:36:12 UTC") == datetime(
        2026, 2, 1, 7, 36, 12, tzinfo=UTC
    )
    assert parse_settlement_time("01.03.2026 06:00:00 UTC") == datetime(2026, 3, 1, 6, tzinfo=UTC)
    assert parse_settlement_time("2026-02-03") == datetime(2026, 2, 3, tzinfo=UTC)
    assert parse_settlement_time("2026-02-01T07:36:12+00:00") == datetime(
        2026, 2, 1, 7, 36, 12, tzinfo=UTC
    )
    with pytest.raises(TimeParseError):
        parse_settlement_time("Feb 1 2026")


def test_status_rollup() -> None:
    S = OrderStatus
    assert rollup_status({S.SHIPPED: 1, S.CANCELLED: 1}) is S.SHIPPED
    assert rollup_status({S.SHIPPED: 1, S.UNSHIPPED: 1}) is S.PARTIALLY_SHIPPED
    assert rollup_status({S.CANCELLED: 2}) is S.CANCELLED
    assert rollup_status({S.DELIVERED: 2}) is S.DELIVERED
    assert rollup_status({S.DELIVERED: 1, S.SHIPPED: 1}) is S.SHIPPED
    assert rollup_status({S.UNSHIPPED: 0}) is S.PENDING
    assert rollup_status({}) is S.PENDING
