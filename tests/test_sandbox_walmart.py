"""The Walmart sandbox and the real Walmart client, end to end over HTTP (no mocks of our code)."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from illuma_pipelines.normalize import walmart as walmart_normalizer
from illuma_pipelines.reports.privacy import quarter_bounds
from illuma_pipelines.sandbox.faults import FAULT_KINDS, FaultConfig
from illuma_pipelines.sandbox.server import SandboxClock, SandboxConfig, SandboxServer
from illuma_pipelines.sandbox.walmart import (
    RATE_LIMITS,
    RECON_MAX_RECORDS,
    REPORT_DELAY,
    walmart_inventory,
    walmart_orders_modified_between,
    walmart_recon_report,
    walmart_recon_report_dates,
    walmart_settlements_between,
    walmart_short_reports,
)
from resources.http import ApiRequestError, ChannelCredentials, RequestStats
from resources.walmart import WalmartLookbackError, WalmartMarketplaceHttp, walmart_credentials
from tests.sandbox_helpers import sandbox_now, walmart_client

MERCHANT = "acme_parts"
CLIENT_SECRET = "wm-secret-Qz81x0-sandbox"  # a value tests look for in logs
FIXTURES = Path(__file__).parent / "fixtures" / "walmart"
HEADERS = {"WM_SVC.NAME": "Walmart Marketplace", "WM_QOS.CORRELATION_ID": "test-correlation"}
RECON_TEST_PAGE = 40


def creds(merchant_id: str) -> ChannelCredentials:
    return walmart_credentials(merchant_id, f"sandbox-client-{merchant_id}", CLIENT_SECRET)


def _sandbox(
    *, faults: FaultConfig | None = None, now: datetime | None = None, **config: Any
) -> SandboxServer:
    now = now or sandbox_now()
    return SandboxServer(
        SandboxConfig(
            seed=config.pop("seed", 31),
            clock=SandboxClock.fixed_at(now),
            faults=faults or FaultConfig(),
            quota_speedup=config.pop("quota_speedup", 1000.0),
            history_start=now.date() - timedelta(days=240),
            **config,
        )
    )


def _client(server: SandboxServer, **overrides: Any) -> WalmartMarketplaceHttp:
    # Far below Walmart's 1,000 rows, so every recon report the tests read comes in several
    # pages: a page the client failed to follow shows up as missing rows.
    return walmart_client(server.base_url, **{"recon_page_size": RECON_TEST_PAGE, **overrides})


def _midnight(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def _token(
    server: SandboxServer, client_id: str = f"sandbox-client-{MERCHANT}"
) -> requests.Response:
    basic = base64.b64encode(f"{client_id}:{CLIENT_SECRET}".encode()).decode()
    return requests.post(
        server.base_url + "/walmart/v3/token",
        data={"grant_type": "client_credentials"},
        headers={**HEADERS, "Authorization": f"Basic {basic}"},
        timeout=5,
    )


def _by_po(orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(orders, key=lambda o: o["purchaseOrderId"])


# ---------------------------------------------------------------------------------------------
# Auth


def test_token_headers_refresh_and_bad_client():
    with _sandbox() as sb:
        assert "walmart" in sb.app.state.channels
        token = _token(sb)
        assert (
            token.status_code == 200
            and token.json()["token_type"] == "Bearer"
            and token.json()["expires_in"] == 900
        )
        no_headers = requests.get(
            sb.base_url + "/walmart/v3/inventories",
            headers={"WM_SEC.ACCESS_TOKEN": token.json()["access_token"]},
            timeout=5,
        )
        assert no_headers.status_code == 400 and no_headers.json()["errors"][0]["code"].startswith(
            "MISSING_REQUIRED_HEADER"
        )
        assert _token(sb, "someone-else").status_code == 401

        client = _client(sb)
        end = _midnight(sb.state.now())
        window = (end - timedelta(days=2), end)
        first = list(client.orders(creds(MERCHANT), *window))
        assert first and sb.state.served["walmartToken"] == 2  # one from _token above
        for issued in sb.state.issued_access_tokens():
            sb.state.revoke_token(issued)
        stats = RequestStats()
        assert list(client.orders(creds(MERCHANT), *window, stats=stats)) == first
        assert sb.state.served["walmartToken"] == 3 and stats.operation("getAllOrders").retries == 1

        bad = walmart_credentials(MERCHANT, "not-a-sandbox-client", "SECRET-wm")
        with pytest.raises(ApiRequestError) as info:
            list(client.orders(bad, *window))
        assert (
            "walmartToken" in str(info.value)
            and "UNAUTHORIZED" in str(info.value)
            and "SECRET" not in str(info.value)
        )
        assert "SECRET" not in repr(bad)
        with pytest.raises(ApiRequestError, match="walmart_credentials"):
            list(client.inventory(ChannelCredentials(MERCHANT, "just-a-token")))

    with _sandbox(access_token_lifetime=0.4) as sb:
        client = _client(sb)
        for _ in range(3):
            list(client.inventory(creds(MERCHANT)))
            threading.Event().wait(0.25)
        assert sb.state.served["walmartToken"] >= 2 and sb.state.throttled == {}


# ---------------------------------------------------------------------------------------------
# Orders


def test_orders_page_through_both_node_types_and_match_the_sandbox():
    with _sandbox(orders_page_size=4) as sb:
        end = _midnight(sb.state.now())
        a = end - timedelta(days=12)
        stats = RequestStats()
        got = list(_client(sb).orders(creds(MERCHANT), a, end, stats=stats))
        expected = walmart_orders_modified_between(sb.state, MERCHANT, a, end)
        assert _by_po(got) == _by_po(expected) and len(got) > 20
        types = [o["shipNode"]["type"] for o in got]
        # Seller-fulfilled first, then WFS: one query (and cursor chain) per node type.
        assert types == sorted(types, key=lambda t: t != "SellerFulfilled") and set(types) == {
            "SellerFulfilled",
            "WFSFulfilled",
        }
        pages = sum(-(-types.count(t) // 4) for t in set(types))
        assert stats.operation("getAllOrders").pages == pages

        # Over a longer window: every line status, cancellations at amount 0, refunds negative.
        longer = walmart_orders_modified_between(sb.state, MERCHANT, end - timedelta(days=120), end)
        statuses = Counter(
            s["status"]
            for o in longer
            for ln in o["orderLines"]["orderLine"]
            for s in ln["orderLineStatuses"]["orderLineStatus"]
        )
        assert set(statuses) >= {"Delivered", "Cancelled", "Shipped"}
        for order in longer:
            assert isinstance(order["orderDate"], int)
            for line in order["orderLines"]["orderLine"]:
                assert isinstance(line["orderLineQuantity"]["amount"], str)
                status = line["orderLineStatuses"]["orderLineStatus"][0]["status"]
                for charge in line["charges"]["charge"]:
                    amount = charge["chargeAmount"]["amount"]
                    assert isinstance(amount, Decimal)
                    assert (
                        (amount == 0 and charge["tax"] is None)
                        if status == "Cancelled"
                        else amount > 0
                    )
                if line["refund"]:
                    assert all(
                        rc["charge"]["chargeAmount"]["amount"] < 0
                        for rc in line["refund"]["refundCharges"]["refundCharge"]
                    )
        assert any(ln["refund"] for o in longer for ln in o["orderLines"]["orderLine"])


def test_an_order_repeated_on_the_next_page_is_yielded_once():
    with _sandbox() as sb:
        end = _midnight(sb.state.now())
        seller = [
            o
            for o in walmart_orders_modified_between(
                sb.state, MERCHANT, end - timedelta(days=3), end
            )
            if o["shipNode"]["type"] == "SellerFulfilled"
        ]
        o1, o2, o3 = seller[:3]
        cursor = "?limit=2&hasMoreElements=true&soIndex=2&poIndex=" + o2["purchaseOrderId"]
        first = {
            "list": {
                "meta": {"totalCount": 3, "limit": 2, "nextCursor": cursor},
                "elements": {"order": [o1, o2]},
            }
        }
        second = {"list": {"meta": {"totalCount": 3, "limit": 2}, "elements": {"order": [o2, o3]}}}
        sb.state.queue_fixture("walmart", MERCHANT, "getAllOrders", first)
        sb.state.queue_fixture("walmart", MERCHANT, "getAllOrders", second)
        stats = RequestStats()
        got = list(_client(sb).orders(creds(MERCHANT), end - timedelta(days=3), end, stats=stats))
        wfs = [
            o
            for o in walmart_orders_modified_between(
                sb.state, MERCHANT, end - timedelta(days=3), end
            )
            if o["shipNode"]["type"] == "WFSFulfilled"
        ]
        assert got == [o1, o2, o3, *wfs]
        assert stats.operation("getAllOrders").records == 3 + len(wfs)


def test_lookback_limit_is_enforced_by_both_sides():
    with _sandbox() as sb:
        client = _client(sb)
        now = sb.state.now()
        with pytest.raises(WalmartLookbackError, match="180 days"):
            list(
                client.orders(creds(MERCHANT), now - timedelta(days=181), now - timedelta(days=170))
            )
        clamped = list(
            client.orders(
                creds(MERCHANT),
                now - timedelta(days=400),
                now - timedelta(days=170),
                clamp_start=True,
            )
        )
        assert clamped and _by_po(clamped) == _by_po(
            walmart_orders_modified_between(
                sb.state,
                MERCHANT,
                now - timedelta(days=180) + timedelta(minutes=10),
                now - timedelta(days=170),
            )
        )

        headers = {**HEADERS, "WM_SEC.ACCESS_TOKEN": _token(sb).json()["access_token"]}
        old = requests.get(
            sb.base_url + "/walmart/v3/orders",
            params={"createdStartDate": "2020-01-01T00:00:00Z"},
            headers=headers,
            timeout=5,
        )
        error = old.json()["errors"][0]
        assert (
            old.status_code == 400
            and error["code"] == "INVALID_REQUEST_PARAM.GMP_ORDER_API"
            and error["field"] == "createdStartDate"
        )


def test_consecutive_windows_partition_the_orders_exactly():
    with _sandbox(orders_page_size=3) as sb:
        client = _client(sb)
        start = _midnight(sb.state.now()) - timedelta(days=5)
        ids: list[str] = []
        for d in range(4):
            ids += [
                o["purchaseOrderId"]
                for o in client.orders(
                    creds(MERCHANT), start + timedelta(days=d), start + timedelta(days=d + 1)
                )
            ]
        whole = [
            o["purchaseOrderId"]
            for o in walmart_orders_modified_between(
                sb.state, MERCHANT, start, start + timedelta(days=4)
            )
        ]
        assert len(ids) == len(set(ids)) and sorted(ids) == sorted(whole)


# ---------------------------------------------------------------------------------------------
# Reconciliation and inventory


def test_recon_reports_settle_every_14_days_and_agree_with_orders():
    with _sandbox() as sb:
        client = _client(sb)
        today = sb.state.now().date()
        since = today - timedelta(days=90)
        reports = list(client.recon_reports(creds(MERCHANT), since, today))
        plans = walmart_settlements_between(sb.state, MERCHANT, since, today)
        assert [r["reportDate"] for r in reports] == [
            s.report_date.strftime("%m%d%Y") for s in plans
        ] and len(reports) >= 6
        assert set(walmart_recon_report_dates(sb.state, MERCHANT)) >= {
            r["reportDate"] for r in reports
        }
        gaps = {
            (b.report_date - a.report_date).days for a, b in zip(plans, plans[1:], strict=False)
        }
        assert gaps == {14}

        orders = {
            o["purchaseOrderId"]: o
            for o in walmart_orders_modified_between(
                sb.state, MERCHANT, sb.state.now() - timedelta(days=179), sb.state.now()
            )
        }
        short = {
            r.report_date: r.missing for r in walmart_short_reports(sb.state, MERCHANT, since, today)
        }
        checked = 0
        for report in reports:
            rows = report["rows"]
            assert rows == walmart_recon_report(sb.state, MERCHANT, report["reportDate"])
            summary, details = rows[0], rows[1:]
            assert summary["Transaction Type"] == "PaymentSummary"
            # Total Payable is the sum of the rows, but for the quarter's report one line short.
            assert Decimal(summary["Total Payable"]) == sum(
                Decimal(r["Amount"]) for r in details
            ) + short.get(report["reportDate"], 0)
            datetime.strptime(summary["Period Start Date"], "%m/%d/%Y")
            assert all(
                r["Period Start Date"] == '""' and len(r["Partner GTIN"]) == 14
                for r in details
                if r["Purchase Order #"] not in ('""', "")
            )
            for row in details:
                order = orders.get(row["Purchase Order #"])
                if order is None or row["Transaction Type"] != "Sale":
                    continue
                line = next(
                    ln
                    for ln in order["orderLines"]["orderLine"]
                    if ln["lineNumber"] == row["Purchase Order line #"]
                )
                charges = {c["chargeType"]: c for c in line["charges"]["charge"]}
                if row["Amount Type"] == "Product Price":
                    assert Decimal(row["Amount"]) == charges["PRODUCT"]["chargeAmount"]["amount"]
                    checked += 1
                elif row["Amount Type"] == "Product tax":
                    assert (
                        Decimal(row["Amount"]) == charges["PRODUCT"]["tax"]["taxAmount"]["amount"]
                    )
                elif row["Amount Type"] == "Shipping Price":
                    assert Decimal(row["Amount"]) == charges["SHIPPING"]["chargeAmount"]["amount"]
                elif row["Amount Type"] == "Commission on Product":
                    assert Decimal(row["Amount"]) == -(
                        charges["PRODUCT"]["chargeAmount"]["amount"] * Decimal("0.12")
                    ).quantize(Decimal("0.01"))
        assert checked > 20
        kinds = Counter(
            (r["Transaction Type"], r["Amount Type"]) for rep in reports for r in rep["rows"][1:]
        )
        assert (
            kinds[("Refund", "Product Price")] > 0
            and kinds[("Service Fee", "Fee/Reimbursement")] > 0
        )


def _blank(cell: str) -> bool:
    return cell in ("", '""')


def test_recon_reports_carry_fees_without_orders_reserves_and_negative_totals():
    """Storage and advertising fees with no order, a reserve held and released two reports later,
    a negative report in every block of eight, and the real files' quirks (two kinds of blank
    cells, GTINs as strings with their leading zeros)."""
    with _sandbox() as sb:
        client = _client(sb, recon_page_size=RECON_MAX_RECORDS)
        today = sb.state.now().date()
        since = today - timedelta(days=230)
        reports = list(client.recon_reports(creds(MERCHANT), since, today))
        assert len(reports) >= 16  # two whole blocks of eight at least partly, one entirely
        totals = [Decimal(r["rows"][0]["Total Payable"]) for r in reports]
        assert sum(t < 0 for t in totals) >= 1 and sum(t > 0 for t in totals) >= 12
        # The quarter's short report leaves out one row, any of them (the fees and reserves
        # too; test_one_recon_report_a_quarter_is_one_line_short checks that): put it back.
        left_out = {
            s.report_date: [s.row] for s in walmart_short_reports(sb.state, MERCHANT, since, today)
        }
        assert set(left_out) <= {report["reportDate"] for report in reports}
        whole = [report["rows"][1:] + left_out.get(report["reportDate"], []) for report in reports]
        held: dict[int, Decimal] = {}
        released: dict[int, Decimal] = {}
        for n, details in enumerate(whole):
            account = [r for r in details if _blank(r["Purchase Order #"])]
            kinds = Counter((r["Transaction Type"], r["Transaction Description"]) for r in account)
            assert kinds[("Service Fee", "WFS StorageFee")] == 1
            assert kinds[("Service Fee", "Walmart Product Advertising")] == 1
            for row in account:
                assert row["Amount Type"] == "Fee/Reimbursement" and _blank(row["Partner GTIN"])
                assert _blank(row["Customer Order #"]) and _blank(row["Purchase Order line #"])
                if row["Transaction Type"] == "Reserve":
                    held[n] = -Decimal(row["Amount"])
                    assert row["Purchase Order #"] == "" and row["Ship to City"] == ""
                elif row["Transaction Type"] == "Release Reserve":
                    released[n] = Decimal(row["Amount"])
                    assert row["Transaction Description"] == "Reserve credited back"
                else:
                    assert row["Purchase Order #"] == '""' and Decimal(row["Amount"]) < 0
            if totals[n] < 0:
                storage = next(r for r in account if r["Transaction Description"] == "WFS StorageFee")
                assert -Decimal(storage["Amount"]) > sum(
                    Decimal(r["Amount"]) for r in details if r["Amount Type"] == "Product Price"
                ) / 2
            for row in details:
                if not _blank(row["Purchase Order #"]):
                    gtin = row["Partner GTIN"]
                    assert isinstance(gtin, str) and len(gtin) == 14 and gtin.startswith("00")
                    assert row["Period Start Date"] == '""'
        assert held and released and all(v > 0 for v in held.values())
        for n, amount in held.items():
            if n + 2 < len(reports):
                assert released[n + 2] == amount
        # The normalizer reads fees without orders as transactions without an order.
        rows = [row for details in whole for row in details]
        normalized = walmart_normalizer.normalize_transactions(rows)
        assert not normalized.rejects
        orderless = [t for t in normalized.transactions if t.order_id is None]
        assert {t.description for t in orderless} == {
            "WFS StorageFee",
            "Walmart Product Advertising",
            "Funds withheld to cover future refunds",
            "Reserve credited back",
        }


def _quarter(day: date) -> str:
    """The calendar quarter of `day`, as quarter_bounds reads it ("YYYY-Qn")."""
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


def test_one_recon_report_a_quarter_is_one_line_short():
    """Once per calendar quarter a report's Total Payable counts an Amount whose row is missing;
    walmart_short_reports says which report and by how much.

    Only a quarter whose every report is in the window, after history starts and published has
    to hold its short report: a partial quarter at either end may hold it or not, depending on
    the day the test runs."""
    with _sandbox() as sb:
        client = _client(sb)
        now = sb.state.now()
        today = now.date()
        since = today - timedelta(days=230)
        reports = {
            r["reportDate"]: r["rows"] for r in client.recon_reports(creds(MERCHANT), since, today)
        }
        short = walmart_short_reports(sb.state, MERCHANT, since, today)
        quarters = Counter(_quarter(datetime.strptime(s.report_date, "%m%d%Y").date()) for s in short)
        history = datetime.combine(sb.state.config.history_start, time(), tzinfo=UTC)
        first = max(datetime.combine(since, time(), tzinfo=UTC), history + timedelta(days=1))
        quarters_read = {_quarter(r.report_date) for r in walmart_settlements_between(sb.state, MERCHANT, since, today)}
        whole = {
            q for q in quarters_read
            if first <= quarter_bounds(q)[0] and quarter_bounds(q)[1] + REPORT_DELAY <= now
        }
        assert whole  # 230 days always hold a whole quarter
        assert all(quarters[q] == 1 for q in whole), (whole, quarters)
        assert set(quarters.values()) <= {1}
        for report_date, rows in reports.items():
            summary, details = rows[0], rows[1:]
            gap = Decimal(summary["Total Payable"]) - sum(Decimal(r["Amount"]) for r in details)
            found = [s for s in short if s.report_date == report_date]
            if not found:
                assert gap == 0, report_date
                continue
            (one,) = found
            assert gap == one.missing == Decimal(one.row["Amount"]) != 0
            assert one.row not in details
            # Its Transaction Key is the report's own: the row belongs to this report.
            assert one.row["Transaction Key"].startswith(
                datetime.strptime(report_date, "%m%d%Y").strftime("%Y_%m_%d")
            )


def test_recon_reports_hold_exactly_the_lines_shipped_or_refunded_in_their_period():
    with _sandbox() as sb:
        now = sb.state.now()
        orders = walmart_orders_modified_between(sb.state, MERCHANT, now - timedelta(days=179), now)
        settlements = walmart_settlements_between(
            sb.state, MERCHANT, now.date() - timedelta(days=100), now.date()
        )
        assert len(settlements) >= 6
        for s in settlements:
            rows = walmart_recon_report(sb.state, MERCHANT, s.report_date.strftime("%m%d%Y"))
            assert rows is not None
            sold = {
                (r["Purchase Order #"], r["Purchase Order line #"])
                for r in rows[1:]
                if r["Transaction Type"] == "Sale"
            }
            refunded = {
                (r["Purchase Order #"], r["Purchase Order line #"])
                for r in rows[1:]
                if r["Transaction Type"] == "Refund"
            }
            lo, hi = int(s.start.timestamp() * 1000), int(s.end.timestamp() * 1000)
            shipped_in = set()
            refunded_in = set()
            for order in orders:
                for line in order["orderLines"]["orderLine"]:
                    tracking = line["orderLineStatuses"]["orderLineStatus"][0]["trackingInfo"]
                    if tracking and lo <= tracking["shipDateTime"] < hi:
                        shipped_in.add((order["purchaseOrderId"], line["lineNumber"]))
                    if line["refund"]:
                        refunded_in.add((order["purchaseOrderId"], line["lineNumber"]))
            assert sold == shipped_in
            assert refunded <= refunded_in
            # Transaction Keys group a transaction's amount rows and never span two transactions.
            groups: dict[str, set] = {}
            for r in rows[1:]:
                groups.setdefault(r["Transaction Key"], set()).add(
                    (r["Purchase Order #"], r["Purchase Order line #"], r["Transaction Type"])
                )
            assert all(len(v) == 1 for v in groups.values())


def test_order_statuses_move_with_the_sandbox_clock():
    start = sandbox_now() - timedelta(days=30)
    clock = SandboxClock.fixed_at(start)
    with SandboxServer(
        SandboxConfig(seed=4, clock=clock, history_start=start.date() - timedelta(days=60))
    ) as sb:
        window = (start - timedelta(days=2), start + timedelta(seconds=1))
        before = {
            o["purchaseOrderId"]: o
            for o in walmart_orders_modified_between(sb.state, MERCHANT, *window)
        }
        statuses_before = Counter(
            o["orderLines"]["orderLine"][0]["orderLineStatuses"]["orderLineStatus"][0]["status"]
            for o in before.values()
        )
        clock.advance(timedelta(days=25))
        after = {
            o["purchaseOrderId"]: o
            for o in walmart_orders_modified_between(sb.state, MERCHANT, window[0], sb.state.now())
        }
        statuses_after = Counter(
            after[po]["orderLines"]["orderLine"][0]["orderLineStatuses"]["orderLineStatus"][0][
                "status"
            ]
            for po in before
        )
        assert set(statuses_before) & {"Created", "Acknowledged", "Shipped"}
        assert set(statuses_after) <= {"Delivered", "Cancelled"}
        assert all(after[po]["orderDate"] == before[po]["orderDate"] for po in before)


@pytest.mark.timeout(60)
def test_quotas_are_enforced_and_429s_are_retried():
    speed = 20.0
    with _sandbox(enforce_quotas=True, quota_speedup=speed) as sb:
        today = sb.state.now().date()
        since = today - timedelta(days=365)
        want = walmart_settlements_between(sb.state, MERCHANT, since, today)
        results: dict[int, list] = {}

        def run(i: int) -> None:
            # One request per report: the quota arithmetic below counts reports.
            results[i] = list(
                _client(sb, rate_speedup=speed, recon_page_size=RECON_MAX_RECORDS).recon_reports(
                    creds(MERCHANT), since, today
                )
            )

        # Two independent clients share one seller's quota: beyond the burst the server answers
        # 429, both back off and retry, and both still get every report.
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results[0]) == len(want) > 10
        assert results[0] == results[1]
        assert sb.state.throttled["getReconReportJson"] > 0
        by_op: dict[str, list[float]] = {}
        for at, _caller, operation in sb.state.admissions:
            by_op.setdefault(operation, []).append(at)
        rate, burst = RATE_LIMITS["getReconReportJson"]
        times = by_op["getReconReportJson"]
        assert all(
            i + 1 <= burst + rate * speed * (t - times[0]) + 1e-3 for i, t in enumerate(times)
        )


def test_recon_reports_are_paged_and_read_in_full():
    with _sandbox() as sb:
        today = sb.state.now().date()
        since = today - timedelta(days=60)
        stats = RequestStats()
        reports = list(
            _client(sb, recon_page_size=9).recon_reports(creds(MERCHANT), since, today, stats=stats)
        )
        want = walmart_settlements_between(sb.state, MERCHANT, since, today)
        assert [r["reportDate"] for r in reports] == [
            s.report_date.strftime("%m%d%Y") for s in want
        ] and len(reports) >= 3
        pages = 0
        for report in reports:
            rows = walmart_recon_report(sb.state, MERCHANT, report["reportDate"])
            assert rows is not None and len(rows) > 2 * 9
            # Every page, in order: the PaymentSummary first, then each detail row once.
            assert report["rows"] == rows
            pages += -(-len(rows) // 9)
        assert stats.operation("getReconReportJson").pages == pages
        assert stats.operation("getReconReportJson").records == len(reports)

        # Over HTTP: pages of noOfRecords rows from offset, nextOffset -1 on the last one.
        date_key = reports[0]["reportDate"]
        rows = walmart_recon_report(sb.state, MERCHANT, date_key)
        assert rows is not None
        url = sb.base_url + "/walmart/v3/report/reconreport/reconFileJson"
        headers = {**HEADERS, "WM_SEC.ACCESS_TOKEN": _token(sb).json()["access_token"]}

        def page(**params: Any) -> requests.Response:
            return requests.get(
                url,
                params={"reportDate": date_key, "reportVersion": "v1", **params},
                headers=headers,
                timeout=5,
            )

        first = page(offset=0, noOfRecords=9).json()
        assert first == {"reportData": rows[:9], "nextOffset": 9}
        last_offset = (len(rows) - 1) // 9 * 9
        assert page(offset=last_offset, noOfRecords=9).json() == {
            "reportData": rows[last_offset:],
            "nextOffset": -1,
        }
        # Without paging parameters: Walmart's 1,000-row page (this report fits in one).
        assert len(rows) <= RECON_MAX_RECORDS
        assert page().json() == {"reportData": rows, "nextOffset": -1}
        for bad in ({"noOfRecords": RECON_MAX_RECORDS + 1}, {"noOfRecords": 0}, {"offset": -5}):
            refused = page(**bad)
            assert refused.status_code == 400, bad
            assert refused.json()["errors"][0]["field"] == next(iter(bad))


def _recon_rows(n: int) -> list[dict[str, str]]:
    """A long report of real-world shape: a summary, then sales of several units with tax,
    commission and refunds, in USD, with Walmart's literal "" blanks."""
    rows: list[dict[str, str]] = [
        {
            "Period Start Date": "11/11/2026",
            "Period End Date": "11/24/2026",
            "Currency": "USD",
            "Transaction Type": "PaymentSummary",
            "Total Payable": "48211.07",
            "Transaction Description": "Deposited in account",
            "Transaction Posted Timestamp": "11/27/2026",
        }
    ]
    kinds = [
        ("Sale", "Product Price", "59.97"),
        ("Sale", "Product tax", "4.95"),
        ("Sale", "Product tax withheld", "-4.95"),
        ("Sale", "Commission on Product", "-7.20"),
        ("Refund", "Product Price", "-19.99"),
    ]
    for i in range(1, n):
        kind, amount_type, amount = kinds[i % len(kinds)]
        rows.append(
            {
                "Period Start Date": '""',
                "Transaction Key": f"2026_11_25_{i // len(kinds) + 1}",
                "Transaction Type": kind,
                "Amount Type": amount_type,
                "Amount": amount,
                "Ship Qty": "3" if kind == "Sale" else '""',
                "Purchase Order #": f"{1796277083022 + i // len(kinds)}",
                "Purchase Order line #": "1",
                "Partner GTIN": "00887961123457",
                "Currency": "USD",
            }
        )
    return rows


