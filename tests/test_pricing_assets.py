"""The pricing assets materialized on both engines: from raw rows landed as the extract lands them
(our fixtures), and from the real sandbox through the real clients and extracts."""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg

from assets.core import core_orders
from assets.extracts import AMAZON_EXTRACTS, extract_assets
from assets.partitions import MERCHANTS, merchant_date_key
from assets.pricing import (
    RECOMMENDATIONS_KEY,
    WITHIN_BOUNDS_CHECK,
    competitive_prices,
    pricing_assets,
    pricing_recommendations,
)
from illuma_pipelines import normalize
from illuma_pipelines.catalog import import_catalog_file
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.pricing import (
    COMPETITIVE_PRICES,
    COMPETITIVE_PRICES_QUARANTINE_DATASET,
    CURRENCY_MISMATCH,
    FLOOR_ABOVE_CEILING,
    NO_COMPETITOR,
    NO_COST,
    NO_RULE,
    RECOMMENDATIONS,
    RECOMMENDED,
    make_rule,
    set_pricing_rule,
)
from illuma_pipelines.raw_records import QUARANTINE, RecordRule, raw_table, split_records
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.sandbox.amazon import competing_offers
from illuma_pipelines.sandbox.server import SandboxClock, SandboxConfig, SandboxServer, SandboxState
from illuma_pipelines.sandbox.world import parts_catalog
from resources import sandbox_clients
from resources.inbox import InboxResource
from resources.warehouse import WarehouseResource
from tests.sandbox_helpers import merchant_where, sandbox_now

FIXTURES = Path(__file__).parent / "fixtures" / "pricing"
D = Decimal
DAY = "2026-11-20"
US = "ATVPDKIKX0DER"
CATALOG_COLUMNS = ["sku", "brand", "mpn", "part_type", "unit_cost", "cost_currency", "landed_cost", "map_price", "min_price", "max_price"]
_PRICING_SPEC = next(s for s in AMAZON_EXTRACTS if s.dataset == "competitive_pricing")
_INVENTORY_SPEC = next(s for s in AMAZON_EXTRACTS if s.dataset == "inventory")


def _rows(warehouse, mid, sql, params=()):
    with warehouse.merchant_scope(mid) as conn:
        return conn.fetchall(sql, params)


def _land(warehouse, mid, dataset, records, rule, day):
    """Raw rows of `records` in the merchant's raw table of `dataset`, as the extract lands them."""
    split = split_records(
        records, rule, dataset=f"amazon_{dataset}", source=f"amazon.{dataset}", partition_date=day,
        window=(None, datetime.now(UTC)), extracted_at=datetime.now(UTC), run_id="test",
    )
    schema = merchant_schema(mid)
    with warehouse.merchant_scope(mid) as conn:
        conn.create_table(schema, raw_table("amazon", dataset))
        conn.replace_rows(schema, raw_table("amazon", dataset).name, {"partition_date": day}, split.raw)
    return split


