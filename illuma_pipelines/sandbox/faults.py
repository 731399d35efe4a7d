"""Fault injection and quota enforcement for the sandbox, shared by every channel module.

`FaultConfig` says how often each kind of fault happens; `FaultInjector.draw(...)` decides, per
request, with a seeded RNG (the sequence is reproducible for a given request order), which fault
(if any) that request gets. Kinds:

- `throttle`: a 429 with `Retry-After`, and the next 0-2 requests of that operation and caller
  also get 429 (a burst).
- `server_error`: 500 or 503 with an SP-API style error body.
- `timeout`: the response is held `timeout_seconds` (longer than the client's read timeout), then
  sent normally; the client has given up by then.
- `connection_reset`: the status line and headers go out, then the connection is dropped.
- `truncated_body`: either a Content-Length that promises more bytes than are sent, or a JSON body
  cut short with a correct Content-Length (so only decoding notices).
- `malformed_record`: on list responses, one extra, broken copy of a record (required id missing,
  a garbage value) is added to the page. The real records stay intact, so an extract that
  quarantines bad records loses nothing.
- `expired_token`: a valid access token is answered with the marketplace's "expired" error, and
  revoked, so the client must refresh.

No fault ever changes or removes data: retrying a faulted request returns the correct data.

`QuotaBucket` is the server-side token bucket enforcing a documented rate and burst.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

FAULT_KINDS = (
    "throttle",
    "server_error",
    "timeout",
    "connection_reset",
    "truncated_body",
    "malformed_record",
    "expired_token",
)


@dataclass(frozen=True)
class FaultConfig:
    """Probability per request of each fault kind (their sum must be <= 1). All zero: no faults."""

    throttle: float = 0.0
    server_error: float = 0.0
    timeout: float = 0.0
    connection_reset: float = 0.0
    truncated_body: float = 0.0
    malformed_record: float = 0.0
    expired_token: float = 0.0
    seed: int = 0
    timeout_seconds: float = 2.0
    retry_after_seconds: float = 1.0

    def __post_init__(self) -> None:
        total = sum(getattr(self, kind) for kind in FAULT_KINDS)
        if total > 1.0 + 1e-9 or any(getattr(self, kind) < 0 for kind in FAULT_KINDS):
            raise ValueError(
                f"fault probabilities must be >= 0 and sum to at most 1, got a sum of {total:.3f}"
            )

    @classmethod
    def mixed(
        cls, probability: float, *, kinds: tuple[str, ...] = FAULT_KINDS, **kwargs: float
    ) -> FaultConfig:
        """`probability` of a fault per request, split evenly over `kinds` (all kinds by default)."""
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(
                f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}"
            )
        share = probability / len(kinds)
        return cls(**{kind: share for kind in kinds}, **kwargs)

    @property
    def active(self) -> bool:
        return any(getattr(self, kind) > 0 for kind in FAULT_KINDS)


class FaultInjector:
    """Draws faults per request from one seeded RNG (thread-safe)."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()
        self._bursts: dict[tuple[str, str], int] = {}
        self.counts: dict[str, int] = {kind: 0 for kind in FAULT_KINDS}

    def draw(
        self, caller: str, operation: str, allowed: frozenset[str] | set[str] | tuple[str, ...]
    ) -> str | None:
        """The fault for this request, or None. `allowed` lists the kinds that make sense here
        (e.g. no `malformed_record` on a single-object response)."""
        if not self.config.active:
            return None
        with self._lock:
            key = (caller, operation)
            remaining = self._bursts.get(key, 0)
            if remaining > 0 and "throttle" in allowed:
                self._bursts[key] = remaining - 1
                self.counts["throttle"] += 1
                return "throttle"
            roll = self._rng.random()
            cumulative = 0.0
            for field in fields(self.config):
                kind = field.name
                if kind not in FAULT_KINDS:
                    continue
                cumulative += getattr(self.config, kind)
                if roll < cumulative:
                    if kind not in allowed:
                        return None
                    if kind == "throttle":
                        self._bursts[key] = self._rng.randint(0, 2)
                    self.counts[kind] += 1
                    return kind
            return None

    def choice(self, options: list) -> object:
        with self._lock:
            return self._rng.choice(options)


class QuotaBucket:
    """Server-side token bucket (rate per second, burst), on real monotonic time."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def try_take(self, on_admit: Callable[[float], None] | None = None) -> bool:
        """Take a token if there is one. `on_admit(at)` is called, still under the bucket's lock,
        with the monotonic time the token was taken at: a log kept by it is in admission order
        and holds exactly the times the bucket reckoned with."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                if on_admit is not None:
                    on_admit(now)
                return True
            return False
