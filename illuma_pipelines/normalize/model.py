"""The cross-channel model every marketplace normalizer produces.

Conventions shared by every row type:

* Money is ``decimal.Decimal`` parsed from the raw text (see ``money.py``) in the row's
  ``currency``; ``None`` means the channel did not report the value, never zero.
* Times are timezone-aware UTC datetimes; ``None`` means unknown.
* ``promotion_total`` / ``promotion_discount`` are positive amounts taken off the price,
  whatever sign the channel uses.
* ``OrderAdjustment.amount`` is the positive value given back to the buyer; ``kind`` carries
  the direction. ``FinancialTransaction.amount`` is signed: money to the seller is positive.
* Buyer PII lives only in ``BuyerPII`` rows, keyed by channel + order id, so the PII vault can
  encrypt them before they reach any table; ``Order`` carries only the non-identifying
  ``country_code`` for analytics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from .vocab import AdjustmentKind, FulfillmentChannel, OrderStatus

__all__ = [
    "BuyerPII",
    "FinancialTransaction",
    "InventoryRecord",
    "NormalizeResult",
    "Order",
    "OrderAdjustment",
    "OrderLine",
    "PriceObservation",
    "SettlementLine",
    "SettlementReport",
]


@dataclass(slots=True)
class Order:
    """One marketplace order, header level.

    ``status`` is the cross-channel vocabulary (``vocab.OrderStatus``); ``channel_status`` is
    the channel's own value(s), kept verbatim for audit. ``marketplace_fee_total`` is only set
    where the order payload reports fees (eBay); elsewhere fees come from finance transactions.
    ``other_charges_total`` is what the buyer paid beyond items, shipping and tax, as the order
    states it (eBay: special fees such as a tire recycling fee, plus price adjustments, signed).
    """

    channel: str
    marketplace_order_id: str
    marketplace_id: str | None
    purchased_at: datetime | None
    last_updated_at: datetime | None
    shipped_at: datetime | None
    delivered_at: datetime | None
    status: OrderStatus
    channel_status: str
    fulfillment_channel: FulfillmentChannel
    currency: str | None
    order_total: Decimal | None
    items_subtotal: Decimal | None
    tax_total: Decimal | None
    shipping_total: Decimal | None
    promotion_total: Decimal | None
    marketplace_fee_total: Decimal | None
    is_business: bool | None
    country_code: str | None
    other_charges_total: Decimal | None = None


@dataclass(slots=True)
class OrderLine:
    """One order line. ``item_price`` is the line's price for all units (unit price x quantity)
    before promotions; ``shipping_price`` is the line's shipping for all units; ``other_charges``
    the line's other delivery charges to the buyer (eBay handling, import charges, shipping
    intermediation fee)."""

    channel: str
    marketplace_order_id: str
    line_id: str
    sku: str | None
    asin_or_item_id: str | None
    title: str | None
    quantity_ordered: int | None
    quantity_shipped: int | None
    unit_price: Decimal | None
    item_price: Decimal | None
    item_tax: Decimal | None
    shipping_price: Decimal | None
    shipping_tax: Decimal | None
    promotion_discount: Decimal | None
    gift_wrap_price: Decimal | None
    gift_wrap_tax: Decimal | None
    currency: str | None
    line_status: OrderStatus
    channel_line_status: str | None
    other_charges: Decimal | None = None


@dataclass(slots=True)
class OrderAdjustment:
    """A refund, return or cancellation as its own row (``line_id`` None = whole order).

    ``amount`` is None where the channel reports the event but not its value (a Walmart
    cancelled line carries amount 0 rather than what was cancelled).
    """

    channel: str
    marketplace_order_id: str
    line_id: str | None
    kind: AdjustmentKind
    amount: Decimal | None
    currency: str | None
    occurred_at: datetime | None
    reason: str | None
    adjustment_id: str | None = None
    status: str | None = None


@dataclass(slots=True)
class BuyerPII:
    """Buyer and ship-to identity for one order; to be encrypted by the PII vault."""

    channel: str
    marketplace_order_id: str
    buyer_name: str | None
    buyer_email: str | None
    buyer_phone: str | None
    ship_name: str | None
    address_line1: str | None
    address_line2: str | None
    address_line3: str | None
    city: str | None
    state_or_region: str | None
    postal_code: str | None
    country_code: str | None


@dataclass(slots=True)
class InventoryRecord:
    """Stock of one SKU (at one location where the channel splits by location).

    ``fulfillable``/``inbound``/``reserved``/``unfulfillable`` describe marketplace-held stock
    (FBA, WFS); ``merchant_fulfilled`` is stock the merchant ships itself. ``inbound`` is
    working + shipped + receiving. ``as_of`` is the channel's timestamp, or the snapshot time
    the caller passed where the channel gives none.
    """

    channel: str
    sku: str
    asin_or_item_id: str | None
    fnsku: str | None
    marketplace_id: str | None
    location: str | None
    condition: str | None
    fulfillable: int | None
    inbound: int | None
    reserved: int | None
    unfulfillable: int | None
    merchant_fulfilled: int | None
    total_quantity: int | None
    as_of: datetime | None


@dataclass(slots=True)
class FinancialTransaction:
    """One money movement on the seller's marketplace account.

    ``amount`` is signed (money to the seller positive). ``breakdown`` lists its components as
    ``(type, signed amount)`` pairs in the same currency; nested Amazon breakdowns are flattened
    to their leaves with ``/``-joined type paths.
    """

    channel: str
    transaction_id: str
    type: str
    status: str | None
    posted_at: datetime | None
    marketplace_id: str | None
    order_id: str | None
    amount: Decimal
    currency: str
    description: str | None
    breakdown: tuple[tuple[str, Decimal], ...] = ()


@dataclass(slots=True)
class PriceObservation:
    """One observed price point for a product (own offer, competitive, lowest or Buy Box).

    ``landed_price`` is as reported (listing + shipping - points where the channel computes
    it); it is not recomputed. ``quantity_tier`` is set for business quantity-discount tiers.
    ``observed_at`` is the fetch time the caller passed: pricing payloads carry none.
    """

    channel: str
    marketplace_id: str | None
    asin_or_item_id: str | None
    sku: str | None
    kind: str
    condition: str | None
    fulfillment_channel: str | None
    offer_type: str | None
    quantity_tier: int | None
    listing_price: Decimal | None
    shipping_price: Decimal | None
    landed_price: Decimal | None
    currency: str
    seller_id: str | None
    is_mine: bool | None
    observed_at: datetime | None


@dataclass(slots=True)
class SettlementLine:
    """One data row of an Amazon V2 settlement flat file, with the settlement header
    (id, period, deposit date, total, currency) forward-filled from the summary row.

    ``total_amount`` is the settlement's total, repeated on each row: never sum it.
    ``posted_at`` comes from ``posted-date-time``; ``posted_date`` from ``posted-date``.
    """

    settlement_id: str
    settlement_start: datetime | None
    settlement_end: datetime | None
    deposit_date: datetime | None
    total_amount: Decimal | None
    currency: str
    transaction_type: str | None
    order_id: str | None
    merchant_order_id: str | None
    adjustment_id: str | None
    shipment_id: str | None
    marketplace_name: str | None
    amount_type: str | None
    amount_description: str | None
    amount: Decimal | None
    fulfillment_id: str | None
    posted_date: date | None
    posted_at: datetime | None
    order_item_code: str | None
    merchant_order_item_id: str | None
    merchant_adjustment_item_id: str | None
    sku: str | None
    quantity_purchased: int | None
    promotion_id: str | None
    row_number: int


@dataclass(slots=True)
class SettlementReport:
    """A parsed settlement file: its summary (first data row) and its amount rows."""

    settlement_id: str
    settlement_start: datetime | None
    settlement_end: datetime | None
    deposit_date: datetime | None
    total_amount: Decimal | None
    currency: str
    lines: list[SettlementLine] = field(default_factory=list)
    rejects: list[tuple[int | str, str]] = field(default_factory=list)


@dataclass(slots=True)
class NormalizeResult:
    """What a normalizer call produced.

    ``rejects`` holds ``(record index or id, reason)`` for whole records that could not be
    normalized (the others still are). ``dropped_components`` holds ``(key, reason)`` for parts
    of an otherwise good record that were left out, e.g. a GBP gift-wrap price inside a JPY
    order: the order is kept, that amount is not added anywhere.
    """

    orders: list[Order] = field(default_factory=list)
    lines: list[OrderLine] = field(default_factory=list)
    adjustments: list[OrderAdjustment] = field(default_factory=list)
    pii: list[BuyerPII] = field(default_factory=list)
    inventory: list[InventoryRecord] = field(default_factory=list)
    transactions: list[FinancialTransaction] = field(default_factory=list)
    prices: list[PriceObservation] = field(default_factory=list)
    rejects: list[tuple[int | str, str]] = field(default_factory=list)
    dropped_components: list[tuple[str, str]] = field(default_factory=list)
