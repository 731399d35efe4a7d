"""Parts catalogs: reading CSV and XLSX, every reject kind, history, supersession, re-loads, and
the catalog asset; on both engines."""

from __future__ import annotations

import csv
import io
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest

from assets.catalog import CATALOG_FILE_TAG, catalog_parts
from illuma_pipelines.catalog import (
    CATALOG_FILES,
    CATALOG_FITMENT,
    CATALOG_PARTS,
    CATALOG_REJECTS,
    CatalogFileError,
    import_catalog_file,
    master_part_key,
    master_parts,
    parts_valid_on,
    read_catalog,
    resolve_chains,
    split_supersession,
)
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.registry import add_merchant
from resources.inbox import InboxResource
from resources.warehouse import WarehouseResource

FIXTURES = Path(__file__).parent / "fixtures" / "catalog"
GOOD = FIXTURES / "parts_outdoor_power.csv"
BAD = FIXTURES / "parts_bad_rows.csv"
T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
HUSQVARNA = "HUSQVARNA|532145338"


def _merchant(warehouse, merchant_id, name="cat"):
    mid = merchant_id(name)
    add_merchant(warehouse, mid)
    return mid


def _rows(warehouse, mid, sql, params=()):
    with warehouse.merchant_scope(mid) as conn:
        return conn.fetchall(sql.format(s=merchant_schema(mid)), params)


def _table(warehouse, mid, spec, order="1"):
    """Every row of a catalog table, provenance columns left out, as dicts."""
    skip = {"source_file", "source_sha256", "loaded_at", "rejected_at"}
    names = [c for c in spec.column_names if c not in skip]
    rows = _rows(warehouse, mid, f"SELECT {', '.join(names)} FROM {{s}}.{spec.name} ORDER BY {order}")
    return [dict(zip(names, r, strict=True)) for r in rows]


def _current(warehouse, mid):
    with warehouse.merchant_scope(mid) as conn:
        return parts_valid_on(conn, merchant_schema(mid), datetime.now(UTC) + timedelta(days=1))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------ pure parts


def test_sub_notation_and_chains():
    assert split_supersession("138024 SUB= 145338") == ["138024", "145338"]
    assert split_supersession("131111 sub=138024 SUB = 145338") == ["131111", "138024", "145338"]
    assert split_supersession("SUBARU-22") == ["SUBARU-22"]
    current, cycles = resolve_chains({"A": "B", "B": "C", "X": "Y", "P": "Q", "Q": "P", "R": "P"})
    assert current["A"] == current["B"] == "C" and current["X"] == "Y"
    assert cycles == [["P", "Q"]] and current["P"] == current["Q"] == current["R"] == ""
    assert resolve_chains({"S": "S"})[1] == [["S"]]
    assert master_part_key("ACDelco ", "17d828", "SKU") == "ACDELCO|17D828"
    assert master_part_key("ACDelco", " ", "SKU") == "SKU"


def test_headers_are_case_insensitive_and_text_keeps_leading_zeros(tmp_path):
    raw = read_catalog(_write(tmp_path / "c.csv", " SKU ,Unit Cost,GTIN,Cost-Currency\nA-1,1.5,00012345600012,USD\n"))
    assert list(raw.frame.columns) == ["sku", "unit_cost", "gtin", "cost_currency"]
    assert raw.frame.iloc[0].tolist() == ["A-1", "1.5", "00012345600012", "USD"]


def test_row_numbers_survive_blank_lines_quoted_newlines_and_ragged_rows(tmp_path):
    text = 'sku,brand,unit_cost,cost_currency\nA,"Acme\nParts",1,USD\n\nB,Acme,2,USD,surplus\nC,Acme,3,USD\n'
    raw = read_catalog(_write(tmp_path / "c.csv", text))
    assert raw.frame["sku"].tolist() == ["A", "C"]
    assert raw.rows.tolist() == [2, 5]  # the blank record is row 3, B's row 4
    assert raw.rejects == [(4, "B", "the row has 5 values but the header has 4 columns")]
    # Windows-1252 (Excel's "CSV" on Windows) is read too.
    raw = read_catalog(_write(tmp_path / "w.csv", "sku,brand\nA,Citro\xebn\n".encode("cp1252").decode("latin-1")))
    assert raw.frame["brand"].tolist() == ["Citroën"]


