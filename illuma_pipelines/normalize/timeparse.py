"""Timestamp parsing into timezone-aware UTC datetimes.

Each marketplace format gets its own function, so nothing guesses between "seconds or
milliseconds" or "month or day first" at run time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "TimeParseError",
    "parse_amazon_time",
    "parse_epoch_millis",
    "parse_epoch_seconds",
    "parse_iso",
    "parse_mdy",
    "parse_settlement_time",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TimeParseError(ValueError):
    """A timestamp that cannot be read as an unambiguous instant."""


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", '""'))


def parse_iso(value: Any, what: str = "timestamp") -> datetime | None:
    """ISO 8601 with an offset or ``Z`` (milliseconds allowed) -> UTC; blank -> None.

    A timestamp without an offset is rejected: every API we read sends UTC with ``Z``, so a naive
    one means something upstream changed and silently assuming UTC could shift data by hours.
    """
    if _blank(value):
        return None
    if not isinstance(value, str):
        raise TimeParseError(f"{what}: expected an ISO 8601 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise TimeParseError(f"{what}: not an ISO 8601 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        raise TimeParseError(f"{what}: timestamp {value!r} has no UTC offset")
    return parsed.astimezone(UTC)


def _decimal(value: Any, what: str) -> Decimal:
    if isinstance(value, bool):
        raise TimeParseError(f"{what}: expected an epoch number, got boolean")
    if isinstance(value, float):
        value = repr(value)
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, TypeError, ValueError):
        raise TimeParseError(f"{what}: not an epoch number: {value!r}") from None
    if not number.is_finite():
        raise TimeParseError(f"{what}: not a finite epoch number: {value!r}")
    return number


def _from_epoch_micros(micros: Decimal, what: str, raw: Any) -> datetime:
    try:
        return _EPOCH + timedelta(microseconds=int(micros.to_integral_value()))
    except OverflowError:
        raise TimeParseError(f"{what}: epoch value out of range: {raw!r}") from None


def parse_epoch_seconds(value: Any, what: str = "timestamp") -> datetime | None:
    """Epoch seconds (int, Decimal, or text such as ``'1.569521782042E9'``) -> UTC; blank -> None.

    Decimal arithmetic keeps the millisecond part exact.
    """
    if _blank(value):
        return None
    return _from_epoch_micros(_decimal(value, what) * 1_000_000, what, value)


def parse_epoch_millis(value: Any, what: str = "timestamp") -> datetime | None:
    """Epoch milliseconds (Walmart ``orderDate``, ``statusDate``...) -> UTC; blank -> None."""
    if _blank(value):
        return None
    return _from_epoch_micros(_decimal(value, what) * 1_000, what, value)


def parse_amazon_time(value: Any, what: str = "timestamp") -> datetime | None:
    """Amazon timestamps: ISO 8601, or epoch seconds as text (one sandbox field sends these).

    ISO strings always contain ``-``/``T``; an epoch string is a plain number, possibly in
    scientific notation. The first character decides, so no regex runs per value.
    """
    if _blank(value):
        return None
    if isinstance(value, (int, Decimal, float)) and not isinstance(value, bool):
        return parse_epoch_seconds(value, what)
    if isinstance(value, str):
        text = value.strip()
        if "T" not in text and "-" not in text[1:]:
            return parse_epoch_seconds(text, what)
    return parse_iso(value, what)


def parse_mdy(value: Any, what: str = "date") -> date | None:
    """``MM/DD/YYYY`` (Walmart reconciliation report) -> date; blank or ``'""'`` -> None."""
    if _blank(value):
        return None
    if not isinstance(value, str):
        raise TimeParseError(f"{what}: expected MM/DD/YYYY text, got {type(value).__name__}")
    try:
        return datetime.strptime(value.strip(), "%m/%d/%Y").date()
    except ValueError:
        raise TimeParseError(f"{what}: not a MM/DD/YYYY date: {value!r}") from None


# Amazon settlement flat files write instants as "2024-01-05 07:36:12 UTC" (North America),
# "05.01.2024 07:36:12 UTC" (Europe) or ISO 8601 with an offset (newer files). Dates alone
# ("2024-01-03" / "03.01.2024") appear in posted-date.
_SETTLEMENT_FORMATS = (
    "%Y-%m-%d %H:%M:%S %Z",
    "%d.%m.%Y %H:%M:%S %Z",
    "%Y-%m-%d %H:%M:%S",
    "%d.%m.%Y %H:%M:%S",
    "%Y-%m-%d",
    "%d.%m.%Y",
)


def _fast_settlement(text: str) -> datetime | None:
    """The common fixed-width layouts by slicing (strptime costs ~10 us a call, and a
    settlement file has two date cells per row). Anything unusual returns None and takes the
    strptime route, which also produces the error messages."""
    n = len(text)
    if n not in (10, 19, 23) or (n == 23 and not text.endswith((" UTC", " GMT"))):
        return None
    try:
        if text[4] == "-" and text[7] == "-":
            year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
        elif text[2] == "." and text[5] == ".":
            day, month, year = int(text[0:2]), int(text[3:5]), int(text[6:10])
        else:
            return None
        if n == 10:
            return datetime(year, month, day, tzinfo=UTC)
        if text[10] != " " or text[13] != ":" or text[16] != ":":
            return None
        return datetime(
            year, month, day, int(text[11:13]), int(text[14:16]), int(text[17:19]), tzinfo=UTC
        )
    except ValueError:
        return None


def parse_settlement_time(value: Any, what: str = "timestamp") -> datetime | None:
    """A settlement-report instant -> UTC datetime; blank -> None.

    Values without a zone are UTC: the report's documented zone for every date column.
    """
    if _blank(value):
        return None
    if not isinstance(value, str):
        raise TimeParseError(f"{what}: expected text, got {type(value).__name__}")
    text = value.strip()
    if len(text) > 10 and text[10] == "T":
        return parse_iso(text, what)
    fast = _fast_settlement(text)
    if fast is not None:
        return fast
    for fmt in _SETTLEMENT_FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if fmt.endswith("%Z") and not text.endswith(("UTC", "GMT")):
            raise TimeParseError(f"{what}: settlement time {value!r} is not in UTC")
        return parsed.replace(tzinfo=UTC)
    raise TimeParseError(f"{what}: not a settlement report date/time: {value!r}")
