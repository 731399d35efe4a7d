import pytest
from hypothesis import given
from hypothesis import strategies as st

from illuma_pipelines.merchant_ids import (
    InvalidMerchantId,
    merchant_schema,
    validate_merchant_id,
)
from illuma_pipelines.warehouse_logins import merchant_login_role

BAD_IDS = [
    "a;drop schema x",
    "../etc",
    "a|b",
    "a,b",
    "a[0]",
    "",
    "a" * 200,
    "аcme",  # Cyrillic 'а' look-alike
    "acme\u200b",  # zero-width space
    "ＡCME",  # full-width
    "Acme",
    "acme\n",
    "1acme",
    "a",
    "acme parts",
    "acme-parts",
    "m_acme; --",
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_ids_are_refused_with_the_rule(bad):
    with pytest.raises(InvalidMerchantId, match="lowercase ASCII letter"):
        validate_merchant_id(bad)


@pytest.mark.parametrize("bad", [None, 42, b"acme"])
def test_non_strings_are_refused(bad):
    with pytest.raises(InvalidMerchantId, match="must be a string"):
        validate_merchant_id(bad)


def test_long_ids_are_shortened_in_the_message():
    with pytest.raises(InvalidMerchantId) as err:
        validate_merchant_id("x" * 500)
    assert len(str(err.value)) < 300


@given(st.from_regex(r"[a-z][a-z0-9_]{1,39}", fullmatch=True))
def test_valid_ids_fit_identifiers_and_partition_keys(mid):
    assert validate_merchant_id(mid) == mid
    assert len(merchant_login_role(mid, "0123abcd").encode()) <= 63
    assert merchant_schema(mid) == f"m_{mid}"
    assert not set(mid) & set("|[],/.;")
