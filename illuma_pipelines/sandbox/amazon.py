"""Amazon Selling Partner API routes for the sandbox, mounted under `/amazon`.

Shapes follow Amazon's official models (amzn/selling-partner-api-models) and the example payloads
in shared/fixtures/amazon:

- POST /auth/o2/token                                   Login with Amazon (refresh_token grant)
- GET  /orders/2026-01-01/orders                         searchOrders
- GET  /orders/2026-01-01/orders/{orderId}               getOrder
- GET  /fba/inventory/v1/summaries                       getInventorySummaries
- GET  /finances/2024-06-19/transactions                 listTransactions
- GET  /reports/2021-06-30/reports                       getReports
- POST /reports/2021-06-30/reports                       createReport
- GET  /reports/2021-06-30/reports/{reportId}            getReport
- GET  /reports/2021-06-30/documents/{reportDocumentId}  getReportDocument
- GET  /_documents/{reportDocumentId}                    the gzip document (stands in for S3)
- GET  /products/pricing/v0/competitivePrice             getCompetitivePricing
- GET  /products/pricing/v0/listings/{SellerSKU}/offers  getListingOffers

Authentication: the LWA refresh token `sandbox-refresh-<merchant_id>` identifies the merchant; API
calls carry the access token in `x-amz-access-token`. An expired token gets Amazon's 403
"Unauthorized ... expired" body.

Queued fixtures (`state.queue_fixture("amazon", merchant_id, operation, body, status)`) are served
verbatim, in order, before generated data, so the official examples go through the real client.
Use `set_report_outcome(state, report_type, "FATAL")` to make requested reports fail.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from illuma_pipelines.merchant_ids import MERCHANT_ID_PATTERN
from illuma_pipelines.sandbox.server import (
    SandboxState,
    hold_for_timeout,
    json_response,
    transport_fault_response,
)
from illuma_pipelines.sandbox.world import (
    AMAZON_US_MARKETPLACE_ID,
    AMAZON_US_MARKETPLACE_NAME,
    AmazonFinanceTransaction,
    AmazonOrderPlan,
    AmazonSettlement,
    MerchantWorld,
    iso,
    stable_int,
)

CHANNEL = "amazon"

# Default usage plans (rate per second, burst) from the operation descriptions in
# amzn/selling-partner-api-models: orders_2026-01-01.json (searchOrders 0.0056/20, getOrder
# 0.5/30), fbaInventory.json (getInventorySummaries 2/2), finances_2024-06-19.json
# (listTransactions 0.5/10), reports_2021-06-30.json (getReports 0.0222/10, getReport 2/15,
# createReport 0.0167/15, getReportDocument 0.0167/15), productPricingV0.json
# (getCompetitivePricing 0.5/1, getListingOffers 1/2).
RATE_LIMITS: dict[str, tuple[float, float]] = {
    "searchOrders": (0.0056, 20),
    "getOrder": (0.5, 30),
    "getInventorySummaries": (2.0, 2),
    "listTransactions": (0.5, 10),
    "getReports": (0.0222, 10),
    "getReport": (2.0, 15),
    "createReport": (0.0167, 15),
    "getReportDocument": (0.0167, 15),
    "getCompetitivePricing": (0.5, 1),
    "getListingOffers": (1.0, 2),
}

SETTLEMENT_REPORT_TYPE = "GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE_V2"
REQUESTABLE_REPORT_TYPES = (
    "GET_FBA_MYI_UNSUPPRESSED_INVENTORY_DATA",
    "GET_MERCHANT_LISTINGS_ALL_DATA",
)
ALL_ORDER_DATASETS = frozenset(
    {
        "BUYER",
        "RECIPIENT",
        "PROCEEDS",
        "EXPENSE",
        "PROMOTION",
        "CANCELLATION",
        "FULFILLMENT",
        "PACKAGES",
    }
)
ORDER_ID_RE = re.compile(r"\d{3}-\d{7}-\d{7}")
REFRESH_PREFIX = "sandbox-refresh-"
TRANSPORT_FAULTS = frozenset(
    {"throttle", "server_error", "timeout", "connection_reset", "truncated_body"}
)
API_FAULTS = TRANSPORT_FAULTS | {"expired_token"}
LIST_FAULTS = API_FAULTS | {"malformed_record"}
USD = "USD"


class BadRequest(Exception):
    """A 400 with Amazon's error body; `code` is 'InvalidInput' (v0 style) or '400' (Reports)."""

    def __init__(self, message: str, code: str = "InvalidInput") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class NotFound(Exception):
    pass


def _errors(code: str, message: str, details: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"errors": [error]}


def _m(amount: Decimal) -> dict[str, str]:
    """Orders v2026 money: strings."""
    return {"amount": f"{amount:.2f}", "currencyCode": USD}


def _n(amount: Decimal) -> dict[str, Any]:
    """Finances 2024-06-19 money: JSON numbers (exact, via Decimal)."""
    return {"currencyAmount": amount, "currencyCode": USD}


def _p(amount: Decimal) -> dict[str, Any]:
    """Pricing v0 money: JSON numbers, PascalCase keys."""
    return {"CurrencyCode": USD, "Amount": amount}


def _parse_time(value: str | None, name: str, code: str = "InvalidInput") -> datetime | None:
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 date-time, got {value!r}", code) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _list_param(request: Request, name: str) -> list[str]:
    values: list[str] = []
    for raw in request.query_params.getlist(name):
        values.extend(v for v in raw.split(",") if v)
    return values


def _encode_token(payload: dict[str, Any]) -> str:
    return (
        base64.urlsafe_b64encode(json.dumps(payload, sort_keys=True).encode()).decode().rstrip("=")
    )


def _decode_token(token: str, code: str = "InvalidInput") -> dict[str, Any]:
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError):
        raise BadRequest("the pagination token is invalid or expired", code) from None
    if not isinstance(payload, dict):
        raise BadRequest("the pagination token is invalid or expired", code)
    return payload


def _query_key(request: Request, ignore: set[str]) -> str:
    items = sorted((k, v) for k, v in request.query_params.multi_items() if k not in ignore)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Renderers (also used by SandboxState introspection)


def _order_status(plan: AmazonOrderPlan, now: datetime) -> tuple[str, datetime]:
    state = plan.status_at(now)
    assert state is not None, "render only orders that exist at now"
    return state


