"""Merchant parts catalogs: CSV and XLSX files of parts, costs, fitment and supersessions, loaded
into the merchant's schema with their history.

A catalog file lists parts by SKU, one row per fitment (several rows of one SKU mean several
fitments; a part without fitment is one row). Columns are found by header name, case-insensitive
(`Unit Cost` is `unit_cost`); the names follow the Auto Care PIES/ACES fields our merchants
exchange. Columns we do not know are kept as JSON: `catalog_parts.extra`, or `catalog_fitment.extra`
for unknown `fitment_*` columns.

- A file describes the SKUs it lists and nothing else: SKUs it does not list keep their current
  version; a column the file does not have keeps the stored value of a SKU already in the catalog.
- `catalog_parts` keeps every version of a SKU (slowly changing dimension, type 2): a changed row
  closes the current version (`valid_to`) and opens a new one; an unchanged row changes nothing.
  A SKU's first version is valid from `FIRST_VERSION_FROM` (no earlier cost is known, so it stands
  for the past too: profit of an order placed before the first catalog still finds a cost); later
  versions from the load's effective time (the load time unless given).
- Supersessions: `superseded_by`, or OEM notation in the SKU cell (`138024 SUB= 145338`, also
  chained: `A SUB= B SUB= C`). Every chain is resolved to the current part (`current_sku`) across
  the whole catalog, not only the file; a cycle is refused (its rows rejected, naming the SKUs)
  and the rest loads. The master part is `BRAND|MPN` of the current part when its MPN is known
  (upper-cased, so channels and sources that spell a brand differently meet), else the current SKU.
- Amounts are exact decimals (a point, at most 4 decimal places), in the row's `cost_currency`
  (an ISO 4217 code), which is required when the file has that column and the row an amount.
- Bad rows (no SKU, a non-numeric or negative amount, an unknown currency, a malformed GTIN or
  year, `min_price` above `max_price`, a duplicate SKU with different data) go to
  `catalog_rejects` with the file, row number
  (the spreadsheet's: the header is row 1) and the reason in words; the rest loads. A file that is
  not a catalog (empty, binary, no `sku` column) raises `CatalogFileError` and changes nothing.
- `catalog_files` records each loaded file by SHA-256: the same file never loads twice.

Everything runs set-based: the file is parsed by pyarrow (CSV) or openpyxl (XLSX) into columns,
validated with vectorized string operations, compared with the stored versions in one read, and
written with `load_frame` (DuckDB's Arrow scan, PostgreSQL's COPY) and a handful of statements.
The fitment rows (most of a catalog's rows) start loading, on a thread of their own, as soon as
their own columns are checked, while the parts are validated; the few whose part is then refused
are deleted before the transaction ends. New parts that supersede nothing (most of a first file)
follow on that thread, in key order, while the others are resolved and compared.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import functools
import hashlib
import io
import json
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.normalize.money import ISO_4217_ACTIVE
from illuma_pipelines.warehouse import Connection, TableSpec, Warehouse, any_of, cols

# ------------------------------------------------------------------------------------ the tables

CATALOG_PARTS = TableSpec(
    "catalog_parts",
    cols(
        "sku text!", "brand text", "mpn text", "part_type text", "gtin text", "unit_cost money",
        "cost_currency text", "landed_cost money", "map_price money", "min_price money",
        "max_price money", "superseded_by text", "current_sku text!", "master_part text!",
        # The file (catalog_files.file_id: its name, digest and load time) and row the version's
        # data came from. A number, not the file's name, digest and load time on every row: those
        # were a third of a row's bytes as COPY reads them, and about 0.3 s of the 1 s a
        # 200,000-part first load spent in PostgreSQL's COPY of the parts (ADR 0008). Nullable
        # only so that older tables gain the column (_migrate_provenance); every row written has one.
        "extra text", "file_id integer", "source_row integer!",
        "valid_from timestamptz!", "valid_to timestamptz",
        # A digest of the part's own data (not its resolution or provenance): an unchanged row is
        # recognised by it without reading every column back.
        "content_hash text!",
    ),
    primary_key=("sku", "valid_from"),
)
# The current fitment of each SKU (no history: a file's SKUs get the fitment it lists). Its
# file is `file_id` in catalog_files (name, digest, load time): a catalog has several rows per
# part, and a small number keeps them narrow (the digest was 64 characters of each row, and as
# much text for the database to parse). Nullable only so that older tables gain the column
# (_migrate_provenance); every row written has one.
CATALOG_FITMENT = TableSpec(
    "catalog_fitment",
    cols(
        "sku text!", "year_from integer", "year_to integer", "make text", "model text",
        "engine text", "equipment_model text", "extra text", "file_id integer", "source_row integer!",
    ),
)
CATALOG_REJECTS = TableSpec(
    "catalog_rejects",
    cols(
        "source_file text!", "source_sha256 text!", "source_row integer!", "sku text",
        "reason text!", "rejected_at timestamptz!",
    ),
)
CATALOG_FILES = TableSpec(
    "catalog_files",
    cols(
        "sha256 text!", "name text!", "size_bytes bigint!", "loaded_at timestamptz!",
        "effective_from timestamptz!", "rows_read integer!", "rows_rejected integer!",
        "parts_new integer!", "parts_changed integer!", "parts_unchanged integer!",
        "parts_reresolved integer!", "fitment_rows integer!",
        # Numbers files in load order, for catalog_fitment (nullable: older tables gain it, and
        # _migrate_provenance numbers their rows).
        "file_id integer",
    ),
    primary_key=("sha256",),
)
CATALOG_TABLES = (CATALOG_PARTS, CATALOG_FITMENT, CATALOG_REJECTS, CATALOG_FILES)

# The first version of a SKU stands for all time before it (see the module docstring).
FIRST_VERSION_FROM = datetime(1970, 1, 1, tzinfo=UTC)

# ------------------------------------------------------------------------------------ the columns

TEXT_COLUMNS = ("brand", "mpn", "part_type", "gtin", "cost_currency", "superseded_by")
MONEY_COLUMNS = ("unit_cost", "landed_cost", "map_price", "min_price", "max_price")
PART_COLUMNS = (*TEXT_COLUMNS, *MONEY_COLUMNS)
# File column -> catalog_fitment column.
FITMENT_COLUMNS = {
    "fitment_year_from": "year_from",
    "fitment_year_to": "year_to",
    "fitment_make": "make",
    "fitment_model": "model",
    "fitment_engine": "engine",
    "equipment_model": "equipment_model",
}
KNOWN_COLUMNS = ("sku", *PART_COLUMNS, *FITMENT_COLUMNS)
CATALOG_SUFFIXES = (".csv", ".xlsx")

# Amounts: plain decimals (a point, no thousands separators or currency signs), at most 4
# decimal places and 14 integer digits: the warehouse's money type, DECIMAL(18,4).
_NUMBER_FULL = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$"
_MONEY_INT_DIGITS, _MONEY_DECIMALS = 14, 4
_MONEY_SIMPLE = rf"^\d{{1,{_MONEY_INT_DIGITS}}}(?:\.\d{{0,{_MONEY_DECIMALS}}})?$"
_SUB_TEXT = r"\bSUB\s*="
_SUB = re.compile(r"\s*\bSUB\s*=\s*", re.IGNORECASE)
_YEARS = (1900, 2100)
_SEP = "\x1f"  # joins a row's values for comparison; never in a cell we keep


class CatalogFileError(ValueError):
    """The file is not a catalog we can read: nothing of it was loaded."""


# ------------------------------------------------------------------------------------ reading


@dataclass
class RawCatalog:
    """A file's cells as stripped text ('' when empty), by normalized column name, with each
    row's spreadsheet row number; rows that could not be split into the header's columns are
    already rejects."""

    frame: pd.DataFrame
    rows: np.ndarray
    headers: dict[str, str]  # normalized name -> header as written
    rejects: list[tuple[int, str, str]] = field(default_factory=list)  # (row, sku, reason)
    sep_free: bool | None = None  # known to hold no _SEP (None: not known)


def normalize_header(name: object) -> str:
    text = "" if name is None else str(name)
    return re.sub(r"[\s\-]+", "_", text.strip().lstrip("\ufeff").strip()).lower()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# pyarrow parses a CSV in blocks of this size, in parallel.
CSV_BLOCK_BYTES = 1 << 24


def read_catalog(path: Path, data: bytes | None = None, *, block_size: int = CSV_BLOCK_BYTES) -> RawCatalog:
    """Parse a CSV or XLSX catalog file (by content: an XLSX is a zip), or raise CatalogFileError."""
    path = Path(path)
    if data is None:
        data = path.read_bytes()
    if not data or data.isspace():  # (strip() would copy the file)
        raise CatalogFileError(f"{path.name} is empty: a catalog needs a header row with a `sku` column and rows")
    if data[:4] == b"PK\x03\x04":
        return _read_xlsx(path, data)
    if path.suffix.lower() == ".xlsx":
        raise CatalogFileError(f"{path.name} is named .xlsx but is not an Excel workbook (no zip signature)")
    if b"\x00" in data[:65536]:
        raise CatalogFileError(
            f"{path.name} is binary (NUL bytes), not a CSV or XLSX catalog: export it as CSV (UTF-8) or XLSX"
        )
    return _read_csv(path, data, block_size)


def _encoding(path: Path, data: bytes) -> str:
    if data.isascii():  # (no copy, unlike decoding)
        return "utf-8"
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        # Excel on Windows saves "CSV" in the ANSI code page.
        try:
            data.decode("cp1252")
        except UnicodeDecodeError:
            raise CatalogFileError(
                f"{path.name} is neither UTF-8 nor Windows-1252 text: save it as CSV UTF-8 or XLSX"
            ) from None
        return "cp1252"


def _header(path: Path, names: Sequence[object]) -> list[str]:
    normalized = [normalize_header(n) for n in names]
    # Trailing unnamed columns (a spreadsheet's stray empty cells) are dropped later; named ones count.
    seen: dict[str, str] = {}
    for raw, name in zip(names, normalized, strict=True):
        if not name:
            continue
        if name in seen:
            raise CatalogFileError(
                f"{path.name}: columns {seen[name]!r} and {raw!r} are the same column ({name}); keep one"
            )
        seen[name] = str(raw)
    if "sku" not in seen:
        shown = ", ".join(repr(str(n)) for n in names[:12] if str(n or "").strip())
        raise CatalogFileError(
            f"{path.name} is not a catalog: no `sku` column in its first row (found: {shown or 'nothing'}). "
            f"The header row names the columns: sku (required), {', '.join(KNOWN_COLUMNS[1:])}"
        )
    return normalized


def _read_csv(path: Path, data: bytes, block_size: int) -> RawCatalog:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    encoding = _encoding(path, data)
    text_head = data[:65536].decode(encoding, errors="replace").lstrip("\ufeff")
    first = next(csv.reader(io.StringIO(text_head)), [])
    names = _header(path, first)
    irregular: list[Any] = []

    def invalid(row: Any) -> str:
        irregular.append(row)
        return "skip"

    # Column names pyarrow can take: positions, since headers may repeat blanks.
    keys = [f"c{i}" for i in range(len(names))]

    def parse(newlines_in_values: bool) -> Any:
        irregular.clear()
        return pcsv.read_csv(
            pa.BufferReader(data),
            read_options=pcsv.ReadOptions(column_names=keys, skip_rows=1, encoding=encoding, block_size=block_size),
            parse_options=pcsv.ParseOptions(
                newlines_in_values=newlines_in_values, ignore_empty_lines=False, invalid_row_handler=invalid
            ),
            convert_options=pcsv.ConvertOptions(
                # large_string: pandas' own string layout, so no copy is made for the frame.
                column_types={k: pa.large_string() for k in keys}, strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
            # The parser's transient buffers go back to the system when freed; Arrow's default
            # pool (mimalloc) would keep them, adding about 4 times the file to the peak memory.
            memory_pool=pa.system_memory_pool(),
        )

    # Quoted line breaks are parsed either way; without `newlines_in_values` pyarrow splits the
    # file into blocks at any line break, faster, and a block boundary inside a quoted value leaves
    # a row of the wrong width (or an error): then the careful parse, then row by row.
    table = None
    if len(keys) > 1:
        with contextlib.suppress(pa.ArrowInvalid):
            table = parse(False)
    if table is None or irregular:
        try:
            table = parse(True)
        except pa.ArrowInvalid as exc:
            raise CatalogFileError(f"{path.name} cannot be read as CSV: {exc}") from None
    if irregular:
        # Rows of the wrong width shift the row numbers pyarrow would give: read the file again
        # row by row, numbering each record, and reject those rows by number.
        return _rows_to_raw(path, names, _csv_records(data.decode(encoding).lstrip("\ufeff")))
    frame = table.to_pandas()
    frame.columns = names
    raw = _finish(path, names, frame, np.arange(2, len(frame) + 2, dtype=np.int64), [])
    raw.sep_free = _SEP.encode() not in data  # the same byte in UTF-8 and Windows-1252
    return raw


def _csv_records(text: str) -> Iterable[list[str]]:
    reader = csv.reader(io.StringIO(text))
    next(reader, None)
    yield from reader


def _read_xlsx(path: Path, data: bytes) -> RawCatalog:
    import openpyxl

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise CatalogFileError(f"{path.name} is a zip file but not a readable Excel workbook: {exc}") from None
    try:
        sheet = book.worksheets[0] if book.worksheets else None
        if sheet is None:
            raise CatalogFileError(f"{path.name} has no worksheet")
        rows = sheet.iter_rows(values_only=True)
        first = next(rows, None)
        if first is None:
            raise CatalogFileError(f"{path.name} is empty: its first sheet has no rows")
        names = _header(path, list(first))
        gtin = names.index("gtin") if "gtin" in names else -1
        records = ([_cell(v, i == gtin) for i, v in enumerate(row)] for row in rows)
        return _rows_to_raw(path, names, records)
    finally:
        book.close()


def _cell(value: object, is_gtin: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and is_gtin:
        # Excel turns a typed GTIN into a number and drops its leading zeros; a GTIN-12 (UPC)
        # is the commonest in our merchants' catalogs, and zeros on the left never change a
        # GTIN's meaning or check digit.
        return str(value).zfill(12)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _rows_to_raw(path: Path, names: list[str], records: Iterable[list[str]]) -> RawCatalog:
    width = len(names)
    kept: list[list[str]] = []
    numbers: list[int] = []
    rejects: list[tuple[int, str, str]] = []
    sku_at = names.index("sku")
    for number, record in enumerate(records, start=2):
        if len(record) > width and any(str(v).strip() for v in record[width:]):
            sku = str(record[sku_at]).strip() if len(record) > sku_at else ""
            rejects.append((number, sku, f"the row has {len(record)} values but the header has {width} columns"))
            continue
        record = list(record[:width]) + [""] * (width - len(record))
        kept.append(record)
        numbers.append(number)
    frame = pd.DataFrame(kept, columns=[f"c{i}" for i in range(width)], dtype="str")
    frame.columns = names
    return _finish(path, names, frame, np.asarray(numbers, dtype=np.int64), rejects)


_SPACES = (" ", "\t", "\r", "\n", "\v", "\f", "\xa0")


def _needs_trim(values: pd.Series) -> bool:
    """Whether any value starts or ends with white space (_SPACES), read from the first and last
    bytes of each value in the UTF-8 buffer, without a copy of the strings."""
    import pyarrow as pa

    array = _arrow(values)
    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
    single = np.zeros(256, dtype=bool)  # ASCII white space, by byte
    single[[ord(c) for c in _SPACES if ord(c) < 0x80]] = True
    for chunk in chunks:
        if not len(chunk) or chunk.buffers()[2] is None:
            continue
        data = np.frombuffer(chunk.buffers()[2], dtype=np.uint8)
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[chunk.offset : chunk.offset + len(chunk) + 1]
        start, end = offsets[:-1], offsets[1:]
        filled = end > start
        start, end = start[filled], end[filled]
        first, last = data[start], data[end - 1]
        if single[first].any() or single[last].any():
            return True
        # U+00A0 (no-break space) is the two bytes C2 A0.
        heads, tails = first == 0xC2, last == 0xA0
        if heads.any() and (data[np.minimum(start[heads] + 1, len(data) - 1)] == 0xA0).any():
            return True
        if tails.any() and ((end[tails] - start[tails] >= 2) & (data[np.maximum(end[tails] - 2, 0)] == 0xC2)).any():
            return True
    return False


def _finish(path: Path, names: list[str], frame: pd.DataFrame, rows: np.ndarray, rejects: list) -> RawCatalog:
    named = [n for n in names if n]
    frame = frame.loc[:, [bool(n) for n in names]]
    frame.columns = named
    for name in named:
        values = frame[name]
        if values.dtype != "str":
            values = frame[name] = values.astype("str")
        # Only columns with a value to trim get a trimmed copy (a catalog's columns rarely have one).
        if _needs_trim(values):
            frame[name] = values.str.strip()
    # Blank rows: every cell empty (the first column with a value in every row settles it).
    blank = np.ones(len(frame), dtype=bool)
    for name in named:
        if not blank.any():
            break
        blank &= (frame[name] == "").to_numpy()
    if blank.any():
        frame, rows = frame.loc[~blank].reset_index(drop=True), rows[~blank]
    if not len(frame) and not rejects:
        raise CatalogFileError(f"{path.name} has a header but no rows")
    return RawCatalog(frame, rows, {n: n for n in named}, rejects)


# ------------------------------------------------------------------------------------ validating


class _Reasons:
    """Reasons per row (positions of the frame), gathered by vectorized checks."""

    def __init__(self, n: int) -> None:
        self.by_row: dict[int, list[str]] = {}
        self.n = n

    def add(self, mask: np.ndarray | pd.Series, message: Any) -> None:
        mask = np.asarray(mask, dtype=bool)
        for pos in np.flatnonzero(mask):
            self.by_row.setdefault(int(pos), []).append(message(int(pos)) if callable(message) else message)

    def mask(self) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        out[list(self.by_row)] = True
        return out


def _arrow(values: pd.Series) -> Any:
    import pyarrow as pa

    array = pa.array(values)
    return array if array.type == pa.large_string() else array.cast(pa.large_string())


def _bools(array: Any) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


def _matches(values: pd.Series, pattern: str, ignore_case: bool = False) -> np.ndarray:
    """Whether each value contains a match of `pattern` (RE2, vectorized by Arrow)."""
    import pyarrow.compute as pc

    return _bools(pc.match_substring_regex(_arrow(values), pattern, ignore_case=ignore_case))


def _money(values: pd.Series, name: str, reasons: _Reasons) -> pd.Series:
    """Canonical amounts ('12.5000') for valid values, '' for empty or rejected ones. Checked once
    per distinct value (a part's rows repeat its amounts, and catalogs reuse price points)."""
    codes, uniques = pd.factorize(values)
    distinct = pd.Series(uniques, dtype="str")
    found = _Reasons(len(distinct))
    canonical = _money_distinct(distinct, name, found)
    if found.by_row:
        bad = np.zeros(len(distinct), dtype=bool)
        bad[list(found.by_row)] = True
        where = np.flatnonzero(bad[codes])
        for pos in where:
            reasons.by_row.setdefault(int(pos), []).extend(found.by_row[int(codes[pos])])
    import pyarrow as pa

    return pd.Series(pd.array(_arrow(canonical).take(pa.array(codes)), dtype="str"), index=values.index)


def _money_distinct(values: pd.Series, name: str, reasons: _Reasons) -> pd.Series:
    import pyarrow as pa
    import pyarrow.compute as pc

    present = (values != "").to_numpy()
    if not present.any():
        return values
    array = _arrow(values)
    # The common case, every amount plain (digits, a point, at most 4 decimals, at most 14 integer
    # digits): Arrow's exact decimal cast gives the canonical text in two kernels.
    simple = _bools(pc.match_substring_regex(array, _MONEY_SIMPLE))
    if (simple | ~present).all():
        as_decimal = pc.cast(pc.if_else(present, array, "0"), pa.decimal128(_MONEY_INT_DIGITS + _MONEY_DECIMALS, _MONEY_DECIMALS))
        text = pc.cast(as_decimal, pa.large_string())
        return pd.Series(pd.array(pc.if_else(present, text, ""), dtype="str"), index=values.index)
    ok = _bools(pc.match_substring_regex(array, _NUMBER_FULL)) & present
    reasons.add(present & ~ok, lambda i: f"{name} {values.iat[i]!r} is not a number (write e.g. 12.50: digits and a decimal point)")
    negative = _bools(pc.starts_with(array, "-"))
    body = pc.utf8_ltrim(array, characters="+-")
    whole = pc.utf8_ltrim(pc.replace_substring_regex(body, r"\..*$", ""), characters="0")
    frac = pc.replace_substring_regex(body, r"^[^.]*\.?", "")
    zero = _bools(pc.equal(whole, "")) & ~_bools(pc.match_substring_regex(frac, "[1-9]"))
    reasons.add(ok & negative & ~zero, lambda i: f"{name} {values.iat[i]} is negative")
    too_fine = _bools(pc.greater(pc.utf8_length(frac), _MONEY_DECIMALS)) & ok
    reasons.add(too_fine, lambda i: f"{name} {values.iat[i]} has more than {_MONEY_DECIMALS} decimal places")
    too_big = _bools(pc.greater(pc.utf8_length(whole), _MONEY_INT_DIGITS)) & ok
    reasons.add(too_big, lambda i: f"{name} {values.iat[i]} is too large (at most {_MONEY_INT_DIGITS} digits before the point)")
    canonical = pc.binary_join_element_wise(
        pc.if_else(pc.equal(whole, ""), "0", whole),
        pc.utf8_rpad(pc.utf8_slice_codeunits(frac, 0, _MONEY_DECIMALS), _MONEY_DECIMALS, "0"),
        pa.scalar(".", pa.large_string()),
    )
    keep = ok & (~negative | zero)
    return pd.Series(pd.array(pc.if_else(keep, canonical, ""), dtype="str"), index=values.index)


def _isin(values: pd.Series | Sequence[str], universe: Iterable[str]) -> np.ndarray:
    """Membership as a boolean array, through Arrow's hashed lookup."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = pa.array(values) if isinstance(values, pd.Series) else pa.array(list(values), type=pa.large_string())
    if isinstance(universe, (pd.Series, pd.Index)):
        pool = pa.array(pd.Series(universe, dtype="str"))
    else:
        pool = pa.array(list(universe), type=pa.large_string())
    return _bools(pc.is_in(array.cast(pa.large_string()), value_set=pool.cast(pa.large_string())))


def _greater(left: pd.Series, right: pd.Series, both: np.ndarray) -> np.ndarray:
    """Where both canonical amounts are present (`both`), whether `left` is above `right`: as
    exact decimals, through Arrow (the others compare as 0 > 0)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    exact = pa.decimal128(_MONEY_INT_DIGITS + _MONEY_DECIMALS, _MONEY_DECIMALS)
    mask = pa.array(both)
    left_, right_ = (pc.cast(pc.if_else(mask, _arrow(v), "0"), exact) for v in (left, right))
    return both & _bools(pc.greater(left_, right_))


def _gtin_problems(values: pd.Series, reasons: _Reasons) -> None:
    present = (values != "").to_numpy()
    if not present.any():
        return
    digits = _matches(values, r"^\d+$")
    length = values.str.len().to_numpy()
    shaped = present & digits & np.isin(length, (8, 12, 13, 14))
    reasons.add(
        present & ~shaped,
        lambda i: f"gtin {values.iat[i]!r} is not a GTIN (8, 12, 13 or 14 digits)",
    )
    if not shaped.any():
        return
    import pyarrow as pa
    import pyarrow.compute as pc

    # Digits only, each padded to 14: the values' bytes, back to back, are a grid of 14 columns.
    padded = pc.utf8_lpad(_arrow(values).filter(pa.array(shaped)), 14, "0")
    if isinstance(padded, pa.ChunkedArray):
        padded = padded.combine_chunks()
    offsets = np.frombuffer(padded.buffers()[1], dtype=np.int64)[padded.offset : padded.offset + len(padded) + 1]
    data = np.frombuffer(padded.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    grid = data.reshape(-1, 14).astype(np.int64) - 48
    weights = np.array([3, 1] * 6 + [3], dtype=np.int64)
    expected = (10 - (grid[:, :13] @ weights) % 10) % 10
    wrong = np.zeros(len(values), dtype=bool)
    wrong[np.flatnonzero(shaped)] = expected != grid[:, 13]
    reasons.add(wrong, lambda i: f"gtin {values.iat[i]} has a wrong check digit")


def _years(values: pd.Series, name: str, reasons: _Reasons) -> pd.Series:
    import pyarrow.compute as pc

    present = (values != "").to_numpy()
    ok = _matches(values, r"^\d{4}$") & present
    number = pc.cast(pc.if_else(ok, _arrow(values), "0"), "int32").to_numpy()
    ok &= (number >= _YEARS[0]) & (number <= _YEARS[1])
    reasons.add(present & ~ok, lambda i: f"{name} {values.iat[i]!r} is not a year ({_YEARS[0]}-{_YEARS[1]})")
    return pd.Series(number, dtype="Int64").where(ok, pd.NA)


def split_supersession(cell: str) -> list[str]:
    """`138024 SUB= 145338` -> ['138024', '145338']; a plain SKU -> [sku]."""
    return [p.strip() for p in _SUB.split(cell)] if _SUB.search(cell) else [cell]


@dataclass
class _Validated:
    parts: pd.DataFrame  # one row per SKU: sku, part columns (canonical), source_row, extra, content_hash
    fitment: _Fitment  # every row's fitment: kept_fitment() picks the rows that stay
    good_rows: np.ndarray  # positions (in the file's frame) of the rows whose part may load
    rejects: list[tuple[int, str, str]]  # (row, sku, reason)
    present: set[str]  # part columns the file has
    has_fitment: bool
    implied: dict[str, str]  # supersessions named only inside SUB= chains (B -> C of `A SUB= B SUB= C`)
    rows_read: int
    rows_of_sku: pd.DataFrame  # sku, _row of the rows kept


def _rows_of(frame: pd.DataFrame, skus: Iterable[str]) -> dict[str, list[int]]:
    """The row numbers of some SKUs' rows (few SKUs: conflicts, cycles)."""
    picked = frame.loc[_isin(frame["sku"], skus), ["sku", "_row"]]
    out: dict[str, list[int]] = {}
    for sku, row in zip(picked["sku"].tolist(), picked["_row"].tolist(), strict=True):
        out.setdefault(sku, []).append(int(row))
    return out


def _extra_columns(columns: Iterable[str]) -> tuple[list[str], list[str]]:
    """The file's columns we do not know: (part columns, fitment columns), kept as JSON."""
    columns = list(columns)
    fit_extra = [c for c in columns if c.startswith("fitment_") and c not in FITMENT_COLUMNS]
    return [c for c in columns if c not in KNOWN_COLUMNS and c not in fit_extra], fit_extra


@dataclass
class _Fitment:
    """Every row's fitment (positions of the raw frame), checked before the parts are, so that its
    load can start while they are: the rows `streamable` may load at once (a SKU, good years, some
    fitment); validation later names those of them that must go (their part was refused)."""

    rows: pd.DataFrame  # sku, fitment columns, extra, source_row
    reasons: _Reasons  # the fitment's own problems (years)
    streamable: np.ndarray
    has_fitment: bool

    @property
    def fields(self) -> list[str]:
        return [*FITMENT_COLUMNS.values(), "extra"]


def _subbed(values: pd.Series) -> np.ndarray:
    """Whether each value holds OEM `SUB=` notation: the regex reads only the values with an `=`
    (a substring search is several times faster, and few cells have one)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = _arrow(values)
    out = _bools(pc.match_substring(array, "="))
    if out.any():
        where = np.flatnonzero(out)
        out[where] = _bools(pc.match_substring_regex(array.take(pa.array(where)), _SUB_TEXT, ignore_case=True))
    return out


def _row_skus(values: pd.Series) -> pd.Series:
    """Each row's SKU as validation reads it: the first part number of a `SUB=` chain."""
    subbed = _subbed(values)
    if not subbed.any():
        return values.reset_index(drop=True)
    import pyarrow as pa
    import pyarrow.compute as pc

    where = pa.array(np.flatnonzero(subbed))
    # Each distinct cell split once (a part's fitment rows repeat it).
    cells = _arrow(values).take(where).to_pylist()
    head_of = {v: next((p for p in split_supersession(v) if p), "") for v in set(cells)}
    heads = [head_of[v] for v in cells]
    array = pc.replace_with_mask(_arrow(values), pa.array(subbed), pa.array(heads, type=pa.large_string()))
    return pd.Series(pd.array(array, dtype="str"))


def fitment_rows(raw: RawCatalog) -> _Fitment:
    """The fitment columns of every row, their own checks, and which rows may load before the
    parts are validated."""
    frame = raw.frame
    n = len(frame)
    _, fit_extra_cols = _extra_columns(frame.columns)
    reasons = _Reasons(n)
    sku = _row_skus(frame["sku"])
    fit = pd.DataFrame({"sku": sku})
    for c, target in FITMENT_COLUMNS.items():
        if c.startswith("fitment_year"):
            fit[target] = _years(frame[c], c, reasons) if c in frame.columns else pd.Series([pd.NA] * n, dtype="Int64")
        else:
            fit[target] = frame[c].reset_index(drop=True) if c in frame.columns else ""
    yf, yt = fit["year_from"], fit["year_to"]
    order = (yf.notna() & yt.notna()).to_numpy()
    if order.any():
        reasons.add(order & (yf.fillna(0) > yt.fillna(0)).to_numpy(),
                    lambda i: f"fitment_year_from {yf.iat[i]} is after fitment_year_to {yt.iat[i]}")
    fit["extra"] = _json_objects(frame, fit_extra_cols).reset_index(drop=True) if fit_extra_cols else ""
    fit["source_row"] = raw.rows
    streamable = (sku != "").to_numpy() & ~reasons.mask()
    any_fit = np.zeros(n, dtype=bool)
    for f in (*FITMENT_COLUMNS.values(), "extra"):
        any_fit |= fit[f].notna().to_numpy() if f.startswith("year") else (fit[f] != "").to_numpy()
    return _Fitment(fit, reasons, streamable & any_fit, any(c in frame.columns for c in FITMENT_COLUMNS))


def validate(raw: RawCatalog, fitment: _Fitment | None = None) -> _Validated:
    """Check every row; split the good ones into parts (one per SKU) and fitment rows.

    A part's rows repeat its data once per fitment, so the part columns are checked once per
    distinct row (`codes` maps each row to its distinct part row) and the fitment columns per row
    (`fitment`, from fitment_rows: computed here when not given)."""
    import pyarrow as pa

    frame = raw.frame
    n = len(frame)
    if fitment is None:
        fitment = fitment_rows(raw)
    part_extra_cols, _ = _extra_columns(frame.columns)
    in_file = ["sku", *(c for c in PART_COLUMNS if c in frame.columns), *part_extra_cols]
    codes = _row_codes(frame, in_file, raw.sep_free)
    _, first = np.unique(codes, return_index=True)  # codes number rows by first appearance
    distinct = frame[in_file].iloc[first].reset_index(drop=True)  # (the fitment columns are checked)
    content, found, implied, present = _validate_parts(distinct, part_extra_cols)

    reasons = _Reasons(n)
    if found.by_row:
        flagged = np.zeros(len(distinct), dtype=bool)
        flagged[list(found.by_row)] = True
        for pos in np.flatnonzero(flagged[codes]):
            reasons.by_row[int(pos)] = list(found.by_row[int(codes[pos])])
    for pos, found_here in fitment.reasons.by_row.items():
        reasons.by_row.setdefault(pos, []).extend(found_here)
    take = pa.array(codes)
    sku = pd.Series(pd.array(_arrow(content["sku"]).take(take), dtype="str"))

    bad = reasons.mask()
    rejects = [(int(raw.rows[p]), str(sku.iat[p]), "; ".join(r)) for p, r in sorted(reasons.by_row.items())]
    good_rows = np.flatnonzero(~bad)
    good_codes, first_good = np.unique(codes[good_rows], return_index=True)
    content["_row"] = -1
    content.loc[good_codes, "_row"] = raw.rows[good_rows[first_good]]
    # (Commonly every distinct row is good: no copy of them then.)
    candidates = content if len(good_codes) == len(content) else content.iloc[good_codes]
    all_good = len(good_rows) == n
    rows_of_sku = pd.DataFrame({"sku": sku if all_good else sku.iloc[good_rows].reset_index(drop=True),
                                "_row": raw.rows if all_good else raw.rows[good_rows]})
    # A SKU with two different distinct rows (once amounts are canonical: 12.5 is 12.50) conflicts.
    # (Commonly each SKU has one distinct row: nothing to compare.)
    import pyarrow.compute as pc

    unique_skus = pc.count_distinct(_arrow(candidates["sku"])).as_py() == len(candidates)
    conflicted = []
    if not unique_skus:
        # A row's own data, as one string: equal rows of one SKU agree, different ones conflict.
        joined = _join(candidates, [*PART_COLUMNS, "_extra"])
        pairs = pd.DataFrame({"sku": pd.factorize(candidates["sku"])[0], "data": pd.factorize(joined)[0]})
        pairs = pairs.drop_duplicates()
        twice = pairs["sku"].duplicated(keep=False).to_numpy()
        conflicted = candidates["sku"].iloc[pairs.index[twice]].unique().tolist() if twice.any() else []
    if conflicted:
        rows_of = _rows_of(rows_of_sku, conflicted)
        for sku_value in conflicted:
            rows = rows_of[sku_value]
            shown = ", ".join(str(r) for r in rows[:6]) + ("..." if len(rows) > 6 else "")
            diff = _difference(candidates.loc[candidates["sku"] == sku_value])
            for r in rows:
                rejects.append((int(r), sku_value, f"SKU {sku_value} appears in rows {shown} with different data ({diff}); none of them loaded"))
        candidates = candidates.loc[~_isin(candidates["sku"], conflicted)]
        keep = ~_isin(rows_of_sku["sku"], conflicted)
        rows_of_sku, good_rows = rows_of_sku.loc[keep], good_rows[keep]
    parts = candidates if unique_skus else candidates.drop_duplicates("sku")
    return _Validated(
        parts=parts.reset_index(drop=True), fitment=fitment, good_rows=good_rows, rejects=raw.rejects + rejects,
        present=present | ({"extra"} if part_extra_cols else set()), has_fitment=fitment.has_fitment,
        implied=implied, rows_read=n + len(raw.rejects), rows_of_sku=rows_of_sku,
    )


def kept_fitment(checked: _Validated) -> pd.DataFrame:
    """The fitment rows that stay (sku, fitment columns; indexed by position in the file's frame):
    the good rows with some fitment, each distinct fitment of a SKU once (its first good row).
    The parts do not need it: the import computes it once they have started loading."""
    fitment = checked.fitment
    good_fit = np.zeros(len(fitment.streamable), dtype=bool)
    good_fit[checked.good_rows] = True
    good_fit &= fitment.streamable
    fit = fitment.rows.loc[good_fit, ["sku", *fitment.fields]]
    return fit.loc[~_duplicated(fit, ["sku", *fitment.fields])]


def _duplicated(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Rows equal (in `columns`) to an earlier row, as a boolean array."""
    if not len(frame):
        return np.zeros(0, dtype=bool)
    return frame.duplicated(columns).to_numpy()


def _row_codes(frame: pd.DataFrame, columns: list[str], sep_free: bool | None = None) -> np.ndarray:
    """Equal codes for equal rows of `columns`, numbered by first appearance.

    Each row's values joined by _SEP and hashed once (one Arrow kernel each), exact when no value
    holds _SEP; else column by column, each pair (codes so far, column's code) renumbered, so the
    codes stay below the row count."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = [_arrow(frame[c]) for c in columns]
    if sep_free is None:
        sep_free = not any(pc.any(pc.match_substring(a, _SEP)).as_py() for a in arrays)
    if sep_free:
        # A row equal to the one before it (a part's fitment rows, commonly) takes its code: only
        # the others are joined and encoded.
        n = len(frame)
        same = np.ones(max(n - 1, 0), dtype=bool)
        for a in arrays:
            if n > 1 and same.any():
                same &= _bools(pc.equal(a.slice(1), a.slice(0, n - 1)))
        heads = np.flatnonzero(np.concatenate(([True], ~same))) if n else np.zeros(0, dtype=np.int64)
        if "sku" in columns and len(heads):
            # Commonly each SKU's rows are together and agree: the runs then have distinct SKUs,
            # so they are distinct rows, numbered in order, without joining or hashing them.
            skus = arrays[columns.index("sku")]
            run_skus = skus.take(pa.array(heads)) if len(heads) < n else skus
            if pc.count_distinct(run_skus).as_py() == len(heads):
                return np.repeat(np.arange(len(heads), dtype=np.int64), np.diff(np.append(heads, n)))
        if len(heads) < n:
            arrays = [a.take(pa.array(heads)) for a in arrays]
        joined = pc.binary_join_element_wise(*arrays, pa.scalar(_SEP, pa.large_string())) if len(arrays) > 1 else arrays[0]
        # Arrow numbers a dictionary's values by first appearance.
        encoded = pc.dictionary_encode(joined)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        return np.repeat(codes, np.diff(np.append(heads, n))) if len(heads) < n else codes
    codes = np.zeros(len(frame), dtype=np.int64)
    for c in columns:
        column, uniques = pd.factorize(frame[c])
        codes, _ = pd.factorize(codes * (len(uniques) + 1) + np.asarray(column, dtype=np.int64))
        codes = np.asarray(codes, dtype=np.int64)
    return codes


def _validate_parts(frame: pd.DataFrame, extra_cols: list[str]) -> tuple[pd.DataFrame, _Reasons, dict[str, str], set[str]]:
    """The part columns of distinct rows: canonical values, reasons per row, the supersessions
    named only inside SUB= chains, and which part columns the file has."""
    n = len(frame)
    reasons = _Reasons(n)
    present = {c for c in PART_COLUMNS if c in frame.columns}
    col = {c: (frame[c] if c in frame.columns else pd.Series([""] * n, dtype="str")) for c in PART_COLUMNS}
    sku = frame["sku"]
    superseded = col["superseded_by"]
    implied: dict[str, str] = {}
    subbed = _subbed(sku) | _subbed(superseded)
    if subbed.any():
        import pyarrow as pa
        import pyarrow.compute as pc

        # Only the rows with SUB= go through Python; the others keep their cells.
        where = np.flatnonzero(subbed)
        take = pa.array(where)
        old_skus, old_targets = _arrow(sku).take(take).to_pylist(), _arrow(superseded).take(take).to_pylist()
        skus, targets = dict(zip(where.tolist(), old_skus, strict=True)), dict(zip(where.tolist(), old_targets, strict=True))
        for pos in where.tolist():
            chain = [p for p in split_supersession(skus[pos]) if p]
            named = [p for p in split_supersession(targets[pos]) if p]
            if len(chain) > 1 and named and named[0] != chain[1]:
                reasons.by_row.setdefault(int(pos), []).append(
                    f"the SKU cell says {chain[0]} SUB= {chain[1]} but superseded_by says {named[0]}"
                )
                continue
            if len(chain) == 1 and named:
                chain = chain + named
            skus[pos] = chain[0] if chain else ""
            targets[pos] = chain[1] if len(chain) > 1 else ""
            for a, b in zip(chain[1:], chain[2:], strict=False):
                implied.setdefault(a, b)
        mask = pa.array(subbed)

        def replaced(values: pd.Series, new: dict[int, str]) -> pd.Series:
            array = pc.replace_with_mask(_arrow(values), mask, pa.array(list(new.values()), type=pa.large_string()))
            return pd.Series(pd.array(array, dtype="str"))

        sku, superseded = replaced(sku, skus), replaced(superseded, targets)
        present.add("superseded_by")
    reasons.add((sku == "").to_numpy(), "no SKU")

    money = {c: _money(col[c], c, reasons) for c in MONEY_COLUMNS}
    currency = col["cost_currency"].str.upper()
    has_currency = (currency != "").to_numpy()
    reasons.add(
        has_currency & ~_isin(currency, ISO_4217_ACTIVE),
        lambda i: f"cost_currency {col['cost_currency'].iat[i]!r} is not an ISO 4217 currency code",
    )
    any_money = np.zeros(n, dtype=bool)
    for c in MONEY_COLUMNS:
        any_money |= (col[c] != "").to_numpy()
    if "cost_currency" in present:
        reasons.add(any_money & ~has_currency, "amounts without a cost_currency (add the currency, e.g. USD)")
    both = ((money["min_price"] != "") & (money["max_price"] != "")).to_numpy()
    if both.any():
        above = _greater(money["min_price"], money["max_price"], both)
        reasons.add(above, lambda i: f"min_price {col['min_price'].iat[i]} is above max_price {col['max_price'].iat[i]}")
    _gtin_problems(col["gtin"], reasons)

    texts = {c: col[c] for c in TEXT_COLUMNS}
    texts["cost_currency"] = currency
    texts["superseded_by"] = superseded
    content = pd.DataFrame({"sku": sku, **texts, **money}).reset_index(drop=True)
    content["_extra"] = _json_objects(frame, extra_cols) if extra_cols else ""
    return content, reasons, implied, present


def _join(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """The values of `columns`, joined by _SEP, per row (one Arrow kernel)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = [_arrow(frame[c].astype("str")) for c in columns]
    joined = pc.binary_join_element_wise(*arrays, pa.scalar(_SEP, pa.large_string()))
    return pd.Series(pd.array(joined, dtype="str"), index=frame.index)


_NEEDS_ESCAPE = r'["\\\x00-\x1f]'


def _json_objects(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Each row's non-empty cells of `columns` as a JSON object with sorted keys ('' when none),
    built column-wise by Arrow kernels: only values that need escaping go through json.dumps."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def text(value: str) -> Any:
        return pa.scalar(value, pa.large_string())

    body = None
    for c in sorted(columns):
        values = _arrow(frame[c])
        quoted = pc.binary_join_element_wise(text('"'), values, text('"'), text(""))
        special = _bools(pc.match_substring_regex(values, _NEEDS_ESCAPE))
        if special.any():
            positions = np.flatnonzero(special)
            escaped = [json.dumps(v, ensure_ascii=False) for v in values.take(pa.array(positions)).to_pylist()]
            quoted = quoted.to_pylist()
            for pos, value in zip(positions.tolist(), escaped, strict=True):
                quoted[pos] = value
            quoted = pa.array(quoted, type=pa.large_string())
        empty = pc.equal(values, text(""))
        piece = pc.if_else(empty, text(""), pc.binary_join_element_wise(text(json.dumps(c) + ": "), quoted, text("")))
        if body is None:
            body = piece
        else:
            glue = pc.if_else(pc.and_(pc.not_equal(body, text("")), pc.invert(empty)), text(", "), text(""))
            body = pc.binary_join_element_wise(body, glue, piece, text(""))
    if body is None:
        return pd.Series([""] * len(frame), dtype="str", index=frame.index)
    out = pc.if_else(pc.equal(body, text("")), text(""), pc.binary_join_element_wise(text("{"), body, text("}"), text("")))
    return pd.Series(pd.array(out, dtype="str"), index=frame.index)


def _difference(rows: pd.DataFrame) -> str:
    for c in (*PART_COLUMNS, "_extra"):
        seen = list(dict.fromkeys(rows[c].astype("str")))
        if len(seen) > 1:
            return f"{'extra columns' if c == '_extra' else c}: " + " / ".join(repr(v) if v else "empty" for v in seen[:3])
    return "different data"


# ------------------------------------------------------------------------------------ supersession


def resolve_chains(next_of: dict[str, str]) -> tuple[dict[str, str], list[list[str]]]:
    """Each SKU's current part (the end of its supersession chain), and the cycles found (each a
    list of SKUs in chain order). SKUs on a cycle, or leading into one, get no current part."""
    current: dict[str, str] = {}
    cycles: list[list[str]] = []
    for start in next_of:
        if start in current:
            continue
        path: list[str] = []
        on_path: dict[str, int] = {}
        node = start
        while node in next_of and node not in current and node not in on_path:
            on_path[node] = len(path)
            path.append(node)
            node = next_of[node]
        if node in on_path:
            cycle = path[on_path[node]:]
            cycles.append(cycle)
            for s in path:
                current[s] = ""  # unresolved
            continue
        end = current.get(node, node) if node in current else node
        for s in path:
            current[s] = end
    return current, cycles


def master_part_key(brand: str | None, mpn: str | None, fallback: str) -> str:
    """`BRAND|MPN` (trimmed, upper-cased) when the MPN is known, else `fallback` (a SKU)."""
    mpn = (mpn or "").strip()
    if not mpn:
        return fallback
    return f"{(brand or '').strip().upper()}|{mpn.upper()}"


# ------------------------------------------------------------------------------------ loading


@dataclass
class CatalogImport:
    """What importing one file did (the CLI prints `describe()`, the asset reports `metadata()`)."""

    merchant_id: str
    file: str
    sha256: str
    size_bytes: int
    already_loaded: bool = False
    loaded_at: datetime | None = None
    rows_read: int = 0
    rows_rejected: int = 0
    parts_in_file: int = 0
    parts_new: int = 0
    parts_changed: int = 0
    parts_unchanged: int = 0
    parts_reresolved: int = 0
    fitment_rows: int = 0
    superseded: int = 0
    file_id: int | None = None  # its number in catalog_files
    cycles: list[list[str]] = field(default_factory=list)
    reject_reasons: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        head = f"{self.file} ({self.size_bytes:,} bytes, sha256 {self.sha256[:12]}) for merchant {self.merchant_id}"
        if self.already_loaded:
            return f"{head}: already loaded{f' on {self.loaded_at:%Y-%m-%d %H:%M} UTC' if self.loaded_at else ''}; nothing changed"
        lines = [
            f"{head}:",
            f"  rows read       {self.rows_read:,} ({self.rows_rejected:,} rejected)",
            f"  parts           {self.parts_in_file:,} in the file: {self.parts_new:,} new, {self.parts_changed:,} changed, "
            f"{self.parts_unchanged:,} unchanged",
            f"  fitment rows    {self.fitment_rows:,}",
            f"  supersessions   {self.superseded:,} part(s) superseded; {self.parts_reresolved:,} other part(s) now resolve to a new current part",
        ]
        for cycle in self.cycles:
            lines.append(f"  refused cycle   {' -> '.join([*cycle, cycle[0]])}")
        if self.reject_reasons:
            lines.append("  rejects         " + "; ".join(f"{k}: {v}" for k, v in sorted(self.reject_reasons.items())))
            lines.append("                  (row numbers and reasons in catalog_rejects)")
        return "\n".join(lines)

    def metadata(self) -> dict[str, Any]:
        return {
            "file": self.file, "sha256": self.sha256, "already_loaded": self.already_loaded,
            "rows_read": self.rows_read, "rows_rejected": self.rows_rejected, "parts_in_file": self.parts_in_file,
            "parts_new": self.parts_new, "parts_changed": self.parts_changed, "parts_unchanged": self.parts_unchanged,
            "parts_reresolved": self.parts_reresolved, "fitment_rows": self.fitment_rows, "superseded": self.superseded,
            "cycles_refused": len(self.cycles),
            **{f"rejected_{k}": v for k, v in sorted(self.reject_reasons.items())},
        }


_REJECT_KINDS = (
    ("no SKU", "no_sku"), ("not a number", "not_a_number"), ("is negative", "negative"),
    ("currency", "currency"), ("different data", "duplicate_sku"), ("cycle", "supersession_cycle"),
    ("gtin", "gtin"), ("year", "fitment_year"), ("values but the header", "row_shape"),
    ("max_price", "price_range"), ("decimal places", "precision"), ("too large", "precision"),
    ("superseded_by says", "supersession_conflict"),
)


def _kind(reason: str) -> str:
    for needle, kind in _REJECT_KINDS:
        if needle in reason:
            return kind
    return "other"


def ensure_catalog_tables(conn: Connection, schema: str) -> None:
    for spec in CATALOG_TABLES:
        conn.create_table(schema, spec)
    _migrate_provenance(conn, schema)


def _migrate_provenance(conn: Connection, schema: str) -> None:
    """Catalogs loaded before rows named their file by number: number the files (in load order)
    and point the fitment and part rows at the number instead of the file's digest (and, for the
    parts, its name and load time, which catalog_files holds), whose columns go (they are NOT
    NULL: rows written without them would fail). A part version re-resolved by a later file
    keeps the file its data came from: its load time is now that file's."""
    fit, files, parts = (f"{schema}.{spec.name}" for spec in (CATALOG_FITMENT, CATALOG_FILES, CATALOG_PARTS))
    old_fitment = "source_sha256" in conn.table_columns(schema, CATALOG_FITMENT.name)
    old_parts = "source_sha256" in conn.table_columns(schema, CATALOG_PARTS.name)
    if not (old_fitment or old_parts):
        return
    conn.execute(
        f"UPDATE {files} SET file_id = numbered.n FROM (SELECT sha256, row_number() OVER (ORDER BY loaded_at, sha256) "
        f"+ (SELECT coalesce(max(file_id), 0) FROM {files}) AS n FROM {files} WHERE file_id IS NULL) numbered "
        f"WHERE {files}.sha256 = numbered.sha256"
    )
    if old_fitment:
        conn.execute(f"UPDATE {fit} SET file_id = f.file_id FROM {files} f WHERE {fit}.source_sha256 = f.sha256")
        conn.execute(f"ALTER TABLE {fit} DROP COLUMN source_sha256")
    if not old_parts:
        return
    conn.execute(f"UPDATE {parts} SET file_id = f.file_id FROM {files} f WHERE {parts}.source_sha256 = f.sha256")
    if conn.dialect == "postgres":
        conn.execute(f"ALTER TABLE {parts} DROP COLUMN source_file, DROP COLUMN source_sha256, DROP COLUMN loaded_at")
        return
    # DuckDB drops no column that a later column's index depends on (valid_from, in the primary
    # key, comes after them): the table is rebuilt.
    conn.rebuild_table(schema, CATALOG_PARTS)


# What the comparison reads of the stored current versions (plus the part columns a file lacks).
_STORED = ("sku", "brand", "mpn", "superseded_by", "current_sku", "master_part", "content_hash")


def _select(names: Sequence[str]) -> str:
    # Amounts come back as their exact text ('12.5000' on both engines), never through a float.
    return ", ".join(f"CAST({c} AS VARCHAR) AS {c}" if c in MONEY_COLUMNS else c for c in names)


def _stored_current(conn: Connection, schema: str, missing: Iterable[str] = ()) -> pd.DataFrame:
    """The current version of every stored SKU: the _STORED columns and `missing` (part columns
    the file does not have), as text ('' for NULL)."""
    names = [*_STORED, *sorted(set(missing) - set(_STORED))]
    frame = conn.fetch_text(f"SELECT {_select(names)} FROM {schema}.{CATALOG_PARTS.name} WHERE valid_to IS NULL")
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype="str") for c in names})
    return frame


