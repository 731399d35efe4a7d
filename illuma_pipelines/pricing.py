"""Repricing (issue 14): competitive prices, the merchant's pricing rules, and daily recommendations.

No Dagster here. Three parts:

1. `load_competitive_prices_partition` normalizes a day's Amazon competitive pricing extract (the
   raw `competitive_pricing` rows, read through the Product Pricing normalizer) into
   `core_competitive_prices`: one row per day, marketplace, SKU/ASIN and condition with the buy-box
   price, the lowest prices by fulfillment channel, the merchant's own offer and the offer counts.
   Records that cannot be read go to `raw_quarantine`.
2. Pricing rules (`pricing_rules` in the merchant's schema), per SKU or per part type (part type
   `*`: every part), set by `set_pricing_rule` (the `illuma merchants pricing-rule` command) or a
   `pricing_rules` CSV file (`import_pricing_rules_file`, `import_inbox_rule_files`).
3. `load_recommendations_partition` writes `pricing_recommendations`: per SKU, marketplace and day
   the current price, the competitor reference, the recommended price, its floor and ceiling, and
   the reason in words. We recommend; nothing here writes a price to a marketplace.

Prices are landed prices (item + shipping, as Amazon ranks offers and as its referral fee is
charged); for FBA and free-shipping offers that is the item price. Money is Decimal throughout.

The floor. Selling at price P leaves P - r*P - f after a referral fee of r (a share of P) and a
per-unit fulfillment fee f; that must cover the cost with the minimum margin m:
    P*(1 - r) - f >= cost*(1 + m)   <=>   P >= (cost*(1 + m) + f) / (1 - r)
so the floor is that quotient (cost = landed cost, else unit cost), raised to the catalog's MAP
price and `min_price`, and to one cent. The ceiling is the catalog's `max_price` (none: no ceiling).

Rounding to the cent: the floor rounds UP and the ceiling DOWN (ROUND_CEILING / ROUND_FLOOR), so a
rounded bound is never looser than the exact one; the strategy's target price rounds HALF-UP and is
then clamped into [floor, ceiling]. Hence a recommendation is never below the exact floor nor
above the exact ceiling; when the rounded floor exceeds the rounded ceiling there is none.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from illuma_pipelines import normalize
from illuma_pipelines.catalog import catalog_day_end, parts_valid_on
from illuma_pipelines.core.tables import ORDER_LINES, ORDERS
from illuma_pipelines.merchant_ids import merchant_schema, validate_merchant_id
from illuma_pipelines.normalize.frames import table_frame
from illuma_pipelines.normalize.money import ISO_4217_ACTIVE
from illuma_pipelines.raw_records import (
    as_utc,
    empty_quarantine,
    quarantine_frame,
    raw_payloads,
    replace_day_and_quarantine,
)
from illuma_pipelines.registry import record_audit
from illuma_pipelines.warehouse import Connection, TableSpec, Warehouse, any_of, cols

CHANNEL = "amazon"
PRICING_DATASET = "competitive_pricing"
CENT = Decimal("0.01")
HUNDRED = Decimal(100)
# The smallest price a recommendation may have: a floor of zero (a free part) is never meant.
MIN_PRICE = CENT
# Exact-enough arithmetic for the floor's division, rounded towards +inf so the quotient is never
# below the true value (the floor then rounds up to the cent from there).
_UP = Context(prec=34, rounding=ROUND_CEILING)

# ------------------------------------------------------------------------------------- tables
COMPETITIVE_PRICES = TableSpec(
    "core_competitive_prices",
    cols(
        "price_date date!", "channel text!", "marketplace_id text!", "sku text", "asin text",
        "condition text!", "currency text",
        # The buy box (featured offer) and whether the merchant holds it (NULL: not reported).
        "buy_box_price money", "buy_box_is_mine boolean",
        # Lowest offers of the condition: any channel, fulfilled by Amazon, by the merchant, and
        # the lowest offer that is not the merchant's own (from the listed offers).
        "lowest_price money", "lowest_price_fba money", "lowest_price_fbm money", "lowest_other_price money",
        "my_price money",
        "offer_count integer", "offer_count_fba integer", "offer_count_fbm integer",
        "source text!", "observed_at timestamptz", "loaded_at timestamptz!", "run_id text!",
    ),
)
COMPETITIVE_PRICES_QUARANTINE_DATASET = "core_competitive_prices"

PRICING_RULES = TableSpec(
    "pricing_rules",
    cols(
        "scope text!", "target text!", "strategy text!", "beat_by_amount money", "beat_by_percent money",
        "min_margin_percent money!", "referral_fee_percent money!", "fulfillment_fee money!",
        "currency text", "source text!", "updated_at timestamptz!", "updated_by text!",
    ),
    primary_key=("scope", "target"),
)
# Rule files already applied from the inbox, by content: the same file never applies twice.
PRICING_RULE_FILES = TableSpec(
    "pricing_rule_files",
    cols("sha256 text!", "file_name text!", "rules integer!", "loaded_at timestamptz!"),
    primary_key=("sha256",),
)

RECOMMENDATIONS = TableSpec(
    "pricing_recommendations",
    cols(
        "recommendation_date date!", "channel text!", "marketplace_id text", "sku text!", "asin text",
        "status text!", "reason text!", "currency text",
        "current_price money", "current_price_source text",
        "competitor_reference money", "reference_kind text", "offer_count integer",
        "recommended_price money", "price_change money", "floor_price money", "ceiling_price money",
        "cost money", "cost_currency text", "cost_basis text", "strategy text", "rule_scope text", "rule_target text",
        "catalog_valid_from timestamptz", "loaded_at timestamptz!", "run_id text!",
    ),
)

# Statuses of a recommendation row; only RECOMMENDED carries a recommended price.
RECOMMENDED = "recommended"
NO_COMPETITOR = "no_competitor_data"
NO_REFERENCE = "no_competitor_price"
NO_COST = "no_cost"
NO_RULE = "no_rule"
CURRENCY_MISMATCH = "currency_mismatch"
FLOOR_ABOVE_CEILING = "floor_above_ceiling"
NO_CEILING = "no_ceiling"
STATUSES = (RECOMMENDED, NO_COMPETITOR, NO_REFERENCE, NO_COST, NO_RULE, CURRENCY_MISMATCH, FLOOR_ABOVE_CEILING, NO_CEILING)

MATCH_BUY_BOX = "match_buy_box"
BEAT_LOWEST_BY = "beat_lowest_by"
STAY_AT_MAX_WHEN_ALONE = "stay_at_max_when_alone"
STRATEGIES = (MATCH_BUY_BOX, BEAT_LOWEST_BY, STAY_AT_MAX_WHEN_ALONE)
SKU_SCOPE, PART_TYPE_SCOPE = "sku", "part_type"
EVERY_PART = "*"


def _money(value: Decimal | None) -> str:
    return "none" if value is None else f"{value:.2f}"


def _pct(value: Decimal) -> str:
    return f"{value.normalize():f}%"


# ===================================================================== 1. competitive prices
class PricingRecordError(ValueError):
    """A competitive pricing record that cannot be read; the message is the quarantine reason."""


def _condition(value: str | None) -> str:
    return (value or "any").strip().lower() or "any"


def _landed(p: normalize.PriceObservation) -> Decimal | None:
    if p.landed_price is not None:
        return p.landed_price
    if p.listing_price is None:
        return None
    return p.listing_price + (p.shipping_price or Decimal(0))


def _count(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise PricingRecordError(f"{what}: not a whole number: {value!r}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise PricingRecordError(f"{what}: not a whole number: {value!r}") from None
    if not number.is_finite() or number != number.to_integral_value() or number < 0:
        raise PricingRecordError(f"{what}: not a whole, non-negative number: {value!r}")
    return int(number)


def _min(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return b if a is None else a if b is None else min(a, b)


@dataclass
class _Quote:
    """What one record says about one (marketplace, SKU, ASIN, condition)."""

    marketplace_id: str
    sku: str | None
    asin: str | None
    condition: str
    source: str
    currencies: set[str] = field(default_factory=set)
    buy_box_price: Decimal | None = None
    buy_box_is_mine: bool | None = None
    lowest_price: Decimal | None = None
    lowest_price_fba: Decimal | None = None
    lowest_price_fbm: Decimal | None = None
    lowest_other_price: Decimal | None = None
    my_price: Decimal | None = None
    offer_count: int | None = None
    offer_count_fba: int | None = None
    offer_count_fbm: int | None = None

    def price(self, name: str, value: Decimal | None, currency: str) -> None:
        if value is None:
            return
        self.currencies.add(currency)
        setattr(self, name, _min(getattr(self, name), value))


# CompetitivePriceId of getCompetitivePricing when a price names no condition.
_COMPETITIVE_PRICE_ID_CONDITION = {"1": "new", "2": "used"}


def _source(record: Mapping[str, Any]) -> str:
    if "Product" in record:
        return "getCompetitivePricing"
    return "getListingOffers" if record.get("SKU") or (record.get("Identifier") or {}).get("SellerSKU") else "getItemOffers"


def competitive_quotes(record: Any, observed_at: datetime | None = None) -> list[_Quote]:
    """The quotes of one raw competitive pricing record: a getCompetitivePricing entry
    (`Product.CompetitivePricing`), or a getListingOffers / getItemOffers payload (`Summary`,
    `Offers`, the marketplace as `marketplaceId` or the older `MarketplaceID`).

    Prices come from the Product Pricing normalizer (`normalize.amazon.normalize_pricing`); the
    offer counts, the buy-box winner flag and CompetitivePriceId, which it does not carry, are read
    here. Business (B2B) and quantity-tier prices are left out: recommendations price the consumer
    offer. Raises PricingRecordError for a record that cannot be read.
    """
    if not isinstance(record, Mapping):
        raise PricingRecordError(f"record is a {type(record).__name__}, expected a JSON object")
    if "payload" in record:
        raise PricingRecordError("record is a whole response body, not one pricing entry")
    try:
        result = normalize.amazon.normalize_pricing({"payload": [record]}, observed_at)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise PricingRecordError(str(exc) or type(exc).__name__) from exc
    if result.rejects:
        raise PricingRecordError(result.rejects[0][1])
    try:
        quotes = _quotes(record, result.prices)
    except PricingRecordError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # a list where an object belongs...
        raise PricingRecordError(f"unexpected shape: {type(exc).__name__}: {exc}") from exc
    for q in quotes:
        if len(q.currencies) > 1:
            raise PricingRecordError(
                f"prices of {q.sku or q.asin} ({q.condition}) in several currencies: {', '.join(sorted(q.currencies))}"
            )
    return quotes


def _quotes(record: Mapping[str, Any], prices: list[normalize.PriceObservation]) -> list[_Quote]:
    source = _source(record)
    quotes: dict[tuple[str, str | None, str | None, str], _Quote] = {}

    def quote(marketplace: str | None, sku: str | None, asin: str | None, condition: str) -> _Quote:
        if not marketplace:
            raise PricingRecordError("no marketplace id (MarketplaceId, marketplaceId or MarketplaceID)")
        if not (sku or asin):
            raise PricingRecordError("names neither a SKU nor an ASIN")
        key = (marketplace, sku, asin, condition)
        if key not in quotes:
            quotes[key] = _Quote(marketplace, sku, asin, condition, source)
        return quotes[key]

    if "Product" in record:
        product = record.get("Product") or {}
        identifiers = product.get("Identifiers") or {}
        marketplace = (
            (identifiers.get("MarketplaceASIN") or {}).get("MarketplaceId")
            or (identifiers.get("SKUIdentifier") or {}).get("MarketplaceId")
            or record.get("marketplaceId")
        )
        sku = (identifiers.get("SKUIdentifier") or {}).get("SellerSKU") or record.get("SellerSKU") or None
        asin = (identifiers.get("MarketplaceASIN") or {}).get("ASIN") or record.get("ASIN") or None
        raw_prices = list((product.get("CompetitivePricing") or {}).get("CompetitivePrices") or ())
        competitive = [p for p in prices if p.kind == "competitive"]
        for raw, p in zip(raw_prices, competitive, strict=True):
            if (p.offer_type or "B2C").upper() != "B2C" or p.quantity_tier is not None:
                continue
            condition = p.condition or _COMPETITIVE_PRICE_ID_CONDITION.get(str(raw.get("CompetitivePriceId")))
            q = quote(p.marketplace_id, p.sku, p.asin_or_item_id, _condition(condition))
            before = q.buy_box_price
            q.price("buy_box_price", _landed(p), p.currency)
            if q.buy_box_price != before:
                q.buy_box_is_mine = p.is_mine
        for p in prices:
            if p.kind == "offer" and p.is_mine:
                quote(p.marketplace_id, p.sku, p.asin_or_item_id, _condition(p.condition)).price("my_price", _landed(p), p.currency)
        for i, entry in enumerate((product.get("CompetitivePricing") or {}).get("NumberOfOfferListings") or ()):
            count = _count((entry or {}).get("Count"), f"NumberOfOfferListings[{i}].Count")
            q = quote(marketplace, sku, asin, _condition((entry or {}).get("condition")))
            q.offer_count = count if q.offer_count is None or count is None else max(q.offer_count, count)
    else:
        condition = _condition(record.get("ItemCondition") or (record.get("Identifier") or {}).get("ItemCondition"))
        first = prices[0] if prices else None
        identifier = record.get("Identifier") or {}
        marketplace = (
            first.marketplace_id if first else identifier.get("MarketplaceId")
            or record.get("marketplaceId") or record.get("MarketplaceID")
        )
        sku = first.sku if first else (record.get("SKU") or identifier.get("SellerSKU"))
        asin = first.asin_or_item_id if first else (record.get("ASIN") or identifier.get("ASIN"))
        for p in prices:
            if (p.offer_type or "B2C").upper() != "B2C" or p.quantity_tier is not None:
                continue
            if p.kind == "lowest":
                q = quote(p.marketplace_id, p.sku, p.asin_or_item_id, _condition(p.condition))
                q.price("lowest_price", _landed(p), p.currency)
                channel = (p.fulfillment_channel or "").lower()
                if channel == "amazon":
                    q.price("lowest_price_fba", _landed(p), p.currency)
                elif channel == "merchant":
                    q.price("lowest_price_fbm", _landed(p), p.currency)
            elif p.kind == "buybox":
                quote(p.marketplace_id, p.sku, p.asin_or_item_id, _condition(p.condition)).price(
                    "buy_box_price", _landed(p), p.currency
                )
            elif p.kind == "item_offer":
                q = quote(p.marketplace_id, p.sku, p.asin_or_item_id, condition)
                q.price("my_price" if p.is_mine else "lowest_other_price", _landed(p), p.currency)
        offers = list(record.get("Offers") or ())
        item_offers = [p for p in prices if p.kind == "item_offer"]
        winners = [(o, p) for o, p in zip(offers, item_offers, strict=True) if o.get("IsBuyBoxWinner") is True]
        if winners:
            q = quote(marketplace, sku, asin, condition)
            q.buy_box_is_mine = any(o.get("MyOffer") is True for o, _ in winners)
            if q.buy_box_price is None:  # no Summary.BuyBoxPrices: the winning offer's price
                for _, p in winners:
                    q.price("buy_box_price", _landed(p), p.currency)
        summary = record.get("Summary") or {}
        counted = False
        for i, entry in enumerate(summary.get("NumberOfOffers") or ()):
            entry = entry or {}
            count = _count(entry.get("OfferCount"), f"NumberOfOffers[{i}].OfferCount")
            if count is None:
                continue
            counted = True
            q = quote(marketplace, sku, asin, _condition(entry.get("condition")))
            q.offer_count = (q.offer_count or 0) + count
            channel = str(entry.get("fulfillmentChannel") or "").lower()
            if channel == "amazon":
                q.offer_count_fba = (q.offer_count_fba or 0) + count
            elif channel == "merchant":
                q.offer_count_fbm = (q.offer_count_fbm or 0) + count
        if not counted:
            # The published examples leave OfferCount out: the total, else the offers listed.
            total = _count(summary.get("TotalOfferCount"), "TotalOfferCount")
            if total is not None or offers:
                quote(marketplace, sku, asin, condition).offer_count = total if total is not None else len(offers)
    return list(quotes.values())


def _quote_row(q: _Quote) -> dict[str, Any]:
    return {
        "marketplace_id": q.marketplace_id, "sku": q.sku, "asin": q.asin, "condition": q.condition,
        "currency": next(iter(q.currencies), None),
        "buy_box_price": q.buy_box_price, "buy_box_is_mine": q.buy_box_is_mine,
        "lowest_price": q.lowest_price, "lowest_price_fba": q.lowest_price_fba,
        "lowest_price_fbm": q.lowest_price_fbm, "lowest_other_price": q.lowest_other_price,
        "my_price": q.my_price, "offer_count": q.offer_count, "offer_count_fba": q.offer_count_fba,
        "offer_count_fbm": q.offer_count_fbm, "source": q.source,
    }


def _merge(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Two records about one (marketplace, SKU, ASIN, condition) (a competitive price entry and
    an offers payload): the lowest price of each kind, the largest count, the first of the rest."""
    out = dict(rows[0])
    for row in rows[1:]:
        if row["currency"] and out["currency"] and row["currency"] != out["currency"]:
            raise PricingRecordError(
                f"{row['sku'] or row['asin']} ({row['condition']}) is priced in {out['currency']} and "
                f"{row['currency']} by two records"
            )
        for name, value in row.items():
            if value is None:
                continue
            if out[name] is None:
                out[name] = value
            elif name.endswith("_price"):
                out[name] = min(out[name], value)
            elif name.startswith("offer_count"):
                out[name] = max(out[name], value)
        out["source"] = "+".join(sorted(set(out["source"].split("+")) | {row["source"]}))
    return out