def render_order(
    plan: AmazonOrderPlan, now: datetime, datasets: frozenset[str] | set[str]
) -> dict[str, Any]:
    """An Orders v2026-01-01 `Order` as of `now`, with the requested `includedData` datasets."""
    status, updated = _order_status(plan, now)
    pending = status == "PENDING"
    shipped = status in ("SHIPPED", "DELIVERED")
    order: dict[str, Any] = {
        "orderId": plan.order_id,
        "createdTime": iso(plan.created),
        "lastUpdatedTime": iso(updated),
        "programs": ["PRIME"] if plan.fulfilled_by == "AMAZON" else [],
        "salesChannel": {
            "channelName": "AMAZON",
            "marketplaceId": AMAZON_US_MARKETPLACE_ID,
            "marketplaceName": AMAZON_US_MARKETPLACE_NAME,
        },
    }
    # Amazon withholds buyer details until payment clears.
    if "BUYER" in datasets and not pending:
        order["buyer"] = {"buyerName": plan.buyer.name, "buyerEmail": plan.buyer.email}
    if "RECIPIENT" in datasets and not pending:
        a = plan.buyer.address
        order["recipient"] = {
            "deliveryAddress": {
                "name": a.name,
                "addressLine1": a.line1,
                **({"addressLine2": a.line2} if a.line2 else {}),
                "city": a.city,
                "stateOrRegion": a.state,
                "postalCode": a.postal_code,
                "countryCode": a.country_code,
                "phone": a.phone,
                "addressType": "RESIDENTIAL",
            }
        }
    if "PROCEEDS" in datasets and not pending:
        breakdowns = [{"type": "ITEM", "subtotal": _m(plan.item_total)}]
        shipping = sum((line.shipping for line in plan.lines), Decimal("0"))
        tax = sum((line.tax for line in plan.lines), Decimal("0"))
        if shipping:
            breakdowns.append({"type": "SHIPPING", "subtotal": _m(shipping)})
        if tax:
            breakdowns.append({"type": "TAX", "subtotal": _m(tax)})
        order["proceeds"] = {"grandTotal": _m(plan.grand_total), "breakdowns": breakdowns}
    if "FULFILLMENT" in datasets:
        ship_by = plan.created + timedelta(days=2)
        fulfillment: dict[str, Any] = {
            "fulfillmentStatus": "SHIPPED" if shipped else status,
            "fulfilledBy": plan.fulfilled_by,
            "fulfillmentServiceLevel": plan.service_level,
            "shipByWindow": {"earliestDateTime": iso(plan.created), "latestDateTime": iso(ship_by)},
            "deliverByWindow": {
                "earliestDateTime": iso(plan.created + timedelta(days=3)),
                "latestDateTime": iso(plan.created + timedelta(days=7)),
            },
        }
        order["fulfillment"] = fulfillment
    items = []
    for line in plan.lines:
        product: dict[str, Any] = {
            "asin": line.part.asin,
            "title": line.part.title,
            "sellerSku": line.part.sku,
            "condition": {"conditionType": "NEW", "conditionSubtype": "NEW"},
        }
        if not pending:
            product["price"] = {"unitPrice": _m(line.unit_price)}
        item: dict[str, Any] = {
            "orderItemId": line.order_item_id,
            "quantityOrdered": line.quantity,
            "programs": [],
            "product": product,
        }
        if "PROCEEDS" in datasets and not pending:
            item_breakdowns = [{"type": "ITEM", "subtotal": _m(line.item_subtotal)}]
            if line.shipping:
                item_breakdowns.append({"type": "SHIPPING", "subtotal": _m(line.shipping)})
            if line.tax:
                item_breakdowns.append(
                    {
                        "type": "TAX",
                        "subtotal": _m(line.tax),
                        "detailedBreakdowns": [{"subtype": "ITEM", "value": _m(line.tax)}],
                    }
                )
            item["proceeds"] = {
                "proceedsTotal": _m(line.item_subtotal + line.shipping + line.tax),
                "breakdowns": item_breakdowns,
            }
        if "CANCELLATION" in datasets and status == "CANCELLED":
            item["cancellation"] = {
                "cancellationExecution": {
                    "cancelledBy": "BUYER",
                    "cancelReason": "Order was placed by mistake",
                }
            }
        if "FULFILLMENT" in datasets:
            done = line.quantity if shipped else 0
            item["fulfillment"] = {
                "quantityFulfilled": done,
                "quantityUnfulfilled": 0 if status == "CANCELLED" else line.quantity - done,
            }
        items.append(item)
    order["orderItems"] = items
    if "PACKAGES" in datasets and shipped and plan.ship_at is not None:
        delivered = status == "DELIVERED"
        order["packages"] = [
            {
                "packageReferenceId": plan.shipment_id,
                "createdTime": iso(plan.ship_at),
                "packageStatus": {
                    "status": "DELIVERED" if delivered else "IN_TRANSIT",
                    "detailedStatus": "DELIVERED" if delivered else "IN_TRANSIT",
                },
                "carrier": plan.carrier,
                "shipTime": iso(plan.ship_at),
                "shippingService": f"{plan.carrier} Ground"
                if plan.service_level == "STANDARD"
                else f"{plan.carrier} 2nd Day",
                "trackingNumber": plan.tracking_number,
                "packageItems": [
                    {"orderItemId": line.order_item_id, "quantity": line.quantity}
                    for line in plan.lines
                ],
            }
        ]
    return order


_BREAKDOWN_GROUP = {
    "ItemPrice": "Sales",
    "ItemWithheldTax": "Tax",
    "ItemFees": "AmazonFees",
    "other-transaction": "Expenses",
}
_TRANSACTION_DESCRIPTION = {
    "Shipment": "Order Payment",
    "Refund": "Refund Order",
    "ServiceFee": "Subscription Fee",
}


def _breakdowns(rows: list[tuple[str, str, Decimal]]) -> list[dict[str, Any]]:
    groups: dict[str, list[tuple[str, Decimal]]] = {}
    for amount_type, description, amount in rows:
        groups.setdefault(_BREAKDOWN_GROUP[amount_type], []).append((description, amount))
    out = []
    for group, children in groups.items():
        merged: dict[str, Decimal] = {}
        for description, amount in children:
            merged[description] = merged.get(description, Decimal("0")) + amount
        out.append(
            {
                "breakdownType": group,
                "breakdownAmount": _n(sum(merged.values(), Decimal("0"))),
                "breakdowns": [
                    {"breakdownType": d, "breakdownAmount": _n(a)} for d, a in merged.items()
                ],
            }
        )
    return out


