"""Data-quality suites for the core tables, run with great-expectations 1.x (no Dagster here).

Each suite is data: a list of expectations per table. `validate_frame` runs one suite on a
DataFrame in an ephemeral GX context and returns what failed, with counts and never the failing
values themselves (they may be PII). `plaintext_pii_findings` is the scan that proves no
plaintext buyer PII sits in a warehouse column.

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
            {"column_list": ["snapshot_date", "sku", "channel"]},
            column="snapshot_date",
        ),
        *_not_null("sku", "channel"),
        *_non_negative(
            "fulfillable", "inbound", "reserved", "unfulfillable", "merchant_fulfilled"
        ),
    ],
}

LINE_TOTALS_TOLERANCE = Decimal("0.01")


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
    # the range checks only (exact amounts are checked in `line_totals_mismatches`).
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


def line_totals_mismatches(orders: pd.DataFrame, lines: pd.DataFrame) -> list[tuple[str, str]]:
    """(channel, order id) of orders whose lines do not add up to the order's items subtotal,
    where the channel gives both (exact Decimal arithmetic, a cent of tolerance for rounding)."""
    if orders.empty or lines.empty:
        return []
    sums: dict[tuple[str, str], Decimal] = {}
    for channel, order_id, price in lines[["channel", "marketplace_order_id", "item_price"]].itertuples(index=False):
        if price is None or (isinstance(price, float) and pd.isna(price)) or price is pd.NA:
            continue
        key = (channel, order_id)
        sums[key] = sums.get(key, Decimal(0)) + Decimal(str(price))
    bad = []
    for channel, order_id, subtotal in orders[["channel", "marketplace_order_id", "items_subtotal"]].itertuples(index=False):
        if subtotal is None or subtotal is pd.NA or (isinstance(subtotal, float) and pd.isna(subtotal)):
            continue
        key = (channel, order_id)
        if key in sums and abs(sums[key] - Decimal(str(subtotal))) > LINE_TOTALS_TOLERANCE:
            bad.append(key)
    return bad


EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
PHONE = re.compile(r"\+?[\d\s().-]{7,20}")


def _looks_like_phone(value: str) -> bool:
    # 7 to 15 digits with phone punctuation; longer digit runs are marketplace ids (Amazon order
    # ids carry 17 digits), which identifier columns hold anyway.
    value = value.strip()
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
