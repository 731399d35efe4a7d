"""The demo merchants' own parts catalogs, served by the sandbox as the files merchants drop into
their inbox (issue 14): `GET /files/<merchant_id>/catalog.csv`.

Not a marketplace: what a merchant knows about its parts lives in its own catalog (costs, MAP,
price bounds, fitment, supersessions), exported from its ERP or parts-management system as a CSV
with PIES/ACES-style headers. The file is deterministic in (seed, merchant id) and matches the
SKUs the marketplaces sell (`world.parts_catalog`), so every sold SKU has a cost:

- one row per fitment (vehicle year range, make, model, engine for auto parts; equipment model
  for outdoor power and ag parts), the part's data repeated on each;
- costs in USD with landed cost (cost + inbound freight and duty), MAP on some brands, a price
  floor and ceiling around the marketplaces' price;
- supersessions: old part numbers superseded by current SKUs, one of them a chain (A -> B -> C);
- a column our schema does not know (`bin_location`), kept by the loader as an extra;
- a few bad rows, as real exports carry them: no SKU, a non-numeric cost, a negative cost, an
  unknown currency.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from illuma_pipelines.merchant_ids import MERCHANT_ID_PATTERN
from illuma_pipelines.sandbox.server import SandboxState
from illuma_pipelines.sandbox.world import FITS, Part, money, parts_catalog, stable_rng

COLUMNS = (
    "SKU", "Brand", "MPN", "Part_Type", "GTIN", "Unit_Cost", "Cost_Currency", "Landed_Cost",
    "MAP_Price", "Min_Price", "Max_Price", "Superseded_By", "Fitment_Year_From", "Fitment_Year_To",
    "Fitment_Make", "Fitment_Model", "Fitment_Engine", "Equipment_Model", "Bin_Location",
)
_VEHICLES = (
    ("Ford", "F-150", "5.0L V8"), ("Chevrolet", "Silverado 1500", "5.3L V8"),
    ("Toyota", "Tacoma", "3.5L V6"), ("Ram", "1500", "5.7L V8"), ("Honda", "Accord", "1.5L L4"),
    ("Jeep", "Wrangler", "3.6L V6"),
)
_EQUIPMENT = {
    "Briggs & Stratton": ("Intek 19HP", "500E Series", "Vanguard 23HP"),
    "Kohler": ("Courage SV600", "Command Pro CH740", "7000 Series KT745"),
    "Stens": ("Husqvarna YTH24V48", "Craftsman T110", "Toro TimeCutter 42"),
    "Rotary": ("Snapper SPX", "Cub Cadet XT1 LT42", "Murray 42"),
    "Oregon": ("Stihl MS 250", "Husqvarna 455 Rancher", "Echo CS-590"),
    "John Deere": ("D130", "X350", "5075E"),
}
_MAP_BRANDS = ("Briggs & Stratton", "Kohler", "John Deere", "ACDelco")


def _part_type(part: Part) -> str:
    rest = part.title.removeprefix(f"{part.brand} {part.mpn} ")
    for ending in FITS:
        rest = rest.removesuffix(f" {ending}")
    return rest


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def catalog_rows(seed: int, merchant_id: str) -> list[dict[str, str]]:
    """The rows of the merchant's catalog file, in file order."""
    parts = parts_catalog(seed, merchant_id)
    rows: list[dict[str, str]] = []
    for index, part in enumerate(parts):
        rng = stable_rng(seed, merchant_id, "merchant-catalog", part.sku)
        landed = money(part.cost * Decimal(str(rng.uniform(1.04, 1.12))))
        base = {
            "SKU": part.sku,
            "Brand": part.brand,
            "MPN": part.mpn,
            "Part_Type": _part_type(part),
            # GTIN-14 from the UPC: the leading zeros are part of the number.
            "GTIN": "00" + part.upc,
            "Unit_Cost": _money(part.cost),
            "Cost_Currency": "USD",
            "Landed_Cost": _money(landed) if index % 5 else "",  # some exports lack it
            "MAP_Price": _money(money(part.price * Decimal("0.85"))) if part.brand in _MAP_BRANDS else "",
            "Min_Price": _money(money(landed * Decimal("1.15"))),
            "Max_Price": _money(money(part.price * Decimal("1.35"))),
            "Superseded_By": "",
            "Bin_Location": f"{rng.choice('ABCDEF')}-{rng.randint(1, 40):02d}-{rng.randint(1, 6)}",
        }
        if part.brand in _EQUIPMENT:
            for model in rng.sample(_EQUIPMENT[part.brand], rng.randint(1, 3)):
                rows.append({**base, "Equipment_Model": model})
        else:
            for make, model, engine in rng.sample(_VEHICLES, rng.randint(1, 4)):
                start = rng.randint(2004, 2018)
                rows.append(
                    {
                        **base,
                        "Fitment_Year_From": str(start),
                        "Fitment_Year_To": str(start + rng.randint(0, 6)),
                        "Fitment_Make": make,
                        "Fitment_Model": model,
                        "Fitment_Engine": engine,
                    }
                )
    # Old part numbers the OEM superseded: two straight, one chain old -> older-current -> current.
    current = parts[:3]
    for n, part in enumerate(current[:2]):
        rows.append(_superseded(f"{part.sku}-OLD{n + 1}", part, part.sku))
    chain_end = current[2]
    rows.append(_superseded(f"{chain_end.sku}-R1", chain_end, f"{chain_end.sku}-R2"))
    rows.append(_superseded(f"{chain_end.sku}-R2", chain_end, chain_end.sku))
    # Rows a real export carries and the loader must reject (each with its reason).
    sample = parts[3]
    bad = {**rows[0], "Fitment_Year_From": "", "Fitment_Year_To": "", "Fitment_Make": "",
           "Fitment_Model": "", "Fitment_Engine": "", "Equipment_Model": ""}
    rows.append({**bad, "SKU": "", "MPN": sample.mpn})
    rows.append({**bad, "SKU": f"{sample.sku}-NC", "Unit_Cost": "call for price"})
    rows.append({**bad, "SKU": f"{sample.sku}-NEG", "Unit_Cost": "-4.10"})
    rows.append({**bad, "SKU": f"{sample.sku}-FX", "Cost_Currency": "XYZ"})
    return rows


def _superseded(sku: str, part: Part, by: str) -> dict[str, str]:
    return {
        "SKU": sku,
        "Brand": part.brand,
        "MPN": sku.split("-", 2)[-1],
        "Part_Type": _part_type(part),
        "Unit_Cost": _money(part.cost),
        "Cost_Currency": "USD",
        "Superseded_By": by,
    }


def catalog_csv(seed: int, merchant_id: str) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, restval="", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(catalog_rows(seed, merchant_id))
    return out.getvalue()


def routes(state: SandboxState) -> list[Route]:
    async def catalog(request: Request) -> Response:
        merchant_id = request.path_params["merchant_id"]
        if not MERCHANT_ID_PATTERN.fullmatch(merchant_id):
            return PlainTextResponse("not a merchant id\n", status_code=404)
        return PlainTextResponse(
            catalog_csv(state.config.seed, merchant_id),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{merchant_id}-catalog.csv"'},
        )

    return [Route("/{merchant_id}/catalog.csv", catalog)]
