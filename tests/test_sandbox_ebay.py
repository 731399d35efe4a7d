"""The eBay sandbox and the real eBay client, end to end over HTTP (no mocks of our code)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from illuma_pipelines.normalize import ebay as ebay_normalizer
from illuma_pipelines.sandbox.ebay import (
    EBAY_MARKETPLACES,
    ebay_inventory_items,
    ebay_orders_modified_between,
    ebay_payout_plans_between,
    ebay_payout_transactions,
    ebay_payouts_between,
    ebay_short_payouts,
    ebay_transactions_between,
    order_plans_created_between,
)
from illuma_pipelines.sandbox.faults import FAULT_KINDS, FaultConfig
from illuma_pipelines.sandbox.server import SandboxClock, SandboxConfig, SandboxServer, SandboxState
from resources.ebay import EbaySellHttp
from resources.http import ApiRequestError, ChannelCredentials, RequestStats
from tests.sandbox_helpers import (
    SHORT_TOKEN_LIFETIME,
    call_once_per_token,
    creds,
    ebay_client,
    sandbox_now,
)

MERCHANT = "acme_parts"
CLIENT_ID = "IllumaPa-parts-PRD-sandbox"
CLIENT_SECRET = "PRD-ebay-cert-secret-77ab1c"  # a value tests look for in logs
FIXTURES = Path(__file__).parent / "fixtures" / "ebay"
FIXED_NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _sandbox(
    *, faults: FaultConfig | None = None, now: datetime | None = None, **config: Any
) -> SandboxServer:
    now = now or sandbox_now()
    return SandboxServer(
        SandboxConfig(
            seed=config.pop("seed", 21),
            clock=SandboxClock.fixed_at(now),
            faults=faults or FaultConfig(),
            quota_speedup=config.pop("quota_speedup", 1000.0),
            history_start=now.date() - timedelta(days=200),
            **config,
        )
    )


def _client(server: SandboxServer, **overrides: Any) -> EbaySellHttp:
    return ebay_client(server.base_url, **{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **overrides})


def _midnight(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def _well_formed(record: Any, key: str) -> bool:
    return isinstance(record, dict) and isinstance(record.get(key), str)


def _d(amount: dict[str, str]) -> Decimal:
    return Decimal(amount["value"])


def _signed(transactions: list[dict[str, Any]]) -> Decimal:
    """The signed sum of eBay transactions, money to the seller positive."""
    return sum(
        (_d(t["amount"]) * (1 if t["bookingEntry"] == "CREDIT" else -1) for t in transactions),
        Decimal(0),
    )


# ---------------------------------------------------------------------------------------------
# Auth


def test_token_refresh_expiry_and_bad_refresh_token():
    with _sandbox() as sb:
        assert "ebay" in sb.app.state.channels
        client = _client(sb)
        end = _midnight(sb.state.now())
        window = (end - timedelta(days=2), end)
        first = list(client.orders(creds(MERCHANT), *window))
        assert first and sb.state.served["ebayToken"] == 1
        # Revoke the cached token behind the client's back: eBay answers 401, the client
        # refreshes once and succeeds.
        for token in sb.state.issued_access_tokens():
            sb.state.revoke_token(token)
        stats = RequestStats()
        assert list(client.orders(creds(MERCHANT), *window, stats=stats)) == first
        assert sb.state.served["ebayToken"] == 2 and stats.operation("getOrders").retries == 1

        raw = requests.get(
            sb.base_url + "/ebay/sell/fulfillment/v1/order",
            headers={"Authorization": "Bearer nope"},
            timeout=5,
        )
        assert raw.status_code == 401 and raw.json()["errors"][0]["errorId"] == 1001
        no_client = requests.post(
            sb.base_url + "/ebay/identity/v1/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": f"sandbox-refresh-{MERCHANT}"},
            timeout=5,
        )
        assert no_client.status_code == 401 and no_client.json()["error"] == "invalid_client"

        bad = ChannelCredentials(MERCHANT, "v^1.1#i^1#SECRET-refresh")
        with pytest.raises(ApiRequestError) as info:
            list(client.orders(bad, *window))
        assert "ebayToken" in str(info.value) and "invalid_grant" in str(info.value)
        assert "SECRET" not in str(info.value)

    # Short-lived tokens are refreshed before they expire, without a 401.
    with _sandbox(access_token_lifetime=SHORT_TOKEN_LIFETIME) as sb:
        client = _client(sb)
        call_once_per_token(lambda: list(client.inventory_items(creds(MERCHANT))))
        assert sb.state.served["ebayToken"] == 3
        assert sb.state.served["getInventoryItems"] == 3


# ---------------------------------------------------------------------------------------------
# Orders


def test_get_orders_pages_to_the_end_and_matches_the_sandbox():
    with _sandbox(orders_page_size=7) as sb:
        end = _midnight(sb.state.now())
        a = end - timedelta(days=20)
        stats = RequestStats()
        got = list(_client(sb).orders(creds(MERCHANT), a, end, stats=stats))
        expected = ebay_orders_modified_between(sb.state, MERCHANT, a, end)
        assert got == expected and len(got) > 30
        assert stats.operation("getOrders").pages == -(-len(got) // 7)
        # Over a long window every status shows up, and the money adds up on every order. A fixed
        # date keeps the rare statuses (partial refunds) in the sample on every day the tests run.
        fixed = SandboxState(
            SandboxConfig(
                seed=21,
                clock=SandboxClock.fixed_at(FIXED_NOW),
                history_start=FIXED_NOW.date() - timedelta(days=200),
            )
        )
        longer = ebay_orders_modified_between(
            fixed, MERCHANT, FIXED_NOW - timedelta(days=150), FIXED_NOW
        )
        seen = Counter(
            (o["orderFulfillmentStatus"], o["orderPaymentStatus"], o["cancelStatus"]["cancelState"])
            for o in longer
        )
        assert {k[0] for k in seen} >= {"FULFILLED"} and {k[1] for k in seen} >= {
            "PAID",
            "FULLY_REFUNDED",
            "PARTIALLY_REFUNDED",
        }
        assert ("NOT_STARTED", "FULLY_REFUNDED", "CANCELED") in seen
        for order in longer:
            p = order["pricingSummary"]
            discount = _d(p["priceDiscount"]) if "priceDiscount" in p else Decimal("0")
            assert discount <= 0
            assert _d(p["priceSubtotal"]) + discount + _d(p["deliveryCost"]) + _d(p["tax"]) == _d(
                p["total"]
            )
            lines = order["lineItems"]
            assert sum(_d(li["total"]) for li in lines) == _d(p["total"])
            for li in lines:
                promo = sum(
                    (_d(x["discountAmount"]) for x in li["appliedPromotions"]), Decimal("0")
                )
                assert (
                    promo >= 0
                    and _d(li.get("discountedLineItemCost", li["lineItemCost"]))
                    == _d(li["lineItemCost"]) - promo
                )
            assert isinstance(p["total"]["value"], str)


def test_order_statuses_move_with_the_sandbox_clock():
    start = sandbox_now() - timedelta(days=30)
    clock = SandboxClock.fixed_at(start)
    with SandboxServer(
        SandboxConfig(seed=4, clock=clock, history_start=start.date() - timedelta(days=60))
    ) as sb:
        plans = order_plans_created_between(
            sb.state, MERCHANT, start - timedelta(days=2), start, start
        )
        before = ebay_orders_modified_between(
            sb.state, MERCHANT, start - timedelta(days=3), start + timedelta(seconds=1)
        )
        clock.advance(timedelta(days=25))
        after = {
            o["orderId"]: o
            for o in ebay_orders_modified_between(
                sb.state, MERCHANT, start - timedelta(days=3), sb.state.now()
            )
        }
        moved = [
            o
            for o in before
            if o["orderId"] in after
            and after[o["orderId"]]["lastModifiedDate"] != o["lastModifiedDate"]
        ]
        assert plans and moved
        assert all(
            after[p.order_id]["orderFulfillmentStatus"] == "FULFILLED" or p.cancel_at for p in plans
        )


def test_consecutive_windows_partition_the_orders_exactly():
    with _sandbox(orders_page_size=5) as sb:
        client = _client(sb)
        start = _midnight(sb.state.now()) - timedelta(days=5)
        ids: list[str] = []
        for d in range(4):
            ids += [
                o["orderId"]
                for o in client.orders(
                    creds(MERCHANT), start + timedelta(days=d), start + timedelta(days=d + 1)
                )
            ]
        whole = [
            o["orderId"]
            for o in ebay_orders_modified_between(
                sb.state, MERCHANT, start, start + timedelta(days=4)
            )
        ]
        assert len(ids) == len(set(ids)) and sorted(ids) == sorted(whole)
        headers = {"Authorization": "Bearer " + sb.state.issued_access_tokens()[0]}
        bad = requests.get(
            sb.base_url + "/ebay/sell/fulfillment/v1/order",
            params={"filter": "lastmodifieddate:[yesterday..]"},
            headers=headers,
            timeout=5,
        )
        assert bad.status_code == 400 and bad.json()["errors"][0]["errorId"] == 30800
        too_big = requests.get(
            sb.base_url + "/ebay/sell/fulfillment/v1/order",
            params={"limit": 500},
            headers=headers,
            timeout=5,
        )
        assert too_big.status_code == 400


def test_a_record_repeated_on_the_next_page_is_yielded_once():
    with _sandbox() as sb:
        end = _midnight(sb.state.now())
        o1, o2, o3 = ebay_orders_modified_between(sb.state, MERCHANT, end - timedelta(days=3), end)[
            :3
        ]
        # Offset paging over orders that moved between requests: o2 slides onto page two.
        first = {"href": "h", "total": 4, "limit": 2, "offset": 0, "next": "n", "orders": [o1, o2]}
        second = {"href": "h", "total": 4, "limit": 2, "offset": 2, "orders": [o2, o3]}
        sb.state.queue_fixture("ebay", MERCHANT, "getOrders", first)
        sb.state.queue_fixture("ebay", MERCHANT, "getOrders", second)
        stats = RequestStats()
        got = list(
            _client(sb, page_size=2).orders(
                creds(MERCHANT), end - timedelta(days=3), end, stats=stats
            )
        )
        assert got == [o1, o2, o3]
        assert stats.operation("getOrders").records == 3 and stats.operation("getOrders").pages == 2


# ---------------------------------------------------------------------------------------------
# Finances and inventory


def test_transactions_and_payouts_agree_with_orders_to_the_cent():
    with _sandbox(finances_page_size=25) as sb:
        client = _client(sb)
        end = _midnight(sb.state.now())
        a = end - timedelta(days=60)
        transactions = list(client.transactions(creds(MERCHANT), a, end))
        assert transactions == ebay_transactions_between(sb.state, MERCHANT, a, end)
        kinds = Counter(t["transactionType"] for t in transactions)
        assert set(kinds) == {"SALE", "REFUND", "SHIPPING_LABEL", "NON_SALE_CHARGE"}
        assert {t["bookingEntry"] for t in transactions if t["transactionType"] == "SALE"} == {
            "CREDIT"
        }
        assert {t["bookingEntry"] for t in transactions if t["transactionType"] != "SALE"} == {
            "DEBIT"
        }
        assert {
            t.get("feeType") for t in transactions if t["transactionType"] == "NON_SALE_CHARGE"
        } >= {"AD_FEE"}

        # A SALE is the order's items and shipping (tax goes to the state) less eBay's fees.
        orders = {
            o["orderId"]: o
            for o in ebay_orders_modified_between(
                sb.state, MERCHANT, a - timedelta(days=60), end + timedelta(days=1)
            )
        }
        for sale in (
            t for t in transactions if t["transactionType"] == "SALE" and t["orderId"] in orders
        ):
            order = orders[sale["orderId"]]
            p = order["pricingSummary"]
            proceeds = _d(p["total"]) - _d(p["tax"])
            assert _d(sale["amount"]) == proceeds - _d(order["totalMarketplaceFee"])
            fees = sum(
                _d(f["amount"]) for li in sale["orderLineItems"] for f in li["marketplaceFees"]
            )
            assert fees == _d(sale["totalFeeAmount"]) == _d(order["totalMarketplaceFee"])

        payouts = list(client.payouts(creds(MERCHANT), a, end))
        assert payouts == ebay_payouts_between(sb.state, MERCHANT, a, end) and len(payouts) >= 7
        # The quarter's payout that is one line short pays a credit no listing shows.
        short = {p.payout_id: p.missing for p in ebay_short_payouts(sb.state, MERCHANT, a, end)}
        for plan, record in zip(
            ebay_payout_plans_between(sb.state, MERCHANT, a, end), payouts, strict=True
        ):
            inside = list(client.transactions(creds(MERCHANT), plan.start, plan.end))
            missing = short.get(record["payoutId"], Decimal(0))
            assert _signed(inside) + missing == _d(record["amount"])
            assert len(inside) + (record["payoutId"] in short) == record["transactionCount"]
            assert {t["payoutId"] for t in inside} == {record["payoutId"]}


def test_each_payout_is_read_by_its_id_and_one_a_quarter_is_a_line_short():
    """getTransactions with filter=payoutId:{id} alone answers what a payout pays, whatever the
    dates; the payout is their signed sum, except once per calendar quarter and site, where one
    credit is paid but listed nowhere (ebay_short_payouts says which and how much)."""
    with _sandbox(finances_page_size=25) as sb:
        client = _client(sb)
        # The client clamps window ends to real time and the sandbox clock runs ahead of it.
        end = sb.state.now() - timedelta(minutes=5)
        a = end - timedelta(days=195)  # always holds a whole calendar quarter
        sites = ("EBAY_US", "EBAY_DE")
        payouts = list(client.payouts(creds(MERCHANT), a, end, marketplace_ids=list(sites)))
        short = {
            p.payout_id: p
            for site in sites
            for p in ebay_short_payouts(sb.state, MERCHANT, a, end, marketplace_id=site)
        }
        ids = [p["payoutId"] for p in payouts]
        assert len(set(ids)) == len(ids) and len(ids) >= 2 * 25
        assert len(short) >= 2  # one a quarter on each site
        stats = RequestStats()
        got = list(
            client.payout_transactions(creds(MERCHANT), ids, marketplace_ids=list(sites), stats=stats)
        )
        by_payout: dict[str, list[dict[str, Any]]] = {}
        for t in got:
            by_payout.setdefault(t["payoutId"], []).append(t)
        assert set(by_payout) == set(ids)
        assert stats.operation("getTransactions").pages >= 2 * len(ids)  # each id on each site
        for record in payouts:
            pid = record["payoutId"]
            listed = by_payout[pid]
            site = next(
                s
                for s in sites
                if ebay_payout_transactions(sb.state, MERCHANT, pid, marketplace_id=s)
            )
            assert listed == ebay_payout_transactions(sb.state, MERCHANT, pid, marketplace_id=site)
            assert {t["amount"]["currency"] for t in listed} == {record["amount"]["currency"]}
            assert all(t["transactionStatus"] == "PAYOUT" for t in listed)
            missing = short[pid].missing if pid in short else Decimal(0)
            assert _signed(listed) + missing == _d(record["amount"])
            assert len(listed) + (pid in short) == record["transactionCount"]
        for unlisted in short.values():
            assert unlisted.missing > 0
            assert unlisted.transaction_id not in {t["transactionId"] for t in got}
        # The same over plain HTTP: the filter alone, no date range; an unknown payout has none,
        # answered as eBay does, 204 No Content (which the client reads as an empty page).
        token = sb.state.issue_token("ebay", MERCHANT)[0]
        for pid, want in ((ids[0], len(by_payout[ids[0]])), ("7000000000", 0)):
            raw = requests.get(
                sb.base_url + "/ebay/sell/finances/v1/transaction",
                params={"filter": f"payoutId:{{{pid}}}", "limit": 1000},
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            )
            if want:
                assert raw.status_code == 200 and raw.json()["total"] == want
            else:
                assert raw.status_code == 204 and raw.content == b""
        assert not list(client.payout_transactions(creds(MERCHANT), ["7000000000"]))


def test_fees_without_orders_and_subscriptions_look_like_ebay_s():
    """Ad fees (NON_SALE_CHARGE AD_FEE) name their order only in references[]; the monthly store
    fee is eBay's EBAY_STORE_SUBSCRIPTION_FEE; refunds are DEBITs naming their order."""
    with _sandbox() as sb:
        client = _client(sb)
        end = sb.state.now() - timedelta(minutes=5)
        a = end - timedelta(days=70)
        money = list(client.transactions(creds(MERCHANT), a, end))
        orders = {
            o["orderId"]
            for o in ebay_orders_modified_between(sb.state, MERCHANT, a - timedelta(days=60), end)
        }
        ads = [t for t in money if t.get("feeType") == "AD_FEE"]
        assert ads and all(t["transactionType"] == "NON_SALE_CHARGE" for t in ads)
        for t in ads:
            assert "orderId" not in t and "buyer" not in t
            kinds = [r["referenceType"] for r in t["references"]]
            assert kinds == ["ITEM_ID", "ORDER_ID"] and t["references"][1]["referenceId"] in orders
        stores = [t for t in money if t.get("feeType") == "EBAY_STORE_SUBSCRIPTION_FEE"]
        months = {t["transactionDate"][:7] for t in stores}
        assert len(stores) == len(months) >= 2
        assert all(t["bookingEntry"] == "DEBIT" and "references" not in t for t in stores)
        refunds = [t for t in money if t["transactionType"] == "REFUND"]
        assert refunds and all(t["bookingEntry"] == "DEBIT" and t["orderId"] for t in refunds)
        # The normalizer finds an ad fee's order in its references.
        normalized = ebay_normalizer.normalize_transactions(ads)
        assert not normalized.rejects
        assert [n.order_id for n in normalized.transactions] == [
            t["references"][1]["referenceId"] for t in ads
        ]


