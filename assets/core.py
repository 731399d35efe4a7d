"""The normalized core: orders, their lines, adjustments, status history, encrypted buyer PII and
daily inventory snapshots, built from the raw extracts of one merchant and day.

Assets are thin: read the partition's raw payloads, call `illuma_pipelines.normalize`, write.
Orders are current-state tables keyed by (channel, marketplace_order_id): a partition replaces an
order (and its lines, adjustments and PII) only with a version at least as recent as the stored
one, so re-runs and out-of-order backfills never duplicate or regress an order. Records the
normalizers reject go to `raw_quarantine` with the reason; the rest lands.
"""

import collections
import concurrent.futures
import contextlib
import multiprocessing
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.extracts import WAREHOUSE_POOL
from assets.partitions import merchant_daily_partitions, partition_parts
from illuma_pipelines import normalize
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.raw_records import QUARANTINE, raw_table
from illuma_pipelines.registry import CHANNELS, record_audit
from illuma_pipelines.warehouse import Connection, TableSpec, Warehouse, cols
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource

KINDS = {"python", "duckdb", "postgres"}
OWNERS = ["team:data"]
_PROVENANCE = ("partition_date date!", "loaded_at timestamptz!", "run_id text!")

ORDERS = TableSpec(
    "core_orders",
    cols(
        "channel text!", "marketplace_order_id text!", "marketplace_id text",
        "purchased_at timestamptz", "last_updated_at timestamptz", "shipped_at timestamptz",
        "delivered_at timestamptz", "status text!", "channel_status text!",
        "fulfillment_channel text!", "currency text", "order_total money", "items_subtotal money",
        "tax_total money", "shipping_total money", "promotion_total money",
        "marketplace_fee_total money", "is_business boolean", "country_code text", *_PROVENANCE,
    ),
    primary_key=("channel", "marketplace_order_id"),
)
ORDER_LINES = TableSpec(
    "core_order_lines",
    cols(
        "channel text!", "marketplace_order_id text!", "line_id text!", "sku text",
        "asin_or_item_id text", "title text", "quantity_ordered integer", "quantity_shipped integer",
        "unit_price money", "item_price money", "item_tax money", "shipping_price money",
        "shipping_tax money", "promotion_discount money", "gift_wrap_price money",
        "gift_wrap_tax money", "currency text", "line_status text!", "channel_line_status text",
        *_PROVENANCE,
    ),
    primary_key=("channel", "marketplace_order_id", "line_id"),
)
ORDER_ADJUSTMENTS = TableSpec(
    "core_order_adjustments",
    cols(
        "channel text!", "marketplace_order_id text!", "adjustment_seq integer!", "line_id text",
        "kind text!", "amount money", "currency text", "occurred_at timestamptz", "reason text",
        "adjustment_id text", "status text", *_PROVENANCE,
    ),
    primary_key=("channel", "marketplace_order_id", "adjustment_seq"),
)
ORDER_STATUS_HISTORY = TableSpec(
    "core_order_status_history",
    cols(
        "channel text!", "marketplace_order_id text!", "status text!", "previous_status text",
        "channel_status text!", "changed_at timestamptz", *_PROVENANCE,
    ),
)
PII_COLUMNS = (
    "buyer_name", "buyer_email", "buyer_phone", "ship_name", "address_line1", "address_line2",
    "address_line3", "city", "state_or_region", "postal_code", "country_code",
)
BUYER_PII = TableSpec(
    "core_buyer_pii",
    cols("channel text!", "marketplace_order_id text!", *(f"{c} text" for c in PII_COLUMNS), *_PROVENANCE),
    primary_key=("channel", "marketplace_order_id"),
)
INVENTORY_SNAPSHOTS = TableSpec(
    "core_inventory_snapshots",
    cols(
        "snapshot_date date!", "channel text!", "sku text!", "master_part text!", "mpn text",
        "brand text", "part_match text!", "asin_or_item_id text", "fulfillable integer",
        "inbound integer", "reserved integer", "unfulfillable integer", "merchant_fulfilled integer",
        "total_quantity integer", "available integer!", "units_sold_30d integer!",
        "days_of_cover double", "stock_out boolean!", "as_of timestamptz", "loaded_at timestamptz!",
        "run_id text!",
    ),
    primary_key=("snapshot_date", "sku", "channel"),
)
CORE_TABLES = (ORDERS, ORDER_LINES, ORDER_ADJUSTMENTS, ORDER_STATUS_HISTORY, BUYER_PII, INVENTORY_SNAPSHOTS)