def competitive_price_rows(
    payloads: Sequence[Any], observed_at: Sequence[datetime | None]
) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """(rows of core_competitive_prices without the partition columns, rejects by position)."""
    grouped: dict[tuple, list[tuple[int, dict[str, Any]]]] = {}
    seen_at: dict[tuple, datetime | None] = {}
    rejects: dict[int, str] = {}
    for position, (payload, at) in enumerate(zip(payloads, observed_at, strict=True)):
        if isinstance(payload, Exception):  # the raw text did not parse
            rejects[position] = f"payload is not JSON: {payload}"
            continue
        try:
            quotes = competitive_quotes(payload, at)
        except PricingRecordError as exc:
            rejects[position] = str(exc)
            continue
        for q in quotes:
            # A SKU's quotes meet whether or not a record named its ASIN (getListingOffers does not).
            key = (q.marketplace_id, q.sku, None if q.sku else q.asin, q.condition)
            grouped.setdefault(key, []).append((position, _quote_row(q)))
            seen_at[key] = max((t for t in (seen_at.get(key), at) if t is not None), default=None)
    rows = []
    for key, found in grouped.items():
        try:
            row = _merge([r for _, r in found])
        except PricingRecordError as exc:
            # Each record reads alone; together they contradict: no quote, the later one quarantined.
            rejects.setdefault(found[-1][0], str(exc))
            continue
        row["observed_at"] = seen_at[key]
        rows.append(row)
    rows.sort(key=lambda r: (r["marketplace_id"], r["sku"] or "", r["asin"] or "", r["condition"]))
    return rows, sorted(rejects.items())


