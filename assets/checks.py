"""Data-quality asset checks on the core tables: great-expectations suites, per partition.

The checks guarding merchant-facing data are blocking: when one fails, nothing downstream of
that asset materializes in the same run.
"""

import json
import warnings
from collections.abc import Iterator

import dagster as dg
import pandas as pd

from assets.concurrency import MERCHANT_STEP_TAGS, WAREHOUSE_POOL
from assets.core import (
    BUYER_PII_KEY,
    INVENTORY_SNAPSHOTS_KEY,
    ORDER_ADJUSTMENTS_KEY,
    ORDER_LINES_KEY,
    ORDERS_KEY,
)
from assets.partitions import merchant_daily_partitions, partition_parts
from illuma_pipelines.core.tables import (
    BUYER_PII,
    INVENTORY_SNAPSHOTS,
    ORDER_ADJUSTMENTS,
    ORDER_LINES,
    ORDERS,
    PII_COLUMNS,
)
from illuma_pipelines.marketplaces import (
    CHANNELS,
    ORDER_DATASET,
    normalizer,
    raw_datasets,
    raw_table_name,
)
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.raw_records import QUARANTINE, raw_payloads
from illuma_pipelines.sealing import unseal_payloads, unsealed_pii_keys
from illuma_pipelines.vault import Vault
from illuma_pipelines.warehouse import IN_SCHEMA, Connection
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource

# Partitioned asset checks are a Dagster preview feature we rely on on purpose (one result per
# merchant-day); its warning would print on every load of the code location.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)

ORDERS_QUALITY = "orders_quality"
ORDER_LINES_QUALITY = "order_lines_quality"
ORDER_ADJUSTMENTS_QUALITY = "order_adjustments_quality"
INVENTORY_QUALITY = "inventory_quality"
NO_PLAINTEXT_PII = "no_plaintext_pii"
HUNT_PURPOSE = "find plaintext copies of buyer PII (no_plaintext_pii check)"


def _partition_frame(conn: Connection, schema: str, table: str, column: str, value: str) -> pd.DataFrame:
    if not conn.table_exists(schema, table):
        return pd.DataFrame()
    return conn.fetch_df(f"SELECT * FROM {schema}.{table} WHERE {column} = ?", [value])


def _result(
    table: str,
    frame: pd.DataFrame,
    extra_failures: list[str] | None = None,
    extra_metadata: dict[str, dg.MetadataValue] | None = None,
) -> dg.AssetCheckResult:
    from illuma_pipelines.quality import validate_frame

    if frame.empty:
        return dg.AssetCheckResult(passed=True, metadata={"rows": 0, "note": "no rows in this partition"})
    report = validate_frame(table, frame)
    failures = [f"{f.expectation}: {f.unexpected_count} row(s)" for f in report.failures]
    failures += extra_failures or []
    return dg.AssetCheckResult(
        passed=not failures,
        metadata={
            "rows": report.rows,
            "expectations": report.evaluated,
            "failures": dg.MetadataValue.json(failures),
            **(extra_metadata or {}),
        },
        description=report.summary() if not extra_failures else "; ".join(failures),
    )


# How many mismatching orders the check's metadata names (ids and amounts, never buyer data).
MISMATCHES_SHOWN = 20


