"""Retention periods and the UTC calendar-day arithmetic every rule uses.

A period is a whole number of days, months or years. Months and years are calendar ones (a year is
twelve months), so "12 months" is never cut short by a leap year; adding a month to the 31st lands
on the last day of a shorter month. Two periods compare only within one family (days, or
months/years): how many days "3 months" holds depends on the anchor, so "90 days" is neither
shorter nor longer than it for every anchor.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Literal

from illuma_pipelines.retention.errors import RetentionError

Unit = Literal["days", "months", "years"]

_SPELLING = re.compile(r"\s*(\d{1,5})\s*(d|day|days|mo|month|months|y|yr|year|years)\s*")
_UNITS: dict[str, Unit] = {
    "d": "days",
    "day": "days",
    "days": "days",
    "mo": "months",
    "month": "months",
    "months": "months",
    "y": "years",
    "yr": "years",
    "year": "years",
    "years": "years",
}


@dataclass(frozen=True)
class Period:
    """A whole number of days, months or years (count >= 0)."""

    count: int
    unit: Unit

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise RetentionError(
                f"a retention period needs a whole count >= 0, got {self.count!r} {self.unit}"
            )
        if self.unit not in ("days", "months", "years"):
            raise RetentionError(
                f"unknown period unit {self.unit!r}: use 'days', 'months' or 'years'"
            )

    @classmethod
    def parse(cls, value: Period | str) -> Period:
        """A Period, or its spelling: '30d', '90 days', '12mo', '12 months', '7y', '7 years'."""
        if isinstance(value, Period):
            return value
        if not isinstance(value, str):
            raise RetentionError(
                f"a retention period must be a Period or a string like '30d', '12mo' or '7y', "
                f"got {type(value).__name__} {value!r}"
            )
        found = _SPELLING.fullmatch(value.lower())
        if not found:
            raise RetentionError(
                f"unreadable retention period {value!r}: write a whole number and a unit, "
                f"like '30d', '12mo' or '7y'"
            )
        return cls(int(found.group(1)), _UNITS[found.group(2)])

    @property
    def family(self) -> Literal["days", "months"]:
        return "days" if self.unit == "days" else "months"

    @property
    def magnitude(self) -> int:
        """The count in the family's base unit (days, or months): comparable within a family."""
        return self.count * 12 if self.unit == "years" else self.count

    def add_to(self, day: date) -> date:
        if self.unit == "days":
            return date.fromordinal(day.toordinal() + self.count)
        return add_months(day, self.magnitude)

    def __str__(self) -> str:
        unit = self.unit[:-1] if self.count == 1 else self.unit
        return f"{self.count} {unit}"


def add_months(day: date, months: int) -> date:
    """`day` moved by `months` calendar months, clamped to the last day of a shorter month.

    Monotonic in both arguments, which the cutoff computation relies on.
    """
    years, month_index = divmod(day.month - 1 + months, 12)
    year, month = day.year + years, month_index + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def to_utc(value: datetime, name: str) -> datetime:
    """`value` in UTC; naive datetimes are refused, as their instant is unknowable."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__} {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise RetentionError(
            f"{name} is a naive datetime ({value.isoformat()}): pass a timezone-aware one, e.g. "
            f"datetime(..., tzinfo=datetime.UTC); warehouse timestamps are TIMESTAMPTZ"
        )
    return value.astimezone(UTC)


def utc_day(value: datetime, name: str) -> date:
    return to_utc(value, name).date()


def utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)
