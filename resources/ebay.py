"""eBay Sell API client: an abstract Dagster resource and its HTTP implementation.

Assets type-hint `EbaySell`; definitions bind `EbaySellHttp` with our eBay application's client id
and secret from `dg.EnvVar` and eBay's endpoints (or the local sandbox: its base URL + "/ebay" for
`endpoint`, `finances_endpoint` and the token URL). Each call takes the merchant's
`ChannelCredentials` (merchant id + the user refresh token the seller granted us), so one resource
serves every merchant; user access tokens are cached per merchant and refreshed a margin before
they expire, and again whenever eBay answers 401.

Operations page with eBay's `limit`/`offset` until no `next` is returned, and yield eBay's records
verbatim (dicts; money stays `{value, currency}` strings). A record repeated on two pages (offset
paging over data that moves) is yielded once. A record lacking its identifier is still yielded
so the extract can quarantine it; it is counted in `stats.operation(...).malformed`. Each page's
envelope is checked first (`ResponseShape`): a page without its list (unless its `total` is 0), or
with `total`, `limit` or `next` of another type, fails the call naming the operation. Paging is
bounded by `max_pages`.
"""

from __future__ import annotations

import base64
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

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

# eBay publishes daily call limits per application and sends no rate-limit headers: Fulfillment
# 100,000 calls a day, Finances and Inventory more. Pace at the daily budget with a generous
# burst; a 429 (with Retry-After) still backs the client off.
EBAY_RATE_LIMITS: dict[str, tuple[float, float]] = {
    "getOrders": (100_000 / 86_400, 2_000),
    "getTransactions": (100_000 / 86_400, 2_000),
    "getPayouts": (100_000 / 86_400, 2_000),
    "getInventoryItems": (2_000_000 / 86_400, 5_000),
}
# The OAuth scopes our operations need (a refresh token only yields scopes the seller granted).
EBAY_SCOPES = (
    "https://api.ebay.com/oauth/api_scope/sell.fulfillment.readonly",
    "https://api.ebay.com/oauth/api_scope/sell.finances",
    "https://api.ebay.com/oauth/api_scope/sell.inventory.readonly",
)
# A fresh token that is refused again is refreshed at most this many times per call.
MAX_TOKEN_REFRESHES_PER_CALL = 3