@dataclass
class CompetitivePricesLoaded:
    rows: int
    rejected: int
    skus: int
    with_buy_box: int
    currencies: list[str]

    def metadata(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "skus": self.skus, "rows_with_buy_box": self.with_buy_box,
            "rejected": self.rejected, "currencies": ", ".join(self.currencies) or "none",
        }


def load_competitive_prices_partition(wh: Warehouse, merchant_id: str, day: str, run_id: str) -> CompetitivePricesLoaded:
    """Replace the merchant's competitive prices of `day` with those of that day's Amazon
    competitive pricing extract; unreadable records replace the day's quarantine rows."""
    schema = merchant_schema(merchant_id)
    with wh.merchant_scope(merchant_id) as conn:
        raw = raw_payloads(conn, merchant_id, CHANNEL, PRICING_DATASET, day)
    payloads: list[Any] = []
    for _, text, _ in raw:
        try:
            payloads.append(normalize.loads(text))
        except ValueError as exc:
            payloads.append(exc)  # quarantined with the other unreadable records
    rows, rejects = competitive_price_rows(payloads, [as_utc(r[2]) for r in raw])
    loaded_at = datetime.now(UTC)
    for row in rows:
        row.update(price_date=day, channel=CHANNEL, loaded_at=loaded_at, run_id=run_id)
    frame = table_frame(COMPETITIVE_PRICES, rows)
    quarantine = (
        quarantine_frame(
            rejects, raw, dataset=COMPETITIVE_PRICES_QUARANTINE_DATASET, source=f"{CHANNEL}.normalize_pricing",
            partition_date=day, run_id=run_id,
        )
        if rejects else empty_quarantine()
    )
    with wh.merchant_scope(merchant_id) as conn:
        replace_day_and_quarantine(
            conn, schema, COMPETITIVE_PRICES, {"price_date": day}, frame,
            dataset=COMPETITIVE_PRICES_QUARANTINE_DATASET, partition_date=day, rejects=quarantine,
        )
    return CompetitivePricesLoaded(
        rows=len(rows),
        rejected=len(rejects),
        skus=len({r["sku"] or r["asin"] for r in rows}),
        with_buy_box=sum(1 for r in rows if r["buy_box_price"] is not None),
        currencies=sorted({r["currency"] for r in rows if r["currency"]}),
    )


