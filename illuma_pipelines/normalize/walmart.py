"""Walmart Marketplace payloads -> the cross-channel model.

Shapes: ``/v3/orders`` wraps lists in single-key objects (``list.elements.order[]``,
``orderLines.orderLine[]``, ``charges.charge[]``, ``orderLineStatuses.orderLineStatus[]``);
money is ``{currency, amount}`` with JSON-number amounts (parse bodies with ``money.loads``);
times are epoch milliseconds; quantities are strings; ``tax`` can be null; a cancelled line's
charges carry amount 0. The reconciliation report (``reconFileJson``) is a list of flat rows
keyed by column title, with ``MM/DD/YYYY`` dates, string amounts and blank cells sometimes sent
as the literal ``""``.

Decisions:

* A line's PRODUCT charge is the line's price for all its units; ``unit_price`` divides it by
  ``orderLineQuantity``.
* An order without ``shipNode`` is merchant-fulfilled: WFS orders carry
  ``shipNode.type = WFSFulfilled``, and older payloads (such as the published sample) predate
  the field.
* Walmart's API is per market (the ``WM_MARKET`` header), and an order names none: its
  ``marketplace_id`` is the caller's when given, else the market of the order's currency
  (USD ``WALMART_US``, CAD ``WALMART_CA``, MXN ``WALMART_MX``, CLP ``WALMART_CL``).
* An inventory record names its market only in the ``market`` the client adds (US, CA...): its
  rows' ``marketplace_id`` is ``WALMART_<market>``, as orders', else None.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ._common import (
    RECORD_ERRORS,
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
from .money import check_currency, parse_amount
from .timeparse import parse_epoch_millis, parse_iso, parse_mdy
from .vocab import (
    WALMART_LINE_STATUS,
    WALMART_SHIP_NODE_TYPE,
    AdjustmentKind,
    FulfillmentChannel,
    OrderStatus,
    rollup_status,
)

__all__ = [
    "WalmartErrorResponse",
    "inventory_from_response",
    "is_error_response",
    "normalize_inventory",
    "normalize_orders",
    "normalize_transactions",
    "orders_from_response",
]

CHANNEL = "walmart"

# Walmart sends ISO 3166 alpha-3 countries ("USA"); the model uses alpha-2. Only the countries
# Walmart Marketplace ships to are listed; anything else keeps its raw value if already
# alpha-2 and is otherwise dropped from the analytics field (it stays nowhere else either).
_ALPHA3_TO_ALPHA2 = {"USA": "US", "CAN": "CA", "MEX": "MX", "CHL": "CL", "PRI": "PR"}


class WalmartErrorResponse(ValueError):
    """A Walmart error body where data was expected."""

    def __init__(self, errors: Any):
        self.errors = errors
        super().__init__(f"Walmart returned an error response: {errors!r}")


def is_error_response(body: Any) -> bool:
    """True for Walmart error bodies (``{"errors": {"error": [...]}}`` or ``{"errors": [...]}``)."""
    return (
        isinstance(body, Mapping)
        and bool(body.get("errors"))
        and not any(k in body for k in ("list", "order", "elements", "payload"))
    )


def _check_errors(body: Any) -> None:
    if is_error_response(body):
        raise WalmartErrorResponse(body["errors"])
    if not isinstance(body, Mapping):
        raise ValueError(f"expected a JSON object response, got {type(body).__name__}")


def _listed(container: Any, key: str) -> list[Any]:
    """Items of a Walmart single-key wrapper; a lone object (XML-converted feeds) counts as one."""
    if container is None:
        return []
    inner = container.get(key) if isinstance(container, Mapping) else container
    if inner is None:
        return []
    if isinstance(inner, Mapping):
        return [inner]
    return list(inner)


def orders_from_response(body: Any) -> list[Mapping[str, Any]]:
    """Order records of ``GET /v3/orders`` (``list.elements.order``), ``GET /v3/orders/{id}``
    or an acknowledge/ship/cancel response (``order``)."""
    _check_errors(body)
    if "list" in body:
        return _listed((body["list"] or {}).get("elements"), "order")
    if "order" in body:
        return [body["order"]]
    if "elements" in body:
        return _listed(body["elements"], "order")
    raise ValueError("not a Walmart orders response: no list.elements.order or order")


def _record_id(record: Mapping[str, Any]) -> Any:
    return record.get("purchaseOrderId")


# Each Walmart market sells in one currency.
MARKET_OF_CURRENCY = {"USD": "WALMART_US", "CAD": "WALMART_CA", "MXN": "WALMART_MX", "CLP": "WALMART_CL"}


def normalize_orders(
    records: Iterable[Mapping[str, Any]], marketplace_id: str | None = None
) -> NormalizeResult:
    """Normalize Walmart order records (``orders_from_response`` items)."""
    return collect_orders(records, lambda r: _build_order(r, marketplace_id), _record_id)


def _walmart_time(value: Any, what: str) -> datetime | None:
    # Orders use epoch milliseconds; a few endpoints echo ISO strings. Both are unambiguous.
    if isinstance(value, str) and "T" in value:
        return parse_iso(value, what)
    return parse_epoch_millis(value, what)


def _money(obj: Any, what: str) -> tuple[Decimal, str] | None:
    return money_of(obj, "amount", "currency", what)


def _country(value: Any) -> str | None:
    raw = text(value)
    if raw is None:
        return None
    if len(raw) == 2:
        return raw.upper()
    return _ALPHA3_TO_ALPHA2.get(raw.upper())


def _build_order(rec: Mapping[str, Any], marketplace_id: str | None) -> OrderBundle:
    order_id = required_text(rec.get("purchaseOrderId"), "purchaseOrderId")
    dropped: list[tuple[str, str]] = []
    guard = CurrencyGuard(None, order_id, dropped)
    lines: list[OrderLine] = []
    adjustments: list[OrderAdjustment] = []
    order_quantities: dict[OrderStatus, int] = {}
    channel_statuses: list[str] = []
    ship_times: list[datetime] = []
    status_dates: list[datetime] = []
    delivered_dates: list[datetime] = []
    sums: dict[str, Decimal | None] = {"item": None, "tax": None, "ship": None}
    refunded = Decimal(0)

    for raw_line in _listed(rec.get("orderLines"), "orderLine"):
        line, line_adjustments, quantities, info = _line(order_id, raw_line, guard)
        lines.append(line)
        adjustments.extend(line_adjustments)
        for status, qty in quantities.items():
            order_quantities[status] = order_quantities.get(status, 0) + qty
        for raw in info["statuses"]:
            if raw not in channel_statuses:
                channel_statuses.append(raw)
        ship_times.extend(info["ship_times"])
        if info["status_date"] is not None:
            status_dates.append(info["status_date"])
            if line.line_status is OrderStatus.DELIVERED:
                delivered_dates.append(info["status_date"])
        sums["item"] = add(sums["item"], line.item_price)
        sums["ship"] = add(sums["ship"], line.shipping_price)
        sums["tax"] = add(add(sums["tax"], line.item_tax), line.shipping_tax)
        for adj in line_adjustments:
            if adj.kind is AdjustmentKind.REFUND and adj.amount is not None:
                refunded += adj.amount
    for line in lines:
        line.currency = guard.currency
    if not lines:
        raise RecordError(f"order {order_id}: no orderLines.orderLine")

    status = fulfilled = rollup_status(order_quantities)
    order_total = None
    for part in (sums["item"], sums["ship"], sums["tax"]):
        order_total = add(order_total, part)
    if refunded > 0 and status is not OrderStatus.CANCELLED:
        status = (
            OrderStatus.REFUNDED
            if order_total is not None and refunded >= order_total
            else OrderStatus.PARTIALLY_REFUNDED
        )
    node = rec.get("shipNode") or {}
    node_type = node.get("type")
    if node_type is None:
        fulfillment = FulfillmentChannel.MERCHANT
    else:
        fulfillment = WALMART_SHIP_NODE_TYPE.get(node_type)  # type: ignore[assignment]
        if fulfillment is None:
            raise RecordError(f"order {order_id}: unknown shipNode.type {node_type!r}")

    shipping = rec.get("shippingInfo") or {}
    address = shipping.get("postalAddress") or {}
    country = _country(address.get("country"))
    order = Order(
        channel=CHANNEL,
        marketplace_order_id=order_id,
        marketplace_id=marketplace_id or MARKET_OF_CURRENCY.get(guard.currency or "USD"),
        purchased_at=_walmart_time(rec.get("orderDate"), f"order {order_id}: orderDate"),
        last_updated_at=max(status_dates) if status_dates else None,
        shipped_at=min(ship_times) if ship_times else None,
        delivered_at=max(delivered_dates) if fulfilled is OrderStatus.DELIVERED else None,
        status=status,
        channel_status="/".join(channel_statuses),
        fulfillment_channel=fulfillment,
        currency=guard.currency,
        order_total=order_total,
        items_subtotal=sums["item"],
        tax_total=sums["tax"],
        shipping_total=sums["ship"],
        promotion_total=None,
        marketplace_fee_total=None,
        is_business=None,
        country_code=country,
    )
    pii = BuyerPII(
        channel=CHANNEL,
        marketplace_order_id=order_id,
        buyer_name=None,
        buyer_email=text(rec.get("customerEmailId")),
        buyer_phone=text(shipping.get("phone")),
        ship_name=text(address.get("name")),
        address_line1=text(address.get("address1")),
        address_line2=text(address.get("address2")),
        address_line3=None,
        city=text(address.get("city")),
        state_or_region=text(address.get("state")),
        postal_code=text(address.get("postalCode")),
        country_code=country,
    )
    return OrderBundle(order, lines, adjustments, pii, dropped)


def _line(
    order_id: str, raw: Mapping[str, Any], guard: CurrencyGuard
) -> tuple[OrderLine, list[OrderAdjustment], dict[OrderStatus, int], dict[str, Any]]:
    line_id = required_text(raw.get("lineNumber"), f"order {order_id}: lineNumber")
    key = f"{order_id}/{line_id}"
    item = raw.get("item") or {}
    ordered = parse_int((raw.get("orderLineQuantity") or {}).get("amount"), f"{key}: quantity")
    status_date = _walmart_time(raw.get("statusDate"), f"{key}: statusDate")

    item_price = item_tax = shipping = shipping_tax = None
    saved_key, guard.key = guard.key, key
    try:
        for charge in _listed(raw.get("charges"), "charge"):
            kind = charge.get("chargeType")
            amount = guard.require(
                _money(charge.get("chargeAmount"), f"{kind} chargeAmount"), f"{kind} charge"
            )
            tax_obj = charge.get("tax")
            tax = None
            if tax_obj is not None:
                tax = guard.take(
                    _money(tax_obj.get("taxAmount"), f"{kind} taxAmount"), f"{kind} tax"
                )
            if kind == "PRODUCT":
                item_price, item_tax = add(item_price, amount), add(item_tax, tax)
            elif kind == "SHIPPING":
                shipping, shipping_tax = add(shipping, amount), add(shipping_tax, tax)
            else:
                raise RecordError(f"{key}: unknown chargeType {kind!r}")
    finally:
        guard.key = saved_key

    quantities: dict[OrderStatus, int] = {}
    statuses: list[str] = []
    ship_times: list[datetime] = []
    adjustments: list[OrderAdjustment] = []
    for entry in _listed(raw.get("orderLineStatuses"), "orderLineStatus"):
        raw_status = entry.get("status")
        status = WALMART_LINE_STATUS.get(raw_status)  # type: ignore[arg-type]
        if status is None:
            raise RecordError(f"{key}: unknown orderLineStatus {raw_status!r}")
        qty = parse_int((entry.get("statusQuantity") or {}).get("amount"), f"{key}: statusQuantity")
        quantities[status] = quantities.get(status, 0) + qty
        if raw_status not in statuses:
            statuses.append(raw_status)  # type: ignore[arg-type]
        tracking = entry.get("trackingInfo") or {}
        shipped_at = _walmart_time(tracking.get("shipDateTime"), f"{key}: shipDateTime")
        if shipped_at is not None:
            ship_times.append(shipped_at)
        if status is OrderStatus.CANCELLED:
            adjustments.append(
                OrderAdjustment(
                    channel=CHANNEL,
                    marketplace_order_id=order_id,
                    line_id=line_id,
                    kind=AdjustmentKind.CANCELLATION,
                    # Walmart zeroes a cancelled line's charges: what was cancelled is unknown.
                    amount=None,
                    currency=guard.currency,
                    occurred_at=status_date,
                    reason=text(entry.get("cancellationReason")),
                    status=raw_status,
                )
            )
    if not quantities:
        raise RecordError(f"{key}: no orderLineStatuses")

    refund = raw.get("refund")
    if refund:
        adjustments.append(_refund(order_id, line_id, key, refund, guard, status_date))

    shipped = quantities.get(OrderStatus.SHIPPED, 0) + quantities.get(OrderStatus.DELIVERED, 0)
    line = OrderLine(
        channel=CHANNEL,
        marketplace_order_id=order_id,
        line_id=line_id,
        sku=text(item.get("sku")),
        asin_or_item_id=None,
        title=text(item.get("productName")),
        quantity_ordered=ordered,
        quantity_shipped=shipped,
        unit_price=unit_price_of(item_price, ordered),
        item_price=item_price,
        item_tax=item_tax,
        shipping_price=shipping,
        shipping_tax=shipping_tax,
        promotion_discount=None,
        gift_wrap_price=None,
        gift_wrap_tax=None,
        currency=None,
        line_status=rollup_status(quantities),
        channel_line_status="/".join(statuses),
    )
    info = {"statuses": statuses, "ship_times": ship_times, "status_date": status_date}
    return line, adjustments, quantities, info


def _refund(
    order_id: str,
    line_id: str,
    key: str,
    refund: Mapping[str, Any],
    guard: CurrencyGuard,
    status_date: datetime | None,
) -> OrderAdjustment:
    total = None
    reasons: list[str] = []
    saved_key, guard.key = guard.key, key
    try:
        for entry in _listed(refund.get("refundCharges"), "refundCharge"):
            reason = text(entry.get("refundReason"))
            if reason and reason not in reasons:
                reasons.append(reason)
            charge = entry.get("charge") or {}
            total = add(
                total,
                guard.take(_money(charge.get("chargeAmount"), "refund charge"), "refund charge"),
            )
            tax = charge.get("tax")
            if tax is not None:
                total = add(
                    total, guard.take(_money(tax.get("taxAmount"), "refund tax"), "refund tax")
                )
    finally:
        guard.key = saved_key
    return OrderAdjustment(
        channel=CHANNEL,
        marketplace_order_id=order_id,
        line_id=line_id,
        kind=AdjustmentKind.REFUND,
        # Walmart writes refund charges as negative amounts; the model stores money returned
        # to the buyer as a positive value.
        amount=None if total is None else abs(total),
        currency=guard.currency,
        occurred_at=status_date,
        reason="; ".join(reasons) or text(refund.get("refundComments")),
        adjustment_id=text(refund.get("refundId")),
    )


# --- Inventory -------------------------------------------------------------------------------


def inventory_from_response(body: Any) -> list[Mapping[str, Any]]:
    """Inventory records from ``GET /v3/inventory`` (one SKU), ``GET /v3/inventories``
    (multi-node: ``elements.inventories``) or WFS ``GET /v3/fulfillment/inventory``
    (``payload.inventory``)."""
    _check_errors(body)
    if "sku" in body:
        return [body]
    elements = body.get("elements")
    if isinstance(elements, Mapping) and "inventories" in elements:
        return list(elements["inventories"])
    payload = body.get("payload")
    if isinstance(payload, Mapping) and "inventory" in payload:
        return list(payload["inventory"])
    raise ValueError(
        "not a Walmart inventory response: no sku, elements.inventories or payload.inventory"
    )


def _qty(obj: Any, what: str) -> int | None:
    if isinstance(obj, Mapping):
        obj = obj.get("amount")
    return optional_int(obj, what)


def normalize_inventory(
    records: Iterable[Mapping[str, Any]], as_of: datetime | None = None
) -> NormalizeResult:
    """Walmart inventory records -> InventoryRecord rows (one per SKU and ship node).

    Seller-fulfilled quantities go to ``merchant_fulfilled``; WFS quantities (``shipNodes``
    with ``shipNodeType = WFSFulfilled``) to ``fulfillable``. ``as_of`` stands in where the
    record has no timestamp of its own.
    """
    result = NormalizeResult()
    for index, rec in enumerate(records):
        try:
            rows = _inventory_rows(rec, as_of)
            market = rec.get("market")
            if isinstance(market, str) and market.strip():
                rows = [replace(r, marketplace_id=f"WALMART_{market.strip().upper()}") for r in rows]
            result.inventory.extend(rows)
        except RECORD_ERRORS as exc:
            sku = rec.get("sku") if isinstance(rec, Mapping) else None
            result.rejects.append((sku if isinstance(sku, str) and sku else index, describe(exc)))
    return result


def _inventory_row(sku: str, **fields: Any) -> InventoryRecord:
    base: dict[str, Any] = dict(
        channel=CHANNEL,
        sku=sku,
        asin_or_item_id=None,
        fnsku=None,
        marketplace_id=None,
        location=None,
        condition=None,
        fulfillable=None,
        inbound=None,
        reserved=None,
        unfulfillable=None,
        merchant_fulfilled=None,
        total_quantity=None,
        as_of=None,
    )
    base.update(fields)
    return InventoryRecord(**base)


def _inventory_rows(rec: Mapping[str, Any], as_of: datetime | None) -> list[InventoryRecord]:
    sku = required_text(rec.get("sku"), "sku")
    if "nodes" in rec:
        rows = []
        for node in rec["nodes"] or ():
            location = required_text(node.get("shipNode"), f"{sku}: shipNode")
            what = f"{sku}@{location}"
            rows.append(
                _inventory_row(
                    sku,
                    location=location,
                    merchant_fulfilled=_qty(node.get("availToSellQty"), f"{what}: availToSellQty"),
                    reserved=_qty(node.get("reservedQty"), f"{what}: reservedQty"),
                    total_quantity=_qty(node.get("inputQty"), f"{what}: inputQty"),
                    as_of=as_of,
                )
            )
        return rows
    if "shipNodes" in rec:
        rows = []
        for node in rec["shipNodes"] or ():
            node_type = node.get("shipNodeType")
            channel = WALMART_SHIP_NODE_TYPE.get(node_type)  # type: ignore[arg-type]
            if channel is None:
                raise RecordError(f"{sku}: unknown shipNodeType {node_type!r}")
            available = _qty(node.get("availToSellQty"), f"{sku}: availToSellQty")
            marketplace = channel is FulfillmentChannel.MARKETPLACE
            modified = _walmart_time(node.get("modifiedDate"), f"{sku}: modifiedDate")
            rows.append(
                _inventory_row(
                    sku,
                    location=node_type,
                    fulfillable=available if marketplace else None,
                    merchant_fulfilled=None if marketplace else available,
                    total_quantity=_qty(node.get("onHandQty"), f"{sku}: onHandQty"),
                    as_of=modified if modified is not None else as_of,
                )
            )
        return rows
    if "quantity" in rec:
        return [
            _inventory_row(
                sku,
                merchant_fulfilled=_qty(rec.get("quantity"), f"{sku}: quantity"),
                as_of=as_of,
            )
        ]
    raise RecordError(f"{sku}: no quantity, nodes or shipNodes")


# --- Reconciliation report (reconFileJson) ---------------------------------------------------


def _cell(row: Mapping[str, Any], name: str) -> str | None:
    value = row.get(name)
    if value is None:
        return None
    return text(value.strip() if isinstance(value, str) else value)


def normalize_transactions(
    rows: Iterable[Mapping[str, Any]], currency: str | None = None
) -> NormalizeResult:
    """Reconciliation-report rows -> FinancialTransaction rows.

    Rows of one transaction (same ``Transaction Key``, purchase order, PO line and type) become
    one transaction whose ``breakdown`` lists each ``Amount Type`` and whose amount is their
    sum (recon amounts are already signed from the seller's side). The ``PaymentSummary`` row
    becomes its own transaction with ``Total Payable``. Rows without ``Currency`` take the
    report's (the summary row's, or ``currency`` if given); with neither they are rejected.
    """
    result = NormalizeResult()
    rows = list(rows)
    report_currency = currency
    if report_currency is None:
        for row in rows:
            if isinstance(row, Mapping) and _cell(row, "Transaction Type") == "PaymentSummary":
                report_currency = _cell(row, "Currency")
                break

    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for index, row in enumerate(rows):
        try:
            if not isinstance(row, Mapping):
                raise RecordError(f"row is a {type(row).__name__}, not an object")
            _recon_row(row, index, report_currency, groups, result)
        except RECORD_ERRORS as exc:
            result.rejects.append((index, describe(exc)))
    for tx_id, group in groups.items():
        if group["rejected"]:
            continue
        result.transactions.append(
            FinancialTransaction(
                channel=CHANNEL,
                transaction_id=":".join(tx_id),
                type=group["type"],
                status=None,
                posted_at=group["posted_at"],
                marketplace_id=None,
                order_id=group["order_id"],
                amount=group["amount"],
                currency=group["currency"],
                description=group["description"],
                breakdown=tuple(group["breakdown"]),
            )
        )
    return result


def _recon_row(
    row: Mapping[str, Any],
    index: int,
    report_currency: str | None,
    groups: dict[tuple[str, ...], dict[str, Any]],
    result: NormalizeResult,
) -> None:
    tx_type = _cell(row, "Transaction Type")
    if tx_type is None:
        raise RecordError("no Transaction Type")
    currency = check_currency(_cell(row, "Currency") or report_currency, "Currency")
    posted = parse_mdy(_cell(row, "Transaction Posted Timestamp"), "Transaction Posted Timestamp")
    posted_at = datetime(posted.year, posted.month, posted.day, tzinfo=UTC) if posted else None
    if tx_type == "PaymentSummary":
        amount = parse_amount(_cell(row, "Total Payable"), "Total Payable")
        start, end = _cell(row, "Period Start Date"), _cell(row, "Period End Date")
        parse_mdy(start, "Period Start Date")
        parse_mdy(end, "Period End Date")
        key: tuple[str, ...] = ("PaymentSummary", start or "", end or "")
        breakdown: list[tuple[str, Decimal]] = [("Total Payable", amount)]
        order_id = None
    else:
        tx_key = _cell(row, "Transaction Key")
        if tx_key is None:
            raise RecordError(f"{tx_type} row has no Transaction Key")
        order_id = _cell(row, "Purchase Order #")
        key = (tx_key, order_id or "", _cell(row, "Purchase Order line #") or "", tx_type)
        amount = parse_amount(_cell(row, "Amount"), "Amount")
        breakdown = [(_cell(row, "Amount Type") or tx_type, amount)]
    group = groups.get(key)
    if group is None:
        groups[key] = {
            "type": tx_type,
            "posted_at": posted_at,
            "order_id": order_id,
            "amount": amount,
            "currency": currency,
            "description": _cell(row, "Transaction Description"),
            "breakdown": breakdown,
            "rejected": False,
        }
        return
    if group["currency"] != currency:
        group["rejected"] = True
        result.rejects.append(
            (":".join(key), f"rows of one transaction in {group['currency']} and {currency}")
        )
        return
    group["amount"] += amount
    group["breakdown"].extend(breakdown)
    if group["posted_at"] is None:
        group["posted_at"] = posted_at