def _content_hash(parts: pd.DataFrame) -> pd.Series:
    """A 64-bit digest of each part's own data, as hex (pandas' SipHash with its fixed key: the
    same text gives the same digest in every process)."""
    joined = _join(parts, ["sku", *PART_COLUMNS, "extra"])
    digest = pd.util.hash_pandas_object(joined, index=False, categorize=False).to_numpy()
    import pyarrow as pa

    hex16 = np.frombuffer(digest.astype(">u8").tobytes().hex().encode("ascii"), dtype="S16")
    return pd.Series(pd.array(pa.array(hex16).cast(pa.large_string()), dtype="str"), index=parts.index)


def import_catalog_file(
    wh: Warehouse, merchant_id: str, path: str | Path, *, effective_at: datetime | None = None, now: datetime | None = None
) -> CatalogImport:
    """Load one catalog file into the merchant's catalog tables (one transaction); the summary
    says what changed. The same file (by SHA-256) loads once; later calls change nothing.
    `effective_at`: when the file's data took effect (default: now); a changed part's new version
    is valid from then. Raises CatalogFileError for a file that is not a catalog."""
    path = Path(path)
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    effective = (effective_at or now).astimezone(UTC)
    summary = CatalogImport(merchant_id, path.name, sha, len(data), loaded_at=now)
    schema = merchant_schema(merchant_id)
    # A file loaded before is known by its digest alone: not parsed again (checked once more
    # inside the load's transaction, for a load that raced this one).
    with wh.merchant_scope(merchant_id) as conn:
        done = conn.table_exists(schema, CATALOG_FILES.name) and conn.fetchone(
            f"SELECT loaded_at FROM {schema}.{CATALOG_FILES.name} WHERE sha256 = ?", [sha]
        )
    if done:
        summary.already_loaded, summary.loaded_at = True, done[0]
        return summary
    # Parsed before the merchant's scope opens again: its file (DuckDB) is not held while we read,
    # and a file that is not a catalog never reaches it.
    raw = read_catalog(path, data)
    del data
    with wh.merchant_scope(merchant_id) as conn:
        ensure_catalog_tables(conn, schema)
        if conn.dialect == "postgres":
            # One load at a time per merchant: two at once could each close the same versions
            # and open two current ones, or take the same file number. (A DuckDB file has one
            # writer at a time anyway.)
            conn.execute(f"LOCK TABLE {schema}.{CATALOG_PARTS.name} IN EXCLUSIVE MODE")
        done = conn.fetchone(f"SELECT loaded_at FROM {schema}.{CATALOG_FILES.name} WHERE sha256 = ?", [sha])
        if done:
            summary.already_loaded, summary.loaded_at = True, done[0]
            return summary
        part_extra, _ = _extra_columns(raw.frame.columns)
        present = {c for c in PART_COLUMNS if c in raw.frame.columns} | ({"extra"} if part_extra else set())
        stored = _stored_current(conn, schema, {*PART_COLUMNS, "extra"} - present)
        summary.file_id = int(conn.fetchone(f"SELECT coalesce(max(file_id), 0) + 1 FROM {schema}.{CATALOG_FILES.name}")[0])
        # The fitment loads while the parts are validated (the engine ingests while Python
        # computes); the rows of parts refused meanwhile are deleted after.
        fitment = fitment_rows(raw)
        streaming = _start_fitment(conn, schema, fitment, summary)
        try:
            checked = validate(raw, fitment)
            del raw
            _apply(conn, schema, checked, stored, summary, streaming, now=now, effective=effective)
        finally:
            streaming.shutdown()  # a failed load ends (and rolls back) after its writes
    return summary


