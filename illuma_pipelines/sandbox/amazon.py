"""Amazon Selling Partner API routes for the sandbox, mounted under `/amazon`.

Shapes follow Amazon's official models (amzn/selling-partner-api-models) and the example payloads
in tests/fixtures/amazon:

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

Data (deterministic in seed + merchant id, from the world's catalog and buyer generator). The plan
functions take the merchant's `MerchantWorld` (`state.world(merchant_id)`, or one built directly,
without a server); the renderers turn plans into JSON:

- `orders_created_on(world, day)`: that day's `AmazonOrderPlan`s, on Amazon's own per-day stream.
  A plan fixes, once and for all, the lines, prices, fees, buyer and the timeline (pending until,
  shipped at, delivered at, cancelled at, refunded at). Only `status_at(now)` and the timestamps
  that have already happened depend on "now", so a day's data never changes when the clock moves.
- `order_plans_updated_between(world, a, b, now)`, `transactions_posted_between(world, a, b)` and
  `settlements_reported_between(world, a, b, now)`: what searchOrders, listTransactions and the
  settlement reports serve.
- Settlements run every 14 days on a per-merchant phase; a settlement holds exactly the finance
  transactions posted in its period plus its reserve rows, so settlement rows, finance
  transactions and orders agree to the penny, reserves and the quarter's missing row aside.
- What a settlement's money holds (each marketplace apart, deterministic in seed, merchant and
  marketplace), as a real seller's does:
  - orders: `Order` rows (ItemPrice Principal/Shipping/Tax, ItemWithheldTax, ItemFees Commission
    and FBAPerUnitFulfillmentFee) and `Refund` rows (with RefundCommission);
  - fees without an order, each also a finance transaction (`_period_fees`): the Subscription
    Fee at each period's start; the FBA storage fee of the past month on the 7th (`Storage Fee`,
    Finances `ServiceFee` "FBAStorageBilling"); an inbound transportation fee in about every other
    period (`FBAInboundTransportationFee`, `ServiceFee`); one to three advertising charges a
    period (settlement `ServiceFee` rows `Cost of Advertising` / `TransactionTotalAmount`,
    Finances `ProductAdsPayment`). All are rows with no order id and no sku;
  - reserves: most settlements hold a reserve (`other-transaction` / `Current Reserve Amount`,
    negative, posted at the period's end) and release the previous one's in full (`Previous
    Reserve Amount Balance`, positive, at its start). Reserve rows count in total-amount (the
    deposit) but are not seller income or cost, and listTransactions does not list them: Finances
    2024-06-19 shows a reserve as a balance (listBalances, balanceType RESERVED), not as a
    transaction. So a settlement's finance transactions sum to its `net_proceeds`, and
    `total` = net_proceeds + reserve released - reserve held;
  - a negative settlement: one period in every 8 (`negative_settlement`) carries a long-term
    storage charge (`StorageRenewalBilling`) or an ad campaign charge larger than its sales, so
    both its net proceeds and its total-amount are negative (Amazon then debits the seller);
  - a short settlement: once per calendar quarter (by settlement end; `short_settlement_index`)
    one fee row is left out of the document while total-amount still counts it
    (`AmazonSettlement.missing`, `missing_row`, `short_by`), as real files sometimes are: the
    rows sum to total-amount - short_by.
- Amounts in the settlement documents are written as each marketplace writes them: "1234.56" on
  Amazon.com/.ca/.com.mx/.co.uk, "1.234,56" (decimal comma, dot grouping) on Amazon.de/.fr/.it/.es
  (`flat_amount`).
- FBA inventory (`inventory_rows`) and competing offers (`competing_offers`) are daily snapshots.
- Marketplaces (`AMAZON_MARKETPLACES`: US, CA, MX, UK, DE, FR, IT, ES): every operation that names
  a marketplace (`marketplaceIds`, `marketplaceId`, `MarketplaceId`, `granularityId`) is checked
  against them (an unknown id is a 400) and served from that marketplace's own orders,
  transactions, stock and prices, in its currency (EUR on Amazon.de, GBP on Amazon.co.uk, ...);
  searchOrders merges every marketplace it is given. Without a marketplace the US is served.
- Settlements are per marketplace, as Amazon settles each marketplace apart: every marketplace
  settles on the merchant's 14-day grid, a settlement holds exactly that marketplace's finance
  transactions of its period, and its document is in that marketplace's currency and name.
  Settlement and report ids differ per marketplace (a report id carries its marketplace, so
  getReport and getReportDocument resolve it alone; the US ids are those of a US-only sandbox).
  getReports lists the settlements of the marketplaces in `marketplaceIds` (the US without it),
  each report's `marketplaceIds` naming its one marketplace.

Queued fixtures (`state.queue_fixture("amazon", merchant_id, operation, body, status)`) are served
verbatim, in order, before generated data, so the official examples go through the real client.
Use `set_report_outcome(state, report_type, "FATAL")` to make requested reports fail.

Python-side introspection for tests: `amazon_orders_updated_between`,
`amazon_transactions_posted_between`, `amazon_settlements_between` (each takes the state and a
merchant id, and a `marketplace_id=` defaulting to the US, and answers as of the sandbox clock).
"""

from __future__ import annotations

import base64
import copy
import functools
import gzip
import hashlib
import json
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
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
    Buyer,
    MerchantWorld,
    Part,
    currency_of,
    fake_buyer,
    money,
    order_seconds,
    parts_catalog,
    plans_created_between,
    plans_created_by,
    plans_modified_between,
    stable_code,
    stable_int,
    stable_rng,
    whole_seconds,
)

CHANNEL = "amazon"
AMAZON_US_MARKETPLACE_ID = "ATVPDKIKX0DER"
AMAZON_US_MARKETPLACE_NAME = "Amazon.com"
# The marketplaces the sandbox sells on: id -> (country, name, first digits of its order ids).
# Each has its own orders, finances and stock (on its own random stream) in its country's
# currency; a request naming another id is refused, as Amazon refuses an unknown marketplace.
AMAZON_MARKETPLACES: dict[str, tuple[str, str, int]] = {
    AMAZON_US_MARKETPLACE_ID: ("US", AMAZON_US_MARKETPLACE_NAME, 111),
    "A2EUQ1WTGCTBG2": ("CA", "Amazon.ca", 701),
    "A1AM78C64UM0Y8": ("MX", "Amazon.com.mx", 705),
    "A1F83G8C2ARO7P": ("GB", "Amazon.co.uk", 202),
    "A1PA6795UKMFR9": ("DE", "Amazon.de", 302),
    "A13V1IB3VIYZZH": ("FR", "Amazon.fr", 402),
    "APJ6JRA9NG5V4": ("IT", "Amazon.it", 406),
    "A1RKKUPIHCS9HS": ("ES", "Amazon.es", 410),
}

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


# ---------------------------------------------------------------------------------------------
# Plans: orders, finances and settlements (not JSON: the renderers below write the API shapes)

SETTLEMENT_PERIOD = timedelta(days=14)
# A fixed origin for the 14-day settlement grid (each merchant adds its own phase to it).
SETTLEMENT_EPOCH = datetime(2024, 1, 5, tzinfo=UTC)
# How long after creation an order can still change (refunds come latest); bounds every scan.
MAX_ORDER_LIFETIME = timedelta(days=50)
SUBSCRIPTION_FEE = Decimal("39.99")
# Amazon bills the previous month's FBA storage on the 7th.
STORAGE_BILLING_DAY = 7
_CARRIERS = (("UPS", "1Z", 16), ("USPS", "9400", 18), ("FedEx", "", 12))


