"""The sandbox's deterministic world: what each merchant sells and to whom, for every channel.

Everything is derived from `(seed, merchant_id, ...)` through SHA-256 (`stable_rng`), never from
Python's `hash()`, so two processes (a test and a server, or two CI runs) see the same data.

This module knows no channel. Each channel module (amazon.py, ebay.py, walmart.py) builds its own
order, finance and settlement plans from these pieces, on its own random streams, and renders them
in its API's shapes:

- `stable_int(*parts)` / `stable_rng(*parts)` / `stable_code(prefix, *parts)`: deterministic
  integers, `random.Random` streams and short ids. Always namespace the parts with the channel,
  e.g. `stable_rng(seed, merchant_id, "ebay-orders", day.isoformat())`, so channels do not share
  (and perturb) each other's streams.
- `parts_catalog(seed, merchant_id) -> tuple[Part, ...]`: the merchant's parts (SKU, manufacturer
  part number, brand, title, UPC, cost and list price as `Decimal`, weight). The same catalog
  backs every channel, as a real parts seller lists one assortment everywhere. It also carries the
  Amazon listing facts (ASIN, FNSKU, whether Amazon stocks the part) because they are drawn in the
  same stream as the rest of the part: moving them out would change every catalog.
- `MerchantWorld(seed, merchant_id, history_start)`: one merchant's handle (what
  `SandboxState.world(merchant_id)` returns): its catalog and first day of history.
- `fake_buyer(rng, email_domain=..., country="US") -> Buyer`: a realistic but fake buyer (name,
  email, phone and an `Address`; in the US with the sales tax rate of its city, elsewhere with
  none, as VAT is in the price). Phone numbers use the reserved 555-01xx range.
- `currency_of(country)`: the currency a marketplace of that country sells in (`CURRENCIES`).
- `money(value)`: round a Decimal to cents, half up (how marketplaces round fees and tax);
  `whole_seconds(ts)`: drop microseconds (marketplaces timestamp to the second).
- `plans_created_between`, `plans_modified_between`, `plans_created_by`: a channel's order plans
  (objects with `.created` and `.modified_at(now)`) over a time window, given the channel's
  per-day generator. A day's plans fix the whole future of its orders once and for all; only which
  events have happened depends on "now", so a day's data never changes when the clock moves.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

CENT = Decimal("0.01")


def stable_int(*parts: object) -> int:
    """A 64-bit integer from SHA-256 of the parts; identical in every process and Python version."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


@contextmanager
def serving(var: ContextVar[str], value: str, known: Collection[str], what: str) -> Iterator[None]:
    """Set `var` (the marketplace a channel's request is served for) to `value` meanwhile;
    ValueError for a value the sandbox does not sell in."""
    if value not in known:
        raise ValueError(f"unknown {what} {value!r}; the sandbox knows {', '.join(known)}")
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def stable_rng(*parts: object) -> random.Random:
    """A `random.Random` seeded from the parts (seeding with an int is stable across processes)."""
    return random.Random(stable_int(*parts))