def test_quoted_line_breaks_across_parse_blocks_are_read_whole(tmp_path):
    rows = "".join(f'P-{i},"Rotary\nBlade {i}",{i}.25,USD\n' for i in range(400))
    path = _write(tmp_path / "c.csv", "sku,part_type,unit_cost,cost_currency\n" + rows)
    whole = read_catalog(path)
    for block in (64, 100, 1000):  # block boundaries fall inside quoted values
        raw = read_catalog(path, block_size=block)
        assert raw.frame.equals(whole.frame) and raw.rows.tolist() == whole.rows.tolist() and not raw.rejects
    assert whole.frame["part_type"].iat[7] == "Rotary\nBlade 7" and whole.rows.tolist() == list(range(2, 402))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "is empty"),
        ("blank.csv", b"\n \n", "is empty"),
        ("garbage.csv", bytes(range(256)) * 40, "binary"),
        ("no_sku.csv", b"part_number,brand\n138024,Rotary\n", "no `sku` column"),
        ("header_only.csv", b"sku,brand,unit_cost\n", "no rows"),
        ("fake.xlsx", b"sku,brand\nA,B\n", "not an Excel workbook"),
        ("broken.xlsx", b"PK\x03\x04" + b"\x00" * 64, "not a readable Excel workbook"),
        ("twice.csv", b"sku,SKU\nA,B\n", "same column"),
    ],
)
def test_a_file_that_is_not_a_catalog_changes_nothing(warehouse, merchant_id, tmp_path, name, content, message):
    mid = _merchant(warehouse, merchant_id)
    import_catalog_file(warehouse, mid, GOOD, now=T0)
    before = {spec.name: _table(warehouse, mid, spec) for spec in (CATALOG_PARTS, CATALOG_FITMENT, CATALOG_REJECTS)}
    files = _rows(warehouse, mid, f"SELECT count(*) FROM {{s}}.{CATALOG_FILES.name}")
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CatalogFileError, match=message):
        import_catalog_file(warehouse, mid, path, now=T0 + timedelta(days=1))
    assert {spec.name: _table(warehouse, mid, spec) for spec in (CATALOG_PARTS, CATALOG_FITMENT, CATALOG_REJECTS)} == before
    assert _rows(warehouse, mid, f"SELECT count(*) FROM {{s}}.{CATALOG_FILES.name}") == files


# ------------------------------------------------------------------------------------ loading


