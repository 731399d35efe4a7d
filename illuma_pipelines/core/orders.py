"""Core orders from raw order payloads: one merchant-day's raw order records of every channel
normalized into the current-state order tables (orders, lines, adjustments, status history and
vault-encrypted buyer PII).

Orders are current-state tables keyed by (channel, marketplace_order_id): a partition replaces an
order (and its lines, adjustments and PII) only with a version at least as recent as the stored
one, so re-runs and out-of-order backfills never duplicate or regress an order. Records the
normalizers reject go to `raw_quarantine` with the reason, each with its own raw payload and
position; the rest lands. ADR 0005 says how the day is cut into batches and why.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import multiprocessing
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd

from illuma_pipelines import normalize
from illuma_pipelines.catalog import catalog_day_end, master_parts, master_parts_by_own_key
from illuma_pipelines.core.inventory import master_part_columns, master_parts_from_ebay
from illuma_pipelines.core.tables import (
    BUYER_PII,
    ORDER_ADJUSTMENTS,
    ORDER_LINES,
    ORDER_STATUS_HISTORY,
    ORDERS,
    ORDERS_QUARANTINE_DATASET,
    PII_COLUMNS,
)
from illuma_pipelines.marketplaces import CHANNELS, ORDER_DATASET, raw_table_name
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.raw_records import (
    PII_KEY_VERSION,
    QUARANTINE,
    RawRow,
    empty_quarantine,
    ensure_pii_key_column,
    locate_rejects,
    quarantine_frame,
    raw_payload_batches,
    raw_payloads,
    raw_row_count,
)
from illuma_pipelines.sealing import hold_label, unseal_payloads
from illuma_pipelines.warehouse import Connection, Warehouse, any_of

# Why the pipeline opens sealed raw payloads (the audit event of each batch reveal says so).
UNSEAL_PURPOSE = "normalize sealed raw payloads"


# ------------------------------------------------------------------------------------ writing
def _by_channel(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for channel, order_id in keys:
        grouped[channel].append(order_id)
    return grouped


def order_ids_match(conn: Connection, column: str = "marketplace_order_id") -> str:
    """A condition on an order id column taking the whole id list as one parameter."""
    return any_of(conn.dialect, column)


def delete_orders(conn: Connection, schema: str, table: str, keys: Iterable[tuple[str, str]]) -> None:
    delete_channel_keys(conn, schema, table, "marketplace_order_id", keys)


def delete_channel_keys(conn: Connection, schema: str, table: str, column: str, keys: Iterable[tuple[str, str]]) -> None:
    """Delete the rows of `table` whose (channel, `column`) is one of `keys`: one statement per
    channel, the ids as one parameter (`column` may be an expression over the row)."""
    for channel, ids in _by_channel(keys).items():
        conn.execute(f"DELETE FROM {schema}.{table} WHERE channel = ? AND {any_of(conn.dialect, column)}", [channel, ids])


def stored_versions(
    conn: Connection, schema: str, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[datetime | None, date, str]]:
    """(last_updated_at, partition_date, status) of the stored current row of each order key."""
    found = {}
    for channel, ids in _by_channel(keys).items():
        for order_id, updated, pdate, status in conn.fetchall(
            f"SELECT marketplace_order_id, last_updated_at, partition_date, status "
            f"FROM {schema}.{ORDERS.name} WHERE channel = ? AND {order_ids_match(conn)}",
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


def encrypted_pii_frame(vault: Any, merchant_id: str, pii: pd.DataFrame, label: str | None = None) -> pd.DataFrame:
    """The buyer PII frame (`to_frame` of BuyerPII rows) with every PII column replaced by its
    vault ciphertext, bound to the merchant, table, column and order, under the key with `label`
    (the core writes under today's hold key: the purge moves each value to its due day's key)."""
    channels, order_ids = pii["channel"].tolist(), pii["marketplace_order_id"].tolist()
    record_ids = [f"{c}:{o}" for c, o in zip(channels, order_ids, strict=True)]
    data: dict[str, Any] = {
        "channel": pd.Series(channels, dtype="string"),
        "marketplace_order_id": pd.Series(order_ids, dtype="string"),
    }
    for column in PII_COLUMNS:
        data[column] = pd.Series(
            vault.encrypt_column(merchant_id, BUYER_PII.name, column, record_ids, _texts(pii[column]), label=label),
            dtype="string",
        )
    frame = pd.DataFrame(data)
    frame[PII_KEY_VERSION] = pd.Series([vault.ensure_key(merchant_id, label)] * len(frame), dtype="Int64")
    return frame


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


def normalize_orders_at_positions(channel: str, texts: Sequence[str]) -> normalize.OrderBatch:
    """`normalize.normalize_order_batch` of a batch of raw order texts, each reject keyed by the
    position of its record in `texts`. The normalizers key a reject by order id when the record has
    one, and an id can name several records of a partition (a mangled copy next to the good order)
    or differ from the raw row's key: `locate_rejects` finds the very record, so its quarantine row
    carries that record's payload and position."""
    batch = normalize.normalize_order_batch(channel, texts)
    if batch.rejects:
        batch.rejects = list(
            locate_rejects(batch.rejects, texts, functools.partial(_order_rejects_alone, channel))
        )
    return batch