def test_no_payout_is_negative_on_any_site():
    """eBay never pays out a negative amount (it charges the seller's card instead): every payout
    of a whole week, on every site, over the sandbox's history is positive. The week the history
    starts in is left out: it holds only the hours after that start, and a lone cancelled order
    nets -0.30."""
    with _sandbox() as sb:
        client = _client(sb)
        end = sb.state.now() - timedelta(minutes=5)
        history = datetime.combine(sb.config.history_start, time(), tzinfo=UTC)
        for merchant in ("acme_parts", "mower_depot"):
            # The payout of the first week that starts in the history, and every one after it.
            since = min(
                p.payout_date
                for p in ebay_payout_plans_between(sb.state, merchant, history, end)
                if p.start >= history
            )
            payouts = list(
                client.payouts(creds(merchant), since, end, marketplace_ids=list(EBAY_MARKETPLACES))
            )
            assert len(payouts) >= 25 * len(EBAY_MARKETPLACES)
            assert min(_d(p["amount"]) for p in payouts) > 0


def test_inventory_items_page_to_the_end():
    with _sandbox(inventory_page_size=10) as sb:
        stats = RequestStats()
        items = list(_client(sb).inventory_items(creds(MERCHANT), stats=stats))
        assert items == ebay_inventory_items(sb.state, MERCHANT)
        assert len(items) == 48 and stats.operation("getInventoryItems").pages == 5
        assert all(
            isinstance(i["availability"]["shipToLocationAvailability"]["quantity"], int)
            for i in items
        )
        # Weight is an exact JSON number, decoded as Decimal.
        assert isinstance(items[0]["packageWeightAndSize"]["weight"]["value"], Decimal)