@dataclass(frozen=True)
class AmazonLine:
    """One order item. Amounts are line totals (unit price x quantity), Decimal to the cent."""

    order_item_id: str
    part: Part
    quantity: int
    unit_price: Decimal
    item_subtotal: Decimal
    shipping: Decimal
    tax: Decimal
    referral_fee: Decimal
    fba_fee: Decimal

    @property
    def refund_commission(self) -> Decimal:
        # Amazon keeps 20% of the refunded referral fee, at most $5.00 per item.
        return min(Decimal("5.00"), money(self.referral_fee * Decimal("0.20")))


@dataclass(frozen=True)
class AmazonOrderPlan:
    """One order and its whole (fixed) future; `status_at(now)` says how far it has got."""

    merchant_id: str
    order_id: str
    created: datetime
    fulfilled_by: str  # "AMAZON" (FBA) or "MERCHANT"
    service_level: str
    lines: tuple[AmazonLine, ...]
    buyer: Buyer
    pending_until: datetime
    ship_at: datetime | None
    deliver_at: datetime | None
    cancel_at: datetime | None
    refund_at: datetime | None
    carrier: str
    tracking_number: str
    shipment_id: str
    marketplace_id: str = AMAZON_US_MARKETPLACE_ID

    @property
    def currency(self) -> str:
        return marketplace_currency(self.marketplace_id)

    def events(self) -> list[tuple[datetime, str]]:
        out = [(self.created, "PENDING"), (self.pending_until, "UNSHIPPED")]
        if self.cancel_at is not None:
            out.append((self.cancel_at, "CANCELLED"))
        if self.ship_at is not None:
            out.append((self.ship_at, "SHIPPED"))
        if self.deliver_at is not None:
            out.append((self.deliver_at, "DELIVERED"))
        return out

    def status_at(self, now: datetime) -> tuple[str, datetime] | None:
        """(status, last updated) as of `now`, or None if the order does not exist yet.

        Status is PENDING, UNSHIPPED, SHIPPED, DELIVERED (shown by Amazon as order SHIPPED with a
        DELIVERED package) or CANCELLED. Refunds are money only: they do not touch the order.
        """
        current = None
        for at, status in self.events():
            if at <= now:
                current = (status, at)
        return current

    def modified_at(self, now: datetime) -> datetime | None:
        """The order's last update as of `now` (what searchOrders' lastUpdated filters see)."""
        state = self.status_at(now)
        return state[1] if state is not None else None

    @property
    def item_total(self) -> Decimal:
        return sum((line.item_subtotal for line in self.lines), Decimal("0"))

    @property
    def grand_total(self) -> Decimal:
        return sum(
            (line.item_subtotal + line.shipping + line.tax for line in self.lines), Decimal("0")
        )


@dataclass(frozen=True)
class AmazonFinanceTransaction:
    """One Finances 2024-06-19 transaction plus the settlement rows it becomes.

    `rows` are (amount-type, amount-description, amount, order_item or None) in settlement order;
    `total` equals the sum of `rows` amounts exactly. A transaction without an order names its
    Finances `description` and the settlement rows' `transaction-type` (`settlement_type`).
    """

    transaction_id: str
    transaction_type: str  # Shipment | Refund | ServiceFee | ProductAdsPayment
    posted: datetime
    order: AmazonOrderPlan | None
    rows: tuple[tuple[str, str, Decimal, AmazonLine | None], ...]
    marketplace_id: str = AMAZON_US_MARKETPLACE_ID
    description: str | None = None
    settlement_type: str = "other-transaction"

    @property
    def total(self) -> Decimal:
        return sum((amount for _, _, amount, _ in self.rows), Decimal("0"))


# A settlement row of the document: (transaction or None for a reserve row, amount-type,
# amount-description, amount, order item or None, posted).
SettlementRow = tuple[
    AmazonFinanceTransaction | None, str, str, Decimal, AmazonLine | None, datetime
]
RESERVE_HELD = "Current Reserve Amount"
RESERVE_RELEASED = "Previous Reserve Amount Balance"


@dataclass(frozen=True)
class AmazonSettlement:
    """One marketplace's settlement period. `total` is what Amazon reports and deposits: its
    finance transactions plus the reserve released from the previous settlement minus the reserve
    held in this one. `missing` names the one fee row (transaction id, row position) the document
    leaves out though `total` counts it, in the quarter's short settlement."""

    merchant_id: str
    settlement_id: str
    start: datetime
    end: datetime
    deposit_date: datetime
    report_created: datetime
    report_id: str
    document_id: str
    transactions: tuple[AmazonFinanceTransaction, ...]
    marketplace_id: str = AMAZON_US_MARKETPLACE_ID
    reserve_released: Decimal = Decimal("0")
    reserve_held: Decimal = Decimal("0")
    missing: tuple[str, int] | None = None

    @property
    def currency(self) -> str:
        return marketplace_currency(self.marketplace_id)

    @property
    def net_proceeds(self) -> Decimal:
        """The finance transactions' sum: the period's money without reserve movements."""
        return sum((t.total for t in self.transactions), Decimal("0"))

    @property
    def total(self) -> Decimal:
        """The reported total-amount (the deposit; negative when Amazon charges the seller)."""
        return self.net_proceeds + self.reserve_released - self.reserve_held

    @property
    def missing_row(self) -> SettlementRow | None:
        """The row counted in `total` but left out of the document, or None."""
        if self.missing is None:
            return None
        transaction_id, position = self.missing
        t = next(t for t in self.transactions if t.transaction_id == transaction_id)
        amount_type, description, amount, line = t.rows[position]
        return t, amount_type, description, amount, line, t.posted

    @property
    def short_by(self) -> Decimal:
        """How much the document's rows fall short of `total` (zero unless a row is missing)."""
        row = self.missing_row
        return row[3] if row is not None else Decimal("0")

    def rows(self) -> list[SettlementRow]:
        """The document's rows in order: the released reserve (at the start), the transactions'
        rows by posting, the held reserve (at the end); the missing row left out."""
        out: list[SettlementRow] = []
        if self.reserve_released:
            out.append(
                (
                    None,
                    "other-transaction",
                    RESERVE_RELEASED,
                    self.reserve_released,
                    None,
                    self.start,
                )
            )
        for t in self.transactions:
            for position, (amount_type, description, amount, line) in enumerate(t.rows):
                if self.missing != (t.transaction_id, position):
                    out.append((t, amount_type, description, amount, line, t.posted))
        if self.reserve_held:
            out.append(
                (
                    None,
                    "other-transaction",
                    RESERVE_HELD,
                    -self.reserve_held,
                    None,
                    self.end - timedelta(seconds=1),
                )
            )
        return out


def seller_id(world: MerchantWorld) -> str:
    """The merchant's Amazon selling partner id."""
    return (
        stable_code("A", world.seed, world.merchant_id, "seller")
        + stable_code("", world.seed, world.merchant_id, "seller2")[:4]
    )


def part_by_asin(world: MerchantWorld, asin: str) -> Part | None:
    return next((p for p in world.catalog if p.asin == asin), None)


def marketplace_currency(marketplace_id: str) -> str:
    return currency_of(AMAZON_MARKETPLACES[marketplace_id][0])