def render_transaction(world: MerchantWorld, t: AmazonFinanceTransaction) -> dict[str, Any]:
    """A Finances 2024-06-19 `Transaction` (amounts are exact JSON numbers)."""
    index = world.settlement_index(t.posted)
    group_id = base64.urlsafe_b64encode(
        hashlib.sha256(world.amazon_settlement_id(index).encode()).digest()[:24]
    ).decode()
    related = [
        {"relatedIdentifierName": "FINANCIAL_EVENT_GROUP_ID", "relatedIdentifierValue": group_id}
    ]
    record: dict[str, Any] = {
        "sellingPartnerMetadata": {
            "sellingPartnerId": world.seller_id,
            "accountType": "Standard Orders",
            "marketplaceId": AMAZON_US_MARKETPLACE_ID,
        },
        "relatedIdentifiers": related,
        "transactionType": t.transaction_type,
        "transactionId": t.transaction_id,
        "transactionStatus": "RELEASED",
        "description": _TRANSACTION_DESCRIPTION[t.transaction_type],
        "postedDate": iso(t.posted),
        "totalAmount": _n(t.total),
        "marketplaceDetails": {
            "marketplaceId": AMAZON_US_MARKETPLACE_ID,
            "marketplaceName": AMAZON_US_MARKETPLACE_NAME,
        },
        "breakdowns": _breakdowns([(a, d, v) for a, d, v, _ in t.rows]),
    }
    if t.order is not None:
        related.append(
            {"relatedIdentifierName": "ORDER_ID", "relatedIdentifierValue": t.order.order_id}
        )
        if t.transaction_type == "Shipment":
            related.append(
                {
                    "relatedIdentifierName": "SHIPMENT_ID",
                    "relatedIdentifierValue": t.order.shipment_id,
                }
            )
        items = []
        for line in t.order.lines:
            rows = [(a, d, v) for a, d, v, ln in t.rows if ln is line]
            items.append(
                {
                    "description": line.part.title,
                    "totalAmount": _n(sum((v for _, _, v in rows), Decimal("0"))),
                    "relatedIdentifiers": [
                        {
                            "itemRelatedIdentifierName": "ORDER_ADJUSTMENT_ITEM_ID",
                            "itemRelatedIdentifierValue": line.order_item_id,
                        }
                    ],
                    "breakdowns": _breakdowns(rows),
                    "contexts": [
                        {
                            "contextType": "ProductContext",
                            "asin": line.part.asin,
                            "sku": line.part.sku,
                            "quantityShipped": line.quantity,
                            "fulfillmentNetwork": "AFN"
                            if t.order.fulfilled_by == "AMAZON"
                            else "MFN",
                        }
                    ],
                }
            )
        record["items"] = items
    return record


SETTLEMENT_COLUMNS = (
    "settlement-id",
    "settlement-start-date",
    "settlement-end-date",
    "deposit-date",
    "total-amount",
    "currency",
    "transaction-type",
    "order-id",
    "merchant-order-id",
    "adjustment-id",
    "shipment-id",
    "marketplace-name",
    "amount-type",
    "amount-description",
    "amount",
    "fulfillment-id",
    "posted-date",
    "posted-date-time",
    "order-item-code",
    "merchant-order-item-id",
    "merchant-adjustment-item-id",
    "sku",
    "quantity-purchased",
    "promotion-id",
)


