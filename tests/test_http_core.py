"""The shared HTTP client core: pacing, stats, retries, and what it never reveals.

ApiSession is exercised against a scripted stand-in for a marketplace (a tiny http.server that
answers from a script) and against the sandbox, never against mocks of our own code.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resources.http import (
    ApiRequestError,
    ApiSession,
    ChannelCredentials,
    PageGuard,
    RequestStats,
    ResponseShape,
    RetryPolicy,
    TokenBucket,
)
from tests.sandbox_helpers import amazon_sandbox


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_token_bucket_burst_then_rate():
    clock = FakeClock()
    bucket = TokenBucket(2.0, 5, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(0.5)
    assert not bucket.try_acquire()
    clock.now += 1.0
    assert bucket.try_acquire() and bucket.try_acquire() and not bucket.try_acquire()
    bucket.set_rate(10.0)
    assert bucket.acquire() == pytest.approx(0.1)
    bucket.drain(debt=2.0)
    assert bucket.acquire() == pytest.approx(0.3)


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(min_value=0.01, max_value=50),
    burst=st.integers(min_value=1, max_value=30),
    gaps=st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=80),
)
def test_token_bucket_never_exceeds_burst_plus_rate(rate, burst, gaps):
    clock = FakeClock()
    bucket = TokenBucket(rate, burst, clock=clock, sleep=clock.sleep)
    grants = []
    for gap in gaps:
        clock.now += gap
        bucket.acquire()
        grants.append(clock.now)
    for i, at in enumerate(grants):
        assert i + 1 <= burst + rate * at + 1e-6


def test_request_stats_is_thread_safe():
    stats = RequestStats()

    def work() -> None:
        for _ in range(1000):
            stats.add("op", requests=1, seconds=0.001)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stats.operation("op").requests == 8000
    assert stats.total().seconds == pytest.approx(8.0)
    assert set(stats.as_dict()["op"]) >= {
        "requests",
        "pages",
        "throttled",
        "retries",
        "seconds",
        "malformed",
    }


def test_credentials_repr_hides_the_token():
    creds = ChannelCredentials("acme_parts", "Atzr|very-secret")
    assert "very-secret" not in repr(creds) and "very-secret" not in str(creds)


# ---------------------------------------------------------------------------------------------
# A scripted marketplace: each request pops the next (status, headers, body, action) for its path.


@contextmanager
def scripted_server(script: dict[str, list[tuple]]) -> Iterator[str]:
    queues = {path: deque(steps) for path, steps in script.items()}
    seen: list[dict[str, str]] = []
    # Set when the test is done: a "hang" step holds its request until then, far beyond any
    # read timeout, whatever the machine's speed.
    done = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            status, headers, body, action = queues[self.path.split("?")[0]].popleft()
            if action == "hang":
                if done.wait(HANG_CAP_SECONDS):
                    return  # the client gave up long ago: nobody is listening
            if action == "reset":
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                self.connection.close()
                return
            data = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        done.set()
        server.shutdown()
        server.server_close()


# A read timeout far above a round trip to the in-process server even on a stalling machine (a
# slow answer must never cost an unscripted retry), and a "hang" step that outlasts it many times.
READ_TIMEOUT = 2.0
HANG_CAP_SECONDS = 30.0


def session(**policy) -> ApiSession:
    defaults = {
        "max_retries": 4,
        "backoff_base": 0.01,
        "backoff_cap": 0.02,
        "connect_timeout": 1.0,
        "read_timeout": READ_TIMEOUT,
    }
    defaults.update(policy)
    return ApiSession(rates={"op": (100.0, 10)}, policy=RetryPolicy(**defaults), seed=1)


OK = (200, {"x-amzn-RateLimit-Limit": "40"}, '{"value": 12.30}', None)


def test_retries_every_transient_failure_then_returns_exact_numbers():
    script = {
        "/x": [
            (429, {"Retry-After": "0.3"}, '{"errors":[{"code":"QuotaExceeded"}]}', None),
            (503, {}, '{"errors":[{"code":"ServiceUnavailable"}]}', None),
            (200, {}, '{"value": 12.3', None),  # cut JSON with a matching Content-Length
            # No answer during the test (an OK after 30 s): only a read timeout moves on from it.
            OK[:3] + ("hang",),
            (200, {}, "", "reset"),
            OK,
        ]
    }
    with scripted_server(script) as base:
        api = session(max_retries=6)
        stats = RequestStats()
        started = time.monotonic()
        response = api.request("op", "GET", base + "/x", bucket_key="m", stats=stats)
        assert time.monotonic() - started >= 0.3  # Retry-After honoured
        assert response.data == {"value": Decimal("12.30")}
        ops = stats.operation("op")
        assert ops.retries == 5 and ops.throttled == 1 and ops.requests == 6
        # The rate header replaced the documented rate (with the safety margin).
        assert api.bucket("m", "op").rate == pytest.approx(40 * api.safety)


def test_gives_up_with_a_clear_error_that_reveals_nothing(caplog):
    caplog.set_level(logging.DEBUG)
    secret_body = '{"errors":[{"code":"InternalFailure","message":"buyer Jane Roe, 1 Elm St"}]}'
    script = {
        "/x": [(500, {}, secret_body, None)] * 3,
        "/y": [(400, {}, '{"errors":[{"code":"InvalidInput","message":"Jane Roe"}]}', None)],
    }
    with scripted_server(script) as base:
        api = session(max_retries=2)
        with pytest.raises(ApiRequestError) as info:
            api.request(
                "searchOrders",
                "GET",
                base + "/x",
                bucket_key="m",
                headers={"x-amz-access-token": "Atza|tok-123"},
            )
        assert str(info.value).startswith(
            "searchOrders: gave up after 3 attempts"
        ) and "server error 500" in str(info.value)
        with pytest.raises(ApiRequestError) as rejected:
            api.request("getOrder", "GET", base + "/y", bucket_key="m")
        assert rejected.value.status == 400 and rejected.value.code == "InvalidInput"
    text = caplog.text + str(info.value) + str(rejected.value)
    assert "Jane Roe" not in text and "Elm St" not in text and "tok-123" not in text


def test_expired_token_is_refreshed_and_retried():
    expired = '{"errors":[{"code":"Unauthorized","message":"Access to requested resource is denied.","details":"The access token you provided has expired."}]}'
    script = {
        "/x": [(403, {}, expired, None), OK],
        "/z": [(403, {}, '{"errors":[{"code":"Unauthorized","details":"invalid"}]}', None)],
    }
    refreshes: list[bool] = []

    def auth(force: bool) -> dict[str, str]:
        refreshes.append(force)
        return {"x-amz-access-token": f"token-{len(refreshes)}"}

    def is_expired(response) -> bool:
        return response.status_code == 403 and "expired" in response.text

    with scripted_server(script) as base:
        api = session()
        api.request("op", "GET", base + "/x", bucket_key="m", auth=auth, auth_expired=is_expired)
        assert refreshes == [False, True]
        with pytest.raises(ApiRequestError, match="HTTP 403"):
            api.request(
                "op", "GET", base + "/z", bucket_key="m", auth=auth, auth_expired=is_expired
            )


def test_paces_to_the_header_rate_against_the_sandbox():
    with amazon_sandbox(quota_speedup=1000, enforce_quotas=True) as sb:
        api = ApiSession(rates={"searchOrders": (0.0056, 20)}, rate_speedup=1.0)
        token = json.loads(
            __import__("requests")
            .post(
                sb.base_url + "/amazon/auth/o2/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": "sandbox-refresh-acme_parts",
                    "client_id": "a",
                    "client_secret": "b",
                },
                timeout=5,
            )
            .text
        )["access_token"]
        now = sb.state.now()
        params = {
            "createdAfter": now.replace(hour=0, minute=0).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "createdBefore": now.replace(hour=0, minute=1).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        stats = RequestStats()
        started = time.monotonic()
        for _ in range(30):
            api.request(
                "searchOrders",
                "GET",
                sb.base_url + "/amazon/orders/2026-01-01/orders",
                bucket_key="acme_parts",
                params=params,
                headers={"x-amz-access-token": token},
                stats=stats,
            )
        elapsed = time.monotonic() - started
        # 20 burst, then 10 more at the header's 5.6 req/s (less the safety margin), and the
        # server never had to throttle.
        rate = api.bucket("acme_parts", "searchOrders").rate
        assert rate == pytest.approx(5.6 * api.safety)
        ops = stats.operation("searchOrders")
        assert ops.throttled == 0 and sb.state.throttled["searchOrders"] == 0
        # The 29 requests after the first took at least the refill of 10 tokens (about 1.84 s; a
        # hair less for float rounding). The client slept in its bucket for what their round trips
        # (about a millisecond each) left of it: how long depends on the machine's speed, so only
        # that it slept is asserted.
        assert elapsed >= 0.99 * 10 / rate
        assert ops.waited > 0


# ---------------------------------------------------------------------------------------------
# Response envelopes and page guards


def test_response_shape_names_the_member_and_what_arrived_never_values():
    v0_orders = json.dumps(
        {
            "payload": {
                "Orders": [
                    {
                        "AmazonOrderId": "305-1927364-5521908",
                        "OrderTotal": {"CurrencyCode": "GBP", "Amount": "64.98"},
                        "BuyerInfo": {"BuyerEmail": "x7r2q@marketplace.amazon.co.uk"},
                        "NumberOfItemsShipped": 2,
                    }
                ],
                "NextToken": "MRgZW55IGNhcm5hbCBwbGVhc3VyZS4",
            }
        }
    )
    wide = json.dumps({f"field{i:02d}": i for i in range(15)} | {"total": True, "orders": "none"})
    script = {"/v0": [(200, {}, v0_orders, None)], "/wide": [(200, {}, wide, None)]}
    with scripted_server(script) as base:
        api = session()
        body = api.request("searchOrders", "GET", base + "/v0", bucket_key="m").data
        wide_body = api.request("getOrders", "GET", base + "/wide", bucket_key="m").data
    shape = ResponseShape("searchOrders", body, "Orders API v2026-01-01: {orders: [...]}")
    with pytest.raises(ApiRequestError) as info:
        shape.records("orders")
    message = str(info.value)
    assert message.startswith(
        "searchOrders: the response has no 'orders' list (the body has payload)"
    )
    assert "expected Orders API v2026-01-01" in message and info.value.operation == "searchOrders"
    assert not [v for v in ("305-1927364", "64.98", "x7r2q", "MRgZW55") if v in message]
    # What is there reads normally; optional members may be absent; steps must be objects.
    assert shape.get("payload.Orders", list)[0]["OrderTotal"]["Amount"] == "64.98"
    assert shape.get("pagination.nextToken", str, required=False) is None
    with pytest.raises(ApiRequestError, match="'payload.NextToken' is a string, not an object"):
        shape.get("payload.NextToken.value", str)
    with pytest.raises(ApiRequestError, match="the body is an object, not a list"):
        shape.get("", list)

    wide_shape = ResponseShape("getOrders", wide_body, "an eBay getOrders page")
    # JSON true is not a count, and a string is not a list.
    with pytest.raises(ApiRequestError, match="'total' is a boolean, not an integer"):
        wide_shape.get("total", int)
    with pytest.raises(ApiRequestError, match="'orders' is a string, not a list") as wide_info:
        wide_shape.records("orders", may_be_absent=True)
    assert "and 5 more" in str(wide_info.value) and "field14" not in str(wide_info.value)
    assert ResponseShape("getOrders", {"total": 0}, "").records("orders", may_be_absent=True) == []
    with pytest.raises(ApiRequestError, match="the body is a JSON list"):
        ResponseShape("getOrders", [1, 2], "").records("orders")


def test_page_guard_refuses_a_cursor_twice_and_stops_at_its_bound():
    guard = PageGuard("getAllOrders", 3, what="nextCursor")
    cursor = "?limit=200&hasMoreElements=true&soIndex=200&poIndex=1796277083022&sellerId=101732"
    guard.page()
    assert guard.follow(cursor) == cursor
    guard.page()
    with pytest.raises(ApiRequestError) as info:
        guard.follow(cursor)
    assert str(info.value).startswith(
        "getAllOrders: the marketplace answered the nextCursor '?limit"
    )
    assert cursor in str(info.value) and "after 2 pages" in str(info.value)
    guard.follow("?soIndex=400")
    guard.page()
    with pytest.raises(
        ApiRequestError, match=r"getAllOrders: still not on the last page after 3 pages"
    ):
        guard.page()
    # A long cursor is clipped, never dumped whole.
    long_guard = PageGuard("searchOrders", 5, what="nextToken")
    token = "A" * 5000
    long_guard.follow(token)
    with pytest.raises(ApiRequestError) as clipped:
        long_guard.follow(token)
    assert len(str(clipped.value)) < 600
    with pytest.raises(ValueError, match="max_pages must be at least 1"):
        PageGuard("getOrders", 0)
