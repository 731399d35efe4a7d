"""eBay normalizers against payloads written from eBay's documented schemas (tests/fixtures/ebay)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from illuma_pipelines.normalize import (
    AdjustmentKind,
    FulfillmentChannel,
    Order,
    OrderLine,
    OrderStatus,
    ebay,
    loads,
    to_frame,
)
from illuma_pipelines.quality import order_reconciliation_mismatches
from illuma_pipelines.raw_records import dumps_payload
from tests.test_reconciliation import ebay_de_order

FIXTURES = Path(__file__).parent / "fixtures" / "ebay"


def load(name: str) -> Any:
    return loads((FIXTURES / name).read_text(encoding="utf-8"))


def order_records() -> list[dict[str, Any]]:
    return copy.deepcopy(ebay.orders_from_response(load("ebay_getOrders_doc_shape.json")))


@pytest.fixture(scope="module")
def result():
    return ebay.normalize_orders(order_records())


def by_id(result, order_id: str):
    return {o.marketplace_order_id: o for o in result.orders}[order_id]


def _eur(value: str) -> dict[str, str]:
    return {"value": value, "currency": "EUR"}


def test_paid_multi_line_order_money(result) -> None:
    assert result.rejects == [] and result.dropped_components == []
    order = by_id(result, "05-12345-67890")
    assert order.status is OrderStatus.SHIPPED
    assert order.channel_status == "FULFILLED|PAID|NONE_REQUESTED"
    assert order.currency == "USD" and order.marketplace_id == "EBAY_US"
    assert order.order_total == Decimal("65.18")
    # pricingSummary discounts are negative (-6.00, -1.50); the model stores money off, positive.
    assert order.promotion_total == Decimal("7.50")
    assert order.marketplace_fee_total == Decimal("8.71")
    assert (
        order.items_subtotal + order.shipping_total + order.tax_total - order.promotion_total
        == order.order_total
    )
    lines = [line for line in result.lines if line.marketplace_order_id == "05-12345-67890"]
    assert sum(line.item_price for line in lines) == order.items_subtotal
    assert sum(line.shipping_price for line in lines) == order.shipping_total
    assert sum(line.item_tax for line in lines) == order.tax_total
    assert sum(line.promotion_discount for line in lines) == order.promotion_total
    brakes = lines[0]
    assert brakes.quantity_ordered == 2 and brakes.unit_price == Decimal("19.99")
    assert brakes.asin_or_item_id == "110123456789" and brakes.quantity_shipped == 2
    # Line discounts are positive in the payload and stay positive.
    assert brakes.promotion_discount == Decimal("5.50")


def test_line_whose_total_shows_whole_line_shipping_keeps_it(result) -> None:
    # The documented reading of deliveryCost.shippingCost ("the total cost of shipping all
    # units"): the line's total 43.28 = 39.98 - 4.00 + 6.00 - 1.50 + 2.80 tax only adds up
    # with 6.00 for both units, so 6.00 is not multiplied.
    order = by_id(result, "05-12345-67890")
    brakes = next(line for line in result.lines if line.line_id == "10045678901234")
    assert brakes.shipping_price == Decimal("6.00")
    assert order.shipping_total == Decimal("8.5")


def test_per_unit_shipping_of_a_line_of_four_is_multiplied() -> None:
    # Issue 13, a real EBAY_DE order: shippingCost 4.95 per unit, line total 121.07 =
    # 116.12 + 4 x 4.95 - 14.85 shipping discount, order deliveryCost 19.8.
    out = ebay.normalize_orders([loads(dumps_payload(ebay_de_order()))])
    assert out.rejects == [] and out.dropped_components == []
    (order,) = out.orders
    (line,) = out.lines
    assert line.shipping_price == Decimal("19.80") == order.shipping_total
    assert line.promotion_discount == Decimal("27.73") == order.promotion_total
    assert line.unit_price == Decimal("32.25") and line.currency == "EUR"


@pytest.mark.parametrize(
    ("change", "shipping"),
    [
        ({}, Decimal("19.80")),
        # No line total to decide by: the per-unit reading real accounts send.
        ({"total": None}, Decimal("19.80")),
        # A total that fits neither reading: still per unit (the order check reports it).
        ({"total": _eur("99.99")}, Decimal("19.80")),
        # The collected tax inside the line total does not change the reading.
        (
            {
                "total": _eur("125.07"),
                "ebayCollectAndRemitTaxes": [{"taxType": "VAT", "amount": _eur("4.00")}],
            },
            Decimal("19.80"),
        ),
        # Without discountedLineItemCost the item promotions are taken off lineItemCost.
        ({"discountedLineItemCost": None}, Decimal("19.80")),
        # A total in another currency is no evidence; it is not stored either.
        ({"total": {"value": "101.27", "currency": "CHF"}}, Decimal("19.80")),
        # Free shipping stays zero whatever the quantity.
        ({"deliveryCost": {"shippingCost": _eur("0.0")}, "total": _eur("116.12")}, Decimal("0.0")),
    ],
)
def test_line_shipping_reading(change: dict[str, Any], shipping: Decimal) -> None:
    record = ebay_de_order()
    item = record["lineItems"][0]
    for key, value in change.items():
        if value is None:
            del item[key]
        else:
            item[key] = value
    out = ebay.normalize_orders([loads(dumps_payload(record))])
    assert out.rejects == []
    assert out.lines[0].shipping_price == shipping
    assert out.dropped_components == []


def test_cancelled_and_refunded_order(result) -> None:
    order = by_id(result, "27-11111-22222")
    assert order.status is OrderStatus.CANCELLED and order.currency == "GBP"
    kinds = [
        (a.kind, a.line_id, a.amount)
        for a in result.adjustments
        if a.marketplace_order_id == "27-11111-22222"
    ]
    # The refund appears on the line and in paymentSummary with one refundId: emitted once.
    assert kinds == [
        (AdjustmentKind.REFUND, "20011111111111", Decimal("15.00")),
        (AdjustmentKind.CANCELLATION, None, Decimal("15.00")),
    ]
    cancel = next(a for a in result.adjustments if a.kind is AdjustmentKind.CANCELLATION)
    assert cancel.occurred_at == datetime(2026, 3, 3, 15, 29, tzinfo=UTC)
    assert cancel.reason == "BUYER_ASKED_CANCEL"
    line = next(line for line in result.lines if line.marketplace_order_id == "27-11111-22222")
    assert line.line_status is OrderStatus.CANCELLED and line.quantity_shipped == 0


def test_partial_refund(result) -> None:
    order = by_id(result, "12-33333-44444")
    assert order.status is OrderStatus.PARTIALLY_REFUNDED
    (refund,) = [a for a in result.adjustments if a.marketplace_order_id == "12-33333-44444"]
    assert refund.kind is AdjustmentKind.REFUND and refund.line_id is None
    assert refund.amount == Decimal("32.10") and refund.status == "REFUNDED"


def test_pii(result) -> None:
    pii = {p.marketplace_order_id: p for p in result.pii}
    first = pii["05-12345-67890"]
    assert first.buyer_name == "Pat Buyer" and first.buyer_email == "pat.buyer@example.com"
    assert first.address_line2 == "Unit 2" and first.state_or_region == "OH"
    assert pii["27-11111-22222"].country_code == "GB"
    assert by_id(result, "27-11111-22222").country_code == "GB"


def test_ebay_fulfilled_program_is_marketplace_fulfilment() -> None:
    records = order_records()
    records[0]["program"] = {"fulfillmentProgram": {"fulfilledBy": "EBAY"}}
    out = ebay.normalize_orders(records[:1])
    assert out.orders[0].fulfillment_channel is FulfillmentChannel.MARKETPLACE


def test_unknown_values_rejected_rest_continue() -> None:
    records = order_records()
    records[0]["orderPaymentStatus"] = "MAYBE_PAID"
    records[1]["pricingSummary"]["total"]["currency"] = "GBX"
    records[2]["lineItems"][0]["lineItemFulfillmentStatus"] = "LOST"
    extra = order_records()[0]
    out = ebay.normalize_orders([*records, extra])
    assert [o.marketplace_order_id for o in out.orders] == ["05-12345-67890"]
    reasons = dict(out.rejects)
    assert "MAYBE_PAID" in reasons["05-12345-67890"]
    assert "GBX" in reasons["27-11111-22222"]
    assert "LOST" in reasons["12-33333-44444"]


def test_transactions_sign_comes_from_booking_entry() -> None:
    out = ebay.normalize_transactions(
        ebay.transactions_from_response(load("ebay_getTransactions_doc_shape.json"))
    )
    assert out.rejects == []
    sale, refund, label, ad_fee = out.transactions
    assert sale.amount == Decimal("56.47") and sale.type == "SALE"
    assert sum(amount for _, amount in sale.breakdown) == Decimal("-8.71")
    assert ("fee:FINAL_VALUE_FEE", Decimal("-5.59")) in sale.breakdown
    assert refund.amount == Decimal("-32.10")  # DEBIT with a positive value
    assert label.amount == Decimal("-7.45") and label.order_id == "05-12345-67890"
    assert ad_fee.amount == Decimal("-3.12") and ad_fee.description == "AD_FEE"


def test_transaction_with_unknown_booking_entry_rejected() -> None:
    records = ebay.transactions_from_response(load("ebay_getTransactions_doc_shape.json"))
    bad = {**records[0], "bookingEntry": "SIDEWAYS"}
    out = ebay.normalize_transactions([bad, records[1]])
    assert len(out.transactions) == 1 and "SIDEWAYS" in out.rejects[0][1]


def test_inventory_items() -> None:
    as_of = datetime(2026, 3, 5, 12, tzinfo=UTC)
    out = ebay.normalize_inventory(
        ebay.inventory_from_response(load("ebay_getInventoryItems_doc_shape.json")), as_of=as_of
    )
    brakes, oil = out.inventory
    assert brakes.sku == "BRK-PAD-FR-001" and brakes.merchant_fulfilled == 25
    assert oil.merchant_fulfilled == 0 and oil.as_of == as_of and oil.fulfillable is None


def test_error_body() -> None:
    body = {
        "errors": [
            {"errorId": 1100, "domain": "ACCESS", "category": "REQUEST", "message": "Access denied"}
        ]
    }
    assert ebay.is_error_response(body)
    with pytest.raises(ebay.EbayErrorResponse, match="Access denied"):
        ebay.orders_from_response(body)


money_cents = st.integers(min_value=0, max_value=10_000_000)


def _amount(cents: int) -> dict[str, str]:
    sign = "-" if cents < 0 else ""
    return {"value": f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}", "currency": "EUR"}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=50),
            money_cents,
            money_cents,
            money_cents,
            st.booleans(),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_generated_orders_sum_exactly(lines: list[tuple[int, int, int, int, bool]]) -> None:
    """Order totals built from random line amounts come back exactly, never via float, with
    each line's shipping per unit or for the whole line as its total says, and reconcile."""
    items = []
    line_shipping = []
    for index, (quantity, price, shipping, promo, per_unit) in enumerate(lines):
        line_shipping.append(shipping * quantity if per_unit else shipping)
        items.append(
            {
                "lineItemId": f"L{index}",
                "quantity": quantity,
                "lineItemCost": _amount(price),
                "deliveryCost": {"shippingCost": _amount(shipping)},
                "appliedPromotions": [{"discountAmount": _amount(promo)}],
                "total": _amount(price - promo + line_shipping[-1]),
                "lineItemFulfillmentStatus": "NOT_STARTED",
            }
        )
    subtotal = sum(p for _, p, _, _, _ in lines)
    delivery = sum(line_shipping)
    discount = sum(d for _, _, _, d, _ in lines)
    total = subtotal + delivery - discount
    record = {
        "orderId": "GEN-1",
        "orderFulfillmentStatus": "NOT_STARTED",
        "orderPaymentStatus": "PAID",
        "pricingSummary": {
            "priceSubtotal": _amount(subtotal),
            "deliveryCost": _amount(delivery),
            "priceDiscount": _amount(-discount),
            "total": _amount(total),
        },
        "lineItems": items,
    }
    out = ebay.normalize_orders([record])
    assert out.rejects == []
    (order,) = out.orders
    assert order.items_subtotal == sum(line.item_price for line in out.lines)
    assert order.shipping_total == sum(line.shipping_price for line in out.lines)
    assert order.promotion_total == sum(line.promotion_discount for line in out.lines)
    assert order.order_total == Decimal(total) / 100
    assert order.items_subtotal + order.shipping_total - order.promotion_total == order.order_total
    for line, (quantity, price, _, _, _), shipping in zip(out.lines, lines, line_shipping, strict=True):
        # Inexact divisions keep 4 places: the error is at most half a unit there, per unit.
        assert abs(line.unit_price * quantity - line.item_price) <= Decimal("0.00005") * quantity
        assert line.item_price == Decimal(price) / 100
        assert line.shipping_price == Decimal(shipping) / 100
    frames = to_frame(out.orders, Order), to_frame(out.lines, OrderLine)
    assert order_reconciliation_mismatches(*frames) == []


