"""The sandbox's deterministic world: what each merchant sells, to whom, and what money moved.

Everything is derived from `(seed, merchant_id, ...)` through SHA-256 (`stable_rng`), never from
Python's `hash()`, so two processes (a test and a server, or two CI runs) see the same data.

Channel-agnostic pieces, meant to be reused by every channel module (amazon.py, ebay.py,
walmart.py):

- `stable_int(*parts)` / `stable_rng(*parts)`: deterministic integers and `random.Random` streams.
  Always namespace the parts with the channel, e.g. `stable_rng(seed, merchant_id, "ebay-orders",
  day.isoformat())`, so channels do not share (and perturb) each other's streams.
- `parts_catalog(seed, merchant_id) -> tuple[Part, ...]`: the merchant's parts (SKU, manufacturer
  part number, brand, title, UPC, ASIN/FNSKU, cost and list price as `Decimal`, weight). The same
  catalog backs every channel, as a real parts seller lists one assortment everywhere.
- `fake_buyer(rng, email_domain=...) -> Buyer`: a realistic but fake buyer (name, email, phone and a
  US `Address`). Phone numbers use the reserved 555-01xx range.
- `money(value)`: round a Decimal to cents, half up (how marketplaces round fees and tax).

Amazon-specific pieces (plans, not JSON: the JSON shapes live in sandbox/amazon.py):

- `MerchantWorld.amazon_orders_created_on(day)`: that day's `AmazonOrderPlan`s. A plan fixes, once
  and for all, the lines, prices, fees, buyer and the timeline (pending until, shipped at,
  delivered at, cancelled at, refunded at). Only `status_at(now)` and the timestamps that have
  already happened depend on "now", so a day's data never changes when the clock moves.
- `MerchantWorld.amazon_orders_updated_between(a, b, now)`, `amazon_transactions_posted_between`,
  `amazon_settlements(now)`: what searchOrders, listTransactions and the settlement reports serve.
- Settlements run every 14 days on a per-merchant phase; a settlement holds exactly the finance
  transactions posted in its period, so settlement rows, finance transactions and orders agree to
  the penny.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

AMAZON_US_MARKETPLACE_ID = "ATVPDKIKX0DER"
AMAZON_US_MARKETPLACE_NAME = "Amazon.com"
CENT = Decimal("0.01")
SETTLEMENT_PERIOD = timedelta(days=14)
# A fixed origin for the 14-day settlement grid (each merchant adds its own phase to it).
SETTLEMENT_EPOCH = datetime(2024, 1, 5, tzinfo=UTC)
# How long after creation an order can still change (refunds come latest); bounds every scan.
MAX_ORDER_LIFETIME = timedelta(days=50)


def stable_int(*parts: object) -> int:
    """A 64-bit integer from SHA-256 of the parts; identical in every process and Python version."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def stable_rng(*parts: object) -> random.Random:
    """A `random.Random` seeded from the parts (seeding with an int is stable across processes)."""
    return random.Random(stable_int(*parts))


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def iso(ts: datetime) -> str:
    """ISO 8601 UTC with a `Z`, second precision, as SP-API writes timestamps."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Catalog (channel-agnostic)

# (brand, manufacturer part number prefix, typical part families with a cost range in dollars)
_BRANDS: tuple[tuple[str, str, tuple[tuple[str, float, float], ...]], ...] = (
    (
        "Briggs & Stratton",
        "",
        (
            ("Air Filter Cartridge", 6, 14),
            ("Carburetor", 28, 70),
            ("Spark Plug", 2, 5),
            ("Fuel Filter", 2, 6),
            ("Oil Filter", 4, 9),
            ("Recoil Starter Assembly", 18, 42),
        ),
    ),
    (
        "Kohler",
        "",
        (
            ("Oil Filter", 5, 11),
            ("Ignition Module", 24, 55),
            ("Air Filter Kit", 9, 20),
            ("Fuel Pump", 14, 33),
            ("Gasket Set", 11, 26),
        ),
    ),
    (
        "Stens",
        "",
        (
            ("Blade Set", 16, 38),
            ("Drive Belt", 8, 22),
            ("Spindle Assembly", 22, 48),
            ("Idler Pulley", 7, 17),
            ("Starter Solenoid", 8, 19),
        ),
    ),
    (
        "Rotary",
        "",
        (
            ("Mower Blade", 7, 18),
            ("Deck Belt", 9, 24),
            ("Wheel Assembly", 10, 25),
            ("Throttle Cable", 5, 12),
            ("Blade Adapter", 6, 14),
        ),
    ),
    (
        "Oregon",
        "",
        (
            ("Saw Chain", 9, 24),
            ("Guide Bar", 18, 45),
            ("Trimmer Line", 6, 19),
            ("Gator Blade", 8, 20),
            ("Chain Sharpener File", 3, 8),
        ),
    ),
    (
        "John Deere",
        "",
        (
            ("Mower Blade", 12, 30),
            ("Oil Filter", 5, 12),
            ("Deck Belt", 20, 46),
            ("Air Filter", 9, 21),
            ("Fuel Filter", 4, 10),
        ),
    ),
    (
        "Dorman",
        "",
        (
            ("Window Regulator", 22, 60),
            ("Door Handle", 7, 19),
            ("Oil Drain Plug", 2, 6),
            ("Brake Line", 8, 21),
            ("Wheel Hub Bolt Kit", 4, 11),
        ),
    ),
    (
        "ACDelco",
        "",
        (
            ("Spark Plug", 3, 9),
            ("Oil Filter", 4, 10),
            ("Brake Pad Set", 20, 55),
            ("Battery Terminal", 3, 8),
            ("Ignition Coil", 22, 58),
        ),
    ),
)
_MPN_STYLE = {
    "Briggs & Stratton": lambda r: f"{r.randint(490000, 799999)}",
    "Kohler": lambda r: f"{r.randint(12, 62)} {r.randint(50, 999):03d} {r.randint(1, 99):02d}-S",
    "Stens": lambda r: f"{r.randint(100, 785)}-{r.randint(1, 999):03d}",
    "Rotary": lambda r: f"{r.randint(1000, 16999)}",
    "Oregon": lambda r: f"{r.randint(20, 91)}-{r.randint(100, 999)}",
    "John Deere": lambda r: f"{r.choice(['GX', 'AM', 'M', 'GY'])}{r.randint(10000, 99999)}",
    "Dorman": lambda r: f"{r.randint(600, 926)}-{r.randint(100, 999)}",
    "ACDelco": lambda r: f"{r.choice(['41-', 'PF', '17D', 'D'])}{r.randint(100, 9999)}",
}
_FITS = (
    "for Lawn Mower",
    "for Riding Mower",
    "for Zero-Turn",
    "for Chainsaw",
    "for Tractor",
    "OEM Replacement",
    "for Small Engine",
    "for Car & Truck",
)


@dataclass(frozen=True)
class Part:
    """One catalog part. Money is Decimal; `amazon_fba` says whether Amazon stocks it (FBA)."""

    sku: str
    mpn: str
    brand: str
    title: str
    upc: str
    asin: str
    fnsku: str
    cost: Decimal
    price: Decimal
    weight_lb: Decimal
    amazon_fba: bool


def _upc(rng: random.Random) -> str:
    digits = [rng.randint(0, 9) for _ in range(11)]
    check = (10 - (sum(digits[0::2]) * 3 + sum(digits[1::2])) % 10) % 10
    return "".join(map(str, digits)) + str(check)


def _amazon_id(prefix: str, *parts: object) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    value = stable_int(*parts)
    chars = []
    for _ in range(9):
        value, rest = divmod(value, len(alphabet))
        chars.append(alphabet[rest])
    return prefix + "".join(chars)


@functools.lru_cache(maxsize=256)
def parts_catalog(seed: int, merchant_id: str, size: int = 48) -> tuple[Part, ...]:
    """The merchant's catalog: `size` parts, deterministic in (seed, merchant_id)."""
    rng = stable_rng(seed, merchant_id, "catalog")
    sku_prefix = "".join(ch for ch in merchant_id.upper() if ch.isalnum())[:4] or "ILL"
    parts: list[Part] = []
    seen: set[str] = set()
    while len(parts) < size:
        brand, _, families = rng.choice(_BRANDS)
        family, lo, hi = rng.choice(families)
        mpn = _MPN_STYLE[brand](rng)
        sku = f"{sku_prefix}-{brand.split()[0][:3].upper()}-{mpn.replace(' ', '').replace('-', '')}"
        if sku in seen:
            continue
        seen.add(sku)
        cost = money(Decimal(str(rng.uniform(lo, hi))))
        # Parts sellers price at 1.5x-2.2x landed cost and end on .99/.49/.95 like everyone else.
        raw = cost * Decimal(str(rng.uniform(1.5, 2.2)))
        price = Decimal(int(raw)) + Decimal(rng.choice(["0.99", "0.49", "0.95"]))
        weight = Decimal(str(round(rng.uniform(0.1, 6.5), 2)))
        parts.append(
            Part(
                sku=sku,
                mpn=mpn,
                brand=brand,
                title=f"{brand} {mpn} {family} {rng.choice(_FITS)}",
                upc=_upc(rng),
                asin=_amazon_id("B0", seed, merchant_id, sku, "asin")[:10],
                fnsku=_amazon_id("X0", seed, merchant_id, sku, "fnsku")[:10],
                cost=cost,
                price=price,
                weight_lb=weight,
                amazon_fba=rng.random() < 0.55,
            )
        )
    return tuple(parts)