def test_a_catalog_loads_parts_fitment_and_supersessions(warehouse, merchant_id):
    mid = _merchant(warehouse, merchant_id)
    summary = import_catalog_file(warehouse, mid, GOOD, now=T0)
    assert (summary.rows_read, summary.rows_rejected, summary.parts_new, summary.fitment_rows) == (13, 0, 9, 12)
    assert "9 new" in summary.describe()
    parts = _current(warehouse, mid)
    assert set(parts) == {
        "BS-593260", "138024", "145338", "532145338", "131111", "ACD-17D828", "AMZ-17D828", "JD-AM125172", "KO-12-050-01-S",
    }
    bs = parts["BS-593260"]
    assert (bs.brand, bs.mpn, bs.part_type, bs.gtin) == ("Briggs & Stratton", "593260", "Air Filter", "024166172401")
    assert (bs.unit_cost, bs.landed_cost, bs.map_price, bs.min_price, bs.max_price) == (
        Decimal("6.42"), Decimal("7.10"), Decimal("12.99"), Decimal("11.49"), Decimal("19.99"),
    )
    assert isinstance(bs.unit_cost, Decimal) and bs.cost_currency == "USD"
    assert bs.extra == {"country_of_origin": "USA"} and bs.source_file == GOOD.name and bs.source_row == 2
    assert bs.valid_to is None
    assert parts["145338"].gtin == "00012345600012" and parts["KO-12-050-01-S"].gtin == "0012345678905"
    assert parts["532145338"].cost_currency == "USD"  # written `usd`
    # 138024 SUB= 145338 (the SKU cell), 145338 -> 532145338 (superseded_by), and a double SUB=.
    assert (parts["138024"].superseded_by, parts["145338"].superseded_by, parts["131111"].superseded_by) == (
        "145338", "532145338", "138024",
    )
    for sku in ("131111", "138024", "145338", "532145338"):
        assert (parts[sku].current_sku, parts[sku].master_part) == ("532145338", HUSQVARNA)
    # Two SKUs of one brake pad set (brand spelled differently) are one master part.
    assert parts["ACD-17D828"].master_part == parts["AMZ-17D828"].master_part == "ACDELCO|17D828"
    with warehouse.merchant_scope(mid) as conn:
        mp = master_parts(conn, merchant_schema(mid))
    assert mp["138024"] == (HUSQVARNA, "Husqvarna", "532145338")
    assert mp["KO-12-050-01-S"] == ("KOHLER|12 050 01-S", "Kohler", "12 050 01-S")
    fitment = _table(warehouse, mid, CATALOG_FITMENT, order="sku, source_row")
    bs_fit = [f for f in fitment if f["sku"] == "BS-593260"]
    assert [(f["year_from"], f["year_to"], f["make"], f["model"]) for f in bs_fit] == [
        (2012, 2020, "Briggs & Stratton", "Intek"), (2014, 2021, "Troy-Bilt", "TB110"), (2015, 2022, "Craftsman", "M105"),
    ]
    assert [f["equipment_model"] for f in fitment if f["sku"] == "JD-AM125172"] == ["LA115 Lawn Tractor", "D140 Lawn Tractor"]
    front = [f for f in fitment if f["sku"] == "ACD-17D828"]
    assert len(front) == 2 and all(f["extra"] == '{"fitment_position": "front"}' for f in front)
    assert not [f for f in fitment if f["sku"] == "131111"]  # no fitment columns filled: no row


REJECTED = {
    3: (None, "no SKU"),
    4: ("STENS-120-006", "unit_cost 'abc' is not a number"),
    5: ("STENS-285-418", "unit_cost -4.10 is negative"),
    6: ("STENS-055-114", "cost_currency 'XYZ' is not an ISO 4217 currency code"),
    7: ("OREGON-91-020", "SKU OREGON-91-020 appears in rows 7, 8 with different data (unit_cost"),
    8: ("OREGON-91-020", "SKU OREGON-91-020 appears in rows 7, 8 with different data (unit_cost"),
    9: ("ROT-10915", "gtin 012345678906 has a wrong check digit"),
    10: ("ROT-10916", "fitment_year_to '2035x' is not a year"),
    11: ("ROT-10917", "min_price 29.99 is above max_price 22.99"),
    12: ("CYC-A", "supersession cycle CYC-A -> CYC-B -> CYC-C -> CYC-A"),
    13: ("CYC-B", "supersession cycle CYC-A -> CYC-B -> CYC-C -> CYC-A"),
    14: ("CYC-C", "supersession cycle CYC-A -> CYC-B -> CYC-C -> CYC-A"),
    15: ("ROT-12-345", "unit_cost 1.23456 has more than 4 decimal places"),
}


def test_every_bad_row_is_rejected_with_its_reason_and_the_rest_loads(warehouse, merchant_id):
    mid = _merchant(warehouse, merchant_id)
    summary = import_catalog_file(warehouse, mid, BAD, now=T0)
    assert (summary.rows_read, summary.rows_rejected, summary.parts_new) == (14, 13, 1)
    assert summary.cycles == [["CYC-A", "CYC-B", "CYC-C"]]
    assert summary.reject_reasons == {
        "no_sku": 1, "not_a_number": 1, "negative": 1, "currency": 1, "duplicate_sku": 2, "gtin": 1,
        "fitment_year": 1, "price_range": 1, "supersession_cycle": 3, "precision": 1,
    }
    assert set(_current(warehouse, mid)) == {"STENS-100-043"}
    rejects = _rows(
        warehouse, mid,
        f"SELECT source_row, sku, reason, source_file, source_sha256 FROM {{s}}.{CATALOG_REJECTS.name} ORDER BY source_row",
    )
    assert [r[0] for r in rejects] == sorted(REJECTED)
    for row, sku, reason, source_file, sha in rejects:
        assert (sku, source_file, sha) == (REJECTED[row][0], BAD.name, summary.sha256)
        assert REJECTED[row][1] in reason, (row, reason)


