"""Buyer PII sealed inside raw payloads: field-level vault encryption of JSON text, and its reverse.

A raw payload is the API's JSON as text (`raw_records.dumps_payload`). Sealing replaces the value
of every string field whose key is one of the channel's PII keys (illuma_pipelines/marketplaces.py)
with a vault ciphertext, wherever the key stands in the document, and leaves every other byte as it
was, exact numbers included. The ciphertext is bound to the merchant, the table, the column
`payload` and `<record id>/<JSON key>`, so it cannot be moved to another row or merchant. Unsealing
is the reverse and goes through `Vault.reveal_batch`: one audit event per batch (ADR 0007).

No Dagster here; the extract assets seal before they write, the core assets and the quality checks
unseal what they read.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from illuma_pipelines.marketplaces import marketplace
from illuma_pipelines.vault import CIPHERTEXT_PATTERN, Vault, key_version

PAYLOAD_COLUMN = "payload"
# Key labels (ADR 0007): `due:<day>` seals values that must be unreadable from that day on,
# `hold:<day>` values written that day whose due day is not known yet.
DUE, HOLD = "due", "hold"


def due_label(day: date) -> str:
    return f"{DUE}:{day.isoformat()}"


def hold_label(day: date) -> str:
    return f"{HOLD}:{day.isoformat()}"


def parse_label(label: str) -> tuple[str, date] | None:
    """(kind, day) of a due or hold label; None for any other label."""
    kind, _, rest = label.partition(":")
    if kind not in (DUE, HOLD):
        return None
    try:
        return kind, date.fromisoformat(rest)
    except ValueError:
        return None


@functools.cache
def _pattern(channel: str) -> re.Pattern[str]:
    keys = "|".join(re.escape(key) for key in marketplace(channel).pii_keys)
    # A PII key with a JSON string value: group 1 the key, group 2 the value's escaped text.
    return re.compile(r'"(' + keys + r')"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _plain(escaped: str) -> str:
    return json.loads(f'"{escaped}"') if "\\" in escaped else escaped


@dataclass(frozen=True)
class Sealed:
    """Sealed payload texts, in order, with the key version each row's values are under (None:
    the row held no PII value), and how many values were sealed."""

    texts: list[str]
    key_versions: list[int | None]
    values: int


def seal_payloads(
    vault: Vault,
    merchant_id: str,
    table: str,
    channel: str,
    rows: Sequence[tuple[str, str]],
    *,
    label: str,
) -> Sealed:
    """Seal the PII fields of (record id, payload text) rows under the key with `label`, all
    values of the call with one key version. Values sealed already are left as they are (a
    re-landed payload stays sealed once); empty strings hold nothing and stay."""
    pattern = _pattern(channel)
    spans: list[tuple[int, int, int]] = []  # (row, start, end) of each value to seal
    record_ids: list[str] = []
    plaintexts: list[str | None] = []
    for index, (record_id, text) in enumerate(rows):
        for match in pattern.finditer(text):
            escaped = match.group(2)
            if not escaped or CIPHERTEXT_PATTERN.fullmatch(escaped):
                continue
            spans.append((index, match.start(2), match.end(2)))
            record_ids.append(f"{record_id}/{match.group(1)}")
            plaintexts.append(_plain(escaped))
    texts = [text for _, text in rows]
    versions: list[int | None] = [None] * len(rows)
    if not spans:
        return Sealed(texts, versions, 0)
    sealed = vault.encrypt_column(merchant_id, table, PAYLOAD_COLUMN, record_ids, plaintexts, label=label)
    _splice(texts, spans, sealed)
    version = key_version(sealed[0])  # type: ignore[arg-type]
    for index, _, _ in spans:
        versions[index] = version
    return Sealed(texts, versions, len(spans))


def _splice(texts: list[str], spans: Sequence[tuple[int, int, int]], values: Sequence[str | None]) -> None:
    """Replace each (row, start, end) span of `texts` with its value, right to left per row so
    earlier offsets stay valid."""
    by_row: dict[int, list[tuple[int, int, str]]] = {}
    for (index, start, end), value in zip(spans, values, strict=True):
        by_row.setdefault(index, []).append((start, end, value or ""))
    for index, edits in by_row.items():
        text = texts[index]
        for start, end, value in sorted(edits, reverse=True):
            text = text[:start] + value + text[end:]
        texts[index] = text


def unsealed_pii_keys(channel: str, text: str) -> list[str]:
    """The PII keys of one payload whose value is plaintext (not empty, not a vault ciphertext)."""
    return [
        match.group(1)
        for match in _pattern(channel).finditer(text)
        if match.group(2) and not CIPHERTEXT_PATTERN.fullmatch(match.group(2))
    ]


def unseal_payloads(
    vault: Vault,
    merchant_id: str,
    table: str,
    channel: str,
    rows: Sequence[tuple[str, str]],
    *,
    actor: str,
    purpose: str,
) -> list[str]:
    """The (record id, sealed payload text) rows with their PII fields decrypted, in order, through
    one audited batch reveal. Plaintext values stay as they are (payloads landed before sealing);
    values whose key was destroyed are gone by design and come back as JSON null."""
    texts, _, _ = open_for_export(
        vault, merchant_id, table, [(channel, record_id, text) for record_id, text in rows],
        live_versions=vault.live_versions(merchant_id), withhold=set(), actor=actor, purpose=purpose,
    )
    return texts


def _sealed_spans(channel: str, rows: Sequence[tuple[str, str]]) -> tuple[list[tuple[int, int, int]], list[tuple[str, str, str | None]]]:
    """(row, start, end) spans and (record id, column, ciphertext) items of the sealed values."""
    spans: list[tuple[int, int, int]] = []
    items: list[tuple[str, str, str | None]] = []
    pattern = _pattern(channel)
    for index, (record_id, text) in enumerate(rows):
        for match in pattern.finditer(text):
            if CIPHERTEXT_PATTERN.fullmatch(match.group(2)):
                spans.append((index, match.start(2), match.end(2)))
                items.append((f"{record_id}/{match.group(1)}", PAYLOAD_COLUMN, match.group(2)))
    return spans, items


def reseal_payloads(
    vault: Vault,
    merchant_id: str,
    table: str,
    channel: str,
    rows: Sequence[tuple[str, str]],
    *,
    label: str,
) -> Sealed:
    """The rows with every sealed value moved under the current key with `label` (decrypted and
    sealed again, bound as before); values under it already stay. `values` counts those moved."""
    spans, items = _sealed_spans(channel, rows)
    texts = [text for _, text in rows]
    versions: list[int | None] = [None] * len(rows)
    if not items:
        return Sealed(texts, versions, 0)
    target = vault.ensure_key(merchant_id, label)
    moved = iter(vault.reseal_rows(merchant_id, table, items, label))
    values: list[str | None] = []
    count = 0
    for _, _, old in items:
        if key_version(old) == target:  # type: ignore[arg-type]
            values.append(old)
        else:
            values.append(next(moved)[2])
            count += 1
    for index, _, _ in spans:
        versions[index] = target
    _splice(texts, spans, values)
    return Sealed(texts, versions, count)


def open_for_export(
    vault: Vault,
    merchant_id: str,
    table: str,
    rows: Sequence[tuple[str, str, str]],
    *,
    live_versions: set[int],
    withhold: set[int],
    actor: str,
    purpose: str,
) -> tuple[list[str], int, int]:
    """(channel, record id, payload text) rows with their sealed fields opened through one audited
    batch reveal (the merchant's export; `unseal_payloads` for the pipeline); the fields of rows in
    `withhold` (PII past its retention) and of keys already destroyed become JSON null. Returns
    the texts, the values revealed and the values withheld."""
    spans: list[tuple[int, int, int]] = []
    values: list[str | None] = []
    items: list[tuple[str, str, str | None]] = []
    opened: list[int] = []
    for index, (channel, record_id, text) in enumerate(rows):
        for match in _pattern(channel).finditer(text):
            ciphertext = match.group(2)
            if not CIPHERTEXT_PATTERN.fullmatch(ciphertext):
                continue
            # The span with its quotes: a withheld value becomes null, an opened one a string.
            spans.append((index, match.start(2) - 1, match.end(2) + 1))
            # The version is the ciphertext's second dot-field (the vault checks the rest on opening).
            if index in withhold or int(ciphertext.split(".", 2)[1]) not in live_versions:
                values.append("null")
                continue
            opened.append(len(values))
            values.append(None)
            items.append((f"{record_id}/{match.group(1)}", PAYLOAD_COLUMN, ciphertext))
    texts = [text for _, _, text in rows]
    if items:
        plain = vault.reveal_batch(merchant_id, table, items, actor=actor, purpose=purpose)
        for slot, value in zip(opened, plain, strict=True):
            values[slot] = "null" if value is None else json.dumps(value, ensure_ascii=False)
    _splice(texts, spans, values)
    return texts, len(items), len(spans) - len(items)
