"""The fast paths of the core_orders normalizing path (issue 4) against the general code they
shortcut: every fast path must give exactly what the general path gives, or step aside."""

import gc
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from illuma_pipelines import normalize
from illuma_pipelines.normalize import amazon, frames
from illuma_pipelines.normalize._common import (
    RECORD_ERRORS,
    fast_money,
    money_of,
    required_text,
)
from illuma_pipelines.normalize.amazon import _is_text, _line_status
from illuma_pipelines.normalize.money import ISO_4217_ACTIVE, MoneyError, loads, parse_amount
from illuma_pipelines.normalize.vocab import AdjustmentKind, OrderStatus, rollup_status

FIXTURES = Path(__file__).parent / "fixtures" / "amazon"


def _strict(value):
    """A comparable form that tells 1.0 from 1.00, Decimal from float and int from bool."""
    if isinstance(value, dict):
        return ("dict", [(k, _strict(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_strict(v) for v in value])
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, repr(value))


def _outcome(fn, *args):
    try:
        return ("ok", _strict(fn(*args)))
    except RecursionError:
        return ("error", "RecursionError")
    except ValueError as exc:  # json.JSONDecodeError and MoneyError are ValueErrors
        return ("error", type(exc).__name__, str(exc))


def _reference_loads(text):
    return json.loads(text, parse_float=Decimal)


# ------------------------------------------------------------------------------------ loads
_numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.decimals(allow_nan=False, allow_infinity=False),
)
_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.text(max_size=12), _numbers),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_json_values, st.sampled_from([(",", ":"), (", ", ": ")]), st.booleans())
def test_loads_equals_json_with_decimal(value, separators, as_bytes) -> None:
    text = _dump_raw(value, separators)
    payload = text.encode() if as_bytes else text
    assert _outcome(loads, payload) == _outcome(_reference_loads, payload)


def _dump_raw(value, separators) -> str:
    """JSON text with each Decimal written as its own digits, as a marketplace would (1.10)."""
    item_sep, key_sep = separators
    if isinstance(value, Decimal):
        text = str(value)
        return text if any(c in text for c in ".eE") else text + ".0"
    if isinstance(value, dict):
        inner = item_sep.join(
            json.dumps(k, ensure_ascii=False) + key_sep + _dump_raw(v, separators)
            for k, v in value.items()
        )
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + item_sep.join(_dump_raw(v, separators) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


_ODD_JSON = [
    "[NaN]", "Infinity", "-Infinity", '"\\ud800"', '"\\udc00x"', "\ufeff{}", b"\xef\xbb\xbf{}",
    b'"\xff"', '{"a":1}x', "1.", ".5", "01", "1e", "-", "", " ", "[" * 3000 + "]" * 3000,
    "1" * 5000, '{"a":1,"a":2}', '"a\x01b"', "1E400", "-0.0", "-0", "1.10", '{"a": 1.0E+2}',
    "[1,]", "{,}", '{"a" 1}', "tru", "nul", '"\\u00e9"', b'{"a":"\xc3\xa9"}', "\x0c1",
]


@pytest.mark.parametrize("text", _ODD_JSON, ids=range(len(_ODD_JSON)))
def test_loads_odd_inputs_behave_like_json(text) -> None:
    assert _outcome(loads, text) == _outcome(_reference_loads, text)


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=30), st.binary(max_size=30)))
def test_loads_arbitrary_text_behaves_like_json(text) -> None:
    assert _outcome(loads, text) == _outcome(_reference_loads, text)


def test_loads_keeps_amounts_exact() -> None:
    body = loads('{"a": 0.1, "b": 1.10, "c": 12345678901234567890.123456789, "d": 7}')
    assert body == {
        "a": Decimal("0.1"), "b": Decimal("1.10"), "c": Decimal("12345678901234567890.123456789"), "d": 7
    }
    assert str(body["b"]) == "1.10" and type(body["d"]) is int


# ------------------------------------------------------------------------------ parse_amount
def _reference_parse_amount(value: str) -> Decimal:
    text = value.strip()
    if not text or text == '""':
        raise MoneyError(f"amount: empty amount {value!r}")
    try:
        result = Decimal(text)
    except InvalidOperation:
        raise MoneyError(f"amount: not a decimal number: {value!r}") from None
    if not result.is_finite():
        raise MoneyError(f"amount: not a finite amount: {value!r}")
    return result


_amount_texts = st.one_of(
    st.text(alphabet=" \t\n\u00a0\u20030123456789.-+eE_nNaAiIfFtTyY\"", max_size=14),
    st.decimals().map(str).map(lambda s: f" {s}\t"),
    st.sampled_from(['""', "NaN", "sNaN", "-Infinity", "1_000.50", "١٢.٥", "1e-7", " 12.50 "]),
)


@settings(max_examples=600)
@given(_amount_texts)
def test_parse_amount_strings_match_the_reference(value) -> None:
    assert _outcome(parse_amount, value) == _outcome(_reference_parse_amount, value)


