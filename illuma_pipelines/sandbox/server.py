"""The local marketplace sandbox: a real HTTP server (Starlette on uvicorn) that speaks the
marketplaces' API shapes over deterministic data, with optional quotas and faults.

Use it three ways:

- tests: ``with SandboxServer(SandboxConfig(seed=1, clock=SandboxClock.fixed_at(dt))) as sb:`` then
  point a client at ``sb.base_url + "/amazon"``; compare with ``sb.state`` (see `SandboxState`).
- demo / CLI: ``serve(host="127.0.0.1", port=8765, config=SandboxConfig())`` blocks.
- in-process ASGI: ``build_app(config)``.

Channel plug-in point
---------------------
The marketplaces are described once, in `illuma_pipelines.marketplaces.MARKETPLACES`; each names its
sandbox plug-in (`Marketplace.sandbox`), a module exposing::

    def routes(state: SandboxState) -> list[starlette.routing.BaseRoute]

whose paths are relative to the channel prefix (``/amazon``, ``/ebay``, ``/walmart``).
`CHANNEL_MODULES` (channel -> module path) is derived from that list; `build_app` imports every one
with importlib and mounts ``routes(state)`` under ``/<channel>``. A plug-in named there that does
not import is an error (`build_app` raises): adding a marketplace means writing its plug-in in the
same change. Channel modules import this module, never the reverse (the server loads them only by
name, through importlib), so channel-specific introspection for tests lives in the channel module,
as functions taking the state (e.g. ``amazon_orders_updated_between(state, merchant_id, a, b)``).
Channel modules get from `SandboxState`:

- ``state.now()``: the sandbox clock (fixed or running); ``state.world(merchant_id)``: the
  deterministic, channel-agnostic `MerchantWorld` (seed, merchant id, history start, catalog). A
  channel builds its own plans from it, with the buyer generator and the window helpers of
  `illuma_pipelines.sandbox.world`, on random streams namespaced by the channel;
- ``state.faults.draw(caller, operation, allowed_kinds)`` and the helpers `transport_fault_response`
  / `hold_for_timeout` for transport faults; channel-specific error bodies stay in the channel;
- ``state.take_quota(channel, caller, operation, rate, burst)`` (honours `enforce_quotas` and
  `quota_speedup`) and ``state.count(operation, throttled=...)`` for introspection;
- ``state.issue_token / state.token_owner / state.revoke_token`` for OAuth-style access tokens;
- ``state.pop_fixture(channel, merchant_id, operation)``: queued verbatim payloads (fixtures);
- ``state.channel_data(channel)``: a dict for the channel's own mutable state (e.g. reports);
- `json_response(obj, status, headers)`: JSON where `Decimal` values are written as exact numbers.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
import secrets
import socket
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from illuma_pipelines.marketplaces import MARKETPLACES
from illuma_pipelines.merchant_ids import MERCHANT_ID_PATTERN
from illuma_pipelines.sandbox.faults import FAULT_KINDS, FaultConfig, FaultInjector, QuotaBucket
from illuma_pipelines.sandbox.world import MerchantWorld

logger = logging.getLogger(__name__)

# How many entries request_log and admissions keep (most recent).
LOG_LIMIT = 200_000

# Channel name -> module exposing `routes(state)`, mounted under "/<channel>"; one per marketplace.
CHANNEL_MODULES: dict[str, str] = {m.channel: m.sandbox for m in MARKETPLACES}


class SandboxClock:
    """The sandbox's "now". Fixed (tests, demo), running from a start point, or real time.

    - ``SandboxClock()``: real UTC time.
    - ``SandboxClock.fixed_at(dt)``: always `dt` until `set()` or `advance()`.
    - ``SandboxClock.running_from(dt)``: starts at `dt` and moves with real time.
    """

    def __init__(self, at: datetime | None = None, *, running: bool = False) -> None:
        if at is not None and at.tzinfo is None:
            raise ValueError(
                "sandbox clock times must be timezone-aware (use datetime(..., tzinfo=UTC))"
            )
        self._at = at
        self._running = running
        self._anchor = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def fixed_at(cls, at: datetime) -> SandboxClock:
        return cls(at)

    @classmethod
    def running_from(cls, at: datetime) -> SandboxClock:
        return cls(at, running=True)

    def now(self) -> datetime:
        with self._lock:
            if self._at is None:
                return datetime.now(UTC).replace(microsecond=0)
            if self._running:
                return (self._at + timedelta(seconds=time.monotonic() - self._anchor)).replace(
                    microsecond=0
                )
            return self._at

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("sandbox clock times must be timezone-aware")
        with self._lock:
            self._at = at
            self._anchor = time.monotonic()

    def advance(self, delta: timedelta) -> None:
        self.set(self.now() + delta)


@dataclass
class SandboxConfig:
    """Everything that shapes a sandbox run.

    - seed: world seed (same seed, same data, in every process).
    - clock: the sandbox's now (see `SandboxClock`).
    - faults: per-request fault probabilities (`FaultConfig`).
    - enforce_quotas: answer 429 when a caller exceeds an operation's documented rate/burst.
    - quota_speedup: multiply every documented rate (1000 = a thousand times faster), so tests and
      benches exercise quotas in seconds; rate-limit headers report the sped-up rate.
    - history_start: first day with orders.
    - access_token_lifetime: seconds an access token lives (small values force expiry in tests).
    - report_queue_seconds / report_processing_seconds: real seconds a requested report spends
      IN_QUEUE and then IN_PROGRESS.
    - *_page_size: page sizes (Amazon's defaults; tests shrink them to exercise paging).
    """

    seed: int = 7
    clock: SandboxClock = field(default_factory=SandboxClock)
    faults: FaultConfig = field(default_factory=FaultConfig)
    enforce_quotas: bool = False
    quota_speedup: float = 1.0
    history_start: date = date(2025, 1, 1)
    access_token_lifetime: float = 3600.0
    report_queue_seconds: float = 0.2
    report_processing_seconds: float = 0.5
    orders_page_size: int = 100
    finances_page_size: int = 100
    inventory_page_size: int = 50
    reports_page_size: int = 10


class SandboxState:
    """Mutable server state plus Python-side introspection for tests.

    Introspection: ``state.world(m)`` (a `MerchantWorld`), ``state.served`` / ``state.throttled``
    (requests answered / 429 per operation), ``state.admissions`` (when each quota-checked request
    was let through) and ``state.faults.counts`` (faults injected per kind). What a channel holds
    for a merchant as of the clock is asked of the channel module, with the state: e.g.
    ``amazon.amazon_orders_updated_between(state, m, a, b)``,
    ``ebay.ebay_orders_modified_between(state, m, a, b)``,
    ``walmart.walmart_orders_modified_between(state, m, a, b)``.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock = config.clock
        self.faults = FaultInjector(config.faults)
        self._lock = threading.Lock()
        self._worlds: dict[str, MerchantWorld] = {}
        self._quotas: dict[tuple[str, str, str], QuotaBucket] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._fixtures: dict[tuple[str, str, str], deque[tuple[int, Any]]] = defaultdict(deque)
        self._channel_data: dict[str, dict[str, Any]] = defaultdict(dict)
        self.served: dict[str, int] = defaultdict(int)
        self.throttled: dict[str, int] = defaultdict(int)
        # Bounded, so a long-running demo server does not grow without limit.
        self.request_log: deque[tuple[float, str, str, int]] = deque(maxlen=LOG_LIMIT)
        # (monotonic time, caller, operation) of every request a quota bucket let through, logged
        # by the bucket as it takes the token: per bucket, in order and at the time it reckoned.
        self.admissions: deque[tuple[float, str, str]] = deque(maxlen=LOG_LIMIT)

    # -- clock and worlds --------------------------------------------------------------------
    def now(self) -> datetime:
        return self.clock.now()

    def world(self, merchant_id: str) -> MerchantWorld:
        if not MERCHANT_ID_PATTERN.fullmatch(merchant_id):
            raise ValueError(f"invalid merchant id {merchant_id!r} for the sandbox")
        with self._lock:
            world = self._worlds.get(merchant_id)
            if world is None:
                world = MerchantWorld(self.config.seed, merchant_id, self.config.history_start)
                self._worlds[merchant_id] = world
            return world

    # -- tokens ------------------------------------------------------------------------------
    def issue_token(self, channel: str, merchant_id: str) -> tuple[str, float]:
        """A fresh opaque access token for the merchant; returns (token, lifetime seconds)."""
        token = f"{channel}-sandbox-access|{secrets.token_urlsafe(24)}"
        lifetime = self.config.access_token_lifetime
        with self._lock:
            self._tokens[token] = (merchant_id, time.time() + lifetime)
        return token, lifetime

    def token_owner(self, token: str | None) -> tuple[str | None, str]:
        """(merchant_id, "ok") for a live token, (None, "expired") or (None, "invalid")."""
        if not token:
            return None, "invalid"
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None:
            return None, "invalid"
        merchant_id, expires = entry
        if time.time() >= expires:
            return None, "expired"
        return merchant_id, "ok"

    def issued_access_tokens(self) -> list[str]:
        """Every access token handed out so far (tests look for them in logs)."""
        with self._lock:
            return list(self._tokens)

    def revoke_token(self, token: str) -> None:
        """Make a token expired now (the `expired_token` fault)."""
        with self._lock:
            if token in self._tokens:
                self._tokens[token] = (self._tokens[token][0], 0.0)

    # -- quotas and counters -----------------------------------------------------------------
    def take_quota(
        self, channel: str, caller: str, operation: str, rate: float, burst: float
    ) -> bool:
        """True if the request may proceed; False means answer 429. Always True when quotas are off."""
        if not self.config.enforce_quotas:
            return True
        key = (channel, caller, operation)
        with self._lock:
            bucket = self._quotas.get(key)
            if bucket is None:
                bucket = QuotaBucket(rate * self.config.quota_speedup, burst)
                self._quotas[key] = bucket

        def log(at: float) -> None:
            with self._lock:
                self.admissions.append((at, caller, operation))

        return bucket.try_take(log)

    def count(
        self, operation: str, *, throttled: bool = False, status: int = 200, caller: str = ""
    ) -> None:
        with self._lock:
            if throttled:
                self.throttled[operation] += 1
            else:
                self.served[operation] += 1
            self.request_log.append((time.monotonic(), caller, operation, status))

    # -- fixtures ----------------------------------------------------------------------------
    def queue_fixture(
        self, channel: str, merchant_id: str, operation: str, body: Any, status: int = 200
    ) -> None:
        """Serve `body` (verbatim) with `status` for the merchant's next `operation` request.
        Queued payloads are served first-in first-out, before generated data."""
        with self._lock:
            self._fixtures[(channel, merchant_id, operation)].append((status, body))

    def queue_fixture_file(
        self, channel: str, merchant_id: str, operation: str, path: str | Path, status: int = 200
    ) -> None:
        body = json.loads(Path(path).read_text(encoding="utf-8"), parse_float=Decimal)
        self.queue_fixture(channel, merchant_id, operation, body, status)

    def pop_fixture(self, channel: str, merchant_id: str, operation: str) -> tuple[int, Any] | None:
        with self._lock:
            queue = self._fixtures.get((channel, merchant_id, operation))
            return queue.popleft() if queue else None

    def channel_data(self, channel: str) -> dict[str, Any]:
        return self._channel_data[channel]


# ---------------------------------------------------------------------------------------------
# Response helpers shared by channel modules

_DECIMAL_MARK = "@@illuma-decimal@@"
_DECIMAL_RE = re.compile(
    r'"' + re.escape(_DECIMAL_MARK) + r'(-?[0-9]+(?:\.[0-9]+)?(?:E[+-]?[0-9]+)?)"'
)


def _mark_decimals(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return _DECIMAL_MARK + str(obj)
    if isinstance(obj, dict):
        return {k: _mark_decimals(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_mark_decimals(v) for v in obj]
    return obj


def dumps_json(obj: Any) -> bytes:
    """JSON bytes in which `Decimal` values become exact JSON numbers (Amazon Pricing and Finances
    send numbers: `10.00` stays `10.00`, never a float round-trip)."""
    text = json.dumps(_mark_decimals(obj), ensure_ascii=False, separators=(",", ":"))
    return _DECIMAL_RE.sub(r"\1", text).encode("utf-8")


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    if status == 204:
        return Response(status_code=204, headers=headers)
    return Response(
        dumps_json(obj), status_code=status, headers=headers, media_type="application/json"
    )


class _DroppedConnection(Exception):
    """Raised inside the ASGI app to make uvicorn drop the connection mid-response."""


class TransportFaultResponse(Response):
    """Wraps a finished response and breaks its delivery.

    kind="connection_reset": headers go out, then the connection is dropped (no body).
    kind="truncated_body" + cut="short_content": Content-Length promises the full body, half is
    sent, then the connection closes. cut="cut_json": half the body with a matching Content-Length.
    """

    def __init__(self, inner: Response, kind: str, cut: str = "short_content") -> None:
        self.inner = inner
        self.kind = kind
        self.cut = cut
        self.status_code = inner.status_code
        self.body = inner.body
        self.background = None
        self.raw_headers = list(inner.raw_headers)

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[override]
        body = bytes(self.inner.body)
        half = body[: max(1, len(body) // 2)]
        headers = [(k, v) for k, v in self.raw_headers if k.lower() != b"content-length"]
        if self.kind == "truncated_body" and self.cut == "cut_json":
            headers.append((b"content-length", str(len(half)).encode()))
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": headers}
            )
            await send({"type": "http.response.body", "body": half, "more_body": False})
            return
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        if self.kind == "truncated_body":
            await send({"type": "http.response.body", "body": half, "more_body": True})
        raise _DroppedConnection(self.kind)


async def hold_for_timeout(state: SandboxState) -> None:
    """The `timeout` fault: wait longer than a well-configured client's read timeout."""
    await asyncio.sleep(state.config.faults.timeout_seconds)


def transport_fault_response(state: SandboxState, kind: str, response: Response) -> Response:
    if kind == "truncated_body":
        return TransportFaultResponse(
            response, kind, str(state.faults.choice(["short_content", "cut_json"]))
        )
    return TransportFaultResponse(response, kind)


# ---------------------------------------------------------------------------------------------
# App and server


# `/health` also says, in headers (the body stays {"status": "ok"}), which service this is, its
# world seed and the checkout it runs from: `make demo` tells this checkout's sandbox from anything
# else listening on the port by them (the path percent-encoded: headers are latin-1).
SANDBOX_SERVICE = "illuma-sandbox"
IDENTITY_HEADERS = ("x-illuma-service", "x-illuma-sandbox-seed", "x-illuma-checkout")
_CHECKOUT = quote(str(Path(__file__).resolve().parents[2]))


def _health_route(state: SandboxState) -> Route:
    identity = dict(zip(IDENTITY_HEADERS, (SANDBOX_SERVICE, str(state.config.seed), _CHECKOUT), strict=True))

    async def health(_request) -> Response:
        return JSONResponse({"status": "ok"}, headers=identity)

    return Route("/health", health)


def build_app(config: SandboxConfig, state: SandboxState | None = None) -> Starlette:
    """The Starlette app: `/health`, every marketplace's plug-in mounted under `/<channel>` and
    the merchants' catalog files under `/files` (`illuma_pipelines.sandbox.catalog`).

    A plug-in that does not import raises here, naming the channel, rather than leaving the
    channel silently unmounted."""
    state = state or SandboxState(config)
    routes: list[Any] = [_health_route(state)]
    for channel, module_name in CHANNEL_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            exc.add_note(
                f"the sandbox plug-in of channel {channel!r} is named in "
                "illuma_pipelines/marketplaces.py; write or fix that module"
            )
            raise
        routes.append(Mount(f"/{channel}", routes=module.routes(state)))
    # The merchants' own files (their parts catalogs): not a marketplace; a plug-in as they are.
    files = importlib.import_module("illuma_pipelines.sandbox.catalog")
    routes.append(Mount("/files", routes=files.routes(state)))
    app = Starlette(routes=routes)
    app.state.sandbox = state
    app.state.channels = tuple(CHANNEL_MODULES)
    return app


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class SandboxServer:
    """Run the sandbox in a background thread (context manager).

    ``with SandboxServer(config) as sb: sb.base_url, sb.state`` — binds 127.0.0.1 on a free port by
    default, starts in well under a second and stops on exit.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "critical",
    ) -> None:
        self.config = config or SandboxConfig()
        self.state = SandboxState(self.config)
        self.app = build_app(self.config, self.state)
        self.host = host
        self.port = port or _free_port(host)
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host=host,
                port=self.port,
                log_level=log_level,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=1,
                # Dropped connections (transport faults) should not pile up keep-alive sockets.
                timeout_keep_alive=5,
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(
            target=self._server.run, name=f"sandbox-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"sandbox server failed to start on {self.host}:{self.port}; is the port free?"
                )
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=5)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def describe(config: SandboxConfig) -> str:
    """One line on what a sandbox injects and enforces, for its log."""
    rates = [
        f"{kind} {getattr(config.faults, kind):g}"
        for kind in FAULT_KINDS
        if getattr(config.faults, kind) > 0
    ]
    faults = f"faults: {', '.join(rates)} (seed {config.faults.seed})" if rates else "faults: none"
    quotas = (
        f"quotas: enforced at {config.quota_speedup:g}x the documented rates"
        if config.enforce_quotas
        else "quotas: not enforced"
    )
    return f"seed {config.seed}; {faults}; {quotas}; tokens live {config.access_token_lifetime:g} s"


def serve(host: str = "127.0.0.1", port: int = 8765, config: SandboxConfig | None = None) -> None:
    """Run the sandbox in the foreground until interrupted (for `illuma sandbox serve`)."""
    config = config or SandboxConfig()
    app = build_app(config)
    logger.info("sandbox serving %s on http://%s:%d", ", ".join(app.state.channels), host, port)
    logger.info("sandbox %s", describe(config))
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
