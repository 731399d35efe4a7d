"""Amazon Selling Partner API client: an abstract Dagster resource and its HTTP implementation.

Assets type-hint `AmazonSellingPartner`; definitions bind `AmazonSellingPartnerHttp` with secrets
from `dg.EnvVar` and the endpoint of a region (or of the local sandbox: its base URL + "/amazon").
Each call takes the merchant's `ChannelCredentials` (merchant id + LWA refresh token), so one
resource serves every merchant; access tokens are cached per merchant and refreshed ~60 s before
they expire, and again whenever Amazon answers 403 "expired".

Every operation returns Amazon's records verbatim (dicts; JSON numbers with a fraction become
`Decimal`, money strings stay strings) and accepts an optional `RequestStats`. Operations that take
one marketplace (stock, prices, finances) are asked in each of the merchant's in turn; an inventory
summary or a competitive pricing entry, which does not name its marketplace, gains `marketplaceId`. A record that lacks
its identifier (e.g. an order without `orderId`) is still yielded, so the extract can quarantine
it; it is counted in `stats.operation(...).malformed`. Each response's envelope is checked first
(`ResponseShape`): an Orders v0 body answering searchOrders, say, fails naming the operation and
the missing member instead of reading as an empty page. Paging is bounded by `max_pages` and
stops with an error on a token already followed.
"""

from __future__ import annotations

import gzip
import time
import zlib
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote

import dagster as dg
import requests
from pydantic import Field

from resources.client_base import MarketplaceHttpClient
from resources.http import (
    ApiRequestError,
    ChannelCredentials,
    RequestStats,
    ResponseShape,
)

# Default usage plans (rate per second, burst) from the operation descriptions in
# amzn/selling-partner-api-models (orders_2026-01-01.json, fbaInventory.json,
# finances_2024-06-19.json, reports_2021-06-30.json, productPricingV0.json). The client adopts the
# rate Amazon actually applied from `x-amzn-RateLimit-Limit` after the first response.
AMAZON_RATE_LIMITS: dict[str, tuple[float, float]] = {
    "searchOrders": (0.0056, 20),
    "getOrder": (0.5, 30),
    "getInventorySummaries": (2.0, 2),
    "listTransactions": (0.5, 10),
    "getReports": (0.0222, 10),
    "getReport": (2.0, 15),
    "createReport": (0.0167, 15),
    "getReportDocument": (0.0167, 15),
    "getCompetitivePricing": (0.5, 1),
    "getListingOffers": (1.0, 2),
}
SETTLEMENT_REPORT_TYPE = "GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE_V2"
DEFAULT_ORDER_DATASETS = (
    "BUYER",
    "RECIPIENT",
    "PROCEEDS",
    "EXPENSE",
    "PROMOTION",
    "CANCELLATION",
    "FULFILLMENT",
    "PACKAGES",
)
# Amazon rejects end times later than two minutes before the request.
API_LAG = timedelta(minutes=2)
REPORT_RETENTION = timedelta(days=90)
# Finances returns nothing for ranges longer than 180 days: split longer ranges.
FINANCES_MAX_RANGE = timedelta(days=180)


class AmazonReportError(RuntimeError):
    """A requested report ended FATAL or CANCELLED, or did not finish in time."""


