"""Walmart Marketplace API routes for the sandbox, mounted under `/walmart`.

Shapes follow Walmart's US Marketplace API reference (developer.walmart.com) and the shared example
payloads in tests/fixtures/walmart:

- POST /v3/token                                     Token API (client_credentials, Basic auth)
- GET  /v3/orders                                    Get all orders (createdStartDate/EndDate or
                                                     lastModifiedStartDate/EndDate, limit,
                                                     shipNodeType; `list.meta.nextCursor` is a
                                                     ready query string for the next page)
- GET  /v3/inventories                               Multi-node inventory (limit, nextCursor)
- GET  /v3/report/reconreport/availableReconFiles    report dates (MMDDYYYY)
- GET  /v3/report/reconreport/reconFileJson          one reconciliation report (reportDate), in
                                                     pages of `noOfRecords` rows (at most 1,000,
                                                     the default) from `offset`; `nextOffset` is
                                                     the next page's offset, -1 on the last

Authentication: the Basic-auth client id `sandbox-client-<merchant_id>` identifies the merchant
(any non-empty client secret is accepted). API calls carry `WM_SEC.ACCESS_TOKEN`, `WM_SVC.NAME` and
`WM_QOS.CORRELATION_ID`; an expired or unknown token gets Walmart's 401
`UNAUTHORIZED.GMP_GATEWAY_API`.

Data (deterministic in seed + merchant id, from the world's catalog and buyer generator):

- Orders are `SellerFulfilled` (Created, then Acknowledged, Shipped, Delivered) or `WFSFulfilled`
  (Walmart acknowledges and ships them). Like Walmart, GET /v3/orders answers one ship-node type per
  query (`shipNodeType`, default SellerFulfilled). Some seller orders are cancelled before
  shipping (their charges drop to amount 0 and tax to null) and some delivered lines are refunded
  (a `refund` with negative charges).
- Orders older than 180 days are refused with Walmart's INVALID_REQUEST_PARAM error, as Walmart
  does.
- Reconciliation: a settlement every 14 days (per-merchant phase, on UTC midnights). A report
  holds a PaymentSummary row and one row per amount (Product Price, Product tax, Product tax
  withheld, Shipping Price, ..., Commission on Product, WFS fees) for every line shipped or refunded
  in the period, so its Total Payable equals the sum of its rows and every amount matches the
  order's charges to the cent. Blank cells are the literal two-character `""`, as Walmart sends
  them, except in reserve rows, whose blank cells are empty strings (both occur in real files);
  Partner GTIN is a 14-digit string with its leading zeros.
- Money without an order (no Purchase Order #, blank order cells), as Walmart books it:
  a `Service Fee` / `WFS StorageFee` every report (WFS storage), a `Service Fee` / `Walmart Product
  Advertising` every report (Sponsored Products spend settled from proceeds), and a reserve:
  every sixth report holds back a tenth of its product sales (`Reserve` / `Funds withheld to cover
  future refunds`, negative) and the report two periods later gives it back (`Release Reserve` /
  `Reserve credited back`, positive). Amount Type of all of these: `Fee/Reimbursement`.
- Once in every eight reports (a fixed one per block of eight) the storage fee is a large
  long-term charge that outweighs the period's sales: that report's Total Payable is negative
  (Walmart then debits the seller).
- Deliberately, once per calendar quarter (by report date): one report's Total Payable includes
  the Amount of a row the report does not contain (one line short), as real files occasionally
  are. `walmart_short_reports` says which report and by how much.

Markets: every call's `WM_MARKET` header (us, ca, mx; the US when absent, as Walmart defaults) is
checked (another value is a 400) and picks the market the seller sells in: its own order stream,
buyers in that country, amounts in its currency (USD, CAD, MXN) and its own stock and settlements.

Python-side introspection for tests: `walmart_orders_modified_between`, `walmart_inventory`,
`walmart_recon_report_dates`, `walmart_recon_report`, `walmart_settlements_between`,
`walmart_short_reports`; each takes `market=`.
"""

from __future__ import annotations

import base64
import contextlib
import functools
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlencode

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
    Buyer,
    Part,
    currency_of,
    fake_buyer,
    money,
    order_seconds,
    parts_catalog,
    plans_created_between,
    plans_created_by,
    plans_modified_between,
    serving,
    stable_int,
    stable_rng,
    whole_seconds,
)

CHANNEL = "walmart"
# The markets the sandbox sells in (WM_MARKET -> country); Walmart's own default is the US.
MARKET_HEADER = "WM_MARKET"
MARKETS: dict[str, str] = {"us": "US", "ca": "CA", "mx": "MX"}
DEFAULT_MARKET = "us"
CLIENT_PREFIX = "sandbox-client-"
# Walmart access tokens live 15 minutes.
ACCESS_TOKEN_SECONDS = 900
LOOKBACK = timedelta(days=180)
SHIP_NODE_TYPES = ("SellerFulfilled", "WFSFulfilled", "3PLFulfilled")

# Per-seller limits as (requests per second, burst), from the calls-per-minute figures on
# Walmart's rate-limiting page (orders 5000/min, inventories 200/min, token 6000/min,
# reconciliation listings and files 20/min).
RATE_LIMITS: dict[str, tuple[float, float]] = {
    "getAllOrders": (5000 / 60, 5000),
    "getMultiNodeInventory": (200 / 60, 200),
    "getAvailableReconReportDates": (20 / 60, 20),
    "getReconReportJson": (20 / 60, 20),
}
TRANSPORT_FAULTS = frozenset(
    {"throttle", "server_error", "timeout", "connection_reset", "truncated_body"}
)
API_FAULTS = TRANSPORT_FAULTS | {"expired_token"}
LIST_FAULTS = API_FAULTS | {"malformed_record"}

MAX_ORDER_LIFETIME = timedelta(days=60)
SETTLEMENT_PERIOD = timedelta(days=14)
SETTLEMENT_EPOCH = datetime(2024, 1, 3, tzinfo=UTC)
# Automotive & Powersports referral fee on Walmart: 12% of the sale price including shipping.
COMMISSION_RATE = Decimal("0.12")
# Walmart publishes a period's reconciliation report some hours after the period closes.
REPORT_DELAY = timedelta(hours=6)
ZERO = Decimal("0.00")
BLANK = '""'  # how Walmart writes an empty reconciliation cell
# reconFileJson answers a report in pages of at most this many rows (Walmart's 1,000-row pages).
RECON_MAX_RECORDS = 1000
# Every RESERVE_EVERY-th report holds back RESERVE_RATE of its product sales, and the report
# RESERVE_HELD_FOR periods later releases it.
RESERVE_EVERY = 6
RESERVE_HELD_FOR = 2
RESERVE_RATE = Decimal("0.10")
# One report in every NEGATIVE_EVERY carries a storage charge larger than its sales.
NEGATIVE_EVERY = 8
# Amounts Walmart settles without an order: (Transaction Type, Transaction Description).
STORAGE_FEE = ("Service Fee", "WFS StorageFee")
ADVERTISING_FEE = ("Service Fee", "Walmart Product Advertising")
RESERVE_HELD = ("Reserve", "Funds withheld to cover future refunds")
RESERVE_RELEASED = ("Release Reserve", "Reserve credited back")