ORDERS_KEY = dg.AssetKey(["core", "orders"])
ORDER_LINES_KEY = dg.AssetKey(["core", "order_lines"])
ORDER_ADJUSTMENTS_KEY = dg.AssetKey(["core", "order_adjustments"])
ORDER_STATUS_HISTORY_KEY = dg.AssetKey(["core", "order_status_history"])
BUYER_PII_KEY = dg.AssetKey(["core", "buyer_pii"])
INVENTORY_SNAPSHOTS_KEY = dg.AssetKey(["core", "inventory_snapshots"])
ORDERS_QUARANTINE_DATASET = "core_orders"
INVENTORY_QUARANTINE_DATASET = "core_inventory_snapshots"
SALES_WINDOW_DAYS = 30


def _extract_key(channel: str, dataset: str) -> dg.AssetKey:
    return dg.AssetKey(["extracts", f"{channel}_{dataset}"])


# ------------------------------------------------------------------------------------ reading
def _raw_table_if_any(conn: Connection, merchant_id: str, channel: str, dataset: str) -> tuple[str, str] | None:
    """(schema, table) of a raw dataset of the merchant, None before its first extract."""
    schema, table = merchant_schema(merchant_id), raw_table(channel, dataset).name
    return (schema, table) if conn.table_exists(schema, table) else None


def raw_payloads(
    conn: Connection, merchant_id: str, channel: str, dataset: str, partition_date: str
) -> list[tuple[str, str, datetime]]:
    """(record_key, payload JSON text, extracted_at) of one raw table's partition, in key order.

    The payload is read as text on both engines and parsed with `normalize.loads`, so amounts stay
    exact Decimals (psycopg would hand JSONB numbers over as floats).
    """
    found = _raw_table_if_any(conn, merchant_id, channel, dataset)
    return conn.fetchall(*_raw_query(*found, partition_date)) if found else []


def raw_payload_batches(
    conn: Connection, merchant_id: str, channel: str, dataset: str, partition_date: str, size: int
) -> Iterator[list[tuple[str, str, datetime]]]:
    """A raw table partition's (record_key, payload JSON text, extracted_at) rows in batches of
    `size`, streamed in stored order: sorting would hold every payload in the engine's memory at
    once."""
    found = _raw_table_if_any(conn, merchant_id, channel, dataset)
    if found:
        yield from conn.iter_batches(*_raw_query(*found, partition_date, ordered=False), size=size)


def raw_row_count(conn: Connection, merchant_id: str, channel: str, dataset: str, partition_date: str) -> int:
    found = _raw_table_if_any(conn, merchant_id, channel, dataset)
    return conn.row_count(*found, {"partition_date": partition_date}) if found else 0


def _raw_query(schema: str, table: str, partition_date: str, *, ordered: bool = True) -> tuple[str, list[str]]:
    # extracted_at as a UTC wall time: DuckDB hands a timestamptz to Python through a time zone
    # lookup per value, half the cost of the whole stream; `_as_utc` puts the zone back.
    return (
        f"SELECT record_key, CAST(payload AS TEXT), extracted_at AT TIME ZONE 'UTC' FROM {schema}.{table} "
        f"WHERE partition_date = ?{' ORDER BY record_key' if ordered else ''}",
        [partition_date],
    )


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def quarantine_frame(
    rejects: Sequence[tuple[int | str, str]],
    rows: Sequence[tuple[str, str, datetime]],
    *,
    dataset: str,
    source: str,
    partition_date: str,
    run_id: str,
    first_position: int = 0,
) -> pd.DataFrame:
    """raw_quarantine rows for normalizer rejects, keyed by position or record id; `rows` are the
    partition's raw rows from position `first_position` on."""
    position_of = {key: i for i, (key, _, _) in enumerate(rows)}
    out = []
    for ref, reason in rejects:
        index = ref if isinstance(ref, int) else position_of.get(ref, -1)
        payload = rows[index][1] if 0 <= index < len(rows) else None
        position = first_position + index if payload is not None else -1
        out.append(
            {
                "partition_date": partition_date,
                "dataset": dataset,
                "source": source,
                "position": position,
                "reason": reason,
                "payload": payload,
                "extracted_at": _as_utc(rows[index][2]) if payload is not None else datetime.now(UTC),
                "run_id": run_id,
            }
        )
    return pd.DataFrame(out, columns=[c.name for c in QUARANTINE.columns])


