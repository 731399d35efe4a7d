"""The money tables of one merchant and day, from that day's raw extracts (issue 15).

- Amazon: each V2 settlement flat file is a settlement (kind `settlement`) and its rows its lines;
  the summary row gives the reported total and is never summed. Finance transactions (Finances
  2024-06-19 listTransactions) become financial events, one row per breakdown leaf.
- eBay: each payout is a settlement (kind `payout`) whose lines are the transactions it pays
  (the `ebay_payout_transactions` extract); every transaction of the day is a financial event. A
  transaction's `amount` is net of its fees and unsigned (the sign is `bookingEntry`), so it
  becomes its gross (principal) line and one line per fee, which add up to the signed amount.
- Walmart: each reconciliation report is a settlement (kind `recon_report`) whose reported total
  is the PaymentSummary row's `Total Payable`; every other row is a line. Cells arrive as strings,
  a blank can be the two characters `""`, GTINs keep their leading zeros.

Every amount gets a fee category (`settlements.vocab`); a label no rule knows lands as `other`
and is counted (`MoneyLoaded.unknown_labels`). A line that cannot be read goes to `raw_quarantine`
(dataset `core_settlements` or `core_financial_events`) with its reason, and its settlement lands
without it, flagged as not adding up: never plugged, never dropped silently.

Writes replace the day's rows and any earlier rows of the same settlements and transactions
(a transaction near midnight lands in two days' windows), so re-runs never duplicate.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pandas as pd

from illuma_pipelines import normalize
from illuma_pipelines.core.orders import delete_channel_keys
from illuma_pipelines.core.tables import (
    FINANCIAL_EVENTS,
    FINANCIAL_EVENTS_QUARANTINE_DATASET,
    SETTLEMENT_LINES,
    SETTLEMENTS,
    SETTLEMENTS_QUARANTINE_DATASET,
)
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.normalize import amazon as amazon_normalize
from illuma_pipelines.normalize import ebay as ebay_normalize
from illuma_pipelines.normalize._common import RECORD_ERRORS, describe, optional_int, text
from illuma_pipelines.normalize.amazon_settlement import (
    SettlementFormatError,
    parse_settlement_report,
)
from illuma_pipelines.normalize.frames import table_frame
from illuma_pipelines.normalize.money import check_currency, parse_amount
from illuma_pipelines.normalize.timeparse import parse_iso, parse_mdy
from illuma_pipelines.normalize.walmart import MARKET_OF_CURRENCY
from illuma_pipelines.raw_records import QUARANTINE, RawRow, as_utc, raw_payloads
from illuma_pipelines.settlements.vocab import fee_category, transaction_kind
from illuma_pipelines.warehouse import Connection, TableSpec, Warehouse

ZERO = Decimal("0")
# An Amazon order id; the settlement file's order-id column can hold an FBA shipment id instead.
AMAZON_ORDER_ID = re.compile(r"^\d{3}-\d{7}-\d{7}$")
# The eBay Finances operation whose transactions say what a payout paid.
EBAY_PAYOUT_TRANSACTIONS = "payout_transactions"


@dataclass
class MoneyLoaded:
    """What `load_money_partition` wrote (the assets' metadata)."""

    settlements: list[dict[str, Any]] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    unknown_labels: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def not_adding_up(self) -> list[dict[str, Any]]:
        return [s for s in self.settlements if not s["adds_up"]]

    def settlement_metadata(self) -> dict[str, Any]:
        per_channel = Counter(s["channel"] for s in self.settlements)
        return {
            "settlements": len(self.settlements),
            "lines": len(self.lines),
            "not_adding_up": len(self.not_adding_up),
            "lines_rejected": sum(1 for r in self.rejects if r["dataset"] == SETTLEMENTS_QUARANTINE_DATASET),
            "labels_as_other": sum(self.unknown_labels.values()),
            **{f"settlements_{c}": n for c, n in sorted(per_channel.items())},
        }

    def event_metadata(self) -> dict[str, Any]:
        return {
            "events": len(self.events),
            "transactions": len({(e["channel"], e["transaction_id"], e["transaction_type"]) for e in self.events}),
            "rejected": sum(1 for r in self.rejects if r["dataset"] == FINANCIAL_EVENTS_QUARANTINE_DATASET),
        }


class _Collector:
    """Rows and rejects of one partition, with each amount's category counted."""

    def __init__(self, day: str, run_id: str) -> None:
        self.day, self.run_id = day, run_id
        self.out = MoneyLoaded()

    def category(self, channel: str, amount_type: str | None, description: str | None) -> str:
        category, known = fee_category(channel, amount_type, description)
        if not known:
            self.out.unknown_labels[(channel, " / ".join(x for x in (amount_type, description) if x) or "(none)")] += 1
        return category

    def reject(self, dataset: str, source: str, position: int, reason: str, raw: RawRow) -> None:
        self.out.rejects.append(
            {
                "partition_date": self.day, "dataset": dataset, "source": source, "position": position,
                "reason": reason, "payload": raw[1], "extracted_at": as_utc(raw[2]), "run_id": self.run_id,
            }
        )

    def settlement(self, lines: list[dict[str, Any]], **fields: Any) -> None:
        total = sum((line["amount"] for line in lines), ZERO)
        reported = fields.get("reported_total")
        difference = None if reported is None else reported - total
        for seq, line in enumerate(lines, start=1):
            line.update(channel=fields["channel"], settlement_id=fields["settlement_id"], line_seq=seq)
        self.out.settlements.append(
            {
                **fields,
                "lines_total": total,
                "line_count": len(lines),
                "difference": difference,
                "adds_up": difference == ZERO,
            }
        )
        self.out.lines.extend(lines)


def _posted(moment: datetime | None) -> tuple[datetime | None, str | None]:
    return moment, (moment.astimezone(UTC).date().isoformat() if moment else None)


def _midnight(day: date | None) -> datetime | None:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) if day else None