def test_documented_payloads_are_served_and_accepted():
    with _sandbox() as sb:
        for operation, name, key in (
            ("getOrders", "ebay_getOrders_doc_shape.json", "orders"),
            ("getTransactions", "ebay_getTransactions_doc_shape.json", "transactions"),
            ("getInventoryItems", "ebay_getInventoryItems_doc_shape.json", "inventoryItems"),
        ):
            sb.state.queue_fixture_file("ebay", MERCHANT, operation, FIXTURES / name)
            want = json.loads((FIXTURES / name).read_text(), parse_float=Decimal)[key]
            client = _client(sb)
            end = _midnight(sb.state.now())
            if operation == "getOrders":
                got = list(client.orders(creds(MERCHANT), end - timedelta(days=1), end))
            elif operation == "getTransactions":
                got = list(client.transactions(creds(MERCHANT), end - timedelta(days=1), end))
            else:
                got = list(client.inventory_items(creds(MERCHANT)))
                # This documented page says `next` is offset 2 of 3: the client follows it into
                # the generated catalog.
                want = want + ebay_inventory_items(sb.state, MERCHANT)[2:]
            assert got == want, operation


# ---------------------------------------------------------------------------------------------
# Faults and secrets


def _extract(
    client: EbaySellHttp, merchants: list[str], end: datetime, days: int, stats: RequestStats
) -> dict[str, dict[str, list]]:
    out: dict[str, dict[str, list]] = {}
    for merchant in merchants:
        got: dict[str, list] = {"orders": [], "transactions": [], "payouts": []}
        for d in range(days, 0, -1):
            a, b = end - timedelta(days=d), end - timedelta(days=d - 1)
            got["orders"] += client.orders(creds(merchant), a, b, stats=stats)
            got["transactions"] += client.transactions(creds(merchant), a, b, stats=stats)
        got["payouts"] = list(
            client.payouts(creds(merchant), end - timedelta(days=21), end, stats=stats)
        )
        got["inventory"] = list(client.inventory_items(creds(merchant), stats=stats))
        out[merchant] = got
    return out


