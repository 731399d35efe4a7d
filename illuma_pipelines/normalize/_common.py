"""Small parsing helpers shared by the channel normalizers (not part of the public API)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from .model import BuyerPII, NormalizeResult, Order, OrderAdjustment, OrderLine
from .money import ISO_4217_ACTIVE, check_currency, parse_amount

# Exceptions that mean "this record is malformed", turned into a reject with the message.
# TypeError/AttributeError cover a list where an object was expected and similar shape errors.
RECORD_ERRORS = (ValueError, TypeError, AttributeError, KeyError)


class RecordError(ValueError):
    """A record that cannot be normalized; the message is the reject reason."""


def describe(exc: BaseException) -> str:
    """Reject reason for an exception; KeyError's repr-only message gets a label."""
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}" if exc.args else "missing field"
    return str(exc) or type(exc).__name__


def text(value: Any) -> str | None:
    """A string field: blank (None, '', the literal '""') -> None; other scalars -> str."""
    if value is None:
        return None
    if isinstance(value, str):
        return None if value == "" or value == '""' else value
    if isinstance(value, bool) or isinstance(value, (Mapping, list)):
        raise RecordError(f"expected text, got {type(value).__name__} {value!r}")
    return str(value)


def required_text(value: Any, what: str) -> str:
    result = text(value)
    if result is None or not result.strip():
        raise RecordError(f"missing {what}")
    return result


def parse_int(value: Any, what: str) -> int:
    """A count sent as int, numeric string ('1') or integral Decimal; negatives rejected."""
    if isinstance(value, bool):
        raise RecordError(f"{what}: expected a count, got boolean {value!r}")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and value.strip().isdigit():
        result = int(value.strip())
    elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        result = int(value)
    else:
        raise RecordError(f"{what}: not a whole number: {value!r}")
    if result < 0:
        raise RecordError(f"{what}: negative count {result}")
    return result


def optional_int(value: Any, what: str) -> int | None:
    if value is None or (isinstance(value, str) and value.strip() in ("", '""')):
        return None
    return parse_int(value, what)