# =========================================================================== 2. pricing rules
class PricingRuleError(ValueError):
    """A pricing rule (or rule file) with a value we cannot use; the message says which and why."""


@dataclass(frozen=True)
class PricingRule:
    """How to price one SKU, or every SKU of a part type (`*`: every part).

    Percentages are percent numbers (15 means 15 %). `beat_by_amount` and `fulfillment_fee` are in
    `currency` when set, else in the currency of the offer they apply to.
    """

    scope: str
    target: str
    strategy: str
    min_margin_percent: Decimal
    referral_fee_percent: Decimal
    fulfillment_fee: Decimal = Decimal(0)
    beat_by_amount: Decimal | None = None
    beat_by_percent: Decimal | None = None
    currency: str | None = None
    source: str = "cli"
    updated_at: datetime | None = None
    updated_by: str = "unknown"

    def describe(self) -> str:
        who = f"SKU {self.target}" if self.scope == SKU_SCOPE else (
            "every part" if self.target == EVERY_PART else f"part type {self.target!r}"
        )
        beat = ""
        if self.strategy == BEAT_LOWEST_BY:
            beat = f" {_money(self.beat_by_amount)}" if self.beat_by_amount is not None else f" {_pct(self.beat_by_percent or Decimal(0))}"
        return f"{self.strategy}{beat} (rule for {who})"


def _decimal(value: Any, what: str, *, percent: bool = False) -> Decimal:
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if percent and text.endswith("%"):
            text = text[:-1].strip()
        if not text:
            raise PricingRuleError(f"{what} is required")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise PricingRuleError(f"{what}: {value!r} is not a number") from None
    else:
        raise PricingRuleError(f"{what}: {value!r} is not a number")
    if not number.is_finite():
        raise PricingRuleError(f"{what}: {value!r} is not a finite number")
    if number != number.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP):
        raise PricingRuleError(f"{what}: {value!r} has more than 4 decimal places")
    return number


def _in_range(number: Decimal, what: str, low: Decimal, high: Decimal | None, *, high_open: bool = False) -> Decimal:
    if number < low or (high is not None and (number >= high if high_open else number > high)):
        bound = "" if high is None else (f" and below {high}" if high_open else f" and at most {high}")
        raise PricingRuleError(f"{what}: {number} must be at least {low}{bound}")
    return number


def parse_beat_by(value: Any) -> tuple[Decimal | None, Decimal | None]:
    """`0.50` (an amount) or `2%` (a percent) -> (amount, percent)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        pct = _in_range(_decimal(value, "beat_by", percent=True), "beat_by percent", Decimal(0), HUNDRED, high_open=True)
        return None, pct
    return _in_range(_decimal(value, "beat_by"), "beat_by amount", Decimal(0), None), None


def make_rule(
    *,
    sku: str | None = None,
    part_type: str | None = None,
    strategy: str,
    min_margin_percent: Any,
    referral_fee_percent: Any,
    fulfillment_fee: Any = Decimal(0),
    beat_by: Any = None,
    currency: str | None = None,
    source: str = "cli",
    updated_by: str = "unknown",
    updated_at: datetime | None = None,
) -> PricingRule:
    """A validated rule for one SKU or one part type (`*`: every part). Raises PricingRuleError
    naming the value that is wrong and what is allowed."""
    sku = (sku or "").strip() or None
    part_type = (part_type or "").strip() or None
    if (sku is None) == (part_type is None):
        raise PricingRuleError(
            "name either a SKU or a part type (`*` for every part), not both and not neither"
        )
    strategy = (strategy or "").strip().lower()
    if strategy not in STRATEGIES:
        raise PricingRuleError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    amount = percent = None
    blank = beat_by is None or (isinstance(beat_by, str) and not beat_by.strip())
    if strategy == BEAT_LOWEST_BY:
        if blank:
            raise PricingRuleError("beat_lowest_by needs beat_by: an amount (0.50) or a percent (2%)")
        amount, percent = parse_beat_by(beat_by)
    elif not blank:
        raise PricingRuleError(f"beat_by applies to beat_lowest_by only, not to {strategy}")
    margin = _in_range(_decimal(min_margin_percent, "min_margin_percent", percent=True), "min_margin_percent", Decimal(0), Decimal(1000))
    referral = _in_range(
        _decimal(referral_fee_percent, "referral_fee_percent", percent=True), "referral_fee_percent", Decimal(0), HUNDRED, high_open=True
    )
    fee_value = Decimal(0) if fulfillment_fee is None or (isinstance(fulfillment_fee, str) and not fulfillment_fee.strip()) else fulfillment_fee
    fee = _in_range(_decimal(fee_value, "fulfillment_fee"), "fulfillment_fee", Decimal(0), None)
    code = (currency or "").strip() or None
    if code is not None and code not in ISO_4217_ACTIVE:
        raise PricingRuleError(f"currency {code!r} is not an ISO 4217 code such as USD, CAD or EUR")
    return PricingRule(
        scope=SKU_SCOPE if sku else PART_TYPE_SCOPE,
        target=sku or part_type,  # type: ignore[arg-type]
        strategy=strategy,
        min_margin_percent=margin,
        referral_fee_percent=referral,
        fulfillment_fee=fee,
        beat_by_amount=amount,
        beat_by_percent=percent,
        currency=code,
        source=source,
        updated_at=updated_at or datetime.now(UTC),
        updated_by=updated_by,
    )


_RULE_FIELDS = ("scope", "target", "strategy", "beat_by_amount", "beat_by_percent", "min_margin_percent",
                "referral_fee_percent", "fulfillment_fee", "currency", "source", "updated_at", "updated_by")


def _upsert_rules(conn: Connection, schema: str, rules: Sequence[PricingRule]) -> None:
    conn.create_table(schema, PRICING_RULES)
    for rule in rules:
        conn.execute(f"DELETE FROM {schema}.{PRICING_RULES.name} WHERE scope = ? AND target = ?", [rule.scope, rule.target])
    frame = table_frame(PRICING_RULES, [{f: getattr(r, f) for f in _RULE_FIELDS} for r in rules])
    conn.load_frame(schema, PRICING_RULES.name, frame)


def _audit(wh: Warehouse, merchant_id: str, actor: str, action: str, details: dict) -> None:
    with wh.connect() as conn:
        record_audit(conn, actor=actor, action=action, merchant_id=merchant_id, details=details)


def set_pricing_rule(wh: Warehouse, merchant_id: str, rule: PricingRule, *, actor: str) -> PricingRule:
    """Store `rule` (replacing the rule of the same SKU or part type), audited. For the CLI:
    `set_pricing_rule(wh, mid, make_rule(sku=..., strategy=..., ...), actor=...)`."""
    validate_merchant_id(merchant_id)
    rule = replace(rule, updated_by=actor)
    with wh.merchant_scope(merchant_id) as conn:
        _upsert_rules(conn, merchant_schema(merchant_id), [rule])
    _audit(wh, merchant_id, actor, "pricing_rule.set", {"scope": rule.scope, "target": rule.target, "strategy": rule.strategy})
    return rule


def delete_pricing_rule(wh: Warehouse, merchant_id: str, *, sku: str | None = None, part_type: str | None = None, actor: str) -> bool:
    """Remove the rule of a SKU or a part type; False when there was none."""
    if (not sku) == (not part_type):
        raise PricingRuleError("name either a SKU or a part type, not both and not neither")
    scope, target = (SKU_SCOPE, sku) if sku else (PART_TYPE_SCOPE, part_type)
    schema = merchant_schema(merchant_id)
    with wh.merchant_scope(merchant_id) as conn:
        if not conn.table_exists(schema, PRICING_RULES.name):
            return False
        removed = conn.execute_count(f"DELETE FROM {schema}.{PRICING_RULES.name} WHERE scope = ? AND target = ?", [scope, target])
    if removed:
        _audit(wh, merchant_id, actor, "pricing_rule.deleted", {"scope": scope, "target": target})
    return bool(removed)


def read_rules(conn: Connection, schema: str) -> list[PricingRule]:
    if not conn.table_exists(schema, PRICING_RULES.name):
        return []
    rows = conn.fetchall(f"SELECT {', '.join(_RULE_FIELDS)} FROM {schema}.{PRICING_RULES.name} ORDER BY scope, target")
    out = []
    for row in rows:
        values = dict(zip(_RULE_FIELDS, row, strict=True))
        for name in ("beat_by_amount", "beat_by_percent", "min_margin_percent", "referral_fee_percent", "fulfillment_fee"):
            if values[name] is not None:
                values[name] = Decimal(values[name])
        out.append(PricingRule(**values))
    return out


def pricing_rules(wh: Warehouse, merchant_id: str) -> list[PricingRule]:
    """The merchant's rules, by scope and target."""
    with wh.merchant_scope(merchant_id) as conn:
        return read_rules(conn, merchant_schema(merchant_id))


