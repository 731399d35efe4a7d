"""eBay Sell APIs (Fulfillment getOrders, Finances getTransactions, Inventory getInventoryItems)
-> the cross-channel model.

Money is ``{value, currency}`` with string values of varying decimals; ``value`` is in the
seller's currency (``convertedFrom*`` holds the buyer's). Decisions and quirks:

* ``pricingSummary.priceDiscount`` / ``deliveryDiscount`` are negative, line-level
  ``appliedPromotions[].discountAmount`` and ``deliveryCost.discountAmount`` positive; the
  model stores every promotion as the positive amount taken off.
* ``lineItemCost`` is unit price x quantity (eBay's definition), so ``unit_price`` divides it.
* ``shipping_price`` is the line's shipping for all its units. eBay's Fulfillment API
  reference calls ``deliveryCost.shippingCost`` "the total cost of shipping all units of the
  line item", but real orders send it per unit (issue 13: an EBAY_DE line of 4 with
  ``shippingCost`` 4.95 has ``total`` 121.07 = ``discountedLineItemCost`` 116.12 + 4 x 4.95 -
  ``deliveryCost.discountAmount`` 14.85, and the order's ``pricingSummary.deliveryCost`` is
  19.8). The line's own ``total`` (items after promotions + shipping - shipping discount, with
  or without the collected tax) says which reading a line uses; a line whose ``total`` does
  not decide it takes the per-unit reading seen on real accounts. The shipping discount
  (``deliveryCost.discountAmount``) is always for the whole line. The blocking order check
  (``quality.order_reconciliation_mismatches``) then holds the lines to ``pricingSummary``.
* Charges beyond items, shipping and tax are stored, so the order still adds up: the order's
  ``pricingSummary.fee`` (special fees such as a tire recycling fee) plus ``adjustment``
  (signed, as eBay gives it) are ``other_charges_total``; a line's ``deliveryCost``
  ``handlingCost``, ``importCharges`` and ``shippingIntermediationFee`` are its
  ``other_charges``.
* Order status combines three eBay fields: a completed cancellation wins, then refunds
  (``orderPaymentStatus``), then unpaid, then ``orderFulfillmentStatus``; ``channel_status``
  keeps all three as ``fulfillment|payment|cancelState``.
* Refunds appear per line (``lineItems[].refunds``) and per order
  (``paymentSummary.refunds``); an order-level refund whose ``refundId`` already appeared on a
  line is not emitted twice.
* In Finances, the direction of money comes from ``bookingEntry`` (CREDIT in, DEBIT out), not
  from the sign of ``amount.value``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    money_of,
    optional_int,
    parse_int,
    required_text,
    text,
    unit_price_of,
)
from .model import (
    BuyerPII,
    FinancialTransaction,
    InventoryRecord,
    NormalizeResult,
    Order,
    OrderAdjustment,
    OrderLine,
)
from .timeparse import parse_iso
from .vocab import (
    EBAY_CANCEL_STATES,
    EBAY_FULFILLMENT_STATUS,
    EBAY_PAYMENT_STATUS,
    AdjustmentKind,
    FulfillmentChannel,
    OrderStatus,
)

__all__ = [
    "EbayErrorResponse",
    "inventory_from_response",
    "is_error_response",
    "normalize_inventory",
    "normalize_orders",
    "normalize_transactions",
    "orders_from_response",
    "transactions_from_response",
]

CHANNEL = "ebay"
_BOOKING_SIGN = {"CREDIT": 1, "DEBIT": -1}


class EbayErrorResponse(ChannelErrorResponse):
    """An eBay error body (``{"errors": [{errorId, message, ...}]}``) where data was expected."""

    channel_label = "eBay"
    code_key = "errorId"


def is_error_response(body: Any) -> bool:
    return (
        isinstance(body, Mapping)
        and isinstance(body.get("errors"), list)
        and bool(body["errors"])
        and not any(k in body for k in ("orders", "orderId", "transactions", "inventoryItems"))
    )


def _check_errors(body: Any) -> None:
    if is_error_response(body):
        raise EbayErrorResponse(body["errors"])
    if not isinstance(body, Mapping):
        raise ValueError(f"expected a JSON object response, got {type(body).__name__}")


def orders_from_response(body: Any) -> list[Mapping[str, Any]]:
    """Orders of a getOrders page (``orders[]``) or a getOrder response (the order itself)."""
    _check_errors(body)
    if "orders" in body:
        return list(body["orders"])
    if "orderId" in body:
        return [body]
    raise ValueError("not an eBay getOrders/getOrder response: no orders or orderId")


def _money(obj: Any, what: str) -> tuple[Decimal, str] | None:
    return money_of(obj, "value", "currency", what)


def _record_id(record: Mapping[str, Any]) -> Any:
    return record.get("orderId")


def normalize_orders(records: Iterable[Mapping[str, Any]]) -> NormalizeResult:
    """Normalize eBay Fulfillment API orders (``orders_from_response`` items)."""
    return collect_orders(records, _build_order, _record_id)


def _is_ebay_fulfilled(program: Any) -> bool:
    if not isinstance(program, Mapping):
        return False
    return (program.get("fulfillmentProgram") or {}).get("fulfilledBy") == "EBAY"


def _build_order(rec: Mapping[str, Any]) -> OrderBundle:
    order_id = required_text(rec.get("orderId"), "orderId")
    raw_fulfillment = rec.get("orderFulfillmentStatus")
    fulfillment_status = EBAY_FULFILLMENT_STATUS.get(raw_fulfillment)  # type: ignore[arg-type]
    if fulfillment_status is None:
        raise RecordError(f"order {order_id}: unknown orderFulfillmentStatus {raw_fulfillment!r}")
    raw_payment = rec.get("orderPaymentStatus")
    if raw_payment not in EBAY_PAYMENT_STATUS:
        raise RecordError(f"order {order_id}: unknown orderPaymentStatus {raw_payment!r}")
    cancel = rec.get("cancelStatus") or {}
    cancel_state = cancel.get("cancelState", "NONE_REQUESTED")
    if cancel_state not in EBAY_CANCEL_STATES:
        raise RecordError(f"order {order_id}: unknown cancelState {cancel_state!r}")
    if cancel_state == "CANCELED":
        status = OrderStatus.CANCELLED
    else:
        status = EBAY_PAYMENT_STATUS[raw_payment] or fulfillment_status  # type: ignore[index]
    purchased_at = parse_iso(rec.get("creationDate"), "creationDate")
    last_updated_at = parse_iso(rec.get("lastModifiedDate"), "lastModifiedDate")

    dropped: list[tuple[str, str]] = []
    pricing = rec.get("pricingSummary") or {}
    total = _money(pricing.get("total"), "pricingSummary.total")
    guard = CurrencyGuard(total[1] if total else None, order_id, dropped)

    def summary(name: str) -> Decimal | None:
        return guard.take(_money(pricing.get(name), f"pricingSummary.{name}"), name)

    discounts = add(summary("priceDiscount"), summary("deliveryDiscount"))

    lines: list[OrderLine] = []
    adjustments: list[OrderAdjustment] = []
    seen_refunds: set[str] = set()
    marketplace_id = None
    ebay_fulfilled = _is_ebay_fulfilled(rec.get("program"))
    for item in rec.get("lineItems") or ():
        line, refunds = _line(order_id, item, guard, status)
        lines.append(line)
        marketplace_id = marketplace_id or text(item.get("listingMarketplaceId"))
        ebay_fulfilled = ebay_fulfilled or _is_ebay_fulfilled(item.get("program"))
        for refund in refunds:
            adjustments.append(refund)
            if refund.adjustment_id:
                seen_refunds.add(refund.adjustment_id)
    for line in lines:
        line.currency = guard.currency

    for raw_refund in (rec.get("paymentSummary") or {}).get("refunds") or ():
        refund = _refund(order_id, None, raw_refund, guard)
        if refund.adjustment_id and refund.adjustment_id in seen_refunds:
            continue
        adjustments.append(refund)

    order_total = total[0] if total else None
    if cancel_state == "CANCELED":
        requests = cancel.get("cancelRequests") or ()
        reason = next(
            (text(r.get("cancelReason")) for r in requests if r.get("cancelReason")), None
        )
        adjustments.append(
            OrderAdjustment(
                channel=CHANNEL,
                marketplace_order_id=order_id,
                line_id=None,
                kind=AdjustmentKind.CANCELLATION,
                amount=order_total,
                currency=guard.currency,
                occurred_at=parse_iso(cancel.get("cancelledDate"), "cancelledDate")
                or last_updated_at,
                reason=reason,
                status=cancel_state,
            )
        )

    ship_to = {}
    for instruction in rec.get("fulfillmentStartInstructions") or ():
        ship_to = (instruction.get("shippingStep") or {}).get("shipTo") or {}
        if ship_to:
            break
    contact = ship_to.get("contactAddress") or {}
    registration = (rec.get("buyer") or {}).get("buyerRegistrationAddress") or {}
    country = text(contact.get("countryCode"))
    fee = _money(rec.get("totalMarketplaceFee"), "totalMarketplaceFee")
    order = Order(
        channel=CHANNEL,
        marketplace_order_id=order_id,
        marketplace_id=marketplace_id,
        purchased_at=purchased_at,
        last_updated_at=last_updated_at,
        shipped_at=None,
        delivered_at=None,
        status=status,
        channel_status=f"{raw_fulfillment}|{raw_payment}|{cancel_state}",
        fulfillment_channel=FulfillmentChannel.MARKETPLACE
        if ebay_fulfilled
        else FulfillmentChannel.MERCHANT,
        currency=guard.currency,
        order_total=order_total,
        items_subtotal=summary("priceSubtotal"),
        tax_total=summary("tax"),
        shipping_total=summary("deliveryCost"),
        promotion_total=None if discounts is None else abs(discounts),
        marketplace_fee_total=guard.take(fee, "totalMarketplaceFee"),
        is_business=None,
        country_code=country,
        other_charges_total=add(summary("fee"), summary("adjustment")),
    )
    pii = None
    if ship_to or registration:
        phone = (ship_to.get("primaryPhone") or {}).get("phoneNumber") or (
            registration.get("primaryPhone") or {}
        ).get("phoneNumber")
        pii = BuyerPII(
            channel=CHANNEL,
            marketplace_order_id=order_id,
            buyer_name=text(registration.get("fullName")),
            buyer_email=text(registration.get("email")) or text(ship_to.get("email")),
            buyer_phone=text(phone),
            ship_name=text(ship_to.get("fullName")),
            address_line1=text(contact.get("addressLine1")),
            address_line2=text(contact.get("addressLine2")),
            address_line3=None,
            city=text(contact.get("city")),
            state_or_region=text(contact.get("stateOrProvince")),
            postal_code=text(contact.get("postalCode")),
            country_code=country,
        )
    return OrderBundle(order, lines, adjustments, pii, dropped)


def _refund(
    order_id: str, line_id: str | None, raw: Mapping[str, Any], guard: CurrencyGuard
) -> OrderAdjustment:
    amount = guard.take(_money(raw.get("amount"), "refund amount"), "refund")
    return OrderAdjustment(
        channel=CHANNEL,
        marketplace_order_id=order_id,
        line_id=line_id,
        kind=AdjustmentKind.REFUND,
        amount=None if amount is None else abs(amount),
        currency=guard.currency,
        occurred_at=parse_iso(raw.get("refundDate"), "refundDate"),
        reason=None,
        adjustment_id=text(raw.get("refundId")) or text(raw.get("refundReferenceId")),
        status=text(raw.get("refundStatus")),
    )


def _line(
    order_id: str, item: Mapping[str, Any], guard: CurrencyGuard, order_status: OrderStatus
) -> tuple[OrderLine, list[OrderAdjustment]]:
    line_id = required_text(item.get("lineItemId"), f"order {order_id}: lineItemId")
    key = f"{order_id}/{line_id}"
    quantity = parse_int(item.get("quantity"), f"{key}: quantity")
    raw_status = item.get("lineItemFulfillmentStatus")
    line_status = EBAY_FULFILLMENT_STATUS.get(raw_status)  # type: ignore[arg-type]
    if line_status is None:
        raise RecordError(f"{key}: unknown lineItemFulfillmentStatus {raw_status!r}")
    shipped = {"FULFILLED": quantity, "NOT_STARTED": 0}.get(raw_status)  # type: ignore[arg-type]
    if order_status is OrderStatus.CANCELLED:
        line_status = OrderStatus.CANCELLED

    saved_key, guard.key = guard.key, key
    try:
        item_price = guard.require(_money(item.get("lineItemCost"), "lineItemCost"), "lineItemCost")
        delivery = item.get("deliveryCost") or {}
        shipping = guard.take(_money(delivery.get("shippingCost"), "shippingCost"), "shippingCost")
        shipping_discount = guard.take(
            _money(delivery.get("discountAmount"), "delivery discountAmount"), "delivery discount"
        )
        if shipping_discount is not None:
            shipping_discount = abs(shipping_discount)
        other_charges = None
        for name in ("handlingCost", "importCharges", "shippingIntermediationFee"):
            other_charges = add(other_charges, guard.take(_money(delivery.get(name), name), name))
        item_discount = None
        for applied in item.get("appliedPromotions") or ():
            discount = guard.take(
                _money(applied.get("discountAmount"), "discountAmount"), "appliedPromotion"
            )
            item_discount = add(item_discount, None if discount is None else abs(discount))
        tax = None
        for entry in list(item.get("taxes") or ()) + list(
            item.get("ebayCollectAndRemitTaxes") or ()
        ):
            tax = add(tax, guard.take(_money(entry.get("amount"), "tax amount"), "tax"))
        discounted = _same_currency(
            _money(item.get("discountedLineItemCost"), "discountedLineItemCost"), guard
        )
        line_total = _same_currency(_money(item.get("total"), "line total"), guard)
        refunds = [_refund(order_id, line_id, r, guard) for r in item.get("refunds") or ()]
    finally:
        guard.key = saved_key
    if discounted is None and item_price is not None:
        discounted = item_price - (item_discount or 0)
    shipping = _line_shipping(
        quantity, shipping, line_total, discounted, shipping_discount, tax, other_charges
    )
    line = OrderLine(
        channel=CHANNEL,
        marketplace_order_id=order_id,
        line_id=line_id,
        sku=text(item.get("sku")),
        asin_or_item_id=text(item.get("legacyItemId")),
        title=text(item.get("title")),
        quantity_ordered=quantity,
        quantity_shipped=shipped,
        unit_price=unit_price_of(item_price, quantity),
        item_price=item_price,
        item_tax=tax,
        shipping_price=shipping,
        shipping_tax=None,
        promotion_discount=add(shipping_discount, item_discount),
        gift_wrap_price=None,
        gift_wrap_tax=None,
        currency=None,
        line_status=line_status,
        channel_line_status=raw_status,
        other_charges=other_charges,
    )
    return line, refunds


def _same_currency(money: tuple[Decimal, str] | None, guard: CurrencyGuard) -> Decimal | None:
    """An amount read only as evidence (never stored): used when in the order's currency."""
    if money is None or (guard.currency is not None and money[1] != guard.currency):
        return None
    return money[0]