# ------------------------------------------------------------------------------------ writing
def _by_channel(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for channel, order_id in keys:
        grouped[channel].append(order_id)
    return grouped


def _order_ids_match(conn: Connection) -> str:
    """A condition on marketplace_order_id taking the whole id list as one parameter: a hashed
    semi-join on DuckDB, `= ANY(array)` (hashed or by index) on PostgreSQL."""
    if conn.dialect == "postgres":
        return "marketplace_order_id = ANY(?)"
    return "marketplace_order_id IN (SELECT unnest(CAST(? AS VARCHAR[])))"


def delete_orders(conn: Connection, schema: str, table: str, keys: Iterable[tuple[str, str]]) -> None:
    for channel, ids in _by_channel(keys).items():
        conn.execute(f"DELETE FROM {schema}.{table} WHERE channel = ? AND {_order_ids_match(conn)}", [channel, ids])


def stored_versions(
    conn: Connection, schema: str, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[datetime | None, date, str]]:
    """(last_updated_at, partition_date, status) of the stored current row of each order key."""
    found = {}
    for channel, ids in _by_channel(keys).items():
        for order_id, updated, pdate, status in conn.fetchall(
            f"SELECT marketplace_order_id, last_updated_at, partition_date, status "
            f"FROM {schema}.{ORDERS.name} WHERE channel = ? AND {_order_ids_match(conn)}",
            [channel, ids],
        ):
            found[(channel, order_id)] = (updated, _as_date(pdate), status)
    return found


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def is_newer_or_same(
    incoming: tuple[datetime | None, date], stored: tuple[datetime | None, date] | None
) -> bool:
    """Whether an incoming order version replaces the stored one: a later update time wins, then a
    later partition; an equal version replaces it (a re-run), an older one never does."""
    if stored is None:
        return True
    return (incoming[0] or _EPOCH, incoming[1]) >= (stored[0] or _EPOCH, stored[1])


def _with_provenance(frame: pd.DataFrame, partition_date: str, loaded_at: datetime, run_id: str) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame["partition_date"] = partition_date
    frame["loaded_at"] = pd.Timestamp(loaded_at).as_unit("us")  # broadcast: no Python list per row
    frame["run_id"] = run_id
    return frame


def _texts(column: pd.Series) -> list[str | None]:
    """A text column as a list, missing values as None."""
    return [None if value is pd.NA or value is None else value for value in column.tolist()]


def encrypted_pii_frame(vault: Any, merchant_id: str, pii: pd.DataFrame) -> pd.DataFrame:
    """The buyer PII frame (`to_frame` of BuyerPII rows) with every PII column replaced by its
    vault ciphertext, bound to the merchant, table, column and order."""
    channels, order_ids = pii["channel"].tolist(), pii["marketplace_order_id"].tolist()
    record_ids = [f"{c}:{o}" for c, o in zip(channels, order_ids, strict=True)]
    data: dict[str, Any] = {
        "channel": pd.Series(channels, dtype="string"),
        "marketplace_order_id": pd.Series(order_ids, dtype="string"),
    }
    for column in PII_COLUMNS:
        data[column] = pd.Series(
            vault.encrypt_column(merchant_id, BUYER_PII.name, column, record_ids, _texts(pii[column])),
            dtype="string",
        )
    return pd.DataFrame(data)


# ------------------------------------------------------------------------------------- orders
RAW_BATCH_RECORDS = 5_000  # raw order records normalized, encrypted and written at a time
MAX_NORMALIZE_WORKERS = 4


@dataclass
class OrdersLoaded:
    """What `load_orders_partition` wrote (the core_orders assets' metadata)."""

    orders_in_partition: int = 0
    orders_written: int = 0
    lines_written: int = 0
    adjustments_written: int = 0
    status_changes: int = 0
    pii_written: int = 0
    rejected: int = 0
    workers: int = 0
    per_channel: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0))
    adjustment_kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class CoreOrdersConfig(dg.Config):
    batch_records: int = Field(default=RAW_BATCH_RECORDS, ge=1, le=1_000_000)
    """Raw order records normalized, encrypted and committed at a time: memory grows with it."""
    workers: int | None = Field(default=None, ge=0, le=MAX_NORMALIZE_WORKERS)
    """Worker processes normalizing batches while the asset writes; unset: one per core when the
    day spans several batches; 0: normalize in the asset's own process."""