def test_refused_rows_leave_no_fitment_and_each_fitment_of_a_sku_loads_once(warehouse, merchant_id, tmp_path):
    # The fitment loads while the parts are validated; what validation refuses must go again.
    mid = _merchant(warehouse, merchant_id)
    summary = import_catalog_file(warehouse, mid, BAD, now=T0)
    fitment = _table(warehouse, mid, CATALOG_FITMENT, order="sku, source_row")
    assert [(f["sku"], f["source_row"], f["make"]) for f in fitment] == [("STENS-100-043", 2, "Honda")]
    assert summary.fitment_rows == 1
    # A fitment repeated by a refused row and a good one loads once (from the good row); one
    # repeated by good rows loads once too.
    path = _write(tmp_path / "again.csv", "sku,unit_cost,cost_currency,fitment_make,fitment_model\n"
                  "P-1,abc,USD,Toro,Recycler 22\nP-1,2.00,USD,Toro,Recycler 22\nP-1,2.00,USD,Toro,Recycler 22\n"
                  "P-1,2.00,USD,Honda,HRR216\nP-2,1.00,USD,,\n")
    summary = import_catalog_file(warehouse, mid, path, now=T0 + timedelta(days=1))
    rows = _rows(warehouse, mid, f"SELECT sku, make, source_row FROM {{s}}.{CATALOG_FITMENT.name} WHERE sku = 'P-1' ORDER BY source_row")
    assert rows == [("P-1", "Toro", 3), ("P-1", "Honda", 5)] and summary.fitment_rows == 2


# catalog_parts as it was before its rows named their file by number.
OLD_PARTS_COLUMNS = (
    "sku text!", "brand text", "mpn text", "part_type text", "gtin text", "unit_cost money", "cost_currency text",
    "landed_cost money", "map_price money", "min_price money", "max_price money", "superseded_by text",
    "current_sku text!", "master_part text!", "extra text", "source_file text!", "source_sha256 text!",
    "source_row integer!", "valid_from timestamptz!", "valid_to timestamptz", "loaded_at timestamptz!", "content_hash text!",
)


