"""The sandbox's catalog files, fetched over HTTP and loaded with `illuma merchants catalog import`
into a real warehouse (issue 14): every SKU the marketplaces sell has a cost, the supersessions
resolve, and the file's bad rows are rejected with their reasons while the rest loads."""

from __future__ import annotations

import csv
import io

import requests

from illuma_pipelines.catalog import CATALOG_PARTS, CATALOG_REJECTS, parts_valid_on
from illuma_pipelines.cli import main
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.registry import add_merchant
from illuma_pipelines.sandbox.world import parts_catalog
from tests.sandbox_helpers import amazon_sandbox, sandbox_now


def test_the_sandbox_catalog_loads_through_the_cli(warehouse, warehouse_url, merchant_id, tmp_path, capsys):
    MERCHANT = merchant_id("catalog")  # noqa: N806
    add_merchant(warehouse, MERCHANT)
    with amazon_sandbox() as sandbox:
        response = requests.get(f"{sandbox.base_url}/files/{MERCHANT}/catalog.csv", timeout=10)
        assert response.ok and response.headers["content-type"].startswith("text/csv")
        assert requests.get(f"{sandbox.base_url}/files/..%2Fetc/catalog.csv", timeout=10).status_code == 404
        sold = {p.sku: p for p in parts_catalog(sandbox.state.config.seed, MERCHANT)}
    path = tmp_path / "catalog.csv"
    path.write_bytes(response.content)
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) > len(sold)  # several fitment rows per part

    assert main(["--warehouse-url", warehouse_url, "merchants", "catalog", "import", MERCHANT, str(path)]) == 0
    printed = capsys.readouterr().out
    assert f"for merchant {MERCHANT}" in printed and "4 rejected" in printed
    # The same file again changes nothing, and says so.
    assert main(["--warehouse-url", warehouse_url, "merchants", "catalog", "import", MERCHANT, str(path)]) == 0
    assert "already loaded" in capsys.readouterr().out

    schema = merchant_schema(MERCHANT)
    with warehouse.merchant_scope(MERCHANT) as conn:
        parts = parts_valid_on(conn, schema, sandbox_now())
        reasons = [r[0] for r in conn.fetchall(f"SELECT reason FROM {schema}.{CATALOG_REJECTS.name} ORDER BY source_row")]
        versions = conn.row_count(schema, CATALOG_PARTS.name)
    # Every SKU the marketplaces sell has its cost, in USD, and GTINs keep their leading zeros.
    for sku, part in sold.items():
        assert parts[sku].unit_cost == part.cost and parts[sku].cost_currency == "USD", sku
        assert parts[sku].gtin == "00" + part.upc
    # Supersessions resolve to the current part, through the chain too.
    first, second, third = list(sold)[:3]
    assert parts[f"{first}-OLD1"].current_sku == first
    assert parts[f"{second}-OLD2"].current_sku == second
    assert parts[f"{third}-R1"].current_sku == parts[f"{third}-R2"].current_sku == third
    assert parts[f"{third}-R1"].master_part == parts[third].master_part
    assert versions == len(sold) + 4
    assert len(reasons) == 4
    joined = " | ".join(reasons).lower()
    for fragment in ("sku", "call for price", "negative", "xyz"):
        assert fragment in joined, (fragment, reasons)


def test_an_unknown_merchant_or_a_file_that_is_not_a_catalog_is_a_clear_error(
    warehouse, warehouse_url, merchant_id, tmp_path, capsys
):
    MERCHANT = merchant_id("catalog")  # noqa: N806
    garbage = tmp_path / "catalog.csv"
    garbage.write_bytes(bytes(range(256)) * 8)
    add_merchant(warehouse, MERCHANT)
    assert main(["--warehouse-url", warehouse_url, "merchants", "catalog", "import", MERCHANT, str(garbage)]) == 2
    err = capsys.readouterr().err
    assert "nothing of" in err and "was loaded" in err
    good = tmp_path / "ok.csv"
    good.write_text("sku,unit_cost,cost_currency\nA-1,2.50,USD\n")
    assert main(["--warehouse-url", warehouse_url, "merchants", "catalog", "import", "no_such_merchant_x", str(good)]) == 2
    assert "no_such_merchant_x" in capsys.readouterr().err