@pytest.mark.timeout(120)
def test_faults_of_every_kind_lose_and_duplicate_nothing(caplog):
    caplog.set_level(logging.DEBUG)
    merchants = ["acme_parts", "mower_depot", "zed_auto"]
    injected: Counter = Counter()
    runs = []
    stats = RequestStats()
    for seed in (101, 202):
        faults = FaultConfig.mixed(0.2, seed=seed, timeout_seconds=0.5, retry_after_seconds=0.01)
        with _sandbox(
            faults=faults, orders_page_size=3, finances_page_size=4, inventory_page_size=6
        ) as sb:
            end = _midnight(sb.state.now())
            result = _extract(
                _client(sb, read_timeout=0.25, max_retries=10), merchants, end, 4, stats
            )
            clean = {}
            for merchant, got in result.items():
                a = end - timedelta(days=4)
                orders = [o for o in got["orders"] if _well_formed(o, "orderId")]
                transactions = [t for t in got["transactions"] if _well_formed(t, "transactionId")]
                payouts = [p for p in got["payouts"] if _well_formed(p, "payoutId")]
                inventory = [i for i in got["inventory"] if _well_formed(i, "sku")]
                assert len({o["orderId"] for o in orders}) == len(orders)
                assert sorted(orders, key=lambda o: o["orderId"]) == sorted(
                    ebay_orders_modified_between(sb.state, merchant, a, end),
                    key=lambda o: o["orderId"],
                )
                assert transactions == ebay_transactions_between(sb.state, merchant, a, end)
                assert payouts == ebay_payouts_between(
                    sb.state, merchant, end - timedelta(days=21), end
                )
                assert inventory == ebay_inventory_items(sb.state, merchant)
                clean[merchant] = (orders, transactions, payouts, inventory)
            runs.append(clean)
            injected.update(sb.state.faults.counts)
    total = stats.total()
    assert total.retries > 0 and total.malformed > 0 and total.errors == 0
    # Same seed and clock day, different fault sequences: the same records.
    assert runs[0] == runs[1]
    assert all(injected[kind] > 0 for kind in FAULT_KINDS), injected
    assert CLIENT_SECRET not in caplog.text


