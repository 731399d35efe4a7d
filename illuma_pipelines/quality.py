"""Data-quality suites for the core tables, run with great-expectations 1.x (no Dagster here).

Each suite is data: a list of expectations per table. `validate_frame` runs one suite on a
DataFrame in an ephemeral GX context and returns what failed, with counts and never the failing
values themselves (they may be PII). `order_reconciliation_mismatches` holds every order to its
lines and its total to its parts, by each channel's own rule (`TOTAL_RULES`), in exact decimals.
`plaintext_pii_findings` is the scan that proves no plaintext buyer PII sits in a warehouse
column.

great_expectations is imported inside the functions: it costs seconds, and the code location
must load without it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd

from illuma_pipelines.marketplaces import CHANNELS
from illuma_pipelines.normalize.money import ISO_4217_ACTIVE
from illuma_pipelines.normalize.vocab import AdjustmentKind, FulfillmentChannel, OrderStatus

STATUSES = sorted(s.value for s in OrderStatus)
CURRENCIES = sorted(ISO_4217_ACTIVE)


@dataclass(frozen=True)
class Expect:
    """One expectation: a GX expectation class name and its keyword arguments."""

    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Only where the table has this column (suites are shared by engines and channel subsets).
    column: str | None = None

    @property
    def label(self) -> str:
        target = self.kwargs.get("column") or ",".join(self.kwargs.get("column_list", []))
        return f"{self.kind}({target})"


def _not_null(*columns: str) -> list[Expect]:
    return [Expect("ExpectColumnValuesToNotBeNull", {"column": c}) for c in columns]


def _non_negative(*columns: str) -> list[Expect]:
    return [
        Expect("ExpectColumnValuesToBeBetween", {"column": c, "min_value": 0}, column=c)
        for c in columns
    ]


SUITES: dict[str, list[Expect]] = {
    "orders": [
        Expect("ExpectCompoundColumnsToBeUnique", {"column_list": ["channel", "marketplace_order_id"]}),
        *_not_null("channel", "marketplace_order_id", "status", "fulfillment_channel"),
        Expect("ExpectColumnValuesToBeInSet", {"column": "channel", "value_set": list(CHANNELS)}),
        Expect("ExpectColumnValuesToBeInSet", {"column": "status", "value_set": STATUSES}),
        Expect(
            "ExpectColumnValuesToBeInSet",
            {"column": "fulfillment_channel", "value_set": [f.value for f in FulfillmentChannel]},
        ),
        # Pending orders carry no currency yet; when present it must be ISO 4217.
        Expect("ExpectColumnValuesToBeInSet", {"column": "currency", "value_set": CURRENCIES}),
        *_non_negative("items_subtotal", "shipping_total", "tax_total"),
    ],
    "order_lines": [
        Expect(
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": ["channel", "marketplace_order_id", "line_id"]},
        ),
        *_not_null("channel", "marketplace_order_id", "line_id", "quantity_ordered"),
        Expect("ExpectColumnValuesToBeInSet", {"column": "currency", "value_set": CURRENCIES}),
        *_non_negative("quantity_ordered", "quantity_shipped", "unit_price", "item_price"),
    ],
    "order_adjustments": [
        *_not_null("channel", "marketplace_order_id", "kind"),
        Expect(
            "ExpectColumnValuesToBeInSet",
            {"column": "kind", "value_set": [k.value for k in AdjustmentKind]},
        ),
        Expect("ExpectColumnValuesToBeInSet", {"column": "currency", "value_set": CURRENCIES}),
    ],
    "inventory_snapshots": [
        Expect(
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": ["snapshot_date", "channel", "marketplace_id", "sku"]},
            column="snapshot_date",
        ),
        *_not_null("sku", "channel", "marketplace_id"),
        *_non_negative(
            "fulfillable", "inbound", "reserved", "unfulfillable", "merchant_fulfilled"
        ),
    ],
}

RECONCILIATION_TOLERANCE = Decimal("0.01")


@dataclass(frozen=True)
class Failure:
    expectation: str
    unexpected_count: int | None


@dataclass(frozen=True)
class QualityReport:
    table: str
    rows: int
    evaluated: int
    failures: tuple[Failure, ...]

    @property
    def success(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        if self.success:
            return f"{self.table}: {self.evaluated} expectations passed on {self.rows} rows"
        return f"{self.table}: " + "; ".join(
            f"{f.expectation} failed ({f.unexpected_count} rows)" for f in self.failures
        )


def _applicable(suite: Sequence[Expect], frame: pd.DataFrame) -> list[Expect]:
    out = []
    for exp in suite:
        needed = [exp.column] if exp.column else []
        needed += [exp.kwargs["column"]] if "column" in exp.kwargs else []
        needed += list(exp.kwargs.get("column_list", []))
        if exp.column is not None and exp.column not in frame.columns:
            continue
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise KeyError(f"{exp.label} needs column(s) {missing} that the table does not have")
        out.append(exp)
    return out


def _gx_ready(frame: pd.DataFrame) -> pd.DataFrame:
    # GX compares numbers with floats; Decimal and pyarrow decimal columns become float64 for
    # the range checks only (exact amounts are checked in `order_reconciliation_mismatches`).
    out = frame.copy()
    for name in out.columns:
        col = out[name]
        if col.dtype == object and col.map(lambda v: isinstance(v, Decimal)).any():
            out[name] = pd.to_numeric(col.map(lambda v: None if v is None else float(v)))
        elif str(col.dtype).startswith("decimal"):
            out[name] = col.astype("float64")
    return out


def validate_frame(table: str, frame: pd.DataFrame, suite: Sequence[Expect] | None = None) -> QualityReport:
    """Run the table's suite (or `suite`) on `frame` with great-expectations."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    expectations = _applicable(SUITES[table] if suite is None else suite, frame)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # No progress bars: they flood the demo's console and every run's captured logs.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_def = (
        context.data_sources.add_pandas(f"{table}_source")
        .add_dataframe_asset(name=table)
        .add_batch_definition_whole_dataframe(f"{table}_batch")
    )
    gx_suite = context.suites.add(gx.ExpectationSuite(name=f"{table}_suite"))
    by_id: dict[str, Expect] = {}
    for exp in expectations:
        added = gx_suite.add_expectation(getattr(gx.expectations, exp.kind)(**exp.kwargs))
        by_id[str(added.id)] = exp
    result = batch_def.get_batch(batch_parameters={"dataframe": _gx_ready(frame)}).validate(
        gx_suite, result_format="SUMMARY"
    )
    failures = []
    # GX does not return results in suite order: match them by expectation id.
    for res in result.results:
        exp = by_id[str(res.expectation_config.id)]
        if not res.success:
            count = (res.result or {}).get("unexpected_count")
            failures.append(Failure(exp.label, int(count) if count is not None else None))
    failures.sort(key=lambda f: f.expectation)
    return QualityReport(table, len(frame), len(expectations), tuple(failures))