def marketplace_of_order(order_id: str) -> str | None:
    """The marketplace whose order ids start with the order's first three digits."""
    head = order_id[:3]
    for marketplace_id, (_, _, base) in AMAZON_MARKETPLACES.items():
        if head.isdigit() and base <= int(head) <= base + 3:
            return marketplace_id
    return None


def _fba_fee_per_unit(weight_lb: Decimal) -> Decimal:
    # A simplified FBA standard-size fee table (2025-like), by shipping weight.
    if weight_lb <= 1:
        return Decimal("4.75")
    if weight_lb <= 2:
        return Decimal("5.40")
    if weight_lb <= 3:
        return Decimal("6.10")
    return money(Decimal("6.10") + (weight_lb - 3) * Decimal("0.38"))


def orders_created_on(
    world: MerchantWorld, day: date, marketplace_id: str = AMAZON_US_MARKETPLACE_ID
) -> tuple[AmazonOrderPlan, ...]:
    """The orders created on `day` (UTC) in a marketplace; empty before history_start. Cached per
    (seed, merchant, history start, day, marketplace): a day's plans never change."""
    return _orders_created_on(
        world.seed, world.merchant_id, world.history_start, day, marketplace_id
    )


@functools.lru_cache(maxsize=4096)
def _orders_created_on(
    seed: int, merchant_id: str, history_start: date, day: date, marketplace_id: str
) -> tuple[AmazonOrderPlan, ...]:
    if day < history_start:
        return ()
    country, _, id_base = AMAZON_MARKETPLACES[marketplace_id]
    # The US keeps the streams it had before marketplaces existed, so its data never moves.
    stream = "amazon" if country == "US" else f"amazon-{marketplace_id}"
    catalog = parts_catalog(seed, merchant_id)
    rng, midnight, seconds = order_seconds(seed, merchant_id, stream, day, (3, 7), 2)
    fba_parts = [p for p in catalog if p.amazon_fba]
    mfn_parts = [p for p in catalog if not p.amazon_fba]
    plans = []
    for index, second in enumerate(seconds):
        orng = stable_rng(seed, merchant_id, f"{stream}-order", day.isoformat(), index)
        created = midnight + timedelta(seconds=second)
        fulfilled_by = "AMAZON" if orng.random() < 0.6 and fba_parts else "MERCHANT"
        pool = fba_parts if fulfilled_by == "AMAZON" else (mfn_parts or fba_parts)
        buyer = fake_buyer(orng, email_domain="marketplace.amazon.com", country=country)
        n_lines = min(len(pool), orng.choices([1, 2, 3, 4], weights=[62, 24, 10, 4])[0])
        order_id = f"{id_base + orng.randint(0, 3)}-{orng.randint(0, 9999999):07d}-{orng.randint(0, 9999999):07d}"
        lines = []
        for line_no, part in enumerate(orng.sample(pool, n_lines)):
            quantity = orng.choices([1, 2, 3, 4], weights=[75, 16, 6, 3])[0]
            subtotal = part.price * quantity
            shipping = Decimal("0.00")
            if fulfilled_by == "MERCHANT" and subtotal < 35:
                shipping = Decimal("5.99")
            tax = money((subtotal + shipping) * buyer.address.tax_rate)
            # Automotive & Powersports referral fee: 12% of sales price incl. shipping, min $0.30 per unit.
            referral = max(
                money((subtotal + shipping) * Decimal("0.12")), Decimal("0.30") * quantity
            )
            fba_fee = (
                _fba_fee_per_unit(part.weight_lb) * quantity
                if fulfilled_by == "AMAZON"
                else Decimal("0.00")
            )
            lines.append(
                AmazonLine(
                    order_item_id=f"{stable_int(order_id, line_no) % 10**14:014d}",
                    part=part,
                    quantity=quantity,
                    unit_price=part.price,
                    item_subtotal=subtotal,
                    shipping=shipping,
                    tax=tax,
                    referral_fee=referral,
                    fba_fee=money(fba_fee),
                )
            )
        pending_until = created + timedelta(minutes=orng.randint(2, 90))
        fate = orng.random()
        cancel_at = ship_at = deliver_at = refund_at = None
        if fate < 0.05:
            cancel_at = pending_until + timedelta(hours=orng.uniform(0.5, 20))
        else:
            handling = orng.uniform(3, 20) if fulfilled_by == "AMAZON" else orng.uniform(8, 60)
            ship_at = pending_until + timedelta(hours=handling)
            deliver_at = ship_at + timedelta(hours=orng.uniform(20, 110))
            if fate > 0.94:
                refund_at = deliver_at + timedelta(days=orng.uniform(2, 25))
        carrier, prefix, digits = orng.choice(_CARRIERS)
        tracking = prefix + "".join(orng.choice("0123456789") for _ in range(digits))
        plans.append(
            AmazonOrderPlan(
                merchant_id=merchant_id,
                order_id=order_id,
                created=created,
                fulfilled_by=fulfilled_by,
                service_level=orng.choice(["STANDARD", "STANDARD", "EXPEDITED"])
                if fulfilled_by == "MERCHANT"
                else "STANDARD",
                lines=tuple(lines),
                buyer=buyer,
                pending_until=whole_seconds(pending_until),
                ship_at=whole_seconds(ship_at),
                deliver_at=whole_seconds(deliver_at),
                cancel_at=whole_seconds(cancel_at),
                refund_at=whole_seconds(refund_at),
                carrier=carrier,
                tracking_number=tracking,
                shipment_id=f"D{orng.randint(0, 10**9):09d}",
                marketplace_id=marketplace_id,
            )
        )
    return tuple(plans)


def _plans_on(
    world: MerchantWorld, marketplace_id: str = AMAZON_US_MARKETPLACE_ID
) -> Callable[[date], Iterable[AmazonOrderPlan]]:
    return lambda day: orders_created_on(world, day, marketplace_id)


def order_plan(world: MerchantWorld, order_id: str, now: datetime) -> AmazonOrderPlan | None:
    """Find an order by id among orders that exist at `now` (the id's first digits name the
    marketplace; the rest encodes nothing: scan)."""
    marketplace_id = marketplace_of_order(order_id)
    if marketplace_id is None:
        return None
    start = datetime.combine(world.history_start, datetime.min.time(), tzinfo=UTC)
    day = now.date()
    while day >= start.date():
        for plan in orders_created_on(world, day, marketplace_id):
            if plan.order_id == order_id and plan.created <= now:
                return plan
        day -= timedelta(days=1)
    return None


def order_plans_created_between(
    world: MerchantWorld,
    a: datetime,
    b: datetime,
    now: datetime,
    marketplace_id: str = AMAZON_US_MARKETPLACE_ID,
) -> list[AmazonOrderPlan]:
    """Orders created in [a, b) that exist at `now`, by creation time."""
    return plans_created_by(_plans_on(world, marketplace_id), a, b, now)


def order_plans_updated_between(
    world: MerchantWorld,
    a: datetime,
    b: datetime,
    now: datetime,
    marketplace_id: str = AMAZON_US_MARKETPLACE_ID,
) -> list[AmazonOrderPlan]:
    """Orders whose last update as of `now` falls in [a, b), by (last update, order id): what
    searchOrders serves for lastUpdatedAfter/Before."""
    return plans_modified_between(
        _plans_on(world, marketplace_id), a, b, now, MAX_ORDER_LIFETIME, lambda p: p.order_id
    )


# Settlements run every 14 days on a per-merchant phase; a settlement holds exactly the finance
# transactions posted in its period (orders and fees without an order) and its reserve rows.