# --- rule files -------------------------------------------------------------------------------
RULE_FILE_COLUMNS = ("sku", "part_type", "strategy", "beat_by", "min_margin_percent", "referral_fee_percent",
                     "fulfillment_fee", "currency")
_REQUIRED_FILE_COLUMNS = ("strategy", "min_margin_percent", "referral_fee_percent")


def parse_rules_csv(data: bytes, *, file_name: str, updated_by: str) -> list[PricingRule]:
    """The rules of a `pricing_rules` CSV file (headers case-insensitive, in any order):
    sku | part_type, strategy, beat_by (0.50 or 2%), min_margin_percent, referral_fee_percent,
    fulfillment_fee, currency. All or nothing: any bad row raises PricingRuleError listing every
    bad row by its line number, and no rule of the file is applied."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PricingRuleError(f"{file_name}: not a UTF-8 text file; save the rules as CSV (UTF-8)") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise PricingRuleError(f"{file_name}: empty file; expected a header row with {', '.join(RULE_FILE_COLUMNS)}")
    names = [h.strip().lower() for h in header]
    missing = [c for c in _REQUIRED_FILE_COLUMNS if c not in names] + ([] if {"sku", "part_type"} & set(names) else ["sku or part_type"])
    if missing:
        raise PricingRuleError(f"{file_name}: not a pricing rules file: missing column(s) {', '.join(missing)}")
    unknown = [n for n in names if n and n not in RULE_FILE_COLUMNS]
    if unknown:
        raise PricingRuleError(f"{file_name}: unknown column(s) {', '.join(unknown)}; allowed: {', '.join(RULE_FILE_COLUMNS)}")
    rules: list[PricingRule] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for line, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        row = {n: (cells[i].strip() if i < len(cells) else "") for i, n in enumerate(names) if n}
        try:
            rule = make_rule(
                sku=row.get("sku"), part_type=row.get("part_type"), strategy=row.get("strategy", ""),
                min_margin_percent=row.get("min_margin_percent", ""), referral_fee_percent=row.get("referral_fee_percent", ""),
                fulfillment_fee=row.get("fulfillment_fee"), beat_by=row.get("beat_by"), currency=row.get("currency"),
                source=f"file:{file_name}", updated_by=updated_by,
            )
        except PricingRuleError as exc:
            problems.append(f"line {line}: {exc}")
            continue
        key = (rule.scope, rule.target)
        if key in seen:
            problems.append(f"line {line}: a second rule for {rule.scope} {rule.target!r} (first on line {seen[key]})")
            continue
        seen[key] = line
        rules.append(rule)
    if problems:
        raise PricingRuleError(f"{file_name}: {len(problems)} bad row(s), nothing applied:\n  " + "\n  ".join(problems))
    if not rules:
        raise PricingRuleError(f"{file_name}: no rules in the file")
    return rules


def import_pricing_rules_file(wh: Warehouse, merchant_id: str, path: Path, *, actor: str) -> list[PricingRule]:
    """Apply a pricing rules CSV file (all or nothing): each row replaces the rule of its SKU or
    part type; other rules stay. Records the file's sha256 so the inbox import skips it later."""
    data = Path(path).read_bytes()
    rules = parse_rules_csv(data, file_name=Path(path).name, updated_by=actor)
    digest = hashlib.sha256(data).hexdigest()
    schema = merchant_schema(merchant_id)
    with wh.merchant_scope(merchant_id) as conn:
        _upsert_rules(conn, schema, rules)
        conn.create_table(schema, PRICING_RULE_FILES)
        conn.replace_rows(
            schema, PRICING_RULE_FILES.name, {"sha256": digest},
            table_frame(PRICING_RULE_FILES, [{"sha256": digest, "file_name": Path(path).name, "rules": len(rules), "loaded_at": datetime.now(UTC)}]),
        )
    _audit(wh, merchant_id, actor, "pricing_rules.imported", {"file": Path(path).name, "sha256": digest, "rules": len(rules)})
    return rules


