"""Raw marketplace extracts: each merchant's payloads per channel and dataset, per day, verbatim.

One asset per (channel, dataset), partitioned date × merchant. A re-run replaces the partition's
rows; records that fail the dataset's sanity rule go to `raw_quarantine` with the reason while the
rest of the partition lands.
"""

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import dagster as dg

from assets.concurrency import MERCHANT_STEP_TAGS, WAREHOUSE_POOL
from assets.partitions import merchant_daily_partitions, partition_parts
from illuma_pipelines.marketplaces import marketplace
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.normalize.amazon_settlement import settlement_format_problem
from illuma_pipelines.purge import merchant_policy
from illuma_pipelines.raw_records import (
    QUARANTINE,
    RecordRule,
    ensure_pii_key_column,
    raw_payloads,
    raw_table,
    split_records,
)
from illuma_pipelines.registry import RegistryError, get_merchant, resolve_credential
from illuma_pipelines.shredding import extract_sealers
from resources.http import ChannelCredentials, RequestStats
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource

Window = tuple[datetime, datetime]
Fetch = Callable[[Any, ChannelCredentials, Window, RequestStats, "ExtractContext"], Iterable[dict]]


class ExtractConfig(dg.Config):
    lookback_hours: int = 2
    """Start the window this many hours before the day: late-arriving updates are caught again
    (the core keeps the latest version of each record)."""


@dataclass(frozen=True)
class ExtractContext:
    merchant_id: str
    partition_date: str
    marketplace_ids: tuple[str, ...]
    warehouse: Any

    def upstream_payloads(self, channel: str, dataset: str) -> list[dict]:
        """Payloads an upstream extract landed for this partition (e.g. SKUs for pricing)."""
        with self.warehouse.merchant_scope(self.merchant_id) as conn:
            rows = raw_payloads(conn, self.merchant_id, channel, dataset, self.partition_date)
        return [json.loads(payload) for _, payload, _ in rows]


def extract_key(channel: str, dataset: str) -> dg.AssetKey:
    """The asset key of a channel's raw extract."""
    return dg.AssetKey(["extracts", f"{channel}_{dataset}"])


@dataclass(frozen=True)
class ExtractSpec:
    channel: str
    dataset: str
    operation: str  # the API operation, recorded as each row's `source`
    fetch: Fetch
    rule: RecordRule
    description: str
    windowed: bool = True  # False: a snapshot as of extraction (inventory)
    deps: tuple[str, ...] = ()  # names of extracts this one reads (e.g. "amazon_inventory")
    # Hours the window always reaches back, whatever the run's lookback_hours: for an API whose
    # recent records may still arrive late (Amazon Finances: the last ~48 h may be incomplete).
    min_lookback_hours: int = 0

    @property
    def name(self) -> str:
        return f"{self.channel}_{self.dataset}"

    @property
    def key(self) -> dg.AssetKey:
        return extract_key(self.channel, self.dataset)

    @property
    def seals_pii(self) -> bool:
        """Whether its payloads may name the buyer, so their PII is sealed before they land."""
        return marketplace(self.channel).dataset(self.dataset).may_name_buyer


def day_window(partition_date: str, lookback_hours: int) -> Window:
    start = datetime.fromisoformat(partition_date).replace(tzinfo=UTC)
    return start - timedelta(hours=lookback_hours), start + timedelta(days=1)


def first_whole_day(window: Window) -> date:
    """The first whole day a window covers: its own day for the usual few hours of lookback, the
    days before it too when the lookback reaches back days (reports dated per day)."""
    return (window[0] + timedelta(days=1) - timedelta(microseconds=1)).date()


