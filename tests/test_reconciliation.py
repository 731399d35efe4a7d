"""Orders reconcile with their lines by each channel's own rules (issue 13, defects 1 and 2).

The payloads are written by us in the shapes of real accounts: an EBAY_DE line of four units
with per-unit shipping and a shipping discount, an Amazon.de order with a quantity discount, a
VAT-inclusive Amazon.co.uk v0 order and a US one that adds sales tax, a Walmart Canada order with
a null tax and a cancelled line. They go through the real normalizers and the frames the core
tables are loaded from, then through `order_reconciliation_mismatches`, the rule of the blocking
`orders_quality` check.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from illuma_pipelines.marketplaces import CHANNELS
from illuma_pipelines.normalize import Order, OrderLine, amazon, ebay, loads, to_frame, walmart
from illuma_pipelines.quality import TOTAL_RULES, Mismatch, order_reconciliation_mismatches
from illuma_pipelines.raw_records import dumps_payload

FIXTURES = Path(__file__).parent / "fixtures"


def as_received(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as the extract hands it on: JSON text parsed with exact decimals."""
    return loads(dumps_payload(payload))


def _eur(value: str) -> dict[str, str]:
    return {"value": value, "currency": "EUR"}


def ebay_de_order(order_id: str = "04-11923-58230") -> dict[str, Any]:
    """A real-shaped EBAY_DE order: four spark plugs, shipping 4.95 per unit, a volume discount
    on the items and a shipping discount for every unit after the first.

    Line total 121.07 = discountedLineItemCost 116.12 + 4 x 4.95 - 14.85; the order's
    deliveryCost is 19.8 (eBay drops the trailing zero); no tax: German prices include VAT and
    eBay collects none on a domestic sale.
    """
    return {
        "orderId": order_id,
        "legacyOrderId": "235512345678-2998812345016",
        "creationDate": "2026-11-14T09:41:22.000Z",
        "lastModifiedDate": "2026-11-15T07:02:10.000Z",
        "orderFulfillmentStatus": "NOT_STARTED",
        "orderPaymentStatus": "PAID",
        "sellerId": "teilewerk_de",
        "buyer": {
            "username": "k***n",
            "taxAddress": {"postalCode": "50667", "countryCode": "DE"},
            "buyerRegistrationAddress": {
                "fullName": "Karin Naumann",
                "contactAddress": {
                    "addressLine1": "Hohe Straße 12",
                    "city": "Köln",
                    "postalCode": "50667",
                    "countryCode": "DE",
                },
                "email": "k.naumann@example.de",
            },
        },
        "pricingSummary": {
            "priceSubtotal": _eur("129.0"),
            "priceDiscount": _eur("-12.88"),
            "deliveryCost": _eur("19.8"),
            "deliveryDiscount": _eur("-14.85"),
            "total": _eur("121.07"),
        },
        "cancelStatus": {"cancelState": "NONE_REQUESTED", "cancelRequests": []},
        "paymentSummary": {
            "totalDueSeller": _eur("121.07"),
            "refunds": [],
            "payments": [
                {
                    "paymentMethod": "EBAY",
                    "paymentReferenceId": "7HX44120PK8815023",
                    "paymentDate": "2026-11-14T09:41:30.000Z",
                    "amount": _eur("121.07"),
                    "paymentStatus": "PAID",
                }
            ],
        },
        "fulfillmentStartInstructions": [
            {
                "fulfillmentInstructionsType": "SHIP_TO",
                "ebaySupportedFulfillment": False,
                "shippingStep": {
                    "shipTo": {
                        "fullName": "Karin Naumann",
                        "contactAddress": {
                            "addressLine1": "Hohe Straße 12",
                            "city": "Köln",
                            "postalCode": "50667",
                            "countryCode": "DE",
                        },
                        "primaryPhone": {"phoneNumber": "0221 5550172"},
                        "email": "k.naumann@example.de",
                    },
                    "shippingServiceCode": "DE_DHLPaket",
                },
            }
        ],
        "lineItems": [
            {
                "lineItemId": "10071234567801",
                "legacyItemId": "235512345678",
                "sku": "ZK-BKR6E-4",
                "title": "4x Zündkerze BKR6E Nickel",
                "lineItemCost": _eur("129.0"),
                "discountedLineItemCost": _eur("116.12"),
                "quantity": 4,
                "soldFormat": "FIXED_PRICE",
                "listingMarketplaceId": "EBAY_DE",
                "purchaseMarketplaceId": "EBAY_DE",
                "lineItemFulfillmentStatus": "NOT_STARTED",
                "total": _eur("121.07"),
                "deliveryCost": {
                    "shippingCost": _eur("4.95"),
                    "discountAmount": _eur("14.85"),
                },
                "appliedPromotions": [
                    {
                        "promotionId": "5301122334",
                        "description": "Mengenrabatt ab 4 Stück",
                        "discountAmount": _eur("12.88"),
                    }
                ],
                "taxes": [],
                "properties": {"buyerProtection": True},
                "itemLocation": {"location": "Hagen", "countryCode": "DE", "postalCode": "58089"},
                "refunds": [],
            }
        ],
        "salesRecordReference": "8812",
        "totalFeeBasisAmount": _eur("121.07"),
        "totalMarketplaceFee": _eur("14.21"),
    }