# ------------------------------------------------------------------------------------ Amazon
def _amazon_settlements(rows: Sequence[RawRow], c: _Collector) -> None:
    for position, raw in enumerate(rows):
        record = normalize.loads(raw[1])
        try:
            report = parse_settlement_report(record["document"])
        except (SettlementFormatError, KeyError, TypeError) as exc:
            c.reject(SETTLEMENTS_QUARANTINE_DATASET, "amazon.settlement_reports", position, describe(exc), raw)
            continue
        for number, reason in report.rejects:
            c.reject(SETTLEMENTS_QUARANTINE_DATASET, "amazon.settlement_reports", position, f"settlement {report.settlement_id} line {number}: {reason}", raw)
        marketplaces = ((record.get("report") or {}).get("marketplaceIds")) or [None]
        lines = []
        for line in report.lines:
            posted_at, posted_date = _posted(line.posted_at or _midnight(line.posted_date))
            order_id = line.order_id if line.order_id and AMAZON_ORDER_ID.match(line.order_id) else None
            lines.append(
                {
                    "posted_at": posted_at, "posted_date": posted_date,
                    "transaction_type": line.transaction_type,
                    "transaction_kind": transaction_kind("amazon", line.transaction_type),
                    "transaction_id": line.adjustment_id or line.shipment_id,
                    "order_id": order_id, "sku": line.sku, "product_id": None,
                    "quantity": line.quantity_purchased,
                    "amount_type": line.amount_type, "amount_description": line.amount_description,
                    "fee_category": c.category("amazon", line.amount_type, line.amount_description),
                    "amount": line.amount, "currency": line.currency, "marketplace_id": marketplaces[0],
                }
            )
        c.settlement(
            lines,
            channel="amazon", settlement_id=report.settlement_id, kind="settlement",
            marketplace_id=marketplaces[0], period_start=report.settlement_start,
            period_end=report.settlement_end,
            deposit_date=report.deposit_date.astimezone(UTC).date().isoformat() if report.deposit_date else None,
            currency=report.currency, reported_total=report.total_amount, status=None,
        )


def _event_group(record: Any) -> str | None:
    """The FinancialEventGroupId a transaction names. It is not the settlement id: the two are
    linked by period and amount, never by id."""
    for ident in (record.get("relatedIdentifiers") or ()) if isinstance(record, Mapping) else ():
        if isinstance(ident, Mapping) and ident.get("relatedIdentifierName") == "FINANCIAL_EVENT_GROUP_ID":
            return text(ident.get("relatedIdentifierValue"))
    return None