@dataclass
class _Streaming:
    """The fitment rows of a file on their way in. The connection's writes run in order on one
    thread (`pool`) while this one computes: nothing else may use the connection before `wait()`.
    `aside` computes what a later write needs off both their paths (never with the connection)."""

    pool: concurrent.futures.ThreadPoolExecutor
    pending: list[concurrent.futures.Future]
    sent: np.ndarray  # which rows of the file's frame (by position)
    rows: np.ndarray  # the source row of each
    had_rows: bool  # the table had rows before: those of the file's parts are replaced
    aside: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="catalog-aside"))

    def submit(self, fn: Any, *args: Any) -> None:
        self.pending.append(self.pool.submit(fn, *args))

    def shutdown(self) -> None:
        self.aside.shutdown(wait=True)
        self.pool.shutdown(wait=True)

    def wait(self) -> None:
        """Until every write submitted is done; raises the first one's error."""
        concurrent.futures.wait(self.pending)
        for done in self.pending:
            done.result()


def _start_fitment(conn: Connection, schema: str, fitment: _Fitment, summary: CatalogImport) -> _Streaming:
    """Start loading the rows of the file's fitment that may load before the parts are
    validated, on a thread of its own: both engines work without holding the GIL (PostgreSQL in
    its server process, DuckDB in its own threads), so the load overlaps the validation."""
    had_rows = fitment.has_fitment and bool(conn.fetchone(f"SELECT 1 FROM {schema}.{CATALOG_FITMENT.name} LIMIT 1"))
    sent = fitment.streamable if fitment.has_fitment else np.zeros(len(fitment.streamable), dtype=bool)
    streaming = _Streaming(concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="catalog-writes"), [], sent,
                           fitment.rows["source_row"].to_numpy(), had_rows)
    if sent.any():
        fit = fitment.rows if sent.all() else fitment.rows.loc[sent]
        frame = pd.DataFrame({c: fit[c] for c in ("sku", "year_from", "year_to")})
        for c in ("make", "model", "engine", "equipment_model", "extra"):
            frame[c] = fit[c].where(fit[c] != "", None)
        frame["file_id"] = np.int32(summary.file_id)
        frame["source_row"] = fit["source_row"].astype("int64")
        streaming.submit(conn.load_frame, schema, CATALOG_FITMENT.name, frame[CATALOG_FITMENT.column_names])
    return streaming


