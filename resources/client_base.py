"""What every marketplace HTTP client shares: retry and pacing settings, one paced session, a
per-merchant access-token cache refreshed before expiry, and the bound on paginated loops."""

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field, PrivateAttr

from resources.http import (
    ApiRequestError,
    ApiResponse,
    ApiSession,
    ChannelCredentials,
    PageGuard,
    RetryPolicy,
)


class MarketplaceHttpClient(dg.ConfigurableResource):
    """Base of the real HTTP clients; a subclass sets RATE_LIMITS and fetches its own tokens."""

    RATE_LIMITS: ClassVar[Mapping[str, tuple[float, float]]] = {}

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_retries: int = 8
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    rate_speedup: float = Field(
        default=1.0, description="Multiply the documented rates (only against a sped-up sandbox)."
    )
    token_refresh_margin_seconds: float = 60.0
    max_pages: int = Field(
        default=10_000,
        description="Most pages one paginated call follows before it fails (never loop forever).",
    )

    _session: ApiSession | None = PrivateAttr(default=None)
    _tokens: dict[tuple[str, str], tuple[str, float]] = PrivateAttr(default_factory=dict)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def _api(self) -> ApiSession:
        with self._lock:
            if self._session is None:
                self._session = ApiSession(
                    rates=self.RATE_LIMITS,
                    rate_speedup=self.rate_speedup,
                    policy=RetryPolicy(
                        max_retries=self.max_retries,
                        backoff_base=self.backoff_base,
                        backoff_cap=self.backoff_cap,
                        connect_timeout=self.connect_timeout,
                        read_timeout=self.read_timeout,
                    ),
                )
            return self._session

    def _pager(self, operation: str, *, what: str = "cursor") -> PageGuard:
        """A guard for one paginated loop of `operation`: `max_pages` pages, no cursor twice."""
        return PageGuard(operation, self.max_pages, what=what)

    def _cached_token(
        self,
        creds: ChannelCredentials,
        force_refresh: bool,
        operation: str,
        fetch: Callable[[], ApiResponse],
        *,
        default_lifetime: float,
        what_to_check: str,
    ) -> str:
        """The merchant's access token, fetched with `fetch` when missing, expiring or rejected.

        Keyed by merchant and a digest of its credential, so a re-authorised seller gets a new
        token rather than the one cached for the old credential.
        """
        key = (creds.merchant_id, hashlib.sha256(creds.refresh_token.encode()).hexdigest()[:16])
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and not force_refresh and time.monotonic() < cached[1]:
                return cached[0]
        body = fetch().data
        body = body if isinstance(body, dict) else {}
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise ApiRequestError(
                operation,
                f"the token endpoint answered without an access_token for merchant "
                f"{creds.merchant_id}; check {what_to_check}",
            )
        lifetime = float(body.get("expires_in", default_lifetime))
        # A margin before expiry, but never sooner than half the lifetime (short-lived tokens).
        valid_for = max(lifetime - self.token_refresh_margin_seconds, lifetime / 2)
        with self._lock:
            self._tokens[key] = (token, time.monotonic() + valid_for)
        return token
