"""Amazon normalizers against Amazon's own example payloads (tests/fixtures/amazon)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from illuma_pipelines.normalize import (
    AdjustmentKind,
    FulfillmentChannel,
    OrderStatus,
    amazon,
    loads,
)

FIXTURES = Path(__file__).parent / "fixtures" / "amazon"


def load(name: str) -> Any:
    return loads((FIXTURES / name).read_text(encoding="utf-8"))


def orders(*names: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for name in names:
        records.extend(amazon.orders_from_response(load(name)))
    return records


def one(result, order_id: str):
    matches = [o for o in result.orders if o.marketplace_order_id == order_id]
    assert len(matches) == 1, [o.marketplace_order_id for o in result.orders]
    return matches[0]


# --- v2026-01-01 ------------------------------------------------------------------------------


def test_v2026_get_order_docexample_money_and_tax_split() -> None:
    result = amazon.normalize_orders(orders("amazon_v2026_getOrder_docexample.json"))
    assert result.rejects == []
    order = one(result, "202-1234567-8901234")
    assert order.status is OrderStatus.SHIPPED and order.channel_status == "SHIPPED"
    assert order.fulfillment_channel is FulfillmentChannel.MERCHANT
    assert order.marketplace_id == "A1F83G8C2ARO7P"
    assert order.currency == "GBP"
    assert order.order_total == Decimal("103.97")
    assert (order.items_subtotal, order.shipping_total, order.tax_total) == (
        Decimal("89.97"),
        Decimal("10.00"),
        Decimal("4.00"),
    )
    assert order.shipped_at == datetime(2024, 12, 26, 14, tzinfo=UTC)
    assert order.purchased_at == datetime(2024, 12, 25, 9, 15, tzinfo=UTC)
    assert order.country_code == "GB"
    (line,) = result.lines
    assert line.unit_price == Decimal("29.99") and line.quantity_ordered == 3
    assert line.item_price == Decimal("89.97") == line.unit_price * 3
    assert (line.item_tax, line.shipping_tax) == (Decimal("3.00"), Decimal("1.00"))
    assert line.shipping_price == Decimal("10.00")
    assert line.quantity_shipped == 3 and line.line_status is OrderStatus.SHIPPED
    assert line.sku == "ECHO-DOT-4-UK-CHARCOAL-3PACK" and line.asin_or_item_id == "B08DFPV54V"


def test_v2026_pii_is_separate_from_the_order() -> None:
    result = amazon.normalize_orders(orders("amazon_v2026_getOrder_docexample.json"))
    (pii,) = result.pii
    assert pii.buyer_name == "James Wilson"
    assert pii.buyer_email == "buyer-email@marketplace.amazon.co.uk"
    assert pii.buyer_phone == "+44 161 123 4567"
    assert (pii.address_line1, pii.address_line2, pii.address_line3) == (
        "123 High Street",
        "Unit 4B",
        None,
    )
    assert (pii.city, pii.postal_code, pii.country_code) == ("Manchester", "M1 2AB", "GB")
    order_values = {str(v) for v in vars_of(result.orders[0])}
    assert not order_values & {"James Wilson", "123 High Street", "+44 161 123 4567"}


def vars_of(row: Any) -> list[Any]:
    return [getattr(row, f) for f in row.__dataclass_fields__]


def test_v2026_search_docexample_multi_line_delivered_and_line_cancellation() -> None:
    result = amazon.normalize_orders(orders("amazon_v2026_searchOrders_docexample.json"))
    order = one(result, "123-4567890-1234567")
    # Every package DELIVERED: the order moves past Amazon's last status, SHIPPED.
    assert order.status is OrderStatus.DELIVERED and order.channel_status == "SHIPPED"
    assert order.is_business is True
    assert order.order_total == Decimal("154.99")  # includes the order-level DELIVERY_TIP
    assert order.items_subtotal == Decimal("149.97")
    assert sum(line.item_price for line in result.lines) == order.items_subtotal
    assert [line.line_status for line in result.lines] == [OrderStatus.DELIVERED] * 2
    (cancel,) = result.adjustments
    assert cancel.kind is AdjustmentKind.CANCELLATION
    assert cancel.line_id == "12345678901234"
    assert cancel.reason == "Buyer requested cancellation"


def test_v2026_jpy_without_decimals_fba() -> None:
    result = amazon.normalize_orders(orders("amazon_v2026_searchOrders_sandbox_1.json"))
    order = one(result, "250-1234567-8901234")
    assert order.currency == "JPY" and order.order_total == Decimal("19940")
    assert order.fulfillment_channel is FulfillmentChannel.MARKETPLACE
    assert [line.item_price for line in result.lines] == [Decimal("5980"), Decimal("13960")]
    assert sum(line.item_price for line in result.lines) == order.order_total
    assert result.lines[1].unit_price == Decimal("6980")


def test_v2026_sandbox_orders_all_parse() -> None:
    result = amazon.normalize_orders(
        orders(
            "amazon_v2026_searchOrders_sandbox_2.json",
            "amazon_v2026_searchOrders_sandbox_3.json",
            "amazon_v2026_getOrder_sandbox_1.json",
            "amazon_v2026_getOrder_sandbox_2.json",
            "amazon_v2026_getOrder_sandbox_3.json",
        )
    )
    assert result.rejects == []
    by_id = {o.marketplace_order_id: o for o in result.orders}
    assert by_id["171-2345678-9012345"].status is OrderStatus.UNSHIPPED
    assert by_id["171-2345678-9012345"].is_business is True
    assert by_id["028-1234567-8901234"].is_business is None  # no programs array at all
    assert by_id["028-1234567-8901234"].currency == "TRY"
    pickup = by_id["114-9876543-1234567"]
    assert pickup.tax_total == Decimal("10.00") and pickup.items_subtotal == Decimal("39.99")
    # getOrder sandbox 3 requested no BUYER dataset: PII from the address only.
    pii = {p.marketplace_order_id: p for p in result.pii}["114-9876543-1234567"]
    assert pii.buyer_name is None and pii.ship_name == "Test Store #1234"
    assert {line.line_id for line in result.lines} >= {"02812345678901", "17198765432109"}


# --- v0 ---------------------------------------------------------------------------------------


def test_v0_get_orders_sandbox() -> None:
    result = amazon.normalize_orders(orders("amazon_getOrders_sandbox_1.json"))
    assert result.rejects == []
    assert [o.marketplace_order_id for o in result.orders] == [
        "902-1845936-5435065",
        "902-8745147-1934268",
    ]
    order = result.orders[0]
    assert order.status is OrderStatus.UNSHIPPED and order.channel_status == "Unshipped"
    assert order.fulfillment_channel is FulfillmentChannel.MERCHANT
    assert order.order_total == Decimal("11.01") and order.currency == "USD"
    assert order.is_business is False
    # The seller's DefaultShipFromLocationAddress is not buyer PII.
    assert result.pii == []


def test_v0_pending_order_without_totals_and_seller_fulfilled() -> None:
    result = amazon.normalize_orders(orders("amazon_getOrders_docexample.json"))
    order = one(result, "902-3159896-1390916")
    assert order.status is OrderStatus.PENDING
    assert order.fulfillment_channel is FulfillmentChannel.MERCHANT  # 'SellerFulfilled'
    assert order.order_total is None and order.currency is None
    assert order.items_subtotal is None
    (pii,) = result.pii
    assert pii.buyer_email == "user@example.com" and pii.city == "Canton"


def test_v0_duplicate_across_pages_is_deduplicated() -> None:
    result = amazon.normalize_orders(
        orders(
            "amazon_getOrders_sandbox_2_nexttoken_page1.json",
            "amazon_getOrders_sandbox_3_nexttoken_page2.json",
        )
    )
    assert [o.marketplace_order_id for o in result.orders] == ["902-3159896-1390916"]
    assert result.rejects == []


def test_dedupe_keeps_latest_last_update_whatever_the_order() -> None:
    (base,) = orders("amazon_getOrder_sandbox_2_IBA.json")
    newer = {**base, "LastUpdateDate": "2019-05-09T00:00:00Z", "OrderStatus": "Shipped"}
    older = {**base, "LastUpdateDate": "2019-05-07T16:00:00Z", "OrderStatus": "Unshipped"}
    for records in ([older, newer], [newer, older]):
        result = amazon.normalize_orders(records)
        (order,) = result.orders
        assert order.status is OrderStatus.SHIPPED
        assert order.last_updated_at == datetime(2019, 5, 9, tzinfo=UTC)


def test_v0_iba_business_order_with_milliseconds() -> None:
    result = amazon.normalize_orders(orders("amazon_getOrder_sandbox_2_IBA.json"))
    order = one(result, "921-3175655-0452641")
    assert order.fulfillment_channel is FulfillmentChannel.MARKETPLACE
    assert order.is_business is True and order.currency == "EUR"
    assert order.purchased_at == datetime(2019, 5, 7, 15, 42, 57, 58000, tzinfo=UTC)


def test_v0_combined_with_items_buyer_and_address() -> None:
    (order,) = orders("amazon_getOrder_sandbox_1.json")
    combined = amazon.combine_v0(
        order,
        items=load("amazon_getOrderItems_sandbox_1.json"),
        buyer_info=load("amazon_getOrderBuyerInfo_sandbox_1.json"),
        address=load("amazon_getOrderAddress_sandbox_1.json"),
    )
    assert "OrderItems" not in order  # inputs untouched
    result = amazon.normalize_orders([combined])
    assert result.rejects == []
    (line,) = result.lines
    assert line.item_price == Decimal("10.00") and line.item_tax == Decimal("1.01")
    assert line.promotion_discount == Decimal("0.00")
    assert line.quantity_shipped == 0 and line.line_status is OrderStatus.UNSHIPPED
    order_row = result.orders[0]
    assert order_row.items_subtotal + order_row.tax_total == order_row.order_total
    (pii,) = result.pii
    assert pii.buyer_email == "fzyrv6gwkhbb15c@example.com"
    assert pii.address_line1 == "2201 WESTLAKE AVE"


def test_combine_v0_refuses_another_orders_sub_resource() -> None:
    (order,) = orders("amazon_getOrder_sandbox_1.json")
    with pytest.raises(ValueError, match="903-1671087-0812628"):
        amazon.combine_v0(order, items=load("amazon_getOrderItems_docexample.json"))


def test_sub_resource_alone_is_not_an_order() -> None:
    with pytest.raises(ValueError, match="combine_v0"):
        amazon.orders_from_response(load("amazon_getOrderAddress_docexample.json"))


def test_mixed_currency_gift_wrap_is_dropped_not_summed() -> None:
    shell = {
        "AmazonOrderId": "903-1671087-0812628",
        "PurchaseDate": "2013-09-05T10:00:00Z",
        "LastUpdateDate": "2013-09-06T10:00:00Z",
        "OrderStatus": "Shipped",
        "FulfillmentChannel": "MFN",
        "OrderTotal": {"CurrencyCode": "JPY", "Amount": "47"},
    }
    combined = amazon.combine_v0(shell, items=load("amazon_getOrderItems_docexample.json"))
    result = amazon.normalize_orders([combined])
    assert result.rejects == []
    first, second = result.lines
    assert first.gift_wrap_price is None  # GBP 41.99 inside a JPY order
    assert second.gift_wrap_price == Decimal("1.99")  # JPY, kept
    (dropped,) = result.dropped_components
    assert dropped[0] == "903-1671087-0812628/68828574383266/GiftWrapPrice"
    assert "GBP" in dropped[1] and "JPY" in dropped[1]
    assert all(line.currency == "JPY" for line in result.lines)
    # Second item has no QuantityShipped: unknown, not zero.
    assert second.quantity_shipped is None
    assert result.orders[0].items_subtotal == Decimal("25.99") + Decimal("17.95")


def test_line_price_in_another_currency_rejects_the_order() -> None:
    shell = {
        "AmazonOrderId": "903-0000000-0000001",
        "OrderStatus": "Shipped",
        "FulfillmentChannel": "AFN",
        "OrderTotal": {"CurrencyCode": "USD", "Amount": "10.00"},
        "OrderItems": [
            {
                "OrderItemId": "1",
                "QuantityOrdered": 1,
                "ItemPrice": {"CurrencyCode": "EUR", "Amount": "10.00"},
            }
        ],
    }
    result = amazon.normalize_orders([shell])
    assert result.orders == []
    assert result.rejects[0][0] == "903-0000000-0000001"
    assert "EUR" in result.rejects[0][1] and "USD" in result.rejects[0][1]


def test_unknown_status_and_currency_are_rejected_and_the_rest_continue() -> None:
    good, other = orders("amazon_getOrders_sandbox_1.json")
    bad_status = {**good, "AmazonOrderId": "111-0000000-0000001", "OrderStatus": "Teleported"}
    bad_currency = {
        **other,
        "AmazonOrderId": "111-0000000-0000002",
        "OrderTotal": {"CurrencyCode": "string", "Amount": "1.00"},
    }
    not_an_order = {"hello": "world"}
    result = amazon.normalize_orders([bad_status, good, bad_currency, not_an_order, other])
    assert sorted(o.marketplace_order_id for o in result.orders) == [
        "902-1845936-5435065",
        "902-8745147-1934268",
    ]
    reasons = dict(result.rejects)
    assert "Teleported" in reasons["111-0000000-0000001"]
    assert (
        "'string'" in reasons["111-0000000-0000002"]
        and "ISO 4217" in reasons["111-0000000-0000002"]
    )
    assert "AmazonOrderId" in reasons[3]


def test_cancelled_order_becomes_an_adjustment() -> None:
    (base,) = orders("amazon_getOrder_sandbox_1.json")
    cancelled = {**base, "OrderStatus": "Canceled"}
    result = amazon.normalize_orders([cancelled])
    assert result.orders[0].status is OrderStatus.CANCELLED
    (adjustment,) = result.adjustments
    assert adjustment.kind is AdjustmentKind.CANCELLATION and adjustment.line_id is None
    assert adjustment.amount == Decimal("11.01") and adjustment.currency == "USD"


def test_response_body_passed_as_record_is_rejected_with_a_hint() -> None:
    result = amazon.normalize_orders([load("amazon_getOrders_sandbox_1.json")])
    assert "orders_from_response" in result.rejects[0][1]


# --- inventory and finances --------------------------------------------------------------------


def test_fba_inventory_summaries() -> None:
    summaries, marketplace = amazon.inventory_from_response(
        load("amazon_getInventorySummaries_sandbox_1.json")
    )
    snapshot = datetime(2026, 3, 1, tzinfo=UTC)
    result = amazon.normalize_inventory(summaries, marketplace, as_of=snapshot)
    assert result.rejects == []
    by_sku = {r.sku: r for r in result.inventory}
    assert set(by_sku) == {"EMTEC 1 GB", "EMTEC-SdCard-reader", "Silicon Power 32GB"}
    silicon = by_sku["Silicon Power 32GB"]
    assert (silicon.fulfillable, silicon.inbound, silicon.reserved, silicon.unfulfillable) == (
        66,
        21,
        0,
        0,
    )
    assert silicon.total_quantity == 87 and silicon.marketplace_id == "ATVPDKIKX0DER"
    assert silicon.as_of == datetime(2018, 3, 31, 23, 40, 39, tzinfo=UTC)
    # lastUpdatedTime "" -> the caller's snapshot time.
    assert by_sku["EMTEC 1 GB"].as_of == snapshot
    assert by_sku["EMTEC 1 GB"].fnsku == "B0020MLK00"


def test_finances_2024_list_transactions() -> None:
    records = amazon.transactions_from_response(
        load("amazon_finances2024_listTransactions_sandbox_1.json")
    )
    result = amazon.normalize_transactions(records)
    (tx,) = result.transactions
    assert tx.amount == Decimal("10") and tx.currency == "USD"
    assert tx.type == "Shipment" and tx.order_id == "8129762527551"
    assert tx.posted_at == datetime(2020, 7, 14, 3, 35, 13, 214000, tzinfo=UTC)
    # The sandbox omits transactionId: a content hash keeps loads idempotent.
    assert tx.transaction_id.startswith("sha256:")
    again = amazon.normalize_transactions(records).transactions[0]
    assert again.transaction_id == tx.transaction_id


def test_finances_breakdowns_flatten_to_leaves() -> None:
    record = {
        "transactionId": "T-1",
        "transactionType": "Shipment",
        "postedDate": "2026-01-02T03:04:05Z",
        "totalAmount": {"currencyAmount": Decimal("16.49"), "currencyCode": "USD"},
        "relatedIdentifiers": [
            {"relatedIdentifierName": "ORDER_ID", "relatedIdentifierValue": "112-1111111-2222222"}
        ],
        "breakdowns": [
            {
                "breakdownType": "ProductCharges",
                "breakdownAmount": {"currencyAmount": Decimal("25.00"), "currencyCode": "USD"},
                "breakdowns": [
                    {
                        "breakdownType": "ProductPrice",
                        "breakdownAmount": {
                            "currencyAmount": Decimal("25.00"),
                            "currencyCode": "USD",
                        },
                    }
                ],
            },
            {
                "breakdownType": "AmazonFees",
                "breakdownAmount": {"currencyAmount": Decimal("-8.51"), "currencyCode": "USD"},
                "breakdowns": [
                    {
                        "breakdownType": "Commission",
                        "breakdownAmount": {
                            "currencyAmount": Decimal("-3.75"),
                            "currencyCode": "USD",
                        },
                    },
                    {
                        "breakdownType": "FBAFees",
                        "breakdownAmount": {
                            "currencyAmount": Decimal("-4.76"),
                            "currencyCode": "USD",
                        },
                    },
                ],
            },
        ],
    }
    broken = {
        **record,
        "transactionId": "T-2",
        "totalAmount": {"currencyAmount": 1, "currencyCode": "XXY"},
    }
    result = amazon.normalize_transactions([record, broken])
    (tx,) = result.transactions
    assert tx.breakdown == (
        ("ProductCharges/ProductPrice", Decimal("25.00")),
        ("AmazonFees/Commission", Decimal("-3.75")),
        ("AmazonFees/FBAFees", Decimal("-4.76")),
    )
    assert sum(amount for _, amount in tx.breakdown) == tx.amount
    assert result.rejects[0][0] == "T-2" and "XXY" in result.rejects[0][1]


# --- Product Pricing v0: getListingOffers before and after the February 2026 rename ---------


def _uk_listing_offers(top_level: dict[str, str]) -> dict[str, Any]:
    """A getListingOffers payload as Amazon.co.uk answers it: three offers in GBP, one of them
    ours and fulfilled by Amazon, a business price on another, no marketplace in Identifier."""

    def gbp(amount: str) -> dict[str, Any]:
        return {"CurrencyCode": "GBP", "Amount": Decimal(amount)}

    return {
        "SKU": "UKPA-BRI-591334",
        "status": "Success",
        "ItemCondition": "New",
        "Identifier": {"ItemCondition": "New", "SellerSKU": "UKPA-BRI-591334"},
        "Summary": {
            "LowestPrices": [
                {
                    "condition": "new",
                    "fulfillmentChannel": "Amazon",
                    "LandedPrice": gbp("18.49"),
                    "ListingPrice": gbp("18.49"),
                    "Shipping": gbp("0.00"),
                },
                {
                    "condition": "new",
                    "fulfillmentChannel": "Merchant",
                    "LandedPrice": gbp("19.98"),
                    "ListingPrice": gbp("16.99"),
                    "Shipping": gbp("2.99"),
                },
            ],
            "BuyBoxPrices": [
                {
                    "condition": "new",
                    "LandedPrice": gbp("18.49"),
                    "ListingPrice": gbp("18.49"),
                    "Shipping": gbp("0.00"),
                    "sellerId": "A2UKPARTS0SELLER",
                }
            ],
            "TotalOfferCount": 3,
        },
        "Offers": [
            {
                "Shipping": gbp("0.00"),
                "ListingPrice": gbp("18.49"),
                "SubCondition": "new",
                "SellerId": "A2UKPARTS0SELLER",
                "MyOffer": True,
                "IsFulfilledByAmazon": True,
                "IsBuyBoxWinner": True,
                "PrimeInformation": {"IsPrime": True, "IsNationalPrime": True},
            },
            {
                "Shipping": gbp("2.99"),
                "ListingPrice": gbp("16.99"),
                "SubCondition": "new",
                "SellerId": "A3COMPETITOR01",
                "MyOffer": False,
                "IsFulfilledByAmazon": False,
                "quantityDiscountPrices": [
                    {"quantityTier": 3, "quantityDiscountType": "QUANTITY_DISCOUNT", "listingPrice": gbp("15.49")}
                ],
            },
            {
                "Shipping": gbp("4.50"),
                "ListingPrice": gbp("21.00"),
                "SubCondition": "new",
                "SellerId": "A3COMPETITOR02",
                "IsFulfilledByAmazon": False,
            },
        ],
        **top_level,
    }


def test_listing_offers_current_shape_names_the_marketplace_marketplaceId() -> None:
    result = amazon.normalize_pricing({"payload": _uk_listing_offers({"marketplaceId": "A1F83G8C2ARO7P"})})
    assert not result.rejects
    assert {(p.marketplace_id, p.currency) for p in result.prices} == {("A1F83G8C2ARO7P", "GBP")}
    kinds = sorted(p.kind for p in result.prices)
    assert kinds == ["buybox", "item_offer", "item_offer", "item_offer", "lowest", "lowest"]
    mine = [p for p in result.prices if p.kind == "item_offer" and p.is_mine]
    assert len(mine) == 1 and mine[0].listing_price == Decimal("18.49")
    merchant_low = next(p for p in result.prices if p.kind == "lowest" and p.fulfillment_channel == "Merchant")
    assert merchant_low.landed_price == merchant_low.listing_price + merchant_low.shipping_price


def test_listing_offers_legacy_shape_names_the_marketplace_MarketplaceID() -> None:
    legacy = load("amazon_getListingOffers_sandbox_1.json")
    assert "MarketplaceID" in legacy["payload"] and "marketplaceId" not in legacy["payload"]
    # Only the top-level name can say the marketplace here.
    legacy["payload"]["Identifier"].pop("MarketplaceId")
    result = amazon.normalize_pricing(legacy)
    assert not result.rejects and result.prices
    assert {p.marketplace_id for p in result.prices} == {"ATVPDKIKX0DER"}
    uk = amazon.normalize_pricing({"payload": _uk_listing_offers({"MarketplaceID": "A1F83G8C2ARO7P"})})
    assert {p.marketplace_id for p in uk.prices} == {"A1F83G8C2ARO7P"}


def test_listing_offers_naming_two_marketplaces_is_rejected() -> None:
    both = _uk_listing_offers({"marketplaceId": "A1F83G8C2ARO7P", "MarketplaceID": "A1PA6795UKMFR9"})
    result = amazon.normalize_pricing({"payload": both})
    assert not result.prices
    ((key, reason),) = result.rejects
    assert key == "UKPA-BRI-591334" and "A1F83G8C2ARO7P" in reason and "A1PA6795UKMFR9" in reason
    same = _uk_listing_offers({"marketplaceId": "A1F83G8C2ARO7P", "MarketplaceID": "A1F83G8C2ARO7P"})
    assert not amazon.normalize_pricing({"payload": same}).rejects