def _ts(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("eBay client times must be timezone-aware (UTC)")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EbaySell(dg.ConfigurableResource):
    """The eBay operations our assets use. Implementations: `EbaySellHttp`."""

    @abstractmethod
    def orders(
        self,
        creds: ChannelCredentials,
        modified_after: datetime,
        modified_before: datetime | None = None,
        *,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Fulfillment getOrders by lastModifiedDate in [after, before), every page, on every site
        of the merchant's connection, deduped by orderId."""

    @abstractmethod
    def transactions(
        self,
        creds: ChannelCredentials,
        after: datetime,
        before: datetime | None = None,
        *,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Finances getTransactions by transactionDate in [after, before), on every site of the
        merchant's connection (Finances answers per site), deduped by (type, id)."""

    @abstractmethod
    def payouts(
        self,
        creds: ChannelCredentials,
        after: datetime,
        before: datetime | None = None,
        *,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Finances getPayouts by payoutDate in [after, before), on every site of the merchant's
        connection, deduped by payoutId."""

    @abstractmethod
    def payout_transactions(
        self,
        creds: ChannelCredentials,
        payout_ids: Sequence[str],
        *,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Finances getTransactions with `filter=payoutId:{id}` for each payout, every page, on
        every site of the merchant's connection, deduped by (type, id): the transactions each
        payout pays (each carries its `payoutId`), whatever their dates. A payout's amount is the
        signed sum of these, which is how a payout is reconciled line by line."""

    @abstractmethod
    def inventory_items(
        self,
        creds: ChannelCredentials,
        *,
        marketplace_ids: Sequence[str] | None = None,
        stats: RequestStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Inventory getInventoryItems, every page, deduped by sku.

        Every operation sends the merchant's eBay site (`marketplace_ids`, from its channel
        connection) as X-EBAY-C-MARKETPLACE-ID: inventory items are the seller's on every site
        and are read once, with the first (the site the seller registered on); orders and the
        Finances operations are read on each site. Without one, the resource's `marketplace_id`."""


class EbaySellHttp(EbaySell, MarketplaceHttpClient):
    """eBay Sell APIs over HTTP with `requests`: OAuth user tokens, pacing, retries. Thread-safe."""

    RATE_LIMITS: ClassVar[Mapping[str, tuple[float, float]]] = EBAY_RATE_LIMITS

    endpoint: str = Field(
        default="https://api.ebay.com",
        description="Fulfillment and Inventory API host, or the sandbox base URL + '/ebay'.",
    )
    finances_endpoint: str = Field(
        default="https://apiz.ebay.com",
        description="Finances API host (eBay serves it from apiz), or the sandbox base URL + '/ebay'.",
    )
    token_url: str = Field(
        default="https://api.ebay.com/identity/v1/oauth2/token",
        description="eBay OAuth token endpoint.",
    )
    client_id: str = Field(
        description="Client id (App ID) of our eBay application (use dg.EnvVar)."
    )
    client_secret: str = Field(
        description="Client secret (Cert ID) of our eBay application (use dg.EnvVar)."
    )
    marketplace_id: str = Field(
        default="EBAY_US",
        description="The site sent as X-EBAY-C-MARKETPLACE-ID when a call names none; the "
        "extracts pass each merchant's own, from its channel connection.",
    )
    page_size: int = Field(
        default=200,
        description="getOrders/getPayouts/getInventoryItems take at most 200; getTransactions 1000.",
    )
    token_refresh_margin_seconds: float = 300.0

    def _access_token(self, creds: ChannelCredentials, force_refresh: bool) -> str:
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        return self._cached_token(
            creds,
            force_refresh,
            "ebayToken",
            lambda: self._api().request(
                "ebayToken",
                "POST",
                self.token_url,
                bucket_key=creds.merchant_id,
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": creds.refresh_token,
                    "scope": " ".join(EBAY_SCOPES),
                },
                headers={"Authorization": f"Basic {basic}"},
                paced=False,
            ),
            default_lifetime=7200,
            what_to_check="the eBay client id and the merchant's refresh token",
        )

    def _get(
        self,
        creds: ChannelCredentials,
        operation: str,
        url: str,
        params: dict[str, Any],
        stats: RequestStats,
        site: str,
    ) -> dict[str, Any]:
        refreshes = 0

        def auth(force: bool) -> dict[str, str]:
            nonlocal refreshes
            if force:
                refreshes += 1
            return {
                "Authorization": f"Bearer {self._access_token(creds, force)}",
                "X-EBAY-C-MARKETPLACE-ID": site,
                "Accept": "application/json",
            }

        def expired(response: requests.Response) -> bool:
            # eBay answers 401 (errorId 1001) for an expired or revoked user token: refresh it.
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
        if response.status == 204:
            # eBay answers a search with no match with 204 No Content (getTransactions by a
            # payoutId on a site the payout is not from): an empty page.
            return {"total": 0}
        if not isinstance(response.data, dict):
            raise ApiRequestError(
                operation,
                "the response was not a JSON object; eBay changed the shape or a proxy answered instead",
            )
        return response.data

    def _paged(
        self,
        creds: ChannelCredentials,
        operation: str,
        url: str,
        params: dict[str, Any],
        key: str,
        identity: Callable[[dict[str, Any]], Any],
        stats: RequestStats,
        page_size: int,
        sites: Sequence[str],
    ) -> Iterator[dict[str, Any]]:
        """Every page of one operation on each of `sites` in turn; a record already yielded (on
        this site or an earlier one) is dropped."""
        seen: set[Any] = set()
        for site in sites:
            offset = 0
            pages = self._pager(operation, what="offset")
            pages.follow(offset)
            while True:
                pages.page()
                body = self._get(
                    creds, operation, url, dict(params, limit=page_size, offset=offset), stats, site
                )
                shape = ResponseShape(
                    operation, body, f"an eBay {operation} page: {{total, limit, next?, {key}: [...]}}"
                )
                total = shape.get("total", int, required=False)
                # eBay may leave the list out of an empty result, never out of a non-empty one.
                records = shape.records(key, may_be_absent=total == 0)
                applied = shape.get("limit", int, required=False)
                has_next = shape.get("next", str, required=False)
                for record in records:
                    ident = identity(record) if isinstance(record, dict) else None
                    if ident is None:
                        stats.add(operation, malformed=1)
                        yield record
                        continue
                    if ident in seen:
                        continue
                    seen.add(ident)
                    stats.add(operation, records=1)
                    yield record
                if not has_next or not records:
                    break
                # Advance by the page size eBay applied (it may cap the requested limit).
                offset += applied if applied is not None and applied > 0 else page_size
                if total is not None and offset >= total:
                    break
                pages.follow(offset)

    def _site(self, marketplace_ids: Sequence[str] | None) -> str:
        """The merchant's eBay site: the first of its connection's, else `marketplace_id`."""
        return self._sites(marketplace_ids)[0]

    def _sites(self, marketplace_ids: Sequence[str] | None) -> list[str]:
        """Every eBay site of the merchant's connection, in its order, else `marketplace_id`."""
        return list(dict.fromkeys(m for m in marketplace_ids or () if m)) or [self.marketplace_id]

    @staticmethod
    def _window(after: datetime, before: datetime | None) -> tuple[datetime, datetime] | None:
        now = _utcnow()
        end = now if before is None or before > now else before
        return (after, end) if after < end else None

    # -- operations --------------------------------------------------------------------------
    def orders(self, creds, modified_after, modified_before=None, *, marketplace_ids=None, stats=None):
        stats = stats if stats is not None else RequestStats()
        window = self._window(modified_after, modified_before)
        if window is None:
            return
        params = {"filter": f"lastmodifieddate:[{_ts(window[0])}..{_ts(window[1])}]"}
        # Read on every site of the connection: where eBay answers with the seller's orders of
        # all sites the repeats are dropped, where it answers per site none is missed.
        yield from self._paged(
            creds,
            "getOrders",
            self.endpoint.rstrip("/") + "/sell/fulfillment/v1/order",
            params,
            "orders",
            lambda o: o.get("orderId") if isinstance(o.get("orderId"), str) else None,
            stats,
            min(self.page_size, 200),
            self._sites(marketplace_ids),
        )

    @staticmethod
    def _transaction_identity(t: dict[str, Any]) -> Any:
        # SALE transactions reuse the order id; ids are unique only within a type.
        tid, kind = t.get("transactionId"), t.get("transactionType")
        return (kind, tid) if isinstance(tid, str) and isinstance(kind, str) else None

    def transactions(self, creds, after, before=None, *, marketplace_ids=None, stats=None):
        stats = stats if stats is not None else RequestStats()
        window = self._window(after, before)
        if window is None:
            return
        # Finances answers for the site in X-EBAY-C-MARKETPLACE-ID only: a seller on several
        # sites is read site after site (a transaction is yielded once).
        yield from self._finance_transactions(
            creds, f"transactionDate:[{_ts(window[0])}..{_ts(window[1])}]", stats, self._sites(marketplace_ids)
        )

    def _finance_transactions(
        self, creds: ChannelCredentials, filter_: str, stats: RequestStats, sites: Sequence[str]
    ) -> Iterator[dict[str, Any]]:
        """Every page of getTransactions for one filter, on each of `sites`."""
        yield from self._paged(
            creds,
            "getTransactions",
            self.finances_endpoint.rstrip("/") + "/sell/finances/v1/transaction",
            {"filter": filter_},
            "transactions",
            self._transaction_identity,
            stats,
            min(self.page_size, 1000),
            sites,
        )

    def payout_transactions(self, creds, payout_ids, *, marketplace_ids=None, stats=None):
        stats = stats if stats is not None else RequestStats()
        sites = self._sites(marketplace_ids)
        # A payout is paid from one site's funds, and its record does not say which: ask each
        # site; the others answer with no transactions.
        for payout_id in dict.fromkeys(payout_ids):
            if not isinstance(payout_id, str) or not payout_id.strip():
                raise ValueError(f"an eBay payout id must be a non-empty string, got {payout_id!r}")
            yield from self._finance_transactions(creds, f"payoutId:{{{payout_id.strip()}}}", stats, sites)

    def payouts(self, creds, after, before=None, *, marketplace_ids=None, stats=None):
        stats = stats if stats is not None else RequestStats()
        window = self._window(after, before)
        if window is None:
            return
        params = {"filter": f"payoutDate:[{_ts(window[0])}..{_ts(window[1])}]"}
        yield from self._paged(
            creds,
            "getPayouts",
            self.finances_endpoint.rstrip("/") + "/sell/finances/v1/payout",
            params,
            "payouts",
            lambda p: p.get("payoutId") if isinstance(p.get("payoutId"), str) else None,
            stats,
            min(self.page_size, 200),
            self._sites(marketplace_ids),  # per site, as transactions
        )

    def inventory_items(self, creds, *, marketplace_ids=None, stats=None):
        stats = stats if stats is not None else RequestStats()
        # One call, whatever the sites: an inventory item (SKU, quantity) is the seller's, not a
        # site's (offers are per site), and getInventoryItems does not filter by the marketplace
        # header, so asking each site would only repeat the same items.
        yield from self._paged(
            creds,
            "getInventoryItems",
            self.endpoint.rstrip("/") + "/sell/inventory/v1/inventory_item",
            {},
            "inventoryItems",
            lambda i: i.get("sku") if isinstance(i.get("sku"), str) else None,
            stats,
            min(self.page_size, 200),
            [self._site(marketplace_ids)],
        )