def _line_shipping(
    quantity: int,
    shipping: Decimal | None,
    line_total: Decimal | None,
    discounted: Decimal | None,
    shipping_discount: Decimal | None,
    tax: Decimal | None,
    other_charges: Decimal | None = None,
) -> Decimal | None:
    """The line's shipping for all its units from ``deliveryCost.shippingCost``.

    Per unit (x quantity) unless the line's ``total`` only adds up with the value as the
    whole line's shipping, as eBay's reference describes it; see the module docstring.
    """
    if shipping is None or quantity <= 1 or not shipping:
        return shipping
    per_unit = shipping * quantity
    if line_total is not None and discounted is not None:
        before_shipping = discounted - (shipping_discount or 0) + (other_charges or 0)
        for candidate in (per_unit, shipping):
            with_shipping = before_shipping + candidate
            if line_total in (with_shipping, with_shipping + (tax or 0)):
                return candidate
    return per_unit


# --- Finances getTransactions ----------------------------------------------------------------


def transactions_from_response(body: Any) -> list[Mapping[str, Any]]:
    _check_errors(body)
    if "transactions" not in body:
        raise ValueError("not an eBay getTransactions response: no transactions")
    return list(body["transactions"] or ())


def normalize_transactions(records: Iterable[Mapping[str, Any]]) -> NormalizeResult:
    """eBay Finances transactions -> FinancialTransaction rows.

    ``amount`` = ``bookingEntry`` sign x ``|amount.value|``. The breakdown lists each marketplace
    fee as ``fee:<feeType>``, signed for the seller against the transaction's direction: a sale's
    (CREDIT) fees are taken (negative), a refund's (DEBIT) fees are given back (positive). A fee
    row (NON_SALE_CHARGE) names its order only in ``references[]`` (``ORDER_ID``): ``order_id``
    is ``orderId``, else that reference.
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
    tx_id = required_text(rec.get("transactionId"), "transactionId")
    booking = rec.get("bookingEntry")
    sign = _BOOKING_SIGN.get(booking)  # type: ignore[arg-type]
    if sign is None:
        raise RecordError(f"transaction {tx_id}: unknown bookingEntry {booking!r}")
    money = _money(rec.get("amount"), f"transaction {tx_id}: amount")
    if money is None:
        raise RecordError(f"transaction {tx_id}: no amount")
    amount, currency = money
    guard = CurrencyGuard(currency, tx_id, dropped)
    breakdown: list[tuple[str, Decimal]] = []
    for line in rec.get("orderLineItems") or ():
        for fee in line.get("marketplaceFees") or ():
            fee_type = required_text(fee.get("feeType"), f"transaction {tx_id}: feeType")
            value = guard.take(_money(fee.get("amount"), fee_type), f"fee:{fee_type}")
            if value is not None:
                breakdown.append((f"fee:{fee_type}", -sign * abs(value)))
    return FinancialTransaction(
        channel=CHANNEL,
        transaction_id=tx_id,
        type=required_text(rec.get("transactionType"), f"transaction {tx_id}: transactionType"),
        status=text(rec.get("transactionStatus")),
        posted_at=parse_iso(rec.get("transactionDate"), f"transaction {tx_id}: transactionDate"),
        marketplace_id=None,
        order_id=text(rec.get("orderId")) or _referenced_order(rec),
        amount=sign * abs(amount),
        currency=currency,
        description=text(rec.get("transactionMemo")) or text(rec.get("feeType")),
        breakdown=tuple(breakdown),
    )


def _referenced_order(rec: Mapping[str, Any]) -> str | None:
    for ref in rec.get("references") or ():
        if isinstance(ref, Mapping) and ref.get("referenceType") == "ORDER_ID":
            found = text(ref.get("referenceId"))
            if found:
                return found
    return None


# --- Inventory getInventoryItems -------------------------------------------------------------


def inventory_from_response(body: Any) -> list[Mapping[str, Any]]:
    """``inventoryItems`` of a getInventoryItems page, or a single getInventoryItem body."""
    _check_errors(body)
    if "inventoryItems" in body:
        return list(body["inventoryItems"] or ())
    if "sku" in body:
        return [body]
    raise ValueError("not an eBay inventory response: no inventoryItems or sku")


def normalize_inventory(
    records: Iterable[Mapping[str, Any]],
    as_of: datetime | None = None,
    marketplace_id: str | None = None,
) -> NormalizeResult:
    """eBay inventory items -> InventoryRecord rows, one per SKU.

    eBay gives no timestamp per item: ``as_of`` should be the time the page was fetched.
    ``merchant_fulfilled`` is ``shipToLocationAvailability.quantity`` (stock the seller ships).
    """
    result = NormalizeResult()
    for index, rec in enumerate(records):
        try:
            sku = required_text(rec.get("sku"), "sku")
            ship_to = (rec.get("availability") or {}).get("shipToLocationAvailability") or {}
            result.inventory.append(
                InventoryRecord(
                    channel=CHANNEL,
                    sku=sku,
                    # Inventory items are not listings: the listing (item) id lives in offers.
                    asin_or_item_id=None,
                    fnsku=None,
                    marketplace_id=marketplace_id,
                    location=None,
                    condition=text(rec.get("condition")),
                    fulfillable=None,
                    inbound=None,
                    reserved=None,
                    unfulfillable=None,
                    merchant_fulfilled=optional_int(ship_to.get("quantity"), f"{sku}: quantity"),
                    total_quantity=optional_int(ship_to.get("quantity"), f"{sku}: quantity"),
                    as_of=as_of,
                )
            )
        except RECORD_ERRORS as exc:
            sku = rec.get("sku") if isinstance(rec, Mapping) else None
            result.rejects.append((sku if isinstance(sku, str) and sku else index, describe(exc)))
    return result