def _write_catalog(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CATALOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _materialize(assets, instance, url, mid, day, inbox, run_config=None, **resources):
    result = dg.materialize(
        assets, partition_key=merchant_date_key(mid, day), instance=instance,
        resources={"warehouse": WarehouseResource(url=url), "inbox": InboxResource(root=str(inbox)), **resources},
        run_config=run_config or None,
    )
    assert result.success
    return result


def _recommendations(warehouse, mid, day):
    schema = merchant_schema(mid)
    names = [c.name for c in RECOMMENDATIONS.columns]
    rows = _rows(warehouse, mid, f"SELECT {', '.join(names)} FROM {schema}.{RECOMMENDATIONS.name} WHERE recommendation_date = ?", [day])
    return {(r["sku"], r["marketplace_id"]): r for r in (dict(zip(names, row, strict=True)) for row in rows)}


def test_pricing_assets_from_fixture_raw_rows(warehouse, warehouse_url, merchant_id, instance, tmp_path):
    mid = merchant_id("price")
    schema = merchant_schema(mid)
    add_merchant(warehouse, mid, channels={"amazon": ChannelConnection("amazon", f"sandbox:{mid}", (US,))})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    entries = [
        *normalize.loads((FIXTURES / "competitive_pricing_us.json").read_text())["payload"],
        *normalize.loads((FIXTURES / "competitive_pricing_ca.json").read_text())["payload"],
        *normalize.loads((FIXTURES / "malformed_records.json").read_text()),
    ]
    # The competitive pricing extract's own rule: the US and CA entries of a SKU share its key, so
    # only one of them lands (the CA one, last seen): land the US day with the offers payloads,
    # then check the CA entry alone on another day.
    offers = [normalize.loads((FIXTURES / n).read_text())["payload"] for n in ("listing_offers_current.json", "listing_offers_legacy.json")]
    us_entries = [e for e in entries if "A2EUQ1WTGCTBG2" not in str(e)]
    split = _land(warehouse, mid, "competitive_pricing", us_entries, _PRICING_SPEC.rule, DAY)
    assert len(split.quarantine) == 0
    # getListingOffers payloads key by `SKU`, which the extract's rule does not name (it lands
    # getCompetitivePricing entries): added under a rule that does, as the same raw rows.
    extra = split_records(
        offers, RecordRule(key_fields=("SKU",), required=("status",)), dataset="amazon_competitive_pricing",
        source="amazon.getListingOffers", partition_date=DAY, window=(None, datetime.now(UTC)),
        extracted_at=datetime.now(UTC), run_id="test",
    )
    with warehouse.merchant_scope(mid) as conn:
        conn.load_frame(schema, raw_table("amazon", "competitive_pricing").name, extra.raw)
    inventory = [{"sellerSku": s} for s in ("ACD-41-993", "STH-BRK-0457", "KOH-25-050-34", "DEN-234-4209", "BRG-594-905", "NOPRICE-1", "RETIRED-0001")]
    _land(warehouse, mid, "inventory", inventory, _INVENTORY_SPEC.rule, DAY)

    catalog = _write_catalog(tmp_path / "catalog.csv", [
        dict(sku="ACD-41-993", brand="ACDelco", mpn="41-993", part_type="spark plugs", unit_cost="12.10", cost_currency="USD", landed_cost="14.20", max_price="45"),
        dict(sku="STH-BRK-0457", brand="StopTech", mpn="309.04570", part_type="brake pads", unit_cost="31.00", cost_currency="USD", map_price="59.99", max_price="79.99"),
        dict(sku="BRG-594-905", brand="Briggs & Stratton", mpn="594905", part_type="filters", unit_cost="5.00", cost_currency="USD", max_price="19.99"),
        dict(sku="DEN-234-4209", brand="Denso", mpn="234-4209", part_type="sensors", unit_cost="25.00", cost_currency="USD", max_price="44.00"),
        dict(sku="NOPRICE-1", brand="Gates", mpn="K060923", part_type="belts", unit_cost="20", cost_currency="USD"),
        # KOH-25-050-34 is not in the catalog: no cost.
    ])
    import_catalog_file(warehouse, mid, catalog, now=datetime(2026, 11, 1, tzinfo=UTC))
    rule = dict(min_margin_percent="20", referral_fee_percent="15", fulfillment_fee="3.00")
    set_pricing_rule(warehouse, mid, make_rule(part_type="*", strategy="match_buy_box", **rule), actor="test")
    set_pricing_rule(warehouse, mid, make_rule(part_type="filters", strategy="stay_at_max_when_alone", **rule), actor="test")
    # DEN-234-4209 has its own rule; `sensors` has none (the SKU rule wins).
    set_pricing_rule(warehouse, mid, make_rule(sku="DEN-234-4209", strategy="beat_lowest_by", beat_by="0.50", **rule), actor="test")

    for _ in range(2):  # a re-run replaces the partition
        result = _materialize(pricing_assets, instance, warehouse_url, mid, DAY, tmp_path / "inbox")
    prices = result.asset_materializations_for_node(competitive_prices.op.name)[0].metadata
    assert prices["rejected"].value == 6  # the ClientError entry and the five malformed records
    assert prices["rows_with_buy_box"].value >= 4
    quarantined = _rows(warehouse, mid, f"SELECT reason FROM {schema}.{QUARANTINE.name} WHERE dataset = ?", [COMPETITIVE_PRICES_QUARANTINE_DATASET])
    assert len(quarantined) == 6 and any("ClientError" in r for (r,) in quarantined)
    (count,) = _rows(warehouse, mid, f"SELECT count(*) FROM {schema}.{COMPETITIVE_PRICES.name} WHERE price_date = ?", [DAY])[0]
    assert count == prices["rows"].value
    amounts = _rows(warehouse, mid, f"SELECT buy_box_price FROM {schema}.{COMPETITIVE_PRICES.name} WHERE sku = 'ACD-41-993' AND condition = 'new'")
    assert amounts == [(D("31.48"),)] and isinstance(amounts[0][0], Decimal)

    recs = _recommendations(warehouse, mid, DAY)
    # Match the buy box: 31.48 is above the floor (14.20 x 1.2 + 3) / 0.85 = 23.58.
    acd = recs[("ACD-41-993", US)]
    assert (acd["status"], acd["recommended_price"], acd["floor_price"], acd["ceiling_price"]) == (RECOMMENDED, D("31.48"), D("23.58"), D("45.00"))
    assert acd["cost_basis"] == "landed_cost" and acd["rule_target"] == "*"
    # The merchant holds the buy box at 64.95; MAP 59.99 raises the floor above the cost floor.
    sth = recs[("STH-BRK-0457", US)]
    assert (sth["recommended_price"], sth["floor_price"], sth["current_price"], sth["current_price_source"]) == (D("64.95"), D("59.99"), D("64.95"), "own_buy_box")
    assert "MAP" in sth["reason"]
    # Alone (the older offers payload) under a part-type rule: stay at max_price.
    brg = recs[("BRG-594-905", US)]
    assert (brg["status"], brg["recommended_price"], brg["reference_kind"], brg["rule_target"]) == (RECOMMENDED, D("19.99"), "alone", "filters")
    assert (brg["current_price"], brg["current_price_source"], brg["floor_price"]) == (D("12.99"), "own_offer", D("10.59"))
    # Beat the lowest other offer 45.98 by 0.50 = 45.48, above the ceiling 44.00: lowered to it.
    den = recs[("DEN-234-4209", US)]
    assert (den["recommended_price"], den["competitor_reference"], den["current_price"]) == (D("44.00"), D("45.98"), D("49.99"))
    assert den["price_change"] == D("-5.99") and "lowered to the ceiling" in den["reason"]
    assert recs[("KOH-25-050-34", US)]["status"] == NO_COST
    assert recs[("NOPRICE-1", None)]["status"] == NO_COMPETITOR
    assert recs[("RETIRED-0001", None)]["status"] == NO_COMPETITOR
    mats = result.asset_materializations_for_node(pricing_recommendations.op.name)
    meta = mats[0].metadata
    assert (meta["recommended"].value, meta[NO_COST].value, meta[NO_COMPETITOR].value, meta["rows"].value) == (4, 1, 2, len(recs))
    (check,) = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed, check.asset_key) == (WITHIN_BOUNDS_CHECK, True, RECOMMENDATIONS_KEY)

    # The Canadian entry alone on another day: CAD prices, USD costs, no conversion.
    other = "2026-11-21"
    _land(warehouse, mid, "competitive_pricing", [e for e in entries if "A2EUQ1WTGCTBG2" in str(e)], _PRICING_SPEC.rule, other)
    _materialize(pricing_assets, instance, warehouse_url, mid, other, tmp_path / "inbox")
    (ca,) = _recommendations(warehouse, mid, other).values()
    assert (ca["status"], ca["currency"], ca["cost_currency"], ca["recommended_price"]) == (CURRENCY_MISMATCH, "CAD", "USD", None)
    assert len(_recommendations(warehouse, mid, DAY)) == len(recs), "another day leaves this one as it was"

    # A bad rules file in the inbox stops the recommendations, naming the line; nothing changes.
    folder = tmp_path / "inbox" / mid / "pricing_rules"
    folder.mkdir(parents=True)
    (folder / "rules.csv").write_text("sku,strategy,min_margin_percent,referral_fee_percent\nACD-41-993,match_buy_box,15,fifteen\n")
    result = dg.materialize(
        [pricing_recommendations], partition_key=merchant_date_key(mid, DAY), instance=instance, raise_on_error=False,
        resources={"warehouse": WarehouseResource(url=warehouse_url), "inbox": InboxResource(root=str(tmp_path / "inbox"))},
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    assert "line 2: referral_fee_percent: 'fifteen' is not a number" in message and "Fix or remove the file" in message
    assert _recommendations(warehouse, mid, DAY) == recs


def _holds_a_buy_box(config: SandboxConfig) -> Callable[[str], bool]:
    """Whether a merchant's own offer is the sandbox's buy box (the cheapest landed offer) for at
    least one of its FBA parts past the first three on the sandbox's day: the pricing test needs
    one there for an own_buy_box recommendation, and about one random id in ten thousand has none."""
    state = SandboxState(config)

    def holds(mid: str) -> bool:
        world = state.world(mid)
        return any(
            min(competing_offers(world, part, state.now()), key=lambda o: o["price"] + o["shipping"])["mine"]
            for part in [p for p in parts_catalog(config.seed, mid) if p.amazon_fba][3:]
        )

    return holds


def test_pricing_assets_through_the_sandbox(warehouse, warehouse_url, merchant_id, instance, tmp_path, vault_resource):
    now = sandbox_now()
    day = (now - timedelta(days=2)).date()
    config = SandboxConfig(seed=11, clock=SandboxClock.fixed_at(now), history_start=day - timedelta(days=60))
    mid = merchant_where(merchant_id, "sbx", _holds_a_buy_box(config), f"an Amazon buy box on {now:%Y-%m-%d}")
    schema = merchant_schema(mid)
    add_merchant(warehouse, mid, channels={"amazon": ChannelConnection("amazon", f"sandbox:{mid}")})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    parts = [p for p in parts_catalog(config.seed, mid) if p.amazon_fba]
    assert len(parts) >= 6
    no_cost, tight, no_rule = parts[0], parts[1], parts[2]
    catalog_rows = []
    for p in parts:
        if p is no_cost:
            continue
        row = dict(sku=p.sku, brand=p.brand, mpn=p.mpn, part_type="other" if p is no_rule else "parts",
                   unit_cost=str(p.cost), cost_currency="USD", max_price=str(p.price * 2))
        if p is tight:
            row["max_price"] = str(p.cost)  # the floor is above cost: floor above ceiling
        catalog_rows.append(row)
    import_catalog_file(warehouse, mid, _write_catalog(tmp_path / "catalog.csv", catalog_rows), now=datetime(2025, 1, 1, tzinfo=UTC))
    # The rules arrive as a file in the merchant's inbox; the recommendations asset applies it.
    inbox = tmp_path / "inbox"
    (inbox / mid / "pricing_rules").mkdir(parents=True)
    (inbox / mid / "pricing_rules" / "rules.csv").write_text(
        "part_type,strategy,min_margin_percent,referral_fee_percent,fulfillment_fee\nparts,match_buy_box,10%,15%,0\n"
    )
    extracts = [a for a in extract_assets if a.key.path[-1] in {"amazon_inventory", "amazon_competitive_pricing", "amazon_orders"}]
    (orders,) = [a for a in extracts if a.key.path[-1] == "amazon_orders"]
    with SandboxServer(config) as sandbox:
        for _ in range(2):
            result = _materialize(
                [*extracts, core_orders, *pricing_assets], instance, warehouse_url, mid, day.isoformat(), inbox,
                # Ten days of orders: SKUs the merchant sold lately have a last order price.
                run_config={"ops": {orders.op.name: {"config": {"lookback_hours": 240}}}},
                vault=vault_resource, **sandbox_clients(sandbox.base_url),
            )
            recs = _recommendations(warehouse, mid, day.isoformat())
            applied = result.asset_materializations_for_node(pricing_recommendations.op.name)[0].metadata["rule_files_applied"]
            assert applied.value == (1 if _ == 0 else 0), "an inbox file applies once"
            if _ == 0:
                first = {k: (v["status"], v["recommended_price"]) for k, v in recs.items()}
    assert {k: (v["status"], v["recommended_price"]) for k, v in recs.items()} == first, "a re-run changes nothing"
    skus = {sku for sku, _ in recs}
    assert skus == {p.sku for p in parts}, "every SKU the pricing extract asked about has a row"
    statuses = {recs[k]["status"] for k in recs if k[0] == no_cost.sku}
    assert statuses == {NO_COST}
    assert {recs[k]["status"] for k in recs if k[0] == tight.sku} == {FLOOR_ABOVE_CEILING}
    assert {recs[k]["status"] for k in recs if k[0] == no_rule.sku} == {NO_RULE}
    recommended = [r for r in recs.values() if r["status"] == RECOMMENDED]
    assert recommended, "the sandbox's prices leave room for recommendations"
    for r in recommended:
        assert r["floor_price"] <= r["recommended_price"] <= r["ceiling_price"]
        assert r["competitor_reference"] is not None and r["currency"] == "USD" and r["reason"]
    by_source: dict = {}
    for r in recommended:
        by_source.setdefault(r["current_price_source"], []).append(r)
    assert set(by_source) <= {"own_buy_box", "last_order", None} and {"own_buy_box", "last_order"} <= set(by_source)
    for r in by_source["own_buy_box"]:
        assert r["current_price"] == r["competitor_reference"] == r["recommended_price"] or r["recommended_price"] == r["floor_price"]
    for r in by_source["last_order"]:
        latest = _rows(
            warehouse, mid,
            f"SELECT l.unit_price FROM {schema}.core_order_lines l JOIN {schema}.core_orders o "
            "ON o.channel = l.channel AND o.marketplace_order_id = l.marketplace_order_id "
            "WHERE l.sku = ? AND o.status <> 'cancelled' AND l.line_status <> 'cancelled' ORDER BY o.purchased_at DESC LIMIT 1",
            [r["sku"]],
        )
        assert latest == [(r["current_price"],)]
    (raw,) = _rows(warehouse, mid, f"SELECT count(*) FROM {schema}.raw_amazon_competitive_pricing WHERE partition_date = ?", [day])[0]
    (rows,) = _rows(warehouse, mid, f"SELECT count(DISTINCT sku) FROM {schema}.{COMPETITIVE_PRICES.name} WHERE price_date = ?", [day])[0]
    assert rows == raw == len(parts)
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == WITHIN_BOUNDS_CHECK)
    assert check.passed
