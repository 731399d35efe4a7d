"""eBay Sell API routes for the sandbox, mounted under `/ebay`.

Shapes follow eBay's API reference (developer.ebay.com/api-docs/sell/...) and the payloads written
from it in tests/fixtures/ebay:

- POST /identity/v1/oauth2/token          OAuth (refresh_token grant, Basic client auth)
- GET  /sell/fulfillment/v1/order          Fulfillment getOrders (filter=lastmodifieddate:[a..b] or
                                           creationdate:[a..b], limit, offset)
- GET  /sell/finances/v1/transaction       Finances getTransactions (filter=transactionDate:[a..b]
                                           or payoutId:{id} alone, optional
                                           transactionType:{SALE|REFUND|...})
- GET  /sell/finances/v1/payout            Finances getPayouts (filter=payoutDate:[a..b])
- GET  /sell/inventory/v1/inventory_item   Inventory getInventoryItems (limit, offset)

Authentication: the refresh token `sandbox-refresh-<merchant_id>` identifies the merchant (as for
Amazon); API calls carry `Authorization: Bearer <access token>`. An expired or unknown token gets
eBay's 401 with errorId 1001 ("Invalid access token").

Data (deterministic in seed + merchant id, from the world's catalog and buyer generator):

- Orders are created on eBay's own per-day stream. An order is PAID at creation; its lines ship
  (one by one for some multi-line orders, so the order is IN_PROGRESS for a while), a few orders
  are cancelled before shipping (cancelState IN_PROGRESS, then CANCELED and FULLY_REFUNDED),
  and a few are refunded after delivery (fully, or one line: PARTIALLY_REFUNDED).
  `lastModifiedDate` is the latest of those events that has happened by the sandbox clock.
- Finances: a SALE (CREDIT, net of final value fees) at purchase, a SHIPPING_LABEL (DEBIT) when the
  first line ships, a REFUND (DEBIT, net of the fee credit) on cancellation or refund, NON_SALE_CHARGE
  (DEBIT) promoted-listing ad fees (feeType AD_FEE) at purchase and a monthly store subscription
  (feeType EBAY_STORE_SUBSCRIPTION_FEE, eBay's FeeTypeEnum name). As on eBay, an ad fee names its
  order only in `references[]` (an ITEM_ID, then the ORDER_ID), never in `orderId`, and carries no
  buyer. Payouts run weekly and hold exactly the transactions dated in their week, so orders,
  transactions and payouts agree to the cent; each paid-out transaction carries its `payoutId`,
  and getTransactions with `filter=payoutId:{id}` answers that payout's transactions.
- Except, deliberately, once per calendar quarter and site: one payout's `amount` (and
  `transactionCount`) include a CREDIT that no transaction listing returns, neither by date nor by
  payoutId, so that payout is one line short, as real payout exports occasionally are.
  `ebay_short_payouts` says which payout and by how much.
- No payout of a whole week is ever negative: when a period's transactions net below zero eBay
  does not send a negative payout, it charges the seller's payment method on file instead (the
  sandbox's weekly sales always outweigh its fees and refunds; a test holds it to that). The week
  the history starts in is not whole: it holds only the hours after that start, and its payout
  can net below zero (a lone cancelled order nets -0.30). Finances has no reserve rows for these
  sellers: held funds show only as a transactionStatus (FUNDS_ON_HOLD), which the sandbox never
  uses, so an eBay payout has no reserve lines.
- Shipping is charged only on single-unit lines under the free-shipping threshold: eBay's
  reference defines `deliveryCost.shippingCost` for the whole line while older notes read it per
  unit, and on single-unit lines both readings agree.

Sites: every call's `X-EBAY-C-MARKETPLACE-ID` (EBAY_US when absent, as eBay defaults) is checked
against `EBAY_MARKETPLACES` (another value is a 400) and the seller is served as registered on that
site: the site's own orders and buyers, and every amount in its currency (EUR on EBAY_DE, GBP on
EBAY_GB, ...). The introspection functions take the site as `marketplace_id`.

Date ranges in filters are applied as [start, end) so consecutive windows never share a record.

Python-side introspection for tests: `ebay_orders_modified_between`, `ebay_transactions_between`,
`ebay_payouts_between`, `ebay_payout_plans_between`, `ebay_payout_transactions`,
`ebay_short_payouts`, `ebay_inventory_items`.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import re
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

CHANNEL = "ebay"
MARKETPLACE_ID = "EBAY_US"
USD = "USD"
MARKETPLACE_HEADER = "X-EBAY-C-MARKETPLACE-ID"
# The eBay sites the sandbox sells on (X-EBAY-C-MARKETPLACE-ID -> country); another value is a 400.
EBAY_MARKETPLACES: dict[str, str] = {
    MARKETPLACE_ID: "US",
    "EBAY_CA": "CA",
    "EBAY_GB": "GB",
    "EBAY_DE": "DE",
    "EBAY_FR": "FR",
    "EBAY_IT": "IT",
    "EBAY_ES": "ES",
}
# The site of the request being served, from its X-EBAY-C-MARKETPLACE-ID (eBay's default when
# absent: EBAY_US). The sandbox seller is registered on whichever site a request names: the site
# picks the order stream, the buyers' country and the currency of every amount rendered.
_SERVING: ContextVar[str] = ContextVar("ebay_sandbox_marketplace", default=MARKETPLACE_ID)


def serving_marketplace(marketplace_id: str) -> contextlib.AbstractContextManager[None]:
    """Plan and render as the seller on eBay site `marketplace_id` (e.g. EBAY_DE) meanwhile."""
    return serving(_SERVING, marketplace_id, EBAY_MARKETPLACES, "eBay marketplace")


def _site_country() -> str:
    return EBAY_MARKETPLACES[_SERVING.get()]
REFRESH_PREFIX = "sandbox-refresh-"
# eBay user access tokens live two hours.
ACCESS_TOKEN_SECONDS = 7200

# eBay publishes daily call limits per application (Fulfillment 100,000/day, Finances and
# Inventory higher) and sends no rate-limit headers. Expressed as (rate per second, burst): the
# daily budget spread over the day with a generous burst, so only a runaway client trips them.
RATE_LIMITS: dict[str, tuple[float, float]] = {
    "getOrders": (100_000 / 86_400, 2_000),
    "getTransactions": (100_000 / 86_400, 2_000),
    "getPayouts": (100_000 / 86_400, 2_000),
    "getInventoryItems": (2_000_000 / 86_400, 5_000),
}
TRANSPORT_FAULTS = frozenset(
    {"throttle", "server_error", "timeout", "connection_reset", "truncated_body"}
)
API_FAULTS = TRANSPORT_FAULTS | {"expired_token"}
LIST_FAULTS = API_FAULTS | {"malformed_record"}

MAX_ORDER_LIFETIME = timedelta(days=60)
FREE_SHIPPING_THRESHOLD = Decimal("35.00")
# Final value fee for most eBay Motors parts categories: a share of the total the buyer paid
# (items, shipping and sales tax), plus a fixed amount per order.
FINAL_VALUE_RATE = Decimal("0.1325")
PROMOTED_LISTING_RATE = Decimal("0.05")
STORE_SUBSCRIPTION_FEE = Decimal("27.95")
PAYOUT_PERIOD = timedelta(days=7)
PAYOUT_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
ZERO = Decimal("0.00")


def _amount(value: Decimal) -> dict[str, str]:
    """eBay Amount: a decimal string and the currency of the site being served."""
    return {"value": f"{value:.2f}", "currency": currency_of(_site_country())}


def _ts(ts: datetime) -> str:
    """eBay timestamps: ISO 8601 UTC with milliseconds."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# ---------------------------------------------------------------------------------------------