def order_seconds(
    seed: int, merchant_id: str, channel: str, day: date, counts: tuple[int, int], weekend_extra: int
) -> tuple[random.Random, datetime, list[int]]:
    """A channel's orders of one day: its random stream (the draws below already taken), the day's
    midnight and the orders' seconds after it, in order. `counts` bounds the day's orders; weekends
    sell `weekend_extra` more (people fix mowers on Saturdays)."""
    rng = stable_rng(seed, merchant_id, f"{channel}-orders", day.isoformat())
    count = rng.randint(*counts) + (weekend_extra if day.weekday() >= 5 else 0)
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return rng, midnight, sorted(rng.randint(0, 86399) for _ in range(count))


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def whole_seconds(ts: datetime | None) -> datetime | None:
    """`ts` without microseconds (None stays None)."""
    return ts.replace(microsecond=0) if ts is not None else None


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
FITS = (  # the endings of part titles

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


def stable_code(prefix: str, *parts: object) -> str:
    """`prefix` plus nine characters of an unambiguous alphabet (no I or O), from the parts (the
    shape of Amazon's ASINs, FNSKUs and seller ids)."""
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
                title=f"{brand} {mpn} {family} {rng.choice(FITS)}",
                upc=_upc(rng),
                asin=stable_code("B0", seed, merchant_id, sku, "asin")[:10],
                fnsku=stable_code("X0", seed, merchant_id, sku, "fnsku")[:10],
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


# The currency each selling country settles in (a marketplace's currency is its country's).
CURRENCIES: dict[str, str] = {
    "US": "USD",
    "CA": "CAD",
    "MX": "MXN",
    "GB": "GBP",
    "DE": "EUR",
    "FR": "EUR",
    "IT": "EUR",
    "ES": "EUR",
}
# Buyers outside the US: (city, region, postcode prefix, dialling prefix). Prices there include
# VAT/GST, so no tax is added on top (tax rate 0), unlike US marketplace-facilitator sales tax.
_FOREIGN_CITIES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "CA": (("Calgary", "AB", "T2P", "+1 403"), ("Halifax", "NS", "B3H", "+1 902")),
    "MX": (("Monterrey", "NL", "640", "+52 81"), ("Puebla", "PUE", "720", "+52 222")),
    "GB": (("Leeds", "", "LS1", "+44 113"), ("Bristol", "", "BS1", "+44 117"), ("York", "", "YO1", "+44 1904")),
    "DE": (("Köln", "NW", "506", "+49 221"), ("Leipzig", "SN", "041", "+49 341"), ("Kassel", "HE", "341", "+49 561")),
    "FR": (("Lyon", "", "690", "+33 4"), ("Nantes", "", "440", "+33 2")),
    "IT": (("Torino", "TO", "101", "+39 011"), ("Bologna", "BO", "401", "+39 051")),
    "ES": (("Valencia", "V", "460", "+34 96"), ("Zaragoza", "Z", "500", "+34 976")),
}


def currency_of(country_code: str) -> str:
    """The currency of a selling country (ValueError for one the sandbox does not model)."""
    try:
        return CURRENCIES[country_code]
    except KeyError:
        raise ValueError(
            f"the sandbox models no marketplace in country {country_code!r}; known: {', '.join(CURRENCIES)}"
        ) from None


def fake_buyer(rng: random.Random, *, email_domain: str, country: str = "US") -> Buyer:
    """A fake but realistic buyer in `country` drawn from `rng` (pass a namespaced `stable_rng`).
    US buyers are drawn exactly as before countries existed, so US data never moves."""
    if country != "US":
        return _foreign_buyer(rng, email_domain, country)
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
    # Marketplaces show sellers an anonymised relay address, never the buyer's own: each channel
    # passes its relay domain.
    local = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(14))
    return Buyer(name=name, email=f"{local}@{email_domain}", phone=phone, address=address)


def _foreign_buyer(rng: random.Random, email_domain: str, country: str) -> Buyer:
    currency_of(country)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    name = f"{first} {last}"
    city, region, postal_prefix, dialling = rng.choice(_FOREIGN_CITIES[country])
    if country in ("GB", "CA"):
        letters = "ABDEFGHJLNPQRSTUWXYZ"
        postal = f"{postal_prefix} {rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}"
    else:
        postal = f"{postal_prefix}{rng.randint(0, 99):02d}"
    phone = f"{dialling} 555 01{rng.randint(0, 99):02d}"
    address = Address(
        name=name,
        line1=f"{rng.choice(_STREETS)}weg {rng.randint(1, 180)}" if country == "DE"
        else f"{rng.randint(1, 180)} {rng.choice(_STREETS)} Road",
        line2="",
        city=city,
        state=region,
        postal_code=postal,
        country_code=country,
        phone=phone,
        tax_rate=Decimal("0"),
    )
    local = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(14))
    return Buyer(name=name, email=f"{local}@{email_domain}", phone=phone, address=address)


# ---------------------------------------------------------------------------------------------
# One merchant


class MerchantWorld:
    """One merchant's sandbox world, deterministic in (seed, merchant_id, history_start): its
    catalog and the first day with orders. Channel modules derive their plans from it."""

    def __init__(self, seed: int, merchant_id: str, history_start: date) -> None:
        self.seed = seed
        self.merchant_id = merchant_id
        self.history_start = history_start

    @property
    def catalog(self) -> tuple[Part, ...]:
        return parts_catalog(self.seed, self.merchant_id)

    def part_by_sku(self, sku: str) -> Part | None:
        return next((p for p in self.catalog if p.sku == sku), None)


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