def _iso(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("Amazon client times must be timezone-aware (UTC)")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AmazonSellingPartner(dg.ConfigurableResource):
    """The Amazon operations our assets use. Implementations: `AmazonSellingPartnerHttp`.

    Abstract (pydantic's model metaclass is an ABCMeta): instantiate an implementation.
    """

    marketplace_ids: list[str] = Field(
        default_factory=lambda: ["ATVPDKIKX0DER"],
        description="Marketplaces read when a call names none. The extracts pass each merchant's "
        "own, from its channel connection.",
    )

    def _marketplaces(self, marketplace_ids: Sequence[str] | None) -> list[str]:
        """The marketplaces a call reads: the merchant's (`marketplace_ids`, from its channel
        connection), else this resource's default; in order, without repeats."""
        chosen = [m for m in (marketplace_ids or ()) if m] or list(self.marketplace_ids)
        return list(dict.fromkeys(chosen))

    @abstractmethod
    def search_orders(
        self,
        creds: ChannelCredentials,
        last_updated_after: datetime,
        last_updated_before: datetime | None = None,
        *,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Orders v2026-01-01 searchOrders by last update in [after, before) in every one of the
        merchant's marketplaces, every page, deduped by orderId."""

    @abstractmethod
    def get_order(
        self, creds: ChannelCredentials, order_id: str, *, stats: RequestStats | None = None
    ) -> dict[str, Any]:
        """Orders v2026-01-01 getOrder with every dataset; returns the `order` object."""

    @abstractmethod
    def inventory_summaries(
        self,
        creds: ChannelCredentials,
        *,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """FBA Inventory getInventorySummaries (details=true) in each of the merchant's
        marketplaces in turn (granularity Marketplace: what can be fulfilled there), every page.
        A summary does not name its marketplace, so each gains `marketplaceId`, the one it was
        read in; the same SKU comes once per marketplace."""

    @abstractmethod
    def list_transactions(
        self,
        creds: ChannelCredentials,
        posted_after: datetime,
        posted_before: datetime | None = None,
        *,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Finances 2024-06-19 listTransactions posted in [after, before), one marketplace after
        the other (the operation takes one), deduped by transactionId."""

    @abstractmethod
    def settlement_reports(
        self,
        creds: ChannelCredentials,
        created_since: datetime,
        created_until: datetime | None = None,
        *,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Settlement flat files (V2) listed in the window (at most 90 days back) for every one of
        the merchant's marketplaces (Amazon settles each apart; getReports filtered by
        `marketplaceIds`), one record per settlement: {"report": getReport metadata,
        "settlementId": ..., "document": text}."""

    @abstractmethod
    def request_report(
        self,
        creds: ChannelCredentials,
        report_type: str,
        *,
        data_start: datetime | None = None,
        data_end: datetime | None = None,
        report_options: dict[str, str] | None = None,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> dict[str, Any]:
        """createReport for the merchant's marketplaces, poll getReport until done, download;
        {"report": metadata, "document": text}."""

    @abstractmethod
    def competitive_pricing(
        self,
        creds: ChannelCredentials,
        skus: Sequence[str] = (),
        *,
        asins: Sequence[str] = (),
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Product Pricing v0 getCompetitivePricing in each of the merchant's marketplaces (the
        operation takes one), 20 items per request; one payload entry per item and marketplace,
        each with `marketplaceId` added (an error entry names none of its own)."""

    @abstractmethod
    def listing_offers(
        self,
        creds: ChannelCredentials,
        sku: str,
        *,
        item_condition: str = "New",
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Product Pricing v0 getListingOffers for one of the merchant's SKUs in each of its
        marketplaces (the operation takes one): one `payload` per marketplace, in its currency."""


class AmazonSellingPartnerHttp(AmazonSellingPartner, MarketplaceHttpClient):
    """SP-API over HTTP with `requests`: LWA tokens, pacing, retries. Thread-safe."""

    RATE_LIMITS: ClassVar[Mapping[str, tuple[float, float]]] = AMAZON_RATE_LIMITS

    endpoint: str = Field(
        default="https://sellingpartnerapi-na.amazon.com",
        description="Regional SP-API endpoint, or the sandbox base URL + '/amazon'.",
    )
    token_url: str = Field(
        default="https://api.amazon.com/auth/o2/token",
        description="Login with Amazon token endpoint.",
    )
    client_id: str = Field(description="LWA client id of our SP-API application (use dg.EnvVar).")
    client_secret: str = Field(description="LWA client secret (use dg.EnvVar).")
    page_size: int = 100
    report_poll_seconds: float = 30.0
    report_timeout_seconds: float = 3600.0

    def _access_token(self, creds: ChannelCredentials, force_refresh: bool) -> str:
        return self._cached_token(
            creds,
            force_refresh,
            "lwaToken",
            lambda: self._api().request(
                "lwaToken",
                "POST",
                self.token_url,
                bucket_key=creds.merchant_id,
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": creds.refresh_token,
                    "client_id": self.client_id,
                    "client_secret": self.client_secret,
                },
                paced=False,
            ),
            default_lifetime=3600,
            what_to_check="the LWA client id and the merchant's refresh token",
        )

    @staticmethod
    def _auth_expired(response: requests.Response) -> bool:
        if response.status_code != 403:
            return False
        try:
            errors = response.json().get("errors", [])
        except ValueError:
            return False
        return any(
            "expired" in f"{e.get('message', '')} {e.get('details', '')}".lower()
            for e in errors
            if isinstance(e, dict)
        )

    def _call(
        self,
        creds: ChannelCredentials,
        operation: str,
        method: str,
        path: str,
        *,
        stats: RequestStats,
        params: Any = None,
        json_body: Any = None,
        shape: str = "",
        key: str | None = None,
        kind: type = dict,
    ) -> Any:
        """The operation's JSON object; with `key`, that key's value as `kind` (ResponseShape: a
        clear error naming the operation and `shape`, what the API documents, when it is missing
        or of another type)."""
        response = self._api().request(
            operation,
            method,
            self.endpoint.rstrip("/") + path,
            bucket_key=creds.merchant_id,
            params=params,
            json_body=json_body,
            auth=lambda force: {"x-amz-access-token": self._access_token(creds, force)},
            auth_expired=self._auth_expired,
            stats=stats,
        )
        stats.add(operation, pages=1)
        if not isinstance(response.data, dict):
            raise ApiRequestError(
                operation,
                "the response was not a JSON object; Amazon changed the shape or a proxy answered instead",
            )
        return response.data if key is None else ResponseShape(operation, response.data, shape).get(key, kind)

    @staticmethod
    def _end(before: datetime | None) -> datetime:
        latest = _utcnow() - API_LAG
        return latest if before is None or before > latest else before

    # -- orders ------------------------------------------------------------------------------
    def search_orders(
        self,
        creds: ChannelCredentials,
        last_updated_after: datetime,
        last_updated_before: datetime | None = None,
        *,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        stats = stats if stats is not None else RequestStats()
        end = self._end(last_updated_before)
        if end <= last_updated_after:
            return
        base = {
            "lastUpdatedAfter": _iso(last_updated_after),
            "lastUpdatedBefore": _iso(end),
            "marketplaceIds": ",".join(self._marketplaces(marketplace_ids)),
            "includedData": ",".join(DEFAULT_ORDER_DATASETS),
            "maxResultsPerPage": self.page_size,
        }
        seen: set[str] = set()
        token = None
        pages = self._pager("searchOrders", what="nextToken")
        while True:
            pages.page()
            params = dict(base, paginationToken=token) if token else base
            body = self._call(
                creds,
                "searchOrders",
                "GET",
                "/orders/2026-01-01/orders",
                params=params,
                stats=stats,
            )
            shape = ResponseShape(
                "searchOrders",
                body,
                "Orders API v2026-01-01: {orders: [...], pagination?: {nextToken}}",
            )
            orders = shape.records("orders")
            next_token = shape.get("pagination.nextToken", str, required=False)
            for order in orders:
                order_id = order.get("orderId") if isinstance(order, dict) else None
                if not isinstance(order_id, str):
                    stats.add("searchOrders", malformed=1)
                    yield order
                    continue
                # Amazon can repeat an order on two pages (see the sandbox examples): keep the first.
                if order_id in seen:
                    continue
                seen.add(order_id)
                stats.add("searchOrders", records=1)
                yield order
            if not next_token:
                return
            token = pages.follow(next_token)

    def get_order(
        self, creds: ChannelCredentials, order_id: str, *, stats: RequestStats | None = None
    ) -> dict[str, Any]:
        stats = stats if stats is not None else RequestStats()
        order = self._call(
            creds,
            "getOrder",
            "GET",
            f"/orders/2026-01-01/orders/{quote(order_id, safe='')}",
            params={"includedData": ",".join(DEFAULT_ORDER_DATASETS)},
            stats=stats,
            shape="Orders API v2026-01-01: {order: {orderId, ...}}",
            key="order",
        )
        stats.add("getOrder", records=1)
        return order

    # -- inventory ---------------------------------------------------------------------------
    def inventory_summaries(
        self,
        creds: ChannelCredentials,
        *,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        stats = stats if stats is not None else RequestStats()
        # Each marketplace's stock is its own pool (a DE/UK seller's), read apart; in a Pan-European
        # network the EU marketplaces may show the same units, so pools are never summed here.
        for marketplace in self._marketplaces(marketplace_ids):
            yield from self._inventory_in(creds, marketplace, stats)

    def _inventory_in(
        self, creds: ChannelCredentials, marketplace: str, stats: RequestStats
    ) -> Iterator[dict[str, Any]]:
        base = {
            "details": "true",
            "granularityType": "Marketplace",
            "granularityId": marketplace,
            "marketplaceIds": marketplace,
        }
        seen: set[tuple[str, str]] = set()
        token = None
        pages = self._pager("getInventorySummaries", what="nextToken")
        while True:
            pages.page()
            # The inventory API wants every parameter resent with nextToken.
            params = dict(base, nextToken=token) if token else base
            body = self._call(
                creds,
                "getInventorySummaries",
                "GET",
                "/fba/inventory/v1/summaries",
                params=params,
                stats=stats,
            )
            shape = ResponseShape(
                "getInventorySummaries",
                body,
                "FBA Inventory v1: {payload: {inventorySummaries: [...]}, pagination?: {nextToken}}",
            )
            summaries = shape.records("payload.inventorySummaries")
            # nextToken is outside `payload` in this API.
            next_token = shape.get("pagination.nextToken", str, required=False)
            for summary in summaries:
                if isinstance(summary, dict):
                    summary = {**summary, "marketplaceId": marketplace}
                sku = summary.get("sellerSku") if isinstance(summary, dict) else None
                if not isinstance(sku, str):
                    stats.add("getInventorySummaries", malformed=1)
                    yield summary
                    continue
                key = (sku, str(summary.get("condition", "")))
                if key in seen:
                    continue
                seen.add(key)
                stats.add("getInventorySummaries", records=1)
                yield summary
            if not next_token:
                return
            token = pages.follow(next_token)

    # -- finances ----------------------------------------------------------------------------
    def list_transactions(
        self,
        creds: ChannelCredentials,
        posted_after: datetime,
        posted_before: datetime | None = None,
        *,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        stats = stats if stats is not None else RequestStats()
        end = self._end(posted_before)
        seen: set[str] = set()
        ranges: list[tuple[datetime, datetime]] = []
        cursor = posted_after
        while cursor < end:
            ranges.append((cursor, min(end, cursor + FINANCES_MAX_RANGE)))
            cursor = ranges[-1][1]
        # listTransactions takes one marketplace: read each of the merchant's in turn.
        for marketplace, (start, chunk_end) in (
            (m, r) for m in self._marketplaces(marketplace_ids) for r in ranges
        ):
            base = {
                "postedAfter": _iso(start),
                "postedBefore": _iso(chunk_end),
                "marketplaceId": marketplace,
            }
            token = None
            pages = self._pager("listTransactions", what="nextToken")
            while True:
                pages.page()
                # Finances 2024-06-19 wants the same arguments resent with nextToken, and may
                # return empty pages that still carry a token.
                params = dict(base, nextToken=token) if token else base
                body = self._call(
                    creds,
                    "listTransactions",
                    "GET",
                    "/finances/2024-06-19/transactions",
                    params=params,
                    stats=stats,
                )
                shape = ResponseShape(
                    "listTransactions",
                    body,
                    "Finances 2024-06-19: {payload: {transactions: [...], nextToken?}}",
                )
                payload = shape.get("payload", dict)
                # An empty page may leave the list out; a payload holding anything else (the v0
                # FinancialEvents, say) is another API's answer.
                transactions = shape.records(
                    "payload.transactions", may_be_absent=set(payload) <= {"nextToken"}
                )
                next_token = shape.get("payload.nextToken", str, required=False)
                for transaction in transactions:
                    tid = (
                        transaction.get("transactionId") if isinstance(transaction, dict) else None
                    )
                    if not isinstance(tid, str):
                        # transactionId is optional in the model (Amazon's own example lacks it):
                        # nothing to dedupe on, pass it through.
                        stats.add("listTransactions", records=1)
                        yield transaction
                        continue
                    if tid in seen:
                        continue
                    seen.add(tid)
                    stats.add("listTransactions", records=1)
                    yield transaction
                if not next_token:
                    break
                token = pages.follow(next_token)

    # -- reports -----------------------------------------------------------------------------
    def _download(self, creds: ChannelCredentials, document_id: str, stats: RequestStats) -> str:
        meta = self._call(
            creds,
            "getReportDocument",
            "GET",
            f"/reports/2021-06-30/documents/{quote(document_id, safe='')}",
            stats=stats,
        )
        shape = ResponseShape(
            "getReportDocument",
            meta,
            f"Reports 2021-06-30: document {document_id} as {{reportDocumentId, url, compressionAlgorithm?}}",
        )
        url = shape.get("url", str)
        if not url:
            raise shape.error(f"document {document_id} came with an empty download url")
        algorithm = shape.get("compressionAlgorithm", str, required=False)
        api = self._api()
        attempts = 0
        while True:
            # The URL is pre-signed (no token, no rate limit); a body cut in transit shows up as a
            # gunzip error, so decompression failures are retried like transport errors.
            response = api.request(
                "downloadReportDocument",
                "GET",
                url,
                bucket_key=creds.merchant_id,
                expect_json=False,
                paced=False,
                stats=stats,
            )
            raw = response.content
            try:
                if algorithm == "GZIP" or raw[:2] == b"\x1f\x8b":
                    raw = gzip.decompress(raw)
                break
            except (OSError, EOFError, zlib.error):
                attempts += 1
                stats.add("downloadReportDocument", retries=1)
                if attempts > self.max_retries:
                    raise ApiRequestError(
                        "downloadReportDocument",
                        f"document {document_id} could not be decompressed after {attempts} downloads; retry later",
                    ) from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # Some marketplaces publish flat files in a Windows code page.
            return raw.decode("cp1252", errors="replace")

    def _get_report(
        self, creds: ChannelCredentials, report_id: str, stats: RequestStats
    ) -> dict[str, Any]:
        """getReport, checked to be a report: a `reportId` and a `processingStatus`."""
        report = self._call(
            creds,
            "getReport",
            "GET",
            f"/reports/2021-06-30/reports/{quote(report_id, safe='')}",
            stats=stats,
        )
        shape = ResponseShape(
            "getReport",
            report,
            f"Reports 2021-06-30: report {report_id} as {{reportId, processingStatus, reportDocumentId?}}",
        )
        shape.get("reportId", str)
        shape.get("processingStatus", str)
        shape.get("reportDocumentId", str, required=False)
        return report

    def settlement_reports(
        self,
        creds: ChannelCredentials,
        created_since: datetime,
        created_until: datetime | None = None,
        *,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        stats = stats if stats is not None else RequestStats()
        now = _utcnow()
        # Reports are retained (and listable) for 90 days; keep a margin for clock skew.
        floor = now - REPORT_RETENTION + timedelta(minutes=5)
        since = max(created_since, floor)
        until = min(created_until or now, now)
        if since >= until:
            return
        params: dict[str, Any] | None = {
            "reportTypes": SETTLEMENT_REPORT_TYPE,
            # Reports of at least one of the merchant's marketplaces: Amazon settles each apart.
            "marketplaceIds": ",".join(self._marketplaces(marketplace_ids)),
            "createdSince": _iso(since),
            "createdUntil": _iso(until),
            "pageSize": 100,
        }
        listed: list[dict[str, Any]] = []
        pages = self._pager("getReports", what="nextToken")
        while params is not None:
            pages.page()
            body = self._call(
                creds,
                "getReports",
                "GET",
                "/reports/2021-06-30/reports",
                params=params,
                stats=stats,
            )
            shape = ResponseShape(
                "getReports", body, "Reports 2021-06-30: {reports: [...], nextToken?}"
            )
            for report in shape.records("reports"):
                if not isinstance(report, dict) or not isinstance(report.get("reportId"), str):
                    stats.add("getReports", malformed=1)
                    continue
                listed.append(report)
            token = shape.get("nextToken", str, required=False)
            # Reports wants nextToken as the only parameter.
            params = {"nextToken": pages.follow(token)} if token else None
        seen: set[str] = set()
        for report in sorted(listed, key=lambda r: (str(r.get("createdTime", "")), r["reportId"])):
            if (
                report.get("reportType", SETTLEMENT_REPORT_TYPE) != SETTLEMENT_REPORT_TYPE
                or report.get("processingStatus") != "DONE"
            ):
                continue
            document_id = report.get("reportDocumentId")
            if not isinstance(document_id, str):
                # A DONE entry without a document id in a listing: ask for the report itself.
                report = self._get_report(creds, report["reportId"], stats)
                document_id = report.get("reportDocumentId")
                if not isinstance(document_id, str):
                    continue
            text = self._download(creds, document_id, stats)
            settlement_id = _settlement_id(text)
            key = settlement_id or report["reportId"]
            # Amazon can publish the same settlement twice (a re-issued report): keep the first.
            if key in seen:
                continue
            seen.add(key)
            stats.add("getReports", records=1)
            yield {"report": report, "settlementId": settlement_id, "document": text}

    def request_report(
        self,
        creds: ChannelCredentials,
        report_type: str,
        *,
        data_start: datetime | None = None,
        data_end: datetime | None = None,
        report_options: dict[str, str] | None = None,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> dict[str, Any]:
        stats = stats if stats is not None else RequestStats()
        if report_type == SETTLEMENT_REPORT_TYPE:
            raise ValueError(
                "settlement reports cannot be requested; Amazon schedules them: use settlement_reports()"
            )
        body: dict[str, Any] = {
            "reportType": report_type,
            "marketplaceIds": self._marketplaces(marketplace_ids),
        }
        if data_start is not None:
            body["dataStartTime"] = _iso(data_start)
        if data_end is not None:
            body["dataEndTime"] = _iso(data_end)
        if report_options:
            body["reportOptions"] = dict(report_options)
        report_id = self._call(
            creds,
            "createReport",
            "POST",
            "/reports/2021-06-30/reports",
            json_body=body,
            stats=stats,
            shape=f"Reports 2021-06-30: {{reportId}} for {report_type}",
            key="reportId",
            kind=str,
        )
        deadline = time.monotonic() + self.report_timeout_seconds
        while True:
            report = self._get_report(creds, report_id, stats)
            status = report["processingStatus"]
            if status == "DONE":
                break
            if status in ("FATAL", "CANCELLED"):
                raise AmazonReportError(
                    f"Amazon report {report_id} ({report_type}) for merchant {creds.merchant_id} ended {status}; "
                    + (
                        "check the report parameters (data window, marketplace) and request it again"
                        if status == "FATAL"
                        else "it was cancelled (by Amazon or a user): request it again"
                    )
                )
            if time.monotonic() > deadline:
                raise AmazonReportError(
                    f"Amazon report {report_id} ({report_type}) was still {status} after {self.report_timeout_seconds:.0f} s; poll it later or raise report_timeout_seconds"
                )
            time.sleep(self.report_poll_seconds)
        document_id = report.get("reportDocumentId")
        if not isinstance(document_id, str):
            raise AmazonReportError(
                f"Amazon report {report_id} ({report_type}) is DONE but has no reportDocumentId; request it again"
            )
        text = self._download(creds, document_id, stats)
        stats.add("getReport", records=1)
        return {"report": report, "document": text}

    # -- pricing -----------------------------------------------------------------------------
    def competitive_pricing(
        self,
        creds: ChannelCredentials,
        skus: Sequence[str] = (),
        *,
        asins: Sequence[str] = (),
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        stats = stats if stats is not None else RequestStats()
        if skus and asins:
            raise ValueError(
                "pass skus or asins, not both: getCompetitivePricing takes one ItemType per request"
            )
        item_type, key, ids = (
            ("Sku", "Skus", list(skus)) if skus else ("Asin", "Asins", list(asins))
        )
        for marketplace in self._marketplaces(marketplace_ids):
            for start in range(0, len(ids), 20):
                chunk = ids[start : start + 20]
                params = {
                    "MarketplaceId": marketplace,
                    "ItemType": item_type,
                    key: ",".join(chunk),
                }
                body = self._call(
                    creds,
                    "getCompetitivePricing",
                    "GET",
                    "/products/pricing/v0/competitivePrice",
                    params=params,
                    stats=stats,
                )
                entries = ResponseShape(
                    "getCompetitivePricing",
                    body,
                    "Product Pricing v0: {payload: [one entry per item]}",
                ).records("payload")
                for entry in entries:
                    stats.add("getCompetitivePricing", records=1)
                    # The same SKU comes once per marketplace: the entry says which.
                    yield {**entry, "marketplaceId": marketplace} if isinstance(entry, dict) else entry

    def listing_offers(
        self,
        creds: ChannelCredentials,
        sku: str,
        *,
        item_condition: str = "New",
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        stats = stats if stats is not None else RequestStats()
        for marketplace in self._marketplaces(marketplace_ids):
            payload = self._call(
                creds,
                "getListingOffers",
                "GET",
                f"/products/pricing/v0/listings/{quote(sku, safe='')}/offers",
                params={"MarketplaceId": marketplace, "ItemCondition": item_condition},
                stats=stats,
                shape="Product Pricing v0: {payload: {SKU, Offers, ...}}",
                key="payload",
            )
            stats.add("getListingOffers", records=1)
            yield payload


def _settlement_id(text: str) -> str | None:
    """The settlement-id of a V2 flat file, found by header name (columns vary between files)."""
    lines = text.splitlines()
    if len(lines) < 2:
        return None
    header = lines[0].split("\t")
    if "settlement-id" not in header:
        return None
    column = header.index("settlement-id")
    cells = lines[1].split("\t")
    value = cells[column].strip() if column < len(cells) else ""
    return value or None
