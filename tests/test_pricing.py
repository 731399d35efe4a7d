"""Repricing domain: competitive price normalization, pricing rules, and the recommendation math."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from illuma_pipelines import normalize
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.pricing import (
    BEAT_LOWEST_BY,
    CURRENCY_MISMATCH,
    FLOOR_ABOVE_CEILING,
    MATCH_BUY_BOX,
    NO_CEILING,
    NO_COMPETITOR,
    NO_COST,
    NO_REFERENCE,
    NO_RULE,
    PRICING_RULES,
    RECOMMENDED,
    STAY_AT_MAX_WHEN_ALONE,
    STRATEGIES,
    Costing,
    Market,
    PricingRuleError,
    competitive_price_rows,
    competitive_quotes,
    delete_pricing_rule,
    import_inbox_rule_files,
    import_pricing_rules_file,
    make_rule,
    parse_rules_csv,
    price_bounds,
    pricing_rules,
    recommend,
    recommendations_for_day,
    rule_for,
    set_pricing_rule,
)
from illuma_pipelines.registry import add_merchant

FIXTURES = Path(__file__).parent / "fixtures"
DAY = "2026-11-20"
US = "ATVPDKIKX0DER"
D = Decimal


def _payload(name: str):
    return normalize.loads((FIXTURES / "pricing" / name).read_text())["payload"]


def _rule(strategy=MATCH_BUY_BOX, **kw):
    kw.setdefault("min_margin_percent", "20")
    kw.setdefault("referral_fee_percent", "15")
    kw.setdefault("fulfillment_fee", "3.00")
    return make_rule(sku=kw.pop("sku", "SKU-1"), strategy=strategy, **kw)


def _market(**kw):
    kw.setdefault("marketplace_id", US)
    kw.setdefault("currency", "USD")
    return Market(**kw)


def _costing(**kw):
    kw.setdefault("currency", "USD")
    return Costing(**kw)


# ------------------------------------------------------------------------ competitive prices
def _rows_by(rows, *keys):
    return {tuple(r[k] for k in keys): r for r in rows}


def test_competitive_pricing_entries_give_buy_box_counts_and_conditions():
    rows, rejects = competitive_price_rows(_payload("competitive_pricing_us.json"), [None] * 4)
    by = _rows_by(rows, "sku", "condition")
    new = by[("ACD-41-993", "new")]
    # Landed price (item 26.49 + shipping 4.99); the B2B quantity-tier price of 24.10 is left out.
    assert (new["buy_box_price"], new["buy_box_is_mine"], new["offer_count"], new["currency"]) == (D("31.48"), False, 7, "USD")
    assert by[("ACD-41-993", "used")]["buy_box_price"] == D("18.75")
    assert by[("ACD-41-993", "any")]["offer_count"] == 9 and by[("ACD-41-993", "any")]["buy_box_price"] is None
    # No `condition`: CompetitivePriceId 1 is the New buy box; the merchant holds it.
    assert (by[("STH-BRK-0457", "new")]["buy_box_price"], by[("STH-BRK-0457", "new")]["buy_box_is_mine"]) == (D("64.95"), True)
    # Alone: one offer and no competitive price.
    alone = by[("KOH-25-050-34", "new")]
    assert (alone["offer_count"], alone["buy_box_price"], alone["currency"]) == (1, None, None)
    assert rejects == [(3, "pricing status 'ClientError'")]
    assert {r["marketplace_id"] for r in rows} == {US}


def test_both_offers_payload_shapes_normalize_to_the_same_columns():
    current = competitive_quotes(_payload("listing_offers_current.json"))
    legacy = competitive_quotes(_payload("listing_offers_legacy.json"))
    (c,), (lg,) = current, legacy
    # `marketplaceId` (current model) and `MarketplaceID` (older) name the same marketplace.
    assert c.marketplace_id == lg.marketplace_id == US
    assert (c.sku, c.condition, c.source) == ("DEN-234-4209", "new", "getListingOffers")
    assert (c.buy_box_price, c.buy_box_is_mine) == (D("47.20"), False)
    # Lowest by fulfillment channel; FBM landed = 38.49 + 7.49; the B2B 41.00 is left out.
    assert (c.lowest_price, c.lowest_price_fba, c.lowest_price_fbm) == (D("45.98"), D("47.20"), D("45.98"))
    assert (c.my_price, c.lowest_other_price) == (D("49.99"), D("45.98"))
    assert (c.offer_count, c.offer_count_fba, c.offer_count_fbm) == (4, 2, 2)
    # The older example: no OfferCount, so the total; the winning offer is the merchant's own.
    assert (lg.offer_count, lg.buy_box_is_mine, lg.buy_box_price, lg.my_price) == (1, True, D("12.99"), D("12.99"))
    assert lg.lowest_other_price is None


def test_the_published_examples_normalize():
    amazon = FIXTURES / "amazon"
    entries = []
    for name in ("amazon_getCompetitivePricing_sandbox_2_sku.json", "amazon_getCompetitivePricing_sandbox_3_asin_nocompetitive.json"):
        entries += normalize.loads((amazon / name).read_text())["payload"]
    entries.append(normalize.loads((amazon / "amazon_getListingOffers_sandbox_1.json").read_text())["payload"])
    rows, rejects = competitive_price_rows(entries, [None] * len(entries))
    assert rejects == []
    by = _rows_by([r for r in rows if r["sku"]], "sku", "source")
    assert by[("NABetaASINB00551Q3CS", "getCompetitivePricing")]["offer_count"] == 402
    # The listing offers example (MarketplaceID, no OfferCount) joins the same SKU's quote.
    merged = by[("NABetaASINB00V5DG6IQ", "getCompetitivePricing+getListingOffers")]
    assert (merged["asin"], merged["my_price"], merged["lowest_price_fbm"]) == ("B00V5DG6IQ", D("10.00"), D("10.00"))
    # "New" and "Any" counts without prices (the no-competitive example, by ASIN).
    assert {(r["asin"], r["condition"]) for r in rows if r["sku"] is None} >= {("B00V5DG6IQ", "new"), ("B00V5DG6IQ", "any")}


def test_malformed_records_are_rejected_by_position_with_their_reason():
    bad = normalize.loads((FIXTURES / "pricing" / "malformed_records.json").read_text())
    good = _payload("competitive_pricing_ca.json")
    odd_shape = {"status": "Success", "SellerSKU": "ODD-1", "Product": {
        "Identifiers": {"MarketplaceASIN": {"MarketplaceId": US, "ASIN": "B0ODD00001"}},
        "CompetitivePricing": {"CompetitivePrices": [], "NumberOfOfferListings": ["New: 3"]},
    }}
    records = [good[0], *bad, ["not", "an", "object"], {"payload": good}, ValueError("Expecting value"), odd_shape]
    rows, rejects = competitive_price_rows(records, [None] * len(records))
    assert [(r["sku"], r["currency"]) for r in rows] == [("ACD-41-993", "CAD")]
    reasons = dict(rejects)
    assert sorted(reasons) == list(range(1, len(records)))
    assert "one currency" in reasons[1] and "EUR" in reasons[1]
    assert "no marketplace id" in reasons[2]
    assert "twelve" in reasons[3]
    assert "Count" in reasons[4] and "-3" in reasons[4]
    assert "'string' is not an active ISO 4217" in reasons[5]
    assert "expected a JSON object" in reasons[6]
    assert "whole response body" in reasons[7]
    assert "not JSON" in reasons[8]
    assert reasons[9].startswith("unexpected shape: AttributeError")


def test_two_records_of_one_sku_in_two_currencies_quarantine_the_later():
    us = _payload("competitive_pricing_us.json")[0]
    eur = copy.deepcopy(us)
    for price in eur["Product"]["CompetitivePricing"]["CompetitivePrices"]:
        for money in price["Price"].values():
            money["CurrencyCode"] = "EUR"
    rows, rejects = competitive_price_rows([us, eur], [None, None])
    assert [p for p, _ in rejects] == [1] and "USD and EUR" in rejects[0][1]
    assert ("ACD-41-993", "new") not in _rows_by(rows, "sku", "condition")


# ------------------------------------------------------------------------------ the floor
def test_floor_solves_for_the_referral_fee_on_the_price():
    rule = _rule(min_margin_percent="20", referral_fee_percent="15", fulfillment_fee="3.00")
    bounds = price_bounds(D("10.00"), rule, _costing(landed_cost=D("10.00")))
    # (10.00 x 1.20 + 3.00) / 0.85 = 17.647..., up to 17.65
    assert bounds.floor == D("17.65") and bounds.raised_by == "cost"
    net = bounds.floor * (1 - D("0.15")) - D("3.00")
    assert net >= D("12.00")  # the 20 % margin over landed cost is kept after the fees
    # Rounded to the nearest cent (17.65 -> 17.64) the margin would be lost: the floor rounds up.
    assert D("17.64") * D("0.85") - 3 < 12


def test_floor_is_raised_to_map_and_min_price_and_ceiling_rounds_down():
    rule = _rule(min_margin_percent="0", referral_fee_percent="0", fulfillment_fee="0")
    costing = _costing(landed_cost=D("5"), map_price=D("19.99"), min_price=D("18"), max_price=D("29.9999"))
    bounds = price_bounds(D("5"), rule, costing)
    assert (bounds.floor, bounds.raised_by, bounds.ceiling) == (D("19.99"), "the MAP price", D("29.99"))
    bounds = price_bounds(D("5"), rule, _costing(landed_cost=D("5"), min_price=D("21.001")))
    assert (bounds.floor, bounds.raised_by, bounds.ceiling) == (D("21.01"), "the catalog min_price", None)


# ----------------------------------------------------------------------- worked examples
def test_match_buy_box_worked_example():
    market = _market(buy_box_price=D("31.48"), buy_box_is_mine=False, offer_count=7, my_price=D("34.99"))
    rec = recommend("SKU-1", day=DAY, market=market, costing=_costing(landed_cost=D("14.20"), max_price=D("45")),
                    rule=_rule(), current=(D("34.99"), "USD", "own_offer"))
    # floor (14.20 x 1.2 + 3) / 0.85 = 23.576... -> 23.58
    assert (rec.status, rec.recommended_price, rec.floor_price, rec.ceiling_price) == (RECOMMENDED, D("31.48"), D("23.58"), D("45.00"))
    assert (rec.competitor_reference, rec.reference_kind, rec.price_change) == (D("31.48"), "buy_box", D("-3.51"))
    assert "buy box 31.48 (held by another seller)" in rec.reason and "landed_cost 14.20" in rec.reason


def test_match_buy_box_is_raised_to_the_floor_and_lowered_to_the_ceiling():
    rule = _rule()
    low = recommend("SKU-1", day=DAY, market=_market(buy_box_price=D("19.99")), costing=_costing(landed_cost=D("14.20")), rule=rule)
    assert (low.recommended_price, low.floor_price) == (D("23.58"), D("23.58"))
    assert "raised to the floor (19.99 would be below it)" in low.reason
    high = recommend("SKU-1", day=DAY, market=_market(buy_box_price=D("99")), costing=_costing(landed_cost=D("14.2"), max_price=D("40")), rule=rule)
    assert high.recommended_price == D("40.00") and "lowered to the ceiling" in high.reason


def test_beat_lowest_by_an_amount_and_by_a_percent():
    market = _market(buy_box_price=D("47.20"), lowest_price=D("45.98"), lowest_other_price=D("45.98"), my_price=D("49.99"), offer_count=4)
    costing = _costing(unit_cost=D("20.00"))
    by_amount = recommend("SKU-1", day=DAY, market=market, costing=costing, rule=_rule(BEAT_LOWEST_BY, beat_by="0.50"))
    assert (by_amount.recommended_price, by_amount.reference_kind, by_amount.cost_basis) == (D("45.48"), "lowest_other", "unit_cost")
    by_pct = recommend("SKU-1", day=DAY, market=market, costing=costing, rule=_rule(BEAT_LOWEST_BY, beat_by="2%"))
    # 45.98 x 0.98 = 45.0604 -> 45.06 (half-up)
    assert by_pct.recommended_price == D("45.06") and "45.98 - 2%" in by_pct.reason
    # Half-up on an exact half cent: 10.005 -> 10.01.
    half = recommend("SKU-1", day=DAY, market=_market(lowest_other_price=D("10.015")), costing=_costing(unit_cost=D("1")),
                     rule=_rule(BEAT_LOWEST_BY, beat_by="0.01", min_margin_percent="0", referral_fee_percent="0", fulfillment_fee="0"))
    assert half.recommended_price == D("10.01")


def test_beat_lowest_falls_back_to_the_buy_box_when_no_lowest_is_reported():
    rec = recommend("SKU-1", day=DAY, market=_market(buy_box_price=D("31.48")), costing=_costing(unit_cost=D("5")),
                    rule=_rule(BEAT_LOWEST_BY, beat_by="1"))
    assert (rec.recommended_price, rec.reference_kind) == (D("30.48"), "buy_box")


def test_stay_at_max_when_alone_and_when_not():
    rule = _rule(STAY_AT_MAX_WHEN_ALONE)
    costing = _costing(landed_cost=D("30"), max_price=D("89.95"))
    alone = recommend("SKU-1", day=DAY, market=_market(offer_count=1), costing=costing, rule=rule)
    assert (alone.status, alone.recommended_price, alone.reference_kind) == (RECOMMENDED, D("89.95"), "alone")
    crowded = recommend("SKU-1", day=DAY, market=_market(offer_count=3, buy_box_price=D("74.50")), costing=costing, rule=rule)
    assert (crowded.recommended_price, crowded.reference_kind) == (D("74.50"), "buy_box")
    assert "other offers compete, so match the buy box" in crowded.reason
    no_max = recommend("SKU-1", day=DAY, market=_market(offer_count=1), costing=_costing(landed_cost=D("30")), rule=rule)
    assert (no_max.status, no_max.recommended_price) == (NO_CEILING, None)


def test_no_cost_no_competitor_no_rule_give_no_recommendation_and_say_why():
    rule, market = _rule(), _market(buy_box_price=D("20"))
    no_market = recommend("SKU-1", day=DAY, market=None, costing=_costing(landed_cost=D("5")), rule=rule)
    assert (no_market.status, no_market.recommended_price) == (NO_COMPETITOR, None)
    assert "no competitive price for SKU SKU-1 on 2026-11-20" in no_market.reason
    not_in_catalog = recommend("SKU-1", day=DAY, market=market, costing=None, rule=rule)
    assert (not_in_catalog.status, not_in_catalog.recommended_price) == (NO_COST, None)
    assert "not in the catalog valid on 2026-11-20" in not_in_catalog.reason
    no_cost = recommend("SKU-1", day=DAY, market=market, costing=_costing(max_price=D("50")), rule=rule)
    assert no_cost.status == NO_COST and "neither landed_cost nor unit_cost" in no_cost.reason
    no_rule = recommend("SKU-1", day=DAY, market=market, costing=_costing(unit_cost=D("5"), part_type="brake pads"), rule=None)
    assert no_rule.status == NO_RULE and "'brake pads'" in no_rule.reason and "no default is applied" in no_rule.reason
    counts_only = recommend("SKU-1", day=DAY, market=_market(currency=None, offer_count=4), costing=_costing(unit_cost=D("5")), rule=rule)
    assert counts_only.status == NO_REFERENCE


def test_other_currencies_and_floor_above_ceiling_give_no_recommendation():
    market = _market(currency="CAD", marketplace_id="A2EUQ1WTGCTBG2", buy_box_price=D("42.99"))
    rec = recommend("SKU-1", day=DAY, market=market, costing=_costing(landed_cost=D("10")), rule=_rule())
    assert rec.status == CURRENCY_MISMATCH and "USD" in rec.reason and "CAD" in rec.reason and rec.floor_price is None
    eur_fee = recommend("SKU-1", day=DAY, market=_market(buy_box_price=D("40")), costing=_costing(landed_cost=D("10")),
                        rule=_rule(currency="EUR"))
    assert eur_fee.status == CURRENCY_MISMATCH
    tight = recommend("SKU-1", day=DAY, market=_market(buy_box_price=D("40")),
                      costing=_costing(landed_cost=D("30"), max_price=D("35")), rule=_rule())
    # floor (30 x 1.2 + 3) / 0.85 = 45.89 > 35.00
    assert (tight.status, tight.floor_price, tight.ceiling_price, tight.recommended_price) == (FLOOR_ABOVE_CEILING, D("45.89"), D("35.00"), None)
    # Bounds that only cross once rounded (floor 10.001 -> 10.01, ceiling 10.009 -> 10.00).
    crossed = recommend("SKU-1", day=DAY, market=_market(buy_box_price=D("10")),
                        costing=_costing(unit_cost=D("10.001"), max_price=D("10.009")),
                        rule=_rule(min_margin_percent="0", referral_fee_percent="0", fulfillment_fee="0"))
    assert crossed.status == FLOOR_ABOVE_CEILING


# ------------------------------------------------------------------- the property test
money = st.decimals(min_value=D("0"), max_value=D("5000"), places=4, allow_nan=False, allow_infinity=False)
price = st.decimals(min_value=D("0.01"), max_value=D("9000"), places=4, allow_nan=False, allow_infinity=False)
pct = st.decimals(min_value=D("0"), max_value=D("99.9999"), places=4, allow_nan=False, allow_infinity=False)


@st.composite
def scenarios(draw):
    strategy = draw(st.sampled_from(STRATEGIES))
    beat_by = None
    if strategy == BEAT_LOWEST_BY:
        beat_by = draw(st.one_of(money.map(str), pct.map(lambda p: f"{p}%")))
    rule = make_rule(
        sku="SKU-1", strategy=strategy, beat_by=beat_by,
        min_margin_percent=draw(st.decimals(min_value=D("0"), max_value=D("1000"), places=4)),
        referral_fee_percent=draw(pct), fulfillment_fee=draw(money),
    )
    market = Market(
        marketplace_id=US, currency="USD",
        buy_box_price=draw(st.none() | price), buy_box_is_mine=draw(st.none() | st.booleans()),
        lowest_price=draw(st.none() | price), lowest_other_price=draw(st.none() | price),
        my_price=draw(st.none() | price), offer_count=draw(st.none() | st.integers(0, 50)),
    )
    costing = Costing(
        currency="USD", landed_cost=draw(st.none() | money), unit_cost=draw(money),
        map_price=draw(st.none() | price), min_price=draw(st.none() | price), max_price=draw(st.none() | price),
    )
    return rule, market, costing


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_a_recommendation_is_never_outside_floor_and_ceiling(scenario):
    rule, market, costing = scenario
    rec = recommend("SKU-1", day=DAY, market=market, costing=costing, rule=rule)
    if rec.status != RECOMMENDED:
        assert rec.recommended_price is None and rec.reason
        return
    p = rec.recommended_price
    assert p == p.quantize(D("0.01"))
    assert rec.floor_price <= p and (rec.ceiling_price is None or p <= rec.ceiling_price)
    # Against the exact bounds, not only the rounded ones.
    cost = costing.landed_cost if costing.landed_cost is not None else costing.unit_cost
    m, r = rule.min_margin_percent / 100, rule.referral_fee_percent / 100
    assert p * (1 - r) - rule.fulfillment_fee >= cost * (1 + m), "the fees and margin are covered"
    for bound in (costing.map_price, costing.min_price):
        assert bound is None or p >= bound
    assert costing.max_price is None or p <= costing.max_price
    assert p >= D("0.01")


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.decimals(min_value=D("0"), max_value=D("9000"), places=2))
def test_whatever_the_competitor_price_the_bounds_hold(scenario, competitor):
    rule, market, costing = scenario
    for field in ("buy_box_price", "lowest_price", "lowest_other_price"):
        m = Market(**{**market.__dict__, field: competitor, "offer_count": 5})
        rec = recommend("SKU-1", day=DAY, market=m, costing=costing, rule=rule)
        if rec.status == RECOMMENDED:
            assert rec.floor_price <= rec.recommended_price
            assert rec.ceiling_price is None or rec.recommended_price <= rec.ceiling_price


# ------------------------------------------------------------------------------ the day
def test_current_price_sources_and_one_row_per_marketplace():
    rules = [make_rule(part_type="*", strategy=MATCH_BUY_BOX, min_margin_percent="10", referral_fee_percent="12")]
    markets = {
        "A": [_market(buy_box_price=D("30"), my_price=D("32"), offer_count=3)],
        "B": [_market(buy_box_price=D("30"), buy_box_is_mine=True), _market(marketplace_id="A2EUQ1WTGCTBG2", currency="CAD", buy_box_price=D("41"))],
        "C": [_market(buy_box_price=D("30"))],
    }
    costings = {s: _costing(unit_cost=D("10")) for s in "ABCD"}
    last = {("C", US): (D("29.50"), "USD", "last_order"), ("D", US): (D("12.00"), "USD", "last_order")}
    recs = recommendations_for_day(day=DAY, skus=["A", "B", "C", "D"], markets=markets, costings=costings, rules=rules, last_orders=last)
    by = {(r.sku, r.marketplace_id): r for r in recs}
    assert len(recs) == 5
    assert (by[("A", US)].current_price, by[("A", US)].current_price_source) == (D("32"), "own_offer")
    assert (by[("B", US)].current_price, by[("B", US)].current_price_source) == (D("30"), "own_buy_box")
    assert by[("B", "A2EUQ1WTGCTBG2")].status == CURRENCY_MISMATCH
    assert (by[("C", US)].current_price, by[("C", US)].current_price_source) == (D("29.50"), "last_order")
    assert (by[("D", None)].status, by[("D", None)].current_price) == (NO_COMPETITOR, D("12.00"))


# ------------------------------------------------------------------------------ the rules
def test_rule_values_are_checked_with_clear_errors():
    ok = make_rule(part_type="brake pads", strategy="beat_lowest_by", beat_by="1.5%", min_margin_percent="12%", referral_fee_percent="15")
    assert (ok.scope, ok.target, ok.beat_by_percent, ok.beat_by_amount, ok.min_margin_percent) == ("part_type", "brake pads", D("1.5"), None, D("12"))
    cases = [
        (dict(strategy="undercut"), "strategy 'undercut' is not one of match_buy_box"),
        (dict(strategy="beat_lowest_by"), "needs beat_by"),
        (dict(beat_by="1"), "beat_by applies to beat_lowest_by only"),
        (dict(referral_fee_percent="100"), "below 100"),
        (dict(referral_fee_percent="ten"), "'ten' is not a number"),
        (dict(min_margin_percent="-5"), "must be at least 0"),
        (dict(fulfillment_fee="3.001234"), "more than 4 decimal places"),
        (dict(fulfillment_fee="-1"), "must be at least 0"),
        (dict(currency="usd"), "not an ISO 4217 code"),
        (dict(sku=None), "name either a SKU or a part type"),
        (dict(part_type="pads"), "not both"),
        (dict(strategy="beat_lowest_by", beat_by="100%"), "below 100"),
    ]
    for change, message in cases:
        args = dict(sku="S", strategy=MATCH_BUY_BOX, min_margin_percent="10", referral_fee_percent="15") | change
        with pytest.raises(PricingRuleError, match=message.replace("(", r"\(")):
            make_rule(**args)


def test_sku_rule_wins_over_part_type_rule_over_every_part():
    every = make_rule(part_type="*", strategy=MATCH_BUY_BOX, min_margin_percent="5", referral_fee_percent="15")
    pads = make_rule(part_type="brake pads", strategy=BEAT_LOWEST_BY, beat_by="0.25", min_margin_percent="10", referral_fee_percent="15")
    own = make_rule(sku="STH-1", strategy=STAY_AT_MAX_WHEN_ALONE, min_margin_percent="10", referral_fee_percent="15")
    rules = [every, pads, own]
    assert rule_for(rules, "STH-1", "brake pads") is own
    assert rule_for(rules, "STH-2", "brake pads") is pads
    assert rule_for(rules, "STH-3", "rotors") is every
    assert rule_for(rules, "STH-3", None) is every
    assert rule_for([pads], "STH-3", "rotors") is None


def test_a_rules_file_is_all_or_nothing_with_every_bad_line_named():
    good = (
        "SKU,Part_Type,Strategy,Beat_By,Min_Margin_Percent,Referral_Fee_Percent,Fulfillment_Fee,Currency\n"
        "STH-BRK-0457,,match_buy_box,,15,15,3.22,USD\n"
        ",brake pads,beat_lowest_by,2%,12,15,0,\n"
        ",*,stay_at_max_when_alone,,10,15,,\n"
    )
    rules = parse_rules_csv(good.encode(), file_name="rules.csv", updated_by="test")
    assert [(r.scope, r.target, r.strategy) for r in rules] == [
        ("sku", "STH-BRK-0457", "match_buy_box"), ("part_type", "brake pads", "beat_lowest_by"), ("part_type", "*", "stay_at_max_when_alone"),
    ]
    assert rules[0].fulfillment_fee == D("3.22") and rules[2].fulfillment_fee == 0 and rules[0].source == "file:rules.csv"
    bad = good + "X-1,,cheapest,,15,15,0,\nX-2,,match_buy_box,,15,150,0,\nSTH-BRK-0457,,match_buy_box,,1,1,0,\n"
    with pytest.raises(PricingRuleError) as err:
        parse_rules_csv(bad.encode(), file_name="rules.csv", updated_by="test")
    text = str(err.value)
    assert "3 bad row(s), nothing applied" in text
    assert "line 5: strategy 'cheapest'" in text and "line 6: referral_fee_percent" in text
    assert "line 7: a second rule for sku 'STH-BRK-0457' (first on line 2)" in text
    for data, message in [
        (b"", "empty file"),
        (b"sku,price\nA,1\n", "missing column(s) strategy"),
        (b"sku,strategy,min_margin_percent,referral_fee_percent,colour\n", "unknown column(s) colour"),
        (b"\xff\xfe\x00garbage", "not a UTF-8 text file"),
        (b"sku,strategy,min_margin_percent,referral_fee_percent\n", "no rules in the file"),
    ]:
        with pytest.raises(PricingRuleError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_rules_csv(data, file_name="f.csv", updated_by="test")


def test_rules_are_stored_replaced_deleted_and_imported_once_from_the_inbox(warehouse, merchant_id, tmp_path):
    mid = merchant_id("rules")
    add_merchant(warehouse, mid)
    set_pricing_rule(warehouse, mid, make_rule(sku="A-1", strategy="match_buy_box", min_margin_percent="10", referral_fee_percent="15"), actor="cli:test")
    set_pricing_rule(
        warehouse, mid,
        make_rule(sku="A-1", strategy="beat_lowest_by", beat_by="0.5", min_margin_percent="12.5", referral_fee_percent="8", fulfillment_fee="4.25"),
        actor="cli:test",
    )
    (stored,) = pricing_rules(warehouse, mid)
    assert (stored.strategy, stored.beat_by_amount, stored.min_margin_percent, stored.fulfillment_fee, stored.updated_by) == (
        "beat_lowest_by", D("0.5"), D("12.5"), D("4.25"), "cli:test"
    )
    assert isinstance(stored.min_margin_percent, Decimal)

    inbox = tmp_path / "inbox"
    folder = inbox / mid / "pricing_rules"
    folder.mkdir(parents=True)
    (folder / "rules.csv").write_text(
        "sku,part_type,strategy,beat_by,min_margin_percent,referral_fee_percent,fulfillment_fee\n"
        ",*,match_buy_box,,10,15,0\nA-1,,stay_at_max_when_alone,,20,15,1\n"
    )
    assert import_inbox_rule_files(warehouse, mid, folder, actor="inbox") == {"rules.csv": 2}
    assert import_inbox_rule_files(warehouse, mid, folder, actor="inbox") == {}, "a file applies once"
    rules = {(r.scope, r.target): r for r in pricing_rules(warehouse, mid)}
    assert rules[("sku", "A-1")].strategy == "stay_at_max_when_alone" and ("part_type", "*") in rules
    # A bad file changes nothing and says why.
    (folder / "zz_bad.csv").write_text("sku,strategy,min_margin_percent,referral_fee_percent\nB-1,match_buy_box,10,abc\n")
    with pytest.raises(PricingRuleError, match="line 2: referral_fee_percent: 'abc' is not a number"):
        import_inbox_rule_files(warehouse, mid, folder, actor="inbox")
    assert len(pricing_rules(warehouse, mid)) == 2
    assert delete_pricing_rule(warehouse, mid, sku="A-1", actor="cli:test") is True
    assert delete_pricing_rule(warehouse, mid, sku="A-1", actor="cli:test") is False
    schema = merchant_schema(mid)
    with warehouse.merchant_scope(mid) as conn:
        assert conn.fetchall(f"SELECT scope, target FROM {schema}.{PRICING_RULES.name}") == [("part_type", "*")]
    with warehouse.connect() as conn:
        actions = [a for (a,) in conn.fetchall(
            "SELECT action FROM platform.audit_log WHERE merchant_id = ? AND action LIKE 'pricing%' ORDER BY occurred_at", [mid]
        )]
    assert actions.count("pricing_rule.set") == 2 and "pricing_rules.imported" in actions and "pricing_rule.deleted" in actions
    # The same file by hand applies again (the inbox import is what skips seen files).
    assert len(import_pricing_rules_file(warehouse, mid, folder / "rules.csv", actor="cli:test")) == 2


def test_rule_times_are_aware():
    rule = make_rule(sku="S", strategy=MATCH_BUY_BOX, min_margin_percent="1", referral_fee_percent="1")
    assert rule.updated_at is not None and rule.updated_at.tzinfo is not None
    assert rule.updated_at <= datetime.now(UTC)