@dg.asset_check(
    asset=ORDERS_KEY,
    name=ORDERS_QUALITY,
    blocking=True,
    partitions_def=merchant_daily_partitions,
    pool=WAREHOUSE_POOL,
    op_tags=MERCHANT_STEP_TAGS,
    description="Unique order keys, required fields, ISO 4217 currencies, statuses from the "
    "vocabulary, non-negative amounts; every order reconciles with its lines by its channel's "
    "rules: lines in the order's currency, their items, shipping, promotions and tax adding up "
    "to the order's, and the order total made of those parts.",
)
def orders_quality(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    from illuma_pipelines.quality import order_reconciliation_mismatches

    merchant_id, date = partition_parts(context)
    schema = merchant_schema(merchant_id)
    with warehouse.get().merchant_scope(merchant_id) as conn:
        orders = _partition_frame(conn, schema, ORDERS.name, "partition_date", date)
        lines = _partition_frame(conn, schema, ORDER_LINES.name, "partition_date", date)
    mismatches = order_reconciliation_mismatches(orders, lines)
    per_part: dict[str, set[tuple[str, str]]] = {}
    for m in mismatches:
        per_part.setdefault(m.part, set()).add((m.channel, m.marketplace_order_id))
    failures = [
        f"orders do not reconcile with their lines on {part}: {len(keys)} order(s)"
        for part, keys in sorted(per_part.items())
    ]
    shown = [m.describe() for m in mismatches[:MISMATCHES_SHOWN]]
    return _result(
        "orders", orders, failures, {"reconciliation": dg.MetadataValue.json(shown)} if shown else None
    )


def _table_check(
    key: dg.AssetKey, name: str, table: str, suite: str, date_column: str, description: str
) -> dg.AssetChecksDefinition:
    """A blocking check running `suite` on the partition's rows of `table`."""

    @dg.asset_check(
        asset=key,
        name=name,
        blocking=True,
        partitions_def=merchant_daily_partitions,
        pool=WAREHOUSE_POOL,
        op_tags=MERCHANT_STEP_TAGS,
        description=description,
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        merchant_id, date = partition_parts(context)
        with warehouse.get().merchant_scope(merchant_id) as conn:
            frame = _partition_frame(conn, merchant_schema(merchant_id), table, date_column, date)
        return _result(suite, frame)

    return _check


order_lines_quality = _table_check(
    ORDER_LINES_KEY, ORDER_LINES_QUALITY, ORDER_LINES.name, "order_lines", "partition_date",
    "Unique line keys, required fields, currencies, non-negative quantities and prices.",
)
order_adjustments_quality = _table_check(
    ORDER_ADJUSTMENTS_KEY, ORDER_ADJUSTMENTS_QUALITY, ORDER_ADJUSTMENTS.name, "order_adjustments",
    "partition_date",
    "Refunds, returns and cancellations: known kinds, ISO currencies, required fields.",
)
inventory_quality = _table_check(
    INVENTORY_SNAPSHOTS_KEY, INVENTORY_QUALITY, INVENTORY_SNAPSHOTS.name, "inventory_snapshots",
    "snapshot_date", "One row per day, channel, marketplace and SKU; no negative quantities.",
)


def _known_pii(conn: Connection, vault: Vault, merchant_id: str, date: str, actor: str) -> set[str]:
    """Buyer names and street lines of the partition's raw order payloads, unsealed (the values
    to hunt)."""
    from illuma_pipelines import normalize

    known: set[str] = set()
    for channel in CHANNELS:
        rows = raw_payloads(conn, merchant_id, channel, ORDER_DATASET, date)
        texts = unseal_payloads(
            vault, merchant_id, raw_table_name(channel, ORDER_DATASET), channel,
            [(key, payload) for key, payload, _ in rows], actor=actor, purpose=HUNT_PURPOSE,
        )
        result = normalizer(channel).normalize_orders([normalize.loads(text) for text in texts])
        for pii in result.pii:
            known.update(v for v in (pii.buyer_name, pii.ship_name, pii.address_line1, pii.buyer_email) if v)
    return known


def _raw_findings(conn: Connection, merchant_id: str, date: str, known: set[str]) -> list[str]:
    """The partition's raw payloads (and the quarantine's) that hold a PII field in clear or a
    known buyer value anywhere in their text: where and how many, never the values."""
    hunted = [v for v in known if len(v) >= 4]
    findings = []
    schema = merchant_schema(merchant_id)
    sources = [
        (channel, raw_table_name(channel, dataset), [(k, p) for k, p, _ in raw_payloads(conn, merchant_id, channel, dataset, date)])
        for channel, dataset in raw_datasets(may_name_buyer=True)
    ]
    if conn.table_exists(schema, QUARANTINE.name):
        for channel in CHANNELS:
            payloads = conn.fetchall(
                f"SELECT dataset, payload FROM {schema}.{QUARANTINE.name} WHERE partition_date = ? "
                "AND payload IS NOT NULL AND source LIKE ?",
                [date, f"{channel}.%"],
            )
            sources.append((channel, QUARANTINE.name, payloads))
    for channel, table, rows in sources:
        clear = sum(1 for _, text in rows if unsealed_pii_keys(channel, text))
        named = sum(1 for _, text in rows if any(value in text for value in hunted))
        if clear:
            findings.append(f"{table}.payload: PII field in clear ({clear})")
        if named:
            findings.append(f"{table}.payload: buyer name or address ({named})")
    return findings


def _text_columns(conn: Connection, schema: str) -> Iterator[tuple[str, str]]:
    rows = conn.fetchall(
        f"SELECT table_name, column_name FROM information_schema.columns WHERE {IN_SCHEMA} "
        "AND data_type IN ('VARCHAR', 'TEXT', 'text', 'character varying', 'JSON', 'jsonb', 'json') "
        "ORDER BY table_name, column_name",
        [schema, schema],
    )
    for table, column in rows:
        # Raw payloads hold sealed PII fields: `_raw_findings` checks them field by field.
        if not table.startswith("raw_"):
            yield table, column


@dg.asset_check(
    asset=BUYER_PII_KEY,
    name=NO_PLAINTEXT_PII,
    blocking=True,
    partitions_def=merchant_daily_partitions,
    pool=WAREHOUSE_POOL,
    op_tags=MERCHANT_STEP_TAGS,
    description="No plaintext buyer PII in any warehouse column of the merchant: every buyer_pii "
    "column is a vault ciphertext, every PII field of the partition's raw payloads and quarantine "
    "copies is sealed, and no other text column holds an e-mail address, a phone number, or a "
    "buyer name or street from the payloads.",
)
def no_plaintext_pii(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, vault: VaultResource
) -> dg.AssetCheckResult:
    from illuma_pipelines.quality import plaintext_pii_findings

    merchant_id, date = partition_parts(context)
    schema = merchant_schema(merchant_id)
    wh = warehouse.get()
    actor = f"pipeline:check/{NO_PLAINTEXT_PII}:{context.run.run_id}"
    with wh.merchant_scope(merchant_id) as conn:
        known = _known_pii(conn, vault.get(wh), merchant_id, date, actor)
        raw_findings = _raw_findings(conn, merchant_id, date, known)
        columns = []
        for table, column in _text_columns(conn, schema):
            values = [
                v if isinstance(v, str) or v is None else json.dumps(v)
                for (v,) in conn.fetchall(f"SELECT {column} FROM {schema}.{table}")
            ]
            columns.append((table, column, values))
    findings = plaintext_pii_findings(
        columns,
        known_values=known,
        encrypted_columns=[(BUYER_PII.name, c) for c in PII_COLUMNS],
    )
    described = [f"{t}.{c}: {why} ({n})" for t, c, why, n in findings] + raw_findings
    return dg.AssetCheckResult(
        passed=not described,
        metadata={
            "columns_scanned": len(columns),
            "known_values_hunted": len(known),
            # Where and how many, never the values.
            "findings": dg.MetadataValue.json(described),
        },
    )


quality_checks = [orders_quality, order_lines_quality, order_adjustments_quality, inventory_quality, no_plaintext_pii]