# Each part of an order the channel states both on the order and per line: (part, the order's
# column, the line columns that add up to it). A line value the channel left out counts as none.
RECONCILED_PARTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("items", "items_subtotal", ("item_price",)),
    ("shipping", "shipping_total", ("shipping_price",)),
    ("promotions", "promotion_total", ("promotion_discount",)),
    ("tax", "tax_total", ("item_tax", "shipping_tax", "gift_wrap_tax")),
)
_ORDER_COLUMNS = ("channel", "marketplace_order_id", "currency", "order_total", "other_charges_total") + tuple(
    column for _, column, _ in RECONCILED_PARTS
)
_LINE_COLUMNS = ("channel", "marketplace_order_id", "currency", "gift_wrap_price", "other_charges") + tuple(
    column for _, _, columns in RECONCILED_PARTS for column in columns
)


@dataclass(frozen=True)
class TotalRule:
    """How one channel's order total is made of the order's parts.

    The parts are items + shipping + gift wrap - promotions + the order's other charges (fees,
    adjustments); the lines' other charges (handling, import charges) are accepted either inside
    the order's shipping or on top of it, as the channel states neither; ``tax`` is ``"added"`` when the
    total always adds the tax, ``"optional"`` when the channel's total holds it in some cases
    and not in others (both sums are accepted). ``open_ended``: the total may also hold charges
    the model does not carry, so only a total below the parts is a mismatch.
    """

    tax: str
    open_ended: bool
    why: str