def build_extract_asset(spec: ExtractSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=spec.key,
        partitions_def=merchant_daily_partitions,
        group_name="extracts",
        kinds={spec.channel, "python"},
        owners=["team:data"],
        pool=WAREHOUSE_POOL,
        op_tags=MERCHANT_STEP_TAGS,
        required_resource_keys={"warehouse", spec.channel, *(["vault"] if spec.seals_pii else [])},
        deps=[dg.AssetKey(["extracts", name]) for name in spec.deps],
        description=spec.description,
        retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),
    )
    def _extract(context: dg.AssetExecutionContext, config: ExtractConfig) -> dg.MaterializeResult:
        merchant_id, date = partition_parts(context)
        warehouse_res: WarehouseResource = context.resources.warehouse
        warehouse = warehouse_res.get()
        try:
            merchant = get_merchant(warehouse, merchant_id)
        except RegistryError as exc:
            # Permanent until someone registers it: retrying would only delay the error.
            raise dg.Failure(
                f"{exc}; register it before materializing its partitions", allow_retries=False
            ) from exc
        connection = next((c for c in merchant.channels if c.channel == spec.channel), None)
        if connection is None:
            # Not connected: a visible, empty materialization, so downstream still runs.
            with warehouse.merchant_scope(merchant_id) as conn:
                conn.create_table(merchant_schema(merchant_id), raw_table(spec.channel, spec.dataset))
                conn.execute(
                    f"DELETE FROM {merchant_schema(merchant_id)}.{raw_table(spec.channel, spec.dataset).name} "
                    "WHERE partition_date = ?",
                    [date],
                )
            context.log.info(f"{merchant_id} has not connected {spec.channel}: nothing to extract")
            return dg.MaterializeResult(
                metadata={"skipped": f"{spec.channel} not connected for {merchant_id}", "records": 0}
            )

        creds = ChannelCredentials(merchant_id, resolve_credential(connection.credential_ref, spec.channel))
        window = day_window(date, max(config.lookback_hours, spec.min_lookback_hours))
        stats = RequestStats()
        started = time.monotonic()
        ectx = ExtractContext(merchant_id, date, connection.marketplace_ids, warehouse)
        client = getattr(context.resources, spec.channel)
        records = list(spec.fetch(client, creds, window, stats, ectx))
        elapsed = time.monotonic() - started
        extracted_at = datetime.now(UTC)
        sealer = quarantine_sealer = None
        if spec.seals_pii:
            vault: VaultResource = context.resources.vault
            sealer, quarantine_sealer = extract_sealers(
                vault.get(warehouse), merchant_id, spec.channel, spec.dataset,
                policy=merchant_policy(warehouse, merchant_id), extracted_at=extracted_at,
            )
        split = split_records(
            records,
            spec.rule,
            dataset=spec.name,
            source=f"{spec.channel}.{spec.operation}",
            partition_date=date,
            window=window if spec.windowed else (None, extracted_at),
            extracted_at=extracted_at,
            run_id=context.run.run_id,
            sealer=sealer,
            quarantine_sealer=quarantine_sealer,
        )
        schema = merchant_schema(merchant_id)
        table = raw_table(spec.channel, spec.dataset)
        with warehouse.merchant_scope(merchant_id) as conn:
            conn.create_table(schema, table)
            ensure_pii_key_column(conn, schema, table.name)
            conn.create_table(schema, QUARANTINE)
            conn.replace_rows(schema, table.name, {"partition_date": date}, split.raw)
            conn.replace_rows(
                schema, QUARANTINE.name, {"partition_date": date, "dataset": spec.name}, split.quarantine
            )
        totals = stats.total()
        if len(split.quarantine):
            context.log.warning(
                f"{len(split.quarantine)} {spec.name} record(s) quarantined for {merchant_id} {date}; "
                f"see {schema}.raw_quarantine"
            )
        return dg.MaterializeResult(
            metadata={
                "records": len(split.raw),
                "quarantined": len(split.quarantine),
                "pii_values_sealed": split.sealed,
                "duplicates_dropped": split.duplicates,
                "pages": int(totals.pages),
                "requests": int(totals.requests),
                "throttled_requests": int(totals.throttled),
                "retries": int(totals.retries),
                "seconds": round(elapsed, 3),
                "window_start": window[0].isoformat() if spec.windowed else "snapshot",
                "window_end": window[1].isoformat() if spec.windowed else extracted_at.isoformat(),
            }
        )

    return _extract


# --------------------------------------------------------------------------------------- checks
def _parses_as_time(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float | Decimal):
        return True
    try:
        Decimal(str(value))
    except (InvalidOperation, ValueError):
        return False
    return True


def _amazon_order_problem(record: dict) -> str | None:
    if not _parses_as_time(record.get("createdTime")):
        return "createdTime is not an ISO 8601 time"
    return None


def _amazon_transaction_problem(record: dict) -> str | None:
    amount = (record.get("totalAmount") or {}).get("currencyAmount")
    if not _is_number(amount):
        return "totalAmount.currencyAmount is not a number"
    return None


def _amazon_inventory_problem(record: dict) -> str | None:
    qty = record.get("totalQuantity")
    if qty is not None and not (isinstance(qty, int) and not isinstance(qty, bool)):
        return "totalQuantity is not an integer"
    return None


def _amazon_settlement_problem(record: dict) -> str | None:
    # The parser's own reason for a document it cannot read (the old V1 layout, an error page):
    # settlementId is not required up front, as its absence would hide that reason.
    if record.get("document") is None:
        return "required field 'document' is missing"
    problem = settlement_format_problem(record["document"])
    if problem is None and not record.get("settlementId"):
        problem = "settlementId is missing though the document reads as a V2 settlement file"
    return problem


# ------------------------------------------------------------------------------------ Amazon
def _amazon_pricing(client: Any, creds: ChannelCredentials, window: Window, stats: RequestStats, ectx: ExtractContext):
    """Each marketplace is asked for the SKUs of its own stock (a summary landed before stock was
    read per marketplace names none: its SKUs are asked in every marketplace of the connection)."""
    skus_in: dict[str | None, set[str]] = {}
    for p in ectx.upstream_payloads("amazon", "inventory"):
        if isinstance(p.get("sellerSku"), str) and p["sellerSku"]:
            skus_in.setdefault(p.get("marketplaceId") or None, set()).add(p["sellerSku"])
    unplaced = skus_in.pop(None, set())
    for marketplace_id, skus in sorted(skus_in.items()):
        yield from client.competitive_pricing(creds, sorted(skus), marketplace_ids=[marketplace_id], stats=stats)
    if unplaced:
        yield from client.competitive_pricing(creds, sorted(unplaced), marketplace_ids=ectx.marketplace_ids, stats=stats)


AMAZON_EXTRACTS = (
    ExtractSpec(
        "amazon", "orders", "searchOrders",
        lambda c, creds, w, stats, e: c.search_orders(creds, w[0], w[1], marketplace_ids=e.marketplace_ids, stats=stats),
        RecordRule(key_fields=("orderId",), required=("orderId", "lastUpdatedTime"), check=_amazon_order_problem),
        "Amazon orders (Orders API v2026-01-01 searchOrders, items and buyer inside) last updated "
        "during the day, verbatim.",
    ),
    ExtractSpec(
        "amazon", "financial_transactions", "listTransactions",
        lambda c, creds, w, stats, e: c.list_transactions(creds, w[0], w[1], marketplace_ids=e.marketplace_ids, stats=stats),
        RecordRule(key_fields=("transactionId",), required=("postedDate",), check=_amazon_transaction_problem),
        "Amazon financial transactions (Finances API 2024-06-19 listTransactions) posted during the "
        "day and the two days before it (the last ~48 h may be incomplete when first read), verbatim.",
        min_lookback_hours=48,
    ),
    ExtractSpec(
        "amazon", "settlement_reports", "getReports",
        lambda c, creds, w, stats, e: c.settlement_reports(creds, w[0], w[1], marketplace_ids=e.marketplace_ids, stats=stats),
        RecordRule(key_fields=("settlementId", "report.reportId"), check=_amazon_settlement_problem),
        "Amazon V2 settlement flat files (GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE_V2) created during "
        "the day, one row per settlement with its report metadata and document text.",
    ),
    ExtractSpec(
        "amazon", "inventory", "getInventorySummaries",
        lambda c, creds, w, stats, e: c.inventory_summaries(creds, marketplace_ids=e.marketplace_ids, stats=stats),
        RecordRule(
            key_fields=("sellerSku",), required=("sellerSku",), check=_amazon_inventory_problem, scope=("marketplaceId",)
        ),
        "Amazon FBA inventory summaries (FBA Inventory API v1, details=true) as of extraction, in "
        "each marketplace of the merchant's connection (`marketplaceId` added by the client).",
        windowed=False,
    ),
    ExtractSpec(
        "amazon", "competitive_pricing", "getCompetitivePricing",
        _amazon_pricing,
        RecordRule(key_fields=("SellerSKU", "ASIN"), required=("status",), scope=("marketplaceId",)),
        "Amazon competitive prices (Product Pricing API v0) in each marketplace of the merchant's "
        "connection, for the SKUs of that marketplace's inventory in the day's extract.",
        windowed=False,
        deps=("amazon_inventory",),
    ),
)

# -------------------------------------------------------------------------------------- eBay
def _ebay_payout_transactions(client: Any, creds: ChannelCredentials, window: Window, stats: RequestStats, ectx: ExtractContext):
    payout_ids = sorted(
        {p["payoutId"] for p in ectx.upstream_payloads("ebay", "payouts") if isinstance(p.get("payoutId"), str)}
    )
    if not payout_ids:
        return []
    return client.payout_transactions(creds, payout_ids, marketplace_ids=ectx.marketplace_ids, stats=stats)


EBAY_EXTRACTS = (
    ExtractSpec(
        "ebay", "orders", "getOrders",
        lambda c, creds, w, stats, e: c.orders(creds, w[0], w[1], marketplace_ids=e.marketplace_ids, stats=stats),
        RecordRule(key_fields=("orderId",), required=("orderId", "lastModifiedDate")),
        "eBay orders (Sell Fulfillment API getOrders, line items inside) last modified during the "
        "day, verbatim.",
    ),
    ExtractSpec(
        "ebay", "financial_transactions", "getTransactions",
        lambda c, creds, w, stats, e: c.transactions(creds, w[0], w[1], marketplace_ids=e.marketplace_ids, stats=stats),
        RecordRule(key_fields=("transactionId",), required=("transactionId", "bookingEntry")),
        "eBay financial transactions (Sell Finances API getTransactions) dated during the day, verbatim.",
    ),
    ExtractSpec(
        "ebay", "payouts", "getPayouts",
        lambda c, creds, w, stats, e: c.payouts(creds, w[0], w[1], marketplace_ids=e.marketplace_ids, stats=stats),
        RecordRule(key_fields=("payoutId",), required=("payoutId",)),
        "eBay payouts (Sell Finances API getPayouts) dated during the day, verbatim.",
    ),
    ExtractSpec(
        "ebay", "payout_transactions", "getTransactions",
        _ebay_payout_transactions,
        # transactionId alone, as in financial_transactions: RecordRule takes the first non-empty
        # key field, so listing payoutId first would key every transaction of a payout alike.
        RecordRule(key_fields=("transactionId",), required=("payoutId", "transactionType", "transactionId", "bookingEntry")),
        "eBay financial transactions of the payouts dated during the day (Sell Finances API "
        "getTransactions, filter=payoutId), verbatim: a payout's amount is the signed sum of its "
        "transactions, whatever their dates, so each payout is reconciled against these lines.",
        deps=("ebay_payouts",),
    ),
    ExtractSpec(
        "ebay", "inventory", "getInventoryItems",
        lambda c, creds, w, stats, e: c.inventory_items(creds, marketplace_ids=e.marketplace_ids, stats=stats),
        RecordRule(key_fields=("sku",), required=("sku",)),
        "eBay inventory items (Sell Inventory API getInventoryItems) as of extraction.",
        windowed=False,
    ),
)

# ----------------------------------------------------------------------------------- Walmart
WALMART_EXTRACTS = (
    ExtractSpec(
        "walmart", "orders", "getAllOrders",
        lambda c, creds, w, stats, e: c.orders(
            creds, w[0], w[1], clamp_start=True, marketplace_ids=e.marketplace_ids, stats=stats
        ),
        RecordRule(key_fields=("purchaseOrderId",), required=("purchaseOrderId", "orderDate")),
        "Walmart orders (Marketplace /v3/orders, seller- and WFS-fulfilled) last modified during "
        "the day, verbatim.",
    ),
    ExtractSpec(
        "walmart", "inventory", "getInventories",
        lambda c, creds, w, stats, e: c.inventory(creds, marketplace_ids=e.marketplace_ids, stats=stats),
        RecordRule(key_fields=("sku",), required=("sku",), scope=("market",)),
        "Walmart inventory by ship node (Marketplace /v3/inventories) as of extraction, in each "
        "market of the merchant's connection (`market` added by the client).",
        windowed=False,
    ),
    ExtractSpec(
        "walmart", "settlement_reports", "getReconReport",
        lambda c, creds, w, stats, e: c.recon_reports(
            creds,
            first_whole_day(w),
            date.fromisoformat(e.partition_date),
            marketplace_ids=e.marketplace_ids,
            stats=stats,
        ),
        RecordRule(key_fields=("reportKey", "reportDate"), required=("reportDate", "rows")),
        "Walmart reconciliation (settlement) reports dated the day (and the days before it that a "
        "lookback of days covers), one row per market and report with its rows.",
    ),
)

EXTRACT_SPECS: tuple[ExtractSpec, ...] = AMAZON_EXTRACTS + EBAY_EXTRACTS + WALMART_EXTRACTS
extract_assets = [build_extract_asset(spec) for spec in EXTRACT_SPECS]