def _refused_fitment(checked: _Validated, skus: pd.Series, streaming: _Streaming, summary: CatalogImport) -> list[int]:
    """The source rows of streamed fitment rows whose part was refused (or that repeat a fitment
    of their SKU): those of the file's parts `skus` stay."""
    fitment = kept_fitment(checked)
    kept = fitment.loc[_isin(fitment["sku"], skus)]
    summary.fitment_rows = len(kept) if checked.has_fitment else 0
    gone = streaming.sent.copy()
    gone[kept.index.to_numpy()] = False
    return streaming.rows[gone].tolist()


def _delete_fitment(conn: Connection, schema: str, summary: CatalogImport, *,
                    refused: concurrent.futures.Future | None = None, replaced: list[str] | None = None) -> None:
    """Once the streamed rows are in: delete those `refused` gives (_refused_fitment), or the
    fitment other files gave the file's parts `replaced` (when the file has fitment columns: it
    lists each part's whole fitment)."""
    table = f"{schema}.{CATALOG_FITMENT.name}"
    if refused is not None and (rows := refused.result()):
        match = ("source_row = ANY(?)" if conn.dialect == "postgres"
                 else "source_row IN (SELECT unnest(CAST(? AS INTEGER[])))")
        conn.execute(f"DELETE FROM {table} WHERE file_id = ? AND {match}", [summary.file_id, rows])
    if replaced:
        conn.execute(
            f"DELETE FROM {table} WHERE (file_id IS NULL OR file_id <> ?) AND {any_of(conn.dialect, 'sku')}",
            [summary.file_id, replaced],
        )


