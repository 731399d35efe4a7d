"""Every copied marketplace fixture is either normalized or recognised for what it is.

Each JSON file in tests/fixtures/amazon and tests/fixtures/walmart is classified by name; a new
file that matches no rule fails the test, so nobody adds a payload that silently goes untested.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from illuma_pipelines.normalize import amazon, ebay, loads, walmart

FIXTURES = Path(__file__).parent / "fixtures"

# (pattern, kind). Order matters: the first match wins.
RULES: list[tuple[str, str]] = [
    (r"_(400|500)\.json$", "error"),
    (r"^amazon_(v2026_)?(getOrders?|searchOrders)_", "orders"),
    (r"^amazon_getOrderItems_", "order_items"),
    (r"^amazon_getOrderItemsBuyerInfo_", "order_items_buyer"),
    (r"^amazon_getOrderBuyerInfo_", "order_buyer"),
    (r"^amazon_getOrderAddress_", "order_address"),
    (r"^amazon_getInventorySummaries_", "inventory"),
    (r"^amazon_finances2024_listTransactions_", "transactions"),
    (r"^amazon_(getPricing|getCompetitivePricing|getItemOffers|getListingOffers)_", "pricing"),
    # Finances v0 is superseded by 2024-06-19 (the version the extracts use): recognised, deliberately not mapped.
    (r"^amazon_listFinancialEvent", "finances_v0"),
    # Reports API bodies belong to the reports client, not to a normalizer.
    (r"^amazon_(createReport|getReports?|getReportDocument)_", "reports"),
    (r"^walmart_acknowledgeOrder_", "walmart_orders"),
    (r"^walmart_reconFileJson_", "walmart_recon"),
]


def classify(name: str) -> str:
    for pattern, kind in RULES:
        if re.search(pattern, name):
            return kind
    raise AssertionError(f"fixture {name} matches no rule in {__file__}; add one")


FILES = sorted((FIXTURES / "amazon").glob("*.json")) + sorted((FIXTURES / "walmart").glob("*.json"))


def load(path: Path) -> Any:
    return loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_fixture_is_handled(path: Path) -> None:
    kind = classify(path.name)
    body = load(path)
    if kind == "error":
        assert amazon.is_error_response(body) or walmart.is_error_response(body)
        assert body["errors"][0]["code"]
        with pytest.raises(amazon.AmazonErrorResponse):
            amazon.orders_from_response(body)
    elif kind == "orders":
        result = amazon.normalize_orders(amazon.orders_from_response(body))
        assert result.orders and result.rejects == []
        for order in result.orders:
            assert order.purchased_at is not None and order.purchased_at.tzinfo is not None
    elif kind in ("order_items", "order_items_buyer", "order_buyer", "order_address"):
        order_id = body["payload"]["AmazonOrderId"]
        shell = {
            "AmazonOrderId": order_id,
            "OrderStatus": "Unshipped",
            "FulfillmentChannel": "MFN",
            "PurchaseDate": "2020-01-01T00:00:00Z",
            "LastUpdateDate": "2020-01-01T00:00:00Z",
        }
        argument = {
            "order_items": "items",
            "order_items_buyer": "items_buyer_info",
            "order_buyer": "buyer_info",
            "order_address": "address",
        }[kind]
        if kind == "order_items_buyer":
            combined = amazon.combine_v0(shell, items={"OrderItems": []}, items_buyer_info=body)
        else:
            combined = amazon.combine_v0(shell, **{argument: body})
        result = amazon.normalize_orders([combined])
        assert result.rejects == [] and len(result.orders) == 1
        if kind == "order_items":
            assert len(result.lines) == len(body["payload"]["OrderItems"])
        if kind in ("order_buyer", "order_address"):
            assert len(result.pii) == 1
    elif kind == "inventory":
        summaries, marketplace = amazon.inventory_from_response(body)
        result = amazon.normalize_inventory(summaries, marketplace)
        assert result.inventory and result.rejects == []
    elif kind == "transactions":
        result = amazon.normalize_transactions(amazon.transactions_from_response(body))
        assert result.transactions and result.rejects == []
    elif kind == "pricing":
        result = amazon.normalize_pricing(body)
        assert result.rejects == []
        if "nocompetitive" not in path.name:
            assert result.prices
    elif kind == "finances_v0":
        with pytest.raises(ValueError, match="listTransactions"):
            amazon.transactions_from_response(body)
    elif kind == "reports":
        assert isinstance(body, dict)
    elif kind == "walmart_orders":
        result = walmart.normalize_orders(walmart.orders_from_response(body))
        assert result.orders and result.rejects == []
    elif kind == "walmart_recon":
        result = walmart.normalize_transactions(body)
        assert result.transactions and result.rejects == []
    else:  # pragma: no cover - classify() only returns the kinds above
        raise AssertionError(kind)


def test_ebay_fixtures_parse() -> None:
    directory = FIXTURES / "ebay"
    orders = ebay.normalize_orders(
        ebay.orders_from_response(load(directory / "ebay_getOrders_doc_shape.json"))
    )
    transactions = ebay.normalize_transactions(
        ebay.transactions_from_response(load(directory / "ebay_getTransactions_doc_shape.json"))
    )
    inventory = ebay.normalize_inventory(
        ebay.inventory_from_response(load(directory / "ebay_getInventoryItems_doc_shape.json"))
    )
    assert orders.orders and transactions.transactions and inventory.inventory
    assert orders.rejects == transactions.rejects == inventory.rejects == []


def test_every_fixture_is_listed_in_sources() -> None:
    sources = (FIXTURES / "SOURCES.md").read_text(encoding="utf-8")
    for directory in ("amazon", "walmart", "ebay"):
        for path in (FIXTURES / directory).iterdir():
            assert f"{directory}/{path.name}" in sources, (
                f"{directory}/{path.name} not in SOURCES.md"
            )
