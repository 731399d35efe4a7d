"""The vault's ciphertext string format and the associated data that binds it to its row.

A ciphertext is one ASCII string, safe in any text column, CSV or JSON:

    v1.<key_version>.<nonce>.<sealed>

- ``v1``: the format; a future format gets a new tag and both are read side by side.
- ``key_version``: the merchant's data-key version, a decimal integer from 1, no leading zeros.
- ``nonce``: the 96-bit random AES-GCM nonce, standard base64 (always 16 characters).
- ``sealed``: AES-256-GCM ciphertext followed by its 128-bit tag, standard padded base64.

Standard base64 never uses ``.``, so the four parts split unambiguously, and the version can be
read with plain SQL (``split_part(col, '.', 2)``) when a job needs the versions still in use.

The associated data (authenticated, not stored) is

    b"illuma-pii\\x00v1\\x00" + u32be(key_version)
    + u32be(len(m)) + m + u32be(len(t)) + t + u32be(len(c)) + c + record_id

with m, t, c, record_id the UTF-8 merchant id, table, column and record id. Every field but the
last is fixed-size or length-prefixed, so no two different bindings produce the same bytes.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from illuma_pipelines.merchant_ids import validate_merchant_id
from illuma_pipelines.vault.errors import MalformedCiphertext

FORMAT_TAG = "v1"
NONCE_BYTES = 12
TAG_BYTES = 16
# The key version is packed as an unsigned 32-bit integer in the associated data; nine digits
# stay far below that and far above any rotation schedule (one version per 90 days).
MAX_KEY_VERSION = 999_999_999

_B64 = "[A-Za-z0-9+/]"
# Anchored by fullmatch in Python; RE2-compatible (no look-arounds, no \d) so the same pattern
# works in DuckDB's regexp_full_match and PostgreSQL's ~ for scans that prove no plaintext PII is
# stored. The sealed part holds at least the 16-byte tag: five full quads plus a padded tail, or
# more quads.
CIPHERTEXT_REGEX = (
    r"v1\.[1-9][0-9]{0,8}\."
    rf"{_B64}{{16}}\."
    rf"(?:{_B64}{{4}}){{5}}"
    rf"(?:{_B64}{{2}}==|{_B64}{{3}}=|(?:{_B64}{{4}})+(?:{_B64}{{2}}==|{_B64}{{3}}=)?)"
)
CIPHERTEXT_PATTERN = re.compile(CIPHERTEXT_REGEX)

_AAD_MAGIC = b"illuma-pii\x00v1\x00"

# Table and column names are unqualified lowercase SQL identifiers. The merchant (and so the
# schema) is bound separately; allowing "Orders", "orders" and "m_acme.orders" for one table would
# give one row three different bindings, and its ciphertexts would fail depending on the spelling.
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_IDENTIFIER_RULE = (
    "an unqualified lowercase SQL identifier of at most 63 characters (e.g. 'orders')"
)
MAX_RECORD_ID_CHARS = 512


@dataclass(frozen=True, slots=True)
class ParsedCiphertext:
    """The three stored parts of a vault ciphertext, decoded."""

    key_version: int
    nonce: bytes
    sealed: bytes


def _describe(value: object) -> str:
    # Never show the value itself: a "ciphertext" that fails to parse is often plaintext PII.
    if isinstance(value, str):
        return f"a {len(value)}-character string"
    return f"a {type(value).__name__}"


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _unb64_canonical(text: str) -> bytes | None:
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        return None
    # base64 has several spellings of the same bytes (the unused low bits of the last character).
    # Only the canonical one is accepted, so any change to the stored string is a change that
    # authentication sees, rather than one that silently decodes to the same bytes.
    if _b64(data) != text:
        return None
    return data


def parse_ciphertext(value: object) -> ParsedCiphertext:
    """Split a vault ciphertext into version, nonce and sealed bytes; raise MalformedCiphertext."""
    if not isinstance(value, str) or not CIPHERTEXT_PATTERN.fullmatch(value):
        raise MalformedCiphertext(
            f"expected a vault ciphertext 'v1.<key version>.<nonce>.<sealed>', got {_describe(value)}; "
            "if this column holds plaintext PII it was written without the vault: encrypt it with "
            "Vault.encrypt before storing it"
        )
    _, version_text, nonce_text, sealed_text = value.split(".")
    nonce = _unb64_canonical(nonce_text)
    sealed = _unb64_canonical(sealed_text)
    if nonce is None or sealed is None:
        raise MalformedCiphertext(
            "vault ciphertext has a non-canonical base64 part: it was altered after encryption; "
            "restore the value from its source or a backup"
        )
    return ParsedCiphertext(int(version_text), nonce, sealed)


def is_ciphertext(value: object) -> bool:
    """True if `value` is a well-formed vault ciphertext string (it says nothing about which key)."""
    if not isinstance(value, str) or not value.startswith("v1."):
        return False
    try:
        parse_ciphertext(value)
    except MalformedCiphertext:
        return False
    return True


def key_version(ciphertext: str) -> int:
    """The data-key version a ciphertext was made with, for finding the versions still in use."""
    return parse_ciphertext(ciphertext).key_version


def format_ciphertext(version: int, nonce: bytes, sealed: bytes) -> str:
    return f"{FORMAT_TAG}.{version}.{_b64(nonce)}.{_b64(sealed)}"


def _length_prefixed(text: str) -> bytes:
    raw = text.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


def aad_prefix(merchant_id: str, table: str, column: str, version: int) -> bytes:
    """Everything of the associated data but the trailing record id (shared by a whole column)."""
    return (
        _AAD_MAGIC
        + version.to_bytes(4, "big")
        + _length_prefixed(merchant_id)
        + _length_prefixed(table)
        + _length_prefixed(column)
    )


def associated_data(
    merchant_id: str, table: str, column: str, record_id: str, version: int
) -> bytes:
    """The full associated data for one value (see the module docstring for the layout)."""
    return aad_prefix(merchant_id, table, column, version) + record_id.encode("utf-8")


def validate_identifier(what: str, name: object) -> None:
    """Check a table or column name a value is bound to."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        shown = repr(name) if isinstance(name, str) and len(name) <= 80 else _describe(name)
        raise ValueError(f"invalid {what} {shown}: a vault {what} must be {_IDENTIFIER_RULE}")


def validate_binding(merchant_id: object, table: object, column: object) -> None:
    """Check the merchant id, table and column a value is bound to; raise with what to fix."""
    validate_merchant_id(merchant_id)
    validate_identifier("table", table)
    validate_identifier("column", column)


def validate_record_id(record_id: object) -> None:
    """Record ids identify a row (an order id, a line id); they are bound, not encrypted."""
    if not isinstance(record_id, str) or not record_id or len(record_id) > MAX_RECORD_ID_CHARS:
        raise ValueError(
            f"invalid record id ({_describe(record_id)}): it must be a non-empty string of at most "
            f"{MAX_RECORD_ID_CHARS} characters that identifies the row, such as the order id"
        )