def test_rows_stored_with_the_file_digest_are_migrated_to_file_numbers(warehouse, merchant_id):
    # Catalogs loaded before files were numbered: each fitment row carried its file's SHA-256,
    # each part row its file's name, SHA-256 and load time.
    from illuma_pipelines.warehouse import TableSpec, cols

    mid = _merchant(warehouse, merchant_id)
    schema = merchant_schema(mid)
    old_fitment = TableSpec(CATALOG_FITMENT.name, tuple(
        c for c in CATALOG_FITMENT.columns if c.name != "file_id") + cols("source_sha256 text!"))
    old_files = TableSpec(CATALOG_FILES.name, tuple(c for c in CATALOG_FILES.columns if c.name != "file_id"),
                          CATALOG_FILES.primary_key)
    old_parts = TableSpec(CATALOG_PARTS.name, cols(*OLD_PARTS_COLUMNS), CATALOG_PARTS.primary_key)
    loaded = {"old-0.csv": T0 - timedelta(days=1), "old-1.csv": T0 - timedelta(days=2)}
    with warehouse.merchant_scope(mid) as conn:
        for spec in (old_fitment, old_files, old_parts):
            conn.create_table(schema, spec)
        for n, (sha, name) in enumerate((("a" * 64, "old-0.csv"), ("b" * 64, "old-1.csv"))):
            conn.execute(
                f"INSERT INTO {schema}.{CATALOG_FILES.name} ({', '.join(old_files.column_names)}) "
                "VALUES (?, ?, 1, ?, ?, 1, 0, 1, 0, 0, 0, 1)", [sha, name, loaded[name], loaded[name]],
            )
            conn.execute(
                f"INSERT INTO {schema}.{CATALOG_FITMENT.name} (sku, make, source_sha256, source_row) VALUES (?, 'Stihl', ?, 2)",
                [f"OLD-{n}", sha],
            )
            # OLD-1 is BS-593260 at another cost: the new file closes that version.
            conn.execute(
                f"INSERT INTO {schema}.{CATALOG_PARTS.name} (sku, unit_cost, cost_currency, current_sku, master_part, "
                "source_file, source_sha256, source_row, valid_from, loaded_at, content_hash) "
                "VALUES (?, ?, 'USD', ?, ?, ?, ?, ?, ?, ?, 'old')",
                [sku := ("OLD-0", "BS-593260")[n], Decimal("1.50"), sku, sku, name, sha, 7 + n,
                 datetime(1970, 1, 1, tzinfo=UTC), loaded[name]],
            )
        # Read as they are until a load migrates them.
        assert parts_valid_on(conn, schema, T0)["OLD-0"].source_file == "old-0.csv"
    summary = import_catalog_file(warehouse, mid, GOOD, now=T0)
    # Numbered in load order (not by digest or name: old-1 came first), the new file after them.
    assert summary.file_id == 3
    assert _rows(warehouse, mid, f"SELECT name, file_id FROM {{s}}.{CATALOG_FILES.name} ORDER BY file_id") == [
        ("old-1.csv", 1), ("old-0.csv", 2), (GOOD.name, 3),
    ]
    assert _rows(warehouse, mid, f"SELECT sku, file_id FROM {{s}}.{CATALOG_FITMENT.name} WHERE sku LIKE 'OLD-%' ORDER BY sku") == [
        ("OLD-0", 2), ("OLD-1", 1),
    ]
    assert _rows(warehouse, mid, f"SELECT count(*) FROM {{s}}.{CATALOG_FITMENT.name} WHERE file_id = 3") == [(12,)]
    assert _rows(warehouse, mid, f"SELECT sku, file_id, source_row FROM {{s}}.{CATALOG_PARTS.name} "
                                 "WHERE sku IN ('OLD-0', 'BS-593260') ORDER BY sku, valid_from") == [
        ("BS-593260", 1, 8), ("BS-593260", 3, 2), ("OLD-0", 2, 7),
    ]
    assert summary.parts_changed == 1 and summary.parts_new == 8
    with warehouse.merchant_scope(mid) as conn:
        for spec in (CATALOG_FITMENT, CATALOG_PARTS):
            columns = {r[0] for r in conn.fetchall(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND "
                "(table_schema = ? OR (table_catalog = ? AND table_schema = 'main'))", [spec.name, schema, schema])}
            assert columns == set(spec.column_names)
        # The file's name, digest and load time come from catalog_files.
        before, now = parts_valid_on(conn, schema, T0 - timedelta(hours=1)), parts_valid_on(conn, schema, T0)
    assert (before["OLD-0"].source_file, before["OLD-0"].source_sha256, before["OLD-0"].loaded_at) == (
        "old-0.csv", "a" * 64, loaded["old-0.csv"])
    assert (before["BS-593260"].source_file, before["BS-593260"].unit_cost) == ("old-1.csv", Decimal("1.50"))
    assert (now["BS-593260"].source_file, now["BS-593260"].source_sha256, now["BS-593260"].loaded_at) == (
        GOOD.name, summary.sha256, T0)
    # The migrated tables take the next load as any other.
    assert import_catalog_file(warehouse, mid, BAD, now=T0 + timedelta(days=1)).rows_read


def test_amounts_without_a_currency_and_a_conflicting_sub_notation_are_rejected(warehouse, merchant_id, tmp_path):
    mid = _merchant(warehouse, merchant_id)
    path = _write(tmp_path / "c.csv", "sku,unit_cost,cost_currency,superseded_by\nA,1.00,,\nB SUB= C,2.00,USD,D\nE,3,USD,\n")
    summary = import_catalog_file(warehouse, mid, path, now=T0)
    reasons = dict(_rows(warehouse, mid, f"SELECT source_row, reason FROM {{s}}.{CATALOG_REJECTS.name}"))
    assert "without a cost_currency" in reasons[2] and "B SUB= C but superseded_by says D" in reasons[3]
    assert summary.parts_new == 1 and _current(warehouse, mid)["E"].unit_cost == Decimal("3")