# ------------------------------------------------------------------------------ money objects
_amounts = st.one_of(
    _amount_texts, st.none(), st.booleans(), st.integers(), st.floats(), st.decimals(),
    st.lists(st.integers(), max_size=1),
)
_currencies = st.one_of(
    st.sampled_from(["USD", "EUR", "JPY", "usd", "US", "", "string", " USD"]),
    st.none(), st.integers(), st.text(max_size=4),
)


@settings(max_examples=800)
@given(
    st.one_of(
        st.fixed_dictionaries({}, optional={"amount": _amounts, "currencyCode": _currencies}),
        st.none(), st.text(max_size=3), st.lists(st.integers(), max_size=2),
    )
)
def test_fast_money_is_money_of_or_steps_aside(obj) -> None:
    fast = fast_money(obj, "amount", "currencyCode")
    if fast is not None:
        assert _strict(list(fast)) == _strict(list(money_of(obj, "amount", "currencyCode", "x")))
        assert fast[1] in ISO_4217_ACTIVE


@settings(max_examples=600)
@given(st.one_of(st.text(max_size=8), st.none(), st.integers(), st.booleans(), st.lists(st.none())))
def test_is_text_means_required_text_returns_it(value) -> None:
    try:
        general = ("ok", required_text(value, "x"))
    except RECORD_ERRORS:
        general = ("error",)
    if _is_text(value):
        assert general == ("ok", value)
    if type(value) is str and general == ("ok", value):
        assert _is_text(value)


_statuses = st.sampled_from(list(OrderStatus))


@given(_statuses, st.integers(min_value=0, max_value=6), st.one_of(st.none(), st.integers(0, 6)))
def test_line_status_is_the_rollup(order_status, ordered, shipped) -> None:
    if order_status in (OrderStatus.CANCELLED, OrderStatus.PENDING) or shipped is None:
        expected = order_status
    else:
        expected = rollup_status(
            {OrderStatus.SHIPPED: shipped, OrderStatus.UNSHIPPED: ordered - shipped}
        )
    assert _line_status(order_status, ordered, shipped) is expected


# ------------------------------------------------------------------------------------ frames
def _reference_series(values, kind, name) -> pd.Series:
    if kind is datetime:
        return pd.Series(pd.to_datetime(values, utc=True), name=name).astype("datetime64[us, UTC]")
    return pd.Series([None if v is None else str(v) for v in values], dtype="string", name=name)


_zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))])
_aware = st.builds(
    lambda dt, tz: dt.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
    _zones,
)


@settings(max_examples=200)
@given(st.lists(st.one_of(st.none(), _aware, st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1))), max_size=8))
def test_datetime_columns_match_to_datetime(values) -> None:
    got = frames._series(values, datetime, "t")
    pd.testing.assert_series_equal(got, _reference_series(values, datetime, "t"))


@settings(max_examples=200)
@given(
    st.lists(st.one_of(st.none(), st.text(max_size=5), st.sampled_from(list(OrderStatus))), max_size=8),
    st.sampled_from([str, OrderStatus, AdjustmentKind]),
)
def test_text_columns_match_str_conversion(values, kind) -> None:
    got = frames._series(values, kind, "s")
    pd.testing.assert_series_equal(got, _reference_series(values, kind, "s"))
    assert all(v is pd.NA or type(v) is str for v in got)


def test_text_column_with_a_non_text_value_takes_the_str_route() -> None:
    got = frames._series(["a", 5, b"x", None], str, "s")
    assert list(got) == ["a", "5", "b'x'", pd.NA]


# ------------------------------------------------------------------- the core_orders path
def _raw_records() -> list[str]:
    texts = []
    for path in sorted(FIXTURES.glob("amazon_*Order*.json")):
        try:
            records = amazon.orders_from_response(loads(path.read_text()))
        except ValueError:
            continue
        texts.extend(json.dumps(r, default=str) for r in records)
    return texts


def test_payload_path_equals_list_path_and_restores_gc() -> None:
    texts = _raw_records()
    texts += ["[1, 2]", '{"orderId": ""}', texts[0]]  # a non-object, a reject, a duplicate
    assert gc.isenabled()
    streamed = normalize.normalize_order_payloads("amazon", texts)
    assert gc.isenabled()
    assert repr(streamed) == repr(amazon.normalize_orders([loads(t) for t in texts]))
    assert streamed.orders and streamed.rejects


def test_paused_gc_restores_the_previous_state() -> None:
    gc.disable()
    try:
        with normalize.paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(KeyError), normalize.paused_gc():
        raise KeyError("x")
    assert gc.isenabled()


def test_unknown_channel_is_named() -> None:
    with pytest.raises(ValueError, match="no order normalizer for channel 'etsy'"):
        normalize.normalize_order_payloads("etsy", [])