def default_normalize_workers(records: int, batch_records: int) -> int:
    """Worker processes for a partition of `records` raw orders: none unless it spans several
    batches (a worker costs about a second to start) and the machine has more than one core,
    else one per core. Measured on 2 cores (bench/normalize.py): 2 workers beat 1, as this
    process and the workers each wait on the other part of the time."""
    cores = os.cpu_count() or 1
    if records <= batch_records or cores < 2:
        return 0
    return min(cores, MAX_NORMALIZE_WORKERS)


class _InlineExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once, in this process."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def load_orders_partition(
    wh: Warehouse,
    vault: Any,
    merchant_id: str,
    day: str,
    run_id: str,
    *,
    batch_records: int = RAW_BATCH_RECORDS,
    workers: int | None = None,
) -> OrdersLoaded:
    """Normalize one merchant-day's raw order records of every channel into the core order tables.

    The raw records stream in `batch_records` at a time, so memory stays flat however big the
    day. Each batch is normalized into frames (`normalize.normalize_order_batch`), in `workers`
    spawned processes while this one writes the previous batch (default: one per core, at most
    4, when the day spans several batches; 0 normalizes in this process). This process then
    encrypts the batch's PII and replaces its orders in a transaction of its own; an order
    replaces the stored one only with a version at least as recent (`is_newer_or_same`). So a run stopped midway
    leaves whole batches, a re-run completes it without duplicating or regressing an order or
    its status history, and an order seen in two batches ends as the later version. The
    partition's rejected records replace its quarantine rows at the end.
    """
    schema, pdate = merchant_schema(merchant_id), date.fromisoformat(day)
    loaded_at = datetime.now(UTC)
    vault.ensure_key(merchant_id)  # the key store is not touched inside the write transactions
    done = OrdersLoaded()
    quarantine: list[pd.DataFrame] = []
    with wh.merchant_scope(merchant_id) as conn:
        for spec in (ORDERS, ORDER_LINES, ORDER_ADJUSTMENTS, ORDER_STATUS_HISTORY, BUYER_PII, QUARANTINE):
            conn.create_table(schema, spec)
        if workers is None:
            records = sum(raw_row_count(conn, merchant_id, channel, "orders", day) for channel in CHANNELS)
            workers = default_normalize_workers(records, batch_records)
    done.workers = workers
    executor: concurrent.futures.Executor = (
        concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        if workers
        else _InlineExecutor()
    )
    # Batches handed to the workers, oldest first: (channel, first position, raw rows, future).
    pending: collections.deque[tuple[str, int, list[tuple[str, str, datetime]], concurrent.futures.Future]]
    pending = collections.deque()

    def write_oldest() -> None:
        channel, first, rows, future = pending.popleft()
        batch: normalize.OrderBatch = future.result()
        done.per_channel[channel] += len(batch.orders)
        if batch.rejects:
            quarantine.append(
                quarantine_frame(
                    batch.rejects, rows, dataset=ORDERS_QUARANTINE_DATASET,
                    source=f"{channel}.normalize_orders", partition_date=day, run_id=run_id,
                    first_position=first,
                )
            )
        with wh.merchant_scope(merchant_id) as conn:
            _write_orders(conn, schema, vault, merchant_id, batch, pdate, loaded_at, run_id, done)

    with executor, wh.merchant_scope(merchant_id) as reader:
        try:
            for channel in CHANNELS:
                position = 0
                # Closed here, not when collected: a stopped run must release the stream's cursor
                # before the reader's connection goes.
                stream = contextlib.closing(raw_payload_batches(reader, merchant_id, channel, "orders", day, batch_records))
                with stream as batches:
                    for rows in batches:
                        future = executor.submit(normalize.normalize_order_batch, channel, [r[1] for r in rows])
                        pending.append((channel, position, rows, future))
                        position += len(rows)
                        del rows
                        while len(pending) > workers:
                            write_oldest()
            while pending:
                write_oldest()
        except BaseException:
            # The run stops here: batches not yet started need not be normalized.
            for *_, future in pending:
                future.cancel()
            raise
    rejects = pd.concat(quarantine) if quarantine else pd.DataFrame(columns=[c.name for c in QUARANTINE.columns])
    with wh.merchant_scope(merchant_id) as conn:
        conn.replace_rows(
            schema, QUARANTINE.name, {"partition_date": day, "dataset": ORDERS_QUARANTINE_DATASET}, rejects
        )
    done.rejected = len(rejects)
    return done


