"""Data-rights requests (privacy policy §10): answered within 30 days, tracked with an explicit clock.

The deadline is the exact instant received_at + 30 days, not a calendar day: requests are tracked
one by one, not swept by a daily purge. A request is "due_soon" once 7 days or less remain, and
"overdue" only after the deadline instant has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from illuma_pipelines.merchant_ids import validate_merchant_id
from illuma_pipelines.retention.errors import RetentionError
from illuma_pipelines.retention.periods import to_utc

REQUEST_RESPONSE_PERIOD = timedelta(days=30)
DUE_SOON_WINDOW = timedelta(days=7)


class RequestKind(StrEnum):
    ACCESS = "access"
    CORRECTION = "correction"
    DELETION = "deletion"
    EXPORT = "export"  # "receive your data in a portable format"
    RESTRICTION = "restriction"  # object to or restrict processing


class Requester(StrEnum):
    MERCHANT = "merchant"
    BUYER = "buyer"  # an end buyer whose order data a merchant's channels sent us


class RequestStatus(StrEnum):
    ON_TIME = "on_time"
    DUE_SOON = "due_soon"
    OVERDUE = "overdue"
    DONE = "done"


def request_deadline(received_at: datetime) -> datetime:
    return to_utc(received_at, "received_at") + REQUEST_RESPONSE_PERIOD


def request_status(
    received_at: datetime, completed_at: datetime | None, now: datetime
) -> RequestStatus:
    """The request's status as of `now`; a completion later than `now` has not happened yet."""
    received, current = to_utc(received_at, "received_at"), to_utc(now, "now")
    if current < received:
        raise RetentionError(
            f"now ({current.isoformat()}) is before the request was received "
            f"({received.isoformat()}): check the clock passed in"
        )
    if completed_at is not None:
        completed = to_utc(completed_at, "completed_at")
        if completed < received:
            raise RetentionError(
                f"completed_at ({completed.isoformat()}) is before received_at "
                f"({received.isoformat()}): fix the request record"
            )
        if completed <= current:
            return RequestStatus.DONE
    left = request_deadline(received) - current
    if left < timedelta(0):
        return RequestStatus.OVERDUE
    return RequestStatus.DUE_SOON if left <= DUE_SOON_WINDOW else RequestStatus.ON_TIME


@dataclass(frozen=True)
class DataRequest:
    """One rights request. `subject_ref` identifies whose data (never PII in clear: e.g. an order
    id or the merchant id)."""

    request_id: str
    kind: RequestKind
    requester: Requester
    merchant_id: str
    subject_ref: str
    received_at: datetime
    completed_at: datetime | None = None

    def __post_init__(self) -> None:
        validate_merchant_id(self.merchant_id)
        for name, enum in (("kind", RequestKind), ("requester", Requester)):
            value = getattr(self, name)
            if value not in set(enum):
                raise RetentionError(
                    f"request {self.request_id!r}: unknown {name} {value!r}; use one of "
                    f"{', '.join(enum)}"
                )
            object.__setattr__(self, name, enum(value))
        object.__setattr__(self, "received_at", to_utc(self.received_at, "received_at"))
        if self.completed_at is not None:
            completed = to_utc(self.completed_at, "completed_at")
            if completed < self.received_at:
                raise RetentionError(
                    f"request {self.request_id!r}: completed_at ({completed.isoformat()}) is "
                    f"before received_at ({self.received_at.isoformat()})"
                )
            object.__setattr__(self, "completed_at", completed)

    @property
    def deadline(self) -> datetime:
        return request_deadline(self.received_at)

    def status(self, now: datetime) -> RequestStatus:
        return request_status(self.received_at, self.completed_at, now)

    def completed_on_time(self) -> bool | None:
        """None while open; else whether it was completed by the deadline."""
        return None if self.completed_at is None else self.completed_at <= self.deadline
