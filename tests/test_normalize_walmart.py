"""Walmart normalizers: the published sample order, variants of it, recon rows, inventory."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from illuma_pipelines.normalize import (
    AdjustmentKind,
    FulfillmentChannel,
    OrderStatus,
    loads,
    walmart,
)

FIXTURES = Path(__file__).parent / "fixtures" / "walmart"


def load(name: str) -> Any:
    return loads((FIXTURES / name).read_text(encoding="utf-8"))


def sample_order() -> dict[str, Any]:
    (order,) = walmart.orders_from_response(
        load("walmart_acknowledgeOrder_eolabs_fetchOrdersAcknowledge.json")
    )
    # Test variants edit nested lists; a fresh copy per test keeps them independent.
    return copy.deepcopy(order)


def test_sample_order() -> None:
    result = walmart.normalize_orders([sample_order()])
    assert result.rejects == []
    (order,) = result.orders
    assert order.marketplace_order_id == "1796277083022"
    assert order.purchased_at == datetime(2019, 9, 14, 13, 9, 31, tzinfo=UTC)
    assert order.last_updated_at == datetime(2019, 9, 17, 20, 45, 56, tzinfo=UTC)
    assert order.status is OrderStatus.UNSHIPPED and order.channel_status == "Acknowledged"
    assert order.fulfillment_channel is FulfillmentChannel.MERCHANT
    assert order.currency == "USD"
    assert order.items_subtotal == Decimal("10") and order.tax_total == Decimal("0.8")
    assert order.order_total == Decimal("10.8")
    assert order.country_code == "US"  # 'USA' in the payload
    (line,) = result.lines
    assert line.quantity_ordered == 1 and line.quantity_shipped == 0  # "1" as a string
    assert line.unit_price == Decimal("10") and line.item_tax == Decimal("0.8")
    assert line.sku == "test1" and line.line_id == "4"
    (pii,) = result.pii
    assert pii.ship_name == "Kathryn Cole" and pii.buyer_phone == "3155598681"
    assert pii.buyer_email.endswith("@relay.walmart.com")


def test_json_numbers_parsed_without_loads_still_exact() -> None:
    import json

    raw = json.loads(
        (FIXTURES / "walmart_acknowledgeOrder_eolabs_fetchOrdersAcknowledge.json").read_text()
    )
    result = walmart.normalize_orders(walmart.orders_from_response(raw))
    assert result.lines[0].item_tax == Decimal("0.8")


def _status(line: dict[str, Any], *entries: dict[str, Any]) -> None:
    line["orderLineStatuses"] = {"orderLineStatus": list(entries)}


def test_multi_line_shipped_cancelled_and_wfs() -> None:
    order = sample_order()
    order["shipNode"] = {"type": "WFSFulfilled", "name": "WFS", "id": "1"}
    first = order["orderLines"]["orderLine"][0]
    _status(
        first,
        {
            "status": "Shipped",
            "statusQuantity": {"amount": "1"},
            "trackingInfo": {"shipDateTime": 1568800000000, "carrierName": {"carrier": "UPS"}},
        },
    )
    second = copy.deepcopy(first)
    second["lineNumber"] = "5"
    second["charges"]["charge"][0]["chargeAmount"]["amount"] = 0  # cancelled lines carry 0
    second["charges"]["charge"][0]["tax"] = None  # tax can be null
    _status(
        second,
        {
            "status": "Cancelled",
            "statusQuantity": {"amount": "1"},
            "cancellationReason": "CUSTOMER_REQUESTED_SELLER_TO_CANCEL",
        },
    )
    order["orderLines"]["orderLine"].append(second)
    result = walmart.normalize_orders([order])
    assert result.rejects == []
    (row,) = result.orders
    assert row.status is OrderStatus.SHIPPED  # cancelled units don't hold the order back
    assert row.channel_status == "Shipped/Cancelled"
    assert row.fulfillment_channel is FulfillmentChannel.MARKETPLACE
    assert row.shipped_at == datetime(2019, 9, 18, 9, 46, 40, tzinfo=UTC)
    assert [line.line_status for line in result.lines] == [
        OrderStatus.SHIPPED,
        OrderStatus.CANCELLED,
    ]
    assert row.items_subtotal == Decimal("10")
    (cancel,) = result.adjustments
    assert cancel.kind is AdjustmentKind.CANCELLATION and cancel.line_id == "5"
    assert cancel.amount is None and cancel.reason == "CUSTOMER_REQUESTED_SELLER_TO_CANCEL"


def test_refund_becomes_positive_adjustment() -> None:
    order = sample_order()
    line = order["orderLines"]["orderLine"][0]
    _status(line, {"status": "Delivered", "statusQuantity": {"amount": "1"}})
    line["refund"] = {
        "refundId": "R-1",
        "refundComments": "",
        "refundCharges": {
            "refundCharge": [
                {
                    "refundReason": "ItemNotAsAdvertised",
                    "charge": {
                        "chargeType": "PRODUCT",
                        "chargeName": "ItemPrice",
                        "chargeAmount": {"currency": "USD", "amount": Decimal("-10.00")},
                        "tax": {
                            "taxName": "Tax1",
                            "taxAmount": {"currency": "USD", "amount": Decimal("-0.80")},
                        },
                    },
                }
            ]
        },
    }
    result = walmart.normalize_orders([order])
    (refund,) = result.adjustments
    assert refund.kind is AdjustmentKind.REFUND and refund.amount == Decimal("10.80")
    assert refund.reason == "ItemNotAsAdvertised" and refund.adjustment_id == "R-1"
    assert result.orders[0].status is OrderStatus.REFUNDED
    assert result.orders[0].delivered_at == datetime(2019, 9, 17, 20, 45, 56, tzinfo=UTC)


def test_unknown_status_and_currency_rejected_rest_continue() -> None:
    good = sample_order()
    bad_status = sample_order()
    bad_status["purchaseOrderId"] = "X1"
    bad_status["orderLines"]["orderLine"][0]["orderLineStatuses"]["orderLineStatus"][0][
        "status"
    ] = "Teleported"
    bad_currency = sample_order()
    bad_currency["purchaseOrderId"] = "X2"
    bad_currency["orderLines"]["orderLine"][0]["charges"]["charge"][0]["chargeAmount"][
        "currency"
    ] = "US$"
    result = walmart.normalize_orders([bad_status, good, bad_currency])
    assert [o.marketplace_order_id for o in result.orders] == ["1796277083022"]
    reasons = dict(result.rejects)
    assert "Teleported" in reasons["X1"]
    assert "US$" in reasons["X2"]


def test_list_response_shape_and_errors() -> None:
    body = {
        "list": {
            "meta": {"totalCount": 1, "nextCursor": None},
            "elements": {"order": [sample_order()]},
        }
    }
    assert len(walmart.orders_from_response(body)) == 1
    error = {
        "errors": {
            "error": [{"code": "UNAUTHORIZED.GMP_GATEWAY_API", "description": "Unauthorized"}]
        }
    }
    assert walmart.is_error_response(error)
    with pytest.raises(walmart.WalmartErrorResponse, match="UNAUTHORIZED"):
        walmart.orders_from_response(error)


def test_recon_report_rows() -> None:
    rows = load("walmart_reconFileJson_mediocre_readme_example.json")
    result = walmart.normalize_transactions(rows)
    assert result.rejects == []
    summary, sale = result.transactions
    assert summary.type == "PaymentSummary" and summary.amount == Decimal("0.74")
    assert summary.posted_at == datetime(2025, 1, 2, tzinfo=UTC)
    assert sale.type == "Sale" and sale.amount == Decimal("14.98")
    assert sale.currency == "USD"  # the row has none; the report's summary row does
    assert sale.order_id == "1803550130406"
    assert sale.posted_at == datetime(2020, 12, 18, tzinfo=UTC)
    assert sale.breakdown == (("Product Price", Decimal("14.98")),)
    # The literal '""' Period Start Date cell is a blank, not a date error.
    assert rows[1]["Period Start Date"] == '""'


def test_recon_rows_of_one_transaction_are_grouped() -> None:
    rows = load("walmart_reconFileJson_mediocre_readme_example.json")
    commission = {**rows[1], "Amount Type": "Commission on Product", "Amount": "-2.25"}
    result = walmart.normalize_transactions([rows[1], commission], currency="USD")
    (sale,) = result.transactions
    assert sale.amount == Decimal("12.73")
    assert sale.breakdown == (
        ("Product Price", Decimal("14.98")),
        ("Commission on Product", Decimal("-2.25")),
    )


def test_recon_row_without_currency_anywhere_is_rejected() -> None:
    rows = load("walmart_reconFileJson_mediocre_readme_example.json")
    result = walmart.normalize_transactions([rows[1]])
    assert result.transactions == []
    assert "ISO 4217" in result.rejects[0][1]


def test_inventory_shapes() -> None:
    single = {
        "sku": "97964_KFTest",
        "quantity": {"unit": "EACH", "amount": "10"},
        "fulfillmentLagTime": 1,
    }
    multi = {
        "elements": {
            "inventories": [
                {
                    "sku": "SKU-2",
                    "nodes": [
                        {
                            "shipNode": "10001",
                            "inputQty": {"unit": "EACH", "amount": 12},
                            "availToSellQty": {"unit": "EACH", "amount": 9},
                            "reservedQty": {"unit": "EACH", "amount": 3},
                        }
                    ],
                }
            ]
        }
    }
    wfs = {
        "payload": {
            "inventory": [
                {
                    "sku": "SKU-3",
                    "shipNodes": [
                        {
                            "modifiedDate": "2026-03-01T10:00:00.000Z",
                            "availToSellQty": 40,
                            "onHandQty": 44,
                            "shipNodeType": "WFSFulfilled",
                        }
                    ],
                }
            ]
        }
    }
    as_of = datetime(2026, 3, 2, tzinfo=UTC)
    records = [
        *walmart.inventory_from_response(single),
        *walmart.inventory_from_response(multi),
        *walmart.inventory_from_response(wfs),
    ]
    result = walmart.normalize_inventory(records, as_of=as_of)
    assert result.rejects == []
    one, two, three = result.inventory
    assert one.merchant_fulfilled == 10 and one.as_of == as_of
    assert (two.location, two.merchant_fulfilled, two.reserved, two.total_quantity) == (
        "10001",
        9,
        3,
        12,
    )
    assert three.fulfillable == 40 and three.merchant_fulfilled is None
    assert three.as_of == datetime(2026, 3, 1, 10, tzinfo=UTC)
