"""The one strict pattern a merchant id must match before it reaches SQL, a path or a partition key."""

from __future__ import annotations

import re

# Lowercase ASCII letter first, then lowercase ASCII letters, digits or underscores; 2 to 40
# characters. This keeps `m_<id>` (schema) and `m_<id>_<8-hex placement tag>` (the merchant's
# login, illuma_pipelines/warehouse_logins.py) inside PostgreSQL's 63-byte identifier limit and
# excludes every character Dagster forbids in partition keys.
MERCHANT_ID_PATTERN = re.compile(r"[a-z][a-z0-9_]{1,39}")
MERCHANT_ID_RULE = (
    "a merchant id is 2 to 40 characters: a lowercase ASCII letter, then lowercase ASCII "
    "letters, digits or underscores (for example 'acme_parts')"
)


class InvalidMerchantId(ValueError):
    """Raised for any merchant id that does not match MERCHANT_ID_PATTERN."""


def validate_merchant_id(value: object) -> str:
    """Return `value` unchanged if it is a valid merchant id, else raise InvalidMerchantId."""
    if not isinstance(value, str):
        raise InvalidMerchantId(f"merchant id must be a string, got {type(value).__name__}; {MERCHANT_ID_RULE}")
    # fullmatch with an ASCII-only class: no unicode look-alikes, no trailing newline tricks.
    if not MERCHANT_ID_PATTERN.fullmatch(value):
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise InvalidMerchantId(f"invalid merchant id {shown!r}: {MERCHANT_ID_RULE}")
    return value


def merchant_schema(merchant_id: str) -> str:
    """The warehouse schema that holds only this merchant's data."""
    return f"m_{validate_merchant_id(merchant_id)}"