# Plans


@dataclass(frozen=True)
class EbayLine:
    line_item_id: str
    legacy_item_id: str
    part: Part
    quantity: int
    unit_price: Decimal
    discount: Decimal  # positive: what a promotion took off this line
    shipping: Decimal  # for the whole line
    tax: Decimal  # sales tax eBay collects and remits
    fee: Decimal  # variable final value fee on this line
    ad_fee: Decimal  # promoted-listing fee (0 when the listing was not promoted)
    ship_at: datetime | None

    @property
    def cost(self) -> Decimal:
        return self.unit_price * self.quantity

    @property
    def discounted(self) -> Decimal:
        return self.cost - self.discount

    @property
    def total(self) -> Decimal:
        return self.discounted + self.shipping + self.tax

    @property
    def seller_proceeds(self) -> Decimal:
        """What the seller is credited before fees: items and shipping (tax goes to the state)."""
        return self.discounted + self.shipping


@dataclass(frozen=True)
class EbayOrderPlan:
    merchant_id: str
    order_id: str
    legacy_order_id: str
    created: datetime
    buyer: Buyer
    username: str
    lines: tuple[EbayLine, ...]
    fixed_fee: Decimal
    cancel_requested_at: datetime | None
    cancel_at: datetime | None
    refund_at: datetime | None
    refunded_lines: tuple[int, ...]  # indexes into `lines`
    refund_id: str
    carrier: str
    tracking_number: str
    label_cost: Decimal
    promotion_id: str

    def events(self) -> list[datetime]:
        out = [self.created]
        out.extend(line.ship_at for line in self.lines if line.ship_at is not None)
        out.extend(
            t for t in (self.cancel_requested_at, self.cancel_at, self.refund_at) if t is not None
        )
        return out

    def modified_at(self, now: datetime) -> datetime | None:
        past = [t for t in self.events() if t <= now]
        return max(past) if past and self.created <= now else None

    @property
    def subtotal(self) -> Decimal:
        return sum((line.cost for line in self.lines), ZERO)

    @property
    def discount(self) -> Decimal:
        return sum((line.discount for line in self.lines), ZERO)

    @property
    def shipping(self) -> Decimal:
        return sum((line.shipping for line in self.lines), ZERO)

    @property
    def tax(self) -> Decimal:
        return sum((line.tax for line in self.lines), ZERO)

    @property
    def total(self) -> Decimal:
        return sum((line.total for line in self.lines), ZERO)

    @property
    def fees(self) -> Decimal:
        return sum((line.fee for line in self.lines), ZERO) + self.fixed_fee

    @property
    def first_ship_at(self) -> datetime | None:
        times = [line.ship_at for line in self.lines if line.ship_at is not None]
        return min(times) if times else None

    @property
    def refund_time(self) -> datetime | None:
        return self.cancel_at or self.refund_at

    def refunded(self) -> tuple[EbayLine, ...]:
        if self.cancel_at is not None:
            return self.lines
        return tuple(self.lines[i] for i in self.refunded_lines)


_CARRIERS = (("USPS", "9400", 18), ("UPS", "1Z", 16), ("FedEx", "", 12))


def _order_id(rng) -> str:
    return f"{rng.randint(1, 27):02d}-{rng.randint(0, 99999):05d}-{rng.randint(0, 99999):05d}"


def _legacy_item_id(seed: int, merchant_id: str, part: Part) -> str:
    return f"{110000000000 + stable_int(seed, merchant_id, 'ebay-listing', part.sku) % 10**11}"


def _username(rng, buyer: Buyer) -> str:
    first, last = buyer.name.lower().split(" ", 1)
    return rng.choice([f"{first[0]}{last}", f"{first}.{last}", f"{last}{first[:2]}"]).replace(
        " ", ""
    ) + str(rng.randint(1, 999))


@functools.lru_cache(maxsize=4096)
def _orders_created_on(
    seed: int, merchant_id: str, history_start: date, day: date, marketplace_id: str
) -> tuple[EbayOrderPlan, ...]:
    if day < history_start:
        return ()
    country = EBAY_MARKETPLACES[marketplace_id]
    # EBAY_US keeps the streams it had before sites existed, so its data never moves.
    stream = "ebay" if country == "US" else f"ebay-{marketplace_id}"
    catalog = parts_catalog(seed, merchant_id)
    rng, midnight, seconds = order_seconds(seed, merchant_id, stream, day, (2, 5), 1)
    plans = []
    for index, second in enumerate(seconds):
        orng = stable_rng(seed, merchant_id, f"{stream}-order", day.isoformat(), index)
        created = midnight + timedelta(seconds=second)
        buyer = fake_buyer(orng, email_domain="members.ebay.com", country=country)
        order_id = _order_id(orng)
        n_lines = orng.choices([1, 2, 3], weights=[70, 22, 8])[0]
        promoted_order = orng.random() < 0.2
        fate = orng.random()
        cancelled = fate < 0.05
        first_ship = None if cancelled else created + timedelta(hours=orng.uniform(4, 40))
        lines = []
        for line_no, part in enumerate(orng.sample(catalog, n_lines)):
            quantity = orng.choices([1, 2, 3], weights=[80, 15, 5])[0]
            cost = part.price * quantity
            discount = money(cost * Decimal("0.10")) if promoted_order and line_no == 0 else ZERO
            shipping = ZERO
            if quantity == 1 and cost - discount < FREE_SHIPPING_THRESHOLD:
                shipping = Decimal(orng.choice(["4.99", "5.49", "7.99"]))
            tax = money((cost - discount + shipping) * buyer.address.tax_rate)
            base = cost - discount + shipping + tax
            ship_at = None
            if first_ship is not None:
                # Some multi-line orders ship in two parcels: the order is IN_PROGRESS between them.
                ship_at = (
                    first_ship
                    if line_no == 0 or orng.random() < 0.6
                    else first_ship + timedelta(hours=orng.uniform(12, 60))
                )
            lines.append(
                EbayLine(
                    line_item_id=f"{10000000000000 + stable_int(order_id, 'line', line_no) % 10**13}",
                    legacy_item_id=_legacy_item_id(seed, merchant_id, part),
                    part=part,
                    quantity=quantity,
                    unit_price=part.price,
                    discount=discount,
                    shipping=shipping,
                    tax=tax,
                    fee=money(base * FINAL_VALUE_RATE),
                    ad_fee=money((cost - discount) * PROMOTED_LISTING_RATE)
                    if orng.random() < 0.3
                    else ZERO,
                    ship_at=whole_seconds(ship_at),
                )
            )
        total = sum((line.total for line in lines), ZERO)
        cancel_requested_at = cancel_at = refund_at = None
        refunded: tuple[int, ...] = ()
        if cancelled:
            cancel_requested_at = created + timedelta(hours=orng.uniform(0.5, 6))
            cancel_at = cancel_requested_at + timedelta(hours=orng.uniform(1, 20))
        elif fate > 0.93:
            last_ship = max(line.ship_at for line in lines if line.ship_at is not None)
            refund_at = last_ship + timedelta(days=orng.uniform(4, 30))
            refunded = (
                tuple(range(len(lines)))
                if len(lines) == 1 or orng.random() < 0.5
                else (orng.randrange(len(lines)),)
            )
        carrier, prefix, digits = orng.choice(_CARRIERS)
        plans.append(
            EbayOrderPlan(
                merchant_id=merchant_id,
                order_id=order_id,
                legacy_order_id=f"{lines[0].legacy_item_id}-{2900000000000 + stable_int(order_id, 'legacy') % 10**12}",
                created=created,
                buyer=buyer,
                username=_username(orng, buyer),
                lines=tuple(lines),
                fixed_fee=Decimal("0.30") if total > 10 else Decimal("0.40"),
                cancel_requested_at=whole_seconds(cancel_requested_at),
                cancel_at=whole_seconds(cancel_at),
                refund_at=whole_seconds(refund_at),
                refunded_lines=refunded,
                refund_id=f"{5000000000 + stable_int(order_id, 'refund') % 10**9}",
                carrier=carrier,
                tracking_number=prefix + "".join(orng.choice("0123456789") for _ in range(digits)),
                label_cost=Decimal(orng.choice(["4.12", "5.37", "8.75", "9.60", "12.45"])),
                promotion_id=f"{1000000000 + stable_int(seed, merchant_id, 'ebay-promo', day.isocalendar()[1]) % 10**9}",
            )
        )
    return tuple(plans)