def _write_orders(
    conn: Connection,
    schema: str,
    vault: Any,
    merchant_id: str,
    batch: normalize.OrderBatch,
    pdate: date,
    loaded_at: datetime,
    run_id: str,
    done: OrdersLoaded,
) -> None:
    """Replace the stored orders that `batch` has a version of, at least as recent, with it."""
    day = pdate.isoformat()
    orders = batch.orders
    keys = list(zip(orders["channel"].tolist(), orders["marketplace_order_id"].tolist(), strict=True))
    stored = stored_versions(conn, schema, keys)
    # Orders not stored yet always win and are first seen; only the stored ones are compared.
    won_rows = [True] * len(keys)
    previous_status: list[str | None] = [None] * len(keys)
    for index, key in enumerate(keys):
        previous = stored.get(key)
        if previous is None:
            continue
        stamp = orders["last_updated_at"].iat[index]
        updated = None if pd.isna(stamp) else stamp.to_pydatetime()
        won_rows[index] = is_newer_or_same((updated, pdate), previous[:2])
        previous_status[index] = previous[2]
    won = {key for key, wins in zip(keys, won_rows, strict=True) if wins}
    previous_series = pd.Series(previous_status, index=orders.index, dtype="string")
    changed = pd.Series(won_rows, index=orders.index, dtype=bool) & (
        previous_series.isna() | (previous_series != orders["status"].astype("string")).fillna(True)
    )
    history = pd.DataFrame(
        {
            "channel": orders["channel"],
            "marketplace_order_id": orders["marketplace_order_id"],
            "status": orders["status"],
            "previous_status": previous_series,
            "channel_status": orders["channel_status"],
            "changed_at": orders["last_updated_at"],
        }
    ).loc[changed]

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        if len(won) == len(keys):
            return frame
        mask = [key in won for key in zip(frame["channel"].tolist(), frame["marketplace_order_id"].tolist(), strict=True)]
        return frame.loc[pd.Series(mask, index=frame.index, dtype=bool)]

    lines, adjustments, pii = keep(batch.lines), keep(batch.adjustments), keep(batch.pii)
    frames = {
        ORDERS.name: orders.loc[pd.Series(won_rows, index=orders.index, dtype=bool)],
        ORDER_LINES.name: lines,
        ORDER_ADJUSTMENTS.name: adjustments,
        BUYER_PII.name: encrypted_pii_frame(vault, merchant_id, pii),
    }
    # An order's lines, adjustments and PII are only ever written with its current row, so only
    # orders stored before have rows to replace.
    replaced = sorted(key for key in won if key in stored)
    for table, frame in frames.items():
        delete_orders(conn, schema, table, replaced)
        conn.load_frame(schema, table, _with_provenance(frame, day, loaded_at, run_id))
    conn.load_frame(schema, ORDER_STATUS_HISTORY.name, _with_provenance(history, day, loaded_at, run_id))

    done.orders_in_partition += len(orders)
    done.orders_written += len(won)
    done.lines_written += len(lines)
    done.adjustments_written += len(adjustments)
    done.status_changes += len(history)
    done.pii_written += len(pii)
    for kind in adjustments["kind"].astype(str).tolist():
        done.adjustment_kinds[kind] += 1


