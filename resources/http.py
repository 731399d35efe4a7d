"""Shared HTTP client core for every marketplace client (Amazon, eBay, Walmart).

No Dagster imports: the marketplace resources wrap this, and tests and benches use it alone.

What it gives a client:

- `ChannelCredentials(merchant_id, refresh_token)`: the per-merchant secret a call needs. Its repr
  hides the token, so it can sit in a log record or a traceback safely.
- `TokenBucket(rate, burst)`: thread-safe pacing at a documented rate (requests/second) and burst.
- `RequestStats`: a thread-safe accumulator of requests, pages, records, throttled (429) responses,
  retries and seconds, per operation.
- `RetryPolicy` and `ApiSession.request(...)` (also `request_with_retries(...)`): one logical call
  that waits for its bucket, sends, honours `x-amzn-RateLimit-Limit` (adjusts the bucket rate) and
  `Retry-After`, and retries 429, 5xx, timeouts, connection errors and bodies that fail to decode
  with capped exponential backoff and full jitter. When retries run out it raises `ApiRequestError`
  naming the operation and what happened, never a token, a secret, a header or a body.

- `ResponseShape(operation, body, expected)`: the envelope a 200 body must have before a page is
  read (`get(path, kind)`, `records(path)`), so an answer of another shape (another API version,
  another operation, a proxy) fails the run naming the operation and what was missing, instead of
  reading as an empty page.
- `PageGuard(operation, max_pages)`: bounds every paginated loop and refuses a cursor already
  followed, so a marketplace that answers the same page and cursor again cannot loop a client.

A client marks an authentication failure it can cure (an expired access token) by passing
`auth_expired=` (a predicate on the response); the session then calls `auth(force_refresh=True)` for
fresh headers and retries, counting the attempt against the same retry cap.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import requests

logger = logging.getLogger(__name__)

__all__ = [
    "ApiRequestError",
    "ApiResponse",
    "ApiSession",
    "ChannelCredentials",
    "OperationStats",
    "PageGuard",
    "RequestStats",
    "ResponseShape",
    "RetryPolicy",
    "TokenBucket",
    "request_with_retries",
]


@dataclass(frozen=True)
class ChannelCredentials:
    """One merchant's credentials for one channel (for Amazon: the LWA refresh token).

    `refresh_token` is excluded from repr/str so that logging the object or an exception that
    carries it never prints the secret.
    """

    merchant_id: str
    refresh_token: str = field(repr=False)


class TokenBucket:
    """Token bucket: `rate` tokens per second, at most `burst` stored; starts full.

    `acquire()` blocks until a token is available and returns the seconds waited. The clock and the
    sleep function are injectable so tests can drive it without real time.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(
                f"token bucket needs rate > 0 and burst >= 1, got rate={rate} burst={burst}"
            )
        self._rate = float(rate)
        self._burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()
        self.synced = False

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._stamp = now

    def set_rate(self, rate: float) -> None:
        """Change the refill rate (e.g. from an `x-amzn-RateLimit-Limit` header); tokens are kept."""
        if rate <= 0:
            return
        with self._lock:
            self._refill(self._clock())
            self._rate = float(rate)

    def resync(self) -> None:
        """Forget refill accrued since the last refill: the server's bucket for this caller started
        when our first request arrived, later than ours, so count from now (once, after the first
        response)."""
        with self._lock:
            self._stamp = self._clock()
            self.synced = True

    def drain(self, debt: float = 0.0) -> None:
        """Empty the bucket, and owe `debt` more tokens: after a 429 the server's bucket is empty,
        and someone else (another process, another app) is spending the same quota."""
        with self._lock:
            self._refill(self._clock())
            self._tokens = min(self._tokens, 0.0) - max(0.0, debt)

    def try_acquire(self, tokens: float = 1.0) -> bool:
        with self._lock:
            self._refill(self._clock())
            if self._tokens >= tokens:
                self._tokens -= tokens
                return True
            return False

    def acquire(self, tokens: float = 1.0) -> float:
        """Take `tokens`, sleeping as needed; returns the seconds spent waiting."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._refill(now)
                # A hair under a whole token is float rounding, not a real shortfall: waiting
                # for it could spin on a sleep too short to move the clock.
                if self._tokens >= tokens - 1e-9:
                    self._tokens -= tokens
                    return waited
                # Reserve nothing while sleeping: other threads may take tokens first, which is
                # fair enough; we recompute after waking.
                delay = (tokens - self._tokens) / self._rate
            self._sleep(delay)
            waited += delay


@dataclass
class OperationStats:
    """Counters for one operation. `seconds` is wall time in requests; `waited` is pacing sleep;
    `malformed` counts records a client passed on but flagged as missing their identifier."""

    requests: int = 0
    pages: int = 0
    records: int = 0
    throttled: int = 0
    retries: int = 0
    errors: int = 0
    malformed: int = 0
    seconds: float = 0.0
    waited: float = 0.0


class RequestStats:
    """Thread-safe per-operation counters; pass one instance to many calls to accumulate."""

    def __init__(self) -> None:
        self._ops: dict[str, OperationStats] = {}
        self._lock = threading.Lock()

    def add(self, operation: str, **increments: float) -> None:
        with self._lock:
            ops = self._ops.setdefault(operation, OperationStats())
            for name, value in increments.items():
                setattr(ops, name, getattr(ops, name) + value)

    def operation(self, operation: str) -> OperationStats:
        with self._lock:
            return OperationStats(**asdict(self._ops.get(operation, OperationStats())))

    def operations(self) -> dict[str, OperationStats]:
        with self._lock:
            return {name: OperationStats(**asdict(ops)) for name, ops in sorted(self._ops.items())}

    def total(self) -> OperationStats:
        out = OperationStats()
        for ops in self.operations().values():
            for name, value in asdict(ops).items():
                setattr(out, name, getattr(out, name) + value)
        return out

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {name: asdict(ops) for name, ops in self.operations().items()}


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one logical call tries. Backoff for attempt n is uniform(0, min(cap, base*2**n))."""

    max_retries: int = 8
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    # Largest Retry-After we obey as given; anything larger is capped so a run cannot stall.
    max_retry_after: float = 120.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.backoff_cap, self.backoff_base * (2**attempt)))