def _history(state: SandboxState) -> date:
    return state.config.history_start


def _plans_on(state: SandboxState, merchant_id: str) -> Callable[[date], Iterable[EbayOrderPlan]]:
    """The merchant's orders per day on the site being served (`serving_marketplace`)."""
    site = _SERVING.get()
    return lambda day: _orders_created_on(
        state.config.seed, merchant_id, _history(state), day, site
    )


def _orders_created_between(
    state: SandboxState, merchant_id: str, a: datetime, b: datetime
) -> list[EbayOrderPlan]:
    return plans_created_between(_plans_on(state, merchant_id), a, b)


def order_plans_modified_between(
    state: SandboxState, merchant_id: str, a: datetime, b: datetime, now: datetime
) -> list[EbayOrderPlan]:
    """Order plans whose last change as of `now` is in [a, b), by (last change, order id)."""
    return plans_modified_between(
        _plans_on(state, merchant_id), a, b, now, MAX_ORDER_LIFETIME, lambda p: p.order_id
    )


def order_plans_created_between(
    state: SandboxState, merchant_id: str, a: datetime, b: datetime, now: datetime
) -> list[EbayOrderPlan]:
    return plans_created_by(_plans_on(state, merchant_id), a, b, now)


# ---------------------------------------------------------------------------------------------
# Finances plans


@dataclass(frozen=True)
class EbayTransaction:
    transaction_id: str
    transaction_type: str  # SALE | REFUND | SHIPPING_LABEL | NON_SALE_CHARGE
    booking_entry: str  # CREDIT | DEBIT
    date: datetime
    amount: Decimal  # positive; the direction is bookingEntry's
    order: EbayOrderPlan | None
    fee_type: str | None = None
    memo: str | None = None

    @property
    def signed(self) -> Decimal:
        return self.amount if self.booking_entry == "CREDIT" else -self.amount


def _transactions_for_order(plan: EbayOrderPlan) -> list[EbayTransaction]:
    out = [
        EbayTransaction(
            plan.order_id,
            "SALE",
            "CREDIT",
            plan.created,
            sum((ln.seller_proceeds for ln in plan.lines), ZERO) - plan.fees,
            plan,
        )
    ]
    ad_fee = sum((line.ad_fee for line in plan.lines), ZERO)
    if ad_fee:
        out.append(
            EbayTransaction(
                f"{3000000000 + stable_int(plan.order_id, 'ad-fee') % 10**9}",
                "NON_SALE_CHARGE",
                "DEBIT",
                plan.created,
                ad_fee,
                plan,
                "AD_FEE",
                "Promoted Listings - General fee",
            )
        )
    if plan.first_ship_at is not None:
        out.append(
            EbayTransaction(
                f"{4000000000 + stable_int(plan.order_id, 'label') % 10**9}",
                "SHIPPING_LABEL",
                "DEBIT",
                plan.first_ship_at,
                plan.label_cost,
                plan,
                None,
                f"{plan.carrier} shipping label",
            )
        )
    refund_time = plan.refund_time
    if refund_time is not None:
        lines = plan.refunded()
        # eBay credits back the variable final value fee of refunded lines, never the per-order fee.
        amount = sum((ln.seller_proceeds - ln.fee for ln in lines), ZERO)
        out.append(EbayTransaction(plan.refund_id, "REFUND", "DEBIT", refund_time, amount, plan))
    return out


def _subscription_charges(
    state: SandboxState, merchant_id: str, a: datetime, b: datetime
) -> list[EbayTransaction]:
    out = []
    month = date(a.year, a.month, 1)
    while True:
        posted = datetime(month.year, month.month, 1, 2, 0, tzinfo=UTC) + timedelta(
            minutes=stable_int(state.config.seed, merchant_id, "ebay-store") % 240
        )
        if posted >= b:
            break
        if a <= posted and month >= _history(state):
            # Each site's store is billed apart, under an id of its own (EBAY_US keeps its ids).
            site = _SERVING.get()
            stream = "ebay-store" if site == MARKETPLACE_ID else f"ebay-store-{site}"
            tid = f"{6000000000 + stable_int(state.config.seed, merchant_id, stream, month.isoformat()) % 10**9}"
            out.append(
                EbayTransaction(
                    tid,
                    "NON_SALE_CHARGE",
                    "DEBIT",
                    posted,
                    STORE_SUBSCRIPTION_FEE,
                    None,
                    "EBAY_STORE_SUBSCRIPTION_FEE",
                    "Store subscription fee",
                )
            )
        month = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
    return out


def transactions_between(
    state: SandboxState, merchant_id: str, a: datetime, b: datetime
) -> list[EbayTransaction]:
    """Transactions dated in [a, b) (the caller clips `b` to now), by (date, type, id)."""
    found: list[EbayTransaction] = []
    for plan in _orders_created_between(state, merchant_id, a - MAX_ORDER_LIFETIME, b):
        found.extend(t for t in _transactions_for_order(plan) if a <= t.date < b)
    found.extend(_subscription_charges(state, merchant_id, a, b))
    found.sort(key=lambda t: (t.date, t.transaction_type, t.transaction_id))
    return found


def _payout_phase(state: SandboxState, merchant_id: str) -> timedelta:
    return timedelta(
        hours=stable_int(state.config.seed, merchant_id, "ebay-payout-phase") % (7 * 24)
    )


def payout_index(state: SandboxState, merchant_id: str, at: datetime) -> int:
    return (at - PAYOUT_EPOCH - _payout_phase(state, merchant_id)) // PAYOUT_PERIOD


def payout_window(state: SandboxState, merchant_id: str, index: int) -> tuple[datetime, datetime]:
    start = PAYOUT_EPOCH + _payout_phase(state, merchant_id) + index * PAYOUT_PERIOD
    return start, start + PAYOUT_PERIOD