def _amazon_events(rows: Sequence[RawRow], c: _Collector) -> None:
    for position, raw in enumerate(rows):
        record = normalize.loads(raw[1])
        result = amazon_normalize.normalize_transactions([record])
        for _, reason in result.rejects:
            c.reject(FINANCIAL_EVENTS_QUARANTINE_DATASET, "amazon.financial_transactions", position, reason, raw)
        for tx in result.transactions:
            _events_of(tx, [(path, None, amount) for path, amount in tx.breakdown], _event_group(record), None, c)


def _with_rest(
    tx: normalize.FinancialTransaction, components: list[tuple[str, str | None, Decimal]]
) -> list[tuple[str, str | None, Decimal]]:
    """The components, led by what they leave of the transaction's amount (the principal of an
    eBay sale, an Amazon total without breakdowns): together they add up to the amount."""
    rest = tx.amount - sum((amount for _, _, amount in components), ZERO)
    return [(tx.type, None, rest), *components] if rest or not components else components


def _events_of(
    tx: normalize.FinancialTransaction,
    components: list[tuple[str, str | None, Decimal]],
    group_id: str | None,
    sku: str | None,
    c: _Collector,
) -> None:
    """One event row per component (`_with_rest`)."""
    posted_at, posted_date = _posted(tx.posted_at)
    for seq, (amount_type, description, amount) in enumerate(_with_rest(tx, components), start=1):
        c.out.events.append(
            {
                "channel": tx.channel, "transaction_id": tx.transaction_id, "transaction_type": tx.type,
                "component_seq": seq, "transaction_kind": transaction_kind(tx.channel, tx.type),
                "status": tx.status, "posted_at": posted_at, "posted_date": posted_date,
                "order_id": tx.order_id, "sku": sku, "amount_type": amount_type,
                "amount_description": description,
                "fee_category": c.category(tx.channel, amount_type, description),
                "amount": amount, "currency": tx.currency, "marketplace_id": tx.marketplace_id,
                "group_id": group_id,
            }
        )


# -------------------------------------------------------------------------------------- eBay
def _ebay_components(tx: normalize.FinancialTransaction, record: Mapping[str, Any]) -> list[tuple[str, str | None, Decimal]]:
    """The fee components of an eBay transaction (signed for the seller); a non-sale charge is
    one component named by its feeType."""
    if tx.type == "NON_SALE_CHARGE" and not tx.breakdown:
        return [(text(record.get("feeType")) or tx.type, text(record.get("transactionMemo")), tx.amount)]
    return [(path.removeprefix("fee:"), None, amount) for path, amount in tx.breakdown]


def _ebay_transaction(record: Any) -> tuple[normalize.FinancialTransaction | None, str | None]:
    result = ebay_normalize.normalize_transactions([record])
    if result.rejects:
        return None, result.rejects[0][1]
    return result.transactions[0], None


def _ebay_events(rows: Sequence[RawRow], c: _Collector) -> None:
    for position, raw in enumerate(rows):
        record = normalize.loads(raw[1])
        tx, problem = _ebay_transaction(record)
        if tx is None:
            c.reject(FINANCIAL_EVENTS_QUARANTINE_DATASET, "ebay.financial_transactions", position, problem or "", raw)
            continue
        _events_of(tx, _ebay_components(tx, record), text(record.get("payoutId")), None, c)