def _apply(
    conn: Connection, schema: str, checked: _Validated, stored: pd.DataFrame, summary: CatalogImport,
    streaming: _Streaming, *, now: datetime, effective: datetime,
) -> None:
    """Compare the file's parts with the stored ones and write what changed. The fitment is
    loading (`streaming`) until the parts' rows are ready: nothing here uses the connection
    before `streaming.wait()`."""
    parts = checked.parts.rename(columns={"_extra": "extra", "_row": "source_row"})
    parts = parts[["sku", *PART_COLUMNS, "extra", "source_row"]].copy()
    stored = stored.set_index("sku", drop=False)
    known = _isin(parts["sku"], stored.index)
    # Columns the file does not have keep the stored values of SKUs already in the catalog.
    for c in {*PART_COLUMNS, "extra"} - checked.present:
        if known.any():
            parts.loc[known, c] = stored.loc[parts.loc[known, "sku"], c].to_numpy()
    rejects = list(checked.rejects)
    # New parts that supersede nothing are final already: each is its own current part, and a
    # cycle refuses only parts that supersede one. They start loading now (most of a file's
    # parts), while the others are resolved and compared.
    early = _early(parts, known)
    if early.any():
        _stream_new_parts(conn, schema, parts.loc[early], summary, streaming, effective)

    # Supersession across the whole catalog: the stored current edges, the file's, and those
    # named inside SUB= chains.
    # (Few parts are superseded: only those rows go through Python.)
    stored_edges = stored.loc[(stored["superseded_by"] != "").to_numpy(), ["sku", "superseded_by"]]
    while True:
        next_of = dict(zip(stored_edges["sku"].tolist(), stored_edges["superseded_by"].tolist(), strict=True))
        for s, t in checked.implied.items():
            next_of.setdefault(s, t)
        if next_of:
            keys = list(next_of)
            for s, listed in zip(keys, _isin(pd.Series(keys, dtype="str"), parts["sku"]).tolist(), strict=True):
                if listed:
                    del next_of[s]
        file_edges = parts.loc[(parts["superseded_by"] != "").to_numpy(), ["sku", "superseded_by"]]
        next_of.update(zip(file_edges["sku"].tolist(), file_edges["superseded_by"].tolist(), strict=True))
        current, cycles = resolve_chains(next_of)
        if not cycles:
            break
        on_cycle = {s for cycle in cycles for s in cycle}
        in_file = set(parts["sku"].tolist())
        refused = on_cycle & in_file
        if not refused:
            if not set(checked.implied) & on_cycle:
                raise CatalogFileError(
                    f"the stored catalog has a supersession cycle ({'; '.join(' -> '.join(c) for c in cycles)}): "
                    "load a file that fixes superseded_by of those SKUs"
                )
            # Formed only by supersessions named inside SUB= chains: those are dropped.
            checked.implied = {s: t for s, t in checked.implied.items() if s not in on_cycle}
            continue
        for cycle in cycles:
            if not set(cycle) & in_file:
                continue
            summary.cycles.append(cycle)
            text = " -> ".join([*cycle, cycle[0]])
            rows = _rows_of(checked.rows_of_sku, cycle)
            for s in cycle:
                for r in rows.get(s, []):
                    rejects.append((int(r), s, f"supersession cycle {text}: a part cannot replace itself; fix superseded_by of {', '.join(cycle)}"))
        parts = parts.loc[~_isin(parts["sku"], refused)].reset_index(drop=True)
        known = _isin(parts["sku"], stored.index)
    # The file's parts are known: the fitment's deletions follow its load on the writing thread.
    # Other files' fitment of these parts first (on a re-load, most of the engine's work), then
    # the streamed rows of refused parts, found aside meanwhile (this thread compares, the
    # writer's formats the parts' rows).
    if checked.has_fitment and streaming.had_rows and len(parts):
        streaming.submit(functools.partial(_delete_fitment, conn, schema, summary, replaced=parts["sku"].tolist()))
    refused = streaming.aside.submit(_refused_fitment, checked, parts["sku"], streaming, summary)
    streaming.submit(functools.partial(_delete_fitment, conn, schema, summary, refused=refused))

    # Only superseded SKUs (those in `current`) point at another part; the others are their own.
    targets = sorted({c for c in current.values() if c})
    # The brand and MPN of each target: the file's, else the stored current version's.
    target_part: dict[str, tuple[str, str]] = {}
    for source in (stored, parts):
        picked = source.loc[_isin(source["sku"], targets), ["sku", "brand", "mpn"]]
        target_part.update(zip(picked["sku"].tolist(), zip(picked["brand"].tolist(), picked["mpn"].tolist(), strict=True), strict=True))

    def resolve(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        """(current SKU, master part) of each row of a frame of parts (sku, brand, mpn)."""
        sku = frame["sku"]
        master = _own_master(frame)
        cur = sku
        moved = _isin(sku, current) if current else np.zeros(len(frame), dtype=bool)
        if moved.any():
            cur, master = sku.copy(), master.copy()
            positions = np.flatnonzero(moved)
            ends = [current[s] or s for s in sku.iloc[positions].tolist()]
            cur.iloc[positions] = ends
            master.iloc[positions] = [master_part_key(*target_part.get(e, (None, None)), e) for e in ends]
        return cur.astype("str"), master.astype("str")

    summary.parts_in_file = len(parts)
    summary.superseded = int((parts["superseded_by"] != "").sum())
    summary.parts_new = int((~known).sum())
    # The others: parts already stored, and new ones that supersede another (cycles refused).
    rest_of = ~_early(parts, known)
    rest, known = parts.loc[rest_of], known[rest_of]
    rest["current_sku"], rest["master_part"] = resolve(rest)
    rest["content_hash"] = _content_hash(rest)

    before = stored.reindex(rest["sku"])
    same_content = (before["content_hash"].to_numpy() == rest["content_hash"].to_numpy()) & known
    same_resolution = (
        (before["current_sku"].to_numpy() == rest["current_sku"].to_numpy())
        & (before["master_part"].to_numpy() == rest["master_part"].to_numpy())
    )
    unchanged = same_content & same_resolution
    summary.parts_changed = int((known & ~unchanged).sum())
    summary.parts_unchanged = int(unchanged.sum())
    changed_known = rest.loc[known & ~unchanged, "sku"].tolist()

    # Stored parts outside the file whose chain now ends elsewhere (the file superseded their
    # current part, say): a new version with the same data and the new resolution.
    others = stored.loc[~_isin(stored["sku"], parts["sku"])]
    cur, master = resolve(others)
    moved = (cur.to_numpy() != others["current_sku"].to_numpy()) | (master.to_numpy() != others["master_part"].to_numpy())
    moved_skus = others["sku"].to_numpy()[moved].tolist()
    summary.parts_reresolved = len(moved_skus)

    # (Copy-on-write: a frame taken from another copies only the columns set in it.)
    new_versions = rest.loc[~unchanged] if unchanged.any() else rest.copy(deep=False)
    new_versions["valid_from"] = _valid_from(conn, ~known[~unchanged], new_versions.index, effective)
    frames = [_part_rows(conn, new_versions, summary)]
    streaming.wait()  # the fitment is in: the connection is this thread's again

    closing = changed_known + moved_skus
    if closing:
        row = conn.fetchone(
            f"SELECT max(valid_from) FROM {schema}.{CATALOG_PARTS.name} WHERE valid_to IS NULL AND {any_of(conn.dialect, 'sku')}",
            [closing],
        )
        latest = pd.Timestamp(row[0])
        latest = latest.tz_localize(UTC) if latest.tzinfo is None else latest.tz_convert(UTC)
        if latest >= pd.Timestamp(effective):
            raise CatalogFileError(
                f"{summary.file}: effective {effective:%Y-%m-%d %H:%M} UTC is not after the current version of "
                f"some of its parts (valid from {latest:%Y-%m-%d %H:%M} UTC): load catalog files in date order"
            )
        conn.execute(
            f"UPDATE {schema}.{CATALOG_PARTS.name} SET valid_to = ? WHERE valid_to IS NULL AND {any_of(conn.dialect, 'sku')}",
            [effective, closing],
        )
    if moved_skus:
        other_skus = others["sku"].tolist()
        frames.append(_reresolved_rows(conn, schema, moved_skus, dict(zip(other_skus, cur.tolist(), strict=True)),
                                       dict(zip(other_skus, master.tolist(), strict=True)), effective))
    for frame in frames:
        if len(frame):
            conn.load_frame(schema, CATALOG_PARTS.name, frame)

    summary.rows_read = checked.rows_read
    summary.rows_rejected = len(rejects)
    summary.reject_reasons = dict(Counter(_kind(r[2]) for r in rejects))
    if rejects:
        rej = pd.DataFrame(rejects, columns=["source_row", "sku", "reason"]).sort_values("source_row", kind="stable")
        rej["sku"] = rej["sku"].where(rej["sku"] != "", None)
        rej["source_file"], rej["source_sha256"], rej["rejected_at"] = summary.file, summary.sha256, _stamp(conn, now)
        conn.load_frame(schema, CATALOG_REJECTS.name, rej[CATALOG_REJECTS.column_names])
    conn.execute(
        f"INSERT INTO {schema}.{CATALOG_FILES.name} ({', '.join(CATALOG_FILES.column_names)}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [summary.sha256, summary.file, summary.size_bytes, now, effective, summary.rows_read, summary.rows_rejected,
         summary.parts_new, summary.parts_changed, summary.parts_unchanged, summary.parts_reresolved, summary.fitment_rows,
         summary.file_id],
    )