TOTAL_RULES: dict[str, TotalRule] = {
    "amazon": TotalRule(
        tax="optional",
        open_ended=True,
        why="v2026 proceeds.grandTotal adds up every proceeds breakdown, order-only ones such as "
        "DELIVERY_TIP included; v0 OrderTotal adds US sales tax but holds VAT inside the item "
        "prices on EU marketplaces",
    ),
    "ebay": TotalRule(
        tax="optional",
        open_ended=False,
        why="pricingSummary.total = priceSubtotal + priceDiscount + deliveryCost + "
        "deliveryDiscount + fee + adjustment, plus the collect-and-remit tax only when the order "
        "was read with fieldGroups=TAX_BREAKDOWN",
    ),
    "walmart": TotalRule(
        tax="added",
        open_ended=False,
        why="the PRODUCT and SHIPPING charges of every line and their tax (a null tax is none); "
        "Walmart orders carry no promotion amounts",
    ),
}


@dataclass(frozen=True)
class Mismatch:
    """One part of one order that its lines (or its own parts, for ``total``) do not add up to."""

    channel: str
    marketplace_order_id: str
    part: str
    on_order: Any
    from_lines: Any

    def describe(self) -> str:
        order = f"{self.channel} {self.marketplace_order_id}"
        if self.part == "rule":
            return f"{order}: no reconciliation rule for channel {self.channel!r}"
        source = "its parts" if self.part == "total" else "its lines"
        return (
            f"{order}: {self.part} {_shown(self.on_order)} on the order, "
            f"{_shown(self.from_lines)} from {source}"
        )


def _shown(value: Any) -> str:
    """An amount as people write it: the warehouse's 4 places cut to what is needed, at least
    cents (19.8000 -> 19.80, 19940 -> 19940.00)."""
    if not isinstance(value, Decimal):
        return str(value)
    value = value.normalize()
    if value.as_tuple().exponent > -2:  # type: ignore[operator]
        value = value.quantize(Decimal("0.01"))
    return f"{value:f}"