def import_inbox_rule_files(wh: Warehouse, merchant_id: str, folder: Path, *, actor: str) -> dict[str, int]:
    """Apply the CSV files of the merchant's `pricing_rules` inbox folder not applied before (by
    content: the same file applies once), oldest first (mtime, then name): file name -> rules
    applied. A bad file raises PricingRuleError and applies nothing; the files before it stay
    applied."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    schema = merchant_schema(merchant_id)
    with wh.merchant_scope(merchant_id) as conn:
        done = {r[0] for r in conn.fetchall(f"SELECT sha256 FROM {schema}.{PRICING_RULE_FILES.name}")} if conn.table_exists(
            schema, PRICING_RULE_FILES.name
        ) else set()
    applied: dict[str, int] = {}
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".csv" and not p.name.startswith((".", "~$"))),
        key=lambda p: (p.stat().st_mtime, p.name),
    )
    for path in files:
        if hashlib.sha256(path.read_bytes()).hexdigest() in done:
            continue
        applied[path.name] = len(import_pricing_rules_file(wh, merchant_id, path, actor=actor))
    return applied


def rule_for(rules: Iterable[PricingRule], sku: str, part_type: str | None) -> PricingRule | None:
    """The rule that applies to a SKU: its own, else its part type's, else every part's (`*`)."""
    by_key = {(r.scope, r.target): r for r in rules}
    return (
        by_key.get((SKU_SCOPE, sku))
        or (by_key.get((PART_TYPE_SCOPE, part_type)) if part_type else None)
        or by_key.get((PART_TYPE_SCOPE, EVERY_PART))
    )


# ========================================================================= 3. recommendations
@dataclass(frozen=True)
class Market:
    """Competitor data for one SKU in one marketplace on one day (New condition)."""

    marketplace_id: str | None
    currency: str | None
    buy_box_price: Decimal | None = None
    buy_box_is_mine: bool | None = None
    lowest_price: Decimal | None = None
    lowest_other_price: Decimal | None = None
    my_price: Decimal | None = None
    offer_count: int | None = None
    asin: str | None = None

    @property
    def alone(self) -> bool:
        """The merchant's offer is the only one (the counts include it)."""
        if self.offer_count is not None:
            return self.offer_count <= 1
        return self.lowest_other_price is None and self.my_price is not None and self.buy_box_is_mine is not False


@dataclass(frozen=True)
class Costing:
    """What the catalog version valid on the day says about a SKU."""

    currency: str | None
    landed_cost: Decimal | None = None
    unit_cost: Decimal | None = None
    map_price: Decimal | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    part_type: str | None = None
    valid_from: datetime | None = None

    @property
    def cost(self) -> tuple[Decimal | None, str | None]:
        if self.landed_cost is not None:
            return self.landed_cost, "landed_cost"
        if self.unit_cost is not None:
            return self.unit_cost, "unit_cost"
        return None, None


@dataclass(frozen=True)
class Bounds:
    floor_exact: Decimal  # max(cost floor, MAP, min_price, one cent), unrounded
    cost_floor: Decimal  # (cost*(1+m) + f) / (1 - r)
    floor: Decimal  # floor_exact rounded up to the cent
    ceiling_exact: Decimal | None
    ceiling: Decimal | None  # max_price rounded down to the cent
    raised_by: str  # what set the floor: cost, MAP, min_price or one cent


def price_bounds(cost: Decimal, rule: PricingRule, costing: Costing) -> Bounds:
    m = rule.min_margin_percent / HUNDRED
    r = rule.referral_fee_percent / HUNDRED
    cost_floor = _UP.divide(_UP.add(_UP.multiply(cost, _UP.add(Decimal(1), m)), rule.fulfillment_fee), _UP.subtract(Decimal(1), r))
    candidates = [(cost_floor, "cost"), (MIN_PRICE, "one cent")]
    if costing.map_price is not None:
        candidates.append((costing.map_price, "the MAP price"))
    if costing.min_price is not None:
        candidates.append((costing.min_price, "the catalog min_price"))
    floor_exact, raised_by = max(candidates, key=lambda c: c[0])
    ceiling_exact = costing.max_price
    return Bounds(
        floor_exact=floor_exact,
        cost_floor=cost_floor,
        floor=floor_exact.quantize(CENT, rounding=ROUND_CEILING),
        ceiling_exact=ceiling_exact,
        ceiling=None if ceiling_exact is None else ceiling_exact.quantize(CENT, rounding=ROUND_FLOOR),
        raised_by=raised_by,
    )


@dataclass(frozen=True)
class Recommendation:
    sku: str
    status: str
    reason: str
    marketplace_id: str | None = None
    asin: str | None = None
    currency: str | None = None
    current_price: Decimal | None = None
    current_price_source: str | None = None
    competitor_reference: Decimal | None = None
    reference_kind: str | None = None
    offer_count: int | None = None
    recommended_price: Decimal | None = None
    floor_price: Decimal | None = None
    ceiling_price: Decimal | None = None
    cost: Decimal | None = None
    cost_currency: str | None = None
    cost_basis: str | None = None
    strategy: str | None = None
    rule_scope: str | None = None
    rule_target: str | None = None
    catalog_valid_from: datetime | None = None

    @property
    def price_change(self) -> Decimal | None:
        if self.recommended_price is None or self.current_price is None:
            return None
        return self.recommended_price - self.current_price

    def row(self) -> dict[str, Any]:
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out["price_change"] = self.price_change
        return out


def _reference(strategy: str, rule: PricingRule, market: Market) -> tuple[Decimal | None, str | None, str]:
    """(competitor reference, its kind, words) for a strategy; None when the data lacks it."""
    if strategy == MATCH_BUY_BOX:
        if market.buy_box_price is not None:
            holder = "you hold it" if market.buy_box_is_mine else (
                "held by another seller" if market.buy_box_is_mine is False else "holder not reported"
            )
            return market.buy_box_price, "buy_box", f"buy box {_money(market.buy_box_price)} ({holder})"
        lowest = market.lowest_other_price if market.lowest_other_price is not None else market.lowest_price
        if lowest is not None:
            return lowest, "lowest", f"no buy box reported, lowest offer {_money(lowest)}"
        return None, None, "neither a buy-box nor a lowest price is reported"
    # beat_lowest_by: the lowest offer that is not ours; the lowest overall when offers are not
    # listed (it may be ours); the buy box when only getCompetitivePricing answered.
    for value, kind, words in (
        (market.lowest_other_price, "lowest_other", "lowest other offer"),
        (market.lowest_price, "lowest", "lowest offer"),
        (market.buy_box_price, "buy_box", "buy box (no lowest offer reported)"),
    ):
        if value is not None:
            return value, kind, f"{words} {_money(value)}"
    return None, None, "no competitor price is reported"