def test_no_secret_or_pii_in_logs_or_errors(caplog):
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    # Read timeouts well above a loaded machine's response time, injected stalls well above them:
    # only the injected faults time out (0.2 s flaked in CI while a benchmark loaded both cores).
    faults = FaultConfig.mixed(0.3, seed=9, timeout_seconds=1.6, retry_after_seconds=0.01)
    with _sandbox(faults=faults, orders_page_size=5) as sb:
        end = _midnight(sb.state.now())
        client = _client(sb, read_timeout=0.8, max_retries=12)
        orders = list(client.orders(creds(MERCHANT), end - timedelta(days=3), end))
        list(client.transactions(creds(MERCHANT), end - timedelta(days=3), end))
        brittle = _client(sb, max_retries=0, read_timeout=0.8)
        for _ in range(15):
            try:
                list(brittle.orders(creds(MERCHANT), end - timedelta(days=1), end))
            except ApiRequestError as exc:
                errors.append(str(exc))
        with pytest.raises(ApiRequestError) as info:
            list(
                client.orders(
                    ChannelCredentials(MERCHANT, "sandbox-refresh-NOPE!"),
                    end - timedelta(days=1),
                    end,
                )
            )
        errors.append(str(info.value))
        tokens = sb.state.issued_access_tokens()
    assert errors and tokens and orders
    assert any("gave up" in e for e in errors)
    secrets = [CLIENT_SECRET, f"sandbox-refresh-{MERCHANT}", "sandbox-refresh-NOPE!", *tokens]
    pii = []
    for o in orders:
        reg = o["buyer"]["buyerRegistrationAddress"]
        pii += [
            reg["fullName"],
            reg["email"],
            reg["primaryPhone"]["phoneNumber"],
            reg["contactAddress"]["addressLine1"],
            o["buyer"]["username"],
        ]
    haystack = caplog.text + "\n".join(errors)
    assert not [v for v in secrets + pii if v in haystack]