def _amz(amount: str, currency: str = "EUR") -> dict[str, str]:
    return {"amount": amount, "currencyCode": currency}


def amazon_de_order(order_id: str = "302-4417781-5520331") -> dict[str, Any]:
    """An Amazon.de v2026 merchant-fulfilled order: two of one brake disc set with a
    quantity discount and shipping, one wiper blade; order breakdowns add up the items."""
    return {
        "orderId": order_id,
        "createdTime": "2026-11-14T18:20:05Z",
        "lastUpdatedTime": "2026-11-15T06:11:47Z",
        "programs": [],
        "salesChannel": {
            "channelName": "AMAZON",
            "marketplaceId": "A1PA6795UKMFR9",
            "marketplaceName": "Amazon.de",
        },
        "proceeds": {
            "grandTotal": _amz("190.43"),
            "breakdowns": [
                {"type": "ITEM", "subtotal": _amz("174.70")},
                {"type": "SHIPPING", "subtotal": _amz("5.90")},
                {"type": "DISCOUNT", "subtotal": _amz("-7.45")},
                {"type": "TAX", "subtotal": _amz("17.28")},
            ],
        },
        "fulfillment": {"fulfillmentStatus": "UNSHIPPED", "fulfilledBy": "MERCHANT"},
        "orderItems": [
            {
                "orderItemId": "61522048830211",
                "quantityOrdered": 2,
                "product": {
                    "asin": "B0C4ZK2M91",
                    "title": "Bremsscheiben Satz vorne 280 mm",
                    "sellerSku": "BS-280-VA",
                    "price": {"unitPrice": _amz("74.50")},
                },
                "proceeds": {
                    "proceedsTotal": _amz("160.63"),
                    "breakdowns": [
                        {"type": "ITEM", "subtotal": _amz("149.00")},
                        {"type": "SHIPPING", "subtotal": _amz("5.90")},
                        {"type": "DISCOUNT", "subtotal": _amz("-7.45")},
                        {
                            "type": "TAX",
                            "subtotal": _amz("13.18"),
                            "detailedBreakdowns": [
                                {"subtype": "ITEM", "value": _amz("12.24")},
                                {"subtype": "SHIPPING", "value": _amz("0.94")},
                            ],
                        },
                    ],
                },
                "fulfillment": {"quantityFulfilled": 0, "quantityUnfulfilled": 2},
            },
            {
                "orderItemId": "61522048830212",
                "quantityOrdered": 1,
                "product": {
                    "asin": "B07WPL1Q3X",
                    "title": "Scheibenwischer 600 mm",
                    "sellerSku": "WB-600",
                    "price": {"unitPrice": _amz("25.70")},
                },
                "proceeds": {
                    "proceedsTotal": _amz("29.80"),
                    "breakdowns": [
                        {"type": "ITEM", "subtotal": _amz("25.70")},
                        # A TAX breakdown without detail counts as the item's tax.
                        {"type": "TAX", "subtotal": _amz("4.10")},
                    ],
                },
                "fulfillment": {"quantityFulfilled": 0, "quantityUnfulfilled": 1},
            },
        ],
    }