# ---------------------------------------------------------------------------------------------
# Buyers (channel-agnostic)

_FIRST = (
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Carlos",
    "Karen",
    "Daniel",
    "Nancy",
    "Matthew",
    "Lisa",
    "Anthony",
    "Betty",
    "Mark",
    "Sandra",
    "Donald",
    "Ashley",
    "Steven",
    "Kimberly",
    "Andrew",
    "Emily",
    "Kenji",
    "Donna",
    "Joshua",
    "Michelle",
    "Wei",
    "Carol",
    "Priya",
    "Amanda",
    "Kevin",
    "Melissa",
    "Brian",
    "Deborah",
    "Luis",
    "Stephanie",
)
_LAST = (
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Patel",
    "Kowalski",
)
_STREETS = (
    "Oak",
    "Maple",
    "Cedar",
    "Pine",
    "Elm",
    "Washington",
    "Lake",
    "Hill",
    "Park",
    "Main",
    "Walnut",
    "Sunset",
    "Ridge",
    "Meadow",
    "Church",
    "Highland",
    "Mill",
    "Forest",
    "River",
    "Jefferson",
    "Lincoln",
    "Franklin",
    "Chestnut",
    "Spring",
)
_SUFFIX = ("St", "Ave", "Rd", "Dr", "Ln", "Ct", "Way", "Blvd", "Pl")
# (city, state, zip prefix, sales tax rate used for marketplace-facilitator tax)
_CITIES = (
    ("Columbus", "OH", "432", "0.0750"),
    ("Springfield", "MO", "658", "0.0810"),
    ("Boise", "ID", "837", "0.0600"),
    ("Knoxville", "TN", "379", "0.0925"),
    ("Madison", "WI", "537", "0.0550"),
    ("Tulsa", "OK", "741", "0.0852"),
    ("Spokane", "WA", "992", "0.0900"),
    ("Fresno", "CA", "937", "0.0798"),
    ("Lubbock", "TX", "794", "0.0825"),
    ("Greenville", "SC", "296", "0.0600"),
    ("Des Moines", "IA", "503", "0.0700"),
    ("Lancaster", "PA", "176", "0.0600"),
    ("Albany", "NY", "122", "0.0800"),
    ("Asheville", "NC", "288", "0.0700"),
    ("Billings", "MT", "591", "0.0000"),
    ("Portland", "OR", "972", "0.0000"),
    ("Duluth", "MN", "558", "0.0888"),
    ("Macon", "GA", "312", "0.0800"),
)