def _settlement_phase(world: MerchantWorld) -> timedelta:
    # Each merchant's settlements close at their own hour of the 14-day grid.
    return timedelta(
        hours=stable_int(world.seed, world.merchant_id, "settlement-phase") % (14 * 24)
    )


def settlement_index(world: MerchantWorld, at: datetime) -> int:
    """The index of the settlement period that holds `at`."""
    return (at - SETTLEMENT_EPOCH - _settlement_phase(world)) // SETTLEMENT_PERIOD


def settlement_window(world: MerchantWorld, index: int) -> tuple[datetime, datetime]:
    start = SETTLEMENT_EPOCH + _settlement_phase(world) + index * SETTLEMENT_PERIOD
    return start, start + SETTLEMENT_PERIOD


def _transactions_for_order(plan: AmazonOrderPlan) -> list[AmazonFinanceTransaction]:
    out = []
    if plan.ship_at is not None:
        rows: list[tuple[str, str, Decimal, AmazonLine | None]] = []
        for line in plan.lines:
            rows.append(("ItemPrice", "Principal", line.item_subtotal, line))
            if line.shipping:
                rows.append(("ItemPrice", "Shipping", line.shipping, line))
            if line.tax:
                rows.append(("ItemPrice", "Tax", line.tax, line))
                # Marketplace facilitator states: Amazon collects the tax and remits it itself.
                rows.append(
                    ("ItemWithheldTax", "MarketplaceFacilitatorTax-Principal", -line.tax, line)
                )
            rows.append(("ItemFees", "Commission", -line.referral_fee, line))
            if line.fba_fee:
                rows.append(("ItemFees", "FBAPerUnitFulfillmentFee", -line.fba_fee, line))
        out.append(
            AmazonFinanceTransaction(
                f"{plan.order_id}-S",
                "Shipment",
                plan.ship_at,
                plan,
                tuple(rows),
                plan.marketplace_id,
            )
        )
    if plan.refund_at is not None:
        rows = []
        for line in plan.lines:
            rows.append(("ItemPrice", "Principal", -line.item_subtotal, line))
            if line.shipping:
                rows.append(("ItemPrice", "Shipping", -line.shipping, line))
            if line.tax:
                rows.append(("ItemPrice", "Tax", -line.tax, line))
                rows.append(
                    ("ItemWithheldTax", "MarketplaceFacilitatorTax-Principal", line.tax, line)
                )
            rows.append(("ItemFees", "Commission", line.referral_fee, line))
            rows.append(("ItemFees", "RefundCommission", -line.refund_commission, line))
        out.append(
            AmazonFinanceTransaction(
                f"{plan.order_id}-R",
                "Refund",
                plan.refund_at,
                plan,
                tuple(rows),
                plan.marketplace_id,
            )
        )
    return out


def _fee_owner(world: MerchantWorld, marketplace_id: str) -> str:
    # The merchant part of the ids of fees without an order; the US keeps its old ids.
    country = AMAZON_MARKETPLACES[marketplace_id][0]
    return world.merchant_id if country == "US" else f"{world.merchant_id}-{country}"


def _history_start(world: MerchantWorld) -> datetime:
    return datetime.combine(world.history_start, datetime.min.time(), tzinfo=UTC)


def _cents(rng: random.Random, low: int, high: int) -> Decimal:
    """An amount drawn between `low` and `high` whole units, exact to the cent."""
    return Decimal(rng.randint(low * 100, high * 100)) / 100


def _fee(
    world: MerchantWorld,
    marketplace_id: str,
    key: tuple[str, object],
    transaction_type: str,
    description: str,
    posted: datetime,
    row: tuple[str, str, Decimal],
    settlement_type: str = "other-transaction",
) -> AmazonFinanceTransaction:
    """A transaction without an order, id `KIND-<merchant[-country]>-<suffix>` from `key`."""
    kind, suffix = key
    amount_type, amount_description, amount = row
    return AmazonFinanceTransaction(
        f"{kind}-{_fee_owner(world, marketplace_id)}-{suffix}",
        transaction_type,
        posted,
        None,
        ((amount_type, amount_description, amount, None),),
        marketplace_id,
        description,
        settlement_type,
    )


def _order_transactions_between(
    world: MerchantWorld, a: datetime, b: datetime, marketplace_id: str
) -> list[AmazonFinanceTransaction]:
    found: list[AmazonFinanceTransaction] = []
    for plan in plans_created_between(_plans_on(world, marketplace_id), a - MAX_ORDER_LIFETIME, b):
        found.extend(t for t in _transactions_for_order(plan) if a <= t.posted < b)
    return found


def negative_settlement(world: MerchantWorld, index: int, marketplace_id: str) -> bool:
    """Whether period `index` carries the big charge that makes its settlement negative: one
    period in every 8, on a phase of its own per merchant and marketplace."""
    phase = stable_int(world.seed, world.merchant_id, "amazon-negative", marketplace_id) % 8
    return index % 8 == phase


def _period_fees(
    world: MerchantWorld, index: int, marketplace_id: str
) -> tuple[AmazonFinanceTransaction, ...]:
    """The transactions without an order posted in settlement period `index` (from history start
    on), by (posted, id). Cached: a period's fees never change."""
    return _period_fees_cached(
        world.seed, world.merchant_id, world.history_start, index, marketplace_id
    )


@functools.lru_cache(maxsize=4096)
def _period_fees_cached(
    seed: int, merchant_id: str, history_start: date, index: int, marketplace_id: str
) -> tuple[AmazonFinanceTransaction, ...]:
    world = MerchantWorld(seed, merchant_id, history_start)
    start, end = settlement_window(world, index)
    rng = stable_rng(seed, merchant_id, "amazon-fees", marketplace_id, index)
    fees = [
        _fee(
            world,
            marketplace_id,
            ("SUB", index),
            "ServiceFee",
            "Subscription Fee",
            start + timedelta(hours=1),
            ("other-transaction", "Subscription Fee", -SUBSCRIPTION_FEE),
        )
    ]
    # FBA storage: the previous month's, billed on the 7th.
    day = start.date()
    while day <= end.date():
        posted = datetime(day.year, day.month, day.day, 9, 30, tzinfo=UTC)
        if day.day == STORAGE_BILLING_DAY and start <= posted < end:
            month = stable_rng(seed, merchant_id, "amazon-storage", marketplace_id, f"{day:%Y-%m}")
            fees.append(
                _fee(
                    world,
                    marketplace_id,
                    ("STOR", f"{day:%Y%m}"),
                    "ServiceFee",
                    "FBAStorageBilling",
                    posted,
                    ("other-transaction", "Storage Fee", -_cents(month, 8, 95)),
                )
            )
        day += timedelta(days=1)
    # An inbound shipment to the fulfilment centres every other period or so.
    if rng.random() < 0.5:
        fees.append(
            _fee(
                world,
                marketplace_id,
                ("INB", index),
                "ServiceFee",
                "FBAInboundTransportationFee",
                start + timedelta(minutes=rng.randint(20 * 60, 300 * 60)),
                ("other-transaction", "FBAInboundTransportationFee", -_cents(rng, 15, 140)),
            )
        )
    # Sponsored Products: Amazon charges the ad spend as it reaches the seller's threshold.
    for n in range(rng.randint(1, 3)):
        fees.append(
            _fee(
                world,
                marketplace_id,
                ("ADS", f"{index}-{n}"),
                "ProductAdsPayment",
                "Cost of Advertising",
                start + timedelta(minutes=rng.randint(60, 13 * 24 * 60)),
                ("Cost of Advertising", "TransactionTotalAmount", -_cents(rng, 25, 220)),
                "ServiceFee",
            )
        )
    history = _history_start(world)
    fees = [t for t in fees if t.posted >= history]
    if negative_settlement(world, index, marketplace_id):
        # A long-term storage bill or an ad campaign's charge larger than the period's sales,
        # reserves included: the settlement's total (and its net proceeds) go negative.
        rest = sum(
            (t.total for t in _order_transactions_between(world, start, end, marketplace_id)),
            sum((t.total for t in fees), Decimal("0")),
        )
        released = reserve_held(world, index - 1, marketplace_id)
        held = reserve_held(world, index, marketplace_id)
        charge = max(rest, rest + released - held, Decimal("0")) + _cents(rng, 40, 400)
        posted = start + timedelta(minutes=rng.randint(2 * 24 * 60, 12 * 24 * 60))
        if posted >= history:
            if rng.random() < 0.5:
                fees.append(
                    _fee(
                        world,
                        marketplace_id,
                        ("LTS", index),
                        "ServiceFee",
                        "FBALongTermStorageBilling",
                        posted,
                        ("other-transaction", "StorageRenewalBilling", -charge),
                    )
                )
            else:
                fees.append(
                    _fee(
                        world,
                        marketplace_id,
                        ("ADS", f"{index}-campaign"),
                        "ProductAdsPayment",
                        "Cost of Advertising",
                        posted,
                        ("Cost of Advertising", "TransactionTotalAmount", -charge),
                        "ServiceFee",
                    )
                )
    fees.sort(key=lambda t: (t.posted, t.transaction_id))
    return tuple(fees)