def _gbp(amount: str) -> dict[str, str]:
    return {"CurrencyCode": "GBP", "Amount": amount}


def amazon_uk_v0_order() -> dict[str, Any]:
    """A v0 Amazon.co.uk order with its getOrderItems page combined: three units, a promotion,
    a shipping discount and gift wrap. UK prices include VAT, so OrderTotal adds no tax."""
    order = {
        "AmazonOrderId": "026-7741920-3318012",
        "PurchaseDate": "2026-11-14T11:03:51Z",
        "LastUpdateDate": "2026-11-15T08:00:12Z",
        "OrderStatus": "Shipped",
        "FulfillmentChannel": "MFN",
        "MarketplaceId": "A1F83G8C2ARO7P",
        "OrderTotal": _gbp("63.46"),
        "NumberOfItemsShipped": 3,
        "NumberOfItemsUnshipped": 0,
        "IsBusinessOrder": "false",
    }
    items = {
        "payload": {
            "AmazonOrderId": "026-7741920-3318012",
            "OrderItems": [
                {
                    "OrderItemId": "40291833650402",
                    "ASIN": "B01N0Q9PQK",
                    "SellerSKU": "OIL-5W30-1L",
                    "Title": "Engine oil 5W-30, 1 l",
                    "QuantityOrdered": "3",
                    "QuantityShipped": "3",
                    "ItemPrice": _gbp("59.97"),
                    "ItemTax": _gbp("9.99"),
                    "ShippingPrice": _gbp("4.49"),
                    "ShippingTax": _gbp("0.75"),
                    "ShippingDiscount": _gbp("4.49"),
                    "PromotionDiscount": _gbp("0.00"),
                    "GiftWrapPrice": _gbp("3.49"),
                    "GiftWrapTax": _gbp("0.58"),
                    "IsGift": "true",
                }
            ],
        }
    }
    return amazon.combine_v0(order, items)


def _usd(amount: str) -> dict[str, str]:
    return {"CurrencyCode": "USD", "Amount": amount}


def amazon_us_v0_order() -> dict[str, Any]:
    """A v0 Amazon.com order: two units with a coupon, marketplace-facilitator sales tax added
    to OrderTotal."""
    order = {
        "AmazonOrderId": "113-5520981-7730214",
        "PurchaseDate": "2026-11-14T22:15:00Z",
        "LastUpdateDate": "2026-11-15T02:40:09Z",
        "OrderStatus": "Unshipped",
        "FulfillmentChannel": "MFN",
        "MarketplaceId": "ATVPDKIKX0DER",
        "OrderTotal": _usd("54.86"),
    }
    items = {
        "AmazonOrderId": "113-5520981-7730214",
        "OrderItems": [
            {
                "OrderItemId": "07718822910334",
                "SellerSKU": "FLT-AIR-22",
                "QuantityOrdered": "2",
                "QuantityShipped": "0",
                "ItemPrice": _usd("49.98"),
                "ItemTax": _usd("3.62"),
                "ShippingPrice": _usd("5.99"),
                "ShippingTax": _usd("0.27"),
                "PromotionDiscount": _usd("5.00"),
            }
        ],
    }
    return amazon.combine_v0(order, items)


def _cad(amount: str) -> dict[str, Any]:
    return {"currency": "CAD", "amount": Decimal(amount)}


def walmart_ca_order() -> dict[str, Any]:
    """A Walmart Canada order: two units of one line with HST, shipping whose tax is null, and
    a cancelled line whose charges Walmart zeroes (tax null)."""

    def status(name: str, quantity: str) -> dict[str, Any]:
        return {
            "status": name,
            "statusQuantity": {"unitOfMeasurement": "EACH", "amount": quantity},
            "cancellationReason": "CUSTOMER_REQUESTED_SELLER_TO_CANCEL" if name == "Cancelled" else None,
            "trackingInfo": None,
        }

    return {
        "purchaseOrderId": "2819934471055",
        "customerOrderId": "7001188243519",
        "customerEmailId": "8D1C02F7A1B34C0E9E2A55F0C1D2E3F4@relay.walmart.com",
        "orderDate": 1795172400000,
        "shippingInfo": {
            "phone": "4165550138",
            "methodCode": "Standard",
            "postalAddress": {
                "name": "Marc Tremblay",
                "address1": "55 Front St W",
                "city": "Toronto",
                "state": "ON",
                "postalCode": "M5J 1E6",
                "country": "CAN",
                "addressType": "RESIDENTIAL",
            },
        },
        "orderLines": {
            "orderLine": [
                {
                    "lineNumber": "1",
                    "item": {"productName": "Cabin air filter CF-1071", "sku": "CF-1071"},
                    "charges": {
                        "charge": [
                            {
                                "chargeType": "PRODUCT",
                                "chargeName": "ItemPrice",
                                "chargeAmount": _cad("49.94"),
                                "tax": {"taxName": "HST", "taxAmount": _cad("6.49")},
                            },
                            {
                                "chargeType": "SHIPPING",
                                "chargeName": "Shipping",
                                "chargeAmount": _cad("6.99"),
                                "tax": None,
                            },
                        ]
                    },
                    "orderLineQuantity": {"unitOfMeasurement": "EACH", "amount": "2"},
                    "statusDate": 1795190400000,
                    "orderLineStatuses": {"orderLineStatus": [status("Acknowledged", "2")]},
                    "refund": None,
                },
                {
                    "lineNumber": "2",
                    "item": {"productName": "Wiper blade 22 in", "sku": "WB-22"},
                    "charges": {
                        "charge": [
                            {
                                "chargeType": "PRODUCT",
                                "chargeName": "ItemPrice",
                                "chargeAmount": _cad("0"),
                                "tax": None,
                            }
                        ]
                    },
                    "orderLineQuantity": {"unitOfMeasurement": "EACH", "amount": "1"},
                    "statusDate": 1795190400000,
                    "orderLineStatuses": {"orderLineStatus": [status("Cancelled", "1")]},
                    "refund": None,
                },
            ]
        },
    }