def _order_rejects_alone(channel: str, text: str) -> list[tuple[int | str, str]]:
    return normalize.normalize_order_payloads(channel, [text]).rejects


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
    day. Each batch is normalized into frames (`normalize_orders_at_positions`), in `workers`
    spawned processes while this one writes the previous batch (default: one per core, at most
    4, when the day spans several batches; 0 normalizes in this process). This process then
    encrypts the batch's PII and replaces its orders in a transaction of its own; an order
    replaces the stored one only with a version at least as recent (`is_newer_or_same`). So a run stopped midway
    leaves whole batches, a re-run completes it without duplicating or regressing an order or
    its status history, and an order seen in two batches ends as the later version. The
    partition's rejected records replace its quarantine rows at the end, each with its own raw
    payload (as stored, PII sealed) and its position in the partition's stream.
    """
    schema, pdate = merchant_schema(merchant_id), date.fromisoformat(day)
    loaded_at = datetime.now(UTC)
    label = hold_label(loaded_at.date())
    vault.ensure_key(merchant_id, label)  # the key store is not touched inside the write transactions
    done = OrdersLoaded()
    quarantine: list[pd.DataFrame] = []
    with wh.merchant_scope(merchant_id) as conn:
        for spec in (ORDERS, ORDER_LINES, ORDER_ADJUSTMENTS, ORDER_STATUS_HISTORY, BUYER_PII, QUARANTINE):
            conn.create_table(schema, spec)
        ensure_pii_key_column(conn, schema, BUYER_PII.name)
        with_master_parts = _master_part_assigner(conn, merchant_id, schema, day)
        if workers is None:
            records = sum(raw_row_count(conn, merchant_id, channel, "orders", day) for channel in CHANNELS)
            workers = default_normalize_workers(records, batch_records)
    if workers and multiprocessing.current_process().daemon:
        # A daemonic process (a Celery prefork worker's child) may not start processes of its own:
        # normalize in this process rather than fail the step (ADR 0012).
        workers = 0
    done.workers = workers
    executor: concurrent.futures.Executor = (
        concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        if workers
        else _InlineExecutor()
    )
    # Batches handed to the workers, oldest first: (channel, first position, raw rows, future).
    pending: collections.deque[tuple[str, int, list[RawRow], concurrent.futures.Future]]
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
            _write_orders(
                conn, schema, vault, merchant_id, batch, pdate, loaded_at, run_id, done, label, with_master_parts
            )

    with executor, wh.merchant_scope(merchant_id) as reader:
        try:
            for channel in CHANNELS:
                position = 0
                # Closed here, not when collected: a stopped run must release the stream's cursor
                # before the reader's connection goes.
                stream = contextlib.closing(raw_payload_batches(reader, merchant_id, channel, "orders", day, batch_records))
                with stream as batches:
                    for rows in batches:
                        # Sealed PII opened here, in this process, one audited batch reveal each.
                        texts = unseal_payloads(
                            vault, merchant_id, raw_table_name(channel, ORDER_DATASET), channel,
                            [(r[0], r[1]) for r in rows], actor=f"pipeline:core/orders:{run_id}",
                            purpose=UNSEAL_PURPOSE,
                        )
                        future = executor.submit(normalize_orders_at_positions, channel, texts)
                        del texts
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
    rejects = pd.concat(quarantine) if quarantine else empty_quarantine()
    with wh.merchant_scope(merchant_id) as conn:
        conn.replace_rows(
            schema, QUARANTINE.name, {"partition_date": day, "dataset": ORDERS_QUARANTINE_DATASET}, rejects
        )
    done.rejected = len(rejects)
    return done


def _master_part_assigner(
    conn: Connection, merchant_id: str, schema: str, day: str
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Order lines -> the same lines with their master part, by the rule of the inventory
    snapshots: the catalog valid at the end of `day`, then eBay's MPN (the day's eBay inventory
    extract), then the SKU."""
    at = catalog_day_end(day)
    catalog, by_key = master_parts(conn, schema, at), master_parts_by_own_key(conn, schema, at)
    ebay = master_parts_from_ebay(
        normalize.loads(row[1]) for row in raw_payloads(conn, merchant_id, "ebay", "inventory", day)
    )

    def assign(lines: pd.DataFrame) -> pd.DataFrame:
        skus = [None if pd.isna(s) else s for s in lines["sku"].tolist()]
        masters, matches = master_part_columns(skus, catalog, ebay, by_key)
        return lines.assign(
            master_part=pd.Series(masters, index=lines.index, dtype="string"),
            part_match=pd.Series(matches, index=lines.index, dtype="string"),
        )

    return assign


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
    label: str | None = None,
    with_master_parts: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
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
    if with_master_parts is not None:
        lines = with_master_parts(lines)
    frames = {
        ORDERS.name: orders.loc[pd.Series(won_rows, index=orders.index, dtype=bool)],
        ORDER_LINES.name: lines,
        ORDER_ADJUSTMENTS.name: adjustments,
        BUYER_PII.name: encrypted_pii_frame(vault, merchant_id, pii, label),
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
