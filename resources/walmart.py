"""Walmart Marketplace API client: an abstract Dagster resource and its HTTP implementation.

Assets type-hint `WalmartMarketplace`; definitions bind `WalmartMarketplaceHttp` with Walmart's
endpoint (or the local sandbox: its base URL + "/walmart"). Walmart issues API keys to each seller
(Seller Center > API Key Management), so the per-merchant secret is the seller's client id and
client secret together: build the credentials with `walmart_credentials(merchant_id, client_id,
client_secret)`; `ChannelCredentials` keeps the pair out of repr. Access tokens (15 minutes) are
cached per merchant and refreshed a margin before they expire, and again whenever Walmart answers
401.

Every operation yields Walmart's records verbatim (dicts; JSON numbers with a fraction become
`Decimal`, so money keeps its exact text). A record without its identifier is still yielded for the
extract to quarantine and counted in `stats.operation(...).malformed`.

- `orders`: GET /v3/orders by lastModified window, once per ship-node type (Walmart answers only
  `SellerFulfilled` orders unless asked for `WFSFulfilled`), following `list.meta.nextCursor` (a
  ready query string) to the end, deduped by purchaseOrderId. Walmart serves 180 days back: an older
  start raises `WalmartLookbackError` (or is clamped with `clamp_start=True`).
- `inventory`: GET /v3/inventories in each market of the connection (each holds its own stock),
  following `meta.nextCursor`, deduped by sku within a market; each record gains `market` (US,
  CA...), as a record does not name it.
- `recon_reports`: the available report dates in [since, until], then each report's JSON, paged
  with `offset`/`noOfRecords` and followed while `nextOffset` is not -1; one record per report:
  {"reportDate": "MMDDYYYY", "reportVersion": "v1", "rows": [every page's rows, in order]}.

Every response's envelope is checked (`ResponseShape`) before a page is read: a 200 answer of
another shape fails naming the operation and what was missing. Every paginated loop is bounded
(`max_pages`) and stops with an error on a cursor or offset already followed (`PageGuard`).
"""

from __future__ import annotations

import base64
import logging
import uuid
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

import dagster as dg
import requests
from pydantic import Field

from illuma_pipelines.marketplaces import WALMART_MARKETS
from resources.client_base import MarketplaceHttpClient
from resources.http import (
    ApiRequestError,
    ChannelCredentials,
    RequestStats,
    ResponseShape,
)

logger = logging.getLogger(__name__)

# Per-seller limits as (requests per second, burst), from the calls-per-minute figures on
# Walmart's rate-limiting page.
WALMART_RATE_LIMITS: dict[str, tuple[float, float]] = {
    "getAllOrders": (5000 / 60, 5000),
    "getMultiNodeInventory": (200 / 60, 200),
    "getAvailableReconReportDates": (20 / 60, 20),
    "getReconReportJson": (20 / 60, 20),
}
ORDERS_LOOKBACK = timedelta(days=180)
# Keep clear of the 180-day edge: Walmart measures it on its own clock at arrival.
LOOKBACK_MARGIN = timedelta(minutes=10)
SHIP_NODE_TYPES = ("SellerFulfilled", "WFSFulfilled")
SERVICE_NAME = "Walmart Marketplace"
MAX_TOKEN_REFRESHES_PER_CALL = 3


class WalmartLookbackError(ValueError):
    """The caller asked for orders older than Walmart's 180-day window."""


def walmart_credentials(merchant_id: str, client_id: str, client_secret: str) -> ChannelCredentials:
    """A merchant's Walmart API key pair as `ChannelCredentials` (the secret field holds both)."""
    if ":" in client_id:
        raise ValueError(
            "a Walmart client id never contains ':'; check the value copied from Seller Center"
        )
    return ChannelCredentials(merchant_id, f"{client_id}:{client_secret}")