# The market of the request being served, from its WM_MARKET header (the US when absent). The
# sandbox seller sells in whichever market a request names: the market picks the order stream,
# the buyers' country and the currency of every amount.
_SERVING: ContextVar[str] = ContextVar("walmart_sandbox_market", default=DEFAULT_MARKET)


def serving_market(market: str) -> contextlib.AbstractContextManager[None]:
    """Plan and render as the seller in Walmart market `market` (us, ca, mx) meanwhile."""
    return serving(_SERVING, market.lower(), MARKETS, "Walmart market")


def _currency() -> str:
    return currency_of(MARKETS[_SERVING.get()])


def _stream(name: str) -> str:
    """A random stream's name in the market served: the US keeps the names it had before markets
    existed, so its data never moves."""
    market = _SERVING.get()
    return name if market == DEFAULT_MARKET else f"{name}-{market}"


# ---------------------------------------------------------------------------------------------
# Plans


@dataclass(frozen=True)
class WalmartLine:
    line_number: str
    part: Part
    quantity: int
    unit_price: Decimal
    shipping: Decimal
    product_tax: Decimal
    shipping_tax: Decimal
    wfs_fee: Decimal

    @property
    def product(self) -> Decimal:
        return self.unit_price * self.quantity

    @property
    def commission_product(self) -> Decimal:
        return money(self.product * COMMISSION_RATE)

    @property
    def commission_shipping(self) -> Decimal:
        return money(self.shipping * COMMISSION_RATE)

    @property
    def gtin(self) -> str:
        # GTIN-14 from the UPC-A: two leading zeros, kept as a string.
        return "00" + self.part.upc


@dataclass(frozen=True)
class WalmartOrderPlan:
    merchant_id: str
    purchase_order_id: str
    customer_order_id: str
    customer_email_id: str
    created: datetime
    ship_node_type: str  # SellerFulfilled | WFSFulfilled
    method_code: str
    buyer: Buyer
    lines: tuple[WalmartLine, ...]
    ack_at: datetime
    ship_at: datetime | None
    deliver_at: datetime | None
    cancel_at: datetime | None
    refund_at: datetime | None
    refunded_lines: tuple[int, ...]
    carrier: str
    tracking_number: str

    def events(self) -> list[datetime]:
        return [
            t
            for t in (
                self.created,
                self.ack_at,
                self.ship_at,
                self.deliver_at,
                self.cancel_at,
                self.refund_at,
            )
            if t is not None
        ]

    def modified_at(self, now: datetime) -> datetime | None:
        if self.created > now:
            return None
        return max(t for t in self.events() if t <= now)

    def status_at(self, now: datetime) -> str:
        if self.cancel_at is not None and self.cancel_at <= now:
            return "Cancelled"
        if self.deliver_at is not None and self.deliver_at <= now:
            return "Delivered"
        if self.ship_at is not None and self.ship_at <= now:
            return "Shipped"
        return "Acknowledged" if self.ack_at <= now else "Created"

    def refunded(self) -> tuple[WalmartLine, ...]:
        return tuple(self.lines[i] for i in self.refunded_lines)


_CARRIERS = (("UPS", "1Z", 16), ("USPS", "9400", 18), ("FedEx", "", 12))


def _wfs_fee(part: Part) -> Decimal:
    # A simplified WFS fulfillment fee table by shipping weight (per unit).
    if part.weight_lb <= 1:
        return Decimal("3.45")
    if part.weight_lb <= 2:
        return Decimal("4.95")
    if part.weight_lb <= 3:
        return Decimal("5.45")
    return money(Decimal("5.75") + (part.weight_lb - 3) * Decimal("0.40"))


@functools.lru_cache(maxsize=4096)
def _orders_created_on(
    seed: int, merchant_id: str, history_start: date, day: date, market: str = DEFAULT_MARKET
) -> tuple[WalmartOrderPlan, ...]:
    if day < history_start:
        return ()
    with serving_market(market):
        return _plan_day(seed, merchant_id, day)


def _plan_day(seed: int, merchant_id: str, day: date) -> tuple[WalmartOrderPlan, ...]:
    catalog = parts_catalog(seed, merchant_id)
    rng, midnight, seconds = order_seconds(seed, merchant_id, _stream("walmart"), day, (2, 5), 1)
    plans = []
    for index, second in enumerate(seconds):
        orng = stable_rng(seed, merchant_id, _stream("walmart-order"), day.isoformat(), index)
        created = midnight + timedelta(seconds=second)
        wfs = orng.random() < 0.35
        buyer = fake_buyer(orng, email_domain="relay.walmart.com", country=MARKETS[_SERVING.get()])
        n_lines = orng.choices([1, 2, 3], weights=[72, 20, 8])[0]
        lines = []
        for line_no, part in enumerate(orng.sample(catalog, n_lines)):
            quantity = orng.choices([1, 2, 3], weights=[80, 15, 5])[0]
            product = part.price * quantity
            shipping = ZERO if wfs or product >= 35 else Decimal(orng.choice(["4.99", "6.99"]))
            lines.append(
                WalmartLine(
                    line_number=str(line_no + 1),
                    part=part,
                    quantity=quantity,
                    unit_price=part.price,
                    shipping=shipping,
                    product_tax=money(product * buyer.address.tax_rate),
                    shipping_tax=money(shipping * buyer.address.tax_rate),
                    wfs_fee=_wfs_fee(part) * quantity if wfs else ZERO,
                )
            )
        ack_at = created + timedelta(minutes=orng.randint(1, 5) if wfs else orng.randint(20, 240))
        fate = orng.random()
        ship_at = deliver_at = cancel_at = refund_at = None
        refunded: tuple[int, ...] = ()
        if fate < 0.05 and not wfs:
            cancel_at = ack_at + timedelta(hours=orng.uniform(1, 20))
        else:
            ship_at = ack_at + timedelta(hours=orng.uniform(4, 16) if wfs else orng.uniform(10, 48))
            deliver_at = ship_at + timedelta(hours=orng.uniform(30, 120))
            if fate > 0.94:
                refund_at = deliver_at + timedelta(days=orng.uniform(3, 25))
                refunded = (
                    tuple(range(len(lines)))
                    if len(lines) == 1 or orng.random() < 0.5
                    else (orng.randrange(len(lines)),)
                )
        carrier, prefix, digits = orng.choice(_CARRIERS)
        po = f"{1800000000000 + stable_int(seed, merchant_id, _stream('walmart-po'), day.isoformat(), index) % 10**12}"
        plans.append(
            WalmartOrderPlan(
                merchant_id=merchant_id,
                purchase_order_id=po,
                customer_order_id=f"{2000000000000 + stable_int(po, 'customer-order') % 10**12}",
                customer_email_id=f"{stable_int(po, 'email'):016X}{stable_int(po, 'email2'):016X}@relay.walmart.com",
                created=created,
                ship_node_type="WFSFulfilled" if wfs else "SellerFulfilled",
                method_code=orng.choice(["Value", "Standard", "Standard", "Express"])
                if not wfs
                else "Standard",
                buyer=buyer,
                lines=tuple(lines),
                ack_at=ack_at.replace(microsecond=0),
                ship_at=whole_seconds(ship_at),
                deliver_at=whole_seconds(deliver_at),
                cancel_at=whole_seconds(cancel_at),
                refund_at=whole_seconds(refund_at),
                refunded_lines=refunded,
                carrier=carrier,
                tracking_number=prefix + "".join(orng.choice("0123456789") for _ in range(digits)),
            )
        )
    return tuple(plans)


def _plans_on(state: SandboxState, merchant_id: str) -> Callable[[date], Iterable[WalmartOrderPlan]]:
    market = _SERVING.get()
    return lambda day: _orders_created_on(
        state.config.seed, merchant_id, state.config.history_start, day, market
    )


def _orders_created_between(
    state: SandboxState, merchant_id: str, a: datetime, b: datetime
) -> list[WalmartOrderPlan]:
    return plans_created_between(_plans_on(state, merchant_id), a, b)


def order_plans_modified_between(
    state: SandboxState, merchant_id: str, a: datetime, b: datetime, now: datetime
) -> list[WalmartOrderPlan]:
    """Order plans whose last change as of `now` is in [a, b), by (last change, order id)."""
    return plans_modified_between(
        _plans_on(state, merchant_id), a, b, now, MAX_ORDER_LIFETIME, lambda p: p.purchase_order_id
    )


def order_plans_created_between(
    state: SandboxState, merchant_id: str, a: datetime, b: datetime, now: datetime
) -> list[WalmartOrderPlan]:
    return plans_created_by(_plans_on(state, merchant_id), a, b, now)


# ---------------------------------------------------------------------------------------------
# Renderers


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _money(amount: Decimal) -> dict[str, Any]:
    """Walmart money: the amount is a JSON number (exact, via Decimal)."""
    return {"currency": _currency(), "amount": amount}


def _qty(n: int) -> dict[str, str]:
    return {"unitOfMeasurement": "EACH", "amount": str(n)}


# Walmart writes countries in ISO 3166 alpha-3.
_ALPHA3 = {"US": "USA", "CA": "CAN", "MX": "MEX"}


def render_order(plan: WalmartOrderPlan, now: datetime) -> dict[str, Any]:
    """A Walmart `Order` (GET /v3/orders element) as of `now`."""
    status = plan.status_at(now)
    cancelled = status == "Cancelled"
    refunded = plan.refund_at is not None and plan.refund_at <= now
    a = plan.buyer.address
    postal: dict[str, Any] = {"name": a.name, "address1": a.line1}
    postal["address2"] = a.line2 or None
    postal.update(
        {
            "city": a.city,
            "state": a.state,
            "postalCode": a.postal_code,
            "country": _ALPHA3[a.country_code],
            "addressType": "RESIDENTIAL",
        }
    )
    order_lines = []
    for index, line in enumerate(plan.lines):
        charges = []
        # A cancelled line keeps its charges with amount 0 and no tax, as Walmart shows them.
        product_tax = (
            None if cancelled else {"taxName": "Tax1", "taxAmount": _money(line.product_tax)}
        )
        charges.append(
            {
                "chargeType": "PRODUCT",
                "chargeName": "ItemPrice",
                "chargeAmount": _money(ZERO if cancelled else line.product),
                "tax": product_tax,
            }
        )
        if line.shipping:
            shipping_tax = (
                None
                if cancelled or not line.shipping_tax
                else {"taxName": "Tax1", "taxAmount": _money(line.shipping_tax)}
            )
            charges.append(
                {
                    "chargeType": "SHIPPING",
                    "chargeName": "Shipping",
                    "chargeAmount": _money(ZERO if cancelled else line.shipping),
                    "tax": shipping_tax,
                }
            )
        tracking = None
        if status in ("Shipped", "Delivered") and plan.ship_at is not None:
            tracking = {
                "shipDateTime": _ms(plan.ship_at),
                "carrierName": {"otherCarrier": None, "carrier": plan.carrier},
                "methodCode": plan.method_code,
                "trackingNumber": plan.tracking_number,
                "trackingURL": f"https://www.walmart.com/tracking?tracking_id={plan.tracking_number}",
            }
        line_status = {
            "status": status,
            "statusQuantity": _qty(line.quantity),
            "cancellationReason": "CUSTOMER_REQUESTED_SELLER_TO_CANCEL" if cancelled else None,
            "trackingInfo": tracking,
            "returnCenterAddress": None,
        }
        refund = None
        if refunded and index in plan.refunded_lines:
            refund_charges = [
                {
                    "refundReason": "ItemNotAsAdvertised",
                    "charge": {
                        "chargeType": "PRODUCT",
                        "chargeName": "Item Price",
                        "chargeAmount": _money(-line.product),
                        "tax": {"taxName": "Tax1", "taxAmount": _money(-line.product_tax)},
                    },
                }
            ]
            if line.shipping:
                refund_charges.append(
                    {
                        "refundReason": "ItemNotAsAdvertised",
                        "charge": {
                            "chargeType": "SHIPPING",
                            "chargeName": "Shipping",
                            "chargeAmount": _money(-line.shipping),
                            "tax": {"taxName": "Tax1", "taxAmount": _money(-line.shipping_tax)}
                            if line.shipping_tax
                            else None,
                        },
                    }
                )
            refund = {
                "refundId": f"{stable_int(plan.purchase_order_id, 'refund', index) % 10**12:012d}",
                "refundComments": "Refunded by seller",
                "refundCharges": {"refundCharge": refund_charges},
            }
        last_change = (
            max(
                t
                for t in (plan.ack_at, plan.ship_at, plan.deliver_at, plan.cancel_at)
                if t is not None and t <= now
            )
            if plan.ack_at <= now
            else plan.created
        )
        order_lines.append(
            {
                "lineNumber": line.line_number,
                "item": {"productName": line.part.title, "sku": line.part.sku},
                "charges": {"charge": charges},
                "orderLineQuantity": _qty(line.quantity),
                "statusDate": _ms(last_change),
                "orderLineStatuses": {"orderLineStatus": [line_status]},
                "refund": refund,
                "fulfillment": {
                    "fulfillmentOption": "S2H",
                    "shipMethod": plan.method_code.upper(),
                    "storeId": None,
                    "pickUpDateTime": _ms(plan.created + timedelta(days=2)),
                    "pickUpBy": None,
                    "shippingProgramType": None,
                },
            }
        )
    return {
        "purchaseOrderId": plan.purchase_order_id,
        "customerOrderId": plan.customer_order_id,
        "customerEmailId": plan.customer_email_id,
        "orderType": "REGULAR",
        "orderDate": _ms(plan.created),
        "shippingInfo": {
            "phone": a.phone.replace("-", ""),
            "estimatedDeliveryDate": _ms(plan.created + timedelta(days=5)),
            "estimatedShipDate": _ms(plan.created + timedelta(days=2)),
            "methodCode": plan.method_code,
            "postalAddress": postal,
        },
        "orderLines": {"orderLine": order_lines},
        "shipNode": {
            "type": plan.ship_node_type,
            "name": "Walmart Fulfillment Services"
            if plan.ship_node_type == "WFSFulfilled"
            else f"{plan.merchant_id} warehouse",
            "id": f"{stable_int(plan.merchant_id, plan.ship_node_type) % 10**18:018d}",
        },
    }