def recommend(
    sku: str,
    *,
    day: str,
    market: Market | None,
    costing: Costing | None,
    rule: PricingRule | None,
    current: tuple[Decimal, str, str] | None = None,
) -> Recommendation:
    """The recommendation for one SKU (pure). `current` is (price, currency, source)."""
    base: dict[str, Any] = {"sku": sku}
    if current is not None and (market is None or market.currency in (None, current[1])):
        base.update(current_price=current[0], current_price_source=current[2])
    if market is not None:
        base.update(marketplace_id=market.marketplace_id, asin=market.asin, currency=market.currency, offer_count=market.offer_count)
    if rule is not None:
        base.update(strategy=rule.strategy, rule_scope=rule.scope, rule_target=rule.target)
    cost, basis = costing.cost if costing is not None else (None, None)
    if costing is not None:
        base.update(cost=cost, cost_currency=costing.currency, cost_basis=basis, catalog_valid_from=costing.valid_from)

    def no(status: str, reason: str, **more: Any) -> Recommendation:
        return Recommendation(status=status, reason=reason, **{**base, **more})

    if market is None:
        return no(NO_COMPETITOR, f"no competitive price for SKU {sku} on {day}: the Amazon pricing extract "
                  "returned nothing usable for it (not listed, or its record was quarantined); no recommendation")
    if costing is None:
        return no(NO_COST, f"SKU {sku} is not in the catalog valid on {day}, so it has no cost; no recommendation")
    if cost is None:
        return no(NO_COST, f"the catalog has neither landed_cost nor unit_cost for SKU {sku}; no recommendation")
    if rule is None:
        where = f"its part type {costing.part_type!r}, " if costing.part_type else ""
        return no(NO_RULE, f"no pricing rule for SKU {sku}, {where}or every part (`*`); no default is applied, "
                  "as guessed fees could price at a loss: set one with `illuma merchants pricing-rule`")
    # A day with offer counts but no price names no currency: the merchant's own price does.
    currency = market.currency or (current[1] if current is not None else None)
    if currency is None:
        return no(NO_REFERENCE, f"the pricing data for SKU {sku} has offer counts but no price, and no offer or "
                  "order of yours names the marketplace's currency; no recommendation")
    base["currency"] = currency
    if costing.currency != currency:
        return no(CURRENCY_MISMATCH, f"the catalog prices SKU {sku} in {costing.currency or 'no stated currency'} "
                  f"but the marketplace in {currency}; no currency conversion is made, so no recommendation")
    if rule.currency is not None and rule.currency != currency and (rule.fulfillment_fee or rule.beat_by_amount):
        return no(CURRENCY_MISMATCH, f"the rule's amounts are in {rule.currency} but the marketplace prices in "
                  f"{currency}; no currency conversion is made, so no recommendation")
    bounds = price_bounds(cost, rule, costing)
    base.update(floor_price=bounds.floor, ceiling_price=bounds.ceiling)
    floor_words = (
        f"floor {_money(bounds.floor)} = ({basis} {_money(cost)} x (1 + {_pct(rule.min_margin_percent)} margin) + "
        f"{_money(rule.fulfillment_fee)} fulfillment fee) / (1 - {_pct(rule.referral_fee_percent)} referral fee)"
        if bounds.raised_by == "cost" else
        f"floor {_money(bounds.floor)} set by {bounds.raised_by} (cost floor "
        f"{_money(bounds.cost_floor.quantize(CENT, rounding=ROUND_CEILING))})"
    )
    ceiling_words = f"ceiling {_money(bounds.ceiling)} (max_price)" if bounds.ceiling is not None else "no ceiling (no max_price)"
    if bounds.ceiling is not None and bounds.floor > bounds.ceiling:
        return no(FLOOR_ABOVE_CEILING, f"{floor_words} is above the {ceiling_words}: no price meets both; no recommendation")

    strategy = rule.strategy
    if strategy == STAY_AT_MAX_WHEN_ALONE:
        if market.alone:
            if bounds.ceiling is None:
                return no(NO_CEILING, f"{rule.describe()}: your offer is the only one, but the catalog has no "
                          f"max_price to stay at; no recommendation")
            return Recommendation(
                status=RECOMMENDED, recommended_price=bounds.ceiling, competitor_reference=None, reference_kind="alone",
                reason=f"{rule.describe()}: your offer is the only one ({market.offer_count if market.offer_count is not None else 'no other listed'}), "
                f"so stay at the {ceiling_words}; {floor_words}",
                **base,
            )
        strategy = MATCH_BUY_BOX  # with competition, hold the buy-box price
    reference, kind, words = _reference(strategy, rule, market)
    if reference is None:
        return no(NO_REFERENCE, f"{rule.describe()}: {words} for SKU {sku} on {day}; no recommendation")
    if strategy == BEAT_LOWEST_BY and rule.strategy == BEAT_LOWEST_BY:
        if rule.beat_by_amount is not None:
            target, how = reference - rule.beat_by_amount, f"{_money(reference)} - {_money(rule.beat_by_amount)} = "
        else:
            pct = rule.beat_by_percent or Decimal(0)
            target, how = reference * (1 - pct / HUNDRED), f"{_money(reference)} - {_pct(pct)} = "
    else:
        target, how = reference, "match it at "
    rounded = target.quantize(CENT, rounding=ROUND_HALF_UP)
    price, clamp = rounded, ""
    if price < bounds.floor:
        price, clamp = bounds.floor, f", raised to the floor ({_money(rounded)} would be below it)"
    elif bounds.ceiling is not None and price > bounds.ceiling:
        price, clamp = bounds.ceiling, f", lowered to the ceiling ({_money(rounded)} would be above it)"
    prefix = f"{rule.describe()}:" if rule.strategy == strategy else f"{rule.describe()}: other offers compete, so match the buy box;"
    return Recommendation(
        status=RECOMMENDED, recommended_price=price, competitor_reference=reference, reference_kind=kind,
        reason=f"{prefix} {words}; {how}{_money(rounded)}{clamp}; {floor_words}; {ceiling_words}",
        **base,
    )


# --- loading ----------------------------------------------------------------------------------
def _markets(conn: Connection, schema: str, day: str) -> dict[str, list[Market]]:
    """SKU -> its Market per marketplace on `day`: the New condition, else `any`."""
    if not conn.table_exists(schema, COMPETITIVE_PRICES.name):
        return {}
    rows = conn.fetchall(
        f"SELECT sku, marketplace_id, condition, currency, buy_box_price, buy_box_is_mine, lowest_price, "
        f"lowest_other_price, my_price, offer_count, asin FROM {schema}.{COMPETITIVE_PRICES.name} "
        "WHERE price_date = ? AND channel = ? AND sku IS NOT NULL AND condition IN ('new', 'any')",
        [day, CHANNEL],
    )
    chosen: dict[tuple[str, str], tuple] = {}
    for row in rows:
        key = (row[0], row[1])
        if key not in chosen or row[2] == "new":
            chosen[key] = row
    out: dict[str, list[Market]] = {}
    for (sku, marketplace), r in sorted(chosen.items()):
        out.setdefault(sku, []).append(
            Market(marketplace, r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10])
        )
    return out