def test_the_same_file_twice_changes_nothing(warehouse, merchant_id, tmp_path):
    mid = _merchant(warehouse, merchant_id)
    import_catalog_file(warehouse, mid, GOOD, now=T0)
    import_catalog_file(warehouse, mid, BAD, now=T0)
    specs = (CATALOG_PARTS, CATALOG_FITMENT, CATALOG_REJECTS, CATALOG_FILES)
    before = {spec.name: _rows(warehouse, mid, f"SELECT * FROM {{s}}.{spec.name} ORDER BY 1, 2, 3") for spec in specs}
    again = import_catalog_file(warehouse, mid, GOOD, now=T0 + timedelta(days=2))
    assert again.already_loaded and "nothing changed" in again.describe()
    assert {spec.name: _rows(warehouse, mid, f"SELECT * FROM {{s}}.{spec.name} ORDER BY 1, 2, 3") for spec in specs} == before
    # The same rows under another name: a new file, but no part changes.
    copy = shutil.copyfile(GOOD, tmp_path / "catalog-copy.csv")
    with copy.open("a") as fh:
        fh.write("\n")
    same = import_catalog_file(warehouse, mid, copy, now=T0 + timedelta(days=3))
    assert (same.parts_new, same.parts_changed, same.parts_unchanged, same.parts_reresolved) == (0, 0, 9, 0)
    assert _rows(warehouse, mid, f"SELECT * FROM {{s}}.{CATALOG_PARTS.name} ORDER BY 1, 2, 3") == before[CATALOG_PARTS.name]


def _edited(tmp_path: Path, name: str, edit) -> Path:
    rows = list(csv.reader(io.StringIO(GOOD.read_text())))
    header = [h.lower().replace(" ", "_") for h in rows[0]]
    body = [dict(zip(header, r, strict=True)) for r in rows[1:]]
    body = [r for r in (edit(r) for r in body) if r is not None]
    path = tmp_path / name
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(body)
    return path


def test_a_cost_change_keeps_history(warehouse, merchant_id, tmp_path):
    mid = _merchant(warehouse, merchant_id)
    schema = merchant_schema(mid)
    import_catalog_file(warehouse, mid, GOOD, now=T0)

    def recost(row):
        if row["sku"] == "BS-593260":
            row["unit_cost"], row["landed_cost"] = "6.90", "7.60"
        return row

    april = datetime(2026, 4, 1, tzinfo=UTC)
    summary = import_catalog_file(warehouse, mid, _edited(tmp_path, "april.csv", recost), now=april)
    assert (summary.parts_changed, summary.parts_unchanged, summary.parts_new) == (1, 8, 0)
    with warehouse.merchant_scope(mid) as conn:
        # Profit for March uses March's cost; the first version also stands for the time before.
        march = parts_valid_on(conn, schema, datetime(2026, 3, 15, tzinfo=UTC))["BS-593260"]
        last_year = parts_valid_on(conn, schema, datetime(2025, 6, 1, tzinfo=UTC))["BS-593260"]
        may = parts_valid_on(conn, schema, datetime(2026, 5, 1, tzinfo=UTC))["BS-593260"]
    assert march.unit_cost == last_year.unit_cost == Decimal("6.42") and march.valid_to == april
    assert (may.unit_cost, may.landed_cost, may.valid_from, may.source_file) == (Decimal("6.90"), Decimal("7.60"), april, "april.csv")
    versions = dict(_rows(warehouse, mid, f"SELECT sku, count(*) FROM {{s}}.{CATALOG_PARTS.name} GROUP BY sku"))
    assert versions["BS-593260"] == 2 and all(n == 1 for sku, n in versions.items() if sku != "BS-593260")
    # An older file after a newer one is refused: history stays in order.
    with pytest.raises(CatalogFileError, match="date order"):
        import_catalog_file(warehouse, mid, _edited(tmp_path, "late.csv", lambda r: {**r, "unit_cost": "1.00"}),
                            effective_at=datetime(2026, 3, 20, tzinfo=UTC), now=april + timedelta(days=1))