@dataclass(frozen=True)
class EbayPayout:
    payout_id: str
    index: int
    start: datetime
    end: datetime
    payout_date: datetime
    transactions: tuple[EbayTransaction, ...]  # what getTransactions lists for this payout
    # Paid out but listed nowhere (the quarter's payout that is one line short), else None.
    missing: EbayTransaction | None = None

    @property
    def amount(self) -> Decimal:
        listed = sum((t.signed for t in self.transactions), ZERO)
        return listed + (self.missing.signed if self.missing is not None else ZERO)

    @property
    def transaction_count(self) -> int:
        return len(self.transactions) + (self.missing is not None)


def _payout_id(state: SandboxState, merchant_id: str, index: int) -> str:
    # EBAY_US keeps the ids it had before sites existed; another site's payouts are its own.
    site = _SERVING.get()
    stream = "ebay-payout" if site == MARKETPLACE_ID else f"ebay-payout-{site}"
    return f"{7000000000 + stable_int(state.config.seed, merchant_id, stream, index) % 10**9}"


def _payout_date(state: SandboxState, merchant_id: str, index: int) -> datetime:
    # eBay initiates the payout a few hours after the period closes.
    _, end = payout_window(state, merchant_id, index)
    return end + timedelta(hours=2, minutes=stable_int(merchant_id, index) % 120)


def _history_start(state: SandboxState) -> datetime:
    return datetime.combine(_history(state), datetime.min.time(), tzinfo=UTC)


def _short_payout_index(state: SandboxState, merchant_id: str, year: int, quarter: int) -> int | None:
    """The payout dated in calendar quarter `quarter` (0-3) of `year` that is one line short."""
    first = datetime(year, 3 * quarter + 1, 1, tzinfo=UTC)
    after = datetime(year + (quarter == 3), (3 * quarter + 3) % 12 + 1, 1, tzinfo=UTC)
    history = _history_start(state)
    candidates = []
    index = payout_index(state, merchant_id, first - PAYOUT_PERIOD - timedelta(days=1))
    while payout_window(state, merchant_id, index)[0] < after:
        if first <= _payout_date(state, merchant_id, index) < after and (
            payout_window(state, merchant_id, index)[1] > history
        ):
            candidates.append(index)
        index += 1
    if not candidates:
        return None
    pick = stable_int(state.config.seed, merchant_id, "ebay-short-payout", _SERVING.get(), year, quarter)
    return candidates[pick % len(candidates)]


def _unlisted_credit(
    state: SandboxState, merchant_id: str, index: int, start: datetime
) -> EbayTransaction:
    rng = stable_rng(state.config.seed, merchant_id, "ebay-unlisted-credit", _SERVING.get(), index)
    return EbayTransaction(
        f"{8000000000 + rng.randrange(10**9)}",
        "CREDIT",
        "CREDIT",
        start + timedelta(seconds=rng.randrange(int(PAYOUT_PERIOD.total_seconds()))),
        money(Decimal(rng.randint(500, 4000)) / 100),
        None,
        None,
        "Seller credit",
    )


def payout(state: SandboxState, merchant_id: str, index: int) -> EbayPayout:
    """Payout `index` of the merchant's weekly grid on the site served (cached: its transactions
    are planned, so they never change; only what `now` shows of them does)."""
    cache = state.channel_data(CHANNEL).setdefault("payouts", {})
    key = (merchant_id, index, _SERVING.get())
    found = cache.get(key)
    if found is None:
        found = cache[key] = _build_payout(state, merchant_id, index)
    return found


