"""`illuma sandbox serve` started as a real process: its fault and quota flags reach the server
(issue 13, defect 10)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from illuma_pipelines.sandbox.amazon import MAX_ORDER_LIFETIME
from resources.amazon import AmazonSellingPartnerHttp
from resources.http import RequestStats
from tests.processes import free_port
from tests.sandbox_helpers import creds

ROOT = Path(__file__).resolve().parents[1]
MERCHANT = "cli_faults"
US = "ATVPDKIKX0DER"


def _illuma() -> list[str]:
    """The installed `illuma` console script beside this interpreter, else the module."""
    script = Path(sys.executable).parent / "illuma"
    return [str(script)] if script.exists() else [sys.executable, "-m", "illuma_pipelines.cli"]


@contextmanager
def serving(*flags: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`illuma sandbox serve --port P FLAGS...` in its own process, until it answers /health."""
    port = free_port()
    proc = subprocess.Popen(
        [*_illuma(), "sandbox", "serve", "--port", str(port), *flags],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"illuma sandbox serve exited {proc.returncode}: {proc.stdout.read()}")
            try:
                if requests.get(base + "/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail("illuma sandbox serve did not answer /health within 60 s")
            time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _token(base: str) -> str:
    """An access token; the token endpoint has faults of its own, so ask until one comes."""
    for _ in range(20):
        try:
            response = requests.post(
                base + "/amazon/auth/o2/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": f"sandbox-refresh-{MERCHANT}",
                    "client_id": "cli-test",
                    "client_secret": "cli-test-secret",
                },
                timeout=1,
            )
            if response.status_code == 200:
                return response.json()["access_token"]
        except (requests.RequestException, ValueError):
            continue
    pytest.fail("no access token from the sandbox in 20 tries")


def _search(base: str, token: str, timeout: float = 5.0) -> requests.Response:
    after = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return requests.get(
        base + "/amazon/orders/2026-01-01/orders",
        params={"lastUpdatedAfter": after, "marketplaceIds": US, "maxResultsPerPage": 5},
        headers={"x-amz-access-token": token},
        timeout=timeout,
    )


def _outcomes(base: str, calls: int, timeout: float = 5.0) -> Counter:
    token = _token(base)
    seen: Counter = Counter()
    for _ in range(calls):
        try:
            seen[_search(base, token, timeout).status_code] += 1
        except requests.RequestException as exc:
            seen[type(exc).__name__] += 1
    return seen


def test_without_flags_nothing_is_injected():
    with serving() as (base, _):
        assert _outcomes(base, 30) == Counter({200: 30})


def test_throttle_flag_answers_429_with_the_retry_after_given():
    with serving("--fault-throttle", "1", "--retry-after-seconds", "0.5") as (base, _):
        token = _token(base)  # the token endpoint is never throttled
        for _ in range(10):
            response = _search(base, token)
            assert response.status_code == 429
            assert response.headers["Retry-After"] == "0.5"
            assert response.json()["errors"][0]["code"] == "QuotaExceeded"


def test_mixed_faults_hit_some_calls_and_a_retrying_client_still_gets_every_order():
    with serving() as (base, _):
        clean = AmazonSellingPartnerHttp(
            endpoint=base + "/amazon",
            token_url=base + "/amazon/auth/o2/token",
            client_id="cli-test",
            client_secret="cli-test-secret",
            page_size=5,
        )
        # A window of settled orders: it ends longer ago than any order can still change, so the
        # two servers' running clocks, seconds apart, find the same orders in it.
        before = datetime.now(UTC) - MAX_ORDER_LIFETIME - timedelta(days=1)
        after = before - timedelta(days=5)
        expected = [o["orderId"] for o in clean.search_orders(creds(MERCHANT), after, before)]
    # More than two pages of 5: any 5 days of this merchant's settled orders hold at least 12 (every
    # window up to 2040 counted; 2 days held as few as 1).
    assert len(expected) > 10
    flags = (
        "--faults", "0.4", "--fault-seed", "4",
        "--fault-timeout-seconds", "0.4", "--retry-after-seconds", "0.05",
    )
    with serving(*flags) as (base, _):
        seen = _outcomes(base, 40, timeout=0.2)
        assert seen[200] and sum(n for status, n in seen.items() if status != 200) >= 8, seen
        client = AmazonSellingPartnerHttp(
            endpoint=base + "/amazon",
            token_url=base + "/amazon/auth/o2/token",
            client_id="cli-test",
            client_secret="cli-test-secret",
            page_size=5,
            read_timeout=0.2,
            backoff_base=0.01,
            backoff_cap=0.05,
            max_retries=30,
        )
        stats = RequestStats()
        got = [
            o["orderId"]
            for o in client.search_orders(creds(MERCHANT), after, before, stats=stats)
            if isinstance(o, dict) and "orderId" in o  # malformed copies are the fault's own
        ]
    assert got == expected
    assert stats.total().retries > 0


def test_enforce_quotas_flag_throttles_past_the_documented_burst():
    # searchOrders: 0.0056 requests a second, burst 20.
    with serving("--enforce-quotas") as (base, _):
        seen = _outcomes(base, 25)
    assert seen == Counter({200: 20, 429: 5})
    with serving("--enforce-quotas", "--quota-speedup", "10000") as (base, _):
        seen = _outcomes(base, 25)
    assert seen[200] > 20


def test_the_server_logs_what_it_injects():
    with serving("--fault-server-error", "0.25", "--fault-seed", "9", "--enforce-quotas") as (_, proc):
        pass
    log = proc.stdout.read()
    assert "faults: server_error 0.25 (seed 9)" in log
    assert "quotas: enforced at 1x the documented rates" in log


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--faults", "0.2", "--fault-timeout", "0.1"), "--faults spreads one rate"),
        (("--fault-throttle", "0.7", "--fault-server-error", "0.6"), "sum to at most 1"),
        (("--fault-timeout", "1.5"), "not a rate between 0 and 1"),
        (("--quota-speedup", "0"), "must be greater than 0"),
    ],
)
def test_contradictory_or_out_of_range_flags_are_refused(flags, message):
    done = subprocess.run(
        [*_illuma(), "sandbox", "serve", "--port", str(free_port()), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr
