"""Merchant reports (issue 16): the monthly report, each settlement's report and the quarterly
privacy statement, rendered from the analytics models (never raw tables), scanned for buyer PII,
listed in platform.reports and delivered (Postmark in production, the local outbox by default).

Each asset renders, then checks its files against the merchant's buyer PII (`no_buyer_pii`, a
blocking check the asset itself yields): a file with a PII value is deleted and nothing is sent.
Delivery is once per (merchant, kind, period): a re-run re-renders and sends nothing twice.
"""

from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.analytics import ALL_DATES_OF_THE_MERCHANT
from assets.concurrency import MERCHANT_STEP_TAGS, WAREHOUSE_POOL
from assets.partitions import (
    MONTH_DIM,
    QUARTER_DIM,
    merchant_monthly_partitions,
    merchant_partitions,
    merchant_period_parts,
    merchant_quarterly_partitions,
)
from illuma_pipelines.merchant_ids import merchant_schema, validate_merchant_id
from illuma_pipelines.registry import get_merchant
from illuma_pipelines.reports.data import (
    monthly_report_data,
    settlement_period,
    settlement_report_data,
    summary_markdown,
)
from illuma_pipelines.reports.pdf import render_pdf
from illuma_pipelines.reports.pii_scan import buyer_pii_values, scan_files, scanned_files
from illuma_pipelines.reports.privacy import privacy_statement_data, render_privacy_pdf
from illuma_pipelines.reports.store import (
    deliver_report,
    get_report,
    record_report,
    report_message,
    reports_dir,
)
from illuma_pipelines.reports.xlsx import render_xlsx
from illuma_pipelines.vault import FileKeyStore
from resources.delivery import DeliveryResource
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource

MONTHLY_REPORT_KEY = dg.AssetKey(["reports", "monthly"])
SETTLEMENT_REPORTS_KEY = dg.AssetKey(["reports", "settlements"])
PRIVACY_STATEMENT_KEY = dg.AssetKey(["reports", "privacy_statement"])
NO_PII_CHECK = "no_buyer_pii"
# The analytics models the reports read.
REPORT_MODELS = (
    "settlement_reconciliation", "order_settlement_match", "fees_by_category_daily", "net_proceeds_daily",
    "sku_profit_monthly", "channel_mix_daily", "inventory_health",
)
# A merchant's period reads the merchant's analytics (one partition per merchant).
_BY_MERCHANT = ALL_DATES_OF_THE_MERCHANT


def _analytics_deps(mapping: dg.PartitionMapping | None) -> list[dg.AssetDep]:
    return [dg.AssetDep(dg.AssetKey(["analytics", name]), partition_mapping=mapping) for name in REPORT_MODELS]


def _check(key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        NO_PII_CHECK, asset=key, blocking=True,
        description="No buyer name, e-mail, phone or address of the merchant's (its vault's values) "
        "appears in any rendered file; a file that has one is deleted and nothing is sent.",
    )


def _scan(
    context: dg.AssetExecutionContext, wh, vault: VaultResource, merchant_id: str, key: dg.AssetKey, files: Sequence[Path]
) -> dg.AssetCheckResult:
    actor = f"dagster:{key.to_user_string()}:{context.run.run_id}"
    values = buyer_pii_values(wh, vault.get(wh), merchant_id, actor=actor)
    findings = scan_files(scanned_files(files), values)
    if findings:
        for path in files:
            Path(path).unlink(missing_ok=True)
    return dg.AssetCheckResult(
        asset_key=key, check_name=NO_PII_CHECK, passed=not findings,
        metadata={
            "files_scanned": len(scanned_files(files)),
            "pii_values_compared": len(values),
            # Which file and which kind of value: never the value.
            "findings": [f"{f.file}: {f.column}" for f in findings],
        },
    )


def _deliver(
    context: dg.AssetExecutionContext, wh, delivery: DeliveryResource, merchant, kind: str, period: str, files: list[Path]
) -> dict[str, object]:
    record_report(wh, merchant.merchant_id, kind, period, files)
    subject, text = report_message(merchant.display_name, kind, period, files)
    result = deliver_report(
        # The provider only when there is a recipient: reports of a merchant without a report
        # e-mail render without one (a deployment without Postmark's token included).
        wh, delivery.get, merchant.merchant_id, kind, period, files,
        subject=subject, text=text, actor=f"dagster:{context.run.run_id}",
    )
    if result is not None and result.status == "failed":
        # Recorded as failed: the run fails so the data team sees it, and a re-run sends it.
        raise dg.Failure(f"the {kind} report {period} of {merchant.merchant_id} was rendered but not delivered: {result.error}")
    return {"delivery": "not sent: the merchant has no report e-mail" if result is None else str(result.status)}


def _checked_then_delivered(
    context: dg.AssetExecutionContext, wh, vault: VaultResource, delivery: DeliveryResource, merchant,
    key: dg.AssetKey, kind: str, period: str, files: list[Path], sent: list[Path],
) -> Iterator[dg.AssetCheckResult]:
    """Yield the PII check of a rendered report; deliver it (`sent`) only when it passed."""
    check = _scan(context, wh, vault, merchant.merchant_id, key, files)
    yield check
    if not check.passed:
        raise dg.Failure(f"the {kind} report {period} of {merchant.merchant_id} showed buyer PII: deleted, not sent")
    return _deliver(context, wh, delivery, merchant, kind, period, sent)


def _files_metadata(files: Sequence[Path]) -> dict[str, dg.MetadataValue]:
    return {f"file_{Path(p).suffix.lstrip('.')}": dg.MetadataValue.path(str(p)) for p in files}


def _render(data, folder: Path, stem: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    xlsx = render_xlsx(data, folder / f"{stem}.xlsx")
    pdf = render_pdf(data, folder / f"{stem}.pdf")
    return [xlsx, pdf, pdf.with_suffix(".png")]


_COMMON = dict(
    group_name="reports", kinds={"python", "pdf", "xlsx"}, owners=["team:data"], pool=WAREHOUSE_POOL,
    op_tags=MERCHANT_STEP_TAGS,
)


@dg.asset(
    key=MONTHLY_REPORT_KEY,
    partitions_def=merchant_monthly_partitions,
    deps=_analytics_deps(_BY_MERCHANT),
    check_specs=[_check(MONTHLY_REPORT_KEY)],
    description="The merchant's monthly report for a calendar month: an XLSX workbook (summary, "
    "orders, fees, SKU profit, inventory health, reconciliation exceptions, unsettled orders) and "
    "a PDF with charts, accrual and cash bases, delivered once.",
    **_COMMON,
)
def monthly_report(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, vault: VaultResource, delivery: DeliveryResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    merchant_id, first_day = merchant_period_parts(context, MONTH_DIM)
    month = first_day[:7]
    wh = warehouse.get()
    merchant = get_merchant(wh, merchant_id)
    data = monthly_report_data(wh, merchant_id, month, merchant.display_name)
    files = _render(data, reports_dir(merchant_id, month), f"{merchant_id}-{month}-monthly")
    delivered = yield from _checked_then_delivered(
        context, wh, vault, delivery, merchant, MONTHLY_REPORT_KEY, "monthly", month, files, files[:2]
    )
    yield dg.MaterializeResult(
        asset_key=MONTHLY_REPORT_KEY,
        metadata={
            **_files_metadata(files), **delivered, "empty": data.empty,
            "summary": dg.MetadataValue.md(summary_markdown(data)),
        },
    )


class SettlementReportsConfig(dg.Config):
    settlements: list[str] = Field(default_factory=list)
    """"channel:settlement_id" of each settlement to report; empty: every settlement in the
    merchant's settlement_reconciliation that has no report yet."""


def settlements_to_report(wh, merchant_id: str, wanted: Sequence[str]) -> list[tuple[str, str]]:
    """(channel, settlement id) of the settlements to report: those asked for, else every one
    the analytics know that has no report in platform.reports yet."""
    if wanted:
        pairs = [tuple(w.split(":", 1)) for w in wanted]
        bad = [w for w, p in zip(wanted, pairs, strict=True) if len(p) != 2]
        if bad:
            raise dg.Failure(f"settlements must be written channel:settlement_id, not {bad}")
        return [(c, s) for c, s in pairs]  # type: ignore[misc]
    schema = merchant_schema(merchant_id)
    with wh.merchant_scope(merchant_id) as conn:
        if not conn.table_exists(schema, "settlement_reconciliation"):
            return []
        known = conn.fetchall(
            f"SELECT channel, settlement_id FROM {schema}.settlement_reconciliation ORDER BY deposit_date, channel, settlement_id"
        )
    return [(c, s) for c, s in known if get_report(wh, merchant_id, "settlement", settlement_period(c, s)) is None]


@dg.asset(
    key=SETTLEMENT_REPORTS_KEY,
    partitions_def=merchant_partitions,
    deps=_analytics_deps(None),
    check_specs=[_check(SETTLEMENT_REPORTS_KEY)],
    description="A report per closed settlement (its lines by category, its reconciliation, the "
    "orders it settled), XLSX and PDF, delivered once; settlement_report_sensor asks for each new one.",
    **_COMMON,
)
def settlement_reports(
    context: dg.AssetExecutionContext,
    config: SettlementReportsConfig,
    warehouse: WarehouseResource,
    vault: VaultResource,
    delivery: DeliveryResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    merchant_id = validate_merchant_id(context.partition_key)
    wh = warehouse.get()
    merchant = get_merchant(wh, merchant_id)
    rendered: list[tuple[str, list[Path]]] = []
    # A settlement asked for that the analytics do not know, or a report not delivered, does not
    # hold the others back: they are reported, and the run fails naming what was not.
    problems: list[str] = []
    for channel, settlement_id in settlements_to_report(wh, merchant_id, config.settlements):
        try:
            data = settlement_report_data(wh, merchant_id, channel, settlement_id, merchant.display_name)
        except LookupError as exc:
            problems.append(str(exc))
            continue
        rendered.append((data.period, _render(data, reports_dir(merchant_id, data.period), f"{merchant_id}-{data.period}")))
    check = _scan(context, wh, vault, merchant_id, SETTLEMENT_REPORTS_KEY, [f for _, files in rendered for f in files])
    yield check
    if not check.passed:
        raise dg.Failure(f"a settlement report of {merchant_id} showed buyer PII: deleted, not sent")
    deliveries = {}
    for period, files in rendered:
        try:
            deliveries[period] = _deliver(context, wh, delivery, merchant, "settlement", period, files[:2])["delivery"]
        except dg.Failure as exc:
            problems.append(exc.description or str(exc))
            deliveries[period] = "failed"
    yield dg.MaterializeResult(
        asset_key=SETTLEMENT_REPORTS_KEY,
        metadata={
            "settlements_reported": len(rendered),
            "reports": dg.MetadataValue.md(
                "\n".join(f"- {period}: {Path(files[1])} ({deliveries[period]})" for period, files in rendered) or "none new"
            ),
        },
    )
    if problems:
        raise dg.Failure(f"settlement reports of {merchant_id}: {'; '.join(problems)}")


def quarter_label(first_day: str) -> str:
    """"2026-10-01" -> "2026-Q4"."""
    return f"{first_day[:4]}-Q{(int(first_day[5:7]) - 1) // 3 + 1}"


@dg.asset(
    key=PRIVACY_STATEMENT_KEY,
    partitions_def=merchant_quarterly_partitions,
    check_specs=[_check(PRIVACY_STATEMENT_KEY)],
    description="The merchant's quarterly privacy statement: PII purged per rule, keys rotated, "
    "rights requests answered against their deadline, exports, accesses to PII by purpose — from "
    "the retention ledger, the audit log and the key store; one or two PDF pages, no PII.",
    **_COMMON,
)
def privacy_statement(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, vault: VaultResource, delivery: DeliveryResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    merchant_id, first_day = merchant_period_parts(context, QUARTER_DIM)
    quarter = quarter_label(first_day)
    wh = warehouse.get()
    merchant = get_merchant(wh, merchant_id)
    statement = privacy_statement_data(wh, merchant_id, quarter, merchant.display_name, key_store=FileKeyStore(vault.resolved_key_store_path()))
    folder = reports_dir(merchant_id, quarter)
    folder.mkdir(parents=True, exist_ok=True)
    files = [render_privacy_pdf(statement, folder / f"{merchant_id}-{quarter}-privacy.pdf")]
    delivered = yield from _checked_then_delivered(
        context, wh, vault, delivery, merchant, PRIVACY_STATEMENT_KEY, "privacy", quarter, files, files
    )
    yield dg.MaterializeResult(asset_key=PRIVACY_STATEMENT_KEY, metadata={**_files_metadata(files), **delivered})


report_assets = [monthly_report, settlement_reports, privacy_statement]
