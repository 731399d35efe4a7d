"""Amazon SP-API payloads -> the cross-channel model.

Orders come in two shapes, both accepted by :func:`normalize_orders`, record by record:

* Orders v2026-01-01 (``searchOrders`` ``orders[]`` / ``getOrder`` ``order``): camelCase, items,
  buyer and address inside the order, money as ``{amount, currencyCode}`` strings, status in
  ``fulfillment.fulfillmentStatus``, proceeds as typed ``breakdowns``.
* Orders v0 (``getOrders`` ``payload.Orders[]`` / ``getOrder`` ``payload``): PascalCase, money as
  ``{Amount, CurrencyCode}``; items, buyer info and address come from separate calls. Join them
  with :func:`combine_v0` first; an uncombined v0 order still normalizes, without lines or PII.

Mixed currencies: an Amazon order settles in one currency. A component in another currency
(Amazon's own getOrderItems example has a GBP gift-wrap price inside a JPY order) is left out of
every total and reported in ``NormalizeResult.dropped_components``; the order is kept. Only a
line whose own item price is in another currency rejects the whole order, since its totals
would be wrong.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from ._common import (
    RECORD_ERRORS,
    ChannelErrorResponse,
    CurrencyGuard,
    OrderBundle,
    RecordError,
    add,
    collect_orders,
    describe,
    fast_money,
    money_of,
    optional_int,
    parse_bool,
    parse_int,
    required_text,
    text,
    unit_price_of,
)
from .amazon_settlement import SettlementFormatError, parse_settlement_report
from .model import (
    BuyerPII,
    FinancialTransaction,
    InventoryRecord,
    NormalizeResult,
    Order,
    OrderAdjustment,
    OrderLine,
    PriceObservation,
)
from .money import check_currency
from .timeparse import parse_amazon_time, parse_iso
from .vocab import (
    AMAZON_V0_FULFILLMENT,
    AMAZON_V0_STATUS,
    AMAZON_V2026_FULFILLMENT,
    AMAZON_V2026_STATUS,
    AdjustmentKind,
    OrderStatus,
)

__all__ = [
    "AmazonErrorResponse",
    "SettlementFormatError",
    "combine_v0",
    "inventory_from_response",
    "is_error_response",
    "normalize_inventory",
    "normalize_orders",
    "normalize_pricing",
    "normalize_transactions",
    "orders_from_response",
    "parse_settlement_report",
    "transactions_from_response",
]

CHANNEL = "amazon"


class AmazonErrorResponse(ChannelErrorResponse):
    """An SP-API error body (``{"errors": [...]}``) where data was expected."""

    channel_label = "Amazon"
    code_key = "code"


def is_error_response(body: Any) -> bool:
    """True for SP-API error bodies: ``errors`` present and no data."""
    return (
        isinstance(body, Mapping)
        and isinstance(body.get("errors"), list)
        and bool(body["errors"])
        and not any(k in body for k in ("payload", "orders", "order"))
    )


def _check_errors(body: Any) -> None:
    if is_error_response(body):
        raise AmazonErrorResponse(body["errors"])
    if not isinstance(body, Mapping):
        raise ValueError(f"expected a JSON object response, got {type(body).__name__}")


def _unwrap(body: Any) -> Any:
    """The ``payload`` of a v0 response body, or the object itself if already unwrapped."""
    if isinstance(body, Mapping) and "payload" in body:
        _check_errors(body)
        return body["payload"]
    return body


def orders_from_response(body: Any) -> list[Mapping[str, Any]]:
    """The order records of any Orders response: v0 getOrders/getOrder, v2026 search/getOrder.

    Raises AmazonErrorResponse for an error body and ValueError for an unknown shape.
    """
    _check_errors(body)
    if "orders" in body:
        return list(body["orders"])
    if "order" in body:
        return [body["order"]]
    payload = body.get("payload")
    if isinstance(payload, Mapping):
        if "Orders" in payload:
            return list(payload["Orders"])
        if "OrderStatus" in payload:
            return [payload]
        if "AmazonOrderId" in payload:
            raise ValueError(
                "an order sub-resource (items, buyer info or address), not an order: "
                "attach it with combine_v0"
            )
    raise ValueError("not an Amazon Orders response: no orders, order or payload.Orders")


def combine_v0(
    order: Mapping[str, Any],
    items: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    buyer_info: Mapping[str, Any] | None = None,
    address: Mapping[str, Any] | None = None,
    items_buyer_info: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """One v0 order record with its sub-resources attached, ready for :func:`normalize_orders`.

    ``items`` is a getOrderItems response or payload, or a list of them (one per page);
    ``buyer_info`` a getOrderBuyerInfo, ``address`` a getOrderAddress and ``items_buyer_info``
    a getOrderItemsBuyerInfo response or payload (or pages). Each must name the same
    AmazonOrderId as the order. The result is a new shallow dict; inputs are not modified.
    """
    order = _unwrap(order)
    order_id = order.get("AmazonOrderId")
    combined = dict(order)

    def same_order(part: Mapping[str, Any], what: str) -> Mapping[str, Any]:
        part = _unwrap(part)
        other = part.get("AmazonOrderId")
        if other is not None and other != order_id:
            raise ValueError(f"combine_v0: {what} is for order {other}, not {order_id}")
        return part

    def pages(parts: Any) -> list[Mapping[str, Any]]:
        return [parts] if isinstance(parts, Mapping) else list(parts)

    if items is not None:
        order_items: list[Any] = []
        for page in pages(items):
            order_items.extend(same_order(page, "getOrderItems")["OrderItems"])
        combined["OrderItems"] = order_items
    if items_buyer_info is not None and "OrderItems" in combined:
        extra: dict[str, Mapping[str, Any]] = {}
        for page in pages(items_buyer_info):
            for entry in same_order(page, "getOrderItemsBuyerInfo")["OrderItems"]:
                if entry.get("OrderItemId"):
                    extra[entry["OrderItemId"]] = entry
        merged = []
        for item in combined["OrderItems"]:
            info = extra.get(item.get("OrderItemId"))
            if info is not None:
                item = {**item, "BuyerInfo": {**item.get("BuyerInfo", {}), **info}}
            merged.append(item)
        combined["OrderItems"] = merged
    if buyer_info is not None:
        info = dict(same_order(buyer_info, "getOrderBuyerInfo"))
        info.pop("AmazonOrderId", None)
        combined["BuyerInfo"] = info
    if address is not None:
        combined["ShippingAddress"] = same_order(address, "getOrderAddress").get("ShippingAddress")
    return combined


def _record_id(record: Mapping[str, Any]) -> Any:
    return record.get("AmazonOrderId") or record.get("orderId")


def normalize_orders(records: Iterable[Mapping[str, Any]]) -> NormalizeResult:
    """Normalize Amazon order records (v0, combined v0, or v2026-01-01, mixed freely).

    Records that fail go to ``rejects`` as ``(order id or index, reason)``; duplicates of one
    order keep the latest ``lastUpdated``.
    """
    return collect_orders(records, _build_order, _record_id)


def _build_order(record: Mapping[str, Any]) -> OrderBundle:
    if "AmazonOrderId" in record:
        return _build_v0(record)
    if "orderId" in record:
        return _build_v2026(record)
    if any(k in record for k in ("payload", "orders", "order", "errors")):
        raise RecordError(
            "record is a whole response body; pass orders_from_response(body) instead"
        )
    raise RecordError("not an Amazon order: neither AmazonOrderId (v0) nor orderId (v2026)")


# --- Orders v0 -------------------------------------------------------------------------------

_V0_ADDRESS_FIELDS = ("AddressLine1", "AddressLine2", "AddressLine3")


def _v0_money(obj: Any, what: str) -> tuple[Decimal, str] | None:
    return money_of(obj, "Amount", "CurrencyCode", what)


def _build_v0(rec: Mapping[str, Any]) -> OrderBundle:
    order_id = required_text(rec.get("AmazonOrderId"), "AmazonOrderId")
    raw_status = rec.get("OrderStatus")
    status = AMAZON_V0_STATUS.get(raw_status)  # type: ignore[arg-type]
    if status is None:
        raise RecordError(f"order {order_id}: unknown OrderStatus {raw_status!r}")
    raw_channel = rec.get("FulfillmentChannel")
    fulfillment = AMAZON_V0_FULFILLMENT.get(raw_channel)  # type: ignore[arg-type]
    if fulfillment is None:
        raise RecordError(f"order {order_id}: unknown FulfillmentChannel {raw_channel!r}")
    purchased_at = parse_amazon_time(rec.get("PurchaseDate"), "PurchaseDate")
    last_updated_at = parse_amazon_time(rec.get("LastUpdateDate"), "LastUpdateDate")

    dropped: list[tuple[str, str]] = []
    total = _v0_money(rec.get("OrderTotal"), "OrderTotal")
    guard = CurrencyGuard(total[1] if total else None, order_id, dropped)

    lines: list[OrderLine] = []
    items_subtotal = tax_total = shipping_total = promotion_total = None
    cancel_reason = None
    for item in rec.get("OrderItems") or ():
        line = _v0_line(order_id, item, guard, status)
        lines.append(line)
        items_subtotal = add(items_subtotal, line.item_price)
        shipping_total = add(shipping_total, line.shipping_price)
        for tax in (line.item_tax, line.shipping_tax, line.gift_wrap_tax):
            tax_total = add(tax_total, tax)
        promotion_total = add(promotion_total, line.promotion_discount)
        cancel = item.get("BuyerRequestedCancel") or {}
        if parse_bool(cancel.get("IsBuyerRequestedCancel"), "IsBuyerRequestedCancel"):
            cancel_reason = text(cancel.get("BuyerCancelReason")) or cancel_reason
    for line in lines:
        line.currency = guard.currency

    address = rec.get("ShippingAddress") or {}
    country = text(address.get("CountryCode"))
    order = Order(
        channel=CHANNEL,
        marketplace_order_id=order_id,
        marketplace_id=text(rec.get("MarketplaceId")),
        purchased_at=purchased_at,
        last_updated_at=last_updated_at,
        shipped_at=None,
        delivered_at=None,
        status=status,
        channel_status=raw_status,  # type: ignore[arg-type]
        fulfillment_channel=fulfillment,
        currency=guard.currency,
        order_total=total[0] if total else None,
        items_subtotal=items_subtotal,
        tax_total=tax_total,
        shipping_total=shipping_total,
        promotion_total=promotion_total,
        marketplace_fee_total=None,
        is_business=parse_bool(rec.get("IsBusinessOrder"), "IsBusinessOrder"),
        country_code=country,
    )
    adjustments = []
    if status is OrderStatus.CANCELLED:
        adjustments.append(
            OrderAdjustment(
                channel=CHANNEL,
                marketplace_order_id=order_id,
                line_id=None,
                kind=AdjustmentKind.CANCELLATION,
                amount=order.order_total,
                currency=guard.currency,
                occurred_at=last_updated_at,
                reason=cancel_reason,
                status=raw_status,
            )
        )
    buyer = rec.get("BuyerInfo") or {}
    pii = None
    if buyer or address:
        lines_ = [text(address.get(k)) for k in _V0_ADDRESS_FIELDS]
        pii = BuyerPII(
            channel=CHANNEL,
            marketplace_order_id=order_id,
            buyer_name=text(buyer.get("BuyerName")),
            buyer_email=text(buyer.get("BuyerEmail")),
            buyer_phone=text(address.get("Phone")),
            ship_name=text(address.get("Name")),
            address_line1=lines_[0],
            address_line2=lines_[1],
            address_line3=lines_[2],
            city=text(address.get("City")),
            state_or_region=text(address.get("StateOrRegion")),
            postal_code=text(address.get("PostalCode")),
            country_code=country,
        )
    return OrderBundle(order, lines, adjustments, pii, dropped)


def _v0_line(
    order_id: str, item: Mapping[str, Any], guard: CurrencyGuard, order_status: OrderStatus
) -> OrderLine:
    line_id = required_text(item.get("OrderItemId"), f"order {order_id}: OrderItemId")
    key = f"{order_id}/{line_id}"
    saved_key, guard.key = guard.key, key
    try:
        item_price = guard.require(_v0_money(item.get("ItemPrice"), "ItemPrice"), "ItemPrice")

        def take(name: str, source: Mapping[str, Any] = item) -> Decimal | None:
            return guard.take(_v0_money(source.get(name), name), name)

        # Gift wrap sits on the item in getOrderItems' schema, and in the item's BuyerInfo in
        # Amazon's example and in getOrderItemsBuyerInfo; read both places.
        info = item.get("BuyerInfo") or {}
        gift_wrap = (
            take("GiftWrapPrice") if "GiftWrapPrice" in item else take("GiftWrapPrice", info)
        )
        gift_tax = take("GiftWrapTax") if "GiftWrapTax" in item else take("GiftWrapTax", info)
        promotion = add(take("PromotionDiscount"), take("ShippingDiscount"))
        item_tax = take("ItemTax")
        shipping = take("ShippingPrice")
        shipping_tax = take("ShippingTax")
    finally:
        guard.key = saved_key
    ordered = parse_int(item.get("QuantityOrdered"), f"{key}: QuantityOrdered")
    shipped = optional_int(item.get("QuantityShipped"), f"{key}: QuantityShipped")
    return OrderLine(
        channel=CHANNEL,
        marketplace_order_id=order_id,
        line_id=line_id,
        sku=text(item.get("SellerSKU")),
        asin_or_item_id=text(item.get("ASIN")),
        title=text(item.get("Title")),
        quantity_ordered=ordered,
        quantity_shipped=shipped,
        unit_price=unit_price_of(item_price, ordered),
        item_price=item_price,
        item_tax=item_tax,
        shipping_price=shipping,
        shipping_tax=shipping_tax,
        promotion_discount=promotion,
        gift_wrap_price=gift_wrap,
        gift_wrap_tax=gift_tax,
        currency=None,
        line_status=_line_status(order_status, ordered, shipped),
        channel_line_status=None,
    )


def _line_status(order_status: OrderStatus, ordered: int, shipped: int | None) -> OrderStatus:
    """Amazon reports status per order only; a line's follows its shipped quantity.

    This is ``rollup_status({SHIPPED: shipped, UNSHIPPED: ordered - shipped})`` written out (it
    runs once per line; tests/test_normalize_fastpath.py checks the two agree).
    """
    if (
        order_status is OrderStatus.CANCELLED
        or shipped is None
        or order_status is OrderStatus.PENDING
    ):
        return order_status
    if shipped > 0:
        return OrderStatus.SHIPPED if ordered <= shipped else OrderStatus.PARTIALLY_SHIPPED
    return OrderStatus.UNSHIPPED if ordered > shipped else OrderStatus.PENDING


# --- Orders v2026-01-01 ----------------------------------------------------------------------
#
# This is the hot path of core_orders (issue 4): each helper tries the well-formed shape first
# (plain dicts, strings, ints) and hands anything else to the general helpers of _common, which
# accept the same inputs and word the errors. Error texts are only formatted on that slow path.


def _v26_money(obj: Any, what: str, suffix: str = "") -> tuple[Decimal, str] | None:
    if obj is None:
        return None
    money = fast_money(obj, "amount", "currencyCode")
    if money is not None:
        return money
    return money_of(obj, "amount", "currencyCode", what + suffix)


def _is_text(value: Any) -> bool:
    """True for a str that ``required_text`` returns unchanged."""
    return value.__class__ is str and value != "" and value != '""' and not value.isspace()


def _breakdowns(proceeds: Mapping[str, Any], guard: CurrencyGuard, where: str) -> dict[str, Any]:
    """Proceeds breakdowns by type: ``{type: amount}``, plus ``TAX/<subtype>`` detail."""
    found: dict[str, Any] = {}
    for entry in proceeds.get("breakdowns") or ():
        kind = entry.get("type")
        if not _is_text(kind):
            kind = required_text(kind, f"{where}: breakdown type")
        amount = guard.take(_v26_money(entry.get("subtotal"), kind, " subtotal"), kind)
        found[kind] = add(found.get(kind), amount)
        details = entry.get("detailedBreakdowns")
        if not details:
            continue
        for detail in details:
            sub = detail.get("subtype")
            if not _is_text(sub):
                sub = required_text(sub, f"{where}: {kind} subtype")
            path = f"{kind}/{sub}"
            value = guard.take(_v26_money(detail.get("value"), path), path)
            found[path] = add(found.get(path), value)
    return found


def _positive(value: Decimal | None) -> Decimal | None:
    # Proceeds report DISCOUNT as a reduction of what the seller receives; the model stores
    # promotions as the positive amount taken off.
    return None if value is None else abs(value)


def _build_v2026(rec: Mapping[str, Any]) -> OrderBundle:
    order_id = rec.get("orderId")
    if not _is_text(order_id):
        order_id = required_text(order_id, "orderId")
    fulfillment = rec.get("fulfillment")
    if fulfillment.__class__ is not dict and not isinstance(fulfillment, Mapping):
        raise RecordError(
            f"order {order_id}: no fulfillment dataset (request includedData=FULFILLMENT)"
        )
    raw_status = fulfillment.get("fulfillmentStatus")
    status = AMAZON_V2026_STATUS.get(raw_status)  # type: ignore[arg-type]
    if status is None:
        raise RecordError(f"order {order_id}: unknown fulfillmentStatus {raw_status!r}")
    raw_by = fulfillment.get("fulfilledBy")
    fulfilled_by = AMAZON_V2026_FULFILLMENT.get(raw_by)  # type: ignore[arg-type]
    if fulfilled_by is None:
        raise RecordError(f"order {order_id}: unknown fulfilledBy {raw_by!r}")
    purchased_at = parse_iso(rec.get("createdTime"), "createdTime")
    last_updated_at = parse_iso(rec.get("lastUpdatedTime"), "lastUpdatedTime")

    dropped: list[tuple[str, str]] = []
    proceeds = rec.get("proceeds") or {}
    total = _v26_money(proceeds.get("grandTotal"), "grandTotal")
    guard = CurrencyGuard(total[1] if total else None, order_id, dropped)
    order_parts = _breakdowns(proceeds, guard, order_id)

    lines: list[OrderLine] = []
    adjustments: list[OrderAdjustment] = []
    sum_item = sum_tax = sum_ship = sum_promo = None
    for item in rec.get("orderItems") or ():
        line, cancel_reason = _v2026_line(order_id, item, guard, status)
        lines.append(line)
        sum_item = add(sum_item, line.item_price)
        sum_ship = add(sum_ship, line.shipping_price)
        sum_tax = add(add(add(sum_tax, line.item_tax), line.shipping_tax), line.gift_wrap_tax)
        sum_promo = add(sum_promo, line.promotion_discount)
        if cancel_reason is not None:
            adjustments.append(
                OrderAdjustment(
                    channel=CHANNEL,
                    marketplace_order_id=order_id,
                    line_id=line.line_id,
                    kind=AdjustmentKind.CANCELLATION,
                    amount=None,
                    currency=guard.currency,
                    # The API gives no cancellation time; the last update is the best bound.
                    occurred_at=last_updated_at,
                    reason=cancel_reason or None,
                )
            )
    currency = guard.currency
    for line in lines:
        line.currency = currency

    packages = rec.get("packages") or ()
    ship_times = [
        t for t in (parse_iso(p.get("shipTime"), "package shipTime") for p in packages) if t
    ]
    if (
        status is OrderStatus.SHIPPED
        and packages
        and all((p.get("packageStatus") or {}).get("status") == "DELIVERED" for p in packages)
    ):
        # Amazon's order status stops at SHIPPED; package tracking is what says delivered.
        status = OrderStatus.DELIVERED
        for line in lines:
            if line.line_status is OrderStatus.SHIPPED:
                line.line_status = OrderStatus.DELIVERED

    programs = rec.get("programs")
    address = (rec.get("recipient") or {}).get("deliveryAddress") or {}
    country = text(address.get("countryCode"))
    # Order-level breakdowns aggregate the items (and add order-only charges such as
    # DELIVERY_TIP); prefer them, and fall back to summing the items.
    order = Order(
        channel=CHANNEL,
        marketplace_order_id=order_id,
        marketplace_id=text((rec.get("salesChannel") or {}).get("marketplaceId")),
        purchased_at=purchased_at,
        last_updated_at=last_updated_at,
        shipped_at=min(ship_times) if ship_times else None,
        delivered_at=None,
        status=status,
        channel_status=raw_status,  # type: ignore[arg-type]
        fulfillment_channel=fulfilled_by,
        currency=currency,
        order_total=total[0] if total else None,
        items_subtotal=order_parts["ITEM"] if "ITEM" in order_parts else sum_item,
        tax_total=order_parts["TAX"] if "TAX" in order_parts else sum_tax,
        shipping_total=order_parts["SHIPPING"] if "SHIPPING" in order_parts else sum_ship,
        promotion_total=_positive(order_parts["DISCOUNT"])
        if "DISCOUNT" in order_parts
        else sum_promo,
        marketplace_fee_total=None,
        is_business=None if programs is None else "AMAZON_BUSINESS" in programs,
        country_code=country,
    )
    if status is OrderStatus.CANCELLED and not adjustments:
        adjustments.append(
            OrderAdjustment(
                channel=CHANNEL,
                marketplace_order_id=order_id,
                line_id=None,
                kind=AdjustmentKind.CANCELLATION,
                amount=order.order_total,
                currency=currency,
                occurred_at=last_updated_at,
                reason=None,
                status=raw_status,
            )
        )
    buyer = rec.get("buyer") or {}
    pii = None
    if buyer or address:
        pii = BuyerPII(
            channel=CHANNEL,
            marketplace_order_id=order_id,
            buyer_name=text(buyer.get("buyerName")),
            buyer_email=text(buyer.get("buyerEmail")),
            buyer_phone=text(address.get("phone")),
            ship_name=text(address.get("name")),
            address_line1=text(address.get("addressLine1")),
            address_line2=text(address.get("addressLine2")),
            address_line3=text(address.get("addressLine3")),
            city=text(address.get("city")),
            state_or_region=text(address.get("stateOrRegion")),
            postal_code=text(address.get("postalCode")),
            country_code=country,
        )
    return OrderBundle(order, lines, adjustments, pii, dropped)


def _v2026_line(
    order_id: str, item: Mapping[str, Any], guard: CurrencyGuard, order_status: OrderStatus
) -> tuple[OrderLine, str | None]:
    line_id = item.get("orderItemId")
    if not _is_text(line_id):
        line_id = required_text(line_id, f"order {order_id}: orderItemId")
    key = f"{order_id}/{line_id}"
    product = item.get("product") or {}
    saved_key, guard.key = guard.key, key
    try:
        unit = guard.require(
            _v26_money((product.get("price") or {}).get("unitPrice"), "unitPrice"), "unitPrice"
        )
        parts = _breakdowns(item.get("proceeds") or {}, guard, key)
    finally:
        guard.key = saved_key
    item_price = parts.get("ITEM")
    if "TAX/ITEM" in parts or "TAX/SHIPPING" in parts or "TAX/GIFT_WRAP" in parts:
        item_tax = parts.get("TAX/ITEM")
        shipping_tax = parts.get("TAX/SHIPPING")
        gift_tax = parts.get("TAX/GIFT_WRAP")
    else:
        item_tax, shipping_tax, gift_tax = parts.get("TAX"), None, None
    ordered = item.get("quantityOrdered")
    if ordered.__class__ is not int or ordered < 0:
        ordered = parse_int(ordered, f"{key}: quantityOrdered")
    item_fulfillment = item.get("fulfillment") or {}
    shipped = item_fulfillment.get("quantityFulfilled")
    if shipped is not None and (shipped.__class__ is not int or shipped < 0):
        shipped = optional_int(shipped, f"{key}: quantityFulfilled")
    execution = (item.get("cancellation") or {}).get("cancellationExecution")
    cancel_reason = None
    if execution is not None:
        cancel_reason = text(execution.get("cancelReason")) or ""
    line = OrderLine(
        channel=CHANNEL,
        marketplace_order_id=order_id,
        line_id=line_id,
        sku=text(product.get("sellerSku")),
        asin_or_item_id=text(product.get("asin")),
        title=text(product.get("title")),
        quantity_ordered=ordered,
        quantity_shipped=shipped,
        unit_price=unit if unit is not None else unit_price_of(item_price, ordered),
        item_price=item_price,
        item_tax=item_tax,
        shipping_price=parts.get("SHIPPING"),
        shipping_tax=shipping_tax,
        promotion_discount=_positive(parts.get("DISCOUNT")),
        gift_wrap_price=parts.get("GIFT_WRAP"),
        gift_wrap_tax=gift_tax,
        currency=None,
        line_status=_line_status(order_status, ordered, shipped),
        channel_line_status=None,
    )
    return line, cancel_reason


# --- FBA inventory ---------------------------------------------------------------------------


def inventory_from_response(body: Any) -> tuple[list[Mapping[str, Any]], str | None]:
    """``(inventorySummaries, marketplace id)`` from a getInventorySummaries response."""
    _check_errors(body)
    payload = body.get("payload")
    if not isinstance(payload, Mapping) or "inventorySummaries" not in payload:
        raise ValueError("not a getInventorySummaries response: no payload.inventorySummaries")
    granularity = payload.get("granularity") or {}
    marketplace = (
        granularity.get("granularityId")
        if granularity.get("granularityType") == "Marketplace"
        else None
    )
    return list(payload["inventorySummaries"]), marketplace


def normalize_inventory(
    records: Iterable[Mapping[str, Any]],
    marketplace_id: str | None = None,
    as_of: datetime | None = None,
) -> NormalizeResult:
    """FBA inventory summaries -> InventoryRecord rows (in ``.inventory``).

    ``as_of`` is used where a summary's ``lastUpdatedTime`` is empty (the sandbox sends ``""``);
    without it such rows carry ``as_of=None``. Without ``inventoryDetails`` (details=false)
    only ``total_quantity`` is known.
    """
    result = NormalizeResult()
    for index, rec in enumerate(records):
        try:
            result.inventory.append(_inventory_row(rec, marketplace_id, as_of))
        except RECORD_ERRORS as exc:
            sku = rec.get("sellerSku") if isinstance(rec, Mapping) else None
            result.rejects.append((sku if isinstance(sku, str) and sku else index, describe(exc)))
    return result


def _inventory_row(
    rec: Mapping[str, Any], marketplace_id: str | None, as_of: datetime | None
) -> InventoryRecord:
    sku = required_text(rec.get("sellerSku"), "sellerSku")
    details = rec.get("inventoryDetails")
    fulfillable = inbound = reserved = unfulfillable = None
    if details is not None:
        fulfillable = optional_int(
            details.get("fulfillableQuantity"), f"{sku}: fulfillableQuantity"
        )
        inbound_parts = [
            optional_int(details.get(k), f"{sku}: {k}")
            for k in (
                "inboundWorkingQuantity",
                "inboundShippedQuantity",
                "inboundReceivingQuantity",
            )
        ]
        known = [q for q in inbound_parts if q is not None]
        inbound = sum(known) if known else None
        reserved = optional_int(
            (details.get("reservedQuantity") or {}).get("totalReservedQuantity"),
            f"{sku}: totalReservedQuantity",
        )
        unfulfillable = optional_int(
            (details.get("unfulfillableQuantity") or {}).get("totalUnfulfillableQuantity"),
            f"{sku}: totalUnfulfillableQuantity",
        )
    updated = parse_iso(rec.get("lastUpdatedTime"), f"{sku}: lastUpdatedTime")
    return InventoryRecord(
        channel=CHANNEL,
        sku=sku,
        asin_or_item_id=text(rec.get("asin")),
        fnsku=text(rec.get("fnSku")),
        # The client adds the marketplace a summary was read in; the argument is for older rows.
        marketplace_id=text(rec.get("marketplaceId")) or marketplace_id,
        location=None,
        condition=text(rec.get("condition")),
        fulfillable=fulfillable,
        inbound=inbound,
        reserved=reserved,
        unfulfillable=unfulfillable,
        merchant_fulfilled=None,
        total_quantity=optional_int(rec.get("totalQuantity"), f"{sku}: totalQuantity"),
        as_of=updated if updated is not None else as_of,
    )


# --- Finances 2024-06-19 listTransactions -----------------------------------------------------


def transactions_from_response(body: Any) -> list[Mapping[str, Any]]:
    """The ``payload.transactions`` of a Finances 2024-06-19 listTransactions response."""
    _check_errors(body)
    payload = body.get("payload")
    if not isinstance(payload, Mapping) or "transactions" not in payload:
        raise ValueError("not a listTransactions response: no payload.transactions")
    return list(payload["transactions"])


def _synthetic_id(rec: Mapping[str, Any]) -> str:
    # Amazon documents transactionId, but its own sandbox example omits it. A content hash is
    # stable across re-fetches of the same transaction, so loads stay idempotent.
    canonical = json.dumps(rec, sort_keys=True, default=str, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _flatten(
    breakdowns: Any,
    prefix: str,
    currency: str,
    key: str,
    out: list[tuple[str, Decimal]],
    dropped: list[tuple[str, str]],
) -> None:
    for entry in breakdowns or ():
        name = required_text(entry.get("breakdownType"), f"{key}: breakdownType")
        path = f"{prefix}/{name}" if prefix else name
        children = entry.get("breakdowns")
        if children:
            _flatten(children, path, currency, key, out, dropped)
            continue
        money = money_of(entry.get("breakdownAmount"), "currencyAmount", "currencyCode", path)
        if money is None:
            continue
        if money[1] != currency:
            dropped.append(
                (f"{key}/{path}", f"{path} is in {money[1]} but the transaction is in {currency}")
            )
            continue
        out.append((path, money[0]))


def normalize_transactions(records: Iterable[Mapping[str, Any]]) -> NormalizeResult:
    """Finances 2024-06-19 transactions -> FinancialTransaction rows (in ``.transactions``).

    ``totalAmount`` is already signed by Amazon (credits positive). Breakdowns are flattened to
    their leaves; item-level breakdowns repeat the transaction's and are not added again.
    """
    result = NormalizeResult()
    for index, rec in enumerate(records):
        try:
            result.transactions.append(_transaction(rec, result.dropped_components))
        except RECORD_ERRORS as exc:
            tid = rec.get("transactionId") if isinstance(rec, Mapping) else None
            result.rejects.append((tid if isinstance(tid, str) and tid else index, describe(exc)))
    return result


def _transaction(rec: Mapping[str, Any], dropped: list[tuple[str, str]]) -> FinancialTransaction:
    tx_id = text(rec.get("transactionId")) or _synthetic_id(rec)
    money = money_of(rec.get("totalAmount"), "currencyAmount", "currencyCode", "totalAmount")
    if money is None:
        raise RecordError(f"transaction {tx_id}: no totalAmount")
    amount, currency = money
    tx_type = required_text(rec.get("transactionType"), f"transaction {tx_id}: transactionType")
    order_id = None
    for ident in rec.get("relatedIdentifiers") or ():
        if ident.get("relatedIdentifierName") == "ORDER_ID":
            order_id = text(ident.get("relatedIdentifierValue"))
    breakdown: list[tuple[str, Decimal]] = []
    _flatten(rec.get("breakdowns"), "", currency, tx_id, breakdown, dropped)
    marketplace = (rec.get("sellingPartnerMetadata") or {}).get("marketplaceId") or (
        rec.get("marketplaceDetails") or {}
    ).get("marketplaceId")
    return FinancialTransaction(
        channel=CHANNEL,
        transaction_id=tx_id,
        type=tx_type,
        status=text(rec.get("transactionStatus")),
        posted_at=parse_iso(rec.get("postedDate"), f"transaction {tx_id}: postedDate"),
        marketplace_id=text(marketplace),
        order_id=order_id,
        amount=amount,
        currency=check_currency(currency),
        description=text(rec.get("description")),
        breakdown=tuple(breakdown),
    )


# --- Product Pricing v0 (getPricing, getCompetitivePricing, getItemOffers, getListingOffers) ---


def normalize_pricing(body: Any, observed_at: datetime | None = None) -> NormalizeResult:
    """Price points from a Product Pricing v0 response -> PriceObservation rows (``.prices``).

    getPricing gives the seller's own offers (``kind='offer'``); getCompetitivePricing gives
    ``'competitive'`` prices; getItemOffers / getListingOffers give ``'lowest'`` and
    ``'buybox'`` summary prices and the individual ``'item_offer'`` rows. Amounts are JSON
    numbers (integers in some sandbox answers): parse the body with ``money.loads``. A product
    entry whose status is not Success, or a price in an unknown currency, is rejected by ASIN or
    SKU; the other entries still produce rows.
    """
    _check_errors(body)
    payload = body.get("payload")
    result = NormalizeResult()
    if isinstance(payload, list):
        entries = payload
    elif isinstance(payload, Mapping):
        entries = [payload]
    else:
        raise ValueError("not a Product Pricing response: no payload")
    for index, entry in enumerate(entries):
        key = entry.get("ASIN") or entry.get("SellerSKU") or entry.get("SKU") or index
        try:
            status = entry.get("status")
            if status != "Success":
                raise RecordError(f"pricing status {status!r}")
            if "Product" in entry:
                result.prices.extend(_product_prices(entry, observed_at))
            else:
                result.prices.extend(_offers_prices(entry, observed_at))
        except RECORD_ERRORS as exc:
            result.rejects.append((key, describe(exc)))
    return result


def _price_row(
    source: Mapping[str, Any],
    *,
    kind: str,
    marketplace_id: str | None,
    asin: str | None,
    sku: str | None,
    observed_at: datetime | None,
    listing_key: str = "ListingPrice",
    **extra: Any,
) -> PriceObservation:
    listing = _v0_money(source.get(listing_key), listing_key)
    shipping = _v0_money(source.get("Shipping"), "Shipping")
    landed = _v0_money(source.get("LandedPrice"), "LandedPrice")
    currencies = {m[1] for m in (listing, shipping, landed) if m is not None}
    if len(currencies) != 1:
        raise RecordError(
            f"{kind} price for {asin or sku}: expected one currency, got {sorted(currencies)}"
        )
    fields: dict[str, Any] = dict(
        channel=CHANNEL,
        marketplace_id=marketplace_id,
        asin_or_item_id=asin,
        sku=sku,
        kind=kind,
        condition=text(source.get("condition")),
        fulfillment_channel=None,
        offer_type=text(source.get("offerType")),
        quantity_tier=optional_int(source.get("quantityTier"), "quantityTier"),
        listing_price=listing[0] if listing else None,
        shipping_price=shipping[0] if shipping else None,
        landed_price=landed[0] if landed else None,
        currency=currencies.pop(),
        seller_id=None,
        is_mine=None,
        observed_at=observed_at,
    )
    fields.update(extra)
    return PriceObservation(**fields)


def _product_prices(entry: Mapping[str, Any], observed_at: datetime | None) -> list[Any]:
    product = entry["Product"]
    identifiers = product.get("Identifiers") or {}
    market_asin = identifiers.get("MarketplaceASIN") or {}
    sku_ident = identifiers.get("SKUIdentifier") or {}
    # `marketplaceId` beside the entry: the marketplace the client asked (Amazon's model has none).
    marketplace = (
        text(market_asin.get("MarketplaceId")) or text(sku_ident.get("MarketplaceId")) or text(entry.get("marketplaceId"))
    )
    asin = text(market_asin.get("ASIN")) or text(entry.get("ASIN"))
    sku = text(sku_ident.get("SellerSKU")) or text(entry.get("SellerSKU"))
    rows = []
    for offer in product.get("Offers") or ():
        buying = offer.get("BuyingPrice") or {}
        rows.append(
            _price_row(
                buying,
                kind="offer",
                marketplace_id=marketplace,
                asin=asin,
                sku=text(offer.get("SellerSKU")) or sku,
                observed_at=observed_at,
                condition=text(offer.get("ItemCondition")),
                fulfillment_channel=text(offer.get("FulfillmentChannel")),
                is_mine=True,
            )
        )
    for price in (product.get("CompetitivePricing") or {}).get("CompetitivePrices") or ():
        rows.append(
            _price_row(
                price.get("Price") or {},
                kind="competitive",
                marketplace_id=marketplace,
                asin=asin,
                sku=sku,
                observed_at=observed_at,
                condition=text(price.get("condition")),
                offer_type=text(price.get("offerType")),
                quantity_tier=optional_int(price.get("quantityTier"), "quantityTier"),
                is_mine=parse_bool(price.get("belongsToRequester"), "belongsToRequester"),
            )
        )
    return rows


def _offers_marketplace(entry: Mapping[str, Any]) -> str | None:
    """The top-level marketplace of a getItemOffers / getListingOffers payload.

    The model of February 2026 names it `marketplaceId`; earlier answers (and the published
    examples) spell it `MarketplaceID`. Either is read; both present and different is refused.
    """
    current, legacy = text(entry.get("marketplaceId")), text(entry.get("MarketplaceID"))
    if current and legacy and current != legacy:
        raise RecordError(
            f"offers payload names two marketplaces: marketplaceId {current!r} and "
            f"MarketplaceID {legacy!r}"
        )
    return current or legacy


def _offers_prices(entry: Mapping[str, Any], observed_at: datetime | None) -> list[Any]:
    identifier = entry.get("Identifier") or {}
    top_level = _offers_marketplace(entry)
    marketplace = text(identifier.get("MarketplaceId")) or top_level
    asin = text(entry.get("ASIN")) or text(identifier.get("ASIN"))
    sku = text(entry.get("SKU")) or text(identifier.get("SellerSKU"))
    common = dict(marketplace_id=marketplace, asin=asin, sku=sku, observed_at=observed_at)
    summary = entry.get("Summary") or {}
    rows = []
    for price in summary.get("LowestPrices") or ():
        rows.append(
            _price_row(
                price,
                kind="lowest",
                fulfillment_channel=text(price.get("fulfillmentChannel")),
                **common,
            )
        )
    for price in summary.get("BuyBoxPrices") or ():
        rows.append(
            _price_row(price, kind="buybox", seller_id=text(price.get("sellerId")), **common)
        )
    for offer in entry.get("Offers") or ():
        fba = parse_bool(offer.get("IsFulfilledByAmazon"), "IsFulfilledByAmazon")
        rows.append(
            _price_row(
                offer,
                kind="item_offer",
                condition=text(offer.get("SubCondition")),
                fulfillment_channel=None if fba is None else ("Amazon" if fba else "Merchant"),
                seller_id=text(offer.get("SellerId")),
                is_mine=parse_bool(offer.get("MyOffer"), "MyOffer"),
                **common,
            )
        )
    return rows
