"""Amazon Selling Partner API client: an abstract Dagster resource and its HTTP implementation.

Assets type-hint `AmazonSellingPartner`; definitions bind `AmazonSellingPartnerHttp` with secrets
from `dg.EnvVar` and the endpoint of a region (or of the local sandbox: its base URL + "/amazon").
Each call takes the merchant's `ChannelCredentials` (merchant id + LWA refresh token), so one
resource serves every merchant; access tokens are cached per merchant and refreshed ~60 s before
they expire, and again whenever Amazon answers 403 "expired".

Every operation returns Amazon's records verbatim (dicts; JSON numbers with a fraction become
`Decimal`, money strings stay strings) and accepts an optional `RequestStats`. A record that lacks
its identifier (e.g. an order without `orderId`) is still yielded, so the extract can quarantine
it; it is counted in `stats.operation(...).malformed`.
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
        description="Marketplaces to read (the first is the inventory granularity).",
    )

    @abstractmethod
    def search_orders(
        self,
        creds: ChannelCredentials,
        last_updated_after: datetime,
        last_updated_before: datetime | None = None,
        *,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Orders v2026-01-01 searchOrders by last update in [after, before), every page, deduped by orderId."""

    @abstractmethod
    def get_order(
        self, creds: ChannelCredentials, order_id: str, *, stats: RequestStats | None = None
    ) -> dict[str, Any]:
        """Orders v2026-01-01 getOrder with every dataset; returns the `order` object."""

    @abstractmethod
    def inventory_summaries(
        self, creds: ChannelCredentials, *, stats: RequestStats | None = None
    ) -> Iterator[dict[str, Any]]:
        """FBA Inventory getInventorySummaries (details=true) for the first marketplace, every page."""

    @abstractmethod
    def list_transactions(
        self,
        creds: ChannelCredentials,
        posted_after: datetime,
        posted_before: datetime | None = None,
        *,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Finances 2024-06-19 listTransactions posted in [after, before), deduped by transactionId."""

    @abstractmethod
    def settlement_reports(
        self,
        creds: ChannelCredentials,
        created_since: datetime,
        created_until: datetime | None = None,
        *,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Settlement flat files (V2) listed in the window (at most 90 days back), one record per
        settlement: {"report": getReport metadata, "settlementId": ..., "document": text}."""

    @abstractmethod
    def request_report(
        self,
        creds: ChannelCredentials,
        report_type: str,
        *,
        data_start: datetime | None = None,
        data_end: datetime | None = None,
        report_options: dict[str, str] | None = None,
        stats: RequestStats | None = None,
    ) -> dict[str, Any]:
        """createReport, poll getReport until done, download; {"report": metadata, "document": text}."""

    @abstractmethod
    def competitive_pricing(
        self,
        creds: ChannelCredentials,
        skus: Sequence[str] = (),
        *,
        asins: Sequence[str] = (),
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Product Pricing v0 getCompetitivePricing, 20 items per request; one payload entry per item."""

    @abstractmethod
    def listing_offers(
        self,
        creds: ChannelCredentials,
        sku: str,
        *,
        item_condition: str = "New",
        stats: RequestStats | None = None,
    ) -> dict[str, Any]:
        """Product Pricing v0 getListingOffers for one of the merchant's SKUs; returns `payload`."""


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
    ) -> Any:
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
        return response.data

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
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        stats = stats if stats is not None else RequestStats()
        end = self._end(last_updated_before)
        if end <= last_updated_after:
            return
        base = {
            "lastUpdatedAfter": _iso(last_updated_after),
            "lastUpdatedBefore": _iso(end),
            "marketplaceIds": ",".join(self.marketplace_ids),
            "includedData": ",".join(DEFAULT_ORDER_DATASETS),
            "maxResultsPerPage": self.page_size,
        }
        seen: set[str] = set()
        token = None
        while True:
            params = dict(base, paginationToken=token) if token else base
            body = self._call(
                creds,
                "searchOrders",
                "GET",
                "/orders/2026-01-01/orders",
                params=params,
                stats=stats,
            )
            for order in body.get("orders") or []:
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
            token = (body.get("pagination") or {}).get("nextToken")
            if not token:
                return

    def get_order(
        self, creds: ChannelCredentials, order_id: str, *, stats: RequestStats | None = None
    ) -> dict[str, Any]:
        stats = stats if stats is not None else RequestStats()
        body = self._call(
            creds,
            "getOrder",
            "GET",
            f"/orders/2026-01-01/orders/{quote(order_id, safe='')}",
            params={"includedData": ",".join(DEFAULT_ORDER_DATASETS)},
            stats=stats,
        )
        order = body.get("order")
        if not isinstance(order, dict):
            raise ApiRequestError(
                "getOrder", "the response has no 'order' object; expected Orders API v2026-01-01"
            )
        stats.add("getOrder", records=1)
        return order

    # -- inventory ---------------------------------------------------------------------------
    def inventory_summaries(
        self, creds: ChannelCredentials, *, stats: RequestStats | None = None
    ) -> Iterator[dict[str, Any]]:
        stats = stats if stats is not None else RequestStats()
        base = {
            "details": "true",
            "granularityType": "Marketplace",
            "granularityId": self.marketplace_ids[0],
            "marketplaceIds": self.marketplace_ids[0],
        }
        seen: set[tuple[str, str]] = set()
        token = None
        while True:
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
            for summary in (body.get("payload") or {}).get("inventorySummaries") or []:
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
            # nextToken is outside `payload` in this API.
            token = (body.get("pagination") or {}).get("nextToken")
            if not token:
                return

    # -- finances ----------------------------------------------------------------------------
    def list_transactions(
        self,
        creds: ChannelCredentials,
        posted_after: datetime,
        posted_before: datetime | None = None,
        *,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        stats = stats if stats is not None else RequestStats()
        end = self._end(posted_before)
        seen: set[str] = set()
        start = posted_after
        while start < end:
            chunk_end = min(end, start + FINANCES_MAX_RANGE)
            base = {
                "postedAfter": _iso(start),
                "postedBefore": _iso(chunk_end),
                "marketplaceId": self.marketplace_ids[0],
            }
            token = None
            while True:
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
                payload = body.get("payload") or {}
                for transaction in payload.get("transactions") or []:
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
                token = payload.get("nextToken")
                if not token:
                    break
            start = chunk_end

    # -- reports -----------------------------------------------------------------------------
    def _download(self, creds: ChannelCredentials, document_id: str, stats: RequestStats) -> str:
        meta = self._call(
            creds,
            "getReportDocument",
            "GET",
            f"/reports/2021-06-30/documents/{quote(document_id, safe='')}",
            stats=stats,
        )
        url = meta.get("url")
        if not isinstance(url, str) or not url:
            raise ApiRequestError(
                "getReportDocument", f"document {document_id} came without a download url"
            )
        algorithm = meta.get("compressionAlgorithm")
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

    def settlement_reports(
        self,
        creds: ChannelCredentials,
        created_since: datetime,
        created_until: datetime | None = None,
        *,
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
            "createdSince": _iso(since),
            "createdUntil": _iso(until),
            "pageSize": 100,
        }
        listed: list[dict[str, Any]] = []
        while params is not None:
            body = self._call(
                creds,
                "getReports",
                "GET",
                "/reports/2021-06-30/reports",
                params=params,
                stats=stats,
            )
            for report in body.get("reports") or []:
                if not isinstance(report, dict) or not isinstance(report.get("reportId"), str):
                    stats.add("getReports", malformed=1)
                    continue
                listed.append(report)
            token = body.get("nextToken")
            # Reports wants nextToken as the only parameter.
            params = {"nextToken": token} if token else None
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
                report = self._call(
                    creds,
                    "getReport",
                    "GET",
                    f"/reports/2021-06-30/reports/{quote(report['reportId'], safe='')}",
                    stats=stats,
                )
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
        stats: RequestStats | None = None,
    ) -> dict[str, Any]:
        stats = stats if stats is not None else RequestStats()
        if report_type == SETTLEMENT_REPORT_TYPE:
            raise ValueError(
                "settlement reports cannot be requested; Amazon schedules them: use settlement_reports()"
            )
        body: dict[str, Any] = {
            "reportType": report_type,
            "marketplaceIds": list(self.marketplace_ids),
        }
        if data_start is not None:
            body["dataStartTime"] = _iso(data_start)
        if data_end is not None:
            body["dataEndTime"] = _iso(data_end)
        if report_options:
            body["reportOptions"] = dict(report_options)
        created = self._call(
            creds,
            "createReport",
            "POST",
            "/reports/2021-06-30/reports",
            json_body=body,
            stats=stats,
        )
        report_id = created.get("reportId")
        if not isinstance(report_id, str):
            raise ApiRequestError(
                "createReport", f"no reportId in the createReport response for {report_type}"
            )
        deadline = time.monotonic() + self.report_timeout_seconds
        while True:
            report = self._call(
                creds,
                "getReport",
                "GET",
                f"/reports/2021-06-30/reports/{quote(report_id, safe='')}",
                stats=stats,
            )
            status = report.get("processingStatus")
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
        for start in range(0, len(ids), 20):
            chunk = ids[start : start + 20]
            params = {
                "MarketplaceId": self.marketplace_ids[0],
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
            for entry in body.get("payload") or []:
                stats.add("getCompetitivePricing", records=1)
                yield entry

    def listing_offers(
        self,
        creds: ChannelCredentials,
        sku: str,
        *,
        item_condition: str = "New",
        stats: RequestStats | None = None,
    ) -> dict[str, Any]:
        stats = stats if stats is not None else RequestStats()
        params = {"MarketplaceId": self.marketplace_ids[0], "ItemCondition": item_condition}
        body = self._call(
            creds,
            "getListingOffers",
            "GET",
            f"/products/pricing/v0/listings/{quote(sku, safe='')}/offers",
            params=params,
            stats=stats,
        )
        payload = body.get("payload")
        if not isinstance(payload, dict):
            raise ApiRequestError("getListingOffers", "the response has no 'payload' object")
        stats.add("getListingOffers", records=1)
        return payload


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
