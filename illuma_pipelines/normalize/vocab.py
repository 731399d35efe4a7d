"""The cross-channel vocabularies and each channel's mapping into them.

Every mapping is an explicit table. A channel value missing from its table makes the record a
reject naming the value: a new marketplace status must be mapped by a person, because guessing
("anything unknown is pending") would silently misstate revenue.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AMAZON_V0_FULFILLMENT",
    "AMAZON_V0_STATUS",
    "AMAZON_V2026_FULFILLMENT",
    "AMAZON_V2026_STATUS",
    "AdjustmentKind",
    "EBAY_CANCEL_STATES",
    "EBAY_FULFILLMENT_STATUS",
    "EBAY_PAYMENT_STATUS",
    "FulfillmentChannel",
    "OrderStatus",
    "WALMART_LINE_STATUS",
    "WALMART_SHIP_NODE_TYPE",
    "rollup_status",
]

class OrderStatus(StrEnum):
    """One status vocabulary for orders and order lines across channels.

    pending            placed, not yet payable/ready to ship (Amazon Pending, eBay payment pending)
    unshipped          ready to ship, nothing shipped yet
    partially_shipped  some units shipped
    shipped            every non-cancelled unit handed to a carrier
    delivered          every non-cancelled unit delivered (only where the channel says so)
    cancelled          cancelled before shipment (or, for Amazon, unfulfillable)
    refunded           fully refunded after payment
    partially_refunded part of the payment refunded
    returned           goods came back (reserved for channels that report returns on the order)
    """

    PENDING = "pending"
    UNSHIPPED = "unshipped"
    PARTIALLY_SHIPPED = "partially_shipped"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"
    RETURNED = "returned"


class FulfillmentChannel(StrEnum):
    """Who ships: the marketplace (FBA, WFS, eBay Fulfillment) or the merchant."""

    MARKETPLACE = "marketplace"
    MERCHANT = "merchant"


class AdjustmentKind(StrEnum):
    REFUND = "refund"
    RETURN = "return"
    CANCELLATION = "cancellation"


# Amazon Orders v0 OrderStatus. InvoiceUnconfirmed (China/Brazil invoicing) comes after
# shipment; Unfulfillable (multi-channel orders only) never ships, so it counts as cancelled.
AMAZON_V0_STATUS: dict[str, OrderStatus] = {
    "PendingAvailability": OrderStatus.PENDING,
    "Pending": OrderStatus.PENDING,
    "Unshipped": OrderStatus.UNSHIPPED,
    "PartiallyShipped": OrderStatus.PARTIALLY_SHIPPED,
    "Shipped": OrderStatus.SHIPPED,
    "InvoiceUnconfirmed": OrderStatus.SHIPPED,
    "Canceled": OrderStatus.CANCELLED,
    "Unfulfillable": OrderStatus.CANCELLED,
}

# Amazon Orders v2026-01-01 fulfillment.fulfillmentStatus (enum FulfillmentStatus in the spec).
AMAZON_V2026_STATUS: dict[str, OrderStatus] = {
    "PENDING_AVAILABILITY": OrderStatus.PENDING,
    "PENDING": OrderStatus.PENDING,
    "UNSHIPPED": OrderStatus.UNSHIPPED,
    "PARTIALLY_SHIPPED": OrderStatus.PARTIALLY_SHIPPED,
    "SHIPPED": OrderStatus.SHIPPED,
    "CANCELLED": OrderStatus.CANCELLED,
    "UNFULFILLABLE": OrderStatus.CANCELLED,
}

# v0 FulfillmentChannel. 'SellerFulfilled' is outside the documented MFN/AFN enum but appears
# in Amazon's own getOrders example; its meaning (the seller ships) is unambiguous.
AMAZON_V0_FULFILLMENT: dict[str, FulfillmentChannel] = {
    "AFN": FulfillmentChannel.MARKETPLACE,
    "MFN": FulfillmentChannel.MERCHANT,
    "SellerFulfilled": FulfillmentChannel.MERCHANT,
}

AMAZON_V2026_FULFILLMENT: dict[str, FulfillmentChannel] = {
    "AMAZON": FulfillmentChannel.MARKETPLACE,
    "MERCHANT": FulfillmentChannel.MERCHANT,
}

# eBay Fulfillment API enums (OrderFulfillmentStatus / LineItemFulfillmentStatusEnum).
EBAY_FULFILLMENT_STATUS: dict[str, OrderStatus] = {
    "NOT_STARTED": OrderStatus.UNSHIPPED,
    "IN_PROGRESS": OrderStatus.PARTIALLY_SHIPPED,
    "FULFILLED": OrderStatus.SHIPPED,
}

# eBay OrderPaymentStatusEnum. PAID defers to the fulfilment status; None marks that.
EBAY_PAYMENT_STATUS: dict[str, OrderStatus | None] = {
    "PAID": None,
    "PENDING": OrderStatus.PENDING,
    "FAILED": OrderStatus.PENDING,
    "FULLY_REFUNDED": OrderStatus.REFUNDED,
    "PARTIALLY_REFUNDED": OrderStatus.PARTIALLY_REFUNDED,
}

# eBay CancelStateEnum.
EBAY_CANCEL_STATES: frozenset[str] = frozenset({"NONE_REQUESTED", "IN_PROGRESS", "CANCELED"})

# Walmart orderLineStatuses.orderLineStatus[].status. Created and Acknowledged are both
# "released to the seller, not shipped"; acknowledgement is a seller workflow step.
WALMART_LINE_STATUS: dict[str, OrderStatus] = {
    "Created": OrderStatus.UNSHIPPED,
    "Acknowledged": OrderStatus.UNSHIPPED,
    "Shipped": OrderStatus.SHIPPED,
    "Delivered": OrderStatus.DELIVERED,
    "Cancelled": OrderStatus.CANCELLED,
}

# Walmart shipNode.type.
WALMART_SHIP_NODE_TYPE: dict[str, FulfillmentChannel] = {
    "SellerFulfilled": FulfillmentChannel.MERCHANT,
    "3PLFulfilled": FulfillmentChannel.MERCHANT,
    "WFSFulfilled": FulfillmentChannel.MARKETPLACE,
}


def rollup_status(quantities: dict[OrderStatus, int]) -> OrderStatus:
    """Order (or line) status from unit counts per line status.

    Cancelled units do not count against "shipped": an order with one unit shipped and one
    cancelled is shipped. Only when every unit is cancelled is the whole cancelled.
    """
    live = {s: q for s, q in quantities.items() if q > 0 and s is not OrderStatus.CANCELLED}
    if not live:
        if quantities.get(OrderStatus.CANCELLED, 0) > 0:
            return OrderStatus.CANCELLED
        return OrderStatus.PENDING
    if set(live) == {OrderStatus.DELIVERED}:
        return OrderStatus.DELIVERED
    shipped = live.get(OrderStatus.SHIPPED, 0) + live.get(OrderStatus.DELIVERED, 0)
    if shipped == sum(live.values()):
        return OrderStatus.SHIPPED
    if shipped:
        return OrderStatus.PARTIALLY_SHIPPED
    if OrderStatus.UNSHIPPED in live:
        return OrderStatus.UNSHIPPED
    return OrderStatus.PENDING