def test_a_report_of_several_thousand_rows_is_followed_page_by_page():
    rows = _recon_rows(2140)
    with _sandbox() as sb:
        sb.state.queue_fixture(
            "walmart",
            MERCHANT,
            "getAvailableReconReportDates",
            {"availableApReportDates": ["11252026"]},
        )
        # Walmart's 1,000-row pages; one proxy sends nextOffset as a string.
        for start, next_offset in ((0, 1000), (1000, "2000"), (2000, -1)):
            sb.state.queue_fixture(
                "walmart",
                MERCHANT,
                "getReconReportJson",
                {"reportData": rows[start : start + 1000], "nextOffset": next_offset},
            )
        stats = RequestStats()
        reports = list(
            _client(sb, recon_page_size=1000).recon_reports(
                creds(MERCHANT),
                datetime(2026, 11, 1).date(),
                datetime(2026, 12, 1).date(),
                stats=stats,
            )
        )
        assert [r["rows"] for r in reports] == [rows]
        assert stats.operation("getReconReportJson").pages == 3
        assert stats.operation("getReconReportJson").malformed == 0

        # A nextOffset that repeats would read the same rows forever: it stops, naming it.
        sb.state.queue_fixture(
            "walmart",
            MERCHANT,
            "getAvailableReconReportDates",
            {"availableApReportDates": ["11252026"]},
        )
        for body in (
            {"reportData": rows[:1000], "nextOffset": 1000},
            {"reportData": rows[1000:2000], "nextOffset": 1000},
            {"reportData": rows[1000:2000], "nextOffset": 1000},
        ):
            sb.state.queue_fixture("walmart", MERCHANT, "getReconReportJson", body)
        with pytest.raises(ApiRequestError) as info:
            list(
                _client(sb, recon_page_size=1000).recon_reports(
                    creds(MERCHANT), datetime(2026, 11, 1).date(), datetime(2026, 12, 1).date()
                )
            )
        assert str(info.value).startswith("getReconReportJson: ")
        assert "nextOffset 1000 again after 2 pages" in str(info.value)


