"""The Amazon sandbox and the real Amazon client, end to end over HTTP (no mocks of our code)."""

from __future__ import annotations

import gzip
import json
import logging
import re
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from illuma_pipelines.marketplaces import CHANNELS
from illuma_pipelines.normalize.amazon_settlement import parse_settlement_report
from illuma_pipelines.sandbox.amazon import (
    AMAZON_MARKETPLACES,
    RATE_LIMITS,
    SETTLEMENT_REPORT_TYPE,
    amazon_orders_updated_between,
    amazon_settlements_between,
    amazon_transactions_posted_between,
    flat_amount,
    order_plan,
    order_plans_created_between,
    order_plans_updated_between,
    orders_created_on,
    render_order,
    render_settlement,
    render_transaction,
    set_report_outcome,
    settlement_by_index,
    settlement_from_report_id,
    settlement_index,
    transactions_posted_between,
)
from illuma_pipelines.sandbox.faults import FAULT_KINDS, FaultConfig
from illuma_pipelines.sandbox.server import (
    CHANNEL_MODULES,
    SandboxClock,
    SandboxConfig,
    SandboxServer,
    build_app,
)
from illuma_pipelines.sandbox.world import MerchantWorld, parts_catalog, stable_int
from illuma_pipelines.settlements import vocab
from resources.amazon import AmazonReportError
from resources.http import ApiRequestError, ChannelCredentials, RequestStats
from tests.sandbox_helpers import (
    CLIENT_SECRET,
    SHORT_TOKEN_LIFETIME,
    amazon_client,
    amazon_sandbox,
    call_once_per_token,
    creds,
    sandbox_now,
    well_formed_inventory,
    well_formed_order,
    well_formed_transaction,
)

MERCHANT = "acme_parts"


def _token(server: SandboxServer, merchant: str = MERCHANT) -> str:
    response = requests.post(
        server.base_url + "/amazon/auth/o2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": f"sandbox-refresh-{merchant}",
            "client_id": "id",
            "client_secret": "secret",
        },
        timeout=5,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    return body["access_token"]