def _early(parts: pd.DataFrame, known: np.ndarray) -> np.ndarray:
    """The parts whose rows are final before supersessions are resolved: new, superseding nothing."""
    return ~known & (parts["superseded_by"] == "").to_numpy()


def _own_master(parts: pd.DataFrame) -> pd.Series:
    """Each part's master part by its own brand and MPN (master_part_key, vectorized)."""
    mpn = parts["mpn"].str.strip().str.upper()
    return (parts["brand"].str.strip().str.upper() + "|" + mpn).where(mpn != "", parts["sku"])


# New parts go to the writer thread in slices of this many: the engine ingests one while the
# next is built. The first is smaller: the engine, done with the fitment, waits for it.
_PART_SLICE, _FIRST_PART_SLICE = 50_000, 10_000


def _stream_new_parts(
    conn: Connection, schema: str, parts: pd.DataFrame, summary: CatalogImport, streaming: _Streaming,
    effective: datetime,
) -> None:
    """Queue the rows of new parts that supersede nothing (their first versions) on the writer
    thread, in key order on PostgreSQL (see _part_rows)."""
    if conn.dialect == "postgres":
        import pyarrow.compute as pc

        parts = parts.take(pc.sort_indices(_arrow(parts["sku"])).to_numpy())
    starts = [0, *range(_FIRST_PART_SLICE, len(parts), _PART_SLICE)]
    for start, end in zip(starts, [*starts[1:], len(parts)], strict=True):
        piece = parts.iloc[start:end].copy()
        piece["current_sku"], piece["master_part"] = piece["sku"].astype("str"), _own_master(piece).astype("str")
        piece["content_hash"] = _content_hash(piece)
        piece["valid_from"] = _valid_from(conn, np.ones(len(piece), dtype=bool), piece.index, effective)
        streaming.submit(conn.load_frame, schema, CATALOG_PARTS.name, _part_rows(conn, piece, summary, in_key_order=True))