def test_inventory_pages_to_the_end():
    with _sandbox(inventory_page_size=7) as sb:
        stats = RequestStats()
        rows = list(_client(sb).inventory(creds(MERCHANT), stats=stats))
        # Verbatim, each labelled with its market (the US: no WM_MARKET sent).
        assert rows == [{**r, "market": "US"} for r in walmart_inventory(sb.state, MERCHANT)] and len(rows) == 48
        assert stats.operation("getMultiNodeInventory").pages == 7


def test_shared_fixtures_are_served_and_accepted():
    order_doc = json.loads(
        (FIXTURES / "walmart_acknowledgeOrder_eolabs_fetchOrdersAcknowledge.json").read_text(),
        parse_float=Decimal,
    )
    recon_doc = json.loads(
        (FIXTURES / "walmart_reconFileJson_mediocre_readme_example.json").read_text(),
        parse_float=Decimal,
    )
    with _sandbox() as sb:
        page = {
            "list": {
                "meta": {"totalCount": 1, "limit": 100},
                "elements": {"order": [order_doc["order"]]},
            }
        }
        sb.state.queue_fixture("walmart", MERCHANT, "getAllOrders", page)
        sb.state.queue_fixture(
            "walmart",
            MERCHANT,
            "getAvailableReconReportDates",
            {"availableApReportDates": ["12192020"]},
        )
        sb.state.queue_fixture_file(
            "walmart",
            MERCHANT,
            "getReconReportJson",
            FIXTURES / "walmart_reconFileJson_mediocre_readme_example.json",
        )
        client = _client(sb)
        end = _midnight(sb.state.now())
        got = list(client.orders(creds(MERCHANT), end - timedelta(days=1), end))
        # The fixture answers the seller-fulfilled query verbatim; WFS orders follow from the sandbox.
        assert got[0] == order_doc["order"] and got[0]["orderLines"]["orderLine"][0]["charges"][
            "charge"
        ][0]["tax"]["taxAmount"]["amount"] == Decimal("0.8")
        wfs = [
            o
            for o in walmart_orders_modified_between(
                sb.state, MERCHANT, end - timedelta(days=1), end
            )
            if o["shipNode"]["type"] == "WFSFulfilled"
        ]
        assert got[1:] == wfs
        stats = RequestStats()
        reports = list(
            client.recon_reports(
                creds(MERCHANT),
                datetime(2020, 1, 1).date(),
                datetime(2021, 1, 1).date(),
                stats=stats,
            )
        )
        assert reports == [
            {"reportKey": "US:12192020", "reportDate": "12192020", "reportVersion": "v1", "market": "US", "rows": recon_doc}
        ]
        assert stats.operation("getReconReportJson").malformed == 0