def reserve_held(world: MerchantWorld, index: int, marketplace_id: str) -> Decimal:
    """The reserve Amazon holds back in a marketplace's settlement `index` (released, the same
    amount, in the next): most settlements hold one; none before history starts."""
    _, end = settlement_window(world, index)
    if end <= _history_start(world):
        return Decimal("0")
    rng = stable_rng(world.seed, world.merchant_id, "amazon-reserve", marketplace_id, index)
    if rng.random() < 0.1:
        return Decimal("0")
    return _cents(rng, 60, 650)


def transactions_posted_between(
    world: MerchantWorld,
    a: datetime,
    b: datetime,
    marketplace_id: str = AMAZON_US_MARKETPLACE_ID,
) -> list[AmazonFinanceTransaction]:
    """Finance transactions posted in [a, b) in a marketplace, by (posted, transaction id): what
    listTransactions serves. Ignores "now": the caller clips `b` to what has happened."""
    found = _order_transactions_between(world, a, b, marketplace_id)
    for index in range(settlement_index(world, a), settlement_index(world, b) + 1):
        found.extend(t for t in _period_fees(world, index, marketplace_id) if a <= t.posted < b)
    found.sort(key=lambda t: (t.posted, t.transaction_id))
    return found


def settlement_id(
    world: MerchantWorld, index: int, marketplace_id: str = AMAZON_US_MARKETPLACE_ID
) -> str:
    """The settlement number of a marketplace's settlement period `index`."""
    if marketplace_id == AMAZON_US_MARKETPLACE_ID:
        key: tuple[Any, ...] = (world.seed, world.merchant_id, "settlement", index)
    else:
        key = (world.seed, world.merchant_id, "settlement", index, marketplace_id)
    return f"{stable_int(*key) % 10**11:011d}"


# A settlement report id is six hash digits then six index digits: the marketplace's position in
# AMAZON_MARKETPLACES times 100000 plus the period index offset by 50000. The US (position 0)
# keeps the ids it had before marketplaces settled apart.
_REPORT_INDEX_OFFSET = 50000
_REPORT_INDEX_SPAN = 100000
_MARKETPLACE_ORDER = tuple(AMAZON_MARKETPLACES)


def _document_region(marketplace_id: str) -> str:
    # Amazon's document ids name the selling region: North America or Europe for ours.
    return "na" if AMAZON_MARKETPLACES[marketplace_id][0] in ("US", "CA", "MX") else "eu"


def settlement_report_id(
    world: MerchantWorld, index: int, marketplace_id: str = AMAZON_US_MARKETPLACE_ID
) -> str:
    # The hash digits make ids from another merchant, seed or marketplace fail to resolve; the
    # index digits let getReport find the settlement (marketplace and period) from the id alone.
    if not 0 <= index + _REPORT_INDEX_OFFSET < _REPORT_INDEX_SPAN:
        raise ValueError(f"settlement period {index} is outside the report id range")
    if marketplace_id == AMAZON_US_MARKETPLACE_ID:
        key: tuple[Any, ...] = (world.seed, world.merchant_id, "settlement-report", index)
    else:
        key = (world.seed, world.merchant_id, "settlement-report", index, marketplace_id)
    position = _MARKETPLACE_ORDER.index(marketplace_id)
    tail = position * _REPORT_INDEX_SPAN + index + _REPORT_INDEX_OFFSET
    return f"{stable_int(*key) % 10**6:06d}{tail:06d}"


def settlement_from_report_id(world: MerchantWorld, report_id: str) -> tuple[str, int] | None:
    """(marketplace id, period index) of one of the merchant's settlement report ids, or None."""
    if len(report_id) != 12 or not report_id.isdigit():
        return None
    position, rest = divmod(int(report_id[6:]), _REPORT_INDEX_SPAN)
    if position >= len(_MARKETPLACE_ORDER):
        return None
    marketplace_id = _MARKETPLACE_ORDER[position]
    index = rest - _REPORT_INDEX_OFFSET
    if settlement_report_id(world, index, marketplace_id) != report_id:
        return None
    return marketplace_id, index


def settlement_by_index(
    world: MerchantWorld, index: int, marketplace_id: str = AMAZON_US_MARKETPLACE_ID
) -> AmazonSettlement:
    """A marketplace's settlement of period `index`: exactly that marketplace's transactions
    posted in the period, the reserve released from the previous period and the one held in
    this; in the quarter's short settlement, one fee row missing from the document."""
    start, end = settlement_window(world, index)
    number = settlement_id(world, index, marketplace_id)
    report_id = settlement_report_id(world, index, marketplace_id)
    transactions = tuple(transactions_posted_between(world, start, end, marketplace_id))
    return AmazonSettlement(
        merchant_id=world.merchant_id,
        settlement_id=number,
        start=start,
        end=end,
        deposit_date=end + timedelta(days=2),
        # Amazon publishes the report some hours after the period closes.
        report_created=end + timedelta(hours=3, minutes=stable_int(number) % 180),
        report_id=report_id,
        document_id=f"amzn1.spdoc.1.4.{_document_region(marketplace_id)}.{report_id}",
        transactions=transactions,
        marketplace_id=marketplace_id,
        reserve_released=reserve_held(world, index - 1, marketplace_id),
        reserve_held=reserve_held(world, index, marketplace_id),
        missing=_missing_row(world, index, marketplace_id, transactions),
    )


def _quarter_start(day: date) -> date:
    return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def short_settlement_index(world: MerchantWorld, day: date, marketplace_id: str) -> int | None:
    """The period index of a marketplace's short settlement in `day`'s calendar quarter: one of
    the settlements that end in the quarter and opened from history start on (None if there is
    none)."""
    first = _quarter_start(day)
    after = _quarter_start(first + timedelta(days=95))
    a = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    b = datetime.combine(after, datetime.min.time(), tzinfo=UTC)
    history = _history_start(world)
    candidates = [
        index
        for index in range(settlement_index(world, a) - 1, settlement_index(world, b) + 1)
        if a <= settlement_window(world, index)[1] < b
        and settlement_window(world, index)[0] >= history
    ]
    if not candidates:
        return None
    rng = stable_rng(world.seed, world.merchant_id, "amazon-short", marketplace_id, first)
    return rng.choice(candidates)


