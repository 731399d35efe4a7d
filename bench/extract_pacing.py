"""How close does the Amazon client get to Amazon's quotas without being throttled?

Extracts a month for 5 merchants from the local sandbox with quotas enforced and prints, per
operation, the share of the allowed request rate the client used after its burst, and the 429s.

Each operation runs in its own phase against a fresh sandbox whose clock is sped up so that the
operation's documented rate becomes about TARGET_RATE requests/second per merchant (the sandbox
multiplies every documented rate by the speed-up; the client learns the applied rate from
`x-amzn-RateLimit-Limit`). The 5 merchants run in parallel threads, as Dagster runs partitions.

    .venv/bin/python bench/extract_pacing.py

"Share of allowed rate" = (requests admitted after the burst) / (rate x time from the first to the
last request), per merchant, averaged: 1.00 means every token the quota allowed was used. Goal:
>= 0.90 on every paced operation, <= 1% throttled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from illuma_pipelines.sandbox.amazon import RATE_LIMITS
from illuma_pipelines.sandbox.server import SandboxClock, SandboxConfig, SandboxServer
from resources.amazon import AmazonSellingPartnerHttp
from resources.http import ChannelCredentials, RequestStats

MERCHANTS = ("acme_parts", "mower_depot", "zed_auto", "kohler_king", "deere_direct")
TARGET_RATE = 8.0  # requests per second per merchant, after speed-up
DAYS = 30


def creds(merchant: str) -> ChannelCredentials:
    return ChannelCredentials(merchant, f"sandbox-refresh-{merchant}")


def month_windows(now: datetime) -> list[tuple[datetime, datetime]]:
    # One window per day, as the daily-partitioned extract assets ask.
    start = (now - timedelta(days=DAYS + 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return [(start + timedelta(days=d), start + timedelta(days=d + 1)) for d in range(DAYS)]


def extract_orders(
    client: AmazonSellingPartnerHttp, merchant: str, now: datetime, stats: RequestStats
) -> None:
    for a, b in month_windows(now):
        for _ in client.search_orders(creds(merchant), a, b, stats=stats):
            pass


def extract_order_details(
    client: AmazonSellingPartnerHttp, merchant: str, now: datetime, stats: RequestStats
) -> None:
    a, b = month_windows(now)[-7][0], month_windows(now)[-1][1]
    ids = [o["orderId"] for o in client.search_orders(creds(merchant), a, b)]
    for order_id in ids[:60]:
        client.get_order(creds(merchant), order_id, stats=stats)


def extract_transactions(
    client: AmazonSellingPartnerHttp, merchant: str, now: datetime, stats: RequestStats
) -> None:
    for a, b in month_windows(now):
        for _ in client.list_transactions(creds(merchant), a, b, stats=stats):
            pass


def extract_inventory(
    client: AmazonSellingPartnerHttp, merchant: str, now: datetime, stats: RequestStats
) -> None:
    # Three snapshots (as three days would): enough pages to leave the tiny burst behind.
    for _ in range(3):
        for _ in client.inventory_summaries(creds(merchant), stats=stats):
            pass


def extract_settlements(
    client: AmazonSellingPartnerHttp, merchant: str, now: datetime, stats: RequestStats
) -> None:
    for _ in client.settlement_reports(creds(merchant), now - timedelta(days=DAYS), stats=stats):
        pass


def extract_competitive(
    client: AmazonSellingPartnerHttp,
    merchant: str,
    now: datetime,
    stats: RequestStats,
    skus: list[str],
) -> None:
    # Pricing is re-read through the day: eight passes over the catalog, 20 SKUs per request.
    for _ in range(8):
        for _ in client.competitive_pricing(creds(merchant), skus, stats=stats):
            pass


def extract_offers(
    client: AmazonSellingPartnerHttp,
    merchant: str,
    now: datetime,
    stats: RequestStats,
    skus: list[str],
) -> None:
    for sku in skus:
        list(client.listing_offers(creds(merchant), sku, stats=stats))


# (label, operation whose rate sets the speed-up, operations reported, extract, sandbox overrides, client overrides)
PHASES: list[tuple[str, str, tuple[str, ...], Callable, dict, dict]] = [
    # Small pages so a month of daily windows needs enough calls to leave the burst of 20 behind.
    ("orders", "searchOrders", ("searchOrders",), extract_orders, {}, {"page_size": 3}),
    ("order details", "getOrder", ("getOrder",), extract_order_details, {}, {}),
    (
        "finances",
        "listTransactions",
        ("listTransactions",),
        extract_transactions,
        {"finances_page_size": 5},
        {},
    ),
    (
        "inventory",
        "getInventorySummaries",
        ("getInventorySummaries",),
        extract_inventory,
        {"inventory_page_size": 2},
        {},
    ),
    ("settlements", "getReports", ("getReports", "getReportDocument"), extract_settlements, {}, {}),
    (
        "competitive pricing",
        "getCompetitivePricing",
        ("getCompetitivePricing",),
        extract_competitive,
        {},
        {},
    ),
    ("listing offers", "getListingOffers", ("getListingOffers",), extract_offers, {}, {}),
]


def run_phase(
    label: str,
    lead_op: str,
    ops: tuple[str, ...],
    extract: Callable,
    sandbox_overrides: dict,
    client_overrides: dict,
) -> list[tuple]:
    rate, _ = RATE_LIMITS[lead_op]
    speed = TARGET_RATE / rate
    now = datetime.now(UTC)
    config = SandboxConfig(
        seed=2026,
        clock=SandboxClock(),
        enforce_quotas=True,
        quota_speedup=speed,
        history_start=(now - timedelta(days=DAYS + 40)).date(),
        **sandbox_overrides,
    )
    rows = []
    with SandboxServer(config) as sb:
        client = AmazonSellingPartnerHttp(
            endpoint=sb.base_url + "/amazon",
            token_url=sb.base_url + "/amazon/auth/o2/token",
            client_id="bench-client",
            client_secret="bench-secret",
            rate_speedup=speed,
            backoff_base=0.05,
            backoff_cap=1.0,
            **client_overrides,
        )
        stats = RequestStats()
        errors: list[BaseException] = []

        def work(merchant: str) -> None:
            try:
                if extract in (extract_competitive, extract_offers):
                    skus = [p.sku for p in sb.state.world(merchant).catalog]
                    extract(client, merchant, now, stats, skus)
                else:
                    extract(client, merchant, now, stats)
            except BaseException as exc:  # report, do not hide
                errors.append(exc)

        started = time.monotonic()
        threads = [threading.Thread(target=work, args=(m,)) for m in MERCHANTS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        if errors:
            raise errors[0]
        for op in ops:
            op_rate, burst = RATE_LIMITS[op]
            allowed_rate = op_rate * speed
            shares = []
            admitted_total = 0
            for merchant in MERCHANTS:
                times = [
                    t for t, caller, o in sb.state.admissions if caller == merchant and o == op
                ]
                admitted_total += len(times)
                paced = len(times) - burst
                if paced >= 5 and times[-1] > times[0]:
                    shares.append(paced / (allowed_rate * (times[-1] - times[0])))
            served = sb.state.served.get(op, 0)
            throttled = sb.state.throttled.get(op, 0)
            share = f"{sum(shares) / len(shares):.2f}" if shares else "burst only"
            rows.append(
                (
                    label,
                    op,
                    f"{op_rate:g}/{burst:g}",
                    f"{speed:g}",
                    admitted_total,
                    share,
                    throttled,
                    f"{100 * throttled / max(1, served + throttled):.2f}%",
                    f"{elapsed:.1f}s",
                )
            )
    return rows


def main() -> None:
    header = (
        "phase",
        "operation",
        "rate/burst",
        "speed-up",
        "requests",
        "share of allowed rate",
        "429s",
        "throttled",
        "wall",
    )
    rows = [header]
    for phase in PHASES:
        rows.extend(run_phase(*phase))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