def frames(result) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The core_orders and core_order_lines frames the loader writes for a normalize result."""
    assert result.rejects == [], result.rejects
    return to_frame(result.orders, Order), to_frame(result.lines, OrderLine)


def mismatches(result) -> list[Mismatch]:
    return order_reconciliation_mismatches(*frames(result))


# --- eBay -----------------------------------------------------------------------------------


def test_ebay_de_line_of_four_with_per_unit_shipping_reconciles_to_its_order():
    result = ebay.normalize_orders([as_received(ebay_de_order())])
    (order,) = result.orders
    (line,) = result.lines
    assert (order.currency, order.marketplace_id) == ("EUR", "EBAY_DE")
    assert line.quantity_ordered == 4 and line.unit_price == Decimal("32.25")
    # 4 x 4.95: the line's shipping for all its units, as the order's deliveryCost says.
    assert line.shipping_price == Decimal("19.80") == order.shipping_total
    # Items 12.88 and shipping 14.85 off, positive.
    assert line.promotion_discount == Decimal("27.73") == order.promotion_total
    assert line.item_tax is None and order.tax_total is None
    assert (
        line.item_price + line.shipping_price - line.promotion_discount
        == order.order_total
        == Decimal("121.07")
    )
    assert mismatches(result) == []


def test_the_per_unit_value_stored_as_line_shipping_fails_reconciliation():
    orders, lines = frames(ebay.normalize_orders([as_received(ebay_de_order())]))
    # What the defective normalizer stored: the unit's shipping as the line's.
    lines["shipping_price"] = pd.Series([Decimal("4.95")], dtype=lines["shipping_price"].dtype)
    assert order_reconciliation_mismatches(orders, lines) == [
        Mismatch("ebay", "04-11923-58230", "shipping", Decimal("19.8"), Decimal("4.95"))
    ]


def test_ebay_order_whose_delivery_cost_disagrees_with_its_lines_is_reported():
    record = ebay_de_order()
    # An order summary charging five units' shipping for a line of four.
    record["pricingSummary"]["deliveryCost"] = _eur("24.75")
    record["pricingSummary"]["total"] = _eur("126.02")
    found = mismatches(ebay.normalize_orders([as_received(record)]))
    assert [(m.part, m.on_order, m.from_lines) for m in found] == [
        ("shipping", Decimal("24.75"), Decimal("19.80"))
    ]
    assert "shipping 24.75 on the order, 19.80 from its lines" in found[0].describe()


def test_ebay_line_whose_total_uses_the_whole_line_reading_keeps_it():
    # A line of 3 whose total only adds up with shippingCost as the whole line's, as eBay's
    # reference describes the field: 3 x 12.00 + 6.90 = 42.90.
    record = ebay_de_order("11-02233-44556")
    item = record["lineItems"][0]
    item.update(
        quantity=3,
        lineItemCost=_eur("36.00"),
        total=_eur("42.90"),
        deliveryCost={"shippingCost": _eur("6.90")},
        appliedPromotions=[],
    )
    del item["discountedLineItemCost"]
    record["pricingSummary"] = {
        "priceSubtotal": _eur("36.00"),
        "deliveryCost": _eur("6.90"),
        "total": _eur("42.90"),
    }
    result = ebay.normalize_orders([as_received(record)])
    assert result.lines[0].shipping_price == Decimal("6.90")
    assert mismatches(result) == []


def test_ebay_line_without_a_total_takes_per_unit_shipping():
    record = ebay_de_order()
    del record["lineItems"][0]["total"]
    (line,) = ebay.normalize_orders([as_received(record)]).lines
    assert line.shipping_price == Decimal("19.80")


def ebay_us_tire_order() -> dict[str, Any]:
    """A real-shaped EBAY_US order of two tires (quantity 2): a state tire recycling fee on the
    order (pricingSummary.fee), a seller adjustment after checkout, $12.50 handling on the line,
    sales tax collected by eBay and read with fieldGroups=TAX_BREAKDOWN.

    total 426.15 = items 2 x 189.99 + shipping 0 + handling 12.50 + fee 5.00 (2 x 2.50)
    - adjustment 10.00 + tax 38.67.
    """
    usd = lambda v: {"value": v, "currency": "USD"}  # noqa: E731
    record = ebay_de_order("27-11874-90211")
    record["pricingSummary"] = {
        "priceSubtotal": usd("379.98"),
        "deliveryCost": usd("0.0"),
        "fee": usd("5.0"),
        "adjustment": usd("-10.00"),
        "tax": usd("38.67"),
        "total": usd("426.15"),
    }
    item = record["lineItems"][0]
    item.update(
        sku="TIRE-235-75R15-AT",
        title="2x All-Terrain Tire 235/75R15 109T",
        quantity=2,
        lineItemCost=usd("379.98"),
        discountedLineItemCost=usd("379.98"),
        listingMarketplaceId="EBAY_US",
        purchaseMarketplaceId="EBAY_US",
        total=usd("431.15"),
        deliveryCost={"shippingCost": usd("0.0"), "handlingCost": usd("12.50")},
        appliedPromotions=[],
        ebayCollectAndRemitTaxes=[
            {"taxType": "STATE_SALES_TAX", "amount": usd("38.67"), "collectionMethod": "NET"}
        ],
    )
    record["totalMarketplaceFee"] = usd("50.12")
    return record


def test_ebay_fees_adjustments_and_handling_are_stored_and_reconcile():
    result = ebay.normalize_orders([as_received(ebay_us_tire_order())])
    (order,) = result.orders
    (line,) = result.lines
    assert order.other_charges_total == Decimal("-5.00")  # fee 5.00 + adjustment -10.00
    assert line.other_charges == Decimal("12.50") and line.shipping_price == Decimal("0.0")
    assert mismatches(result) == []
    # Without the stored charges the order would not add up: the check would block it.
    orders, lines = frames(result)
    orders["other_charges_total"] = None
    (found,) = order_reconciliation_mismatches(orders, lines)
    assert found.part == "total" and found.on_order == Decimal("426.15")


def test_ebay_documented_orders_reconcile():
    body = loads((FIXTURES / "ebay" / "ebay_getOrders_doc_shape.json").read_text())
    result = ebay.normalize_orders(ebay.orders_from_response(body))
    assert len(result.orders) == 3
    assert mismatches(result) == []


def test_ebay_collected_tax_may_be_left_out_of_the_total_but_nothing_else():
    # Without fieldGroups=TAX_BREAKDOWN eBay leaves collect-and-remit tax out of the totals.
    body = loads((FIXTURES / "ebay" / "ebay_getOrders_doc_shape.json").read_text())
    record = copy.deepcopy(ebay.orders_from_response(body)[2])
    record["pricingSummary"]["total"] = {"value": "120.00", "currency": "USD"}
    assert mismatches(ebay.normalize_orders([record])) == []
    record["pricingSummary"]["total"] = {"value": "118.00", "currency": "USD"}
    (found,) = mismatches(ebay.normalize_orders([record]))
    assert (found.part, found.on_order, found.from_lines) == (
        "total",
        Decimal("118.00"),
        "120.00 or 128.40",
    )


# --- Amazon ---------------------------------------------------------------------------------


def test_amazon_de_order_with_quantity_discount_reconciles():
    result = amazon.normalize_orders([as_received(amazon_de_order())])
    (order,) = result.orders
    assert order.currency == "EUR" and order.promotion_total == Decimal("7.45")
    discs = result.lines[0]
    assert discs.quantity_ordered == 2 and discs.item_price == Decimal("149.00")
    assert (discs.item_tax, discs.shipping_tax) == (Decimal("12.24"), Decimal("0.94"))
    assert mismatches(result) == []


def test_amazon_order_breakdown_that_disagrees_with_its_items_is_reported():
    record = amazon_de_order()
    # Shipping charged per unit on the order, per line on the item.
    record["proceeds"]["breakdowns"][1] = {"type": "SHIPPING", "subtotal": _amz("11.80")}
    record["proceeds"]["grandTotal"] = _amz("196.33")
    found = mismatches(amazon.normalize_orders([as_received(record)]))
    assert [(m.part, m.on_order, m.from_lines) for m in found] == [
        ("shipping", Decimal("11.80"), Decimal("5.90"))
    ]


def test_amazon_grand_total_below_its_parts_is_reported():
    record = amazon_de_order()
    record["proceeds"]["grandTotal"] = _amz("170.00")
    (found,) = mismatches(amazon.normalize_orders([as_received(record)]))
    assert found.part == "total" and found.from_lines.startswith("at least 173.15")


@pytest.mark.parametrize(
    "fixture",
    [
        "amazon_v2026_getOrder_docexample.json",  # GBP, 3 units, ITEM/SHIPPING/TAX
        "amazon_v2026_searchOrders_docexample.json",  # grandTotal holds a DELIVERY_TIP
        "amazon_v2026_searchOrders_sandbox_1.json",  # JPY without decimals
        "amazon_v2026_getOrder_sandbox_2.json",  # TRY, 2 units
    ],
)
def test_amazon_documented_orders_reconcile(fixture):
    body = loads((FIXTURES / "amazon" / fixture).read_text())
    result = amazon.normalize_orders(amazon.orders_from_response(body))
    assert result.orders
    assert mismatches(result) == []


def test_amazon_v0_orders_reconcile_with_vat_inside_or_sales_tax_added():
    result = amazon.normalize_orders(
        [as_received(amazon_uk_v0_order()), as_received(amazon_us_v0_order())]
    )
    uk, us = result.orders
    assert uk.currency == "GBP" and uk.promotion_total == Decimal("4.49")
    assert uk.order_total == uk.items_subtotal + uk.shipping_total + Decimal("3.49") - Decimal("4.49")
    assert us.order_total == us.items_subtotal + us.shipping_total - us.promotion_total + us.tax_total
    assert mismatches(result) == []


def test_pending_amazon_order_without_totals_is_not_reconciled():
    body = loads((FIXTURES / "amazon" / "amazon_getOrders_sandbox_2_nexttoken_page1.json").read_text())
    result = amazon.normalize_orders(amazon.orders_from_response(body))
    assert result.orders[0].order_total is None
    assert mismatches(result) == []


# --- Walmart --------------------------------------------------------------------------------


def test_walmart_order_with_null_tax_and_a_cancelled_line_reconciles():
    result = walmart.normalize_orders([as_received(walmart_ca_order())], marketplace_id="WALMART_CA")
    (order,) = result.orders
    assert order.currency == "CAD"
    assert (order.items_subtotal, order.shipping_total, order.tax_total) == (
        Decimal("49.94"),
        Decimal("6.99"),
        Decimal("6.49"),
    )
    assert order.order_total == Decimal("63.42")
    assert [line.shipping_tax for line in result.lines] == [None, None]
    assert mismatches(result) == []


def test_walmart_stored_rows_that_stop_adding_up_are_reported():
    orders, lines = frames(
        walmart.normalize_orders([as_received(walmart_ca_order())], marketplace_id="WALMART_CA")
    )
    dtype = lines["shipping_price"].dtype
    lines["shipping_price"] = pd.Series([Decimal("13.98"), None], dtype=dtype)
    orders["order_total"] = pd.Series([Decimal("57.41")], dtype=orders["order_total"].dtype)
    found = order_reconciliation_mismatches(orders, lines)
    assert [(m.part, m.on_order, m.from_lines) for m in found] == [
        ("shipping", Decimal("6.99"), Decimal("13.98")),
        # Walmart's total always adds the tax: 49.94 + 6.99 + 6.49.
        ("total", Decimal("57.41"), "63.42"),
    ]


def test_walmart_order_without_any_tax_reconciles():
    record = walmart_ca_order()
    record["orderLines"]["orderLine"][0]["charges"]["charge"][0]["tax"] = None
    result = walmart.normalize_orders([as_received(record)], marketplace_id="WALMART_CA")
    assert result.orders[0].tax_total is None
    assert result.orders[0].order_total == Decimal("56.93")
    assert mismatches(result) == []


# --- across channels ------------------------------------------------------------------------


def test_a_partition_of_every_channel_reconciles_and_each_mismatch_names_its_order():
    parts = [
        frames(ebay.normalize_orders([as_received(ebay_de_order())])),
        frames(amazon.normalize_orders([as_received(amazon_de_order())])),
        frames(walmart.normalize_orders([as_received(walmart_ca_order())])),
    ]
    orders = pd.concat([o for o, _ in parts], ignore_index=True)
    lines = pd.concat([ln for _, ln in parts], ignore_index=True)
    assert order_reconciliation_mismatches(orders, lines) == []
    # A line landed in another currency than its order.
    lines.loc[lines["channel"] == "amazon", "currency"] = "GBP"
    found = order_reconciliation_mismatches(orders, lines)
    assert [(m.channel, m.marketplace_order_id, m.part) for m in found] == [
        ("amazon", "302-4417781-5520331", "currency")
    ]


def test_every_channel_has_a_total_rule_and_an_unknown_channel_fails():
    assert set(TOTAL_RULES) == set(CHANNELS)
    orders, lines = frames(ebay.normalize_orders([as_received(ebay_de_order())]))
    orders["channel"] = "etsy"
    lines["channel"] = "etsy"
    (found,) = order_reconciliation_mismatches(orders, lines)
    assert found.part == "rule" and "etsy" in found.describe()