def _ebay_payouts(payouts: Sequence[RawRow], paid: Sequence[RawRow], c: _Collector) -> None:
    by_payout: dict[str, list[tuple[int, RawRow, Any]]] = defaultdict(list)
    for position, raw in enumerate(paid):
        record = normalize.loads(raw[1])
        payout_id = text(record.get("payoutId")) if isinstance(record, Mapping) else None
        by_payout[payout_id or ""].append((position, raw, record))
    for position, raw in enumerate(payouts):
        record = normalize.loads(raw[1])
        try:
            payout_id = text(record.get("payoutId"))
            amount = record.get("amount") or {}
            reported = parse_amount(amount.get("value"), "payout amount")
            currency = check_currency(amount.get("currency"), "payout currency")
            paid_at = parse_iso(record.get("payoutDate"), "payoutDate")
        except (*RECORD_ERRORS, AttributeError) as exc:
            c.reject(SETTLEMENTS_QUARANTINE_DATASET, "ebay.payouts", position, describe(exc), raw)
            continue
        lines = []
        for tx_position, tx_raw, tx_record in by_payout.get(payout_id or "", ()):
            tx, problem = _ebay_transaction(tx_record)
            if tx is None:
                c.reject(SETTLEMENTS_QUARANTINE_DATASET, f"ebay.{EBAY_PAYOUT_TRANSACTIONS}", tx_position, f"payout {payout_id}: {problem}", tx_raw)
                continue
            posted_at, posted_date = _posted(tx.posted_at)
            for amount_type, description, value in _with_rest(tx, _ebay_components(tx, tx_record)):
                lines.append(
                    {
                        "posted_at": posted_at, "posted_date": posted_date, "transaction_type": tx.type,
                        "transaction_kind": transaction_kind("ebay", tx.type),
                        "transaction_id": tx.transaction_id, "order_id": tx.order_id, "sku": None,
                        "product_id": None, "quantity": None, "amount_type": amount_type,
                        "amount_description": description,
                        "fee_category": c.category("ebay", amount_type, description),
                        "amount": value, "currency": tx.currency, "marketplace_id": tx.marketplace_id,
                    }
                )
        c.settlement(
            lines,
            channel="ebay", settlement_id=payout_id, kind="payout", marketplace_id=None,
            period_start=None, period_end=paid_at,
            deposit_date=paid_at.date().isoformat() if paid_at else None, currency=currency,
            reported_total=reported, status=text(record.get("payoutStatus")),
        )


# ----------------------------------------------------------------------------------- Walmart
def _cell(row: Mapping[str, Any], name: str) -> str | None:
    value = row.get(name)
    if isinstance(value, str):
        value = value.strip()
    return text(value)


def _report_date(value: str | None) -> date | None:
    """A report's date as availableReconFiles names it: MMDDYYYY (or MM/DD/YYYY)."""
    if value and re.fullmatch(r"\d{8}", value):
        value = f"{value[:2]}/{value[2:4]}/{value[4:]}"
    return parse_mdy(value, "reportDate")


def _walmart_reports(rows: Sequence[RawRow], c: _Collector) -> None:
    for position, raw in enumerate(rows):
        record = normalize.loads(raw[1])
        report_rows = record.get("rows") if isinstance(record, Mapping) else None
        summary = next(
            (r for r in report_rows or () if isinstance(r, Mapping) and _cell(r, "Transaction Type") == "PaymentSummary"),
            None,
        )
        key = (text(record.get("reportKey")) or text(record.get("reportDate"))) if isinstance(record, Mapping) else None
        try:
            if summary is None or key is None:
                raise ValueError("report has no PaymentSummary row or no report key")
            currency = check_currency(_cell(summary, "Currency"), "Currency")
            reported = parse_amount(_cell(summary, "Total Payable"), "Total Payable")
            start = parse_mdy(_cell(summary, "Period Start Date"), "Period Start Date")
            end = parse_mdy(_cell(summary, "Period End Date"), "Period End Date")
            report_day = _report_date(text(record.get("reportDate")))
        except (*RECORD_ERRORS, ValueError) as exc:
            c.reject(SETTLEMENTS_QUARANTINE_DATASET, "walmart.settlement_reports", position, describe(exc), raw)
            continue
        marketplace = MARKET_OF_CURRENCY.get(currency)
        lines = []
        for number, row in enumerate(report_rows):
            if row is summary:
                continue
            try:
                if not isinstance(row, Mapping):
                    raise ValueError(f"row is a {type(row).__name__}, not an object")
                tx_type = _cell(row, "Transaction Type")
                posted_at, posted_date = _posted(_midnight(parse_mdy(_cell(row, "Transaction Posted Timestamp"), "Transaction Posted Timestamp")))
                amount_type, description = _cell(row, "Amount Type"), _cell(row, "Transaction Description")
                lines.append(
                    {
                        "posted_at": posted_at, "posted_date": posted_date, "transaction_type": tx_type,
                        "transaction_kind": transaction_kind("walmart", tx_type),
                        "transaction_id": _cell(row, "Transaction Key"),
                        "order_id": _cell(row, "Purchase Order #"), "sku": _cell(row, "Partner Item Id"),
                        "product_id": _cell(row, "Partner GTIN"),
                        "quantity": optional_int(_cell(row, "Ship Qty"), "Ship Qty"),
                        "amount_type": amount_type, "amount_description": description,
                        "fee_category": c.category("walmart", amount_type, description),
                        "amount": parse_amount(_cell(row, "Amount"), "Amount"),
                        "currency": check_currency(_cell(row, "Currency") or currency, "Currency"),
                        "marketplace_id": marketplace,
                    }
                )
            except (*RECORD_ERRORS, ValueError) as exc:
                c.reject(SETTLEMENTS_QUARANTINE_DATASET, "walmart.settlement_reports", position, f"report {key} row {number}: {describe(exc)}", raw)
        c.settlement(
            lines,
            channel="walmart", settlement_id=key, kind="recon_report", marketplace_id=marketplace,
            period_start=_midnight(start), period_end=_midnight(end),
            deposit_date=report_day.isoformat() if report_day else None, currency=currency,
            reported_total=reported, status=None,
        )