# ---------------------------------------------------------------------------------------------
# Reconciliation


def _settlement_phase(state: SandboxState, merchant_id: str) -> timedelta:
    return timedelta(
        days=stable_int(state.config.seed, merchant_id, "walmart-settlement-phase") % 14
    )


def settlement_window(
    state: SandboxState, merchant_id: str, index: int
) -> tuple[datetime, datetime]:
    start = SETTLEMENT_EPOCH + _settlement_phase(state, merchant_id) + index * SETTLEMENT_PERIOD
    return start, start + SETTLEMENT_PERIOD


def settlement_index(state: SandboxState, merchant_id: str, at: datetime) -> int:
    return (at - SETTLEMENT_EPOCH - _settlement_phase(state, merchant_id)) // SETTLEMENT_PERIOD


def _report_date(end: datetime) -> date:
    # `end` is the midnight after the period's last day: the report carries that date.
    return end.date()


def _mdy(d: date) -> str:
    return d.strftime("%m/%d/%Y")


@dataclass(frozen=True)
class WalmartSettlement:
    index: int
    start: datetime
    end: datetime
    report_date: date
    rows: tuple[dict[str, str], ...]  # detail rows (without the PaymentSummary row)
    # Rows counted in Total Payable that the report leaves out (the quarter's short report).
    missing_rows: tuple[dict[str, str], ...] = ()

    @property
    def total(self) -> Decimal:
        return sum((Decimal(r["Amount"]) for r in self.rows + self.missing_rows), ZERO)

    @property
    def missing(self) -> Decimal:
        """Total Payable less the sum of the rows the report holds."""
        return sum((Decimal(r["Amount"]) for r in self.missing_rows), ZERO)

    @property
    def available_at(self) -> datetime:
        return self.end + REPORT_DELAY


def _row(
    plan: WalmartOrderPlan,
    line: WalmartLine,
    kind: str,
    posted: datetime,
    amount_type: str,
    amount: Decimal,
    description: str | None = None,
) -> dict[str, str]:
    a = plan.buyer.address
    return {
        "Period Start Date": BLANK,
        "Period End Date": BLANK,
        "Total Payable": BLANK,
        "Currency": _currency(),
        "Transaction Key": "",  # numbered per report below
        "Transaction Posted Timestamp": _mdy(posted.date()),
        "Transaction Type": kind,
        "Transaction Description": description or ("Purchase" if kind == "Sale" else "Refund"),
        "Customer Order #": plan.customer_order_id,
        "Customer Order line #": line.line_number,
        "Purchase Order #": plan.purchase_order_id,
        "Purchase Order line #": line.line_number,
        "Amount": f"{amount:.2f}",
        "Amount Type": amount_type,
        "Ship Qty": str(line.quantity) if kind == "Sale" else BLANK,
        "Commission Rate": f"{COMMISSION_RATE * 100:.0f}%"
        if amount_type.startswith("Commission")
        else BLANK,
        "Transaction Reason Description": BLANK if kind == "Sale" else "ItemNotAsAdvertised",
        "Partner Item Id": line.part.sku,
        "Partner GTIN": line.gtin,
        "Partner Item Name": line.part.title,
        "Product Tax Code": "2038710",
        "Ship to State": a.state,
        "Ship to City": a.city,
        "Ship to Zipcode": a.postal_code,
        "Contract Category": "Automotive & Powersports",
        "Product Type": "Vehicle Parts",
        "Commission Rule": "Automotive & Powersports",
        "Shipping Method": f"Marketplace {plan.method_code.lower()}",
        "Fulfillment Type": "Walmart Fulfilled"
        if plan.ship_node_type == "WFSFulfilled"
        else "Seller Fulfilled",
        "Fulfillment Details": BLANK,
        "Original Commission": BLANK,
        "Commission Incentive Program": BLANK,
        "Commission Saving": BLANK,
        "Customer Promo Type": BLANK,
        "Total Walmart Funded Savings Program": BLANK,
    }


def _rows_for_plan(
    plan: WalmartOrderPlan, a: datetime, b: datetime
) -> list[tuple[datetime, dict[str, str]]]:
    out: list[tuple[datetime, dict[str, str]]] = []
    if plan.ship_at is not None and a <= plan.ship_at < b:
        for line in plan.lines:
            t = plan.ship_at
            # Walmart is the marketplace facilitator: it collects the tax and withholds it again.
            amounts = [
                ("Product Price", line.product),
                ("Product tax", line.product_tax),
                ("Product tax withheld", -line.product_tax),
            ]
            if line.shipping:
                amounts += [
                    ("Shipping Price", line.shipping),
                    ("Shipping tax", line.shipping_tax),
                    ("Shipping tax withheld", -line.shipping_tax),
                ]
            amounts.append(("Commission on Product", -line.commission_product))
            if line.shipping:
                amounts.append(("Commission on Shipping", -line.commission_shipping))
            for amount_type, amount in amounts:
                if amount or amount_type == "Product Price":
                    out.append((t, _row(plan, line, "Sale", t, amount_type, amount)))
            if line.wfs_fee:
                out.append(
                    (
                        t,
                        _row(
                            plan,
                            line,
                            "Service Fee",
                            t,
                            "Fee/Reimbursement",
                            -line.wfs_fee,
                            "WFS Fulfillment fee",
                        ),
                    )
                )
    if plan.refund_at is not None and a <= plan.refund_at < b:
        t = plan.refund_at
        for line in plan.refunded():
            amounts = [
                ("Product Price", -line.product),
                ("Product tax", -line.product_tax),
                ("Product tax withheld", line.product_tax),
            ]
            if line.shipping:
                amounts += [
                    ("Shipping Price", -line.shipping),
                    ("Shipping tax", -line.shipping_tax),
                    ("Shipping tax withheld", line.shipping_tax),
                ]
            # Walmart returns the commission on refunded items.
            amounts.append(("Commission on Product", line.commission_product))
            if line.shipping:
                amounts.append(("Commission on Shipping", line.commission_shipping))
            for amount_type, amount in amounts:
                if amount or amount_type == "Product Price":
                    out.append((t, _row(plan, line, "Refund", t, amount_type, amount)))
    return out