def _current_prices(conn: Connection, schema: str, skus: Sequence[str], day: str) -> dict[tuple[str, str | None], tuple[Decimal, str, str]]:
    """(SKU, marketplace) -> (unit price, currency, 'last_order') of the latest Amazon order line
    purchased by the end of `day` (cancelled lines and orders excluded)."""
    if not skus or not (conn.table_exists(schema, ORDERS.name) and conn.table_exists(schema, ORDER_LINES.name)):
        return {}
    end = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
    rows = conn.fetchall(
        f"SELECT sku, marketplace_id, unit_price, currency FROM ("
        f"SELECT l.sku, o.marketplace_id, l.unit_price, l.currency, ROW_NUMBER() OVER ("
        f"PARTITION BY l.sku, o.marketplace_id ORDER BY o.purchased_at DESC, l.marketplace_order_id DESC) AS n "
        f"FROM {schema}.{ORDER_LINES.name} l JOIN {schema}.{ORDERS.name} o "
        "ON o.channel = l.channel AND o.marketplace_order_id = l.marketplace_order_id "
        f"WHERE l.channel = ? AND o.purchased_at < ? AND o.status <> 'cancelled' AND l.line_status <> 'cancelled' "
        f"AND l.unit_price IS NOT NULL AND l.currency IS NOT NULL AND {any_of(conn.dialect, 'l.sku')}) t WHERE n = 1",
        [CHANNEL, end, list(skus)],
    )
    return {(sku, mp): (Decimal(price), currency, "last_order") for sku, mp, price, currency in rows}


def _inventory_skus(conn: Connection, merchant_id: str, day: str) -> set[str]:
    """The SKUs of the day's Amazon inventory extract: those the pricing extract asked about."""
    skus = set()
    for _, text, _ in raw_payloads(conn, merchant_id, CHANNEL, "inventory", day):
        try:
            sku = normalize.loads(text).get("sellerSku")
        except (ValueError, AttributeError):
            continue
        if isinstance(sku, str) and sku:
            skus.add(sku)
    return skus


def _costings(conn: Connection, schema: str, day: str) -> dict[str, Costing]:
    """SKU -> its costing from the catalog version in force when the day ends (a cost changed
    during the day counts from that day; a SKU's first version stands for the time before it)."""
    return {
        sku: Costing(
            currency=part.cost_currency, landed_cost=part.landed_cost, unit_cost=part.unit_cost,
            map_price=part.map_price, min_price=part.min_price, max_price=part.max_price,
            part_type=part.part_type, valid_from=part.valid_from,
        )
        for sku, part in parts_valid_on(conn, schema, catalog_day_end(day)).items()
    }


def recommendations_for_day(
    *,
    day: str,
    skus: Iterable[str],
    markets: Mapping[str, Sequence[Market]],
    costings: Mapping[str, Costing],
    rules: Sequence[PricingRule],
    last_orders: Mapping[tuple[str, str | None], tuple[Decimal, str, str]],
) -> list[Recommendation]:
    """One recommendation per SKU and marketplace (one row without a marketplace for a SKU with
    no competitor data). The current price is the merchant's own offer in the pricing data (its
    listed offer, else the buy box when it holds it), else its latest Amazon order line's unit
    price in that marketplace."""
    out = []
    for sku in sorted(set(skus) | set(markets)):
        costing = costings.get(sku)
        rule = rule_for(rules, sku, costing.part_type if costing else None)
        for market in markets.get(sku) or [None]:
            current = None
            if market is not None and market.my_price is not None:
                current = (market.my_price, market.currency, "own_offer")
            elif market is not None and market.buy_box_is_mine and market.buy_box_price is not None:
                current = (market.buy_box_price, market.currency, "own_buy_box")
            else:
                current = last_orders.get((sku, market.marketplace_id if market else None))
                if current is None and market is None:
                    current = next((v for (s, _), v in sorted(last_orders.items(), key=lambda kv: str(kv[0])) if s == sku), None)
            out.append(recommend(sku, day=day, market=market, costing=costing, rule=rule, current=current))
    return out


@dataclass
class RecommendationsLoaded:
    by_status: dict[str, int]
    rows: int

    def metadata(self) -> dict[str, Any]:
        return {"rows": self.rows, **{s: self.by_status.get(s, 0) for s in STATUSES}}


def load_recommendations_partition(wh: Warehouse, merchant_id: str, day: str, run_id: str) -> RecommendationsLoaded:
    """Replace the merchant's recommendations of `day`, from that day's competitive prices, the
    catalog version valid on the day, the merchant's pricing rules and its order lines."""
    schema = merchant_schema(merchant_id)
    with wh.merchant_scope(merchant_id) as conn:
        markets = _markets(conn, schema, day)
        skus = _inventory_skus(conn, merchant_id, day) | set(markets)
        costings = _costings(conn, schema, day)
        rules = read_rules(conn, schema)
        last_orders = _current_prices(conn, schema, sorted(skus), day)
    recs = recommendations_for_day(day=day, skus=skus, markets=markets, costings=costings, rules=rules, last_orders=last_orders)
    loaded_at = datetime.now(UTC)
    rows = [{**r.row(), "recommendation_date": day, "channel": CHANNEL, "loaded_at": loaded_at, "run_id": run_id} for r in recs]
    frame = table_frame(RECOMMENDATIONS, rows)
    with wh.merchant_scope(merchant_id) as conn:
        conn.create_table(schema, RECOMMENDATIONS)
        conn.replace_rows(schema, RECOMMENDATIONS.name, {"recommendation_date": day}, frame)
    by_status: dict[str, int] = {}
    for r in recs:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    return RecommendationsLoaded(by_status, len(recs))



def recommendations_out_of_bounds(wh: Warehouse, merchant_id: str, day: str) -> int:
    """How many of the day's recommended prices lie outside their [floor, ceiling] (must be 0)."""
    schema = merchant_schema(merchant_id)
    with wh.merchant_scope(merchant_id) as conn:
        if not conn.table_exists(schema, RECOMMENDATIONS.name):
            return 0
        row = conn.fetchone(
            f"SELECT count(*) FROM {schema}.{RECOMMENDATIONS.name} WHERE recommendation_date = ? "
            "AND recommended_price IS NOT NULL AND (floor_price IS NULL OR recommended_price < floor_price "
            "OR recommended_price > ceiling_price)",
            [day],
        )
    return int(row[0]) if row else 0


__all__ = [
    "COMPETITIVE_PRICES", "PRICING_RULES", "PRICING_RULE_FILES", "RECOMMENDATIONS", "STRATEGIES", "STATUSES",
    "Bounds", "Costing", "Market", "PricingRecordError", "PricingRule", "PricingRuleError", "Recommendation",
    "competitive_price_rows", "competitive_quotes", "delete_pricing_rule", "import_inbox_rule_files",
    "import_pricing_rules_file", "load_competitive_prices_partition", "load_recommendations_partition",
    "make_rule", "parse_rules_csv", "price_bounds", "pricing_rules", "read_rules", "recommend",
    "recommendations_for_day", "recommendations_out_of_bounds", "rule_for", "set_pricing_rule",
]
