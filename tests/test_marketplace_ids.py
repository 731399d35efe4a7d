"""A merchant's marketplaces reach every request: through the real extract assets and clients,
against the sandbox HTTP server, into a DuckDB warehouse (issue 13, defect 5)."""

from __future__ import annotations

import json
import tempfile
import threading
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from assets.extracts import day_window, extract_assets
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines.core.inventory import load_inventory_partition
from illuma_pipelines.core.tables import INVENTORY_SNAPSHOTS
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.normalize import amazon as amazon_normalizer
from illuma_pipelines.normalize import ebay as ebay_normalizer
from illuma_pipelines.normalize.money import loads
from illuma_pipelines.pricing import (
    COMPETITIVE_PRICES,
    competitive_quotes,
    load_competitive_prices_partition,
)
from illuma_pipelines.raw_records import raw_payloads
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.sandbox.amazon import (
    amazon_orders_updated_between,
    amazon_transactions_posted_between,
)
from illuma_pipelines.sandbox.ebay import ebay_orders_modified_between
from illuma_pipelines.sandbox.server import SandboxServer
from illuma_pipelines.sandbox.walmart import walmart_inventory
from illuma_pipelines.warehouse import Warehouse
from resources.http import ApiRequestError
from resources.vault import VaultResource
from resources.walmart import WalmartMarketplaceHttp, walmart_credentials
from resources.warehouse import WarehouseResource
from tests.sandbox_helpers import (
    amazon_client,
    amazon_sandbox,
    creds,
    ebay_client,
    sandbox_now,
    walmart_client,
)

AMAZON_DE = "A1PA6795UKMFR9"
AMAZON_UK = "A1F83G8C2ARO7P"
AMAZON_US = "ATVPDKIKX0DER"
WANTED = (
    "amazon_orders", "amazon_financial_transactions", "amazon_inventory", "amazon_competitive_pricing",
    "ebay_orders", "ebay_financial_transactions", "walmart_inventory",
)
ASSETS = [a for a in extract_assets if a.key.path[-1] in WANTED]


@pytest.fixture
def duckdb_url(tmp_path) -> str:
    return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"


def _clients(sandbox: SandboxServer) -> dict[str, object]:
    return {
        "amazon": amazon_client(sandbox),
        "ebay": ebay_client(sandbox.base_url),
        "walmart": walmart_client(sandbox.base_url),
    }