def test_a_seller_on_two_sites_gets_the_orders_and_money_of_both():
    """eBay Finances answers for the site in X-EBAY-C-MARKETPLACE-ID only: a seller on EBAY_DE and
    EBAY_GB must be read on both (issue 13, defect 5)."""
    with _sandbox() as sb:
        client = _client(sb)
        # The client clamps window ends to real time and the sandbox clock runs ahead of it:
        # end the window before real now, or orders modified in between are expected but not read.
        now = sb.state.now() - timedelta(minutes=5)
        a = now - timedelta(days=4)
        sites = ("EBAY_DE", "EBAY_GB")
        want_orders = {
            site: {o["orderId"] for o in ebay_orders_modified_between(sb.state, MERCHANT, a, now, marketplace_id=site)}
            for site in sites
        }
        want_money = {
            site: {t["transactionId"] for t in ebay_transactions_between(sb.state, MERCHANT, a, now, marketplace_id=site)}
            for site in sites
        }
        assert all(want_orders.values()) and all(want_money.values())
        stats = RequestStats()
        orders = list(client.orders(creds(MERCHANT), a, now, marketplace_ids=list(sites), stats=stats))
        assert sorted(o["orderId"] for o in orders) == sorted(want_orders["EBAY_DE"] | want_orders["EBAY_GB"])
        currency = {o["orderId"]: o["pricingSummary"]["total"]["currency"] for o in orders}
        assert {currency[i] for i in want_orders["EBAY_DE"]} == {"EUR"}
        assert {currency[i] for i in want_orders["EBAY_GB"]} == {"GBP"}
        money = list(client.transactions(creds(MERCHANT), a, now, marketplace_ids=list(sites)))
        assert {t["transactionId"] for t in money} == want_money["EBAY_DE"] | want_money["EBAY_GB"]
        assert {t["amount"]["currency"] for t in money} == {"EUR", "GBP"}
        # Payouts are read on both sites too, and each is yielded once.
        payouts = list(client.payouts(creds(MERCHANT), now - timedelta(days=30), now, marketplace_ids=list(sites)))
        assert payouts and len({p["payoutId"] for p in payouts}) == len(payouts)