def _valid_from(conn: Connection, new: np.ndarray, index: pd.Index, effective: datetime) -> pd.Series:
    """valid_from of new versions: effective_at_first for a SKU's first (`new`), else `effective`."""
    if conn.dialect == "duckdb":
        # A timestamp column built by numpy, which DuckDB scans through Arrow.
        later, first = (pd.Timestamp(t).tz_convert(None).as_unit("us").to_datetime64() for t in (effective, effective_at_first(effective)))
        return pd.Series(np.where(new, first, later), index=index).dt.tz_localize(UTC)
    # Text for PostgreSQL's COPY: Arrow writes a zoned timestamp to CSV one value at a time
    # (a third of a second for 200,000 parts).
    later, first = (t.astimezone(UTC).isoformat() for t in (effective, effective_at_first(effective)))
    return pd.Series(np.where(new, first, later), index=index, dtype="str")


def effective_at_first(effective: datetime) -> datetime:
    """When a SKU's first version takes effect: FIRST_VERSION_FROM (see the module docstring)."""
    return min(FIRST_VERSION_FROM, effective)


def _stamp(conn: Connection, moment: datetime) -> Any:
    """A timestamp for a frame column: as is for DuckDB (Arrow), as ISO text for PostgreSQL, whose
    COPY reads it as such (pandas formats tz-aware timestamps to CSV a row at a time)."""
    return pd.Timestamp(moment).as_unit("us") if conn.dialect == "duckdb" else moment.astimezone(UTC).isoformat()