# ---------------------------------------------------------------------------------------------
# Faults and secrets


def _extract(
    client: WalmartMarketplaceHttp,
    merchants: list[str],
    end: datetime,
    days: int,
    stats: RequestStats,
) -> dict[str, dict[str, list]]:
    out: dict[str, dict[str, list]] = {}
    for merchant in merchants:
        got: dict[str, list] = {"orders": []}
        for d in range(days, 0, -1):
            got["orders"] += client.orders(
                creds(merchant), end - timedelta(days=d), end - timedelta(days=d - 1), stats=stats
            )
        got["inventory"] = list(client.inventory(creds(merchant), stats=stats))
        got["reports"] = list(
            client.recon_reports(
                creds(merchant), end.date() - timedelta(days=30), end.date(), stats=stats
            )
        )
        out[merchant] = got
    return out


def _clean_rows(rows: list[Any]) -> list[Any]:
    return [
        r
        for r in rows
        if isinstance(r, dict)
        and (r.get("Transaction Type") == "PaymentSummary" or r.get("Transaction Key"))
    ]


@pytest.mark.timeout(120)
def test_faults_of_every_kind_lose_and_duplicate_nothing(caplog):
    caplog.set_level(logging.DEBUG)
    merchants = ["acme_parts", "mower_depot", "zed_auto"]
    injected: Counter = Counter()
    stats = RequestStats()
    runs = []
    for seed in (101, 202):
        faults = FaultConfig.mixed(0.2, seed=seed, timeout_seconds=0.5, retry_after_seconds=0.01)
        with _sandbox(faults=faults, orders_page_size=3, inventory_page_size=6) as sb:
            end = _midnight(sb.state.now())
            result = _extract(
                _client(sb, read_timeout=0.25, max_retries=10), merchants, end, 4, stats
            )
            clean = {}
            for merchant, got in result.items():
                orders = [
                    o
                    for o in got["orders"]
                    if isinstance(o, dict) and isinstance(o.get("purchaseOrderId"), str)
                ]
                assert len({o["purchaseOrderId"] for o in orders}) == len(orders)
                assert _by_po(orders) == _by_po(
                    walmart_orders_modified_between(
                        sb.state, merchant, end - timedelta(days=4), end
                    )
                )
                inventory = [
                    r
                    for r in got["inventory"]
                    if isinstance(r, dict) and isinstance(r.get("sku"), str)
                ]
                assert inventory == [{**r, "market": "US"} for r in walmart_inventory(sb.state, merchant)]
                reports = [(r["reportDate"], _clean_rows(r["rows"])) for r in got["reports"]]
                want = [
                    (
                        s.report_date.strftime("%m%d%Y"),
                        walmart_recon_report(sb.state, merchant, s.report_date.strftime("%m%d%Y")),
                    )
                    for s in walmart_settlements_between(
                        sb.state, merchant, end.date() - timedelta(days=30), end.date()
                    )
                ]
                assert reports == want and len(reports) >= 2
                clean[merchant] = (orders, inventory, reports)
            runs.append(clean)
            injected.update(sb.state.faults.counts)
    assert runs[0] == runs[1]
    total = stats.total()
    assert total.retries > 0 and total.malformed > 0 and total.errors == 0
    assert all(injected[kind] > 0 for kind in FAULT_KINDS), injected
    assert CLIENT_SECRET not in caplog.text