class ApiRequestError(RuntimeError):
    """A call that failed for good. The message names the operation and the failure, never secrets,
    headers, bodies or PII; `code` is the API's error code when it sent one."""

    def __init__(
        self,
        operation: str,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(f"{operation}: {message}")
        self.operation = operation
        self.status = status
        self.code = code
        self.attempts = attempts


@dataclass
class ApiResponse:
    """A successful response: status, headers, raw bytes and (if JSON was expected) the decoded body."""

    status: int
    headers: Mapping[str, str]
    content: bytes
    data: Any = None


_KIND_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (dict, "object"),
    (list, "list"),
    (str, "string"),
    (int, "integer"),
    (Decimal, "number"),
    (float, "number"),
)


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    return next((name for t, name in _KIND_NAMES if isinstance(value, t)), type(value).__name__)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = [next((name for t, name in _KIND_NAMES if t is k), k.__name__) for k in kinds]
    return " or ".join(dict.fromkeys(names))


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _is_kind(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # JSON true/false are not integers, whatever Python thinks.
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


class ResponseShape:
    """The envelope one operation's 200 body must have, checked before any record is read.

    A 200 answer of another shape (an older API version, another operation's body, a proxy's
    page) would otherwise read as an empty page and a successful run. A failed check raises
    `ApiRequestError` naming the operation, the member that was missing or of the wrong type (a
    dotted path), the names of the members that did arrive (names only, never values) and
    `expected`, a short description of the documented shape.
    """

    MAX_NAMES = 12

    def __init__(self, operation: str, body: Any, expected: str) -> None:
        self.operation = operation
        self.body = body
        self.expected = expected

    def error(self, problem: str) -> ApiRequestError:
        return ApiRequestError(
            self.operation,
            f"{problem} ({self._arrived()}); expected {self.expected}. The marketplace changed "
            "the response's shape or answered for another operation, so nothing was read from "
            "it: check the API version the client calls before running it again",
        )

    def _arrived(self) -> str:
        if not isinstance(self.body, dict):
            return f"the body is a JSON {_kind_of(self.body)}"
        names = sorted(str(name)[:40] for name in self.body)
        if not names:
            return "the body is an empty object"
        more = len(names) - self.MAX_NAMES
        return (
            "the body has "
            + ", ".join(names[: self.MAX_NAMES])
            + (f" and {more} more" if more > 0 else "")
        )

    def get(self, path: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
        """The member at the dotted `path` ("" is the body itself), checked to be a `kind`.

        An absent or null member fails when `required` and is None otherwise; a member of
        another type always fails, as does a step of the path that is not an object.
        """
        value = self.body
        walked: list[str] = []
        for name in path.split(".") if path else ():
            if not isinstance(value, dict):
                where = f"'{'.'.join(walked)}'" if walked else "the body"
                raise self.error(f"{where} is {_a(_kind_of(value))}, not an object")
            walked.append(name)
            value = value.get(name)
            if value is None:
                break
        if value is None:
            if required:
                raise self.error(f"the response has no '{path}' {_kind_name(kind)}")
            return None
        if not _is_kind(value, kind):
            where = f"'{path}'" if path else "the body"
            raise self.error(f"{where} is {_a(_kind_of(value))}, not {_a(_kind_name(kind))}")
        return value

    def records(self, path: str, *, may_be_absent: bool = False) -> list[Any]:
        """The list of records at `path`; [] for an absent list only when `may_be_absent` (the
        envelope itself says the result is empty, e.g. a total of 0)."""
        found = self.get(path, list, required=not may_be_absent)
        return [] if found is None else found


def _clip(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


class PageGuard:
    """Bounds one paginated loop: at most `max_pages` requests, and never the same cursor twice.

    Call `page()` before each request and `follow(cursor)` with each next cursor (a token, a
    query string, an offset) before using it. A marketplace that answers a cursor with the same
    page and the same cursor (Walmart does when a cursor is sent wrongly) is stopped at once
    instead of being asked until it fails; one that keeps answering new cursors is stopped at
    the bound.
    """

    def __init__(self, operation: str, max_pages: int, *, what: str = "cursor") -> None:
        if max_pages < 1:
            raise ValueError(f"{operation}: max_pages must be at least 1, got {max_pages}")
        self.operation = operation
        self.max_pages = max_pages
        self.what = what
        self.pages = 0
        self._seen: set[Any] = set()

    def page(self) -> None:
        if self.pages >= self.max_pages:
            raise ApiRequestError(
                self.operation,
                f"still not on the last page after {self.max_pages} pages, the client's bound "
                "(max_pages); the marketplace kept answering a next page. Narrow the window, or "
                "raise max_pages if the account really holds that much",
            )
        self.pages += 1

    def follow(self, cursor: Any) -> Any:
        """`cursor`, once: a cursor already followed in this loop raises."""
        if cursor in self._seen:
            raise ApiRequestError(
                self.operation,
                f"the marketplace answered the {self.what} {_clip(cursor)} again after "
                f"{self.pages} pages, so it is repeating a page: paging stopped instead of "
                "looping. Run it again later; if it repeats, the cursor is being sent wrongly",
            )
        self._seen.add(cursor)
        return cursor


def _error_code(body: bytes) -> str | None:
    """The first `errors[].code` of an SP-API style error body (codes are safe; messages may echo input)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if isinstance(parsed, dict):
        errors = parsed.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            code = errors[0].get("code")
            return str(code) if code is not None else None
        if "error" in parsed:  # LWA token endpoint errors: {"error": "invalid_grant", ...}
            return str(parsed["error"])
    return None


def _parse_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        # HTTP-date form of Retry-After: not worth parsing precisely; a short wait is safe.
        return 1.0
    return seconds if seconds >= 0 else None


class ApiSession:
    """A `requests.Session` plus per-(key, operation) token buckets and a retry policy.

    `rates` maps operation name -> (documented rate per second, burst). `rate_speedup` multiplies
    every documented rate (for benches against a sped-up sandbox). `safety` keeps pacing a little
    under the limit because the server measures arrival times, not our send times.
    """

    def __init__(
        self,
        *,
        rates: Mapping[str, tuple[float, float]],
        policy: RetryPolicy | None = None,
        rate_speedup: float = 1.0,
        safety: float = 0.97,
        user_agent: str = "illuma-pipelines/0.1",
        seed: int | None = None,
    ) -> None:
        self._rates = dict(rates)
        self.policy = policy or RetryPolicy()
        self.rate_speedup = float(rate_speedup)
        self.safety = float(safety)
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._local = threading.local()
        self._user_agent = user_agent

    @property
    def http(self) -> requests.Session:
        # requests.Session is not documented as thread-safe: one per thread.
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self._user_agent
            self._local.session = session
        return session

    def bucket(self, key: str, operation: str) -> TokenBucket:
        """The bucket pacing `operation` for `key` (a merchant: SP-API limits are per seller)."""
        with self._lock:
            bucket = self._buckets.get((key, operation))
            if bucket is None:
                rate, burst = self._rates.get(operation, (1.0, 1.0))
                bucket = TokenBucket(rate * self.rate_speedup * self._safety(burst), burst)
                self._buckets[(key, operation)] = bucket
            return bucket

    def _safety(self, burst: float) -> float:
        """The share of the documented rate we pace at. With a burst of one token the server has
        no slack for network jitter (a request that arrives a few ms early is a 429), so those
        operations keep a wider margin."""
        return self.safety if burst >= 2 else min(self.safety, 0.92)

    def _debt(self, attempt: int) -> float:
        # At most two extra token periods: at Amazon's slowest rates (searchOrders, one token per
        # ~3 minutes) a larger debt would stall an extract for many minutes.
        with self._lock:
            return self._rng.uniform(0.0, float(min(attempt + 1, 2)))

    def _jitter(self, attempt: int) -> float:
        with self._lock:
            return self.policy.backoff(attempt, self._rng)

    def request(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        bucket_key: str,
        params: Any = None,
        data: Any = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: Callable[[bool], Mapping[str, str]] | None = None,
        auth_expired: Callable[[requests.Response], bool] | None = None,
        expect_json: bool = True,
        exact_numbers: bool = True,
        paced: bool = True,
        stats: RequestStats | None = None,
    ) -> ApiResponse:
        """Send one logical request with pacing and retries; return the successful response.

        JSON numbers with a fraction decode to `Decimal` (exact_numbers=True) so money keeps its
        exact text. Raises ApiRequestError on a non-retryable status (4xx other than 429 and cured auth
        expiry) or when `policy.max_retries` retries are spent.
        """
        stats = stats if stats is not None else RequestStats()
        policy = self.policy
        bucket = self.bucket(bucket_key, operation) if paced else None
        force_refresh = False
        last_problem = "no attempt made"
        attempt = 0
        while True:
            if bucket is not None:
                stats.add(operation, waited=bucket.acquire())
            send_headers = dict(headers or {})
            if auth is not None:
                send_headers.update(auth(force_refresh))
                force_refresh = False
            started = time.monotonic()
            retry_after: float | None = None
            try:
                response = self.http.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    json=json_body,
                    headers=send_headers,
                    timeout=(policy.connect_timeout, policy.read_timeout),
                )
                content = response.content  # reads the body: a cut connection raises here
            except requests.Timeout:
                last_problem = "timed out"
            except (
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:
                last_problem = f"connection failed ({type(exc).__name__})"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    decoded: Any = None
                    problem = None
                    if expect_json and status == 204:
                        decoded = None  # No Content: e.g. eBay getTransactions with no match
                    elif expect_json:
                        try:
                            decoded = (
                                json.loads(content, parse_float=Decimal)
                                if exact_numbers
                                else json.loads(content)
                            )
                        except ValueError:
                            problem = "response body was not valid JSON (truncated?)"
                    if problem is None:
                        if bucket is not None and not bucket.synced:
                            bucket.resync()
                        limit = response.headers.get("x-amzn-RateLimit-Limit")
                        if bucket is not None and limit:
                            try:
                                bucket.set_rate(float(limit) * self._safety(bucket.burst))
                            except ValueError:
                                logger.debug("%s: ignored unparsable rate-limit header", operation)
                        stats.add(operation, requests=1, seconds=time.monotonic() - started)
                        return ApiResponse(status, response.headers, content, decoded)
                    last_problem = problem
                elif status == 429:
                    stats.add(operation, throttled=1)
                    if bucket is not None:
                        # A random debt that grows with the attempts desynchronises callers that
                        # share one quota, so they stop colliding on every refill.
                        bucket.drain(self._debt(attempt))
                    retry_after = _parse_seconds(response.headers.get("Retry-After"))
                    last_problem = "throttled (429)"
                elif status >= 500:
                    last_problem = f"server error {status}"
                    retry_after = _parse_seconds(response.headers.get("Retry-After"))
                elif auth is not None and auth_expired is not None and auth_expired(response):
                    last_problem = "access token rejected as expired (403)"
                    force_refresh = True
                else:
                    stats.add(operation, requests=1, errors=1, seconds=time.monotonic() - started)
                    code = _error_code(content)
                    raise ApiRequestError(
                        operation,
                        f"HTTP {status}"
                        + (f" with error code {code!r}" if code else "")
                        + "; the request was rejected, check its parameters and the merchant's credentials",
                        status=status,
                        code=code,
                        attempts=attempt + 1,
                    )
            stats.add(operation, requests=1, seconds=time.monotonic() - started)
            if attempt >= policy.max_retries:
                stats.add(operation, errors=1)
                raise ApiRequestError(
                    operation,
                    f"gave up after {attempt + 1} attempts; last problem: {last_problem}. "
                    "The marketplace (or the network) kept failing: retry the run later, or raise "
                    "the client's retry cap if this is a known degraded period",
                    attempts=attempt + 1,
                )
            stats.add(operation, retries=1)
            delay = 0.0 if force_refresh else self._jitter(attempt)
            if retry_after is not None:
                delay = max(delay, min(retry_after, policy.max_retry_after))
            logger.debug(
                "%s: attempt %d failed (%s); retrying in %.2fs",
                operation,
                attempt + 1,
                last_problem,
                delay,
            )
            if delay > 0:
                time.sleep(delay)
            attempt += 1


def request_with_retries(
    session: ApiSession, operation: str, method: str, url: str, **kwargs: Any
) -> ApiResponse:
    """Functional spelling of `ApiSession.request` (same arguments)."""
    return session.request(operation, method, url, **kwargs)