@dataclass(frozen=True)
class Address:
    name: str
    line1: str
    line2: str
    city: str
    state: str
    postal_code: str
    country_code: str
    phone: str
    tax_rate: Decimal


@dataclass(frozen=True)
class Buyer:
    name: str
    email: str
    phone: str
    address: Address


def fake_buyer(rng: random.Random, email_domain: str = "marketplace.amazon.com") -> Buyer:
    """A fake but realistic US buyer drawn from `rng` (pass a namespaced `stable_rng`)."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    name = f"{first} {last}"
    city, state, zip_prefix, tax = rng.choice(_CITIES)
    phone = f"{rng.randint(201, 989)}-555-01{rng.randint(0, 99):02d}"
    line2 = rng.choice(["", "", "", f"Apt {rng.randint(1, 40)}", f"Unit {rng.randint(100, 420)}"])
    address = Address(
        name=name,
        line1=f"{rng.randint(10, 9899)} {rng.choice(_STREETS)} {rng.choice(_SUFFIX)}",
        line2=line2,
        city=city,
        state=state,
        postal_code=f"{zip_prefix}{rng.randint(0, 99):02d}",
        country_code="US",
        phone=phone,
        tax_rate=Decimal(tax),
    )
    # Amazon hands out anonymised relay addresses; other channels pass their own domain.
    local = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(14))
    return Buyer(name=name, email=f"{local}@{email_domain}", phone=phone, address=address)


# ---------------------------------------------------------------------------------------------
# Amazon orders, finances and settlements


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
    `total` equals the sum of `rows` amounts exactly.
    """

    transaction_id: str
    transaction_type: str  # Shipment | Refund | ServiceFee
    posted: datetime
    order: AmazonOrderPlan | None
    rows: tuple[tuple[str, str, Decimal, AmazonLine | None], ...]

    @property
    def total(self) -> Decimal:
        return sum((amount for _, _, amount, _ in self.rows), Decimal("0"))