def _usd(value: str) -> dict[str, str]:
    return {"value": value, "currency": "USD"}


def test_a_refund_gives_its_fees_back_and_a_fee_row_names_its_order():
    """Shapes of a real capture: eBay's amounts are unsigned; a refund (DEBIT) returns the final
    value fees of its sale (+2.30 and +19.37 for the seller, not -); an ad fee (NON_SALE_CHARGE)
    names its order only in references[]."""
    refund = {
        "transactionId": "5047718350",
        "orderId": "12-10887-44120",
        "transactionType": "REFUND",
        "transactionStatus": "FUNDS_AVAILABLE_FOR_PAYOUT",
        "transactionDate": "2026-11-18T16:02:11.000Z",
        "bookingEntry": "DEBIT",
        "amount": _usd("196.40"),
        "totalFeeBasisAmount": _usd("218.07"),
        "totalFeeAmount": _usd("21.67"),
        "orderLineItems": [
            {
                "lineItemId": "10068822919012",
                "feeBasisAmount": _usd("218.07"),
                "marketplaceFees": [
                    {"feeType": "FINAL_VALUE_FEE_FIXED_PER_ORDER", "amount": _usd("2.30")},
                    {"feeType": "FINAL_VALUE_FEE", "amount": _usd("19.37")},
                ],
            }
        ],
    }
    ad_fee = {
        "transactionId": "FEE-7730012",
        "transactionType": "NON_SALE_CHARGE",
        "transactionStatus": "FUNDS_AVAILABLE_FOR_PAYOUT",
        "transactionDate": "2026-11-19T03:00:00.000Z",
        "bookingEntry": "DEBIT",
        "amount": _usd("14.72"),
        "feeType": "AD_FEE",
        "transactionMemo": "Promoted Listings - General fee",
        "references": [
            {"referenceId": "235512399871", "referenceType": "ITEM_ID"},
            {"referenceId": "12-10887-44120", "referenceType": "ORDER_ID"},
        ],
    }
    sale = copy.deepcopy(refund) | {"transactionId": "12-10887-44120", "transactionType": "SALE", "bookingEntry": "CREDIT"}
    out = ebay.normalize_transactions([loads(dumps_payload(r)) for r in (refund, ad_fee, sale)])
    assert out.rejects == []
    returned, fee, sold = out.transactions
    assert returned.amount == Decimal("-196.40")
    assert dict(returned.breakdown) == {
        "fee:FINAL_VALUE_FEE_FIXED_PER_ORDER": Decimal("2.30"),
        "fee:FINAL_VALUE_FEE": Decimal("19.37"),
    }
    assert dict(sold.breakdown)["fee:FINAL_VALUE_FEE"] == Decimal("-19.37") and sold.amount == Decimal("196.40")
    assert (fee.order_id, fee.amount, fee.description) == ("12-10887-44120", Decimal("-14.72"), "Promoted Listings - General fee")
