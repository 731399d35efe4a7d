"""Helpers for tests that run the sandbox server and the real marketplace clients over HTTP.

Not a conftest: import what you need (`from tests.sandbox_helpers import ...`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from illuma_pipelines.sandbox.faults import FaultConfig
from illuma_pipelines.sandbox.server import SandboxClock, SandboxConfig, SandboxServer
from resources.amazon import AmazonSellingPartnerHttp
from resources.ebay import EbaySellHttp
from resources.http import ChannelCredentials
from resources.walmart import WalmartMarketplaceHttp

FIXTURES = Path(__file__).parent / "fixtures" / "amazon"
CLIENT_ID = "amzn1.application-oa2-client.sandbox-test"
CLIENT_SECRET = "sandbox-client-secret-6f1d2c"  # a value tests look for in logs


def sandbox_now() -> datetime:
    """A fixed sandbox "now" two to three minutes ahead of real time, on the minute.

    The client clamps end times to (real now - 2 min) and report listings to (real now - 90 days
    + 5 min); the sandbox rejects ends later than (its now - 2 min) and listings older than (its
    now - 90 days - 5 min). A clock slightly ahead satisfies both for a test lasting a few
    minutes, while a fixed clock keeps the data still during the test.
    """
    return (datetime.now(UTC) + timedelta(minutes=3)).replace(second=0, microsecond=0)


def merchant_where(
    merchant_id: Callable[[str], str], name: str, holds: Callable[[str], bool], what: str
) -> str:
    """A fresh merchant id (from the `merchant_id` fixture) whose sandbox data `holds` what a test
    asserts on. The sandbox derives a merchant's data from its id: a test asserting that some
    feature is present would otherwise fail on the rare random id whose data lacks it."""
    for _ in range(100):
        mid = merchant_id(name)
        if holds(mid):
            return mid
    raise AssertionError(f"no merchant among 100 random ids has {what}")


# A token life the tests' calls outlast, and no stall expires in flight: the clients keep a token
# for half its life (1 s of 2).
SHORT_TOKEN_LIFETIME = 2.0


def call_once_per_token(call: Callable[[], object], times: int = 3) -> None:
    """Call `times` times, pausing between calls past what a client keeps of a
    SHORT_TOKEN_LIFETIME token: each call fetches a new token, and a stall under a second between
    the client's check and the server's cannot expire the one in use."""
    for i in range(times):
        if i:
            time.sleep(SHORT_TOKEN_LIFETIME / 2 + 0.1)
        call()


def clear_of_midnight(needed: timedelta) -> None:
    """Wait, when less than `needed` is left of the UTC day, until the next day starts.

    For a test whose assertions hold only when all it runs falls on one calendar day (a key
    labelled by the day its data was sealed): the wait is at most `needed`, on the rare run that
    starts that close to midnight.
    """
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    if midnight - now < needed:
        time.sleep((midnight - now).total_seconds() + 1)


def creds(merchant_id: str) -> ChannelCredentials:
    return ChannelCredentials(merchant_id, f"sandbox-refresh-{merchant_id}")


@contextmanager
def amazon_sandbox(
    *,
    now: datetime | None = None,
    faults: FaultConfig | None = None,
    enforce_quotas: bool = False,
    quota_speedup: float = 1000.0,
    **config: Any,
) -> Iterator[SandboxServer]:
    cfg = SandboxConfig(
        seed=config.pop("seed", 11),
        clock=SandboxClock.fixed_at(now or sandbox_now()),
        faults=faults or FaultConfig(),
        enforce_quotas=enforce_quotas,
        quota_speedup=quota_speedup,
        history_start=config.pop(
            "history_start", (now or sandbox_now()).date() - timedelta(days=200)
        ),
        **config,
    )
    with SandboxServer(cfg) as server:
        yield server


def amazon_client(server: SandboxServer, **overrides: Any) -> AmazonSellingPartnerHttp:
    """The real HTTP client pointed at the sandbox, with timeouts and backoff sized for tests."""
    settings: dict[str, Any] = {
        "endpoint": server.base_url + "/amazon",
        "token_url": server.base_url + "/amazon/auth/o2/token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
        "report_poll_seconds": 0.05,
        "report_timeout_seconds": 20.0,
        "rate_speedup": server.config.quota_speedup,
    }
    settings.update(overrides)
    return AmazonSellingPartnerHttp(**settings)


# Timeouts and backoff sized for tests, and the sandbox's quotas sped up alike.
FAST: dict[str, Any] = {
    "connect_timeout": 2.0,
    "read_timeout": 5.0,
    "backoff_base": 0.01,
    "backoff_cap": 0.05,
    "rate_speedup": 1000.0,
}


def ebay_client(base_url: str, **overrides: Any) -> EbaySellHttp:
    """The real eBay client pointed at a sandbox at `base_url`."""
    settings: dict[str, Any] = {
        "endpoint": base_url + "/ebay",
        "finances_endpoint": base_url + "/ebay",
        "token_url": base_url + "/ebay/identity/v1/oauth2/token",
        "client_id": "illuma-sandbox-app",
        "client_secret": "illuma-sandbox-app-secret",
        **FAST,
    }
    return EbaySellHttp(**{**settings, **overrides})


def walmart_client(base_url: str, **overrides: Any) -> WalmartMarketplaceHttp:
    """The real Walmart client pointed at a sandbox at `base_url`."""
    return WalmartMarketplaceHttp(**{"endpoint": base_url + "/walmart", **FAST, **overrides})


def well_formed_order(order: Any) -> bool:
    """What an extract would accept: an order with an id and a parseable createdTime."""
    if not isinstance(order, dict) or not isinstance(order.get("orderId"), str):
        return False
    try:
        datetime.fromisoformat(str(order.get("createdTime", "")).replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def well_formed_transaction(transaction: Any) -> bool:
    return isinstance(transaction, dict) and isinstance(transaction.get("transactionId"), str)


def well_formed_inventory(summary: Any) -> bool:
    return (
        isinstance(summary, dict)
        and isinstance(summary.get("sellerSku"), str)
        and isinstance(summary.get("totalQuantity"), int)
    )