def test_no_secret_or_pii_in_logs_or_errors(caplog):
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    faults = FaultConfig.mixed(0.3, seed=9, timeout_seconds=0.4, retry_after_seconds=0.01)
    with _sandbox(faults=faults, orders_page_size=5) as sb:
        end = _midnight(sb.state.now())
        client = _client(sb, read_timeout=0.2, max_retries=12)
        orders = list(client.orders(creds(MERCHANT), end - timedelta(days=3), end))
        brittle = _client(sb, max_retries=0, read_timeout=0.2)
        for _ in range(15):
            try:
                list(brittle.orders(creds(MERCHANT), end - timedelta(days=1), end))
            except ApiRequestError as exc:
                errors.append(str(exc))
        with pytest.raises(ApiRequestError) as info:
            list(
                client.orders(
                    walmart_credentials(MERCHANT, "sandbox-client-NOPE!", CLIENT_SECRET),
                    end - timedelta(days=1),
                    end,
                )
            )
        errors.append(str(info.value))
        tokens = sb.state.issued_access_tokens()
    assert errors and tokens and orders
    assert any("gave up" in e for e in errors)
    pii = []
    for o in orders:
        address = o["shippingInfo"]["postalAddress"]
        pii += [
            address["name"],
            address["address1"],
            o["shippingInfo"]["phone"],
            o["customerEmailId"],
        ]
    haystack = caplog.text + "\n".join(errors)
    assert not [v for v in [CLIENT_SECRET, *tokens, *pii] if v in haystack]


# ---------------------------------------------------------------------------------------------
# Markets (issue 13, defect 5)


def _currencies(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        found = {obj["currency"]} if isinstance(obj.get("currency"), str) else set()
        found |= {obj["Currency"]} if isinstance(obj.get("Currency"), str) else set()
        return found.union(*(_currencies(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(*(_currencies(v) for v in obj))
    return set()


def test_a_merchant_in_two_markets_gets_both_in_their_currencies():
    with _sandbox() as sb:
        client = _client(sb)
        now = sb.state.now() - timedelta(minutes=5)  # before real now: the client clamps ends to it
        a = now - timedelta(days=3)
        orders = list(client.orders(creds(MERCHANT), a, now, marketplace_ids=["CA", "US"]))
        expected = {
            market: {
                o["purchaseOrderId"]
                for o in walmart_orders_modified_between(sb.state, MERCHANT, a, now, market=market)
            }
            for market in ("ca", "us", "mx")
        }
        assert expected["ca"] and expected["us"] and not expected["ca"] & expected["us"]
        assert {o["purchaseOrderId"] for o in orders} == expected["ca"] | expected["us"]
        assert not expected["mx"] & {o["purchaseOrderId"] for o in orders}
        for order in orders:
            ca = order["purchaseOrderId"] in expected["ca"]
            assert _currencies(order) == ({"CAD"} if ca else {"USD"})
            assert order["shippingInfo"]["postalAddress"]["country"] == ("CAN" if ca else "USA")
        normalized = walmart_normalizer.normalize_orders(orders)
        assert not normalized.rejects
        assert {(o.marketplace_order_id in expected["ca"], o.marketplace_id, o.currency, o.country_code) for o in normalized.orders} == {
            (True, "WALMART_CA", "CAD", "CA"), (False, "WALMART_US", "USD", "US")
        }

        # Each market settles apart, in its own currency, and says which market it is.
        today = now.date()
        reports = list(
            client.recon_reports(creds(MERCHANT), today - timedelta(days=60), today, marketplace_ids=["US", "CA"])
        )
        by_market = Counter(r["market"] for r in reports)
        assert by_market["US"] == by_market["CA"] >= 3 and set(by_market) == {"US", "CA"}
        assert len({r["reportKey"] for r in reports}) == len(reports)
        for report in reports:
            want = "CAD" if report["market"] == "CA" else "USD"
            assert _currencies(report["rows"]) == {want}
            assert report["rows"] == walmart_recon_report(
                sb.state, MERCHANT, report["reportDate"], market=report["market"].lower()
            )

        # Stock is read in every market, each its own pool, each record labelled with its market.
        stock = list(client.inventory(creds(MERCHANT), marketplace_ids=["MX", "US"]))
        by_market = {m: {r["sku"]: r for r in stock if r["market"] == m} for m in ("MX", "US")}
        assert len(stock) == sum(len(rows) for rows in by_market.values())
        for market, rows in by_market.items():
            assert rows == {r["sku"]: {**r, "market": market} for r in walmart_inventory(sb.state, MERCHANT, market=market.lower())}
        assert by_market["MX"].keys() == by_market["US"].keys()
        assert [r["nodes"] for r in by_market["MX"].values()] != [r["nodes"] for r in by_market["US"].values()]


def test_the_sandbox_refuses_a_market_it_does_not_sell_in():
    with _sandbox() as sb:
        token = _token(sb).json()["access_token"]
        response = requests.get(
            sb.base_url + "/walmart/v3/inventories",
            headers={**HEADERS, "WM_SEC.ACCESS_TOKEN": token, "WM_MARKET": "jp"},
            timeout=5,
        )
        assert response.status_code == 400
        assert response.json()["errors"][0]["field"] == "WM_MARKET"
