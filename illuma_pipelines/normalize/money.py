"""Exact money parsing: amounts become ``decimal.Decimal`` from their raw text, never via float.

Marketplaces send amounts as JSON strings (Amazon Orders, eBay), JSON numbers (Amazon Finances
and Pricing, Walmart) and integers (JPY, Amazon Pricing sandbox). A JSON number only stays exact
if the caller parses the body with ``json.loads(..., parse_float=Decimal)``: use :func:`loads`.
Floats that still reach us (a caller that used plain ``json.loads``) go through ``repr``, which
gives the shortest text that round-trips, so ``0.8`` becomes ``Decimal('0.8')`` and not
``Decimal('0.8000000000000000444...')``.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

__all__ = [
    "ISO_4217_ACTIVE",
    "MoneyError",
    "check_currency",
    "loads",
    "parse_amount",
    "parse_optional_amount",
]


class MoneyError(ValueError):
    """An amount or currency code that cannot be taken as exact money."""


# Active ISO 4217 alphabetic codes (list one, as published by SIX; funds codes such as USN and
# precious metals such as XAU are excluded because no marketplace settles in them). Kept as
# data: a code missing here makes a record a reject, which is the safe failure.
ISO_4217_ACTIVE: frozenset[str] = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP
    GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS
    KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR
    MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF
    SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD
    TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
    """.split()
)


# msgspec hands the float_hook the number's own text, as json's parse_float does, and parses
# about twice as fast as json (issue 4: parsing was 40% of normalizing an Amazon extract).
_fast_decode = msgspec.json.Decoder(float_hook=Decimal).decode


def loads(text: str | bytes) -> Any:
    """Parse a JSON body so that every JSON number with a fraction or exponent is a Decimal.

    Integers stay ``int`` (exact already). Use this for every marketplace payload that carries
    money as JSON numbers (Amazon Finances and Pricing, Walmart orders).

    The result is exactly ``json.loads(text, parse_float=Decimal)``'s. Whatever msgspec refuses
    (NaN and Infinity, lone surrogates, a UTF-8 BOM, deep nesting, invalid JSON) goes to json
    itself, which either accepts it as it always did or raises its usual ``JSONDecodeError``.
    """
    try:
        return _fast_decode(text)
    except Exception:
        return json.loads(text, parse_float=Decimal)


def parse_amount(value: Any, what: str = "amount") -> Decimal:
    """Return ``value`` as an exact finite Decimal.

    Accepts Decimal, int, numeric strings (surrounding whitespace allowed, JPY-style integers,
    exponents such as ``1E+2``) and floats (through ``repr``). Rejects booleans, empty strings,
    the literal ``'""'`` blank, NaN/Infinity and anything else, naming ``what`` in the error.
    """
    # Fast path for the common case, a plain numeric string (Decimal itself ignores surrounding
    # whitespace, as the strip below does); anything it refuses takes the checks below, which
    # also word the errors.
    if value.__class__ is str:
        try:
            result = Decimal(value)
        except InvalidOperation:
            pass
        else:
            if result.is_finite():
                return result
    # bool is an int subclass: a JSON true where an amount belongs is a broken payload.
    if isinstance(value, bool):
        raise MoneyError(f"{what}: expected a number, got boolean {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        return Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text or text == '""':
            raise MoneyError(f"{what}: empty amount {value!r}")
        try:
            result = Decimal(text)
        except InvalidOperation:
            raise MoneyError(f"{what}: not a decimal number: {value!r}") from None
    elif isinstance(value, float):
        result = Decimal(repr(value))
    else:
        raise MoneyError(f"{what}: expected a number or numeric string, got {type(value).__name__}")
    if not result.is_finite():
        raise MoneyError(f"{what}: not a finite amount: {value!r}")
    return result


def parse_optional_amount(value: Any, what: str = "amount") -> Decimal | None:
    """Like :func:`parse_amount`, but ``None``, ``''`` and ``'""'`` mean "not reported"."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip() in ("", '""'):
        return None
    return parse_amount(value, what)


def check_currency(code: Any, what: str = "currency") -> str:
    """Return ``code`` if it is an active ISO 4217 code, else raise MoneyError.

    No case folding or trimming: a marketplace that sends ``'usd'`` or ``'string'`` (the Amazon
    pricing sandbox does) has sent something we do not understand, and guessing would hide it.
    """
    if not isinstance(code, str) or code not in ISO_4217_ACTIVE:
        raise MoneyError(f"{what}: {code!r} is not an active ISO 4217 currency code")
    return code