def _extract(url: str, sandbox: SandboxServer, merchant_id: str, day: str) -> dg.ExecuteInProcessResult:
    keys = Path(tempfile.mkdtemp(prefix="illuma-keys-"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(MERCHANTS, [merchant_id])
        return dg.materialize(
            ASSETS,
            partition_key=merchant_date_key(merchant_id, day),
            resources={
                "warehouse": WarehouseResource(url=url),
                "vault": VaultResource(
                    key_store_path=str(keys / "keystore.json"), master_key_file=str(keys / "master.key")
                ),
                **_clients(sandbox),
            },
            instance=instance,
        )


def _stored(warehouse, mid: str, spec, columns: str, where: str, day) -> list[tuple]:
    """Rows of the merchant's core table `spec` (a `where` taking the day)."""
    with warehouse.merchant_scope(mid) as conn:
        return conn.fetchall(f"SELECT {columns} FROM {merchant_schema(mid)}.{spec.name} WHERE {where}", [day])


def _landed(warehouse: Warehouse, merchant_id: str, channel: str, dataset: str, day: str) -> list[dict]:
    with warehouse.merchant_scope(merchant_id) as conn:
        return [loads(payload) for _, payload, _ in raw_payloads(conn, merchant_id, channel, dataset, day)]


def _currencies(obj) -> set[str]:
    """Every currency code anywhere in a payload."""
    found: set[str] = set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("currencyCode", "currency", "CurrencyCode") and isinstance(value, str):
                found.add(value)
            else:
                found |= _currencies(value)
    elif isinstance(obj, list):
        for value in obj:
            found |= _currencies(value)
    return found


def test_de_uk_merchant_is_extracted_in_its_marketplaces_and_currencies(duckdb_url):
    warehouse = Warehouse.from_url(duckdb_url)
    warehouse.ensure_platform()
    mid = "de_uk_parts"
    add_merchant(
        warehouse,
        mid,
        channels={
            "amazon": ChannelConnection("amazon", f"sandbox:{mid}", (AMAZON_DE, AMAZON_UK)),
            "ebay": ChannelConnection("ebay", f"sandbox:{mid}", ("EBAY_DE",)),
        },
    )
    day = (sandbox_now() - timedelta(days=3)).date().isoformat()
    a, b = day_window(day, 2)
    with amazon_sandbox() as sandbox:
        result = _extract(duckdb_url, sandbox, mid, day)
        assert result.success
        state = sandbox.state
        expected_orders = {
            m: {o["orderId"] for o in amazon_orders_updated_between(state, mid, a, b, marketplace_id=m)}
            for m in (AMAZON_DE, AMAZON_UK, AMAZON_US)
        }
        expected_transactions = {
            t["transactionId"]
            for m in (AMAZON_DE, AMAZON_UK)
            # Finances are read two days back (the last ~48 h may be incomplete).
            for t in amazon_transactions_posted_between(state, mid, day_window(day, 48)[0], b, marketplace_id=m)
        }
        expected_ebay = {o["orderId"] for o in ebay_orders_modified_between(state, mid, a, b, marketplace_id="EBAY_DE")}
        us_ebay = {o["orderId"] for o in ebay_orders_modified_between(state, mid, a, b)}

    orders = _landed(warehouse, mid, "amazon", "orders", day)
    by_marketplace: dict[str, set[str]] = {}
    for order in orders:
        by_marketplace.setdefault(order["salesChannel"]["marketplaceId"], set()).add(order["orderId"])
    # Both marketplaces, every order of each, nothing from Amazon.com.
    assert expected_orders[AMAZON_DE] and expected_orders[AMAZON_UK]
    assert by_marketplace == {AMAZON_DE: expected_orders[AMAZON_DE], AMAZON_UK: expected_orders[AMAZON_UK]}
    assert expected_orders[AMAZON_US] and not expected_orders[AMAZON_US] & {o["orderId"] for o in orders}
    for order in orders:
        want = "EUR" if order["salesChannel"]["marketplaceId"] == AMAZON_DE else "GBP"
        assert _currencies(order) == {want}, order["orderId"]
        assert order["recipient"]["deliveryAddress"]["countryCode"] in ("DE", "GB")

    normalized = amazon_normalizer.normalize_orders(orders)
    assert not normalized.rejects
    currency_of = {o.marketplace_order_id: (o.marketplace_id, o.currency) for o in normalized.orders}
    assert set(currency_of.values()) == {(AMAZON_DE, "EUR"), (AMAZON_UK, "GBP")}
    assert all(line.quantity_ordered >= 1 for line in normalized.lines)

    transactions = _landed(warehouse, mid, "amazon", "financial_transactions", day)
    assert {t["transactionId"] for t in transactions} == expected_transactions
    for t in transactions:
        want = "EUR" if t["marketplaceDetails"]["marketplaceId"] == AMAZON_DE else "GBP"
        assert _currencies(t) == {want}

    ebay_orders = _landed(warehouse, mid, "ebay", "orders", day)
    assert expected_ebay and {o["orderId"] for o in ebay_orders} == expected_ebay
    assert not expected_ebay & us_ebay  # the EBAY_DE seller's own orders, not the US site's
    for order in ebay_orders:
        assert _currencies(order) == {"EUR"}
        assert {li["listingMarketplaceId"] for li in order["lineItems"]} == {"EBAY_DE"}
    normalized_ebay = ebay_normalizer.normalize_orders(ebay_orders)
    assert {o.currency for o in normalized_ebay.orders} == {"EUR"}
    ebay_money = _landed(warehouse, mid, "ebay", "financial_transactions", day)
    assert ebay_money and all(_currencies(t) <= {"EUR"} for t in ebay_money)

    # Stock: each marketplace's own pool, every SKU in both, as the sandbox holds it there.
    stock = _landed(warehouse, mid, "amazon", "inventory", day)
    pools = {(s["marketplaceId"], s["sellerSku"]): s["totalQuantity"] for s in stock}
    assert len(pools) == len(stock)
    de = {sku: q for (m, sku), q in pools.items() if m == AMAZON_DE}
    uk = {sku: q for (m, sku), q in pools.items() if m == AMAZON_UK}
    assert de and de.keys() == uk.keys() and de != uk and {m for m, _ in pools} == {AMAZON_DE, AMAZON_UK}
    load_inventory_partition(warehouse, mid, day, "test-run")
    snapshot = _stored(warehouse, mid, INVENTORY_SNAPSHOTS, "marketplace_id, sku, total_quantity",
                       "snapshot_date = ? AND channel = 'amazon'", day)
    assert {(m, sku): q for m, sku, q in snapshot} == pools

    # Prices: every SKU asked in both marketplaces, each answered in its currency.
    priced = _landed(warehouse, mid, "amazon", "competitive_pricing", day)
    asked = {(e["marketplaceId"], e["SellerSKU"]) for e in priced}
    assert asked == set(pools)
    for entry in priced:
        assert entry["Product"]["Identifiers"]["MarketplaceASIN"]["MarketplaceId"] == entry["marketplaceId"]
        assert _currencies(entry) == {"EUR" if entry["marketplaceId"] == AMAZON_DE else "GBP"}
    load_competitive_prices_partition(warehouse, mid, day, "test-run")
    prices = _stored(warehouse, mid, COMPETITIVE_PRICES, "DISTINCT marketplace_id, currency",
                     "price_date = ? AND buy_box_price IS NOT NULL", day)
    assert set(prices) == {(AMAZON_DE, "EUR"), (AMAZON_UK, "GBP")}


def test_merchant_without_marketplaces_keeps_the_us_defaults(duckdb_url):
    warehouse = Warehouse.from_url(duckdb_url)
    warehouse.ensure_platform()
    mid = "us_parts"
    add_merchant(
        warehouse,
        mid,
        channels={
            "amazon": ChannelConnection("amazon", f"sandbox:{mid}"),
            "ebay": ChannelConnection("ebay", f"sandbox:{mid}"),
        },
    )
    day = (sandbox_now() - timedelta(days=3)).date().isoformat()
    with amazon_sandbox() as sandbox:
        assert _extract(duckdb_url, sandbox, mid, day).success
    orders = _landed(warehouse, mid, "amazon", "orders", day)
    assert orders and {o["salesChannel"]["marketplaceId"] for o in orders} == {AMAZON_US}
    assert set().union(*(_currencies(o) for o in orders)) == {"USD"}
    assert set().union(*(_currencies(o) for o in _landed(warehouse, mid, "ebay", "orders", day))) == {"USD"}


def test_pricing_is_asked_and_answered_in_every_marketplace_of_the_merchant():
    with amazon_sandbox() as sandbox:
        client = amazon_client(sandbox)
        mid = "uk_pricing"
        world = sandbox.state.world(mid)
        skus = [p.sku for p in world.catalog[:3]]
        entries = list(client.competitive_pricing(creds(mid), skus, marketplace_ids=[AMAZON_UK, AMAZON_DE]))
        assert [(e["marketplaceId"], e["SellerSKU"]) for e in entries] == [
            (m, sku) for m in (AMAZON_UK, AMAZON_DE) for sku in skus
        ]
        for entry in entries:
            assert entry["Product"]["Identifiers"]["MarketplaceASIN"]["MarketplaceId"] == entry["marketplaceId"]
            assert _currencies(entry) == {"GBP" if entry["marketplaceId"] == AMAZON_UK else "EUR"}
        # Each marketplace's price stays its own: no quote mixes two currencies.
        quotes = {(q.marketplace_id, frozenset(q.currencies)) for e in entries for q in competitive_quotes(e)}
        assert quotes == {(AMAZON_UK, frozenset({"GBP"})), (AMAZON_DE, frozenset({"EUR"}))}
        offers = list(client.listing_offers(creds(mid), skus[0], marketplace_ids=[AMAZON_DE, AMAZON_UK]))
        assert [(o["marketplaceId"], _currencies(o)) for o in offers] == [(AMAZON_DE, {"EUR"}), (AMAZON_UK, {"GBP"})]
        for payload, marketplace, currency in zip(offers, (AMAZON_DE, AMAZON_UK), ("EUR", "GBP"), strict=True):
            prices = amazon_normalizer.normalize_pricing({"payload": payload})
            assert prices.prices and {(p.marketplace_id, p.currency) for p in prices.prices} == {(marketplace, currency)}
        # The sandbox refuses a marketplace it does not know, for stock and prices alike.
        strict = amazon_client(sandbox, max_retries=0)
        for call in (
            lambda: list(strict.competitive_pricing(creds(mid), skus, marketplace_ids=["A1XXNOTREAL9"])),
            lambda: list(strict.listing_offers(creds(mid), skus[0], marketplace_ids=["A1XXNOTREAL9"])),
            lambda: list(strict.inventory_summaries(creds(mid), marketplace_ids=["A1XXNOTREAL9"])),
        ):
            with pytest.raises(ApiRequestError, match="400"):
                call()


def test_the_sandbox_refuses_a_marketplace_it_does_not_know():
    with amazon_sandbox() as sandbox:
        now = sandbox.state.now()
        amazon = amazon_client(sandbox, max_retries=0)
        with pytest.raises(ApiRequestError) as info:
            list(amazon.search_orders(creds("xx_parts"), now - timedelta(days=1), marketplace_ids=["A1XXNOTREAL9"]))
        assert "400" in str(info.value)
        ebay = ebay_client(sandbox.base_url)
        with pytest.raises(ApiRequestError) as info:
            list(ebay.orders(creds("xx_parts"), now - timedelta(days=1), marketplace_ids=["EBAY_XX"]))
        assert "400" in str(info.value)
        # Inventory in a non-US marketplace is that marketplace's stock.
        de_stock = {s["sellerSku"]: s["totalQuantity"] for s in amazon.inventory_summaries(creds("xx_parts"), marketplace_ids=[AMAZON_DE])}
        us_stock = {s["sellerSku"]: s["totalQuantity"] for s in amazon.inventory_summaries(creds("xx_parts"))}
        assert de_stock.keys() == us_stock.keys() and de_stock != us_stock


class _WalmartCapture(BaseHTTPRequestHandler):
    """A stand-in Walmart host that records each request's WM_MARKET header and answers with one
    empty page of the documented shapes: what the client sends, whatever a server does with it
    (the sandbox's own market checks are in test_sandbox_walmart.py)."""

    seen: list[tuple[str, str | None]] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        self._answer({"access_token": "wm-token", "token_type": "Bearer", "expires_in": 900})

    def do_GET(self):  # noqa: N802
        self.seen.append((self.path.split("?")[0], self.headers.get("WM_MARKET")))
        if self.path.startswith("/v3/orders"):
            self._answer({"list": {"meta": {"totalCount": 0, "limit": 200}, "elements": {"order": []}}})
        else:
            self._answer({"meta": {"totalCount": 0}, "elements": {"inventories": []}})

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_walmart_requests_name_the_merchants_market():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WalmartCapture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = WalmartMarketplaceHttp(endpoint=f"http://127.0.0.1:{server.server_port}", backoff_base=0.01)
        wm_creds = walmart_credentials("mx_parts", "client-mx", "secret-mx")
        now = sandbox_now()
        _WalmartCapture.seen.clear()
        assert list(client.orders(wm_creds, now - timedelta(days=1), now, marketplace_ids=["MX"])) == []
        assert list(client.inventory(wm_creds, marketplace_ids=["MX"])) == []
        assert {market for _, market in _WalmartCapture.seen} == {"mx"}
        assert {path for path, _ in _WalmartCapture.seen} == {"/v3/orders", "/v3/inventories"}
        _WalmartCapture.seen.clear()
        list(client.orders(wm_creds, now - timedelta(days=1), now))
        assert {market for _, market in _WalmartCapture.seen} == {None}  # the US: no header
        with pytest.raises(ValueError, match="not one of US, CA, MX, CL"):
            list(client.orders(wm_creds, now - timedelta(days=1), now, marketplace_ids=["EBAY_DE"]))
    finally:
        server.shutdown()
        server.server_close()


def test_listing_offers_money_is_exact_in_every_currency():
    with amazon_sandbox() as sandbox:
        client = amazon_client(sandbox)
        sku = sandbox.state.world("fr_parts").catalog[5].sku
        [offers] = client.listing_offers(creds("fr_parts"), sku, marketplace_ids=["A13V1IB3VIYZZH"])
        amounts = [o["ListingPrice"]["Amount"] for o in offers["Offers"]]
        assert all(isinstance(a, Decimal) for a in amounts)
        assert {o["ListingPrice"]["CurrencyCode"] for o in offers["Offers"]} == {"EUR"}


def test_walmart_stock_is_extracted_in_each_market_of_the_connection(duckdb_url):
    warehouse = Warehouse.from_url(duckdb_url)
    warehouse.ensure_platform()
    mid = "us_ca_parts"
    add_merchant(warehouse, mid, channels={"walmart": ChannelConnection("walmart", f"sandbox:{mid}", ("US", "CA"))})
    day = (sandbox_now() - timedelta(days=3)).date().isoformat()
    with amazon_sandbox() as sandbox:
        assert _extract(duckdb_url, sandbox, mid, day).success
        expected = {
            market.upper(): {r["sku"]: r["nodes"][0]["availToSellQty"]["amount"] for r in walmart_inventory(sandbox.state, mid, market=market)}
            for market in ("us", "ca")
        }
    assert expected["US"] and expected["US"].keys() == expected["CA"].keys() and expected["US"] != expected["CA"]
    landed = _landed(warehouse, mid, "walmart", "inventory", day)
    assert {(r["market"], r["sku"]) for r in landed} == {(m, sku) for m, skus in expected.items() for sku in skus}
    load_inventory_partition(warehouse, mid, day, "test-run")
    with warehouse.merchant_scope(mid) as conn:
        rows = conn.fetchall(
            f"SELECT marketplace_id, sku, merchant_fulfilled FROM {merchant_schema(mid)}.{INVENTORY_SNAPSHOTS.name} "
            "WHERE snapshot_date = ? AND channel = 'walmart'",
            [day],
        )
    # Each market's pool as its own row, named as Walmart orders name their market.
    assert {(m, sku): q for m, sku, q in rows} == {
        (f"WALMART_{m}", sku): q for m, skus in expected.items() for sku, q in skus.items()
    }
