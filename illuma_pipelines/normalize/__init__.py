"""Marketplace payload normalizers: raw Amazon, eBay and Walmart records -> one model.

Pure domain code (no Dagster). Per channel module (``amazon``, ``ebay``, ``walmart``):
``normalize_orders``, ``normalize_inventory``, ``normalize_transactions`` and the
``*_from_response`` helpers that pull records out of response bodies; Amazon adds
``combine_v0`` and ``parse_settlement_report``. Parse JSON bodies with :func:`loads` so JSON
numbers stay exact; :func:`normalize_order_payloads` parses and normalizes raw order records
one at a time (the core_orders path). Rows are the dataclasses in ``model``; ``to_frame`` turns
them into DataFrames for bulk loading.
"""

from . import amazon, ebay, walmart
from .amazon_settlement import SettlementFormatError, parse_settlement_report
from .frames import breakdown_frame, to_frame
from .model import (
    BuyerPII,
    FinancialTransaction,
    InventoryRecord,
    NormalizeResult,
    Order,
    OrderAdjustment,
    OrderLine,
    PriceObservation,
    SettlementLine,
    SettlementReport,
)
from .money import ISO_4217_ACTIVE, MoneyError, check_currency, loads, parse_amount
from .payloads import (
    OrderBatch,
    adjustments_frame,
    normalize_order_batch,
    normalize_order_payloads,
    paused_gc,
)
from .timeparse import TimeParseError
from .vocab import AdjustmentKind, FulfillmentChannel, OrderStatus

__all__ = [
    "ISO_4217_ACTIVE",
    "AdjustmentKind",
    "BuyerPII",
    "FinancialTransaction",
    "FulfillmentChannel",
    "InventoryRecord",
    "MoneyError",
    "NormalizeResult",
    "Order",
    "OrderAdjustment",
    "OrderLine",
    "OrderStatus",
    "PriceObservation",
    "SettlementFormatError",
    "SettlementLine",
    "SettlementReport",
    "TimeParseError",
    "amazon",
    "breakdown_frame",
    "check_currency",
    "ebay",
    "loads",
    "normalize_order_payloads",
    "normalize_order_batch",
    "OrderBatch",
    "adjustments_frame",
    "paused_gc",
    "parse_amount",
    "parse_settlement_report",
    "to_frame",
    "walmart",
]