def test_a_later_file_extends_a_chain_and_another_cannot_close_a_cycle(warehouse, merchant_id, tmp_path):
    mid = _merchant(warehouse, merchant_id)
    schema = merchant_schema(mid)
    import_catalog_file(warehouse, mid, GOOD, now=T0)
    later = T0 + timedelta(days=30)
    path = _write(tmp_path / "sub.csv", "sku,brand,mpn,unit_cost,cost_currency,superseded_by\n"
                  "532145338,Husqvarna,532145338,4.05,USD,590-HUS\n590-HUS,Husqvarna,590-HUS,4.40,USD,\n")
    summary = import_catalog_file(warehouse, mid, path, now=later)
    # The stored chain 131111 -> 138024 -> 145338 -> 532145338 now ends at 590-HUS.
    assert (summary.parts_new, summary.parts_changed, summary.parts_reresolved) == (1, 1, 3)
    parts = _current(warehouse, mid)
    for sku in ("131111", "138024", "145338", "532145338", "590-HUS"):
        assert (parts[sku].current_sku, parts[sku].master_part) == ("590-HUS", "HUSQVARNA|590-HUS")
    assert parts["138024"].unit_cost == Decimal("3.10") and parts["138024"].source_file == GOOD.name
    with warehouse.merchant_scope(mid) as conn:
        assert parts_valid_on(conn, schema, T0)["138024"].master_part == HUSQVARNA

    cycle = _write(tmp_path / "cycle.csv", "sku,brand,mpn,unit_cost,cost_currency,superseded_by\n"
                   "590-HUS,Husqvarna,590-HUS,4.40,USD,131111\nJD-AM125172,John Deere,AM125172,9.10,USD,\n")
    refused = import_catalog_file(warehouse, mid, cycle, now=later + timedelta(days=1))
    assert refused.cycles and set(refused.cycles[0]) == {"590-HUS", "131111", "138024", "145338", "532145338"}
    (reason,) = [r for (r,) in _rows(warehouse, mid, f"SELECT reason FROM {{s}}.{CATALOG_REJECTS.name}")]
    assert "supersession cycle" in reason and "590-HUS" in reason and "131111" in reason
    parts = _current(warehouse, mid)
    assert parts["590-HUS"].superseded_by is None and parts["JD-AM125172"].unit_cost == Decimal("9.10")


def test_columns_a_file_lacks_keep_their_stored_values(warehouse, merchant_id, tmp_path):
    mid = _merchant(warehouse, merchant_id)
    import_catalog_file(warehouse, mid, GOOD, now=T0)
    fitment = _table(warehouse, mid, CATALOG_FITMENT, order="sku, source_row")
    costs = _write(tmp_path / "costs.csv", "SKU,Unit Cost,Cost Currency\nBS-593260,6.55,USD\nNEW-1,1.00,USD\n")
    summary = import_catalog_file(warehouse, mid, costs, now=T0 + timedelta(days=1))
    assert (summary.parts_changed, summary.parts_new) == (1, 1)
    bs = _current(warehouse, mid)["BS-593260"]
    assert (bs.unit_cost, bs.brand, bs.mpn, bs.gtin, bs.map_price, bs.extra) == (
        Decimal("6.55"), "Briggs & Stratton", "593260", "024166172401", Decimal("12.99"), {"country_of_origin": "USA"},
    )
    assert _table(warehouse, mid, CATALOG_FITMENT, order="sku, source_row") == fitment  # no fitment columns: kept


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        return text  # a spreadsheet keeps what is not a number as text


def _xlsx_from_csv(source: Path, target: Path) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    rows = list(csv.reader(io.StringIO(source.read_text())))
    sheet.append(rows[0])
    header = [h.lower().replace(" ", "_") for h in rows[0]]
    for row in rows[1:]:
        cells = []
        for name, value in zip(header, row, strict=True):
            if value and name in {"unit_cost", "landed_cost", "map_price", "min_price", "max_price"}:
                cells.append(_number(value, float))  # as a spreadsheet stores amounts
            elif value and name.startswith("fitment_year"):
                cells.append(_number(value, int))
            elif value and name == "gtin" and value.startswith("0") and len(value) == 12:
                cells.append(int(value))  # Excel dropped the leading zero of a typed UPC
            else:
                cells.append(value or None)
        sheet.append(cells)
    book.save(target)
    return target