def _amount(value: Any) -> Decimal | None:
    """An amount cell as an exact Decimal (DuckDB frames hold float64, PostgreSQL Decimal)."""
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _text(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return None
    return str(value)


def _columns(frame: pd.DataFrame, needed: Sequence[str], table: str) -> pd.DataFrame:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise KeyError(f"reconciling orders needs column(s) {missing} that {table} does not have")
    return frame[list(needed)]


def order_reconciliation_mismatches(
    orders: pd.DataFrame, lines: pd.DataFrame, rules: dict[str, TotalRule] = TOTAL_RULES
) -> list[Mismatch]:
    """Where the orders of a partition do not reconcile with what their channel states.

    For every order: each of its lines is in the order's currency; its lines' item prices,
    shipping, promotions and taxes add up to the order's items subtotal, shipping, promotion and
    tax totals (where the order states one); and the order total is made of those parts by the
    channel's `TotalRule`. Exact Decimal arithmetic, a cent of tolerance for rounding.
    """
    if orders.empty:
        return []
    sums: dict[tuple[str, str], dict[str, Decimal]] = {}
    currencies: dict[tuple[str, str], set[str]] = {}
    if not lines.empty:
        for row in _columns(lines, _LINE_COLUMNS, "the order lines").itertuples(index=False):
            key = (row.channel, row.marketplace_order_id)
            acc = sums.setdefault(key, {})
            for name in _LINE_COLUMNS[3:]:
                value = _amount(getattr(row, name))
                if value is not None:
                    acc[name] = acc.get(name, Decimal(0)) + value
            currency = _text(row.currency)
            if currency is not None:
                currencies.setdefault(key, set()).add(currency)
    found: list[Mismatch] = []
    for row in _columns(orders, _ORDER_COLUMNS, "the orders").itertuples(index=False):
        key = (row.channel, row.marketplace_order_id)
        rule = rules.get(row.channel)
        if rule is None:
            found.append(Mismatch(*key, "rule", None, None))
            continue
        currency = _text(row.currency)
        other = sorted(currencies.get(key, set()) - {currency}) if currency else []
        if other:
            found.append(Mismatch(*key, "currency", currency, ", ".join(other)))
        parts = {part: _amount(getattr(row, column)) for part, column, _ in RECONCILED_PARTS}
        acc = sums.get(key)
        line_charges = (acc or {}).get("other_charges", Decimal(0))
        shipping_in_lines = False
        if acc is not None:
            for part, _, columns in RECONCILED_PARTS:
                stated = parts[part]
                if stated is None:
                    continue
                added = sum((acc.get(c, Decimal(0)) for c in columns), Decimal(0))
                if part == "shipping" and line_charges and abs(added + line_charges - stated) <= RECONCILIATION_TOLERANCE:
                    shipping_in_lines = True  # the order's shipping holds the lines' handling
                    continue
                if abs(added - stated) > RECONCILIATION_TOLERANCE:
                    found.append(Mismatch(*key, part, stated, added))
        total = _amount(row.order_total)
        if total is None or parts["items"] is None:
            continue
        before_tax = (
            parts["items"]
            + (parts["shipping"] or 0)
            + (acc or {}).get("gift_wrap_price", Decimal(0))
            - (parts["promotions"] or 0)
            + (_amount(row.other_charges_total) or 0)
            + (0 if shipping_in_lines else line_charges)
        )
        with_tax = before_tax + (parts["tax"] or 0)
        candidates = [with_tax] if rule.tax == "added" else [before_tax, with_tax]
        if rule.open_ended:
            balanced = total >= min(candidates) - RECONCILIATION_TOLERANCE
        else:
            balanced = any(abs(total - c) <= RECONCILIATION_TOLERANCE for c in candidates)
        if not balanced:
            expected = [min(candidates)] if rule.open_ended else list(dict.fromkeys(candidates))
            shown = " or ".join(_shown(c) for c in expected)
            found.append(
                Mismatch(*key, "total", total, ("at least " if rule.open_ended else "") + shown)
            )
    return found


EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
PHONE = re.compile(r"\+?[\d\s().-]{7,20}")
ISO_DATE_START = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T .]|$)")


def _looks_like_phone(value: str) -> bool:
    # 7 to 15 digits with phone punctuation; longer digit runs are marketplace ids (Amazon order
    # ids carry 17 digits), which identifier columns hold anyway.
    # An ISO date, or a version named after one (the retention policy's "2026-12-06.1"), is
    # not a phone number.
    value = value.strip()
    if ISO_DATE_START.match(value):
        return False
    digits = sum(ch.isdigit() for ch in value)
    return bool(PHONE.fullmatch(value)) and 7 <= digits <= 15 and not value.isdigit()


def plaintext_pii_findings(
    columns: Iterable[tuple[str, str, Iterable[Any]]],
    *,
    known_values: Iterable[str] = (),
    encrypted_columns: Iterable[tuple[str, str]] = (),
) -> list[tuple[str, str, str, int]]:
    """Where plaintext PII sits: (table, column, why, count) for each offending column.

    `columns` yields (table, column, values) for every text column scanned. A value is PII if it
    looks like an e-mail address or a phone number, or equals one of `known_values` (buyer names
    and addresses read from the source payloads). Columns in `encrypted_columns` must hold vault
    ciphertexts only.
    """
    from illuma_pipelines.vault import is_ciphertext

    known = {v for v in known_values if v and len(v) >= 4}
    must_encrypt = set(encrypted_columns)
    findings = []
    for table, column, values in columns:
        emails = phones = matches = clear = 0
        for value in values:
            if value is None or not isinstance(value, str) or not value:
                continue
            if (table, column) in must_encrypt:
                clear += 0 if is_ciphertext(value) else 1
                continue
            if is_ciphertext(value):
                continue
            emails += bool(EMAIL.search(value))
            if not column.endswith("_id"):
                phones += _looks_like_phone(value)
            matches += value in known
        for why, count in (
            ("e-mail address", emails),
            ("phone number", phones),
            ("buyer name or address", matches),
            ("not a vault ciphertext", clear),
        ):
            if count:
                findings.append((table, column, why, count))
    return findings