def _flat_time(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_settlement(s: AmazonSettlement) -> str:
    """The GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE_V2 document: tab-separated, header first, then a
    totals row (the only row with start/end/deposit/total/currency), then one row per amount."""
    lines = ["\t".join(SETTLEMENT_COLUMNS)]
    totals = dict.fromkeys(SETTLEMENT_COLUMNS, "")
    totals.update(
        {
            "settlement-id": s.settlement_id,
            "settlement-start-date": _flat_time(s.start),
            "settlement-end-date": _flat_time(s.end),
            "deposit-date": _flat_time(s.deposit_date),
            "total-amount": f"{s.total:.2f}",
            "currency": USD,
        }
    )
    lines.append("\t".join(totals[c] for c in SETTLEMENT_COLUMNS))
    for t in s.transactions:
        for amount_type, description, amount, line in t.rows:
            row = dict.fromkeys(SETTLEMENT_COLUMNS, "")
            row["settlement-id"] = s.settlement_id
            row["amount-type"] = amount_type
            row["amount-description"] = description
            row["amount"] = f"{amount:.2f}"
            row["posted-date"] = t.posted.strftime("%Y-%m-%d")
            row["posted-date-time"] = _flat_time(t.posted)
            if t.order is None:
                row["transaction-type"] = "other-transaction"
            else:
                row["transaction-type"] = "Order" if t.transaction_type == "Shipment" else "Refund"
                row["order-id"] = t.order.order_id
                row["shipment-id"] = t.order.shipment_id if t.transaction_type == "Shipment" else ""
                row["adjustment-id"] = (
                    f"{stable_int(t.transaction_id) % 10**14:014d}"
                    if t.transaction_type == "Refund"
                    else ""
                )
                row["marketplace-name"] = AMAZON_US_MARKETPLACE_NAME
                row["fulfillment-id"] = "AFN" if t.order.fulfilled_by == "AMAZON" else "MFN"
                if line is not None:
                    row["order-item-code"] = line.order_item_id
                    row["sku"] = line.part.sku
                    if t.transaction_type == "Shipment" and description == "Principal":
                        row["quantity-purchased"] = str(line.quantity)
            lines.append("\t".join(row[c] for c in SETTLEMENT_COLUMNS))
    return "\n".join(lines) + "\n"


def render_inventory_report(world: MerchantWorld, now: datetime) -> str:
    columns = (
        "sku",
        "fnsku",
        "asin",
        "product-name",
        "condition",
        "your-price",
        "mfn-listing-exists",
        "mfn-fulfillable-quantity",
        "afn-listing-exists",
        "afn-warehouse-quantity",
        "afn-fulfillable-quantity",
        "afn-unsellable-quantity",
        "afn-reserved-quantity",
        "afn-total-quantity",
        "per-unit-volume",
        "afn-inbound-working-quantity",
        "afn-inbound-shipped-quantity",
        "afn-inbound-receiving-quantity",
    )
    lines = ["\t".join(columns)]
    for row in world.amazon_inventory(now):
        part = row["part"]
        reserved = row["reserved_customer"] + row["reserved_fc"]
        unsellable = row["unfulfillable_customer_damaged"] + row["unfulfillable_warehouse_damaged"]
        warehouse = row["fulfillable"] + reserved + unsellable
        values = (
            part.sku,
            part.fnsku,
            part.asin,
            part.title,
            "New",
            f"{part.price:.2f}",
            "No",
            "",
            "Yes",
            str(warehouse),
            str(row["fulfillable"]),
            str(unsellable),
            str(reserved),
            str(
                warehouse
                + row["inbound_working"]
                + row["inbound_shipped"]
                + row["inbound_receiving"]
            ),
            "0.12",
            str(row["inbound_working"]),
            str(row["inbound_shipped"]),
            str(row["inbound_receiving"]),
        )
        lines.append("\t".join(values))
    return "\n".join(lines) + "\n"


def render_listings_report(world: MerchantWorld) -> str:
    columns = (
        "item-name",
        "seller-sku",
        "price",
        "quantity",
        "open-date",
        "asin1",
        "fulfillment-channel",
        "status",
    )
    lines = ["\t".join(columns)]
    for part in world.catalog:
        lines.append(
            "\t".join(
                (
                    part.title,
                    part.sku,
                    f"{part.price:.2f}",
                    "" if part.amazon_fba else "25",
                    f"{world.history_start.isoformat()} 08:00:00 PST",
                    part.asin,
                    "AMAZON_NA" if part.amazon_fba else "DEFAULT",
                    "Active",
                )
            )
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Handlers: (state, request, merchant_id, now) -> (status, body) or Response


def _orders_search(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    q = request.query_params
    created_after = _parse_time(q.get("createdAfter"), "createdAfter")
    updated_after = _parse_time(q.get("lastUpdatedAfter"), "lastUpdatedAfter")
    if (created_after is None) == (updated_after is None):
        raise BadRequest("Exactly one of createdAfter and lastUpdatedAfter must be specified")
    try:
        page_size = int(q.get("maxResultsPerPage", state.config.orders_page_size))
    except ValueError:
        raise BadRequest("maxResultsPerPage must be an integer from 1 to 100") from None
    if not 1 <= page_size <= 100:
        raise BadRequest("maxResultsPerPage must be an integer from 1 to 100")
    page_size = min(page_size, state.config.orders_page_size)
    datasets = frozenset(d.upper() for d in _list_param(request, "includedData"))
    unknown = datasets - ALL_ORDER_DATASETS - {"TAX", "PAYMENT"}
    if unknown:
        raise BadRequest(f"includedData has unknown values: {', '.join(sorted(unknown))}")
    key = _query_key(request, {"paginationToken", "maxResultsPerPage", "includedData"})
    offset = 0
    token = q.get("paginationToken")
    if token:
        payload = _decode_token(token)
        if payload.get("q") != key:
            raise BadRequest(
                "paginationToken was issued for different search parameters; repeat them unchanged"
            )
        offset = int(payload["o"])
        now = datetime.fromisoformat(payload["n"])
    latest = now - timedelta(minutes=2)
    before_name = "createdBefore" if created_after else "lastUpdatedBefore"
    before = _parse_time(q.get(before_name), before_name)
    if before is None:
        before = latest
    elif before > latest and not token:
        raise BadRequest(f"{before_name} must be at least 2 minutes before the time of the request")
    after = created_after or updated_after
    assert after is not None
    if after >= before:
        raise BadRequest(
            f"{before_name} must be later than {'createdAfter' if created_after else 'lastUpdatedAfter'}"
        )
    marketplaces = _list_param(request, "marketplaceIds")
    world = state.world(merchant)
    if marketplaces and AMAZON_US_MARKETPLACE_ID not in marketplaces:
        plans: list[AmazonOrderPlan] = []
    elif created_after:
        plans = world.amazon_orders_created_between(after, before, now)
    else:
        plans = world.amazon_orders_updated_between(after, before, now)
    statuses = {s.upper() for s in _list_param(request, "fulfillmentStatuses")}
    if statuses:
        plans = [
            p
            for p in plans
            if ("SHIPPED" if _order_status(p, now)[0] == "DELIVERED" else _order_status(p, now)[0])
            in statuses
        ]
    fulfilled_by = {s.upper() for s in _list_param(request, "fulfilledBy")}
    if fulfilled_by:
        plans = [p for p in plans if p.fulfilled_by in fulfilled_by]
    page = plans[offset : offset + page_size]
    body: dict[str, Any] = {"orders": [render_order(p, now, datasets) for p in page]}
    if offset + page_size < len(plans):
        body["pagination"] = {
            "nextToken": _encode_token({"q": key, "o": offset + page_size, "n": now.isoformat()})
        }
    body[before_name] = iso(before)
    return 200, body


def _orders_get(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    order_id = request.path_params["orderId"]
    if not ORDER_ID_RE.fullmatch(order_id):
        raise BadRequest("Invalid Input")
    datasets = frozenset(d.upper() for d in _list_param(request, "includedData"))
    plan = state.world(merchant).amazon_order(order_id, now)
    if plan is None:
        raise NotFound(f"Order {order_id} not found")
    return 200, {"order": render_order(plan, now, datasets)}


def _inventory_summaries(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    q = request.query_params
    if q.get("granularityType") != "Marketplace":
        raise BadRequest("granularityType must be Marketplace")
    if not q.get("granularityId"):
        raise BadRequest("granularityId is required")
    if not _list_param(request, "marketplaceIds"):
        raise BadRequest("marketplaceIds is required")
    details = q.get("details", "false").lower() == "true"
    offset = 0
    key = _query_key(request, {"nextToken"})
    if q.get("nextToken"):
        payload = _decode_token(q["nextToken"])
        if payload.get("q") != key:
            raise BadRequest("nextToken was issued for different parameters; resend them unchanged")
        offset = int(payload["o"])
        now = datetime.fromisoformat(payload["n"])
    start = _parse_time(q.get("startDateTime"), "startDateTime")
    skus = set(_list_param(request, "sellerSkus"))
    rows = state.world(merchant).amazon_inventory(now)
    if start is not None:
        rows = [r for r in rows if r["last_updated"] >= start]
    if skus:
        rows = [r for r in rows if r["part"].sku in skus]
    if AMAZON_US_MARKETPLACE_ID not in _list_param(request, "marketplaceIds"):
        rows = []
    size = state.config.inventory_page_size
    summaries = []
    for r in rows[offset : offset + size]:
        part = r["part"]
        reserved = r["reserved_customer"] + r["reserved_fc"]
        unfulfillable = r["unfulfillable_customer_damaged"] + r["unfulfillable_warehouse_damaged"]
        summary: dict[str, Any] = {
            "asin": part.asin,
            "fnSku": part.fnsku,
            "sellerSku": part.sku,
            "condition": "NewItem",
        }
        if details:
            summary["inventoryDetails"] = {
                "fulfillableQuantity": r["fulfillable"],
                "inboundWorkingQuantity": r["inbound_working"],
                "inboundShippedQuantity": r["inbound_shipped"],
                "inboundReceivingQuantity": r["inbound_receiving"],
                "reservedQuantity": {
                    "totalReservedQuantity": reserved,
                    "pendingCustomerOrderQuantity": r["reserved_customer"],
                    "pendingTransshipmentQuantity": 0,
                    "fcProcessingQuantity": r["reserved_fc"],
                },
                "researchingQuantity": {
                    "totalResearchingQuantity": r["researching"],
                    "researchingQuantityBreakdown": [],
                },
                "unfulfillableQuantity": {
                    "totalUnfulfillableQuantity": unfulfillable,
                    "customerDamagedQuantity": r["unfulfillable_customer_damaged"],
                    "warehouseDamagedQuantity": r["unfulfillable_warehouse_damaged"],
                    "distributorDamagedQuantity": 0,
                    "carrierDamagedQuantity": 0,
                    "defectiveQuantity": 0,
                    "expiredQuantity": 0,
                },
            }
        summary["lastUpdatedTime"] = iso(r["last_updated"])
        summary["productName"] = part.title
        summary["totalQuantity"] = (
            r["fulfillable"]
            + reserved
            + unfulfillable
            + r["researching"]
            + r["inbound_working"]
            + r["inbound_shipped"]
            + r["inbound_receiving"]
        )
        summaries.append(summary)
    body: dict[str, Any] = {}
    if offset + size < len(rows):
        body["pagination"] = {
            "nextToken": _encode_token({"q": key, "o": offset + size, "n": now.isoformat()})
        }
    body["payload"] = {
        "granularity": {"granularityType": "Marketplace", "granularityId": q["granularityId"]},
        "inventorySummaries": summaries,
    }
    return 200, body


def _finance_transactions(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    q = request.query_params
    after = _parse_time(q.get("postedAfter"), "postedAfter")
    if after is None:
        raise BadRequest("Start date cannot be null")
    key = _query_key(request, {"nextToken"})
    offset = 0
    token = q.get("nextToken")
    if token:
        payload = _decode_token(token)
        if payload.get("q") != key:
            raise BadRequest("nextToken must be sent with the same arguments as the first request")
        offset = int(payload["o"])
        now = datetime.fromisoformat(payload["n"])
    latest = now - timedelta(minutes=2)
    before = _parse_time(q.get("postedBefore"), "postedBefore") or latest
    if before > latest and not token:
        raise BadRequest("postedBefore must be no later than two minutes before the request")
    if after >= before:
        raise BadRequest(
            "postedAfter must be earlier than postedBefore and more than two minutes before the request"
        )
    marketplace = q.get("marketplaceId")
    world = state.world(merchant)
    transactions = (
        []
        if (marketplace and marketplace != AMAZON_US_MARKETPLACE_ID)
        else world.amazon_transactions_posted_between(after, before)
    )
    if before - after > timedelta(days=180):
        # Amazon returns nothing when the range exceeds 180 days.
        transactions = []
    size = state.config.finances_page_size
    # Amazon's Finances API sometimes answers a first page with no transactions and a token: the
    # client must keep paging. Reproduce that for some queries, deterministically.
    empty_first = offset == 0 and not token and transactions and stable_int(key, merchant) % 4 == 0
    if empty_first:
        page: list[AmazonFinanceTransaction] = []
        next_offset = 0
    else:
        page = transactions[offset : offset + size]
        next_offset = offset + size
    payload_out: dict[str, Any] = {}
    if empty_first or next_offset < len(transactions):
        payload_out["nextToken"] = _encode_token({"q": key, "o": next_offset, "n": now.isoformat()})
    payload_out["transactions"] = [render_transaction(world, t) for t in page]
    return 200, {"payload": payload_out}


def _report_record(state: SandboxState, report: dict[str, Any]) -> dict[str, Any]:
    """A requested report's current state; status follows real elapsed time."""
    elapsed = state.config.report_queue_seconds + state.config.report_processing_seconds
    age = time.monotonic() - report["t0"]
    created = report["created"]
    record: dict[str, Any] = {
        "reportId": report["reportId"],
        "reportType": report["reportType"],
        "marketplaceIds": report["marketplaceIds"],
    }
    if report.get("dataStartTime"):
        record["dataStartTime"] = report["dataStartTime"]
    if report.get("dataEndTime"):
        record["dataEndTime"] = report["dataEndTime"]
    record["createdTime"] = iso(created)
    if age < state.config.report_queue_seconds:
        record["processingStatus"] = "IN_QUEUE"
        return record
    record["processingStartTime"] = iso(created)
    if age < elapsed:
        record["processingStatus"] = "IN_PROGRESS"
        return record
    record["processingStatus"] = report["outcome"]
    if report["outcome"] != "CANCELLED":
        record["processingEndTime"] = iso(created + timedelta(seconds=elapsed))
    if report["outcome"] == "DONE":
        record["reportDocumentId"] = report["documentId"]
    return record


def _settlement_record(s: AmazonSettlement) -> dict[str, Any]:
    return {
        "reportId": s.report_id,
        "reportType": SETTLEMENT_REPORT_TYPE,
        "dataStartTime": iso(s.start),
        "dataEndTime": iso(s.end),
        "createdTime": iso(s.report_created),
        "processingStatus": "DONE",
        "processingStartTime": iso(s.report_created),
        "processingEndTime": iso(s.report_created),
        "reportDocumentId": s.document_id,
    }


def _reports(state: SandboxState) -> dict[str, dict[str, Any]]:
    return state.channel_data(CHANNEL).setdefault("reports", {})


def set_report_outcome(state: SandboxState, report_type: str, outcome: str) -> None:
    """Make reports of `report_type` requested from now on end in `outcome` (DONE, FATAL, CANCELLED)."""
    if outcome not in ("DONE", "FATAL", "CANCELLED"):
        raise ValueError(f"report outcome must be DONE, FATAL or CANCELLED, got {outcome!r}")
    state.channel_data(CHANNEL).setdefault("report_outcomes", {})[report_type] = outcome


def _reports_list(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    q = request.query_params
    token = q.get("nextToken")
    if token:
        if len(q) > 1:
            raise BadRequest("nextToken must be the only parameter when it is present", "400")
        params = _decode_token(token, "400")
        now = datetime.fromisoformat(params["n"])
        offset = int(params["o"])
    else:
        params = {k: v for k, v in q.multi_items()}
        offset = 0
    types = [t for t in str(params.get("reportTypes", "")).split(",") if t]
    if not types:
        raise BadRequest("reportTypes is required unless nextToken is given", "400")
    try:
        page_size = int(params.get("pageSize", state.config.reports_page_size))
    except ValueError:
        raise BadRequest("pageSize must be an integer from 1 to 100", "400") from None
    if not 1 <= page_size <= 100:
        raise BadRequest("pageSize must be an integer from 1 to 100", "400")
    since = _parse_time(params.get("createdSince"), "createdSince", "400") or now - timedelta(
        days=90
    )
    until = _parse_time(params.get("createdUntil"), "createdUntil", "400") or now
    if since < now - timedelta(days=90, minutes=5):
        raise BadRequest("createdSince cannot be more than 90 days in the past", "400")
    statuses = {s for s in str(params.get("processingStatuses", "")).split(",") if s}
    records = []
    if SETTLEMENT_REPORT_TYPE in types:
        records.extend(
            _settlement_record(s)
            for s in state.world(merchant).amazon_settlements_reported_between(
                since, until + timedelta(seconds=1), now
            )
        )
    for report in _reports(state).values():
        if (
            report["merchant"] == merchant
            and report["reportType"] in types
            and since <= report["created"] <= until
        ):
            records.append(_report_record(state, report))
    if statuses:
        records = [r for r in records if r["processingStatus"] in statuses]
    records.sort(key=lambda r: (r["createdTime"], r["reportId"]), reverse=True)
    page = records[offset : offset + page_size]
    body: dict[str, Any] = {}
    if offset + page_size < len(records):
        carry = {k: v for k, v in params.items() if k not in ("nextToken", "o", "n")}
        body["nextToken"] = _encode_token({**carry, "o": offset + page_size, "n": now.isoformat()})
    body["reports"] = page
    return 200, body


def _report_get(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    report_id = request.path_params["reportId"]
    world = state.world(merchant)
    index = world.settlement_index_from_report_id(report_id)
    if index is not None:
        settlement = world.amazon_settlement(index)
        if settlement.report_created <= now:
            return 200, _settlement_record(settlement)
    report = _reports(state).get(report_id)
    if report is None or report["merchant"] != merchant:
        raise NotFound(f"Report {report_id} not found")
    return 200, _report_record(state, report)


def _report_create(
    state: SandboxState, request: Request, merchant: str, now: datetime, body: Any
) -> tuple[int, Any]:
    if not isinstance(body, dict) or not body.get("reportType"):
        raise BadRequest("Invalid input: reportType is required", "400")
    report_type = body["reportType"]
    if report_type == SETTLEMENT_REPORT_TYPE:
        raise BadRequest(
            f"Report type {SETTLEMENT_REPORT_TYPE} cannot be requested; Amazon schedules settlement reports, list them with getReports",
            "400",
        )
    if report_type not in REQUESTABLE_REPORT_TYPES:
        raise BadRequest(
            f"Invalid input: report type {report_type} is not supported by the sandbox", "400"
        )
    marketplaces = body.get("marketplaceIds")
    if not isinstance(marketplaces, list) or not marketplaces:
        raise BadRequest("Invalid input: marketplaceIds is required", "400")
    reports = _reports(state)
    report_id = (
        f"{50000000000 + stable_int(merchant, report_type, len(reports), now.isoformat()) % 10**10}"
    )
    outcome = state.channel_data(CHANNEL).get("report_outcomes", {}).get(report_type, "DONE")
    reports[report_id] = {
        "reportId": report_id,
        "merchant": merchant,
        "reportType": report_type,
        "marketplaceIds": marketplaces,
        "dataStartTime": body.get("dataStartTime"),
        "dataEndTime": body.get("dataEndTime"),
        "created": now,
        "t0": time.monotonic(),
        "outcome": outcome,
        "documentId": f"amzn1.spdoc.1.4.na.{report_id}",
    }
    return 202, {"reportId": report_id}


def _find_document(
    state: SandboxState, merchant: str | None, document_id: str, now: datetime
) -> tuple[str, bytes] | None:
    """(owner merchant, gzip bytes) for a document id, or None."""
    prefix = "amzn1.spdoc.1.4.na."
    if not document_id.startswith(prefix):
        return None
    report_id = document_id[len(prefix) :]
    report = _reports(state).get(report_id)
    if report is not None:
        world = state.world(report["merchant"])
        if report["reportType"] == "GET_FBA_MYI_UNSUPPRESSED_INVENTORY_DATA":
            text = render_inventory_report(world, report["created"])
        else:
            text = render_listings_report(world)
        return report["merchant"], gzip.compress(text.encode("utf-8"), mtime=0)
    candidates = (
        [merchant]
        if merchant
        else list(state.channel_data(CHANNEL).get("document_owners", {}).get(document_id, []))
    )
    for owner in candidates:
        world = state.world(owner)
        index = world.settlement_index_from_report_id(report_id)
        if index is not None:
            settlement = world.amazon_settlement(index)
            if settlement.report_created <= now:
                return owner, gzip.compress(render_settlement(settlement).encode("utf-8"), mtime=0)
    return None


def _document_get(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    document_id = request.path_params["reportDocumentId"]
    if _find_document(state, merchant, document_id, now) is None:
        raise NotFound(f"Report document {document_id} not found")
    # The download URL stands in for Amazon's pre-signed S3 URL: it needs no token.
    state.channel_data(CHANNEL).setdefault("document_owners", {}).setdefault(
        document_id, set()
    ).add(merchant)
    # Rebuild the mount prefix ("/amazon") from the request path rather than trusting root_path.
    path = request.url.path
    prefix = path[: path.index("/reports/2021-06-30/documents/")]
    url = f"{request.url.scheme}://{request.url.netloc}{prefix}/_documents/{document_id}"
    return 200, {"reportDocumentId": document_id, "url": url, "compressionAlgorithm": "GZIP"}


def _competitive_pricing(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    q = request.query_params
    if not q.get("MarketplaceId"):
        raise BadRequest("MarketplaceId is required")
    item_type = q.get("ItemType")
    if item_type not in ("Asin", "Sku"):
        raise BadRequest("ItemType must be Asin or Sku")
    ids = _list_param(request, "Asins" if item_type == "Asin" else "Skus")
    if not 1 <= len(ids) <= 20:
        raise BadRequest(f"{'Asins' if item_type == 'Asin' else 'Skus'} must list 1 to 20 items")
    world = state.world(merchant)
    payload = []
    for ident in ids:
        part = world.part_by_asin(ident) if item_type == "Asin" else world.part_by_sku(ident)
        key = "ASIN" if item_type == "Asin" else "SellerSKU"
        if part is None:
            payload.append(
                {
                    "status": "ClientError",
                    key: ident,
                    "Product": {"Identifiers": {}},
                    **_errors(
                        "InvalidInput", f"{ident} is not a valid {item_type} for this seller"
                    ),
                }
            )
            continue
        offers = world.amazon_competitors(part, now)
        best = min(offers, key=lambda o: o["price"] + o["shipping"])
        identifiers: dict[str, Any] = {
            "MarketplaceASIN": {"MarketplaceId": AMAZON_US_MARKETPLACE_ID, "ASIN": part.asin}
        }
        if item_type == "Sku":
            identifiers["SKUIdentifier"] = {
                "MarketplaceId": AMAZON_US_MARKETPLACE_ID,
                "SellerId": world.seller_id,
                "SellerSKU": part.sku,
            }
        payload.append(
            {
                "status": "Success",
                key: ident,
                "Product": {
                    "Identifiers": identifiers,
                    "CompetitivePricing": {
                        "CompetitivePrices": [
                            {
                                "CompetitivePriceId": "1",
                                "Price": {
                                    "LandedPrice": _p(best["price"] + best["shipping"]),
                                    "ListingPrice": _p(best["price"]),
                                    "Shipping": _p(best["shipping"]),
                                },
                                "condition": "New",
                                "subcondition": "New",
                                "belongsToRequester": bool(best["mine"]),
                            }
                        ],
                        "NumberOfOfferListings": [{"condition": "New", "Count": len(offers)}],
                    },
                    "SalesRankings": [
                        {
                            "ProductCategoryId": "automotive_display_on_website",
                            "Rank": 1000 + stable_int(part.sku) % 90000,
                        }
                    ],
                },
            }
        )
    return 200, {"payload": payload}


def _listing_offers(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    q = request.query_params
    sku = request.path_params["SellerSKU"]
    if not q.get("MarketplaceId") or not q.get("ItemCondition"):
        raise BadRequest("MarketplaceId and ItemCondition are required")
    world = state.world(merchant)
    part = world.part_by_sku(sku)
    if part is None:
        raise NotFound(f"SKU {sku} not found for this seller")
    offers = world.amazon_competitors(part, now)
    best = min(offers, key=lambda o: o["price"] + o["shipping"])

    def channel(o: dict[str, Any]) -> str:
        return "Amazon" if o["fba"] else "Merchant"

    lowest: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for o in offers:
        ch = channel(o)
        counts[ch] = counts.get(ch, 0) + 1
        if (
            ch not in lowest
            or o["price"] + o["shipping"] < lowest[ch]["price"] + lowest[ch]["shipping"]
        ):
            lowest[ch] = o
    payload = {
        "SKU": sku,
        "status": "Success",
        "ItemCondition": q["ItemCondition"],
        "Identifier": {
            "MarketplaceId": q["MarketplaceId"],
            "ItemCondition": q["ItemCondition"],
            "SellerSKU": sku,
        },
        "Summary": {
            "LowestPrices": [
                {
                    "condition": "new",
                    "fulfillmentChannel": ch,
                    "LandedPrice": _p(o["price"] + o["shipping"]),
                    "ListingPrice": _p(o["price"]),
                    "Shipping": _p(o["shipping"]),
                }
                for ch, o in sorted(lowest.items())
            ],
            "BuyBoxPrices": [
                {
                    "condition": "new",
                    "LandedPrice": _p(best["price"] + best["shipping"]),
                    "ListingPrice": _p(best["price"]),
                    "Shipping": _p(best["shipping"]),
                }
            ],
            "NumberOfOffers": [
                {"condition": "new", "fulfillmentChannel": ch, "OfferCount": n}
                for ch, n in sorted(counts.items())
            ],
            "BuyBoxEligibleOffers": [
                {"condition": "new", "fulfillmentChannel": ch, "OfferCount": n}
                for ch, n in sorted(counts.items())
            ],
            "TotalOfferCount": len(offers),
        },
        "Offers": [
            {
                "Shipping": _p(o["shipping"]),
                "ListingPrice": _p(o["price"]),
                "ShippingTime": {"maximumHours": 48, "minimumHours": 24, "availabilityType": "NOW"},
                "SellerFeedbackRating": {
                    "FeedbackCount": o["feedback"],
                    "SellerPositiveFeedbackRating": Decimal(o["rating"]),
                },
                "SubCondition": "new",
                "IsFeaturedMerchant": o["rating"] >= 90,
                "IsBuyBoxWinner": o is best,
                "SellerId": o["seller_id"],
                "MyOffer": bool(o["mine"]),
                "IsFulfilledByAmazon": bool(o["fba"]),
            }
            for o in offers
        ],
        "MarketplaceID": q["MarketplaceId"],
    }
    return 200, {"payload": payload}


# ---------------------------------------------------------------------------------------------
# Malformed-record faults: append one broken copy of a record; the real records stay intact.


def _break_order(body: dict[str, Any]) -> None:
    orders = body.get("orders")
    if orders:
        bad = copy.deepcopy(orders[0])
        bad.pop("orderId", None)
        bad["createdTime"] = "not-a-date"
        orders.append(bad)


def _break_transaction(body: dict[str, Any]) -> None:
    transactions = body.get("payload", {}).get("transactions")
    if transactions:
        bad = copy.deepcopy(transactions[0])
        bad.pop("transactionId", None)
        bad["totalAmount"] = {"currencyAmount": "garbage", "currencyCode": USD}
        transactions.append(bad)


def _break_inventory(body: dict[str, Any]) -> None:
    summaries = body.get("payload", {}).get("inventorySummaries")
    if summaries:
        bad = copy.deepcopy(summaries[0])
        bad.pop("sellerSku", None)
        bad["totalQuantity"] = "n/a"
        summaries.append(bad)


def _break_report(body: dict[str, Any]) -> None:
    reports = body.get("reports")
    if reports:
        bad = copy.deepcopy(reports[0])
        bad.pop("reportId", None)
        bad["processingStatus"] = "???"
        reports.append(bad)


# ---------------------------------------------------------------------------------------------
# Endpoint wrapper: auth, faults, quota, fixtures, headers


def _throttled(retry_after: float | None) -> Response:
    # Amazon's own 429s carry no Retry-After; the injected throttle fault adds one.
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
    return json_response(
        _errors("QuotaExceeded", "You exceeded your quota for the requested resource.", ""),
        429,
        headers,
    )


def _endpoint(
    state: SandboxState,
    operation: str,
    handler: Callable[..., tuple[int, Any]],
    *,
    breaker: Callable[[dict[str, Any]], None] | None = None,
    takes_body: bool = False,
) -> Callable[[Request], Any]:
    rate, burst = RATE_LIMITS[operation]
    allowed = LIST_FAULTS if breaker is not None else API_FAULTS

    async def endpoint(request: Request) -> Response:
        token = request.headers.get("x-amz-access-token")
        merchant, why = state.token_owner(token)
        if merchant is None:
            state.count(operation, status=403)
            details = (
                "The access token you provided has expired."
                if why == "expired"
                else "The access token you provided is revoked, malformed or invalid."
            )
            return json_response(
                _errors("Unauthorized", "Access to requested resource is denied.", details), 403
            )
        fault = state.faults.draw(merchant, operation, allowed)
        if fault == "expired_token":
            assert token is not None
            state.revoke_token(token)
            state.count(operation, status=403, caller=merchant)
            return json_response(
                _errors(
                    "Unauthorized",
                    "Access to requested resource is denied.",
                    "The access token you provided has expired.",
                ),
                403,
            )
        if fault == "throttle":
            return _throttled(state.config.faults.retry_after_seconds)
        if fault == "server_error":
            status = int(str(state.faults.choice([500, 503])))
            return json_response(
                _errors(
                    "InternalFailure" if status == 500 else "ServiceUnavailable",
                    "We encountered an internal error. Please try again.",
                ),
                status,
            )
        if fault == "timeout":
            await hold_for_timeout(state)
        if not state.take_quota(CHANNEL, merchant, operation, rate, burst):
            state.count(operation, throttled=True, status=429, caller=merchant)
            return _throttled(None)
        now = state.now()
        fixture = state.pop_fixture(CHANNEL, merchant, operation)
        try:
            if fixture is not None:
                status, body = fixture
            elif takes_body:
                try:
                    payload = json.loads(await request.body() or b"null")
                except ValueError:
                    raise BadRequest("the request body must be JSON", "400") from None
                status, body = handler(state, request, merchant, now, payload)
            else:
                status, body = handler(state, request, merchant, now)
        except BadRequest as exc:
            status, body = 400, _errors(exc.code, exc.message, exc.message)
        except NotFound as exc:
            status, body = 404, _errors("NotFound", str(exc))
        headers = {}
        if 200 <= status < 300:
            headers["x-amzn-RateLimit-Limit"] = f"{rate * state.config.quota_speedup:g}"
            if fault == "malformed_record" and breaker is not None and fixture is None:
                breaker(body)
        headers["x-amzn-RequestId"] = (
            f"{stable_int(operation, merchant, now.isoformat(), request.url.query) % 10**12:012d}"
        )
        state.count(operation, status=status, caller=merchant)
        response = json_response(body, status, headers)
        if fault in ("connection_reset", "truncated_body"):
            return transport_fault_response(state, fault, response)
        return response

    return endpoint


def _token_endpoint(state: SandboxState) -> Callable[[Request], Any]:
    async def token(request: Request) -> Response:
        # Parsed by hand: Starlette's form parser needs python-multipart, which we do not ship.
        form = {
            k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()
        }
        refresh = str(form.get("refresh_token", ""))
        merchant = refresh[len(REFRESH_PREFIX) :] if refresh.startswith(REFRESH_PREFIX) else ""
        fault = state.faults.draw(merchant or "-", "lwaToken", TRANSPORT_FAULTS - {"throttle"})
        if fault == "server_error":
            return json_response(
                {"error": "ServerError", "error_description": "The server encountered an error"},
                500,
            )
        if fault == "timeout":
            await hold_for_timeout(state)
        if form.get("grant_type") != "refresh_token":
            return json_response(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "grant_type must be refresh_token",
                },
                400,
            )
        if not form.get("client_id") or not form.get("client_secret"):
            return json_response(
                {"error": "invalid_client", "error_description": "Client authentication failed"},
                401,
            )
        if not MERCHANT_ID_PATTERN.fullmatch(merchant):
            return json_response(
                {
                    "error": "invalid_grant",
                    "error_description": "The request has an invalid grant parameter : refresh_token",
                },
                400,
            )
        access, lifetime = state.issue_token(CHANNEL, merchant)
        state.count("lwaToken", caller=merchant)
        response = json_response(
            {
                "access_token": access,
                "refresh_token": refresh,
                "token_type": "bearer",
                "expires_in": int(lifetime) if lifetime >= 1 else lifetime,
            }
        )
        if fault in ("connection_reset", "truncated_body"):
            return transport_fault_response(state, fault, response)
        return response

    return token


def _document_download(state: SandboxState) -> Callable[[Request], Any]:
    async def download(request: Request) -> Response:
        document_id = request.path_params["documentId"]
        fault = state.faults.draw("-", "reportDocumentDownload", TRANSPORT_FAULTS - {"throttle"})
        if fault == "server_error":
            return Response(
                b"<Error><Code>InternalError</Code></Error>", 500, media_type="application/xml"
            )
        if fault == "timeout":
            await hold_for_timeout(state)
        found = _find_document(state, None, document_id, state.now())
        if found is None:
            return Response(
                b"<Error><Code>NoSuchKey</Code></Error>", 404, media_type="application/xml"
            )
        state.count("reportDocumentDownload")
        response = Response(found[1], 200, media_type="application/octet-stream")
        if fault in ("connection_reset", "truncated_body"):
            return transport_fault_response(state, fault, response)
        return response

    return download


def routes(state: SandboxState) -> list[Route]:
    """The Amazon routes, relative to the `/amazon` mount."""
    return [
        Route("/auth/o2/token", _token_endpoint(state), methods=["POST"]),
        Route(
            "/orders/2026-01-01/orders",
            _endpoint(state, "searchOrders", _orders_search, breaker=_break_order),
            methods=["GET"],
        ),
        Route(
            "/orders/2026-01-01/orders/{orderId}",
            _endpoint(state, "getOrder", _orders_get),
            methods=["GET"],
        ),
        Route(
            "/fba/inventory/v1/summaries",
            _endpoint(
                state, "getInventorySummaries", _inventory_summaries, breaker=_break_inventory
            ),
            methods=["GET"],
        ),
        Route(
            "/finances/2024-06-19/transactions",
            _endpoint(state, "listTransactions", _finance_transactions, breaker=_break_transaction),
            methods=["GET"],
        ),
        Route(
            "/reports/2021-06-30/reports",
            _endpoint(state, "getReports", _reports_list, breaker=_break_report),
            methods=["GET"],
        ),
        Route(
            "/reports/2021-06-30/reports",
            _endpoint(state, "createReport", _report_create, takes_body=True),
            methods=["POST"],
        ),
        Route(
            "/reports/2021-06-30/reports/{reportId}",
            _endpoint(state, "getReport", _report_get),
            methods=["GET"],
        ),
        Route(
            "/reports/2021-06-30/documents/{reportDocumentId}",
            _endpoint(state, "getReportDocument", _document_get),
            methods=["GET"],
        ),
        Route("/_documents/{documentId}", _document_download(state), methods=["GET"]),
        Route(
            "/products/pricing/v0/competitivePrice",
            _endpoint(state, "getCompetitivePricing", _competitive_pricing),
            methods=["GET"],
        ),
        Route(
            "/products/pricing/v0/listings/{SellerSKU}/offers",
            _endpoint(state, "getListingOffers", _listing_offers),
            methods=["GET"],
        ),
    ]
