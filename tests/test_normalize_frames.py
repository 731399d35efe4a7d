"""DataFrames for bulk loading: stable columns and dtypes, exact decimals, pricing rows."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from illuma_pipelines.normalize import (
    BuyerPII,
    FinancialTransaction,
    InventoryRecord,
    Order,
    OrderAdjustment,
    OrderLine,
    PriceObservation,
    SettlementLine,
    amazon,
    breakdown_frame,
    loads,
    to_frame,
)

FIXTURES = Path(__file__).parent / "fixtures"
ROW_TYPES = [
    Order,
    OrderLine,
    OrderAdjustment,
    BuyerPII,
    InventoryRecord,
    FinancialTransaction,
    PriceObservation,
    SettlementLine,
]


@pytest.mark.parametrize("row_type", ROW_TYPES, ids=lambda t: t.__name__)
def test_empty_frame_has_the_full_schema(row_type: type) -> None:
    frame = to_frame([], row_type=row_type)
    assert list(frame.columns) == [f.name for f in dataclasses.fields(row_type)]
    assert len(frame) == 0


def amazon_result():
    records = []
    for name in (
        "amazon_v2026_searchOrders_docexample.json",
        "amazon_getOrders_docexample.json",
        "amazon_v2026_searchOrders_sandbox_1.json",
    ):
        records += amazon.orders_from_response(loads((FIXTURES / "amazon" / name).read_text()))
    return amazon.normalize_orders(records)


def test_full_and_empty_frames_agree_on_dtypes() -> None:
    result = amazon_result()
    for rows, row_type in (
        (result.orders, Order),
        (result.lines, OrderLine),
        (result.pii, BuyerPII),
        (result.adjustments, OrderAdjustment),
    ):
        full = to_frame(rows)
        empty = to_frame([], row_type=row_type)
        assert full.dtypes.to_dict() == empty.dtypes.to_dict()


def test_order_frame_dtypes_and_exact_values() -> None:
    frame = to_frame(amazon_result().orders).set_index("marketplace_order_id")
    assert frame["order_total"].dtype == pd.ArrowDtype(pa.decimal128(18, 4))
    assert str(frame["purchased_at"].dtype) == "datetime64[us, UTC]"
    assert str(frame["is_business"].dtype) == "boolean"
    assert str(frame["status"].dtype) == "string"
    assert frame.loc["250-1234567-8901234", "order_total"] == Decimal("19940")
    assert frame.loc["123-4567890-1234567", "status"] == "delivered"
    assert pd.isna(frame.loc["902-3159896-1390916", "order_total"])  # pending: no total
    assert frame.loc["123-4567890-1234567", "purchased_at"] == pd.Timestamp(
        datetime(2024, 12, 25, 10, 30, tzinfo=UTC)
    )


def test_line_frame_sums_exactly() -> None:
    frame = to_frame(amazon_result().lines)
    assert str(frame["quantity_ordered"].dtype) == "Int64"
    jp = frame[frame["marketplace_order_id"] == "250-1234567-8901234"]
    assert jp["item_price"].sum() == Decimal("19940")


def test_more_than_four_decimals_is_an_error_not_a_rounding() -> None:
    (order,) = [o for o in amazon_result().orders if o.order_total is not None][:1]
    odd = dataclasses.replace(order, order_total=Decimal("1.00005"))
    with pytest.raises(pa.ArrowInvalid):
        to_frame([odd])


def test_mixed_row_types_refused() -> None:
    result = amazon_result()
    with pytest.raises(TypeError, match="mixed"):
        to_frame([result.orders[0], result.lines[0]])
    with pytest.raises(ValueError, match="row_type"):
        to_frame([])


def test_breakdown_frame() -> None:
    tx = FinancialTransaction(
        channel="ebay",
        transaction_id="T1",
        type="SALE",
        status=None,
        posted_at=None,
        marketplace_id=None,
        order_id="O1",
        amount=Decimal("8.12"),
        currency="USD",
        description=None,
        breakdown=(
            ("fee:FINAL_VALUE_FEE", Decimal("-1.58")),
            ("fee:FINAL_VALUE_FEE_FIXED_PER_ORDER", Decimal("-0.30")),
        ),
    )
    frame = breakdown_frame([tx])
    assert list(frame.columns) == ["channel", "transaction_id", "component", "amount", "currency"]
    assert frame["amount"].sum() == Decimal("-1.88")


def test_pricing_rows_and_frame() -> None:
    body = loads(
        (FIXTURES / "amazon" / "amazon_getListingOffers_sandbox_2_business.json").read_text()
    )
    seen = datetime(2026, 3, 1, tzinfo=UTC)
    result = amazon.normalize_pricing(body, observed_at=seen)
    kinds = [p.kind for p in result.prices]
    assert kinds.count("buybox") == 3 and kinds.count("lowest") == 3
    tiers = [p.quantity_tier for p in result.prices if p.kind == "buybox"]
    assert tiers == [None, 20, 30]
    frame = to_frame(result.prices)
    assert frame["listing_price"].dtype == pd.ArrowDtype(pa.decimal128(18, 4))
    assert (frame["observed_at"] == pd.Timestamp(seen)).all()


def test_pricing_integer_amounts_and_unknown_currency() -> None:
    body = loads(
        (FIXTURES / "amazon" / "amazon_getCompetitivePricing_sandbox_1_asin.json").read_text()
    )
    result = amazon.normalize_pricing(body)
    assert result.prices[0].listing_price == Decimal("130")
    # Amazon's sandbox puts the placeholder currency 'string' on TradeInValue, which we don't
    # map; the same placeholder on a price we do map rejects that product only.
    body["payload"][0]["Product"]["CompetitivePricing"]["CompetitivePrices"][0]["Price"][
        "LandedPrice"
    ]["CurrencyCode"] = "string"
    result = amazon.normalize_pricing(body)
    assert [p.asin_or_item_id for p in result.prices] == ["B00551Q3CS"]
    assert result.rejects[0][0] == "B00V5DG6IQ" and "'string'" in result.rejects[0][1]