_ORDER_DATASETS = {channel: _extract_key(channel, "orders") for channel in CHANNELS}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            ORDERS_KEY,
            deps=list(_ORDER_DATASETS.values()),
            description="One current row per marketplace order (channel, marketplace_order_id), "
            "normalized from the Amazon, eBay and Walmart order extracts; a later extract updates "
            "the order in place. Amounts are exact decimals.",
            group_name="core", kinds=KINDS, owners=OWNERS,
        ),
        dg.AssetSpec(
            ORDER_LINES_KEY,
            deps=[ORDERS_KEY],
            description="The lines of each current order (SKU, quantities, prices, taxes, "
            "promotions), replaced together with their order.",
            group_name="core", kinds=KINDS, owners=OWNERS,
        ),
        dg.AssetSpec(
            ORDER_ADJUSTMENTS_KEY,
            deps=[ORDERS_KEY],
            description="Refunds, returns and cancellations of each current order, one row each, "
            "with the positive amount given back and its kind.",
            group_name="core", kinds=KINDS, owners=OWNERS,
        ),
        dg.AssetSpec(
            ORDER_STATUS_HISTORY_KEY,
            deps=[ORDERS_KEY],
            description="One row each time an order's status changes (and when it is first "
            "seen), with the previous status; re-runs append nothing.",
            group_name="core", kinds=KINDS, owners=OWNERS,
        ),
        dg.AssetSpec(
            BUYER_PII_KEY,
            deps=[ORDERS_KEY],
            description="Buyer and ship-to identity per order, every column encrypted by the PII "
            "vault (AES-256-GCM, bound to the order), kept apart from the order facts so purging "
            "PII never touches them.",
            group_name="core", kinds=KINDS, owners=OWNERS,
        ),
    ],
    partitions_def=merchant_daily_partitions,
    pool=WAREHOUSE_POOL,
)
def core_orders(
    context: dg.AssetExecutionContext,
    config: CoreOrdersConfig,
    warehouse: WarehouseResource,
    vault: VaultResource,
) -> Iterable[dg.MaterializeResult]:
    merchant_id, day = partition_parts(context)
    wh = warehouse.get()
    run_id = context.run.run_id
    done = load_orders_partition(
        wh, vault.get(wh), merchant_id, day, run_id, batch_records=config.batch_records, workers=config.workers
    )
    context.log.info(
        f"{done.orders_in_partition} order record(s) of {merchant_id} {day} normalized in batches of "
        f"{config.batch_records} by {done.workers or 'no'} worker process(es)"
    )
    if done.rejected:
        context.log.warning(
            f"{done.rejected} order record(s) of {merchant_id} {day} rejected by the normalizers; "
            f"see {merchant_schema(merchant_id)}.{QUARANTINE.name} (dataset {ORDERS_QUARANTINE_DATASET})"
        )
    with wh.connect() as conn:
        record_audit(
            conn,
            actor=f"dagster:core/buyer_pii:{run_id}",
            action="pii.encrypted",
            merchant_id=merchant_id,
            details={"table": BUYER_PII.name, "partition_date": day, "rows": done.pii_written},
        )
    yield dg.MaterializeResult(
        asset_key=ORDERS_KEY,
        metadata={
            "orders_in_partition": done.orders_in_partition,
            "orders_written": done.orders_written,
            "older_than_stored": done.orders_in_partition - done.orders_written,
            "rejected": done.rejected,
            **{f"orders_{channel}": n for channel, n in done.per_channel.items()},
        },
    )
    yield dg.MaterializeResult(asset_key=ORDER_LINES_KEY, metadata={"lines_written": done.lines_written})
    yield dg.MaterializeResult(
        asset_key=ORDER_ADJUSTMENTS_KEY,
        metadata={
            "adjustments_written": done.adjustments_written,
            **{f"kind_{k}": v for k, v in sorted(done.adjustment_kinds.items())},
        },
    )
    yield dg.MaterializeResult(
        asset_key=ORDER_STATUS_HISTORY_KEY, metadata={"status_changes_appended": done.status_changes}
    )
    yield dg.MaterializeResult(asset_key=BUYER_PII_KEY, metadata={"pii_rows_written": done.pii_written})