def _missing_row(
    world: MerchantWorld,
    index: int,
    marketplace_id: str,
    transactions: tuple[AmazonFinanceTransaction, ...],
) -> tuple[str, int] | None:
    # Amazon's files are sometimes a line short of their total: once a quarter the sandbox drops
    # one fee row from the document and keeps it in total-amount, so reconciliation must notice.
    _, end = settlement_window(world, index)
    if short_settlement_index(world, end.date(), marketplace_id) != index:
        return None
    fees = [
        (t.transaction_id, position)
        for t in transactions
        for position, (amount_type, _, amount, _) in enumerate(t.rows)
        if amount < 0 and amount_type in ("ItemFees", "other-transaction", "Cost of Advertising")
    ]
    if not fees:
        return None
    rng = stable_rng(world.seed, world.merchant_id, "amazon-short-row", marketplace_id, index)
    return rng.choice(fees)


def settlements_reported_between(
    world: MerchantWorld,
    a: datetime,
    b: datetime,
    now: datetime,
    marketplace_id: str = AMAZON_US_MARKETPLACE_ID,
) -> list[AmazonSettlement]:
    """A marketplace's settlements whose report was created in [a, b) and by `now`, oldest
    first."""
    history = datetime.combine(world.history_start, datetime.min.time(), tzinfo=UTC)
    out = []
    index = settlement_index(world, max(a, history) - SETTLEMENT_PERIOD - timedelta(days=1))
    while True:
        start, end = settlement_window(world, index)
        if start > min(b, now):
            break
        if end > history:
            meta = settlement_by_index(world, index, marketplace_id)
            if a <= meta.report_created < b and meta.report_created <= now:
                out.append(meta)
        index += 1
    return out


# Inventory and offers are snapshots: they move day by day, like real stock.


def inventory_rows(
    world: MerchantWorld, now: datetime, marketplace_id: str = AMAZON_US_MARKETPLACE_ID
) -> list[dict[str, Any]]:
    """FBA stock per FBA part in a marketplace as of `now`'s day: quantities for the inventory
    summaries."""
    day = now.date()
    stream = (
        "amazon-inventory"
        if marketplace_id == AMAZON_US_MARKETPLACE_ID
        else f"amazon-inventory-{marketplace_id}"
    )
    out = []
    for part in world.catalog:
        if not part.amazon_fba:
            continue
        rng = stable_rng(world.seed, world.merchant_id, stream, part.sku, day.isoformat())
        fulfillable = rng.choice([0, 0] + list(range(1, 120)))
        updated = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
            seconds=rng.randint(0, 3600 * 6)
        )
        out.append(
            {
                "part": part,
                "fulfillable": fulfillable,
                "inbound_working": rng.choice([0, 0, 0, rng.randint(5, 60)]),
                "inbound_shipped": rng.choice([0, 0, rng.randint(1, 40)]),
                "inbound_receiving": rng.choice([0, 0, 0, rng.randint(1, 20)]),
                "reserved_customer": rng.randint(0, 4),
                "reserved_fc": rng.randint(0, 3),
                "researching": rng.choice([0, 0, 0, 1]),
                "unfulfillable_customer_damaged": rng.choice([0, 0, 0, 1, 2]),
                "unfulfillable_warehouse_damaged": rng.choice([0, 0, 0, 0, 1]),
                "last_updated": min(updated, now),
            }
        )
    return out


def competing_offers(world: MerchantWorld, part: Part, now: datetime) -> list[dict[str, Any]]:
    """Competing offers for a part on `now`'s day (ours first). Prices are Decimal."""
    rng = stable_rng(
        world.seed, world.merchant_id, "amazon-offers", part.sku, now.date().isoformat()
    )
    offers = [
        {
            "seller_id": seller_id(world),
            "price": part.price,
            "shipping": Decimal("0.00"),
            "fba": part.amazon_fba,
            "mine": True,
            "feedback": rng.randint(200, 5000),
            "rating": rng.randint(92, 99),
        }
    ]
    for n in range(rng.randint(1, 6)):
        factor = Decimal(str(round(rng.uniform(0.82, 1.18), 3)))
        offers.append(
            {
                "seller_id": stable_code("A", world.seed, part.sku, "competitor", n) + "QX",
                "price": money(part.price * factor),
                "shipping": rng.choice(
                    [Decimal("0.00"), Decimal("0.00"), Decimal("4.99"), Decimal("7.49")]
                ),
                "fba": rng.random() < 0.5,
                "mine": False,
                "feedback": rng.randint(3, 90000),
                "rating": rng.randint(70, 100),
            }
        )
    return offers


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