def _iso(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("Walmart client times must be timezone-aware (UTC)")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class WalmartMarketplace(dg.ConfigurableResource):
    """The Walmart operations our assets use. Implementations: `WalmartMarketplaceHttp`."""

    @abstractmethod
    def orders(
        self,
        creds: ChannelCredentials,
        modified_after: datetime,
        modified_before: datetime | None = None,
        *,
        clamp_start: bool = False,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Orders last modified in [after, before), seller- and WFS-fulfilled, deduped by purchaseOrderId."""

    @abstractmethod
    def inventory(
        self,
        creds: ChannelCredentials,
        *,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Multi-node inventory in each of the merchant's markets, every page, deduped by sku
        within a market; each record names its market in `market`."""

    @abstractmethod
    def recon_reports(
        self,
        creds: ChannelCredentials,
        since: date,
        until: date | None = None,
        *,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Reconciliation reports dated in [since, until]: {"reportDate", "reportVersion", "rows"}.

        Every operation names the merchant's market (`marketplace_ids` from its channel
        connection: US, CA, MX or CL) in the WM_MARKET header; without one, no header (the US)."""


class WalmartMarketplaceHttp(WalmartMarketplace, MarketplaceHttpClient):
    """Walmart Marketplace APIs over HTTP with `requests`: tokens, pacing, retries. Thread-safe."""

    RATE_LIMITS: ClassVar[Mapping[str, tuple[float, float]]] = WALMART_RATE_LIMITS

    endpoint: str = Field(
        default="https://marketplace.walmartapis.com",
        description="Walmart API host, or the sandbox base URL + '/walmart'.",
    )
    service_name: str = SERVICE_NAME
    orders_page_size: int = Field(default=200, description="GET /v3/orders takes at most 200.")
    inventory_page_size: int = Field(
        default=50, description="GET /v3/inventories takes at most 50."
    )
    report_version: str = "v1"
    recon_page_size: int = Field(
        default=1000, description="Rows per reconFileJson page (noOfRecords); Walmart pages 1,000."
    )

    @staticmethod
    def _markets(marketplace_ids: Sequence[str] | None) -> list[str | None]:
        """The WM_MARKET value of each market of the merchant's connection, in its order, or
        [None] (the US, Walmart's default, sent without the header)."""
        markets: list[str | None] = []
        for market in marketplace_ids or ():
            if not market:
                continue
            if market.lower() not in WALMART_MARKETS:
                raise ValueError(
                    f"Walmart market {market!r} is not one of {', '.join(m.upper() for m in WALMART_MARKETS)}; "
                    "fix the merchant's walmart connection (illuma merchants add ... --channel walmart=REF@CA)"
                )
            if market.lower() not in markets:
                markets.append(market.lower())
        return markets or [None]

    def _base_headers(self) -> dict[str, str]:
        return {
            "WM_SVC.NAME": self.service_name,
            "WM_QOS.CORRELATION_ID": str(uuid.uuid4()),
            "Accept": "application/json",
        }

    def _access_token(self, creds: ChannelCredentials, force_refresh: bool) -> str:
        if ":" not in creds.refresh_token:
            raise ApiRequestError(
                "walmartToken",
                f"the Walmart credentials of merchant {creds.merchant_id} are not a client id and secret pair; build them with walmart_credentials()",
            )
        basic = base64.b64encode(creds.refresh_token.encode()).decode()
        return self._cached_token(
            creds,
            force_refresh,
            "walmartToken",
            lambda: self._api().request(
                "walmartToken",
                "POST",
                self.endpoint.rstrip("/") + "/v3/token",
                bucket_key=creds.merchant_id,
                data={"grant_type": "client_credentials"},
                headers={**self._base_headers(), "Authorization": f"Basic {basic}"},
                paced=False,
            ),
            default_lifetime=900,
            what_to_check="the merchant's Walmart client id and secret",
        )

    def _get(
        self,
        creds: ChannelCredentials,
        operation: str,
        url: str,
        params: dict[str, Any] | None,
        stats: RequestStats,
        market: str | None = None,
    ) -> Any:
        refreshes = 0
        market_header = {"WM_MARKET": market} if market else {}

        def auth(force: bool) -> dict[str, str]:
            nonlocal refreshes
            if force:
                refreshes += 1
            return {
                **self._base_headers(),
                **market_header,
                "WM_SEC.ACCESS_TOKEN": self._access_token(creds, force),
            }

        def expired(response: requests.Response) -> bool:
            # Walmart answers 401 UNAUTHORIZED.GMP_GATEWAY_API for an expired token: refresh it.
            return response.status_code == 401 and refreshes < MAX_TOKEN_REFRESHES_PER_CALL

        response = self._api().request(
            operation,
            "GET",
            url,
            bucket_key=creds.merchant_id,
            params=params,
            auth=auth,
            auth_expired=expired,
            stats=stats,
        )
        stats.add(operation, pages=1)
        return response.data

    def _url(self, path: str) -> str:
        return self.endpoint.rstrip("/") + path

    # -- orders ------------------------------------------------------------------------------
    def orders(
        self, creds, modified_after, modified_before=None, *, clamp_start=False, marketplace_ids=None, stats=None
    ):
        stats = stats if stats is not None else RequestStats()
        self._markets(marketplace_ids)  # a bad market fails before any request
        now = _utcnow()
        floor = now - ORDERS_LOOKBACK + LOOKBACK_MARGIN
        start = modified_after
        if start < floor:
            if not clamp_start:
                raise WalmartLookbackError(
                    f"Walmart serves orders modified in the last 180 days only; the window for merchant {creds.merchant_id} "
                    f"starts at {_iso(modified_after)}, before {_iso(floor)}. Start the window at or after that time "
                    "(or pass clamp_start=True), and read older money from the reconciliation reports"
                )
            logger.info(
                "walmart orders: window start for merchant %s clamped to the 180-day limit %s",
                creds.merchant_id,
                _iso(floor),
            )
            start = floor
        end = now if modified_before is None or modified_before > now else modified_before
        if start >= end:
            return
        seen: set[str] = set()
        for market, node_type in ((m, n) for m in self._markets(marketplace_ids) for n in SHIP_NODE_TYPES):
            params: dict[str, Any] | None = {
                "lastModifiedStartDate": _iso(start),
                "lastModifiedEndDate": _iso(end),
                "limit": min(self.orders_page_size, 200),
                "shipNodeType": node_type,
                "productInfo": "false",
            }
            url = self._url("/v3/orders")
            pages = self._pager("getAllOrders", what="nextCursor")
            while True:
                pages.page()
                body = self._get(creds, "getAllOrders", url, params, stats, market)
                orders, cursor = _cursor_page(
                    "getAllOrders", body, "list.meta", "list.elements.order",
                    "GET /v3/orders: {list: {meta: {totalCount, nextCursor?}, elements: {order: [...]}}}",
                )
                for order in orders:
                    po = order.get("purchaseOrderId") if isinstance(order, dict) else None
                    if not isinstance(po, str) or not po:
                        stats.add("getAllOrders", malformed=1)
                        yield order
                        continue
                    if po in seen:
                        continue
                    seen.add(po)
                    stats.add("getAllOrders", records=1)
                    yield order
                if cursor is None or not cursor.strip():
                    break
                # The same cursor again is the same page again: Walmart would answer it forever.
                pages.follow(cursor)
                # nextCursor is the next page's whole query string, to append as is.
                url = self._url("/v3/orders") + (cursor if cursor.startswith("?") else "?" + cursor)
                params = None

    # -- inventory ---------------------------------------------------------------------------
    def inventory(self, creds, *, marketplace_ids=None, stats=None):
        stats = stats if stats is not None else RequestStats()
        for market in self._markets(marketplace_ids):
            yield from self._inventory_in(creds, market, stats)

    def _inventory_in(
        self, creds: ChannelCredentials, market: str | None, stats: RequestStats
    ) -> Iterator[dict[str, Any]]:
        """The stock of one market (the US when sent without WM_MARKET), every record labelled
        with it as recon reports are."""
        label = (market or "us").upper()
        seen: set[str] = set()
        cursor: str | None = None
        pages = self._pager("getMultiNodeInventory", what="nextCursor")
        while True:
            pages.page()
            params: dict[str, Any] = {"limit": min(self.inventory_page_size, 50)}
            if cursor:
                params["nextCursor"] = cursor
            body = self._get(
                creds, "getMultiNodeInventory", self._url("/v3/inventories"), params, stats, market
            )
            rows, next_cursor = _cursor_page(
                "getMultiNodeInventory", body, "meta", "elements.inventories",
                "GET /v3/inventories: {meta: {totalCount, nextCursor?}, elements: {inventories: [...]}}",
            )
            for row in rows:
                if isinstance(row, dict):
                    row = {**row, "market": label}
                sku = row.get("sku") if isinstance(row, dict) else None
                if not isinstance(sku, str) or not sku:
                    stats.add("getMultiNodeInventory", malformed=1)
                    yield row
                    continue
                if sku in seen:
                    continue
                seen.add(sku)
                stats.add("getMultiNodeInventory", records=1)
                yield row
            if not next_cursor:
                return
            cursor = pages.follow(next_cursor)

    # -- reconciliation ----------------------------------------------------------------------
    def recon_reports(self, creds, since, until=None, *, marketplace_ids=None, stats=None):
        stats = stats if stats is not None else RequestStats()
        markets = self._markets(marketplace_ids)
        until = until or _utcnow().date()
        for market in markets:
            yield from self._recon_reports_in(creds, since, until, market, stats)

    def _recon_reports_in(
        self, creds: ChannelCredentials, since: date, until: date, market: str | None, stats: RequestStats
    ) -> Iterator[dict[str, Any]]:
        """The reports of one market (each market settles apart, in its own currency); every
        record names its market (US when sent without WM_MARKET)."""
        body = self._get(
            creds,
            "getAvailableReconReportDates",
            self._url("/v3/report/reconreport/availableReconFiles"),
            {"reportVersion": self.report_version},
            stats,
            market,
        )
        listed = ResponseShape(
            "getAvailableReconReportDates",
            body,
            "GET /v3/report/reconreport/availableReconFiles: {availableApReportDates: [MMDDYYYY]}",
        ).records("availableApReportDates")
        dates: dict[date, str] = {}
        for raw in listed:
            try:
                parsed = datetime.strptime(str(raw), "%m%d%Y").date()
            except ValueError:
                stats.add("getAvailableReconReportDates", malformed=1)
                logger.warning(
                    "walmart recon: skipped an unparsable report date in the listing for merchant %s",
                    creds.merchant_id,
                )
                continue
            dates[parsed] = str(raw)
        for day in sorted(d for d in dates if since <= d <= until):
            report_date = dates[day]
            rows = self._recon_rows(creds, report_date, stats, market)
            for row in rows:
                # Every detail row has a Transaction Key; only the PaymentSummary row lacks one.
                if not isinstance(row, dict) or (
                    row.get("Transaction Type") != "PaymentSummary"
                    and not row.get("Transaction Key")
                ):
                    stats.add("getReconReportJson", malformed=1)
            stats.add("getReconReportJson", records=1)
            label = (market or "us").upper()
            yield {
                "reportKey": f"{label}:{report_date}",  # one report per market and date
                "reportDate": report_date,
                "reportVersion": self.report_version,
                "market": label,
                "rows": rows,
            }

    def _recon_rows(
        self, creds: ChannelCredentials, report_date: str, stats: RequestStats, market: str | None
    ) -> list[Any]:
        """Every row of one report: pages of `recon_page_size` rows from offset 0, following
        `nextOffset` until it is -1 (or absent: an unpaged report is one body)."""
        rows: list[Any] = []
        offset = 0
        pages = self._pager("getReconReportJson", what="nextOffset")
        pages.follow(offset)
        while True:
            pages.page()
            data = self._get(
                creds,
                "getReconReportJson",
                self._url("/v3/report/reconreport/reconFileJson"),
                {
                    "reportDate": report_date,
                    "reportVersion": self.report_version,
                    "offset": offset,
                    "noOfRecords": self.recon_page_size,
                },
                stats,
                market,
            )
            # The documented body is {"reportData": [...], "nextOffset": n}; some published
            # examples are the bare list of rows.
            if isinstance(data, list):
                rows.extend(data)
                return rows
            shape = ResponseShape(
                "getReconReportJson",
                data,
                f"report {report_date} as {{reportData: [...], nextOffset?}}",
            )
            rows.extend(shape.records("reportData"))
            raw_next = shape.get("nextOffset", (int, str), required=False)
            try:
                next_offset = -1 if raw_next is None else int(raw_next)
            except ValueError:
                raise shape.error(f"'nextOffset' is {raw_next!r}, not a whole number") from None
            if next_offset < 0:
                return rows
            pages.follow(next_offset)
            if next_offset < offset:
                raise ApiRequestError(
                    "getReconReportJson",
                    f"report {report_date}: nextOffset {next_offset} goes back from offset "
                    f"{offset}; the pages would overlap, so the report was not read",
                )
            offset = next_offset


def _cursor_page(operation: str, body: object, meta: str, records: str, expected: str) -> tuple[list, str | None]:
    """One page of a cursor-paged listing: its records (absent only when `totalCount` says 0) and
    the next cursor, the envelope checked (ResponseShape)."""
    shape = ResponseShape(operation, body, expected)
    total = shape.get(f"{meta}.totalCount", int, required=False)
    return (
        shape.records(records, may_be_absent=total == 0),
        shape.get(f"{meta}.nextCursor", str, required=False),
    )