def _build_payout(state: SandboxState, merchant_id: str, index: int) -> EbayPayout:
    start, end = payout_window(state, merchant_id, index)
    payout_date = _payout_date(state, merchant_id, index)
    quarter = (payout_date.year, (payout_date.month - 1) // 3)
    short = _short_payout_index(state, merchant_id, *quarter) == index
    return EbayPayout(
        payout_id=_payout_id(state, merchant_id, index),
        index=index,
        start=start,
        end=end,
        payout_date=payout_date,
        transactions=tuple(transactions_between(state, merchant_id, start, end)),
        missing=_unlisted_credit(state, merchant_id, index, start) if short else None,
    )


def payouts_dated_between(
    state: SandboxState, merchant_id: str, a: datetime, b: datetime, now: datetime
) -> list[EbayPayout]:
    """Payouts whose payoutDate is in [a, b) and by `now`, with at least one transaction."""
    history = _history_start(state)
    out = []
    index = payout_index(state, merchant_id, max(a, history) - PAYOUT_PERIOD - timedelta(days=1))
    while True:
        start, end = payout_window(state, merchant_id, index)
        if start > min(b, now):
            break
        if end > history:
            p = payout(state, merchant_id, index)
            if a <= p.payout_date < b and p.payout_date <= now and p.transaction_count:
                out.append(p)
        index += 1
    return out


def payout_by_id(
    state: SandboxState, merchant_id: str, payout_id: str, now: datetime
) -> EbayPayout | None:
    """The merchant's payout `payout_id` on the site served, if it was initiated by `now`."""
    index = payout_index(state, merchant_id, _history_start(state))
    last = payout_index(state, merchant_id, now)
    while index <= last:
        if _payout_id(state, merchant_id, index) == payout_id:
            p = payout(state, merchant_id, index)
            return p if p.payout_date <= now else None
        index += 1
    return None


# ---------------------------------------------------------------------------------------------
# Renderers (also used by the introspection functions)


def _fulfillment_status(plan: EbayOrderPlan, now: datetime) -> str:
    shipped = [line.ship_at is not None and line.ship_at <= now for line in plan.lines]
    if all(shipped):
        return "FULFILLED"
    return "IN_PROGRESS" if any(shipped) else "NOT_STARTED"


def _address(buyer: Buyer) -> dict[str, Any]:
    a = buyer.address
    contact: dict[str, Any] = {"addressLine1": a.line1}
    if a.line2:
        contact["addressLine2"] = a.line2
    contact.update(
        {
            "city": a.city,
            "stateOrProvince": a.state,
            "postalCode": a.postal_code,
            "countryCode": a.country_code,
        }
    )
    return contact


def render_order(plan: EbayOrderPlan, now: datetime) -> dict[str, Any]:
    """A Fulfillment API `Order` as of `now`."""
    modified = plan.modified_at(now)
    assert modified is not None, "render only orders that exist at now"
    fulfillment = _fulfillment_status(plan, now)
    cancelled = plan.cancel_at is not None and plan.cancel_at <= now
    cancel_requested = plan.cancel_requested_at is not None and plan.cancel_requested_at <= now
    refund_time = plan.refund_time
    refunded = refund_time is not None and refund_time <= now
    refunded_lines = plan.refunded() if refunded else ()
    if not refunded:
        payment_status = "PAID"
    elif len(refunded_lines) == len(plan.lines):
        payment_status = "FULLY_REFUNDED"
    else:
        payment_status = "PARTIALLY_REFUNDED"
    phone = {"phoneNumber": plan.buyer.phone.replace("-", "")}
    pricing: dict[str, Any] = {"priceSubtotal": _amount(plan.subtotal)}
    if plan.discount:
        pricing["priceDiscount"] = _amount(-plan.discount)
    pricing["deliveryCost"] = _amount(plan.shipping)
    pricing["tax"] = _amount(plan.tax)
    pricing["total"] = _amount(plan.total)
    cancel_status: dict[str, Any] = {"cancelState": "NONE_REQUESTED", "cancelRequests": []}
    if cancel_requested:
        assert plan.cancel_requested_at is not None
        request = {
            "cancelReason": "BUYER_ASKED_CANCEL",
            "cancelRequestedDate": _ts(plan.cancel_requested_at),
            "cancelInitiator": "BUYER",
            "cancelRequestId": f"{5100000000 + stable_int(plan.order_id, 'cancel') % 10**9}",
            "cancelRequestState": "COMPLETED" if cancelled else "REQUESTED",
        }
        if cancelled:
            assert plan.cancel_at is not None
            request["cancelCompletedDate"] = _ts(plan.cancel_at)
        cancel_status = {
            # eBay's CancelStateEnum: CANCELED, IN_PROGRESS, NONE_REQUESTED.
            "cancelState": "CANCELED" if cancelled else "IN_PROGRESS",
            "cancelRequests": [request],
        }
        if cancelled:
            cancel_status["cancelledDate"] = _ts(plan.cancel_at)  # type: ignore[arg-type]
    refunds = []
    if refunded:
        assert refund_time is not None
        refunds.append(
            {
                "refundId": plan.refund_id,
                "refundDate": _ts(refund_time),
                "amount": _amount(sum((ln.total for ln in refunded_lines), ZERO)),
                "refundReferenceId": f"{stable_int(plan.refund_id, 'ref') % 10**17:017d}",
                "refundStatus": "REFUNDED",
            }
        )
    line_items = []
    for line in plan.lines:
        shipped = line.ship_at is not None and line.ship_at <= now
        item: dict[str, Any] = {
            "lineItemId": line.line_item_id,
            "legacyItemId": line.legacy_item_id,
            "sku": line.part.sku,
            "title": line.part.title,
            "lineItemCost": _amount(line.cost),
            "quantity": line.quantity,
            "soldFormat": "FIXED_PRICE",
            "listingMarketplaceId": _SERVING.get(),
            "purchaseMarketplaceId": _SERVING.get(),
            "lineItemFulfillmentStatus": "FULFILLED" if shipped else "NOT_STARTED",
            "total": _amount(line.total),
            "deliveryCost": {"shippingCost": _amount(line.shipping)},
            "appliedPromotions": [],
            "taxes": [],
            "ebayCollectAndRemitTaxes": [
                {
                    "taxType": "STATE_SALES_TAX",
                    "amount": _amount(line.tax),
                    "collectionMethod": "NET",
                }
            ]
            if line.tax
            else [],
            "properties": {"buyerProtection": True},
            "lineItemFulfillmentInstructions": {
                "minEstimatedDeliveryDate": _ts(plan.created + timedelta(days=3)),
                "maxEstimatedDeliveryDate": _ts(plan.created + timedelta(days=7)),
                "shipByDate": _ts(plan.created + timedelta(days=2)),
                "guaranteedDelivery": False,
            },
            "itemLocation": {"location": "Warehouse", "countryCode": _site_country()}
            | ({"postalCode": "43215"} if _site_country() == "US" else {}),
        }
        if line.discount:
            item["discountedLineItemCost"] = _amount(line.discounted)
            item["appliedPromotions"] = [
                {
                    "promotionId": plan.promotion_id,
                    "description": "10% off parts",
                    "discountAmount": _amount(line.discount),
                }
            ]
        if line in refunded_lines:
            item["refunds"] = [
                {
                    "refundId": plan.refund_id,
                    "refundDate": _ts(refund_time),
                    "amount": _amount(line.total),
                }
            ]  # type: ignore[arg-type]
        line_items.append(item)
    payment_date = plan.created + timedelta(seconds=stable_int(plan.order_id, "paid") % 300)
    order: dict[str, Any] = {
        "orderId": plan.order_id,
        "legacyOrderId": plan.legacy_order_id,
        "creationDate": _ts(plan.created),
        "lastModifiedDate": _ts(modified),
        "orderFulfillmentStatus": fulfillment,
        "orderPaymentStatus": payment_status,
        "sellerId": f"{plan.merchant_id.replace('_', '')}_parts",
        "buyer": {
            "username": plan.username,
            "taxAddress": {
                "stateOrProvince": plan.buyer.address.state,
                "postalCode": plan.buyer.address.postal_code,
                "countryCode": plan.buyer.address.country_code,
            },
            "buyerRegistrationAddress": {
                "fullName": plan.buyer.name,
                "contactAddress": _address(plan.buyer),
                "primaryPhone": phone,
                "email": plan.buyer.email,
            },
        },
        "pricingSummary": pricing,
        "cancelStatus": cancel_status,
        "paymentSummary": {
            "totalDueSeller": _amount(sum((ln.seller_proceeds for ln in plan.lines), ZERO)),
            "refunds": refunds,
            "payments": [
                {
                    "paymentMethod": "EBAY",
                    "paymentReferenceId": f"{stable_int(plan.order_id, 'payment') % 10**17:017d}",
                    "paymentDate": _ts(payment_date),
                    "amount": _amount(plan.total),
                    "paymentStatus": "PAID",
                }
            ],
        },
        "fulfillmentStartInstructions": [
            {
                "fulfillmentInstructionsType": "SHIP_TO",
                "minEstimatedDeliveryDate": _ts(plan.created + timedelta(days=3)),
                "maxEstimatedDeliveryDate": _ts(plan.created + timedelta(days=7)),
                "ebaySupportedFulfillment": False,
                "shippingStep": {
                    "shipTo": {
                        "fullName": plan.buyer.address.name,
                        "contactAddress": _address(plan.buyer),
                        "primaryPhone": phone,
                        "email": plan.buyer.email,
                    },
                    "shippingCarrierCode": plan.carrier,
                    "shippingServiceCode": f"{plan.carrier}Ground"
                    if plan.carrier != "USPS"
                    else "USPSPriority",
                },
            }
        ],
        "fulfillmentHrefs": [
            f"https://api.ebay.com/sell/fulfillment/v1/order/{plan.order_id}/shipping_fulfillment/{plan.tracking_number}"
        ]
        if fulfillment != "NOT_STARTED"
        else [],
        "lineItems": line_items,
        "salesRecordReference": str(stable_int(plan.order_id, "srn") % 100000),
        "totalFeeBasisAmount": _amount(plan.total),
        "totalMarketplaceFee": _amount(plan.fees),
    }
    return order


def _payout_of(
    state: SandboxState, merchant_id: str, t: EbayTransaction, now: datetime
) -> EbayPayout | None:
    p = payout(state, merchant_id, payout_index(state, merchant_id, t.date))
    return p if p.payout_date <= now else None


def render_transaction(
    state: SandboxState, merchant_id: str, t: EbayTransaction, now: datetime
) -> dict[str, Any]:
    """A Finances API `Transaction` as of `now` (its status and payoutId move with payouts)."""
    paid_out = _payout_of(state, merchant_id, t, now)
    record: dict[str, Any] = {
        "transactionId": t.transaction_id,
        "transactionType": t.transaction_type,
        "amount": _amount(t.amount),
        "bookingEntry": t.booking_entry,
        "transactionDate": _ts(t.date),
        "transactionStatus": "PAYOUT" if paid_out else "FUNDS_AVAILABLE_FOR_PAYOUT",
    }
    if paid_out is not None:
        record["payoutId"] = paid_out.payout_id
    if t.order is not None and t.transaction_type != "NON_SALE_CHARGE":
        record["orderId"] = t.order.order_id
        record["buyer"] = {"username": t.order.username}
    plan = t.order
    if t.transaction_type == "SALE" and plan is not None:
        record["totalFeeBasisAmount"] = _amount(plan.total)
        record["totalFeeAmount"] = _amount(plan.fees)
        record["orderLineItems"] = [
            {
                "lineItemId": line.line_item_id,
                "feeBasisAmount": _amount(line.total),
                "marketplaceFees": [{"feeType": "FINAL_VALUE_FEE", "amount": _amount(line.fee)}]
                + (
                    [
                        {
                            "feeType": "FINAL_VALUE_FEE_FIXED_PER_ORDER",
                            "amount": _amount(plan.fixed_fee),
                        }
                    ]
                    if n == 0
                    else []
                ),
            }
            for n, line in enumerate(plan.lines)
        ]
    elif t.transaction_type == "REFUND" and plan is not None:
        lines = plan.refunded()
        record["totalFeeAmount"] = _amount(-sum((ln.fee for ln in lines), ZERO))
        record["orderLineItems"] = [
            {
                "lineItemId": line.line_item_id,
                "feeBasisAmount": _amount(line.total),
                "marketplaceFees": [{"feeType": "FINAL_VALUE_FEE", "amount": _amount(-line.fee)}],
            }
            for line in lines
        ]
        record["references"] = [{"referenceId": plan.order_id, "referenceType": "ORDER_ID"}]
    elif t.transaction_type == "SHIPPING_LABEL" and plan is not None:
        record["transactionMemo"] = t.memo
        record["references"] = [
            {"referenceId": plan.tracking_number, "referenceType": "SHIPPING_LABEL_ID"}
        ]
    elif t.transaction_type == "NON_SALE_CHARGE":
        record["feeType"] = t.fee_type
        record["transactionMemo"] = t.memo
        if plan is not None:
            # The promoted listing first, then its order: a reader must pick by referenceType.
            promoted = next(line for line in plan.lines if line.ad_fee)
            record["references"] = [
                {"referenceId": promoted.legacy_item_id, "referenceType": "ITEM_ID"},
                {"referenceId": plan.order_id, "referenceType": "ORDER_ID"},
            ]
    return record


def render_payout(p: EbayPayout, now: datetime) -> dict[str, Any]:
    succeeded = now >= p.payout_date + timedelta(days=1)
    return {
        "payoutId": p.payout_id,
        "payoutStatus": "SUCCEEDED" if succeeded else "INITIATED",
        "payoutStatusDescription": "Funds sent" if succeeded else "Funds on the way",
        "amount": _amount(p.amount),
        "payoutDate": _ts(p.payout_date),
        "lastAttemptedPayoutDate": _ts(p.payout_date),
        "transactionCount": p.transaction_count,
        "payoutInstrument": {
            "instrumentType": "BANK",
            "nickname": "Checking",
            "accountLastFourDigits": f"{stable_int(p.payout_id) % 10000:04d}",
        },
    }


def inventory_rows(state: SandboxState, merchant_id: str, now: datetime) -> list[dict[str, Any]]:
    """The merchant's inventory items as of `now`'s day, sorted by SKU."""
    out = []
    for part in sorted(parts_catalog(state.config.seed, merchant_id), key=lambda p: p.sku):
        rng = stable_rng(
            state.config.seed, merchant_id, "ebay-inventory", part.sku, now.date().isoformat()
        )
        out.append(
            {
                "sku": part.sku,
                "locale": "en_US",
                "product": {
                    "title": part.title,
                    "brand": part.brand,
                    "mpn": part.mpn,
                    "upc": [part.upc],
                    "aspects": {"Brand": [part.brand], "Manufacturer Part Number": [part.mpn]},
                    "imageUrls": [
                        f"https://i.ebayimg.com/images/g/{stable_int(part.sku) % 10**12:012d}/s-l1600.jpg"
                    ],
                },
                "condition": "NEW",
                "packageWeightAndSize": {"weight": {"value": part.weight_lb, "unit": "POUND"}},
                "availability": {
                    "shipToLocationAvailability": {"quantity": rng.choice([0] + list(range(1, 80)))}
                },
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# Introspection for tests


def ebay_orders_modified_between(
    state: SandboxState,
    merchant_id: str,
    a: datetime,
    b: datetime,
    *,
    marketplace_id: str = MARKETPLACE_ID,
) -> list[dict[str, Any]]:
    """The orders getOrders would return for lastmodifieddate in [a, b) now, on that site."""
    now = state.now()
    with serving_marketplace(marketplace_id):
        return [
            render_order(p, now)
            for p in order_plans_modified_between(
                state, merchant_id, a, min(b, now + timedelta(seconds=1)), now
            )
        ]


def ebay_transactions_between(
    state: SandboxState,
    merchant_id: str,
    a: datetime,
    b: datetime,
    *,
    marketplace_id: str = MARKETPLACE_ID,
) -> list[dict[str, Any]]:
    now = state.now()
    with serving_marketplace(marketplace_id):
        return [
            render_transaction(state, merchant_id, t, now)
            for t in transactions_between(state, merchant_id, a, min(b, now))
        ]


def ebay_payouts_between(
    state: SandboxState,
    merchant_id: str,
    a: datetime,
    b: datetime,
    *,
    marketplace_id: str = MARKETPLACE_ID,
) -> list[dict[str, Any]]:
    now = state.now()
    with serving_marketplace(marketplace_id):
        return [render_payout(p, now) for p in payouts_dated_between(state, merchant_id, a, b, now)]


def ebay_payout_plans_between(
    state: SandboxState,
    merchant_id: str,
    a: datetime,
    b: datetime,
    *,
    marketplace_id: str = MARKETPLACE_ID,
) -> list[EbayPayout]:
    """`EbayPayout` objects (with their transactions) paid out in [a, b) by now."""
    with serving_marketplace(marketplace_id):
        return payouts_dated_between(state, merchant_id, a, b, state.now())


def ebay_payout_transactions(
    state: SandboxState, merchant_id: str, payout_id: str, *, marketplace_id: str = MARKETPLACE_ID
) -> list[dict[str, Any]]:
    """What getTransactions with filter=payoutId:{payout_id} answers now, on that site."""
    now = state.now()
    with serving_marketplace(marketplace_id):
        paid = payout_by_id(state, merchant_id, payout_id, now)
        if paid is None:
            return []
        return [render_transaction(state, merchant_id, t, now) for t in paid.transactions]


@dataclass(frozen=True)
class ShortPayout:
    """A payout whose amount includes a transaction no listing returns."""

    payout_id: str
    missing: Decimal  # amount - the signed sum of its listed transactions
    transaction_id: str  # of the unlisted transaction


def ebay_short_payouts(
    state: SandboxState,
    merchant_id: str,
    a: datetime,
    b: datetime,
    *,
    marketplace_id: str = MARKETPLACE_ID,
) -> list[ShortPayout]:
    """The payouts paid out in [a, b) by now that are one line short (one per calendar quarter)."""
    return [
        ShortPayout(p.payout_id, p.missing.signed, p.missing.transaction_id)
        for p in ebay_payout_plans_between(state, merchant_id, a, b, marketplace_id=marketplace_id)
        if p.missing is not None
    ]


def ebay_inventory_items(state: SandboxState, merchant_id: str) -> list[dict[str, Any]]:
    return inventory_rows(state, merchant_id, state.now())


# ---------------------------------------------------------------------------------------------
# Request parsing

_RANGE_RE = re.compile(r"^\[(?P<a>[^\]]*?)\.\.(?P<b>[^\]]*)\]$")


class BadRequest(Exception):
    def __init__(self, error_id: int, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.error_id = error_id
        self.message = message
        self.parameter = parameter


def _error_body(
    error_id: int,
    message: str,
    *,
    domain: str = "API_FULFILLMENT",
    category: str = "REQUEST",
    parameter: str | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "errorId": error_id,
        "domain": domain,
        "category": category,
        "message": message,
    }
    if parameter:
        # Names only: echoing the request's values back is how input ends up in logs.
        error["parameters"] = [{"name": parameter}]
    return {"errors": [error]}


def _parse_ts(value: str, what: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            30800,
            f"Invalid date format in {what}: use ISO 8601, e.g. 2026-03-01T00:00:00.000Z",
            "filter",
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def parse_filter(raw: str | None) -> dict[str, str]:
    """eBay's `filter` parameter: comma-separated `name:value` pairs (ranges contain no commas)."""
    out: dict[str, str] = {}
    if not raw:
        return out
    for part in raw.split(","):
        name, sep, value = part.partition(":")
        if not sep:
            raise BadRequest(
                30700, "Invalid filter: expected comma-separated name:value pairs", "filter"
            )
        out[name.strip()] = value.strip()
    return out


def _range(value: str, what: str) -> tuple[datetime | None, datetime | None]:
    match = _RANGE_RE.match(value)
    if not match:
        raise BadRequest(30700, f"Invalid {what} filter: expected [start..end]", "filter")
    a = _parse_ts(match["a"], what) if match["a"] else None
    b = _parse_ts(match["b"], what) if match["b"] else None
    return a, b


def _paging(request: Request, default: int, maximum: int, cap: int) -> tuple[int, int]:
    q = request.query_params
    try:
        limit = int(q.get("limit", default))
        offset = int(q.get("offset", 0))
    except ValueError:
        raise BadRequest(30500, "limit and offset must be integers", "limit") from None
    if not 1 <= limit <= maximum:
        raise BadRequest(30500, f"limit must be from 1 to {maximum}", "limit")
    if offset < 0:
        raise BadRequest(30500, "offset must be 0 or more", "offset")
    return min(limit, cap), offset


def _page_body(
    request: Request, path: str, key: str, items: list[Any], limit: int, offset: int
) -> dict[str, Any]:
    base = (
        f"https://api.ebay.com{path}" if "finances" not in path else f"https://apiz.ebay.com{path}"
    )
    params = {k: v for k, v in request.query_params.items() if k not in ("limit", "offset")}

    def href(o: int) -> str:
        return base + "?" + urlencode({**params, "limit": limit, "offset": o})

    body: dict[str, Any] = {
        "href": href(offset),
        "total": len(items),
        "limit": limit,
        "offset": offset,
    }
    if offset + limit < len(items):
        body["next"] = href(offset + limit)
    if offset > 0:
        body["prev"] = href(max(0, offset - limit))
    body[key] = items[offset : offset + limit]
    return body


# ---------------------------------------------------------------------------------------------
# Handlers: (state, request, merchant_id, now) -> (status, body)


def _get_orders(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    if request.query_params.get("orderIds"):
        raise BadRequest(
            30750,
            "orderIds lookups are not supported by the sandbox; filter by date instead",
            "orderIds",
        )
    filters = parse_filter(request.query_params.get("filter"))
    limit, offset = _paging(request, 50, 200, state.config.orders_page_size)
    if "lastmodifieddate" in filters:
        a, b = _range(filters["lastmodifieddate"], "lastmodifieddate")
        pick = order_plans_modified_between
    elif "creationdate" in filters:
        a, b = _range(filters["creationdate"], "creationdate")
        pick = order_plans_created_between
    else:
        # Without a date filter eBay returns the last 90 days of orders by creation date.
        a, b = now - timedelta(days=90), None
        pick = order_plans_created_between
    if a is None:
        raise BadRequest(30800, "the date range needs a start date", "filter")
    end = min(b or now + timedelta(seconds=1), now + timedelta(seconds=1))
    if a >= end:
        plans: list[EbayOrderPlan] = []
    else:
        plans = pick(state, merchant, a, end, now)
    wanted = filters.get("orderfulfillmentstatus")
    if wanted:
        allowed = set(wanted.strip("{}").split("|"))
        plans = [p for p in plans if _fulfillment_status(p, now) in allowed]
    body = _page_body(
        request, "/sell/fulfillment/v1/order", "orders", [p for p in plans], limit, offset
    )
    body["orders"] = [render_order(p, now) for p in body["orders"]]
    return 200, body


def _get_transactions(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    filters = parse_filter(request.query_params.get("filter"))
    limit, offset = _paging(request, 20, 1000, state.config.finances_page_size)
    if "payoutId" in filters:
        # A payout's transactions, whatever their dates (eBay needs no date range here); a
        # payout of another site or not initiated yet has none.
        payout_id = filters["payoutId"].strip().removeprefix("{").removesuffix("}").strip()
        if not payout_id:
            raise BadRequest(30700, "Invalid payoutId filter: expected payoutId:{id}", "filter")
        paid = payout_by_id(state, merchant, payout_id, now)
        found = list(paid.transactions) if paid is not None else []
        if "transactionDate" in filters:
            a, b = _range(filters["transactionDate"], "transactionDate")
            found = [t for t in found if (a is None or a <= t.date) and (b is None or t.date < b)]
        if not found:
            return 204, None  # as eBay answers a search that matches nothing: No Content
    else:
        if "transactionDate" in filters:
            a, b = _range(filters["transactionDate"], "transactionDate")
        else:
            a, b = now - timedelta(days=90), None
        a = a or _history_start(state)
        end = min(b or now, now)
        found = transactions_between(state, merchant, a, end) if a < end else []
    wanted = filters.get("transactionType")
    if wanted:
        allowed = set(wanted.strip("{}").split("|"))
        found = [t for t in found if t.transaction_type in allowed]
    body = _page_body(
        request, "/sell/finances/v1/transaction", "transactions", list(found), limit, offset
    )
    body["transactions"] = [
        render_transaction(state, merchant, t, now) for t in body["transactions"]
    ]
    return 200, body


def _get_payouts(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    filters = parse_filter(request.query_params.get("filter"))
    limit, offset = _paging(request, 20, 200, state.config.finances_page_size)
    if "payoutDate" in filters:
        a, b = _range(filters["payoutDate"], "payoutDate")
    else:
        a, b = now - timedelta(days=90), None
    a = a or _history_start(state)
    found = payouts_dated_between(state, merchant, a, b or now + timedelta(seconds=1), now)
    body = _page_body(request, "/sell/finances/v1/payout", "payouts", list(found), limit, offset)
    body["payouts"] = [render_payout(p, now) for p in body["payouts"]]
    return 200, body


def _get_inventory_items(
    state: SandboxState, request: Request, merchant: str, now: datetime
) -> tuple[int, Any]:
    limit, offset = _paging(request, 25, 200, state.config.inventory_page_size)
    rows = inventory_rows(state, merchant, now)
    body = _page_body(
        request, "/sell/inventory/v1/inventory_item", "inventoryItems", rows, limit, offset
    )
    # getInventoryItems reports the page size as `size` and has no `offset` field.
    body.pop("offset", None)
    body["size"] = len(body["inventoryItems"])
    return 200, body


# Malformed-record faults: append one broken copy of a record; the real records stay intact.


def _broken(body: dict[str, Any], key: str, id_key: str, garbage: dict[str, Any]) -> None:
    items = body.get(key)
    if isinstance(items, list) and items:
        broken = dict(items[0])
        broken.pop(id_key, None)
        broken.update(garbage)
        items.append(broken)


def _break_order(body: dict[str, Any]) -> None:
    _broken(
        body,
        "orders",
        "orderId",
        {
            "creationDate": "not-a-date",
            "pricingSummary": {"total": {"value": "12,34", "currency": "USD"}},
        },
    )


def _break_transaction(body: dict[str, Any]) -> None:
    _broken(body, "transactions", "transactionId", {"bookingEntry": "SIDEWAYS"})


def _break_payout(body: dict[str, Any]) -> None:
    _broken(body, "payouts", "payoutId", {"amount": {"value": "NaN"}})


def _break_inventory(body: dict[str, Any]) -> None:
    _broken(
        body,
        "inventoryItems",
        "sku",
        {"availability": {"shipToLocationAvailability": {"quantity": "lots"}}},
    )


# ---------------------------------------------------------------------------------------------
# Endpoint wrapper: auth, faults, quota, fixtures


def _throttled(state: SandboxState, retry_after: float | None) -> Response:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    return json_response(
        _error_body(
            2001,
            "Too many requests. The request limit has been reached for the resource.",
            category="REQUEST",
        ),
        429,
        headers,
    )


def _invalid_token() -> Response:
    body = {
        "errors": [
            {
                "errorId": 1001,
                "domain": "OAuth",
                "category": "REQUEST",
                "message": "Invalid access token",
                "longMessage": "Invalid access token. Check the value of the Authorization HTTP request header.",
            }
        ]
    }
    return json_response(body, 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def _endpoint(
    state: SandboxState,
    operation: str,
    handler: Callable[[SandboxState, Request, str, datetime], tuple[int, Any]],
    breaker: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[Request], Any]:
    rate, burst = RATE_LIMITS[operation]
    allowed = LIST_FAULTS if breaker is not None else API_FAULTS

    async def endpoint(request: Request) -> Response:
        token = _bearer(request)
        merchant, _why = state.token_owner(token)
        if merchant is None:
            state.count(operation, status=401)
            return _invalid_token()
        fault = state.faults.draw(merchant, operation, allowed)
        if fault == "expired_token":
            assert token is not None
            state.revoke_token(token)
            state.count(operation, status=401, caller=merchant)
            return _invalid_token()
        if fault == "throttle":
            state.count(operation, throttled=True, status=429, caller=merchant)
            return _throttled(state, state.config.faults.retry_after_seconds)
        if fault == "server_error":
            status = int(str(state.faults.choice([500, 503])))
            state.count(operation, status=status, caller=merchant)
            return json_response(
                _error_body(10001, "System error. Try again later.", category="APPLICATION"), status
            )
        if fault == "timeout":
            await hold_for_timeout(state)
        if not state.take_quota(CHANNEL, merchant, operation, rate, burst):
            state.count(operation, throttled=True, status=429, caller=merchant)
            return _throttled(state, None)
        now = state.now()
        site = request.headers.get(MARKETPLACE_HEADER) or MARKETPLACE_ID
        fixture = state.pop_fixture(CHANNEL, merchant, operation)
        try:
            if site not in EBAY_MARKETPLACES:
                raise BadRequest(
                    35001,
                    f"Invalid value for header {MARKETPLACE_HEADER}: the sandbox sells on "
                    f"{', '.join(EBAY_MARKETPLACES)}",
                    MARKETPLACE_HEADER,
                )
            with serving_marketplace(site):
                status, body = (
                    fixture if fixture is not None else handler(state, request, merchant, now)
                )
        except BadRequest as exc:
            status, body = 400, _error_body(exc.error_id, exc.message, parameter=exc.parameter)
        if (
            200 <= status < 300
            and body is not None
            and fault == "malformed_record"
            and breaker is not None
            and fixture is None
        ):
            breaker(body)
        state.count(operation, status=status, caller=merchant)
        response = json_response(
            body,
            status,
            {
                "X-EBAY-C-REQUEST-ID": f"{stable_int(operation, merchant, now.isoformat(), request.url.query) % 10**12:012d}"
            },
        )
        if fault in ("connection_reset", "truncated_body"):
            return transport_fault_response(state, fault, response)
        return response

    return endpoint


def _basic_client(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return client_id if sep and client_id and secret else None


def _token_endpoint(state: SandboxState) -> Callable[[Request], Any]:
    async def token(request: Request) -> Response:
        # Parsed by hand: Starlette's form parser needs python-multipart, which we do not ship.
        form = {
            k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()
        }
        refresh = str(form.get("refresh_token", ""))
        merchant = refresh[len(REFRESH_PREFIX) :] if refresh.startswith(REFRESH_PREFIX) else ""
        fault = state.faults.draw(merchant or "-", "ebayToken", TRANSPORT_FAULTS - {"throttle"})
        if fault == "server_error":
            return json_response(
                {
                    "error": "server_error",
                    "error_description": "There was an internal error in the server while processing the request",
                },
                500,
            )
        if fault == "timeout":
            await hold_for_timeout(state)
        if _basic_client(request) is None:
            response = json_response(
                {"error": "invalid_client", "error_description": "client authentication failed"},
                401,
            )
        elif form.get("grant_type") != "refresh_token":
            response = json_response(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "grant type in request is not supported by the authorization server",
                },
                400,
            )
        elif not MERCHANT_ID_PATTERN.fullmatch(merchant):
            response = json_response(
                {
                    "error": "invalid_grant",
                    "error_description": "the provided authorization refresh token is invalid or was issued to another client",
                },
                400,
            )
        else:
            access, lifetime = state.issue_token(CHANNEL, merchant)
            state.count("ebayToken", caller=merchant)
            expires = min(lifetime, ACCESS_TOKEN_SECONDS)
            response = json_response(
                {
                    "access_token": access,
                    "expires_in": int(expires) if expires >= 1 else expires,
                    "token_type": "User Access Token",
                }
            )
        if fault in ("connection_reset", "truncated_body"):
            return transport_fault_response(state, fault, response)
        return response

    return token


def routes(state: SandboxState) -> list[Route]:
    """The eBay routes, relative to the `/ebay` mount."""
    return [
        Route("/identity/v1/oauth2/token", _token_endpoint(state), methods=["POST"]),
        Route(
            "/sell/fulfillment/v1/order",
            _endpoint(state, "getOrders", _get_orders, _break_order),
            methods=["GET"],
        ),
        Route(
            "/sell/finances/v1/transaction",
            _endpoint(state, "getTransactions", _get_transactions, _break_transaction),
            methods=["GET"],
        ),
        Route(
            "/sell/finances/v1/payout",
            _endpoint(state, "getPayouts", _get_payouts, _break_payout),
            methods=["GET"],
        ),
        Route(
            "/sell/inventory/v1/inventory_item",
            _endpoint(state, "getInventoryItems", _get_inventory_items, _break_inventory),
            methods=["GET"],
        ),
    ]