def _account_row(
    kind: tuple[str, str], posted: datetime, amount: Decimal, blank: str = BLANK
) -> dict[str, str]:
    """A row of money Walmart settles without an order: every order cell is blank."""
    transaction_type, description = kind
    return {
        "Period Start Date": blank,
        "Period End Date": blank,
        "Total Payable": blank,
        "Currency": _currency(),
        "Transaction Key": "",  # numbered per report below
        "Transaction Posted Timestamp": _mdy(posted.date()),
        "Transaction Type": transaction_type,
        "Transaction Description": description,
        **dict.fromkeys(
            (
                "Customer Order #",
                "Customer Order line #",
                "Purchase Order #",
                "Purchase Order line #",
            ),
            blank,
        ),
        "Amount": f"{amount:.2f}",
        "Amount Type": "Fee/Reimbursement",
        **dict.fromkeys(
            (
                "Ship Qty",
                "Commission Rate",
                "Transaction Reason Description",
                "Partner Item Id",
                "Partner GTIN",
                "Partner Item Name",
                "Product Tax Code",
                "Ship to State",
                "Ship to City",
                "Ship to Zipcode",
                "Contract Category",
                "Product Type",
                "Commission Rule",
                "Shipping Method",
                "Fulfillment Type",
                "Fulfillment Details",
                "Original Commission",
                "Commission Incentive Program",
                "Commission Saving",
                "Customer Promo Type",
                "Total Walmart Funded Savings Program",
            ),
            blank,
        ),
    }


def _order_rows(
    state: SandboxState, merchant_id: str, index: int
) -> list[tuple[datetime, str, dict[str, str]]]:
    """The period's order rows (sales, WFS fees, refunds) as (posted, PO, row), by time and PO."""
    start, end = settlement_window(state, merchant_id, index)
    found: list[tuple[datetime, str, dict[str, str]]] = []
    for plan in _orders_created_between(state, merchant_id, start - MAX_ORDER_LIFETIME, end):
        found.extend(
            (t, plan.purchase_order_id, row) for t, row in _rows_for_plan(plan, start, end)
        )
    found.sort(key=lambda item: (item[0], item[1]))
    return found


def _reserve_held(state: SandboxState, merchant_id: str, index: int) -> Decimal:
    """What report `index` holds back in reserve (positive; 0 when it holds nothing)."""
    phase = stable_int(state.config.seed, merchant_id, _stream("walmart-reserve")) % RESERVE_EVERY
    if index % RESERVE_EVERY != phase:
        return ZERO
    sales = sum(
        (
            Decimal(row["Amount"])
            for _, _, row in _order_rows(state, merchant_id, index)
            if row["Transaction Type"] == "Sale" and row["Amount Type"] == "Product Price"
        ),
        ZERO,
    )
    return money(sales * RESERVE_RATE)


def _short_report_index(state: SandboxState, merchant_id: str, year: int, quarter: int) -> int | None:
    """The report dated in calendar quarter `quarter` (0-3) of `year` that is one line short."""
    first = datetime(year, 3 * quarter + 1, 1, tzinfo=UTC)
    after = datetime(year + (quarter == 3), (3 * quarter + 3) % 12 + 1, 1, tzinfo=UTC)
    history = datetime.combine(state.config.history_start, datetime.min.time(), tzinfo=UTC)
    candidates = []
    index = settlement_index(state, merchant_id, first - SETTLEMENT_PERIOD)
    while settlement_window(state, merchant_id, index)[1] < after:
        end = settlement_window(state, merchant_id, index)[1]
        if first <= end and end > history:
            candidates.append(index)
        index += 1
    if not candidates:
        return None
    pick = stable_int(state.config.seed, merchant_id, _stream("walmart-short-report"), year, quarter)
    return candidates[pick % len(candidates)]


def settlement(state: SandboxState, merchant_id: str, index: int) -> WalmartSettlement:
    """The settlement `index` of the merchant's 14-day grid (cached: a closed period never changes)."""
    cache = state.channel_data(CHANNEL).setdefault("settlements", {})
    key = (merchant_id, index, _SERVING.get())
    cached = cache.get(key)
    if cached is None:
        cached = cache[key] = _build_settlement(state, merchant_id, index)
    return cached


def _build_settlement(state: SandboxState, merchant_id: str, index: int) -> WalmartSettlement:
    start, end = settlement_window(state, merchant_id, index)
    found = _order_rows(state, merchant_id, index)
    rng = stable_rng(state.config.seed, merchant_id, _stream("walmart-account-fees"), index)
    last_day = end - timedelta(days=1)
    extra: list[tuple[datetime, str, dict[str, str]]] = [
        (
            last_day,
            "",
            _account_row(ADVERTISING_FEE, last_day, -money(Decimal(rng.randint(1500, 12000)) / 100)),
        )
    ]
    held = _reserve_held(state, merchant_id, index)
    if held:
        extra.append((start, "", _account_row(RESERVE_HELD, start, -held, blank="")))
    released = _reserve_held(state, merchant_id, index - RESERVE_HELD_FOR)
    if released:
        extra.append((start, "", _account_row(RESERVE_RELEASED, start, released, blank="")))
    storage = -money(Decimal(rng.randint(800, 4500)) / 100)
    block_pick = stable_int(
        state.config.seed, merchant_id, _stream("walmart-negative"), index // NEGATIVE_EVERY
    )
    if index % NEGATIVE_EVERY == block_pick % NEGATIVE_EVERY:
        # A long-term storage charge larger than everything else the period earned.
        others = sum((Decimal(r["Amount"]) for _, _, r in found + extra), ZERO)
        storage = -(max(others, ZERO) + money(Decimal(rng.randint(2000, 15000)) / 100))
    extra.append((last_day, "", _account_row(STORAGE_FEE, last_day, storage)))
    found = sorted(found + extra, key=lambda item: (item[0], item[1]))
    rows = []
    # One Transaction Key per transaction (a line's sale, fee or refund; an account-level fee),
    # shared by its amount rows.
    keys: dict[tuple[str, ...], str] = {}
    for _, _, row in found:
        group = (
            row["Transaction Posted Timestamp"],
            row["Purchase Order #"],
            row["Purchase Order line #"],
            row["Transaction Type"],
            row["Transaction Description"],
        )
        key = keys.setdefault(group, f"{end:%Y_%m_%d}_{len(keys) + 1}")
        rows.append(dict(row, **{"Transaction Key": key}))
    missing: tuple[dict[str, str], ...] = ()
    report_date = _report_date(end)
    if rows and _short_report_index(
        state, merchant_id, report_date.year, (report_date.month - 1) // 3
    ) == index:
        dropped = rng.randrange(len(rows))
        missing = (rows.pop(dropped),)
    return WalmartSettlement(
        index=index,
        start=start,
        end=end,
        report_date=report_date,
        rows=tuple(rows),
        missing_rows=missing,
    )


def render_report(s: WalmartSettlement) -> list[dict[str, str]]:
    """The reconFileJson `reportData`: the PaymentSummary row, then the detail rows."""
    summary = {
        "Period Start Date": _mdy(s.start.date()),
        "Period End Date": _mdy((s.end - timedelta(days=1)).date()),
        "Currency": _currency(),
        "Transaction Type": "PaymentSummary",
        "Total Payable": f"{s.total:.2f}",
        "Transaction Description": "Deposited in account",
        "Transaction Posted Timestamp": _mdy((s.end + timedelta(days=2)).date()),
    }
    return [summary, *s.rows]


def available_indexes(state: SandboxState, merchant_id: str, now: datetime) -> list[int]:
    """Indexes of the settlements whose report is available by `now` (Walmart lists about a year)."""
    history = datetime.combine(state.config.history_start, datetime.min.time(), tzinfo=UTC)
    index = settlement_index(state, merchant_id, max(history, now - timedelta(days=365)))
    out = []
    while True:
        _, end = settlement_window(state, merchant_id, index)
        if end + REPORT_DELAY > now:
            return out
        if end > history:
            out.append(index)
        index += 1


def settlements_available(
    state: SandboxState, merchant_id: str, now: datetime
) -> list[WalmartSettlement]:
    """Every settlement whose report is available by `now`, oldest first."""
    return [settlement(state, merchant_id, i) for i in available_indexes(state, merchant_id, now)]


def _settlement_for_report(
    state: SandboxState, merchant_id: str, report_date: str, now: datetime
) -> WalmartSettlement | None:
    for index in available_indexes(state, merchant_id, now):
        _, end = settlement_window(state, merchant_id, index)
        if _report_key(_report_date(end)) == report_date:
            return settlement(state, merchant_id, index)
    return None


def _report_key(d: date) -> str:
    return d.strftime("%m%d%Y")


# ---------------------------------------------------------------------------------------------
# Inventory


