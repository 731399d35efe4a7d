"""Amazon's official example payloads go through the sandbox over HTTP into the real client.

Each payload is queued verbatim in the sandbox (`state.queue_fixture`) and served to the client;
the client must accept it and hand back the records unchanged (JSON numbers as Decimal).
See tests/fixtures/SOURCES.md for where each file comes from.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest

from resources.amazon import AmazonReportError
from resources.http import ApiRequestError, RequestStats
from tests.sandbox_helpers import FIXTURES, amazon_client, amazon_sandbox, creds

MERCHANT = "fixture_shop"


def load(name: str):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"), parse_float=Decimal)


@pytest.fixture(scope="module")
def sandbox():
    with amazon_sandbox() as server:
        yield server


@pytest.fixture
def client(sandbox):
    return amazon_client(sandbox)


def queue(sandbox, operation: str, *bodies, status: int = 200) -> None:
    for body in bodies:
        sandbox.state.queue_fixture(
            "amazon", MERCHANT, operation, load(body) if isinstance(body, str) else body, status
        )


def window(sandbox):
    now = sandbox.state.now()
    return now - timedelta(days=1), now - timedelta(minutes=3)


def test_search_orders_examples_page_through_and_dedupe(sandbox, client):
    pages = [
        "amazon_v2026_searchOrders_docexample.json",
        "amazon_v2026_searchOrders_sandbox_1.json",
        "amazon_v2026_searchOrders_sandbox_2.json",
    ]
    # Amazon's two examples carry the same placeholder token; a real token is never answered
    # twice (the client refuses a token it has followed), so the second page gets its own.
    second = dict(load(pages[1]), pagination={"nextToken": "c2FuZGJveCBwYWdlIHR3bw=="})
    queue(sandbox, "searchOrders", pages[0], second, pages[2])
    got = list(client.search_orders(creds(MERCHANT), *window(sandbox)))
    assert got == [order for page in pages for order in load(page)["orders"]]
    # JPY amounts without decimals and the UK order's strings stay strings.
    assert (
        got[1]["proceeds"]["grandTotal"]["amount"]
        == load(pages[1])["orders"][0]["proceeds"]["grandTotal"]["amount"]
    )

    # The same order on two pages comes out once. Each page carries its own token: a token
    # answered twice is the same page again, which the client refuses (test_client_envelopes).
    again = dict(load(pages[0]), pagination={"nextToken": "c2Vjb25kIHBhZ2Ugb2YgdGhlIHNlYXJjaA=="})
    queue(sandbox, "searchOrders", pages[0], again, "amazon_v2026_searchOrders_sandbox_3.json")
    got = list(client.search_orders(creds(MERCHANT), *window(sandbox)))
    assert [o["orderId"] for o in got] == ["123-4567890-1234567", "171-2345678-9012345"]


def test_search_orders_400_example_is_a_clear_error(sandbox, client):
    queue(sandbox, "searchOrders", "amazon_v2026_searchOrders_sandbox_400.json", status=400)
    with pytest.raises(ApiRequestError) as info:
        list(client.search_orders(creds(MERCHANT), *window(sandbox)))
    assert (
        info.value.status == 400
        and info.value.code == "InvalidInput"
        and "searchOrders" in str(info.value)
    )


@pytest.mark.parametrize(
    "name",
    [
        "amazon_v2026_getOrder_docexample.json",
        "amazon_v2026_getOrder_sandbox_1.json",
        "amazon_v2026_getOrder_sandbox_2.json",
        "amazon_v2026_getOrder_sandbox_3.json",
    ],
)
def test_get_order_examples(sandbox, client, name):
    queue(sandbox, "getOrder", name)
    expected = load(name)["order"]
    assert client.get_order(creds(MERCHANT), expected["orderId"]) == expected


def test_get_order_400_example(sandbox, client):
    queue(sandbox, "getOrder", "amazon_v2026_getOrder_sandbox_400.json", status=400)
    with pytest.raises(ApiRequestError, match="getOrder: HTTP 400"):
        client.get_order(creds(MERCHANT), "111-1111111-1111111")


def test_inventory_example_with_empty_times_and_a_500_first(sandbox, client):
    example = load("amazon_getInventorySummaries_sandbox_1.json")
    last_page = {
        "payload": {"granularity": example["payload"]["granularity"], "inventorySummaries": []}
    }
    # The 500 example first: the client retries it, then follows pagination.nextToken (outside payload).
    queue(
        sandbox,
        "getInventorySummaries",
        "amazon_getInventorySummaries_sandbox_500.json",
        status=500,
    )
    queue(
        sandbox, "getInventorySummaries", "amazon_getInventorySummaries_sandbox_1.json", last_page
    )
    stats = RequestStats()
    got = list(client.inventory_summaries(creds(MERCHANT), stats=stats))
    # Verbatim, each with the marketplace it was read in (a summary names none).
    assert got == [{**s, "marketplaceId": "ATVPDKIKX0DER"} for s in example["payload"]["inventorySummaries"]]
    assert [s["lastUpdatedTime"] for s in got][:2] == ["", ""]
    assert (
        stats.operation("getInventorySummaries").retries == 1
        and stats.operation("getInventorySummaries").pages == 2
    )


def test_finances_2024_example(sandbox, client):
    example = load("amazon_finances2024_listTransactions_sandbox_1.json")
    queue(
        sandbox,
        "listTransactions",
        "amazon_finances2024_listTransactions_sandbox_1.json",
        {"payload": {"transactions": []}},
    )
    got = list(client.list_transactions(creds(MERCHANT), *window(sandbox)))
    assert got == example["payload"]["transactions"]
    assert got[0]["totalAmount"]["currencyAmount"] == 10
    queue(
        sandbox,
        "listTransactions",
        "amazon_finances2024_listTransactions_sandbox_400.json",
        status=400,
    )
    with pytest.raises(ApiRequestError) as info:
        list(client.list_transactions(creds(MERCHANT), *window(sandbox)))
    assert info.value.code == "InvalidInput"


def test_pricing_examples(sandbox, client):
    for name, kwargs in (
        (
            "amazon_getCompetitivePricing_sandbox_1_asin.json",
            {"asins": ["B00V5DG6IQ", "B00551Q3CS"]},
        ),
        (
            "amazon_getCompetitivePricing_sandbox_2_sku.json",
            {"skus": ["NABetaASINB00V5DG6IQ", "NABetaASINB00551Q3CS"]},
        ),
        (
            "amazon_getCompetitivePricing_sandbox_3_asin_nocompetitive.json",
            {"asins": ["B00V5DG6IQ", "B00551Q3CS"]},
        ),
    ):
        queue(sandbox, "getCompetitivePricing", name)
        assert list(client.competitive_pricing(creds(MERCHANT), **kwargs)) == [
            {**entry, "marketplaceId": "ATVPDKIKX0DER"} for entry in load(name)["payload"]
        ]
    for name in (
        "amazon_getListingOffers_sandbox_1.json",
        "amazon_getListingOffers_sandbox_2_business.json",
    ):
        queue(sandbox, "getListingOffers", name)
        [payload] = client.listing_offers(creds(MERCHANT), "NABetaASINB00V5DG6IQ")
        assert payload == load(name)["payload"]
    # Amounts such as 10.00 keep their exact text.
    assert (
        str(
            load("amazon_getListingOffers_sandbox_1.json")["payload"]["Offers"][0]["ListingPrice"][
                "Amount"
            ]
        )
        == "10.00"
    )


def test_listing_offers_old_and_current_marketplace_names(sandbox, client):
    """The published example (`MarketplaceID`, the name before February 2026) and the sandbox's
    own answer (`marketplaceId`, the current model) both go through the client and normalize to
    the marketplace they name."""
    from illuma_pipelines.normalize import amazon as normalizer

    queue(sandbox, "getListingOffers", "amazon_getListingOffers_sandbox_2_business.json")
    [legacy] = client.listing_offers(creds(MERCHANT), "NABetaASINB00V5DG6IQ")
    assert legacy["MarketplaceID"] == "ATVPDKIKX0DER" and "marketplaceId" not in legacy
    sku = sandbox.state.world(MERCHANT).catalog[0].sku
    [current] = client.listing_offers(creds(MERCHANT), sku, marketplace_ids=["A1PA6795UKMFR9"])
    assert current["marketplaceId"] == "A1PA6795UKMFR9" and "MarketplaceID" not in current
    for payload, marketplace, currency in (
        (legacy, "ATVPDKIKX0DER", "USD"),
        (current, "A1PA6795UKMFR9", "EUR"),
    ):
        result = normalizer.normalize_pricing({"payload": payload})
        assert not result.rejects and result.prices
        assert {(p.marketplace_id, p.currency) for p in result.prices} == {(marketplace, currency)}


def test_reports_examples(sandbox, client):
    # A listing page with a non-settlement IN_PROGRESS report and a nextToken: accepted, followed
    # (nextToken alone), and nothing is downloaded.
    queue(sandbox, "getReports", "amazon_getReports_sandbox_1.json", {"reports": []})
    stats = RequestStats()
    now = sandbox.state.now()
    assert (
        list(client.settlement_reports(creds(MERCHANT), now - timedelta(days=10), stats=stats))
        == []
    )
    assert (
        stats.operation("getReports").pages == 2
        and stats.operation("getReportDocument").requests == 0
    )

    queue(sandbox, "getReports", "amazon_getReports_sandbox_400.json", status=400)
    with pytest.raises(ApiRequestError) as info:
        list(client.settlement_reports(creds(MERCHANT), now - timedelta(days=10)))
    assert info.value.code == "400"

    # createReport's example id, then getReport's IN_PROGRESS example, then the report fails.
    fatal = dict(load("amazon_getReport_sandbox_1.json"), processingStatus="FATAL")
    queue(sandbox, "createReport", "amazon_createReport_sandbox_1.json", status=202)
    queue(sandbox, "getReport", "amazon_getReport_sandbox_1.json", fatal)
    with pytest.raises(AmazonReportError, match="FATAL"):
        client.request_report(creds(MERCHANT), "FEE_DISCOUNTS_REPORT")
    queue(sandbox, "createReport", "amazon_createReport_sandbox_400.json", status=400)
    with pytest.raises(ApiRequestError) as info:
        client.request_report(creds(MERCHANT), "FEE_DISCOUNTS_REPORT")
    assert info.value.code == "400"