def iso(ts: datetime) -> str:
    """ISO 8601 UTC with a `Z`, second precision, as SP-API writes timestamps."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _m(amount: Decimal, currency: str = USD) -> dict[str, str]:
    """Orders v2026 money: strings."""
    return {"amount": f"{amount:.2f}", "currencyCode": currency}


def _n(amount: Decimal, currency: str = USD) -> dict[str, Any]:
    """Finances 2024-06-19 money: JSON numbers (exact, via Decimal)."""
    return {"currencyAmount": amount, "currencyCode": currency}


def _p(amount: Decimal, currency: str = USD) -> dict[str, Any]:
    """Pricing v0 money: JSON numbers, PascalCase keys."""
    return {"CurrencyCode": currency, "Amount": amount}


def _marketplaces_param(request: Request, name: str, code: str = "InvalidInput") -> list[str]:
    """The marketplace ids a request names in `name`, each checked against the sandbox's
    marketplaces (400, as Amazon answers an id it does not know)."""
    ids = _list_param(request, name)
    unknown = [m for m in ids if m not in AMAZON_MARKETPLACES]
    if unknown:
        raise BadRequest(
            f"Invalid {name}: {', '.join(unknown)} is not a marketplace this seller sells on "
            f"(the sandbox knows {', '.join(AMAZON_MARKETPLACES)})",
            code,
        )
    return ids


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
# Renderers (also used by the introspection functions)


def _order_status(plan: AmazonOrderPlan, now: datetime) -> tuple[str, datetime]:
    state = plan.status_at(now)
    assert state is not None, "render only orders that exist at now"
    return state


def render_order(
    plan: AmazonOrderPlan, now: datetime, datasets: frozenset[str] | set[str]
) -> dict[str, Any]:
    """An Orders v2026-01-01 `Order` as of `now`, with the requested `includedData` datasets."""
    status, updated = _order_status(plan, now)
    currency = plan.currency

    def m(amount: Decimal) -> dict[str, str]:
        return _m(amount, currency)

    pending = status == "PENDING"
    shipped = status in ("SHIPPED", "DELIVERED")
    order: dict[str, Any] = {
        "orderId": plan.order_id,
        "createdTime": iso(plan.created),
        "lastUpdatedTime": iso(updated),
        "programs": ["PRIME"] if plan.fulfilled_by == "AMAZON" else [],
        "salesChannel": {
            "channelName": "AMAZON",
            "marketplaceId": plan.marketplace_id,
            "marketplaceName": AMAZON_MARKETPLACES[plan.marketplace_id][1],
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
        breakdowns = [{"type": "ITEM", "subtotal": m(plan.item_total)}]
        shipping = sum((line.shipping for line in plan.lines), Decimal("0"))
        tax = sum((line.tax for line in plan.lines), Decimal("0"))
        if shipping:
            breakdowns.append({"type": "SHIPPING", "subtotal": m(shipping)})
        if tax:
            breakdowns.append({"type": "TAX", "subtotal": m(tax)})
        order["proceeds"] = {"grandTotal": m(plan.grand_total), "breakdowns": breakdowns}
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
            product["price"] = {"unitPrice": m(line.unit_price)}
        item: dict[str, Any] = {
            "orderItemId": line.order_item_id,
            "quantityOrdered": line.quantity,
            "programs": [],
            "product": product,
        }
        if "PROCEEDS" in datasets and not pending:
            item_breakdowns = [{"type": "ITEM", "subtotal": m(line.item_subtotal)}]
            if line.shipping:
                item_breakdowns.append({"type": "SHIPPING", "subtotal": m(line.shipping)})
            if line.tax:
                item_breakdowns.append(
                    {
                        "type": "TAX",
                        "subtotal": m(line.tax),
                        "detailedBreakdowns": [{"subtype": "ITEM", "value": m(line.tax)}],
                    }
                )
            item["proceeds"] = {
                "proceedsTotal": m(line.item_subtotal + line.shipping + line.tax),
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
    "Cost of Advertising": "Expenses",
}
_TRANSACTION_DESCRIPTION = {
    "Shipment": "Order Payment",
    "Refund": "Refund Order",
}


def _breakdowns(rows: list[tuple[str, str, Decimal]], currency: str) -> list[dict[str, Any]]:
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
                "breakdownAmount": _n(sum(merged.values(), Decimal("0")), currency),
                "breakdowns": [
                    {"breakdownType": d, "breakdownAmount": _n(a, currency)}
                    for d, a in merged.items()
                ],
            }
        )
    return out


def render_transaction(world: MerchantWorld, t: AmazonFinanceTransaction) -> dict[str, Any]:
    """A Finances 2024-06-19 `Transaction` (amounts are exact JSON numbers)."""
    currency = marketplace_currency(t.marketplace_id)
    index = settlement_index(world, t.posted)
    group_id = base64.urlsafe_b64encode(
        hashlib.sha256(settlement_id(world, index, t.marketplace_id).encode()).digest()[:24]
    ).decode()
    related = [
        {"relatedIdentifierName": "FINANCIAL_EVENT_GROUP_ID", "relatedIdentifierValue": group_id}
    ]
    record: dict[str, Any] = {
        "sellingPartnerMetadata": {
            "sellingPartnerId": seller_id(world),
            "accountType": "Standard Orders",
            "marketplaceId": t.marketplace_id,
        },
        "relatedIdentifiers": related,
        "transactionType": t.transaction_type,
        "transactionId": t.transaction_id,
        "transactionStatus": "RELEASED",
        "description": t.description or _TRANSACTION_DESCRIPTION[t.transaction_type],
        "postedDate": iso(t.posted),
        "totalAmount": _n(t.total, currency),
        "marketplaceDetails": {
            "marketplaceId": t.marketplace_id,
            "marketplaceName": AMAZON_MARKETPLACES[t.marketplace_id][1],
        },
        "breakdowns": _breakdowns([(a, d, v) for a, d, v, _ in t.rows], currency),
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
                    "totalAmount": _n(sum((v for _, _, v in rows), Decimal("0")), currency),
                    "relatedIdentifiers": [
                        {
                            "itemRelatedIdentifierName": "ORDER_ADJUSTMENT_ITEM_ID",
                            "itemRelatedIdentifierValue": line.order_item_id,
                        }
                    ],
                    "breakdowns": _breakdowns(rows, currency),
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


# Marketplaces whose settlement files write "1.234,56": continental Europe's.
_DECIMAL_COMMA_COUNTRIES = frozenset({"DE", "FR", "IT", "ES"})


def flat_amount(amount: Decimal, marketplace_id: str = AMAZON_US_MARKETPLACE_ID) -> str:
    """An amount as a marketplace's settlement file writes it: "1234.56" in North America and the
    UK; "1.234,56" (decimal comma, dots grouping thousands) on Amazon.de/.fr/.it/.es."""
    if AMAZON_MARKETPLACES[marketplace_id][0] not in _DECIMAL_COMMA_COUNTRIES:
        return f"{amount:.2f}"
    return f"{amount:,.2f}".translate(str.maketrans(",.", ".,"))


def render_settlement(s: AmazonSettlement) -> str:
    """The GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE_V2 document: tab-separated, header first, then a
    totals row (the only row with start/end/deposit/total/currency), then one row per amount
    (`AmazonSettlement.rows()`: reserves and fees without an order are `other-transaction` or
    `ServiceFee` rows with no order id). Amounts are written as the marketplace writes them."""
    lines = ["\t".join(SETTLEMENT_COLUMNS)]
    totals = dict.fromkeys(SETTLEMENT_COLUMNS, "")
    totals.update(
        {
            "settlement-id": s.settlement_id,
            "settlement-start-date": _flat_time(s.start),
            "settlement-end-date": _flat_time(s.end),
            "deposit-date": _flat_time(s.deposit_date),
            "total-amount": flat_amount(s.total, s.marketplace_id),
            "currency": s.currency,
        }
    )
    lines.append("\t".join(totals[c] for c in SETTLEMENT_COLUMNS))
    for t, amount_type, description, amount, line, posted in s.rows():
        row = dict.fromkeys(SETTLEMENT_COLUMNS, "")
        row["settlement-id"] = s.settlement_id
        row["amount-type"] = amount_type
        row["amount-description"] = description
        row["amount"] = flat_amount(amount, s.marketplace_id)
        row["posted-date"] = posted.strftime("%Y-%m-%d")
        row["posted-date-time"] = _flat_time(posted)
        if t is None:
            row["transaction-type"] = "other-transaction"
        elif t.order is None:
            row["transaction-type"] = t.settlement_type
        else:
            row["transaction-type"] = "Order" if t.transaction_type == "Shipment" else "Refund"
            row["order-id"] = t.order.order_id
            row["shipment-id"] = t.order.shipment_id if t.transaction_type == "Shipment" else ""
            row["adjustment-id"] = (
                f"{stable_int(t.transaction_id) % 10**14:014d}"
                if t.transaction_type == "Refund"
                else ""
            )
            row["marketplace-name"] = AMAZON_MARKETPLACES[s.marketplace_id][1]
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
    for row in inventory_rows(world, now):
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
# Introspection for tests: what the sandbox holds for a merchant, as of its clock


def amazon_orders_updated_between(
    state: SandboxState,
    merchant_id: str,
    a: datetime,
    b: datetime,
    *,
    marketplace_id: str = AMAZON_US_MARKETPLACE_ID,
) -> list[dict[str, Any]]:
    """The orders searchOrders would return for [a, b) now in a marketplace, rendered with every
    dataset."""
    now = state.now()
    return [
        render_order(p, now, ALL_ORDER_DATASETS)
        for p in order_plans_updated_between(state.world(merchant_id), a, b, now, marketplace_id)
    ]


def amazon_transactions_posted_between(
    state: SandboxState,
    merchant_id: str,
    a: datetime,
    b: datetime,
    *,
    marketplace_id: str = AMAZON_US_MARKETPLACE_ID,
) -> list[dict[str, Any]]:
    """The transactions listTransactions would return for [a, b) now in a marketplace."""
    world = state.world(merchant_id)
    b = min(b, state.now())
    return [
        render_transaction(world, t)
        for t in transactions_posted_between(world, a, b, marketplace_id)
    ]


def amazon_settlements_between(
    state: SandboxState,
    merchant_id: str,
    a: datetime,
    b: datetime,
    *,
    marketplace_id: str = AMAZON_US_MARKETPLACE_ID,
) -> list[AmazonSettlement]:
    """A marketplace's settlements whose report was created in [a, b) and by now
    (`AmazonSettlement` objects)."""
    return settlements_reported_between(state.world(merchant_id), a, b, state.now(), marketplace_id)


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
    # No marketplaceIds: the seller's home marketplace (Amazon.com).
    marketplaces = _marketplaces_param(request, "marketplaceIds") or [AMAZON_US_MARKETPLACE_ID]
    world = state.world(merchant)
    plans: list[AmazonOrderPlan] = []
    for marketplace_id in dict.fromkeys(marketplaces):
        if created_after:
            plans.extend(order_plans_created_between(world, after, before, now, marketplace_id))
        else:
            plans.extend(order_plans_updated_between(world, after, before, now, marketplace_id))
    if len(marketplaces) > 1:
        # One list across marketplaces, in the order a single marketplace uses.
        plans.sort(key=lambda p: (p.created if created_after else p.modified_at(now), p.order_id))
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
    plan = order_plan(state.world(merchant), order_id, now)
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
    marketplaces = _marketplaces_param(request, "marketplaceIds")
    if not marketplaces:
        raise BadRequest("marketplaceIds is required")
    if q["granularityId"] not in marketplaces:
        raise BadRequest("granularityId must be one of the marketplaceIds")
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
    rows = inventory_rows(state.world(merchant), now, q["granularityId"])
    if start is not None:
        rows = [r for r in rows if r["last_updated"] >= start]
    if skus:
        rows = [r for r in rows if r["part"].sku in skus]
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
    marketplace = (_marketplaces_param(request, "marketplaceId") or [AMAZON_US_MARKETPLACE_ID])[0]
    world = state.world(merchant)
    transactions = transactions_posted_between(world, after, before, marketplace)
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
        "marketplaceIds": [s.marketplace_id],
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
        if "marketplaceIds" in q:
            # Comma-separated or repeated; carried in the nextToken as one comma-separated list.
            params["marketplaceIds"] = ",".join(_list_param(request, "marketplaceIds"))
        offset = 0
    types = [t for t in str(params.get("reportTypes", "")).split(",") if t]
    asked = [m for m in str(params.get("marketplaceIds", "")).split(",") if m]
    unknown = [m for m in asked if m not in AMAZON_MARKETPLACES]
    if unknown:
        raise BadRequest(
            f"Invalid marketplaceIds: {', '.join(unknown)} is not a marketplace this seller sells "
            f"on (the sandbox knows {', '.join(AMAZON_MARKETPLACES)})",
            "400",
        )
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
        # Reports matching at least one of the marketplaces asked for; the US when none is.
        for marketplace_id in dict.fromkeys(asked or [AMAZON_US_MARKETPLACE_ID]):
            records.extend(
                _settlement_record(s)
                for s in settlements_reported_between(
                    state.world(merchant), since, until + timedelta(seconds=1), now, marketplace_id
                )
            )
    for report in _reports(state).values():
        if (
            report["merchant"] == merchant
            and report["reportType"] in types
            and since <= report["created"] <= until
            and (not asked or set(asked) & set(report["marketplaceIds"]))
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
    found = settlement_from_report_id(world, report_id)
    if found is not None:
        settlement = settlement_by_index(world, found[1], found[0])
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
    unknown = [str(m) for m in marketplaces if m not in AMAZON_MARKETPLACES]
    if unknown:
        raise BadRequest(f"Invalid input: unknown marketplaceIds {', '.join(unknown)}", "400")
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


_DOCUMENT_ID_RE = re.compile(r"amzn1\.spdoc\.1\.4\.(?:na|eu)\.(.+)")


def _find_document(
    state: SandboxState, merchant: str | None, document_id: str, now: datetime
) -> tuple[str, bytes] | None:
    """(owner merchant, gzip bytes) for a document id, or None."""
    matched = _DOCUMENT_ID_RE.fullmatch(document_id)
    if matched is None:
        return None
    report_id = matched.group(1)
    report = (
        _reports(state).get(report_id) if document_id.startswith("amzn1.spdoc.1.4.na.") else None
    )
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
        found = settlement_from_report_id(world, report_id)
        if found is not None:
            settlement = settlement_by_index(world, found[1], found[0])
            if settlement.document_id == document_id and settlement.report_created <= now:
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
    marketplaces = _marketplaces_param(request, "MarketplaceId")
    if len(marketplaces) != 1:
        raise BadRequest("MarketplaceId is required, one marketplace per request")
    marketplace_id = marketplaces[0]
    currency = marketplace_currency(marketplace_id)
    item_type = q.get("ItemType")
    if item_type not in ("Asin", "Sku"):
        raise BadRequest("ItemType must be Asin or Sku")
    ids = _list_param(request, "Asins" if item_type == "Asin" else "Skus")
    if not 1 <= len(ids) <= 20:
        raise BadRequest(f"{'Asins' if item_type == 'Asin' else 'Skus'} must list 1 to 20 items")
    world = state.world(merchant)
    payload = []
    for ident in ids:
        part = part_by_asin(world, ident) if item_type == "Asin" else world.part_by_sku(ident)
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
        offers = competing_offers(world, part, now)
        best = min(offers, key=lambda o: o["price"] + o["shipping"])
        identifiers: dict[str, Any] = {
            "MarketplaceASIN": {"MarketplaceId": marketplace_id, "ASIN": part.asin}
        }
        if item_type == "Sku":
            identifiers["SKUIdentifier"] = {
                "MarketplaceId": marketplace_id,
                "SellerId": seller_id(world),
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
                                    "LandedPrice": _p(best["price"] + best["shipping"], currency),
                                    "ListingPrice": _p(best["price"], currency),
                                    "Shipping": _p(best["shipping"], currency),
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
    marketplaces = _marketplaces_param(request, "MarketplaceId")
    if len(marketplaces) != 1 or not q.get("ItemCondition"):
        raise BadRequest("MarketplaceId (one marketplace) and ItemCondition are required")
    currency = marketplace_currency(marketplaces[0])

    def p(amount: Decimal) -> dict[str, Any]:
        return _p(amount, currency)

    world = state.world(merchant)
    part = world.part_by_sku(sku)
    if part is None:
        raise NotFound(f"SKU {sku} not found for this seller")
    offers = competing_offers(world, part, now)
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
                    "LandedPrice": p(o["price"] + o["shipping"]),
                    "ListingPrice": p(o["price"]),
                    "Shipping": p(o["shipping"]),
                }
                for ch, o in sorted(lowest.items())
            ],
            "BuyBoxPrices": [
                {
                    "condition": "new",
                    "LandedPrice": p(best["price"] + best["shipping"]),
                    "ListingPrice": p(best["price"]),
                    "Shipping": p(best["shipping"]),
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
                "Shipping": p(o["shipping"]),
                "ListingPrice": p(o["price"]),
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
        # The Product Pricing model of February 2026 renamed `MarketplaceID` to `marketplaceId`.
        "marketplaceId": q["MarketplaceId"],
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