def inventory_rows(state: SandboxState, merchant_id: str, now: datetime) -> list[dict[str, Any]]:
    """Seller-node inventory per SKU as of `now`'s day, sorted by SKU."""
    node = f"{stable_int(merchant_id, 'SellerFulfilled') % 10**18:018d}"
    out = []
    for part in sorted(parts_catalog(state.config.seed, merchant_id), key=lambda p: p.sku):
        rng = stable_rng(
            state.config.seed, merchant_id, _stream("walmart-inventory"), part.sku, now.date().isoformat()
        )
        on_hand = rng.choice([0] + list(range(1, 90)))
        reserved = min(on_hand, rng.randint(0, 3))
        out.append(
            {
                "sku": part.sku,
                "nodes": [
                    {
                        "shipNode": node,
                        "inputQty": {"unit": "EACH", "amount": on_hand},
                        "availToSellQty": {"unit": "EACH", "amount": on_hand - reserved},
                        "reservedQty": {"unit": "EACH", "amount": reserved},
                    }
                ],
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# Introspection for tests: each takes `market=` (us, ca, mx), the WM_MARKET a request would send.


def _in_market(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, market: str = DEFAULT_MARKET, **kwargs: Any) -> Any:
        with serving_market(market):
            return fn(*args, **kwargs)

    return wrapper


@_in_market
def walmart_orders_modified_between(
    state: SandboxState,
    merchant_id: str,
    a: datetime,
    b: datetime,
    ship_node_types: tuple[str, ...] = ("SellerFulfilled", "WFSFulfilled"),
) -> list[dict[str, Any]]:
    """The orders GET /v3/orders would return for lastModified in [a, b) now, over the node types."""
    now = state.now()
    plans = order_plans_modified_between(
        state, merchant_id, a, min(b, now + timedelta(seconds=1)), now
    )
    return [render_order(p, now) for p in plans if p.ship_node_type in ship_node_types]


@_in_market
def walmart_inventory(state: SandboxState, merchant_id: str) -> list[dict[str, Any]]:
    return inventory_rows(state, merchant_id, state.now())


@_in_market
def walmart_recon_report_dates(state: SandboxState, merchant_id: str) -> list[str]:
    return [
        _report_key(s.report_date) for s in settlements_available(state, merchant_id, state.now())
    ]


@_in_market
def walmart_recon_report(
    state: SandboxState, merchant_id: str, report_date: str
) -> list[dict[str, str]] | None:
    found = _settlement_for_report(state, merchant_id, report_date, state.now())
    return render_report(found) if found is not None else None


@dataclass(frozen=True)
class ShortReport:
    """A report whose Total Payable counts a row it does not contain."""

    report_date: str  # MMDDYYYY, as availableReconFiles lists it
    missing: Decimal  # Total Payable - the sum of the report's rows
    row: dict[str, str]  # the row left out


@_in_market
def walmart_short_reports(
    state: SandboxState, merchant_id: str, since: date, until: date
) -> list[ShortReport]:
    """Available reports dated in [since, until] that are one line short (one per quarter)."""
    return [
        ShortReport(_report_key(s.report_date), s.missing, s.missing_rows[0])
        for s in settlements_available(state, merchant_id, state.now())
        if since <= s.report_date <= until and s.missing_rows
    ]


@_in_market
def walmart_settlements_between(
    state: SandboxState, merchant_id: str, since: date, until: date
) -> list[WalmartSettlement]:
    """Available settlements whose report date is in [since, until]."""
    return [
        s
        for s in settlements_available(state, merchant_id, state.now())
        if since <= s.report_date <= until
    ]


# ---------------------------------------------------------------------------------------------
# Request handling


class WalmartError(Exception):
    def __init__(self, status: int, code: str, field: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.field = field
        self.description = description


def _errors(
    code: str, field: str, description: str, info: str = "Request has invalid param."
) -> dict[str, Any]:
    return {
        "errors": [
            {
                "code": code,
                "field": field,
                "description": description,
                "info": info,
                "severity": "ERROR",
                "category": "DATA",
                "causes": [],
                "errorIdentifiers": {},
            }
        ]
    }


def _parse_time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        if value.isdigit():
            return datetime.fromtimestamp(int(value) / 1000, UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise WalmartError(
            400,
            "INVALID_REQUEST_PARAM.GMP_ORDER_API",
            name,
            f"{name} must be an ISO 8601 timestamp or epoch milliseconds",
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _orders(state: SandboxState, request: Request, merchant: str, now: datetime) -> tuple[int, Any]:
    q = request.query_params
    cursor = q.get("soIndex")
    if cursor is not None:
        try:
            offset = int(cursor)
            now = datetime.fromtimestamp(int(q.get("snapshot", "")) / 1000, UTC)
        except ValueError:
            raise WalmartError(
                400,
                "INVALID_REQUEST_PARAM.GMP_ORDER_API",
                "nextCursor",
                "nextCursor is invalid; start again without it",
            ) from None
    else:
        offset = 0
    try:
        limit = int(q.get("limit", 100))
    except ValueError:
        raise WalmartError(
            400,
            "INVALID_REQUEST_PARAM.GMP_ORDER_API",
            "limit",
            "limit must be an integer from 1 to 200",
        ) from None
    if not 1 <= limit <= 200:
        raise WalmartError(
            400,
            "INVALID_REQUEST_PARAM.GMP_ORDER_API",
            "limit",
            "limit must be an integer from 1 to 200",
        )
    page_size = min(limit, state.config.orders_page_size)
    node_type = q.get("shipNodeType", "SellerFulfilled")
    if node_type not in SHIP_NODE_TYPES:
        raise WalmartError(
            400,
            "INVALID_REQUEST_PARAM.GMP_ORDER_API",
            "shipNodeType",
            f"shipNodeType must be one of {', '.join(SHIP_NODE_TYPES)}",
        )
    created_start = _parse_time(q.get("createdStartDate"), "createdStartDate")
    modified_start = _parse_time(q.get("lastModifiedStartDate"), "lastModifiedStartDate")
    if created_start is None and modified_start is None:
        raise WalmartError(
            400,
            "INVALID_REQUEST_PARAM.GMP_ORDER_API",
            "createdStartDate",
            "createdStartDate or lastModifiedStartDate is required",
        )
    name, start = (
        ("lastModifiedStartDate", modified_start)
        if modified_start is not None
        else ("createdStartDate", created_start)
    )
    assert start is not None
    if cursor is None and start < now - LOOKBACK:
        raise WalmartError(
            400,
            "INVALID_REQUEST_PARAM.GMP_ORDER_API",
            name,
            f"{name} cannot be older than 180 days",
        )
    end_name = "lastModifiedEndDate" if name == "lastModifiedStartDate" else "createdEndDate"
    end = _parse_time(q.get(end_name), end_name) or now + timedelta(seconds=1)
    end = min(end, now + timedelta(seconds=1))
    if start >= end:
        plans: list[WalmartOrderPlan] = []
    elif name == "lastModifiedStartDate":
        plans = order_plans_modified_between(state, merchant, start, end, now)
    else:
        plans = order_plans_created_between(state, merchant, start, end, now)
    plans = [p for p in plans if p.ship_node_type == node_type]
    status = q.get("status")
    if status:
        plans = [p for p in plans if p.status_at(now) == status]
    page = plans[offset : offset + page_size]
    meta: dict[str, Any] = {"totalCount": len(plans), "limit": page_size}
    if offset + page_size < len(plans):
        carried = {
            k: v
            for k, v in q.items()
            if k not in ("soIndex", "poIndex", "snapshot", "hasMoreElements", "sellerId", "limit")
        }
        meta["nextCursor"] = "?" + urlencode(
            {
                "limit": limit,
                "hasMoreElements": "true",
                "soIndex": offset + page_size,
                "poIndex": page[-1].purchase_order_id,
                "sellerId": str(stable_int(merchant, "walmart-seller") % 10**6),
                **carried,
                "snapshot": _ms(now),
            }
        )
    return 200, {
        "list": {"meta": meta, "elements": {"order": [render_order(p, now) for p in page]}}
    }


def _inventories(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    q = request.query_params
    try:
        limit = int(q.get("limit", 10))
    except ValueError:
        raise WalmartError(
            400,
            "INVALID_REQUEST_PARAM.GMP_INVENTORY_API",
            "limit",
            "limit must be an integer from 1 to 50",
        ) from None
    if not 1 <= limit <= 50:
        raise WalmartError(
            400,
            "INVALID_REQUEST_PARAM.GMP_INVENTORY_API",
            "limit",
            "limit must be an integer from 1 to 50",
        )
    limit = min(limit, state.config.inventory_page_size)
    offset = 0
    cursor = q.get("nextCursor")
    if cursor:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            offset_text, day = raw.split("|")
            offset = int(offset_text)
            now = datetime.fromisoformat(day)
        except ValueError:
            raise WalmartError(
                400,
                "INVALID_REQUEST_PARAM.GMP_INVENTORY_API",
                "nextCursor",
                "nextCursor is invalid; start again without it",
            ) from None
    rows = inventory_rows(state, merchant, now)
    meta: dict[str, Any] = {"totalCount": len(rows)}
    if offset + limit < len(rows):
        meta["nextCursor"] = (
            base64.urlsafe_b64encode(f"{offset + limit}|{now.isoformat()}".encode())
            .decode()
            .rstrip("=")
        )
    return 200, {"meta": meta, "elements": {"inventories": rows[offset : offset + limit]}}


def _recon_dates(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    dates = [
        _report_key(_report_date(settlement_window(state, merchant, i)[1]))
        for i in available_indexes(state, merchant, now)
    ]
    return 200, {"availableApReportDates": dates}


def _recon_file(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    report_date = request.query_params.get("reportDate", "")
    if len(report_date) != 8 or not report_date.isdigit():
        raise WalmartError(
            400,
            "INVALID_REQUEST_PARAM.GMP_PAYMENT_API",
            "reportDate",
            "reportDate must be MMDDYYYY, one of availableReconFiles' dates",
        )
    version = request.query_params.get("reportVersion", "v1")
    if version != "v1":
        raise WalmartError(
            400,
            "INVALID_REQUEST_PARAM.GMP_PAYMENT_API",
            "reportVersion",
            "reportVersion must be v1",
        )
    offset = _recon_int(request, "offset", 0, 0, None)
    size = _recon_int(request, "noOfRecords", RECON_MAX_RECORDS, 1, RECON_MAX_RECORDS)
    found = _settlement_for_report(state, merchant, report_date, now)
    if found is not None:
        rows = render_report(found)
        next_offset = offset + size if offset + size < len(rows) else -1
        return 200, {"reportData": rows[offset : offset + size], "nextOffset": next_offset}
    raise WalmartError(
        404,
        "CONTENT_NOT_FOUND.GMP_PAYMENT_API",
        "reportDate",
        f"No reconciliation report for {report_date}",
    )


def _recon_int(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise WalmartError(
            400,
            "INVALID_REQUEST_PARAM.GMP_PAYMENT_API",
            name,
            f"{name} must be a whole number {bounds}",
        )
    return value


# Malformed-record faults: one broken extra record; the real records stay intact.


def _break_orders(body: dict[str, Any]) -> None:
    orders = ((body.get("list") or {}).get("elements") or {}).get("order")
    if isinstance(orders, list) and orders:
        broken = dict(orders[0])
        broken.pop("purchaseOrderId", None)
        broken["orderDate"] = "yesterday"
        orders.append(broken)


def _break_inventory(body: dict[str, Any]) -> None:
    rows = (body.get("elements") or {}).get("inventories")
    if isinstance(rows, list) and rows:
        rows.append({"nodes": [{"shipNode": None, "inputQty": {"unit": "EACH", "amount": "many"}}]})


def _break_dates(body: dict[str, Any]) -> None:
    dates = body.get("availableApReportDates")
    if isinstance(dates, list):
        dates.append("13452026")


def _break_report(body: dict[str, Any]) -> None:
    rows = body.get("reportData")
    if isinstance(rows, list) and len(rows) > 1:
        broken = dict(rows[1])
        broken.pop("Transaction Key", None)
        broken["Amount"] = "N/A"
        rows.append(broken)


def _unauthorized() -> Response:
    return json_response(
        _errors(
            "UNAUTHORIZED.GMP_GATEWAY_API",
            "UNAUTHORIZED",
            "Unauthorized",
            "Unauthorized token or invalid API key.",
        ),
        401,
    )


def _throttled(retry_after: float | None) -> Response:
    headers = {
        "x-current-token-count": "0",
        "x-next-replenish-time": str(_ms(datetime.now(UTC)) + 1000),
    }
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    return json_response(
        _errors(
            "REQUEST_THRESHOLD_VIOLATED.GMP_GATEWAY_API",
            "REQUEST_THRESHOLD_VIOLATED",
            "Request threshold violated",
            "Too many requests: slow down.",
        ),
        429,
        headers,
    )


def _missing_headers(request: Request) -> Response | None:
    for header in ("WM_SVC.NAME", "WM_QOS.CORRELATION_ID"):
        if not request.headers.get(header):
            return json_response(
                _errors(
                    "MISSING_REQUIRED_HEADER.GMP_GATEWAY_API",
                    header,
                    f"Header {header} is required",
                    "Send WM_SVC.NAME and WM_QOS.CORRELATION_ID on every call.",
                ),
                400,
            )
    return None


def _endpoint(
    state: SandboxState,
    operation: str,
    handler: Callable[[SandboxState, Request, str, datetime], tuple[int, Any]],
    breaker: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[Request], Any]:
    rate, burst = RATE_LIMITS[operation]
    allowed = LIST_FAULTS if breaker is not None else API_FAULTS

    async def endpoint(request: Request) -> Response:
        token = request.headers.get("WM_SEC.ACCESS_TOKEN")
        merchant, _why = state.token_owner(token)
        if merchant is None:
            state.count(operation, status=401)
            return _unauthorized()
        missing = _missing_headers(request)
        if missing is not None:
            state.count(operation, status=400, caller=merchant)
            return missing
        fault = state.faults.draw(merchant, operation, allowed)
        if fault == "expired_token":
            assert token is not None
            state.revoke_token(token)
            state.count(operation, status=401, caller=merchant)
            return _unauthorized()
        if fault == "throttle":
            state.count(operation, throttled=True, status=429, caller=merchant)
            return _throttled(state.config.faults.retry_after_seconds)
        if fault == "server_error":
            status = int(str(state.faults.choice([500, 503])))
            state.count(operation, status=status, caller=merchant)
            return json_response(
                _errors(
                    "SYSTEM_ERROR.GMP_GATEWAY_API",
                    "SYSTEM_ERROR",
                    "Internal error",
                    "Please retry.",
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
        market = (request.headers.get(MARKET_HEADER) or DEFAULT_MARKET).lower()
        try:
            if market not in MARKETS:
                raise WalmartError(
                    400, "INVALID_REQUEST_HEADER.GMP_GATEWAY_API", MARKET_HEADER,
                    f"Invalid {MARKET_HEADER} {market!r}: the sandbox sells in {', '.join(MARKETS)}",
                )
            with serving_market(market):
                status, body = (
                    fixture if fixture is not None else handler(state, request, merchant, now)
                )
        except WalmartError as exc:
            status, body = exc.status, _errors(exc.code, exc.field, exc.description)
        if (
            200 <= status < 300
            and fault == "malformed_record"
            and breaker is not None
            and fixture is None
        ):
            breaker(body)
        state.count(operation, status=status, caller=merchant)
        response = json_response(
            body,
            status,
            {"WM_QOS.CORRELATION_ID": request.headers.get("WM_QOS.CORRELATION_ID", "")},
        )
        if fault in ("connection_reset", "truncated_body"):
            return transport_fault_response(state, fault, response)
        return response

    return endpoint


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep and client_id and secret else None


def _token_endpoint(state: SandboxState) -> Callable[[Request], Any]:
    async def token(request: Request) -> Response:
        # Parsed by hand: Starlette's form parser needs python-multipart, which we do not ship.
        form = {
            k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()
        }
        client = _basic(request)
        merchant = (
            client[0][len(CLIENT_PREFIX) :]
            if client and client[0].startswith(CLIENT_PREFIX)
            else ""
        )
        fault = state.faults.draw(merchant or "-", "walmartToken", TRANSPORT_FAULTS - {"throttle"})
        if fault == "server_error":
            return json_response(
                _errors(
                    "SYSTEM_ERROR.GMP_GATEWAY_API",
                    "SYSTEM_ERROR",
                    "Internal error",
                    "Please retry.",
                ),
                500,
            )
        if fault == "timeout":
            await hold_for_timeout(state)
        missing = _missing_headers(request)
        if missing is not None:
            response = missing
        elif form.get("grant_type") != "client_credentials":
            response = json_response(
                _errors(
                    "INVALID_REQUEST_PARAM.GMP_GATEWAY_API",
                    "grant_type",
                    "grant_type must be client_credentials",
                ),
                400,
            )
        elif client is None or not MERCHANT_ID_PATTERN.fullmatch(merchant):
            response = json_response(
                _errors(
                    "UNAUTHORIZED.GMP_GATEWAY_API",
                    "clientId",
                    "Invalid client id or secret",
                    "Check the client id and secret issued in Seller Center.",
                ),
                401,
            )
        else:
            access, lifetime = state.issue_token(CHANNEL, merchant)
            state.count("walmartToken", caller=merchant)
            expires = min(lifetime, ACCESS_TOKEN_SECONDS)
            response = json_response(
                {
                    "access_token": access,
                    "token_type": "Bearer",
                    "expires_in": int(expires) if expires >= 1 else expires,
                }
            )
        if fault in ("connection_reset", "truncated_body"):
            return transport_fault_response(state, fault, response)
        return response

    return token


def routes(state: SandboxState) -> list[Route]:
    """The Walmart routes, relative to the `/walmart` mount."""
    return [
        Route("/v3/token", _token_endpoint(state), methods=["POST"]),
        Route(
            "/v3/orders", _endpoint(state, "getAllOrders", _orders, _break_orders), methods=["GET"]
        ),
        Route(
            "/v3/inventories",
            _endpoint(state, "getMultiNodeInventory", _inventories, _break_inventory),
            methods=["GET"],
        ),
        Route(
            "/v3/report/reconreport/availableReconFiles",
            _endpoint(state, "getAvailableReconReportDates", _recon_dates, _break_dates),
            methods=["GET"],
        ),
        Route(
            "/v3/report/reconreport/reconFileJson",
            _endpoint(state, "getReconReportJson", _recon_file, _break_report),
            methods=["GET"],
        ),
    ]
