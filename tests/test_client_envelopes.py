"""Every client checks the envelope of every answer and bounds every paginated loop.

The real clients talk HTTP to the sandbox, which serves canned bodies (`state.queue_fixture`) in
place of its generated data: another operation's body, another API version's body, a page that
repeats its own cursor. A 200 of the wrong shape must fail the call naming the operation and the
member that is missing, never read as an empty page; a repeated cursor must stop the loop with
the cursor in the message; a loop that never ends must stop at `max_pages`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from illuma_pipelines.sandbox.ebay import ebay_orders_modified_between
from illuma_pipelines.sandbox.server import SandboxServer
from illuma_pipelines.sandbox.walmart import walmart_inventory, walmart_orders_modified_between
from resources.amazon import AmazonSellingPartnerHttp
from resources.ebay import EbaySellHttp
from resources.http import ApiRequestError, ChannelCredentials, RequestStats
from resources.walmart import WalmartMarketplaceHttp, walmart_credentials
from tests.sandbox_helpers import amazon_client, amazon_sandbox, creds, ebay_client, walmart_client

FIXTURES = Path(__file__).parent / "fixtures"
MERCHANT = "rhein_teile"
WALMART_SECRET = "wm-secret-envelopes-9c1"


def load(path: str) -> Any:
    return json.loads((FIXTURES / path).read_text(encoding="utf-8"), parse_float=Decimal)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    # Small pages, so the generated data pages too (bounds, cursors).
    with amazon_sandbox(orders_page_size=3, inventory_page_size=7, finances_page_size=5) as sb:
        yield sb


def amazon(sb: SandboxServer, **overrides: Any) -> AmazonSellingPartnerHttp:
    return amazon_client(sb, **overrides)


def ebay(sb: SandboxServer, **overrides: Any) -> EbaySellHttp:
    return ebay_client(
        sb.base_url, client_id="IllumaPa-envelope-PRD-sandbox", client_secret="PRD-ebay-cert-envelopes", **overrides
    )


def walmart(sb: SandboxServer, **overrides: Any) -> WalmartMarketplaceHttp:
    return walmart_client(sb.base_url, **overrides)


def walmart_creds(merchant: str = MERCHANT) -> ChannelCredentials:
    return walmart_credentials(merchant, f"sandbox-client-{merchant}", WALMART_SECRET)


def window(sb: SandboxServer) -> tuple[datetime, datetime]:
    now = sb.state.now()
    return now - timedelta(days=2), now - timedelta(minutes=3)


def day_window(sb: SandboxServer) -> tuple[datetime, datetime]:
    end = sb.state.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return end - timedelta(days=3), end


def fails_naming(call: Callable[[], Any], operation: str, *needles: str) -> str:
    with pytest.raises(ApiRequestError) as info:
        call()
    message = str(info.value)
    assert message.startswith(f"{operation}: "), message
    assert info.value.operation == operation
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# ---------------------------------------------------------------------------------------------
# Bodies of real-world shape, answering the wrong operation

# Orders v0 getOrders, as an Amazon.de account answers it: PascalCase under `payload`, EUR.
AMAZON_V0_ORDERS = {
    "payload": {
        "Orders": [
            {
                "AmazonOrderId": "302-4817264-1958735",
                "PurchaseDate": "2026-11-28T09:14:51Z",
                "LastUpdateDate": "2026-11-29T16:02:10Z",
                "OrderStatus": "Shipped",
                "FulfillmentChannel": "AFN",
                "SalesChannel": "Amazon.de",
                "OrderTotal": {"CurrencyCode": "EUR", "Amount": "87.40"},
                "NumberOfItemsShipped": 3,
                "NumberOfItemsUnshipped": 0,
                "PaymentMethodDetails": ["Standard"],
                "MarketplaceId": "A1PA6795UKMFR9",
                "IsPrime": True,
                "IsBusinessOrder": False,
            },
            {
                "AmazonOrderId": "028-3391021-7716342",
                "PurchaseDate": "2026-11-29T18:40:03.000Z",
                "LastUpdateDate": "2026-11-29T18:40:03Z",
                "OrderStatus": "Pending",
                "FulfillmentChannel": "MFN",
                "MarketplaceId": "A1PA6795UKMFR9",
            },
        ],
        "NextToken": "2YgYW55IGNhcm5hbCBwbGVhc3VyZS4=",
        "LastUpdatedBefore": "2026-11-30T00:00:00Z",
    }
}

# eBay Finances getTransactions on EBAY_DE: a quantity-4 sale with per-unit shipping, its fees,
# and a shipping label.
EBAY_TRANSACTIONS = {
    "href": "https://apiz.ebay.com/sell/finances/v1/transaction?limit=200&offset=0",
    "limit": 200,
    "offset": 0,
    "total": 2,
    "transactions": [
        {
            "transactionId": "11-10493-18273",
            "orderId": "11-10493-18273",
            "transactionType": "SALE",
            "transactionStatus": "PAYOUT",
            "bookingEntry": "CREDIT",
            "transactionDate": "2026-11-29T10:21:44.000Z",
            "amount": {"value": "106.22", "currency": "EUR"},
            "totalFeeBasisAmount": {"value": "121.07", "currency": "EUR"},
            "totalFeeAmount": {"value": "14.85", "currency": "EUR"},
            "orderLineItems": [
                {
                    "lineItemId": "10052714083726",
                    "feeBasisAmount": {"value": "121.07", "currency": "EUR"},
                    "marketplaceFees": [
                        {
                            "feeType": "FINAL_VALUE_FEE",
                            "amount": {"value": "13.62", "currency": "EUR"},
                        },
                        {
                            "feeType": "FINAL_VALUE_FEE_FIXED_PER_ORDER",
                            "amount": {"value": "1.23", "currency": "EUR"},
                        },
                    ],
                }
            ],
            "buyer": {"username": "k***r"},
        },
        {
            "transactionId": "5018447710",
            "transactionType": "SHIPPING_LABEL",
            "transactionStatus": "FUNDS_AVAILABLE_FOR_PAYOUT",
            "bookingEntry": "DEBIT",
            "transactionDate": "2026-11-29T15:02:10.000Z",
            "amount": {"value": "5.49", "currency": "EUR"},
            "transactionMemo": "DHL Paket 2 kg",
        },
    ],
}

EBAY_PAYOUTS = {
    "href": "https://apiz.ebay.com/sell/finances/v1/payout?limit=200&offset=0",
    "limit": 200,
    "offset": 0,
    "total": 1,
    "payouts": [
        {
            "payoutId": "6000208451",
            "payoutStatus": "SUCCEEDED",
            "payoutDate": "2026-11-30T04:11:02.000Z",
            "amount": {"value": "1840.17", "currency": "EUR"},
            "payoutInstrument": {
                "instrumentType": "BANK",
                "nickname": "Sparkasse",
                "accountLastFourDigits": "4417",
            },
            "transactionCount": 23,
        }
    ],
}

# Walmart's inventory answer (meta + elements.inventories), sent where orders were asked for.
WALMART_INVENTORY = {
    "meta": {"totalCount": 2, "nextCursor": None},
    "elements": {
        "inventories": [
            {
                "sku": "BRK-PAD-4471",
                "nodes": [
                    {
                        "shipNode": "790612345678901234",
                        "inputQty": {"unit": "EACH", "amount": 14},
                        "availToSellQty": {"unit": "EACH", "amount": 12},
                        "reservedQty": {"unit": "EACH", "amount": 2},
                    }
                ],
            },
            {"sku": "OIL-FLT-0093", "nodes": []},
        ]
    },
}

WALMART_RECON = {
    "reportData": [
        {
            "Period Start Date": "11/11/2026",
            "Period End Date": "11/24/2026",
            "Currency": "USD",
            "Transaction Type": "PaymentSummary",
            "Total Payable": "1204.55",
            "Transaction Description": "Deposited in account",
            "Transaction Posted Timestamp": "11/27/2026",
        }
    ],
    "nextOffset": -1,
}


# ---------------------------------------------------------------------------------------------
# Each channel's orders operation answered with another operation's body


def test_amazon_search_orders_answered_by_orders_v0_fails_naming_it(sandbox):
    sandbox.state.queue_fixture("amazon", MERCHANT, "searchOrders", AMAZON_V0_ORDERS)
    stats = RequestStats()
    message = fails_naming(
        lambda: list(amazon(sandbox).search_orders(creds(MERCHANT), *window(sandbox), stats=stats)),
        "searchOrders",
        "'orders' list",
        "the body has payload",
        "Orders API v2026-01-01",
    )
    assert stats.operation("searchOrders").records == 0
    # Names only: no order id, amount or token from the body reaches the message.
    assert not [v for v in ("302-4817264-1958735", "87.40", "2YgYW55") if v in message]

    # The documentation's own v0 example, verbatim, fails the same way.
    sandbox.state.queue_fixture(
        "amazon", MERCHANT, "searchOrders", load("amazon/amazon_getOrders_docexample.json")
    )
    fails_naming(
        lambda: list(amazon(sandbox).search_orders(creds(MERCHANT), *window(sandbox))),
        "searchOrders",
        "'orders' list",
    )


def test_ebay_get_orders_answered_by_finances_transactions_fails_naming_it(sandbox):
    sandbox.state.queue_fixture("ebay", MERCHANT, "getOrders", EBAY_TRANSACTIONS)
    stats = RequestStats()
    message = fails_naming(
        lambda: list(ebay(sandbox).orders(creds(MERCHANT), *day_window(sandbox), stats=stats)),
        "getOrders",
        "'orders' list",
        "transactions",
    )
    assert stats.operation("getOrders").records == 0
    assert "106.22" not in message and "k***r" not in message


def test_walmart_orders_answered_by_inventory_fails_naming_it(sandbox):
    sandbox.state.queue_fixture("walmart", MERCHANT, "getAllOrders", WALMART_INVENTORY)
    fails_naming(
        lambda: list(walmart(sandbox).orders(walmart_creds(), *day_window(sandbox))),
        "getAllOrders",
        "'list.elements.order' list",
        "the body has elements, meta",
    )
    # A page whose list is an object (a proxy's rewrite) fails too, naming the member.
    broken = {"list": {"meta": {"totalCount": 1}, "elements": {"order": {"purchaseOrderId": "1"}}}}
    sandbox.state.queue_fixture("walmart", MERCHANT, "getAllOrders", broken)
    fails_naming(
        lambda: list(walmart(sandbox).orders(walmart_creds(), *day_window(sandbox))),
        "getAllOrders",
        "'list.elements.order' is an object, not a list",
    )


# ---------------------------------------------------------------------------------------------
# Every other operation, on every channel


def _report_listing(sb: SandboxServer) -> list[Any]:
    return list(amazon(sb).settlement_reports(creds(MERCHANT), sb.state.now() - timedelta(days=60)))


AMAZON_CASES = [
    (
        "getOrder",
        {"orders": []},
        lambda sb: amazon(sb).get_order(creds(MERCHANT), "302-4817264-1958735"),
        "'order' object",
    ),
    (
        "getInventorySummaries",
        load("amazon/amazon_finances2024_listTransactions_sandbox_1.json"),
        lambda sb: list(amazon(sb).inventory_summaries(creds(MERCHANT))),
        "'payload.inventorySummaries' list",
    ),
    (
        "listTransactions",
        load("amazon/amazon_listFinancialEvents_sandbox_1.json"),
        lambda sb: list(amazon(sb).list_transactions(creds(MERCHANT), *window(sb))),
        "'payload.transactions' list",
    ),
    (
        "getReports",
        load("amazon/amazon_getReport_sandbox_1.json"),
        _report_listing,
        "'reports' list",
    ),
    (
        "getReportDocument",
        load("amazon/amazon_getReport_sandbox_1.json"),
        _report_listing,
        "'url' string",
    ),
    (
        "createReport",
        load("amazon/amazon_getReports_sandbox_1.json"),
        lambda sb: amazon(sb).request_report(creds(MERCHANT), "GET_MERCHANT_LISTINGS_ALL_DATA"),
        "'reportId' string",
    ),
    (
        "getReport",
        load("amazon/amazon_getReports_sandbox_1.json"),
        lambda sb: amazon(sb).request_report(creds(MERCHANT), "GET_MERCHANT_LISTINGS_ALL_DATA"),
        "'reportId' string",
    ),
    (
        "getCompetitivePricing",
        load("amazon/amazon_getListingOffers_sandbox_1.json"),
        lambda sb: list(amazon(sb).competitive_pricing(creds(MERCHANT), ["BRK-PAD-4471"])),
        "'payload' is an object, not a list",
    ),
    (
        "getListingOffers",
        load("amazon/amazon_getCompetitivePricing_sandbox_2_sku.json"),
        lambda sb: list(amazon(sb).listing_offers(creds(MERCHANT), "BRK-PAD-4471")),
        "'payload' is a list, not an object",
    ),
]


EBAY_CASES = [
    (
        "getTransactions",
        EBAY_PAYOUTS,
        lambda sb: list(ebay(sb).transactions(creds(MERCHANT), *day_window(sb))),
        "'transactions' list",
    ),
    (
        "getPayouts",
        EBAY_TRANSACTIONS,
        lambda sb: list(ebay(sb).payouts(creds(MERCHANT), *day_window(sb))),
        "'payouts' list",
    ),
    (
        "getInventoryItems",
        load("ebay/ebay_getOrders_doc_shape.json"),
        lambda sb: list(ebay(sb).inventory_items(creds(MERCHANT))),
        "'inventoryItems' list",
    ),
    (
        "getOrders",
        dict(EBAY_TRANSACTIONS, total="2"),
        lambda sb: list(ebay(sb).orders(creds(MERCHANT), *day_window(sb))),
        "'total' is a string, not an integer",
    ),
]


def test_an_empty_ebay_result_may_leave_its_list_out(sandbox):
    empty = {
        "href": "https://api.ebay.com/sell/fulfillment/v1/order?limit=200&offset=0",
        "total": 0,
        "limit": 200,
        "offset": 0,
    }
    sandbox.state.queue_fixture("ebay", MERCHANT, "getOrders", empty)
    stats = RequestStats()
    assert list(ebay(sandbox).orders(creds(MERCHANT), *day_window(sandbox), stats=stats)) == []
    assert stats.operation("getOrders").pages == 1


WALMART_CASES = [
    (
        "getMultiNodeInventory",
        {"list": {"meta": {"totalCount": 0}, "elements": {"order": []}}},
        lambda sb: list(walmart(sb).inventory(walmart_creds())),
        "'elements.inventories' list",
    ),
    (
        "getAvailableReconReportDates",
        WALMART_RECON,
        lambda sb: list(
            walmart(sb).recon_reports(walmart_creds(), sb.state.now().date() - timedelta(days=40))
        ),
        "'availableApReportDates' list",
    ),
]

ENVELOPE_CASES = [
    (channel, *case)
    for channel, cases in (("amazon", AMAZON_CASES), ("ebay", EBAY_CASES), ("walmart", WALMART_CASES))
    for case in cases
]


@pytest.mark.parametrize(
    ("channel", "operation", "body", "call", "needle"), ENVELOPE_CASES, ids=[f"{c[0]}-{c[1]}" for c in ENVELOPE_CASES]
)
def test_every_operation_checks_its_envelope(sandbox, channel, operation, body, call, needle):
    sandbox.state.queue_fixture(channel, MERCHANT, operation, body)
    try:
        fails_naming(lambda: call(sandbox), operation, needle)
    finally:
        # Nothing queued may leak into the next case.
        while sandbox.state.pop_fixture(channel, MERCHANT, operation) is not None:
            pass



def test_walmart_recon_report_answered_by_the_date_listing_fails_naming_it(sandbox):
    sandbox.state.queue_fixture(
        "walmart",
        MERCHANT,
        "getAvailableReconReportDates",
        {"availableApReportDates": ["11252026"]},
    )
    sandbox.state.queue_fixture(
        "walmart", MERCHANT, "getReconReportJson", {"availableApReportDates": ["11252026"]}
    )
    fails_naming(
        lambda: list(
            walmart(sandbox).recon_reports(
                walmart_creds(), datetime(2026, 11, 1).date(), datetime(2026, 12, 1).date()
            )
        ),
        "getReconReportJson",
        "'reportData' list",
        "report 11252026",
    )


# ---------------------------------------------------------------------------------------------
# Cursors that repeat, and loops that never end


def test_a_walmart_cursor_that_repeats_stops_with_the_cursor_in_the_message(sandbox):
    a, b = day_window(sandbox)
    seller = [
        o
        for o in walmart_orders_modified_between(sandbox.state, MERCHANT, a, b)
        if o["shipNode"]["type"] == "SellerFulfilled"
    ]
    cursor = (
        "?limit=2&hasMoreElements=true&soIndex=2&poIndex="
        + seller[1]["purchaseOrderId"]
        + "&sellerId=101732&shipNodeType=SellerFulfilled&lastModifiedStartDate="
        + a.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    page = {
        "list": {
            "meta": {"totalCount": len(seller), "limit": 2, "nextCursor": cursor},
            "elements": {"order": seller[:2]},
        }
    }
    # Walmart, sent a cursor wrongly, answers the same page and the same cursor every time.
    for _ in range(6):
        sandbox.state.queue_fixture("walmart", MERCHANT, "getAllOrders", page)
    served = sandbox.state.served["getAllOrders"]
    got: list[Any] = []
    stats = RequestStats()

    def run() -> None:
        got.extend(walmart(sandbox).orders(walmart_creds(), a, b, stats=stats))

    try:
        message = fails_naming(run, "getAllOrders", cursor, "again")
        # The cursor was followed once; its repeat stopped the loop at once.
        assert sandbox.state.served["getAllOrders"] - served == 2
        assert got == seller[:2] and stats.operation("getAllOrders").pages == 2
        assert "nextCursor" in message
    finally:
        while sandbox.state.pop_fixture("walmart", MERCHANT, "getAllOrders") is not None:
            pass


def test_a_walmart_inventory_cursor_that_repeats_stops(sandbox):
    rows = walmart_inventory(sandbox.state, MERCHANT)
    page = {
        "meta": {"totalCount": len(rows), "nextCursor": "MTR8MjAyNi0xMi0wNlQxNjo1MDowMCswMDowMA"},
        "elements": {"inventories": rows[:7]},
    }
    for _ in range(2):
        sandbox.state.queue_fixture("walmart", MERCHANT, "getMultiNodeInventory", page)
    fails_naming(
        lambda: list(walmart(sandbox).inventory(walmart_creds())),
        "getMultiNodeInventory",
        "'MTR8MjAyNi0xMi0wNlQxNjo1MDowMCswMDowMA'",
    )


def test_an_amazon_token_that_repeats_stops_with_the_token_in_the_message(sandbox):
    page = dict(load("amazon/amazon_v2026_searchOrders_sandbox_1.json"))
    token = page["pagination"]["nextToken"]
    for _ in range(3):
        sandbox.state.queue_fixture("amazon", MERCHANT, "searchOrders", page)
    try:
        fails_naming(
            lambda: list(amazon(sandbox).search_orders(creds(MERCHANT), *window(sandbox))),
            "searchOrders",
            token,
        )
    finally:
        while sandbox.state.pop_fixture("amazon", MERCHANT, "searchOrders") is not None:
            pass


def ebay_orders_a_page_past_the_bound(sb: SandboxServer) -> list[Any]:
    """getOrders bounded one page short of the window's orders, in pages of three (a fixed
    max_pages=2 overflowed only on days with more than six orders)."""
    a, b = day_window(sb)
    pages = -(-len(ebay_orders_modified_between(sb.state, MERCHANT, a, b)) // 3)
    assert pages >= 2, pages
    return list(ebay(sb, max_pages=pages - 1, page_size=3).orders(creds(MERCHANT), a, b))


@pytest.mark.parametrize(
    ("operation", "call"),
    [
        ("getOrders", ebay_orders_a_page_past_the_bound),
        (
            "getMultiNodeInventory",
            lambda sb: list(walmart(sb, max_pages=2).inventory(walmart_creds())),
        ),
        (
            "searchOrders",
            lambda sb: list(amazon(sb, max_pages=1).search_orders(creds(MERCHANT), *window(sb))),
        ),
    ],
    ids=["ebay", "walmart", "amazon"],
)
def test_every_paginated_loop_is_bounded(sandbox, operation, call):
    fails_naming(lambda: call(sandbox), operation, "pages", "max_pages")


def test_the_bound_lets_a_full_listing_through(sandbox):
    # Exactly as many pages as the data: no error, nothing lost.
    a, b = day_window(sandbox)
    want = ebay_orders_modified_between(sandbox.state, MERCHANT, a, b)
    pages = -(-len(want) // 3)
    got = list(ebay(sandbox, max_pages=pages, page_size=3).orders(creds(MERCHANT), a, b))
    assert got == want and pages >= 2