@dataclass(frozen=True)
class AmazonSettlement:
    merchant_id: str
    settlement_id: str
    start: datetime
    end: datetime
    deposit_date: datetime
    report_created: datetime
    report_id: str
    document_id: str
    transactions: tuple[AmazonFinanceTransaction, ...]

    @property
    def total(self) -> Decimal:
        return sum((t.total for t in self.transactions), Decimal("0"))


_CARRIERS = (("UPS", "1Z", 16), ("USPS", "9400", 18), ("FedEx", "", 12))
SUBSCRIPTION_FEE = Decimal("39.99")


def _fba_fee_per_unit(weight_lb: Decimal) -> Decimal:
    # A simplified FBA standard-size fee table (2025-like), by shipping weight.
    if weight_lb <= 1:
        return Decimal("4.75")
    if weight_lb <= 2:
        return Decimal("5.40")
    if weight_lb <= 3:
        return Decimal("6.10")
    return money(Decimal("6.10") + (weight_lb - 3) * Decimal("0.38"))


class MerchantWorld:
    """All sandbox data of one merchant, deterministic in (seed, merchant_id, history_start)."""

    def __init__(self, seed: int, merchant_id: str, history_start: date) -> None:
        self.seed = seed
        self.merchant_id = merchant_id
        self.history_start = history_start
        self.seller_id = (
            _amazon_id("A", seed, merchant_id, "seller")
            + _amazon_id("", seed, merchant_id, "seller2")[:4]
        )
        # Each merchant's settlements close at their own hour of the 14-day grid.
        self._settlement_phase = timedelta(
            hours=stable_int(seed, merchant_id, "settlement-phase") % (14 * 24)
        )
        self._day_cache: dict[date, tuple[AmazonOrderPlan, ...]] = {}

    # -- catalog ---------------------------------------------------------------------------
    @property
    def catalog(self) -> tuple[Part, ...]:
        return parts_catalog(self.seed, self.merchant_id)

    def part_by_sku(self, sku: str) -> Part | None:
        return next((p for p in self.catalog if p.sku == sku), None)

    def part_by_asin(self, asin: str) -> Part | None:
        return next((p for p in self.catalog if p.asin == asin), None)

    # -- orders ----------------------------------------------------------------------------
    def amazon_orders_created_on(self, day: date) -> tuple[AmazonOrderPlan, ...]:
        """The orders created on `day` (UTC); empty before history_start."""
        if day < self.history_start:
            return ()
        cached = self._day_cache.get(day)
        if cached is None:
            cached = self._plan_day(day)
            self._day_cache[day] = cached
        return cached

    def _plan_day(self, day: date) -> tuple[AmazonOrderPlan, ...]:
        rng = stable_rng(self.seed, self.merchant_id, "amazon-orders", day.isoformat())
        # Weekends sell a little more (people fix mowers on Saturdays).
        count = rng.randint(3, 7) + (2 if day.weekday() >= 5 else 0)
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        seconds = sorted(rng.randint(0, 86399) for _ in range(count))
        fba_parts = [p for p in self.catalog if p.amazon_fba]
        mfn_parts = [p for p in self.catalog if not p.amazon_fba]
        plans = []
        for index, second in enumerate(seconds):
            orng = stable_rng(self.seed, self.merchant_id, "amazon-order", day.isoformat(), index)
            created = midnight + timedelta(seconds=second)
            fulfilled_by = "AMAZON" if orng.random() < 0.6 and fba_parts else "MERCHANT"
            pool = fba_parts if fulfilled_by == "AMAZON" else (mfn_parts or fba_parts)
            buyer = fake_buyer(orng)
            n_lines = min(len(pool), orng.choices([1, 2, 3, 4], weights=[62, 24, 10, 4])[0])
            order_id = f"{111 + orng.randint(0, 3)}-{orng.randint(0, 9999999):07d}-{orng.randint(0, 9999999):07d}"
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
                    merchant_id=self.merchant_id,
                    order_id=order_id,
                    created=created,
                    fulfilled_by=fulfilled_by,
                    service_level=orng.choice(["STANDARD", "STANDARD", "EXPEDITED"])
                    if fulfilled_by == "MERCHANT"
                    else "STANDARD",
                    lines=tuple(lines),
                    buyer=buyer,
                    pending_until=_second(pending_until),
                    ship_at=_second(ship_at),
                    deliver_at=_second(deliver_at),
                    cancel_at=_second(cancel_at),
                    refund_at=_second(refund_at),
                    carrier=carrier,
                    tracking_number=tracking,
                    shipment_id=f"D{orng.randint(0, 10**9):09d}",
                )
            )
        return tuple(plans)

    def _orders_created_between(self, start: datetime, end: datetime) -> list[AmazonOrderPlan]:
        out = []
        day = start.date()
        while day <= end.date():
            out.extend(p for p in self.amazon_orders_created_on(day) if start <= p.created < end)
            day += timedelta(days=1)
        return out

    def amazon_order(self, order_id: str, now: datetime) -> AmazonOrderPlan | None:
        """Find an order by id among orders that exist at `now` (ids encode nothing: scan)."""
        start = datetime.combine(self.history_start, datetime.min.time(), tzinfo=UTC)
        day = now.date()
        while day >= start.date():
            for plan in self.amazon_orders_created_on(day):
                if plan.order_id == order_id and plan.created <= now:
                    return plan
            day -= timedelta(days=1)
        return None

    def amazon_orders_created_between(
        self, a: datetime, b: datetime, now: datetime
    ) -> list[AmazonOrderPlan]:
        """Orders created in [a, b) that exist at `now`, by creation time."""
        return [
            p
            for p in self._orders_created_between(a, min(b, now + timedelta(seconds=1)))
            if p.created <= now
        ]

    def amazon_orders_updated_between(
        self, a: datetime, b: datetime, now: datetime
    ) -> list[AmazonOrderPlan]:
        """Orders whose last update as of `now` falls in [a, b), by (last update, order id)."""
        found = []
        for plan in self._orders_created_between(
            a - MAX_ORDER_LIFETIME, min(b, now + timedelta(seconds=1))
        ):
            state = plan.status_at(now)
            if state is not None and a <= state[1] < b:
                found.append((state[1], plan.order_id, plan))
        found.sort(key=lambda item: (item[0], item[1]))
        return [plan for _, _, plan in found]

    # -- finances and settlements -----------------------------------------------------------
    def settlement_index(self, at: datetime) -> int:
        return (at - SETTLEMENT_EPOCH - self._settlement_phase) // SETTLEMENT_PERIOD

    def settlement_window(self, index: int) -> tuple[datetime, datetime]:
        start = SETTLEMENT_EPOCH + self._settlement_phase + index * SETTLEMENT_PERIOD
        return start, start + SETTLEMENT_PERIOD

    def _transactions_for_order(self, plan: AmazonOrderPlan) -> list[AmazonFinanceTransaction]:
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
                    f"{plan.order_id}-S", "Shipment", plan.ship_at, plan, tuple(rows)
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
                    f"{plan.order_id}-R", "Refund", plan.refund_at, plan, tuple(rows)
                )
            )
        return out

    def amazon_transactions_posted_between(
        self, a: datetime, b: datetime
    ) -> list[AmazonFinanceTransaction]:
        """Finance transactions posted in [a, b), by (posted, transaction id). Ignores "now": the
        caller clips `b` to what has happened."""
        found: list[AmazonFinanceTransaction] = []
        for plan in self._orders_created_between(a - MAX_ORDER_LIFETIME, b):
            found.extend(t for t in self._transactions_for_order(plan) if a <= t.posted < b)
        first = self.settlement_index(a)
        last = self.settlement_index(b)
        for index in range(first, last + 1):
            start, _ = self.settlement_window(index)
            posted = start + timedelta(hours=1)
            if a <= posted < b and posted.date() >= self.history_start:
                found.append(
                    AmazonFinanceTransaction(
                        f"SUB-{self.merchant_id}-{index}",
                        "ServiceFee",
                        posted,
                        None,
                        (("other-transaction", "Subscription Fee", -SUBSCRIPTION_FEE, None),),
                    )
                )
        found.sort(key=lambda t: (t.posted, t.transaction_id))
        return found

    def amazon_settlement_id(self, index: int) -> str:
        return f"{stable_int(self.seed, self.merchant_id, 'settlement', index) % 10**11:011d}"

    def amazon_settlement_report_id(self, index: int) -> str:
        # Six hash digits then the (offset) index, so getReport can find the settlement from the id
        # alone, and ids from another merchant or seed do not resolve.
        return f"{stable_int(self.seed, self.merchant_id, 'settlement-report', index) % 10**6:06d}{index + 50000:06d}"

    def settlement_index_from_report_id(self, report_id: str) -> int | None:
        if len(report_id) != 12 or not report_id.isdigit():
            return None
        index = int(report_id[6:]) - 50000
        return index if self.amazon_settlement_report_id(index) == report_id else None

    def amazon_settlement(self, index: int) -> AmazonSettlement:
        start, end = self.settlement_window(index)
        settlement_id = self.amazon_settlement_id(index)
        report_id = self.amazon_settlement_report_id(index)
        return AmazonSettlement(
            merchant_id=self.merchant_id,
            settlement_id=settlement_id,
            start=start,
            end=end,
            deposit_date=end + timedelta(days=2),
            # Amazon publishes the report some hours after the period closes.
            report_created=end + timedelta(hours=3, minutes=stable_int(settlement_id) % 180),
            report_id=report_id,
            document_id=f"amzn1.spdoc.1.4.na.{report_id}",
            transactions=tuple(self.amazon_transactions_posted_between(start, end)),
        )

    def amazon_settlements_reported_between(
        self, a: datetime, b: datetime, now: datetime
    ) -> list[AmazonSettlement]:
        """Settlements whose report was created in [a, b) and by `now`, oldest first."""
        history = datetime.combine(self.history_start, datetime.min.time(), tzinfo=UTC)
        out = []
        index = self.settlement_index(max(a, history) - SETTLEMENT_PERIOD - timedelta(days=1))
        while True:
            start, end = self.settlement_window(index)
            if start > min(b, now):
                break
            if end > history:
                meta = self.amazon_settlement(index)
                if a <= meta.report_created < b and meta.report_created <= now:
                    out.append(meta)
            index += 1
        return out

    # -- inventory and offers (snapshots: they move day by day, like real stock) -------------
    def amazon_inventory(self, now: datetime) -> list[dict[str, object]]:
        """FBA stock per FBA part as of `now`'s day: quantities for the inventory summaries."""
        day = now.date()
        out = []
        for part in self.catalog:
            if not part.amazon_fba:
                continue
            rng = stable_rng(
                self.seed, self.merchant_id, "amazon-inventory", part.sku, day.isoformat()
            )
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

    def amazon_competitors(self, part: Part, now: datetime) -> list[dict[str, object]]:
        """Competing offers for a part on `now`'s day (ours first). Prices are Decimal."""
        rng = stable_rng(
            self.seed, self.merchant_id, "amazon-offers", part.sku, now.date().isoformat()
        )
        offers = [
            {
                "seller_id": self.seller_id,
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
                    "seller_id": _amazon_id("A", self.seed, part.sku, "competitor", n) + "QX",
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


def _second(ts: datetime | None) -> datetime | None:
    return ts.replace(microsecond=0) if ts is not None else None


# ---------------------------------------------------------------------------------------------
# Order plans over time windows, for any channel whose plans have `.created` and `.modified_at(now)`.

Plan = TypeVar("Plan")


def plans_created_between(
    plans_on: Callable[[date], Iterable[Plan]], a: datetime, b: datetime
) -> list[Plan]:
    """The plans `plans_on(day)` generates whose creation time is in [a, b)."""
    out: list[Plan] = []
    day = a.date()
    while day <= b.date():
        out.extend(p for p in plans_on(day) if a <= p.created < b)  # type: ignore[attr-defined]
        day += timedelta(days=1)
    return out


def plans_modified_between(
    plans_on: Callable[[date], Iterable[Plan]],
    a: datetime,
    b: datetime,
    now: datetime,
    max_lifetime: timedelta,
    plan_id: Callable[[Plan], Any],
) -> list[Plan]:
    """Plans whose last change as of `now` is in [a, b), ordered by (last change, id). Orders
    change for at most `max_lifetime` after creation, so only that far back is searched."""
    found = []
    for plan in plans_created_between(plans_on, a - max_lifetime, min(b, now + timedelta(seconds=1))):
        modified = plan.modified_at(now)  # type: ignore[attr-defined]
        if modified is not None and a <= modified < b:
            found.append((modified, plan_id(plan), plan))
    found.sort(key=lambda item: (item[0], item[1]))
    return [plan for _, _, plan in found]


def plans_created_by(
    plans_on: Callable[[date], Iterable[Plan]], a: datetime, b: datetime, now: datetime
) -> list[Plan]:
    """Plans created in [a, b) that exist as of `now`."""
    return [
        p
        for p in plans_created_between(plans_on, a, min(b, now + timedelta(seconds=1)))
        if p.created <= now  # type: ignore[attr-defined]
    ]