def test_xlsx_and_csv_give_the_same_rows(warehouse, merchant_id, tmp_path):
    from_csv, from_xlsx = _merchant(warehouse, merchant_id, "csv"), _merchant(warehouse, merchant_id, "xlsx")
    xlsx = _xlsx_from_csv(GOOD, tmp_path / "parts_outdoor_power.xlsx")
    import_catalog_file(warehouse, from_csv, GOOD, now=T0)
    summary = import_catalog_file(warehouse, from_xlsx, xlsx, now=T0)
    assert summary.rows_rejected == 0
    for spec, order in ((CATALOG_PARTS, "sku"), (CATALOG_FITMENT, "sku, source_row")):
        a, b = _table(warehouse, from_csv, spec, order), _table(warehouse, from_xlsx, spec, order)
        assert len(a) > 0
        assert [{k: v for k, v in r.items() if k != "content_hash"} for r in a] == [
            {k: v for k, v in r.items() if k != "content_hash"} for r in b
        ]
    bad_xlsx = _xlsx_from_csv(BAD, tmp_path / "bad.xlsx")
    import_catalog_file(warehouse, from_xlsx, bad_xlsx, now=T0)
    reasons = _rows(warehouse, from_xlsx, f"SELECT source_row, reason FROM {{s}}.{CATALOG_REJECTS.name} ORDER BY 1")
    assert [r[0] for r in reasons] == sorted(REJECTED)


# ------------------------------------------------------------------------------------ the asset


def test_the_catalog_asset_loads_the_file_its_run_names(warehouse, warehouse_url, merchant_id, instance, tmp_path):
    from assets.partitions import MERCHANTS

    mid = _merchant(warehouse, merchant_id)
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    inbox = InboxResource(root=str(tmp_path / "inbox"))
    folder = inbox.merchant_dir(mid, "catalog")
    folder.mkdir(parents=True)
    shutil.copyfile(GOOD, folder / GOOD.name)
    resources = {"warehouse": WarehouseResource(url=warehouse_url), "inbox": inbox}

    def run(**kwargs):
        result = dg.materialize([catalog_parts], partition_key=mid, instance=instance, resources=resources, **kwargs)
        (mat,) = result.asset_materializations_for_node(catalog_parts.op.name)
        return {k: v.value for k, v in mat.metadata.items()}

    meta = run(tags={CATALOG_FILE_TAG: GOOD.name})
    assert (meta["file"], meta["parts_new"], meta["fitment_rows"], meta["already_loaded"]) == (GOOD.name, 9, 12, False)
    assert run(tags={CATALOG_FILE_TAG: GOOD.name})["already_loaded"] is True
    # Without a file named: every file of the folder not loaded yet.
    shutil.copyfile(BAD, folder / BAD.name)
    meta = run()
    assert (meta["file"], meta["rows_rejected"]) == (BAD.name, 13)
    assert run() == {"files": 0}
    with pytest.raises(dg.Failure, match="no catalog file 'missing.csv'"):
        run(run_config={"ops": {catalog_parts.op.name: {"config": {"file": "missing.csv"}}}})
    with pytest.raises(dg.Failure, match="not a file name"):
        run(run_config={"ops": {catalog_parts.op.name: {"config": {"file": "../other/catalog/x.csv"}}}})
    other = tmp_path / "elsewhere.csv"
    shutil.copyfile(GOOD, other)
    (folder / "linked.csv").symlink_to(other)
    with pytest.raises(dg.Failure, match="is a link"):
        run(tags={CATALOG_FILE_TAG: "linked.csv"})
    assert run() == {"files": 0}  # nor is a link loaded with the folder
    (folder / "garbage.csv").write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(dg.Failure, match="binary"):
        run(tags={CATALOG_FILE_TAG: "garbage.csv"})