def _settlement_rows(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    lines = text.splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    return rows[0], rows[1:]


def _amount(text: str) -> Decimal:
    """A settlement file's amount read by the test itself: "1234.56", or the EU's "1.234,56"."""
    if "," in text:
        text = text.replace(".", "").replace(",", ".")
    return Decimal(text)


RESERVE_DESCRIPTIONS = ("Current Reserve Amount", "Previous Reserve Amount Balance")


def _row_sum(rows: list[dict[str, str]], *, reserves: bool = True) -> Decimal:
    return sum(
        (
            _amount(r["amount"])
            for r in rows
            if reserves or r["amount-description"] not in RESERVE_DESCRIPTIONS
        ),
        Decimal("0"),
    )


# ---------------------------------------------------------------------------------------------
# Server basics


def test_server_starts_fast_mounts_amazon_and_plugs_in_channels():
    with amazon_sandbox() as sb:
        assert sb.base_url.startswith("http://127.0.0.1:")
        assert requests.get(sb.base_url + "/health", timeout=5).json() == {"status": "ok"}
        assert "amazon" in sb.app.state.channels
    app = build_app(SandboxConfig())
    # Every marketplace's plug-in (illuma_pipelines/marketplaces.py) is mounted.
    for channel in ("ebay", "walmart"):
        try:
            __import__(CHANNEL_MODULES[channel])
        except ModuleNotFoundError:
            assert channel not in app.state.channels
        else:
            assert channel in app.state.channels


def test_a_marketplace_without_an_importable_plug_in_is_an_error(monkeypatch):
    assert build_app(SandboxConfig()).state.channels == CHANNELS
    monkeypatch.setitem(CHANNEL_MODULES, "nowhere", "illuma_pipelines.sandbox.nowhere")
    with pytest.raises(ModuleNotFoundError) as info:
        build_app(SandboxConfig())
    assert "'nowhere'" in " ".join(info.value.__notes__)


def test_world_is_stable_across_processes():
    day = datetime(2026, 3, 3, tzinfo=UTC).date()
    code = (
        "from datetime import date;"
        "from illuma_pipelines.sandbox.amazon import orders_created_on;"
        "from illuma_pipelines.sandbox.world import MerchantWorld;"
        "w = MerchantWorld(5, 'acme_parts', date(2026, 1, 1));"
        "print([(p.order_id, str(p.grand_total), p.buyer.name) for p in orders_created_on(w, date(2026, 3, 3))]);"
        "print([(p.sku, str(p.price)) for p in w.catalog][:5])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    world = MerchantWorld(5, "acme_parts", datetime(2026, 1, 1).date())
    assert out[0] == str(
        [(p.order_id, str(p.grand_total), p.buyer.name) for p in orders_created_on(world, day)]
    )
    assert out[1] == str([(p.sku, str(p.price)) for p in world.catalog][:5])
    catalog = parts_catalog(5, "acme_parts")
    assert len({p.sku for p in catalog}) == len(catalog)
    assert all(isinstance(p.price, Decimal) and p.price > p.cost for p in catalog)
    assert parts_catalog(5, "other_shop") != catalog
    assert stable_int("a", 1) == stable_int("a", 1) != stable_int("a", 2)


def test_day_data_does_not_change_with_now_except_status_fields():
    world = MerchantWorld(3, MERCHANT, datetime(2026, 1, 1).date())
    day = datetime(2026, 2, 10, tzinfo=UTC)
    early, late = day + timedelta(days=1), day + timedelta(days=40)
    status_fields = {"lastUpdatedTime", "fulfillment", "packages", "orderItems"}
    seen_statuses = Counter()
    for plan in orders_created_on(world, day.date()):
        a = render_order(plan, early, {"BUYER", "RECIPIENT", "PROCEEDS", "FULFILLMENT", "PACKAGES"})
        b = render_order(plan, late, {"BUYER", "RECIPIENT", "PROCEEDS", "FULFILLMENT", "PACKAGES"})
        assert {k: v for k, v in a.items() if k not in status_fields} == {
            k: v for k, v in b.items() if k not in status_fields
        }
        assert [i["product"] for i in a["orderItems"]] == [i["product"] for i in b["orderItems"]]
        seen_statuses[plan.status_at(late)[0]] += 1
    assert {"DELIVERED"} <= set(seen_statuses)
    # Over a month, orders reach every status, and some are refunded.
    month = [
        p for d in range(30) for p in orders_created_on(world, (day + timedelta(days=d)).date())
    ]
    assert {p.status_at(late)[0] for p in month} >= {"DELIVERED", "CANCELLED"}
    assert any(p.refund_at for p in month) and {p.fulfilled_by for p in month} == {
        "AMAZON",
        "MERCHANT",
    }
    assert {p.status_at(p.created)[0] for p in month} == {"PENDING"}


# ---------------------------------------------------------------------------------------------
# Auth


def test_lwa_token_refresh_and_expired_token_retry(caplog):
    with amazon_sandbox(access_token_lifetime=3600) as sb:
        client = amazon_client(sb)
        now = sb.state.now()
        window = (now - timedelta(days=2), now - timedelta(hours=1))
        first = list(client.search_orders(creds(MERCHANT), *window))
        assert sb.state.served["lwaToken"] == 1
        # Expire the cached token behind the client's back: the next call gets 403 "expired",
        # refreshes once and succeeds.
        for token in sb.state.issued_access_tokens():
            sb.state.revoke_token(token)
        stats = RequestStats()
        assert list(client.search_orders(creds(MERCHANT), *window, stats=stats)) == first
        assert sb.state.served["lwaToken"] == 2
        assert stats.operation("searchOrders").retries == 1

        raw = requests.get(
            sb.base_url + "/amazon/orders/2026-01-01/orders/111-1111111-1111111",
            headers={"x-amz-access-token": sb.state.issued_access_tokens()[0]},
            timeout=5,
        )
        assert raw.status_code == 403
        assert "expired" in raw.json()["errors"][0]["details"]

    # Short-lived tokens are refreshed before they expire, without a 403.
    with amazon_sandbox(access_token_lifetime=SHORT_TOKEN_LIFETIME) as sb:
        client = amazon_client(sb)
        now = sb.state.now()
        call_once_per_token(
            lambda: list(
                client.search_orders(
                    creds(MERCHANT), now - timedelta(hours=6), now - timedelta(hours=1)
                )
            )
        )
        assert sb.state.served["lwaToken"] == 3
        assert sb.state.served["searchOrders"] == 3  # the 403 path was never needed

    with amazon_sandbox() as sb:
        bad = ChannelCredentials(MERCHANT, "not-a-sandbox-token-SECRET")
        with pytest.raises(ApiRequestError) as info:
            list(amazon_client(sb).search_orders(bad, sb.state.now() - timedelta(days=1)))
        assert "lwaToken" in str(info.value) and "invalid_grant" in str(info.value)
        assert "SECRET" not in str(info.value) and "SECRET" not in repr(bad)


# ---------------------------------------------------------------------------------------------
# Orders


def test_search_orders_pages_to_the_end_and_matches_the_sandbox():
    with amazon_sandbox(orders_page_size=4) as sb:
        now = sb.state.now()
        # The window ends before real now - 2 min (sandbox_now is 2-3 min ahead): the client would
        # clamp a later end, and an order updated in between would be expected but not asked for.
        a, b = now - timedelta(days=6), now - timedelta(minutes=5)
        stats = RequestStats()
        got = list(amazon_client(sb).search_orders(creds(MERCHANT), a, b, stats=stats))
        expected = amazon_orders_updated_between(sb.state, MERCHANT, a, b)
        assert got == expected and len(got) > 12
        assert stats.operation("searchOrders").pages == -(-len(got) // 4)
        statuses = {o["fulfillment"]["fulfillmentStatus"] for o in got}
        assert statuses >= {"SHIPPED"} and statuses <= {
            "PENDING",
            "UNSHIPPED",
            "SHIPPED",
            "CANCELLED",
        }
        # Money stays string text in Orders v2026.
        shipped = next(o for o in got if "proceeds" in o)
        assert isinstance(shipped["proceeds"]["grandTotal"]["amount"], str)
        # getOrder returns the same record.
        assert amazon_client(sb).get_order(creds(MERCHANT), got[0]["orderId"]) == got[0]


def test_consecutive_windows_partition_the_orders_exactly():
    with amazon_sandbox(orders_page_size=5) as sb:
        now = sb.state.now()
        client = amazon_client(sb)
        start = (now - timedelta(days=5)).replace(hour=0, minute=0)
        ids: list[str] = []
        for d in range(4):
            ids += [
                o["orderId"]
                for o in client.search_orders(
                    creds(MERCHANT), start + timedelta(days=d), start + timedelta(days=d + 1)
                )
            ]
        whole = [
            o["orderId"]
            for o in amazon_orders_updated_between(
                sb.state, MERCHANT, start, start + timedelta(days=4)
            )
        ]
        assert len(ids) == len(set(ids)) and sorted(ids) == sorted(whole)


def test_search_orders_validates_like_amazon():
    with amazon_sandbox() as sb:
        headers = {"x-amz-access-token": _token(sb)}
        url = sb.base_url + "/amazon/orders/2026-01-01/orders"
        now = sb.state.now()
        both = requests.get(
            url,
            params={
                "createdAfter": "2026-01-01T00:00:00Z",
                "lastUpdatedAfter": "2026-01-01T00:00:00Z",
            },
            headers=headers,
            timeout=5,
        )
        assert both.status_code == 400 and both.json()["errors"][0]["code"] == "InvalidInput"
        too_late = requests.get(
            url,
            params={
                "lastUpdatedAfter": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "lastUpdatedBefore": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            headers=headers,
            timeout=5,
        )
        assert too_late.status_code == 400
        ok = requests.get(
            url,
            params={
                "createdAfter": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "maxResultsPerPage": 2,
            },
            headers=headers,
            timeout=5,
        )
        assert ok.status_code == 200 and ok.headers["x-amzn-RateLimit-Limit"]
        body = ok.json()
        assert (
            len(body["orders"]) == 2 and body["pagination"]["nextToken"] and "createdBefore" in body
        )
        changed = requests.get(
            url,
            params={
                "createdAfter": "2026-01-01T00:00:00Z",
                "paginationToken": body["pagination"]["nextToken"],
            },
            headers=headers,
            timeout=5,
        )
        assert changed.status_code == 400
        missing = requests.get(url + "/111-0000000-0000000", headers=headers, timeout=5)
        assert missing.status_code == 404


# ---------------------------------------------------------------------------------------------
# Finances, settlements, reports


def test_finances_and_settlements_reconcile_to_the_penny():
    with amazon_sandbox(finances_page_size=7) as sb:
        client = amazon_client(sb)
        now = sb.state.now()
        settlements = list(client.settlement_reports(creds(MERCHANT), now - timedelta(days=60)))
        assert len(settlements) >= 3
        assert len({s["settlementId"] for s in settlements}) == len(settlements)
        world = sb.state.world(MERCHANT)
        for record in settlements:
            totals, rows = _settlement_rows(record["document"])
            assert totals["settlement-id"] == record["settlementId"]
            assert all(
                r["total-amount"] == "" and r["settlement-id"] == totals["settlement-id"]
                for r in rows
            )
            (plan,) = [
                s
                for s in amazon_settlements_between(
                    sb.state, MERCHANT, now - timedelta(days=60), now + timedelta(seconds=1)
                )
                if s.settlement_id == record["settlementId"]
            ]
            # The rows add up to the reported total, but for the quarter's missing row.
            row_sum = _row_sum(rows)
            assert row_sum + plan.short_by == Decimal(totals["total-amount"]) == plan.total
            assert {r["amount-description"] for r in rows} >= {
                "Principal",
                "Commission",
                "Subscription Fee",
            }
            start = datetime.fromisoformat(record["report"]["dataStartTime"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(record["report"]["dataEndTime"].replace("Z", "+00:00"))
            transactions = list(client.list_transactions(creds(MERCHANT), start, end))
            # Finance transactions are every row but the reserves (the missing one included).
            assert (
                sum((t["totalAmount"]["currencyAmount"] for t in transactions), Decimal("0"))
                == _row_sum(rows, reserves=False) + plan.short_by
                == plan.net_proceeds
            )
            assert all(
                isinstance(t["totalAmount"]["currencyAmount"], Decimal | int) for t in transactions
            )
            # Each order's principal rows equal the order's item subtotal.
            principal = Counter()
            for r in rows:
                if r["transaction-type"] == "Order" and r["amount-description"] == "Principal":
                    principal[r["order-id"]] += Decimal(r["amount"])
            for order_id, amount in list(principal.items())[:10]:
                plan = order_plan(world, order_id, now)
                assert plan is not None and plan.item_total == amount


AMAZON_DE = "A1PA6795UKMFR9"
AMAZON_UK = "A1F83G8C2ARO7P"
AMAZON_US = "ATVPDKIKX0DER"


def _transaction_key(t: dict) -> tuple[str, str]:
    """(settlement transaction-type, order id) of a Finances transaction, as its rows say it."""
    related = {
        r["relatedIdentifierName"]: r["relatedIdentifierValue"] for r in t["relatedIdentifiers"]
    }
    kind = {"Shipment": "Order", "Refund": "Refund", "ProductAdsPayment": "ServiceFee"}.get(
        t["transactionType"], "other-transaction"
    )
    return kind, related.get("ORDER_ID", "")


def test_a_de_uk_merchant_gets_each_marketplaces_settlements_in_its_currency():
    """Issue 13, defect 5: Amazon settles each marketplace apart; a DE+UK seller's settlements
    are the DE ones in EUR and the UK ones in GBP, each holding exactly its marketplace's
    transactions, and none of Amazon.com's."""
    wanted = {AMAZON_DE: ("EUR", "Amazon.de"), AMAZON_UK: ("GBP", "Amazon.co.uk")}
    with amazon_sandbox() as sb:
        client = amazon_client(sb)
        now = sb.state.now()
        since = now - timedelta(days=60)
        settlements = list(
            client.settlement_reports(
                creds(MERCHANT), since, marketplace_ids=[AMAZON_DE, AMAZON_UK]
            )
        )
        expected = {
            m: amazon_settlements_between(
                sb.state, MERCHANT, since, now + timedelta(seconds=1), marketplace_id=m
            )
            for m in (AMAZON_DE, AMAZON_UK, AMAZON_US)
        }
        by_marketplace: dict[str, list[dict]] = {}
        for record in settlements:
            (marketplace,) = record["report"]["marketplaceIds"]
            by_marketplace.setdefault(marketplace, []).append(record)
        assert set(by_marketplace) == set(wanted)
        for marketplace in wanted:
            assert len(expected[marketplace]) >= 3
            assert sorted(r["settlementId"] for r in by_marketplace[marketplace]) == sorted(
                s.settlement_id for s in expected[marketplace]
            )
        us_ids = {s.settlement_id for s in expected[AMAZON_US]}
        assert us_ids and not us_ids & {r["settlementId"] for r in settlements}
        assert len({r["report"]["reportId"] for r in settlements}) == len(settlements)

        headers = {"x-amz-access-token": _token(sb)}
        world = sb.state.world(MERCHANT)
        for record in settlements:
            (marketplace,) = record["report"]["marketplaceIds"]
            currency, name = wanted[marketplace]
            report_id = record["report"]["reportId"]
            # getReport resolves the report from its id alone, with its marketplace.
            assert settlement_from_report_id(world, report_id)[0] == marketplace
            got = requests.get(
                f"{sb.base_url}/amazon/reports/2021-06-30/reports/{report_id}",
                headers=headers,
                timeout=5,
            ).json()
            assert got["marketplaceIds"] == [marketplace]
            assert got["reportDocumentId"] == record["report"]["reportDocumentId"]

            totals, rows = _settlement_rows(record["document"])
            assert totals["currency"] == currency
            assert {r["marketplace-name"] for r in rows if r["order-id"]} == {name}
            start = datetime.fromisoformat(record["report"]["dataStartTime"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(record["report"]["dataEndTime"].replace("Z", "+00:00"))
            transactions = list(
                client.list_transactions(creds(MERCHANT), start, end, marketplace_ids=[marketplace])
            )
            assert transactions
            assert {t["totalAmount"]["currencyCode"] for t in transactions} == {currency}
            # Row by row to the cent: each transaction's amount is its rows' amount (the missing
            # row put back), no row belongs to a transaction of another marketplace or period,
            # and the reserve rows are no finance transactions.
            (plan,) = [
                s for s in expected[marketplace] if s.settlement_id == record["settlementId"]
            ]
            from_rows: Counter = Counter()
            for r in rows:
                if r["amount-description"] not in RESERVE_DESCRIPTIONS:
                    from_rows[(r["transaction-type"], r["order-id"])] += _amount(r["amount"])
            if plan.missing_row is not None:
                missing = plan.missing_row[0]
                key = (
                    (missing.settlement_type, "")
                    if missing.order is None
                    else (
                        "Order" if missing.transaction_type == "Shipment" else "Refund",
                        missing.order.order_id,
                    )
                )
                from_rows[key] += plan.short_by
            from_transactions: Counter = Counter()
            for t in transactions:
                from_transactions[_transaction_key(t)] += Decimal(
                    t["totalAmount"]["currencyAmount"]
                )
            assert from_rows == from_transactions
            assert (
                _amount(totals["total-amount"])
                == plan.total
                == (
                    sum(from_transactions.values(), Decimal("0"))
                    + plan.reserve_released
                    - plan.reserve_held
                )
            )
            assert _row_sum(rows) + plan.short_by == plan.total

            # The settlement parser reads it (Amazon.de's "1.234,56" too): its currency on every
            # line, nothing rejected.
            report = parse_settlement_report(record["document"])
            assert not report.rejects
            assert report.settlement_id == record["settlementId"]
            assert report.currency == currency
            assert {ln.currency for ln in report.lines} == {currency}
            assert (
                sum((ln.amount for ln in report.lines), Decimal("0")) + plan.short_by
                == report.total_amount
                == _amount(totals["total-amount"])
            )
            assert {ln.marketplace_name for ln in report.lines if ln.order_id} == {name}

        # Without marketplaces the client asks for the resource's default, the US, as before.
        us = list(client.settlement_reports(creds(MERCHANT), since))
        assert {r["settlementId"] for r in us} == us_ids
        assert all(r["report"]["marketplaceIds"] == [AMAZON_US] for r in us)
        assert {
            totals["currency"] for totals, _ in map(_settlement_rows, (r["document"] for r in us))
        } == {"USD"}
        # An id the sandbox does not know is refused, as Amazon refuses an unknown marketplace.
        unknown = requests.get(
            sb.base_url + "/amazon/reports/2021-06-30/reports",
            params={"reportTypes": SETTLEMENT_REPORT_TYPE, "marketplaceIds": "A1VC38T7YXB528"},
            headers=headers,
            timeout=5,
        )
        assert unknown.status_code == 400


def test_report_listing_rules():
    with amazon_sandbox(reports_page_size=2) as sb:
        headers = {"x-amz-access-token": _token(sb)}
        url = sb.base_url + "/amazon/reports/2021-06-30/reports"
        now = sb.state.now()
        first = requests.get(
            url,
            params={"reportTypes": SETTLEMENT_REPORT_TYPE, "pageSize": 2},
            headers=headers,
            timeout=5,
        ).json()
        assert len(first["reports"]) == 2 and first["nextToken"]
        mixed = requests.get(
            url, params={"nextToken": first["nextToken"], "pageSize": 2}, headers=headers, timeout=5
        )
        assert mixed.status_code == 400 and mixed.json()["errors"][0]["code"] == "400"
        second = requests.get(
            url, params={"nextToken": first["nextToken"]}, headers=headers, timeout=5
        ).json()
        assert {r["reportId"] for r in second["reports"]}.isdisjoint(
            r["reportId"] for r in first["reports"]
        )
        old = requests.get(
            url,
            params={
                "reportTypes": SETTLEMENT_REPORT_TYPE,
                "createdSince": (now - timedelta(days=120)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            headers=headers,
            timeout=5,
        )
        assert old.status_code == 400
        refused = requests.post(
            url,
            json={"reportType": SETTLEMENT_REPORT_TYPE, "marketplaceIds": ["ATVPDKIKX0DER"]},
            headers=headers,
            timeout=5,
        )
        assert (
            refused.status_code == 400
            and "cannot be requested" in refused.json()["errors"][0]["message"]
        )
        # The client asks for at most 90 days even when told more.
        got = list(amazon_client(sb).settlement_reports(creds(MERCHANT), now - timedelta(days=400)))
        assert 5 <= len(got) <= 7
        doc = requests.get(
            sb.base_url
            + "/amazon/reports/2021-06-30/documents/"
            + got[0]["report"]["reportDocumentId"],
            headers=headers,
            timeout=5,
        ).json()
        assert doc["compressionAlgorithm"] == "GZIP"
        assert (
            gzip.decompress(requests.get(doc["url"], timeout=5).content)
            .decode()
            .startswith("settlement-id\t")
        )


def test_request_report_done_and_fatal():
    # The report is IN_QUEUE / IN_PROGRESS for over a second after createReport: the first poll,
    # the next request the client sends, finds it unfinished even after a stall.
    with amazon_sandbox(report_queue_seconds=0.05, report_processing_seconds=1.0) as sb:
        client = amazon_client(sb)
        result = client.request_report(creds(MERCHANT), "GET_FBA_MYI_UNSUPPRESSED_INVENTORY_DATA")
        assert result["report"]["processingStatus"] == "DONE"
        header, *lines = result["document"].splitlines()
        assert header.startswith("sku\tfnsku\tasin") and len(lines) == sum(
            p.amazon_fba for p in sb.state.world(MERCHANT).catalog
        )
        assert sb.state.served["getReport"] >= 2  # it was polled through IN_QUEUE / IN_PROGRESS
    # Reports that only have to end, quickly.
    with amazon_sandbox(report_queue_seconds=0.05, report_processing_seconds=0.1) as sb:
        client = amazon_client(sb)
        set_report_outcome(sb.state, "GET_MERCHANT_LISTINGS_ALL_DATA", "FATAL")
        with pytest.raises(AmazonReportError, match="FATAL"):
            client.request_report(creds(MERCHANT), "GET_MERCHANT_LISTINGS_ALL_DATA")
        set_report_outcome(sb.state, "GET_MERCHANT_LISTINGS_ALL_DATA", "CANCELLED")
        with pytest.raises(AmazonReportError, match="CANCELLED"):
            client.request_report(creds(MERCHANT), "GET_MERCHANT_LISTINGS_ALL_DATA")
        with pytest.raises(ValueError, match="cannot be requested"):
            client.request_report(creds(MERCHANT), SETTLEMENT_REPORT_TYPE)


def test_inventory_and_pricing():
    with amazon_sandbox(inventory_page_size=4) as sb:
        client = amazon_client(sb)
        stats = RequestStats()
        summaries = list(client.inventory_summaries(creds(MERCHANT), stats=stats))
        fba = [p for p in sb.state.world(MERCHANT).catalog if p.amazon_fba]
        assert sorted(s["sellerSku"] for s in summaries) == sorted(p.sku for p in fba)
        assert stats.operation("getInventorySummaries").pages == -(-len(fba) // 4)
        assert all("inventoryDetails" in s for s in summaries)
        skus = [p.sku for p in sb.state.world(MERCHANT).catalog[:23]] + ["NOT-OURS"]
        priced = list(client.competitive_pricing(creds(MERCHANT), skus))
        assert [p["SellerSKU"] for p in priced] == skus
        assert priced[-1]["status"] == "ClientError" and priced[0]["status"] == "Success"
        amount = priced[0]["Product"]["CompetitivePricing"]["CompetitivePrices"][0]["Price"][
            "ListingPrice"
        ]["Amount"]
        assert isinstance(amount, Decimal)
        [offers] = client.listing_offers(creds(MERCHANT), skus[0])
        assert offers["SKU"] == skus[0] and sum(o["MyOffer"] for o in offers["Offers"]) == 1
        # The current Product Pricing model's name (February 2026), not the old MarketplaceID.
        assert offers["marketplaceId"] == "ATVPDKIKX0DER" and "MarketplaceID" not in offers
        assert offers["Summary"]["TotalOfferCount"] == len(offers["Offers"])


# ---------------------------------------------------------------------------------------------
# Faults, quotas, secrets


def _extract(client, merchants, days, now, stats):
    """A multi-day, multi-merchant extract the way the assets run it: one window per day."""
    out = {}
    start = (now - timedelta(days=days + 1)).replace(hour=0, minute=0)
    for merchant in merchants:
        orders, transactions = [], []
        for d in range(days):
            a, b = start + timedelta(days=d), start + timedelta(days=d + 1)
            orders += list(client.search_orders(creds(merchant), a, b, stats=stats))
            transactions += list(client.list_transactions(creds(merchant), a, b, stats=stats))
        inventory = list(client.inventory_summaries(creds(merchant), stats=stats))
        settlements = list(
            client.settlement_reports(creds(merchant), now - timedelta(days=30), stats=stats)
        )
        out[merchant] = (
            orders,
            transactions,
            inventory,
            settlements,
            start,
            start + timedelta(days=days),
        )
    return out


def _expected(sb, merchant, a, b):
    orders = amazon_orders_updated_between(sb.state, merchant, a, b)
    transactions = amazon_transactions_posted_between(sb.state, merchant, a, b)
    return orders, transactions


@pytest.mark.timeout(120)
def test_faults_of_every_kind_lose_and_duplicate_nothing(caplog):
    caplog.set_level(logging.DEBUG)
    merchants = ["acme_parts", "mower_depot", "zed_auto"]
    injected: Counter = Counter()
    passed_through = 0  # broken records the client handed on for the extract to quarantine
    for run, seed in enumerate((101, 202)):
        faults = FaultConfig.mixed(0.2, seed=seed, timeout_seconds=0.5, retry_after_seconds=0.01)
        with amazon_sandbox(
            faults=faults, orders_page_size=3, finances_page_size=4, inventory_page_size=4
        ) as sb:
            client = amazon_client(sb, read_timeout=0.25, max_retries=10)
            stats = RequestStats()
            result = _extract(client, merchants, 4, sb.state.now(), stats)
            for merchant, (orders, transactions, inventory, settlements, a, b) in result.items():
                want_orders, want_transactions = _expected(sb, merchant, a, b)
                good_orders = [o for o in orders if well_formed_order(o)]
                assert sorted(good_orders, key=lambda o: o["orderId"]) == sorted(
                    want_orders, key=lambda o: o["orderId"]
                ), (run, merchant)
                good_tx = [t for t in transactions if well_formed_transaction(t)]
                assert sorted(good_tx, key=lambda t: t["transactionId"]) == sorted(
                    want_transactions, key=lambda t: t["transactionId"]
                )
                good_inventory = [s for s in inventory if well_formed_inventory(s)]
                passed_through += len(orders) - len(good_orders) + len(transactions) - len(good_tx)
                passed_through += len(inventory) - len(good_inventory)
                assert sorted(s["sellerSku"] for s in good_inventory) == sorted(
                    p.sku for p in sb.state.world(merchant).catalog if p.amazon_fba
                )
                now = sb.state.now()
                want_settlements = amazon_settlements_between(
                    sb.state, merchant, now - timedelta(days=30), now + timedelta(seconds=1)
                )
                assert [s["settlementId"] for s in settlements] == [
                    s.settlement_id for s in want_settlements
                ]
            injected.update(sb.state.faults.counts)
            total = stats.total()
            assert total.retries > 0 and total.errors == 0
    assert all(injected[kind] > 0 for kind in FAULT_KINDS), injected
    assert passed_through > 0
    _assert_no_secrets(caplog.text, [CLIENT_SECRET])


@pytest.mark.timeout(120)
def test_quotas_are_enforced_and_429s_are_retried():
    speed = 2000.0
    with amazon_sandbox(enforce_quotas=True, quota_speedup=speed, inventory_page_size=3) as sb:
        now = sb.state.now()
        a, b = now - timedelta(days=6), now - timedelta(minutes=5)
        stats = RequestStats()
        client = amazon_client(sb, page_size=1)
        got = list(client.search_orders(creds(MERCHANT), a, b, stats=stats))
        assert got == amazon_orders_updated_between(sb.state, MERCHANT, a, b)
        inventory = list(client.inventory_summaries(creds(MERCHANT), stats=stats))
        assert len(inventory) == sum(p.amazon_fba for p in sb.state.world(MERCHANT).catalog)
        assert stats.operation("searchOrders").requests > 20  # beyond the burst: paced
        assert sum(sb.state.throttled.values()) <= 0.01 * sum(sb.state.served.values()) + 1
        _assert_log_respects_buckets(sb, speed)

        # Two independent clients share one merchant's quota: the server throttles, they retry,
        # and both still get everything.
        sb.state.throttled.clear()
        results: dict[int, list] = {}

        a = now - timedelta(days=3)
        got = [o for o in got if o["lastUpdatedTime"] >= a.strftime("%Y-%m-%dT%H:%M:%SZ")]

        def run(i: int) -> None:
            results[i] = list(amazon_client(sb, page_size=2).search_orders(creds(MERCHANT), a, b))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results[0] == results[1] == got
        assert sb.state.throttled["searchOrders"] > 0
        _assert_log_respects_buckets(sb, speed)


def _assert_log_respects_buckets(sb: SandboxServer, speed: float) -> None:
    """Replay the server's log of answered requests: none exceeded burst + rate * elapsed. Each
    bucket logs the time it took the token at, under its lock, so the replay is exact."""
    by_key: dict[tuple[str, str], list[float]] = {}
    for at, caller, operation in sb.state.admissions:
        by_key.setdefault((caller, operation), []).append(at)
    assert by_key
    for (_, operation), times in by_key.items():
        rate, burst = RATE_LIMITS[operation]
        for i, t in enumerate(times):
            assert i + 1 <= burst + rate * speed * (t - times[0]) + 1e-3, operation


def _assert_no_secrets(text: str, extra: list[str]) -> None:
    for secret in extra:
        assert secret not in text


def test_no_secret_or_pii_in_logs_or_errors(caplog):
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    faults = FaultConfig.mixed(0.3, seed=9, timeout_seconds=0.4, retry_after_seconds=0.01)
    with amazon_sandbox(faults=faults, orders_page_size=5) as sb:
        now = sb.state.now()
        client = amazon_client(sb, read_timeout=0.2)
        orders = list(
            client.search_orders(
                creds(MERCHANT), now - timedelta(days=3), now - timedelta(minutes=3)
            )
        )
        list(
            client.list_transactions(
                creds(MERCHANT), now - timedelta(days=3), now - timedelta(minutes=3)
            )
        )
        # Calls that fail for good: exhausted retries, a rejected request, a bad refresh token.
        brittle = amazon_client(sb, max_retries=0, read_timeout=0.2)
        for _ in range(15):
            try:
                list(
                    brittle.search_orders(
                        creds(MERCHANT), now - timedelta(days=1), now - timedelta(minutes=3)
                    )
                )
            except ApiRequestError as exc:
                errors.append(str(exc))
        for call in (
            lambda: amazon_client(sb, max_retries=12).get_order(
                creds(MERCHANT), "111-0000000-0000000"
            ),
            lambda: list(
                amazon_client(sb, max_retries=12).search_orders(
                    ChannelCredentials(MERCHANT, "sandbox-refresh-NOPE!"), now - timedelta(days=1)
                )
            ),
        ):
            with pytest.raises(ApiRequestError) as info:
                call()
            errors.append(str(info.value))
        tokens = sb.state.issued_access_tokens()
        plans = order_plans_updated_between(
            sb.state.world(MERCHANT), now - timedelta(days=3), now, now
        )
    assert errors and tokens and orders
    assert any("gave up" in e for e in errors) and any("HTTP 404" in e for e in errors)
    secrets = [CLIENT_SECRET, f"sandbox-refresh-{MERCHANT}", "sandbox-refresh-NOPE!", *tokens]
    pii = [
        v
        for p in plans
        for v in (p.buyer.name, p.buyer.email, p.buyer.phone, p.buyer.address.line1)
    ]
    haystack = caplog.text + "\n".join(errors)
    leaked = [v for v in secrets + pii if v in haystack]
    assert not leaked


def test_running_clock_moves_statuses_forward():
    start = sandbox_now() - timedelta(days=1)
    clock = SandboxClock.fixed_at(start)
    with SandboxServer(
        SandboxConfig(
            seed=4, clock=clock, history_start=start.date() - timedelta(days=30), quota_speedup=1000
        )
    ) as sb:
        world = sb.state.world(MERCHANT)
        recent = [
            p for p in order_plans_created_between(world, start - timedelta(days=1), start, start)
        ]
        before = {p.order_id: p.status_at(start)[0] for p in recent}
        clock.advance(timedelta(days=10))
        after = {p.order_id: p.status_at(sb.state.now())[0] for p in recent}
        assert any(before[k] != after[k] for k in before)
        assert set(after.values()) <= {"DELIVERED", "CANCELLED"}
        body = json.loads(requests.get(sb.base_url + "/health", timeout=5).text)
        assert body["status"] == "ok"


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=10**6),
    merchant=st.from_regex(r"[a-z][a-z0-9_]{1,12}", fullmatch=True),
    offset=st.integers(min_value=0, max_value=20),
)
def test_every_settlement_balances_and_matches_its_orders(seed, merchant, offset):
    world = MerchantWorld(seed, merchant, datetime(2025, 6, 1).date())
    settlement = settlement_by_index(
        world, settlement_index(world, datetime(2025, 7, 1, tzinfo=UTC)) + offset
    )
    totals, rows = _settlement_rows(render_settlement(settlement))
    assert _row_sum(rows) + settlement.short_by == Decimal(totals["total-amount"])
    principal: Counter = Counter()
    for t in settlement.transactions:
        assert settlement.start <= t.posted < settlement.end
        if t.transaction_type == "Shipment":
            principal[t.order.order_id] += sum(
                (a for _, d, a, _ in t.rows if d == "Principal"), Decimal("0")
            )
            assert principal[t.order.order_id] == t.order.item_total
            # Fees are charges: negative, to the cent.
            assert all(
                a < 0 and a == a.quantize(Decimal("0.01"))
                for k, _, a, _ in t.rows
                if k == "ItemFees"
            )


# ---------------------------------------------------------------------------------------------
# What a settlement's money holds: reserves, fees without an order, negative and short settlements

AMAZON_EU = ("A1PA6795UKMFR9", "A13V1IB3VIYZZH", "APJ6JRA9NG5V4", "A1RKKUPIHCS9HS")
EU_AMOUNT = re.compile(r"-?\d{1,3}(\.\d{3})*,\d{2}")
DOT_AMOUNT = re.compile(r"-?\d+\.\d{2}")


def _flat(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC")


def _consecutive(
    world: MerchantWorld, marketplace: str, count: int, first: date = date(2025, 2, 1)
) -> list:
    index = settlement_index(world, datetime.combine(first, datetime.min.time(), tzinfo=UTC))
    return [settlement_by_index(world, index + n, marketplace) for n in range(count)]


def test_reserves_held_in_one_settlement_are_released_in_the_next():
    world = MerchantWorld(7, MERCHANT, date(2025, 1, 1))
    for marketplace in (AMAZON_US, AMAZON_UK, AMAZON_DE):
        settlements = _consecutive(world, marketplace, 14)
        both = 0
        for previous, current in zip(settlements, settlements[1:], strict=False):
            assert current.reserve_released == previous.reserve_held
            _, before = _settlement_rows(render_settlement(previous))
            _, after = _settlement_rows(render_settlement(current))
            held = [r for r in before if r["amount-description"] == "Current Reserve Amount"]
            released = [
                r for r in after if r["amount-description"] == "Previous Reserve Amount Balance"
            ]
            # The same amount, negative when held and positive when released, in rows of their
            # own: other-transaction, no order, no sku.
            assert (
                [-_amount(r["amount"]) for r in held]
                == [_amount(r["amount"]) for r in released]
                == ([previous.reserve_held] if previous.reserve_held else [])
            )
            for r in held + released:
                assert r["transaction-type"] == r["amount-type"] == "other-transaction"
                assert r["order-id"] == r["sku"] == ""
            both += bool(current.reserve_held and current.reserve_released)
            # Reserves are in the deposit, never in the finance transactions.
            finance = [
                render_transaction(world, t)
                for t in transactions_posted_between(world, current.start, current.end, marketplace)
            ]
            assert not [t for t in finance if "Reserve" in json.dumps(t, default=str)]
            assert (
                sum((Decimal(t["totalAmount"]["currencyAmount"]) for t in finance), Decimal("0"))
                == current.net_proceeds
            )
            assert current.total == (
                current.net_proceeds + current.reserve_released - current.reserve_held
            )
        assert both >= len(settlements) // 2, marketplace
    assert vocab.fee_category("amazon", "other-transaction", "Current Reserve Amount") == (
        vocab.RESERVE_HELD,
        True,
    )
    assert vocab.fee_category("amazon", "other-transaction", "Previous Reserve Amount Balance") == (
        vocab.RESERVE_RELEASED,
        True,
    )


def test_storage_inbound_and_advertising_fees_are_order_less_rows_and_finance_transactions():
    world = MerchantWorld(7, MERCHANT, date(2025, 1, 1))
    finance_type = {
        "Storage Fee": "ServiceFee",
        "FBAInboundTransportationFee": "ServiceFee",
        "Subscription Fee": "ServiceFee",
        "StorageRenewalBilling": "ServiceFee",
        "TransactionTotalAmount": "ProductAdsPayment",
    }
    for marketplace in (AMAZON_US, AMAZON_DE):
        seen: Counter = Counter()
        for settlement in _consecutive(world, marketplace, 6):
            _, rows = _settlement_rows(render_settlement(settlement))
            fees = [
                r
                for r in rows
                if not r["order-id"] and r["amount-description"] not in RESERVE_DESCRIPTIONS
            ]
            from_rows: Counter = Counter()
            for r in fees:
                assert r["sku"] == "" and _amount(r["amount"]) < 0
                if r["amount-type"] == "Cost of Advertising":
                    assert r["transaction-type"] == "ServiceFee"
                    assert r["amount-description"] == "TransactionTotalAmount"
                else:
                    assert r["transaction-type"] == r["amount-type"] == "other-transaction"
                seen[r["amount-description"]] += 1
                from_rows[
                    (
                        finance_type[r["amount-description"]],
                        r["posted-date-time"],
                        _amount(r["amount"]),
                    )
                ] += 1
            # Each such row is one finance transaction without an order, of the same amount at
            # the same time (the short settlement's missing row is a transaction all the same).
            from_finance: Counter = Counter()
            for t in transactions_posted_between(
                world, settlement.start, settlement.end, marketplace
            ):
                if t.order is None:
                    record = render_transaction(world, t)
                    related = {r["relatedIdentifierName"] for r in record["relatedIdentifiers"]}
                    assert "ORDER_ID" not in related and "items" not in record
                    from_finance[
                        (
                            record["transactionType"],
                            t.posted.strftime("%Y-%m-%d %H:%M:%S UTC"),
                            Decimal(record["totalAmount"]["currencyAmount"]),
                        )
                    ] += 1
            missing = settlement.missing_row
            if missing is not None and missing[0].order is None:
                from_rows[(missing[0].transaction_type, _flat(missing[5]), missing[3])] += 1
            assert from_rows == from_finance
        assert seen["Storage Fee"] >= 2 and seen["TransactionTotalAmount"] >= 6, seen
        assert seen["FBAInboundTransportationFee"] >= 1 and seen["Subscription Fee"] >= 5, seen
    # The labels land in the shared fee vocabulary, in the settlement and the Finances shapes.
    assert vocab.fee_category("amazon", "other-transaction", "Storage Fee")[0] == vocab.STORAGE
    assert vocab.fee_category("amazon", "Expenses/Storage Fee")[0] == vocab.STORAGE
    assert vocab.fee_category("amazon", "Cost of Advertising", "TransactionTotalAmount")[0] == (
        vocab.ADVERTISING
    )
    assert vocab.fee_category("amazon", "Expenses/TransactionTotalAmount")[0] == vocab.ADVERTISING
    assert vocab.fee_category("amazon", "other-transaction", "StorageRenewalBilling")[0] == (
        vocab.STORAGE
    )


@pytest.mark.parametrize("seed,merchant", [(7, MERCHANT), (31, "mower_depot")])
def test_some_settlement_in_any_eight_consecutive_ones_is_negative(seed, merchant):
    world = MerchantWorld(seed, merchant, date(2025, 1, 1))
    for marketplace in (AMAZON_US, AMAZON_UK, AMAZON_DE):
        settlements = _consecutive(world, marketplace, 20)
        negative = []
        for settlement in settlements:
            totals, rows = _settlement_rows(render_settlement(settlement))
            sales = sum(
                (_amount(r["amount"]) for r in rows if r["amount-description"] == "Principal"),
                Decimal("0"),
            )
            # Fees and refunds beyond the sales: the deposit and the net proceeds go negative.
            is_negative = _amount(totals["total-amount"]) < 0
            assert is_negative == (settlement.total < 0)
            if is_negative:
                assert sales > 0 and settlement.net_proceeds < 0
            negative.append(is_negative)
        for start in range(len(negative) - 7):
            assert any(negative[start : start + 8]), (marketplace, start)
        assert not all(negative)


def test_exactly_one_settlement_per_quarter_is_one_line_short():
    now = sandbox_now()
    history = now.date() - timedelta(days=400)
    with amazon_sandbox(now=now, history_start=history) as sb:
        for marketplace in (AMAZON_US, AMAZON_DE, "A13V1IB3VIYZZH"):
            settlements = amazon_settlements_between(
                sb.state,
                MERCHANT,
                datetime.combine(history, datetime.min.time(), tzinfo=UTC),
                now + timedelta(seconds=1),
                marketplace_id=marketplace,
            )
            by_quarter: dict[tuple[int, int], list] = {}
            for s in settlements:
                by_quarter.setdefault((s.end.year, (s.end.month - 1) // 3), []).append(s)
            complete = [
                quarter
                for quarter in by_quarter
                if date(quarter[0], 3 * quarter[1] + 1, 1) - timedelta(days=14) >= history
                and date(quarter[0], 3 * quarter[1] + 1, 1) + timedelta(days=93) < now.date()
            ]
            assert len(complete) >= 3
            for quarter in complete:
                short = [s for s in by_quarter[quarter] if s.missing is not None]
                assert len(short) == 1, (marketplace, quarter)
                (s,) = short
                missing = s.missing_row
                assert missing is not None and s.short_by == missing[3] < 0
                totals, rows = _settlement_rows(render_settlement(s))
                # The summary reports the whole total; the rows lack exactly the missing amount.
                assert _amount(totals["total-amount"]) == s.total
                assert _row_sum(rows) + s.short_by == s.total
                assert (
                    len(rows)
                    == len(s.rows())
                    == sum(len(t.rows) for t in s.transactions)
                    - 1
                    + (bool(s.reserve_held) + bool(s.reserve_released))
                )
                written = Counter(
                    (r["amount-description"], _amount(r["amount"]), r["posted-date-time"])
                    for r in rows
                )
                full = Counter(
                    (d, a, _flat(t.posted)) for t in s.transactions for _, d, a, _ in t.rows
                )
                assert full - written == Counter({(missing[2], missing[3], _flat(missing[5])): 1})
                assert missing[1] in ("ItemFees", "other-transaction", "Cost of Advertising")
            # Every other settlement's rows add up to its total exactly.
            for s in settlements:
                if s.missing is None:
                    totals, rows = _settlement_rows(render_settlement(s))
                    assert _row_sum(rows) == _amount(totals["total-amount"]) == s.total


def test_eu_settlements_write_decimal_commas_and_dot_grouping():
    assert flat_amount(Decimal("1234.56"), AMAZON_DE) == "1.234,56"
    assert flat_amount(Decimal("-1234567.80"), "A1RKKUPIHCS9HS") == "-1.234.567,80"
    assert flat_amount(Decimal("-3.05"), "A13V1IB3VIYZZH") == "-3,05"
    assert flat_amount(Decimal("999.99"), "APJ6JRA9NG5V4") == "999,99"
    assert flat_amount(Decimal("1234.56"), AMAZON_UK) == "1234.56"
    assert flat_amount(Decimal("-1234.50")) == "-1234.50"
    world = MerchantWorld(7, MERCHANT, date(2025, 1, 1))
    for marketplace in AMAZON_MARKETPLACES:
        eu = marketplace in AMAZON_EU
        grouped = 0
        for settlement in _consecutive(world, marketplace, 3):
            totals, rows = _settlement_rows(render_settlement(settlement))
            cells = [totals["total-amount"]] + [r["amount"] for r in rows]
            pattern = EU_AMOUNT if eu else DOT_AMOUNT
            assert all(pattern.fullmatch(c) for c in cells), (marketplace, cells)
            grouped += sum("." in c and "," in c for c in cells)
            # Read back (with the test's own reading), the cells are the settlement's amounts.
            assert [_amount(c) for c in cells] == [settlement.total] + [
                row[3] for row in settlement.rows()
            ]
        # A fortnight's total is in the thousands: EU files show the dot grouping.
        assert grouped > 0 if eu else grouped == 0, marketplace


@settings(max_examples=200, deadline=None)
@given(
    amount=st.decimals(
        min_value=Decimal("-10000000"), max_value=Decimal("10000000"), places=2, allow_nan=False
    ),
    marketplace=st.sampled_from(tuple(AMAZON_MARKETPLACES)),
)
def test_flat_amounts_read_back_exactly(amount, marketplace):
    text = flat_amount(amount, marketplace)
    assert _amount(text) == amount
    assert (EU_AMOUNT if marketplace in AMAZON_EU else DOT_AMOUNT).fullmatch(text)
