"""The check every rendered report passes before it leaves: none of the merchant's buyer PII values
appears in any of its files (issue 16: order ids and SKUs only).

The values are the vault's: the merchant's `core_buyer_pii` revealed for this purpose (audited, one
event per batch). A value whose key was shredded (purged, erased) is readable by nobody, the
renderer included, and is left out. The files are read as a person would: every cell of a
workbook, the text of every PDF page (pypdf). Matching is on whole words, case-insensitively, so a
five-digit postal code does not match inside an order id; findings name the file and the kind of
value (`buyer_email`, ...), never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from illuma_pipelines.core.tables import BUYER_PII, PII_COLUMNS
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.warehouse import Warehouse

SCAN_PURPOSE = "scan rendered reports for buyer PII"
# Columns that identify nobody alone (a country, a state) would match every report's text.
_SCANNED = tuple(c for c in PII_COLUMNS if c not in ("country_code", "state_or_region"))
_MIN_LENGTH = 4
_CHUNK = 500


@dataclass(frozen=True)
class Finding:
    file: str
    column: str


def buyer_pii_values(warehouse: Warehouse, vault, merchant_id: str, *, actor: str) -> dict[str, str]:
    """{lowercased value: its column} of the merchant's readable buyer PII."""
    schema = merchant_schema(merchant_id)
    with warehouse.merchant_scope(merchant_id) as conn:
        if not conn.table_exists(schema, BUYER_PII.name):
            return {}
        rows = conn.fetchall(
            f"SELECT channel, marketplace_order_id, {', '.join(_SCANNED)} FROM {schema}.{BUYER_PII.name}"
        )
    items = [
        (f"{row[0]}:{row[1]}", column, value)
        for row in rows
        for column, value in zip(_SCANNED, row[2:], strict=True)
        if value is not None
    ]
    found: dict[str, str] = {}
    for start in range(0, len(items), _CHUNK):
        for (_, column, _), plain in zip(items[start : start + _CHUNK], _reveal(vault, merchant_id, items[start : start + _CHUNK], actor), strict=True):
            if plain and len(plain.strip()) >= _MIN_LENGTH:
                found[plain.strip().lower()] = column
    return found


def _reveal(vault, merchant_id: str, items: list[tuple[str, str, str]], actor: str) -> list[str | None]:
    try:
        return vault.reveal_batch(merchant_id, BUYER_PII.name, items, actor=actor, purpose=SCAN_PURPOSE)
    except Exception:  # noqa: BLE001 - a shredded key in the batch: read what is still readable
        out: list[str | None] = []
        for item in items:
            try:
                out.extend(vault.reveal_batch(merchant_id, BUYER_PII.name, [item], actor=actor, purpose=SCAN_PURPOSE))
            except Exception:  # noqa: BLE001 - unreadable by anyone: nothing to find
                out.append(None)
        return out


def file_text(path: Path) -> str:
    """What a reader of the file sees: workbook cells, PDF page text; other files not at all."""
    if path.suffix == ".xlsx":
        from openpyxl import load_workbook

        book = load_workbook(path, read_only=True, data_only=True)
        try:
            return "\n".join(
                " ".join(str(v) for v in row if v is not None)
                for sheet in book.worksheets
                for row in sheet.iter_rows(values_only=True)
            )
        finally:
            book.close()
    if path.suffix == ".pdf":
        from pypdf import PdfReader

        return "\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
    if path.suffix in (".txt", ".csv", ".md", ".eml"):
        return path.read_text(errors="replace")
    return ""


_WORD = re.compile(r"[\w@.+-]+")


def _words(text: str) -> str:
    """The text as its words, lowercased, one space apart and around: phrases match whole."""
    return " " + " ".join(_WORD.findall(text.lower())) + " "


def scan_files(paths: Sequence[Path], values: dict[str, str]) -> list[Finding]:
    """The (file, PII column) pairs where a value appears in a file, as a whole word or phrase."""
    findings: list[Finding] = []
    needles = [(_words(v), column) for v, column in values.items()]
    for path in paths:
        words = _words(file_text(Path(path)))
        for needle, column in needles:
            if needle.strip() and needle in words:
                findings.append(Finding(Path(path).name, column))
    return findings


def scanned_files(paths: Iterable[Path]) -> list[Path]:
    """The files of a report the scan reads (what a person opens)."""
    return [p for p in paths if Path(p).suffix in (".xlsx", ".pdf")]