# ---------------------------------------------------------------------------------- inventory
def _sum_known(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def master_parts_from_ebay(payloads: Iterable[dict]) -> dict[str, tuple[str, str | None]]:
    """SKU -> (MPN, brand) from eBay inventory items, which carry the product's MPN and brand."""
    out = {}
    for item in payloads:
        product = item.get("product") or {}
        mpn, sku = product.get("mpn"), item.get("sku")
        if isinstance(sku, str) and isinstance(mpn, str) and mpn.strip():
            brand = product.get("brand")
            out[sku] = (mpn.strip(), brand.strip() if isinstance(brand, str) and brand.strip() else None)
    return out


def snapshot_rows(
    records: Sequence[normalize.InventoryRecord],
    parts: dict[str, tuple[str, str | None]],
    units_sold: dict[tuple[str, str], int],
    snapshot_date: str,
) -> list[dict[str, Any]]:
    """One row per (channel, SKU): location rows summed, mapped to the master part, with cover."""
    grouped: dict[tuple[str, str], list[normalize.InventoryRecord]] = defaultdict(list)
    for rec in records:
        grouped[(rec.channel, rec.sku)].append(rec)
    rows = []
    for (channel, sku), recs in sorted(grouped.items()):
        qty = {
            name: _sum_known(getattr(r, name) for r in recs)
            for name in ("fulfillable", "inbound", "reserved", "unfulfillable", "merchant_fulfilled", "total_quantity")
        }
        available = (qty["fulfillable"] or 0) + (qty["merchant_fulfilled"] or 0)
        sold = units_sold.get((channel, sku), 0)
        mpn, brand = parts.get(sku, (None, None))
        stamps = [r.as_of for r in recs if r.as_of is not None]
        rows.append(
            {
                "snapshot_date": snapshot_date,
                "channel": channel,
                "sku": sku,
                "master_part": f"{brand or ''}|{mpn}" if mpn else sku,
                "mpn": mpn,
                "brand": brand,
                "part_match": "mpn" if mpn else "sku",
                "asin_or_item_id": next((r.asin_or_item_id for r in recs if r.asin_or_item_id), None),
                **qty,
                "available": available,
                "units_sold_30d": sold,
                # Cover at the last 30 days' average daily sales; no sales: unbounded (None).
                "days_of_cover": round(available * SALES_WINDOW_DAYS / sold, 1) if sold else None,
                "stock_out": available == 0,
                "as_of": max(stamps) if stamps else None,
            }
        )
    return rows


def units_sold_last_30_days(conn: Connection, schema: str, snapshot_date: str) -> dict[tuple[str, str], int]:
    """(channel, SKU) -> units ordered in the 30 days up to the snapshot day, cancellations excluded."""
    if not (conn.table_exists(schema, ORDERS.name) and conn.table_exists(schema, ORDER_LINES.name)):
        return {}
    end = datetime.fromisoformat(snapshot_date).replace(tzinfo=UTC) + timedelta(days=1)
    start = end - timedelta(days=SALES_WINDOW_DAYS)
    rows = conn.fetchall(
        f"SELECT l.channel, l.sku, SUM(COALESCE(l.quantity_ordered, 0)) "
        f"FROM {schema}.{ORDER_LINES.name} l JOIN {schema}.{ORDERS.name} o "
        "ON o.channel = l.channel AND o.marketplace_order_id = l.marketplace_order_id "
        "WHERE o.purchased_at >= ? AND o.purchased_at < ? AND o.status <> 'cancelled' "
        "AND l.line_status <> 'cancelled' AND l.sku IS NOT NULL GROUP BY l.channel, l.sku",
        [start, end],
    )
    return {(channel, sku): int(units) for channel, sku, units in rows}


def _normalize_inventory(channel: str, records: list[dict], as_of: datetime | None) -> normalize.NormalizeResult:
    module = getattr(normalize, channel)
    return module.normalize_inventory(records, as_of=as_of)


@dg.asset(
    key=INVENTORY_SNAPSHOTS_KEY,
    deps=[*(_extract_key(c, "inventory") for c in CHANNELS), ORDER_LINES_KEY, ORDERS_KEY],
    partitions_def=merchant_daily_partitions,
    group_name="core",
    kinds=KINDS,
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
)
def inventory_snapshots(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One row per day, SKU and channel from the inventory extracts: FBA/WFS fulfillable, inbound,
    reserved and unfulfillable, merchant-fulfilled (eBay, Walmart) stock, the master part (MPN and
    brand from eBay's product data where listed, else the SKU itself), days of cover at the last 30
    days' sales from core order lines, and a stock-out flag."""
    merchant_id, day = partition_parts(context)
    wh: Warehouse = warehouse.get()
    schema = merchant_schema(merchant_id)
    run_id, loaded_at = context.run.run_id, datetime.now(UTC)
    records: list[normalize.InventoryRecord] = []
    quarantine = []
    ebay_payloads: list[dict] = []
    with wh.merchant_scope(merchant_id) as conn:
        for channel in CHANNELS:
            rows = raw_payloads(conn, merchant_id, channel, "inventory", day)
            payloads = [normalize.loads(r[1]) for r in rows]
            if channel == "ebay":
                ebay_payloads = payloads
            as_of = max((_as_utc(r[2]) for r in rows), default=None)
            part = _normalize_inventory(channel, payloads, as_of)
            records.extend(part.inventory)
            if part.rejects:
                quarantine.append(
                    quarantine_frame(
                        part.rejects, rows, dataset=INVENTORY_QUARANTINE_DATASET,
                        source=f"{channel}.normalize_inventory", partition_date=day, run_id=run_id,
                    )
                )
        sold = units_sold_last_30_days(conn, schema, day)
    parts = master_parts_from_ebay(ebay_payloads)
    rows = snapshot_rows(records, parts, sold, day)
    frame = pd.DataFrame(rows, columns=[c.name for c in INVENTORY_SNAPSHOTS.columns if c.name not in ("loaded_at", "run_id")])
    for name in ("fulfillable", "inbound", "reserved", "unfulfillable", "merchant_fulfilled", "total_quantity", "available", "units_sold_30d"):
        frame[name] = frame[name].astype("Int64")
    frame["days_of_cover"] = frame["days_of_cover"].astype("Float64")
    frame["stock_out"] = frame["stock_out"].astype("boolean")
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True)
    frame["loaded_at"] = pd.Timestamp(loaded_at).as_unit("us")  # broadcast: no Python list per row
    frame["run_id"] = run_id
    rejects = pd.concat(quarantine) if quarantine else pd.DataFrame(columns=[c.name for c in QUARANTINE.columns])
    with wh.merchant_scope(merchant_id) as conn:
        conn.create_table(schema, INVENTORY_SNAPSHOTS)
        conn.create_table(schema, QUARANTINE)
        conn.replace_rows(schema, INVENTORY_SNAPSHOTS.name, {"snapshot_date": day}, frame)
        conn.replace_rows(
            schema, QUARANTINE.name, {"partition_date": day, "dataset": INVENTORY_QUARANTINE_DATASET}, rejects
        )
    if len(rejects):
        context.log.warning(
            f"{len(rejects)} inventory record(s) of {merchant_id} {day} rejected by the normalizers; "
            f"see {schema}.{QUARANTINE.name} (dataset {INVENTORY_QUARANTINE_DATASET})"
        )
    mapped = sum(1 for r in rows if r["part_match"] == "mpn")
    return dg.MaterializeResult(
        metadata={
            "rows": len(rows),
            "skus_mapped_to_mpn": mapped,
            "skus_mapped_to_themselves": len(rows) - mapped,
            "stock_outs": sum(1 for r in rows if r["stock_out"]),
            "rejected": len(rejects),
            **{f"rows_{c}": sum(1 for r in rows if r["channel"] == c) for c in CHANNELS},
        }
    )


core_assets = [core_orders, inventory_snapshots]