def parse_bool(value: Any, what: str) -> bool | None:
    """JSON booleans and Amazon's string booleans ('true'/'false'); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
    raise RecordError(f"{what}: not a boolean: {value!r}")


def money_of(obj: Any, amount_key: str, currency_key: str, what: str) -> tuple[Decimal, str] | None:
    """``(amount, currency)`` from a money object such as ``{"Amount", "CurrencyCode"}``."""
    if obj is None:
        return None
    if obj.__class__ is not dict and not isinstance(obj, Mapping):
        raise RecordError(f"{what}: expected a money object, got {type(obj).__name__}")
    amount = parse_amount(obj.get(amount_key), what)
    currency = obj.get(currency_key)
    if currency.__class__ is not str or currency not in ISO_4217_ACTIVE:
        currency = check_currency(currency, f"{what} currency")
    return amount, currency


def fast_money(obj: Any, amount_key: str, currency_key: str) -> tuple[Decimal, str] | None:
    """``(amount, currency)`` of a well-formed money dict, or None if it needs :func:`money_of`.

    The hot loops call this first and fall back to ``money_of`` (which handles every other shape
    and words the errors) only on None, so the error text is built only when it is needed.
    """
    if obj.__class__ is not dict:
        return None
    currency = obj.get(currency_key)
    if currency.__class__ is not str or currency not in ISO_4217_ACTIVE:
        return None
    amount = obj.get(amount_key)
    cls = amount.__class__
    if cls is str:
        try:
            value = Decimal(amount)
        except InvalidOperation:
            return None
    elif cls is Decimal:
        value = amount
    elif cls is int:
        return Decimal(amount), currency
    else:
        return None
    return (value, currency) if value.is_finite() else None


def add(total: Decimal | None, value: Decimal | None) -> Decimal | None:
    """Sum where None means "not reported": None + x = x, None + None = None."""
    if value is None:
        return total
    return value if total is None else total + value


def unit_price_of(item_price: Decimal | None, quantity: int | None) -> Decimal | None:
    """Per-unit price; inexact divisions are kept to 4 places, the warehouse scale."""
    if item_price is None or not quantity:
        return None
    unit = item_price / quantity
    if unit.as_tuple().exponent < -4:  # type: ignore[operator]
        unit = unit.quantize(Decimal("0.0001"))
    return unit


class CurrencyGuard:
    """Keeps every amount of one order in the order's currency.

    ``take`` returns the amount if its currency matches (adopting the first currency seen when
    the order has none yet), and otherwise records a dropped component and returns None.
    """

    __slots__ = ("currency", "dropped", "key")

    def __init__(self, currency: str | None, key: str, dropped: list[tuple[str, str]]):
        self.currency = currency
        self.key = key
        self.dropped = dropped

    def take(self, money: tuple[Decimal, str] | None, what: str) -> Decimal | None:
        if money is None:
            return None
        amount, currency = money
        if self.currency is None:
            self.currency = currency
            return amount
        if currency != self.currency:
            self.dropped.append(
                (
                    f"{self.key}/{what}",
                    f"{what} is {amount} {currency} but the order is in {self.currency}; "
                    "left out of every total",
                )
            )
            return None
        return amount

    def require(self, money: tuple[Decimal, str] | None, what: str) -> Decimal | None:
        """Like take, but a mismatch rejects the whole record (for the line's own price)."""
        if money is not None and self.currency is not None and money[1] != self.currency:
            raise RecordError(
                f"{self.key}: {what} is in {money[1]} but the order is in {self.currency}"
            )
        return self.take(money, what)


class OrderBundle:
    """Everything one order record produced, kept together until deduplication."""

    __slots__ = ("adjustments", "dropped", "lines", "order", "pii")

    def __init__(
        self,
        order: Order,
        lines: list[OrderLine],
        adjustments: list[OrderAdjustment],
        pii: BuyerPII | None,
        dropped: list[tuple[str, str]],
    ):
        self.order = order
        self.lines = lines
        self.adjustments = adjustments
        self.pii = pii
        self.dropped = dropped


def collect_orders(
    records: Iterable[Mapping[str, Any]],
    build: Callable[[Mapping[str, Any]], OrderBundle],
    record_id: Callable[[Mapping[str, Any]], Any],
) -> NormalizeResult:
    """Run ``build`` per record, turn failures into rejects, and keep one bundle per order.

    The same order can arrive more than once (the Amazon sandbox repeats it across pages; real
    incremental pulls repeat updated orders): the copy with the latest ``last_updated_at``
    wins, and on a tie the later one, since pages are read in order. A reject is keyed by the
    record's order id when it has one (``record_id``), else by its position.
    """
    result = NormalizeResult()
    chosen: dict[str, tuple[datetime | None, OrderBundle]] = {}
    for index, record in enumerate(records):
        if record.__class__ is not dict and not isinstance(record, Mapping):
            result.rejects.append((index, f"record is a {type(record).__name__}, not an object"))
            continue
        try:
            bundle = build(record)
        except RECORD_ERRORS as exc:
            rid = record_id(record)
            key_or_index = rid if isinstance(rid, str) and rid else index
            result.rejects.append((key_or_index, describe(exc)))
            continue
        key = bundle.order.marketplace_order_id
        updated = bundle.order.last_updated_at
        previous = chosen.get(key)
        if (
            previous is not None
            and previous[0] is not None
            and (updated is None or updated < previous[0])
        ):
            continue
        chosen[key] = (updated, bundle)
    for _, bundle in chosen.values():
        result.orders.append(bundle.order)
        result.lines.extend(bundle.lines)
        result.adjustments.extend(bundle.adjustments)
        if bundle.pii is not None:
            result.pii.append(bundle.pii)
        result.dropped_components.extend(bundle.dropped)
    return result


class ChannelErrorResponse(ValueError):
    """A marketplace error body (``{"errors": [...]}``) where data was expected; subclasses name
    the channel and the key of each error's code."""

    channel_label = "the marketplace"
    code_key = "code"

    def __init__(self, errors: list[Any]):
        self.errors = errors
        summary = "; ".join(
            f"{e.get(self.code_key)}: {e.get('message')}" if isinstance(e, Mapping) else repr(e)
            for e in errors
        )
        super().__init__(f"{self.channel_label} returned an error response: {summary}")