def _part_rows(
    conn: Connection, parts: pd.DataFrame, summary: CatalogImport, *, in_key_order: bool = False
) -> pd.DataFrame:
    """The catalog_parts rows of `parts`, in key order on PostgreSQL (`in_key_order`: they are already)."""
    out = parts[["sku", *PART_COLUMNS, "current_sku", "master_part", "extra", "source_row", "content_hash", "valid_from"]]
    for c in (*PART_COLUMNS, "extra"):
        out[c] = out[c].where(out[c] != "", None)
    out["file_id"] = np.int32(summary.file_id)
    if conn.dialect == "duckdb":
        out["valid_to"] = pd.Series([pd.NaT] * len(out), dtype="datetime64[us, UTC]", index=out.index)
        out["valid_from"] = out["valid_from"].astype("datetime64[us, UTC]")
    else:
        out["valid_to"] = None
    out["source_row"] = out["source_row"].astype("int64")
    out = out[CATALOG_PARTS.column_names]
    if conn.dialect == "postgres" and len(out) > 1 and not in_key_order:
        # In key order each row goes to the primary key's rightmost leaf (the B-tree's insert
        # fast path) instead of descending it with a collation comparison per level.
        import pyarrow.compute as pc

        out = out.take(pc.sort_indices(_arrow(out["sku"])).to_numpy())
    return out


def _reresolved_rows(
    conn: Connection, schema: str, skus: list[str], current: dict[str, str], master: dict[str, str],
    effective: datetime,
) -> pd.DataFrame:
    """New versions of stored parts with a new resolution: their data, file and row as they were."""
    names = list(CATALOG_PARTS.column_names)
    frame = conn.fetch_df(
        f"SELECT {_select(names)} FROM {schema}.{CATALOG_PARTS.name} "
        f"WHERE valid_to = ? AND {any_of(conn.dialect, 'sku')}",
        [effective, skus],
    )
    frame["current_sku"] = frame["sku"].map(current)
    frame["master_part"] = frame["sku"].map(master)
    frame["file_id"] = frame["file_id"].astype("Int64")  # (NULL only in a migrated table, for a file it lacked)
    frame["valid_from"] = _stamp(conn, effective)
    frame["valid_to"] = pd.Series([pd.NaT] * len(frame), dtype="datetime64[us, UTC]") if conn.dialect == "duckdb" else None
    return frame[names]


# ------------------------------------------------------------------------------------ reading back


@dataclass(frozen=True)
class CatalogPart:
    """One version of a SKU in `catalog_parts` (money as Decimal, `extra` as a dict)."""

    sku: str
    brand: str | None
    mpn: str | None
    part_type: str | None
    gtin: str | None
    unit_cost: Decimal | None
    cost_currency: str | None
    landed_cost: Decimal | None
    map_price: Decimal | None
    min_price: Decimal | None
    max_price: Decimal | None
    superseded_by: str | None
    current_sku: str
    master_part: str
    extra: dict
    source_file: str  # the file's name, digest and load time (catalog_files)
    source_sha256: str
    source_row: int
    valid_from: datetime
    valid_to: datetime | None
    loaded_at: datetime


_PART_FIELDS = [f for f in CatalogPart.__dataclass_fields__]
# CatalogPart's fields that catalog_files holds: its column for each.
_FILE_FIELDS = {"source_file": "name", "source_sha256": "sha256", "loaded_at": "loaded_at"}


def _valid_on(at: datetime) -> tuple[str, list]:
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return "valid_from <= ? AND (valid_to IS NULL OR valid_to > ?)", [at, at]


def parts_valid_on(conn: Connection, schema: str, at: datetime) -> dict[str, CatalogPart]:
    """SKU -> the version of the part valid at `at` (none for SKUs not in the catalog then)."""
    if not conn.table_exists(schema, CATALOG_PARTS.name):
        return {}
    where, params = _valid_on(at)
    if "file_id" in conn.table_columns(schema, CATALOG_PARTS.name):
        fields = ", ".join(f"f.{_FILE_FIELDS[c]}" if c in _FILE_FIELDS else f"p.{c}" for c in _PART_FIELDS)
        source = (f"{schema}.{CATALOG_PARTS.name} p LEFT JOIN {schema}.{CATALOG_FILES.name} f "
                  "ON f.file_id = p.file_id")
    else:  # a table no load has migrated yet (_migrate_provenance): the file on each row
        fields, source = ", ".join(_PART_FIELDS), f"{schema}.{CATALOG_PARTS.name}"
    out = {}
    for row in conn.fetchall(f"SELECT {fields} FROM {source} WHERE {where}", params):
        values = dict(zip(_PART_FIELDS, row, strict=True))
        for c in MONEY_COLUMNS:
            if values[c] is not None:
                values[c] = Decimal(values[c])
        values["extra"] = json.loads(values["extra"]) if values["extra"] else {}
        out[values["sku"]] = CatalogPart(**values)
    return out


def master_parts(conn: Connection, schema: str, at: datetime | None = None) -> dict[str, tuple[str, str | None, str | None]]:
    """SKU -> (master part, brand, MPN) from the catalog valid at `at` (default: now). Brand and
    MPN are the current part's (after supersession) when the master part names them, else the
    SKU's own."""
    if not conn.table_exists(schema, CATALOG_PARTS.name):
        return {}
    where, params = _valid_on(at or datetime.now(UTC))
    rows = conn.fetchall(
        f"SELECT sku, brand, mpn, current_sku, master_part FROM {schema}.{CATALOG_PARTS.name} WHERE {where}", params
    )
    own = {sku: (brand, mpn) for sku, brand, mpn, _, _ in rows}
    out = {}
    for sku, brand, mpn, current, master in rows:
        if current != sku and current in own and master != current:
            brand, mpn = own[current]
        out[sku] = (master, brand, mpn)
    return out


def catalog_day_end(day: str) -> datetime:
    """The last moment of `day` (UTC): the catalog a daily snapshot of that day uses."""
    return datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1) - timedelta(microseconds=1)


def inbox_files(folder: Path) -> list[Path]:
    """The catalog files waiting in an inbox folder (CSV or XLSX, not hidden, not partial)."""
    if not folder.is_dir():
        return []
    with contextlib.suppress(OSError):
        return sorted(
            p for p in folder.iterdir()
            # Not a link: a merchant's folder must not lead to a file elsewhere (another's).
            if p.is_file() and not p.is_symlink() and p.suffix.lower() in CATALOG_SUFFIXES
            and not p.name.startswith((".", "~$"))
        )
    return []


def loaded_files(wh: Warehouse, merchant_id: str) -> set[str]:
    """The SHA-256 of every catalog file the merchant's catalog has loaded."""
    schema = merchant_schema(merchant_id)
    with wh.merchant_scope(merchant_id) as conn:
        if not conn.table_exists(schema, CATALOG_FILES.name):
            return set()
        return {r[0] for r in conn.fetchall(f"SELECT sha256 FROM {schema}.{CATALOG_FILES.name}")}


def master_parts_by_own_key(
    conn: Connection, schema: str, at: datetime | None = None
) -> dict[str, tuple[str, str | None, str | None]]:
    """`BRAND|MPN` of a part's own brand and MPN -> (master part, brand, MPN) as `master_parts`
    gives for it: another source's brand and MPN (eBay's product data) meets the catalog there."""
    out: dict[str, tuple[str, str | None, str | None]] = {}
    parts = master_parts(conn, schema, at)
    if not parts:
        return out
    where, params = _valid_on(at or datetime.now(UTC))
    for sku, brand, mpn in conn.fetchall(f"SELECT sku, brand, mpn FROM {schema}.{CATALOG_PARTS.name} WHERE {where}", params):
        if mpn:
            out.setdefault(master_part_key(brand, mpn, sku), parts[sku])
    return out