# ------------------------------------------------------------------------------------- write
def _replace(conn: Connection, schema: str, spec: TableSpec, day: str, key: str, rows: list[dict[str, Any]], common: dict[str, Any]) -> None:
    conn.create_table(schema, spec)
    conn.execute(f"DELETE FROM {schema}.{spec.name} WHERE partition_date = ?", [day])
    delete_channel_keys(conn, schema, spec.name, key, {(r["channel"], r[key]) for r in rows})
    if rows:
        conn.load_frame(schema, spec.name, table_frame(spec, [{**r, **common} for r in rows]))


def load_money_partition(wh: Warehouse, merchant_id: str, day: str, run_id: str) -> MoneyLoaded:
    """Replace the merchant's settlements, settlement lines and financial events landed on `day`
    with those built from that day's raw extracts, and the day's money quarantine rows."""
    schema = merchant_schema(merchant_id)
    c = _Collector(day, run_id)
    with wh.merchant_scope(merchant_id) as conn:
        _amazon_settlements(raw_payloads(conn, merchant_id, "amazon", "settlement_reports", day), c)
        _amazon_events(raw_payloads(conn, merchant_id, "amazon", "financial_transactions", day), c)
        _ebay_payouts(
            raw_payloads(conn, merchant_id, "ebay", "payouts", day),
            raw_payloads(conn, merchant_id, "ebay", EBAY_PAYOUT_TRANSACTIONS, day),
            c,
        )
        _ebay_events(raw_payloads(conn, merchant_id, "ebay", "financial_transactions", day), c)
        _walmart_reports(raw_payloads(conn, merchant_id, "walmart", "settlement_reports", day), c)
    out = c.out
    common = {"partition_date": day, "loaded_at": datetime.now(UTC), "run_id": run_id}
    # Events of one transaction are keyed with its type: eBay reuses an order id for its SALE.
    events = [{**e, "_key": f"{e['transaction_type']}\x1f{e['transaction_id']}"} for e in out.events]
    with wh.merchant_scope(merchant_id) as conn:
        _replace(conn, schema, SETTLEMENTS, day, "settlement_id", out.settlements, common)
        _replace(conn, schema, SETTLEMENT_LINES, day, "settlement_id", out.lines, common)
        conn.create_table(schema, FINANCIAL_EVENTS)
        conn.execute(f"DELETE FROM {schema}.{FINANCIAL_EVENTS.name} WHERE partition_date = ?", [day])
        delete_channel_keys(
            conn, schema, FINANCIAL_EVENTS.name, "transaction_type || chr(31) || transaction_id",
            {(e["channel"], e["_key"]) for e in events},
        )
        if events:
            conn.load_frame(schema, FINANCIAL_EVENTS.name, table_frame(FINANCIAL_EVENTS, [{**e, **common} for e in events]))
        conn.create_table(schema, QUARANTINE)
        for dataset in (SETTLEMENTS_QUARANTINE_DATASET, FINANCIAL_EVENTS_QUARANTINE_DATASET):
            conn.replace_rows(
                schema, QUARANTINE.name, {"partition_date": day, "dataset": dataset},
                pd.DataFrame([r for r in out.rejects if r["dataset"] == dataset], columns=QUARANTINE.column_names),
            )
    return out
