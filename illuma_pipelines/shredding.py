"""Buyer PII deleted by crypto-shredding: every PII value is sealed under a data key whose lifetime
is the value's own, and the daily purge destroys the keys that fell due (ADR 0007).

Keys are labelled (`illuma_pipelines.vault`): `due:<day>` seals the values that must be gone on
that day, `hold:<day>` the values written that day whose due day is not known yet (an order not
shipped, a raw order record the core has not dated). A value is sealed at landing (extracts) or at
write (core) under a hold key, or under its due key when the due day is known then (finance
records, quarantine copies: extraction + the unmatched rule's period). The daily purge then, per
merchant:

1. deletes and redacts what is due, row by row, as before (`purge.purge_pii`);
2. in the same transaction, re-seals the values under hold keys, and every value of an order that
   changed since (a changed order's PII row is rewritten under a hold key), under the key of the
   value's due day, or under today's hold key while that is still unknown;
3. after the commit, destroys every `due:<day>` key with day <= today and every `hold:<day>` key
   with day < today. Every copy of a value sealed under them, live row, free page, WAL, spill
   file, backup or export, is then undecryptable.

So a value due on day D is unreadable everywhere from the purge of day D on: either it was under
due:D (destroyed that day) or under a hold key, which lives until the next purge at most.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import pandas as pd

from illuma_pipelines import purge
from illuma_pipelines.core.orders import order_ids_match
from illuma_pipelines.core.tables import BUYER_PII, ORDERS, PII_COLUMNS
from illuma_pipelines.marketplaces import CHANNELS, ORDER_DATASET, marketplace, raw_table_name
from illuma_pipelines.merchant_ids import merchant_schema, validate_merchant_id
from illuma_pipelines.raw_records import (
    PII_KEY_VERSION,
    QUARANTINE,
    Sealer,
    ensure_pii_key_column,
    raw_payloads_of,
)
from illuma_pipelines.registry import record_audit
from illuma_pipelines.retention import Anchor, Category, Policy, Rule, purge_due_at
from illuma_pipelines.sealing import (
    DUE,
    HOLD,
    PAYLOAD_COLUMN,
    due_label,
    hold_label,
    parse_label,
    reseal_payloads,
)
from illuma_pipelines.vault import Vault, key_version
from illuma_pipelines.warehouse import Connection, Warehouse

SHRED_ACTION = "pii.keys_shredded"


def labels_to_destroy(labels: Iterable[str], today: date) -> list[str]:
    """The due keys of today and before, and the hold keys of the days before today."""
    out = []
    for label in labels:
        parsed = parse_label(label)
        if parsed is not None and (parsed[1] <= today if parsed[0] == DUE else parsed[1] < today):
            out.append(label)
    return sorted(out)


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def unmatched_due_day(policy: Policy, extracted_at: datetime) -> date:
    """The due day of PII that no order dates (finance records, quarantine copies, raw order
    records without a core order): extraction + the unmatched rule's period."""
    due = purge_due_at(policy.rule("raw_pii_unmatched"), {Anchor.EXTRACTION: extracted_at})
    assert due is not None
    return due.date()


# ------------------------------------------------------------------------------------- landing
def extract_sealers(
    vault: Vault,
    merchant_id: str,
    channel: str,
    dataset: str,
    *,
    policy: Policy,
    extracted_at: datetime,
) -> tuple[Sealer | None, Sealer | None]:
    """The sealers an extract hands to `split_records` (raw rows, quarantine rows), or None for a
    dataset whose payloads name no buyer. Order records wait under today's hold key (the core
    dates them); everything else, quarantine copies included, is due on extraction + the
    unmatched rule's period from the start."""
    if not marketplace(channel).dataset(dataset).may_name_buyer:
        return None, None
    keys = frozenset(marketplace(channel).pii_keys)
    due = due_label(unmatched_due_day(policy, extracted_at))
    label = hold_label(_utc_day(extracted_at)) if dataset == ORDER_DATASET else due

    def sealer(table: str, key_label: str) -> Sealer:
        def seal(record_ids: list[str], values: list[str]) -> tuple[list[str], int | None]:
            sealed = vault.encrypt_column(merchant_id, table, PAYLOAD_COLUMN, record_ids, values, label=key_label)
            return sealed, key_version(sealed[0]) if sealed else None  # type: ignore[arg-type]

        return Sealer(keys, seal)

    return sealer(raw_table_name(channel, dataset), label), sealer(QUARANTINE.name, due)


# -------------------------------------------------------------------------------------- purge
@dataclass
class ShredResult:
    """What the shredding purge did on top of the row purge: values re-sealed per table, keys
    destroyed (labels and versions)."""

    resealed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    destroyed_labels: list[str] = field(default_factory=list)
    destroyed_versions: list[int] = field(default_factory=list)

    def metadata(self) -> dict[str, int]:
        return {
            "values_resealed": sum(self.resealed.values()),
            "keys_destroyed": len(self.destroyed_versions),
            "due_days_shredded": sum(1 for label in self.destroyed_labels if label.startswith(f"{DUE}:")),
        }


def purge_and_shred(
    wh: Warehouse,
    vault: Vault,
    merchant_id: str,
    *,
    now: datetime,
    run_id: str,
    policy: Policy | None = None,
) -> tuple[purge.PurgeResult, ShredResult]:
    """The daily PII purge with crypto-shredding (module docstring): the row purge and the
    re-sealing in one transaction, then the keys that fell due destroyed."""
    validate_merchant_id(merchant_id)
    now = now.astimezone(UTC)
    shred = ShredResult()

    def reseal(conn: Connection, used: Policy, have_orders: bool) -> None:
        _reseal(conn, vault, merchant_id, used, now, have_orders, shred)

    result = purge.purge_pii(wh, merchant_id, now=now, run_id=run_id, policy=policy, in_transaction=reseal)
    # After the commit: a key destroyed before the re-sealed rows were durable would lose them.
    doomed = labels_to_destroy(vault.live_labels(merchant_id), _utc_day(now))
    if doomed:
        shred.destroyed_versions = vault.destroy_labelled_keys(merchant_id, doomed, now)
        shred.destroyed_labels = doomed
    if shred.destroyed_versions or any(shred.resealed.values()):
        with wh.connect() as conn:
            record_audit(
                conn,
                actor=f"run:{run_id}",
                action=SHRED_ACTION,
                merchant_id=merchant_id,
                details={
                    "labels": shred.destroyed_labels,
                    "key_versions": shred.destroyed_versions,
                    "resealed": dict(shred.resealed),
                },
                at=now,
            )
    return result, shred


def _pending_versions(vault: Vault, merchant_id: str) -> set[int]:
    """Key versions whose values wait for a due day: the hold keys, and the general key's (which
    sealed buyer PII before keys had labels)."""
    held = {v for label, versions in vault.live_labels(merchant_id).items() if label.startswith(f"{HOLD}:") for v in versions}
    return held | set(vault.general_versions(merchant_id))


def _in_list(versions: set[int]) -> str:
    return ", ".join(str(int(v)) for v in sorted(versions)) or "NULL"


def _reseal(
    conn: Connection,
    vault: Vault,
    merchant_id: str,
    policy: Policy,
    now: datetime,
    have_orders: bool,
    shred: ShredResult,
) -> None:
    schema = merchant_schema(merchant_id)
    today = _utc_day(now)
    pending = _in_list(_pending_versions(vault, merchant_id))
    have_pii = conn.table_exists(schema, BUYER_PII.name)
    if have_pii:
        ensure_pii_key_column(conn, schema, BUYER_PII.name)
    changed: set[tuple[str, str]] = set()
    if have_pii:
        changed.update(
            conn.fetchall(
                f"SELECT channel, marketplace_order_id FROM {schema}.{BUYER_PII.name} "
                f"WHERE {PII_KEY_VERSION} IS NULL OR {PII_KEY_VERSION} IN ({pending})"
            )
        )
    raw_tables = [
        (channel, raw_table_name(channel, ORDER_DATASET))
        for channel in CHANNELS
        if conn.table_exists(schema, raw_table_name(channel, ORDER_DATASET))
    ]
    for channel, table in raw_tables:
        ensure_pii_key_column(conn, schema, table)
        changed.update(
            (channel, key)
            for (key,) in conn.fetchall(f"SELECT DISTINCT record_key FROM {schema}.{table} WHERE {PII_KEY_VERSION} IN ({pending})")
        )
    if not changed:
        return
    pii_due, raw_due = _order_due_days(conn, schema, policy, changed) if have_orders else ({}, {})
    if have_pii:
        shred.resealed[BUYER_PII.name] += _reseal_pii_rows(conn, vault, merchant_id, schema, changed, pii_due, today)
    for channel, table in raw_tables:
        ids = sorted(order_id for c, order_id in changed if c == channel)
        if ids:
            shred.resealed[table] += _reseal_raw_rows(
                conn, vault, merchant_id, schema, channel, table, ids, raw_due, policy, today
            )


def _label_for(due: date | None, today: date) -> str:
    return hold_label(today) if due is None else due_label(due)


def _order_due_days(
    conn: Connection, schema: str, policy: Policy, keys: set[tuple[str, str]]
) -> tuple[dict[tuple[str, str], date], dict[tuple[str, str], date]]:
    """The due day of each order's PII (buyer PII rules) and raw payload PII (raw rules), for the
    orders among `keys` whose due day is known; computed with the purge's own anchors (first-seen
    times from the temp table the row purge built) and the retention engine's day semantics."""
    pii_rules = policy.rules_for(Category.BUYER_PII)
    raw_rules = [r for r in policy.rules_for(Category.RAW_PAYLOAD_PII) if r.follows]
    rules: list[Rule] = [*pii_rules, *raw_rules]
    selects = []
    for index, rule in enumerate(rules):
        condition, anchor = purge.anchor_sql(rule)
        selects.append(f"CASE WHEN {condition} THEN {anchor} END AS a{index}")
    pii_due: dict[tuple[str, str], date] = {}
    raw_due: dict[tuple[str, str], date] = {}
    by_channel: dict[str, list[str]] = defaultdict(list)
    for channel, order_id in keys:
        by_channel[channel].append(order_id)
    for channel, ids in by_channel.items():
        rows = conn.fetchall(
            f"SELECT o.marketplace_order_id, {', '.join(selects)} FROM {schema}.{ORDERS.name} o "
            f"LEFT JOIN {purge.FIRSTS_TABLE} f ON f.channel = o.channel AND f.marketplace_order_id = o.marketplace_order_id "
            f"WHERE o.channel = ? AND {order_ids_match(conn, 'o.marketplace_order_id')}",
            [channel, sorted(ids)],
        )
        for order_id, *anchors in rows:
            for index, rule in enumerate(rules):
                moment = anchors[index]
                if moment is None or not rule.applies_to_channel(channel):
                    continue
                if isinstance(moment, datetime) and moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                due_at = purge_due_at(rule, {rule.anchor: moment})
                if due_at is None:
                    continue
                target = pii_due if rule.category is Category.BUYER_PII else raw_due
                key = (channel, order_id)
                target[key] = min(target.get(key, due_at.date()), due_at.date())
    return pii_due, raw_due


def _reseal_pii_rows(
    conn: Connection,
    vault: Vault,
    merchant_id: str,
    schema: str,
    keys: set[tuple[str, str]],
    due: dict[tuple[str, str], date],
    today: date,
) -> int:
    from illuma_pipelines.core.orders import delete_orders

    frames = []
    by_channel: dict[str, list[str]] = defaultdict(list)
    for channel, order_id in keys:
        by_channel[channel].append(order_id)
    for channel, ids in by_channel.items():
        frames.append(
            conn.fetch_df(
                f"SELECT * FROM {schema}.{BUYER_PII.name} WHERE channel = ? AND {order_ids_match(conn)}",
                [channel, sorted(ids)],
            )
        )
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if frame.empty:
        return 0
    moved = 0
    versions: list[int | None] = []
    columns = {c: frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in PII_COLUMNS}
    for index, (channel, order_id) in enumerate(
        zip(frame["channel"].tolist(), frame["marketplace_order_id"].tolist(), strict=True)
    ):
        label = _label_for(due.get((channel, order_id)), today)
        record_id = f"{channel}:{order_id}"
        items = [(record_id, c, columns[c][index]) for c in PII_COLUMNS]
        changed = {column: new for _, column, new in vault.reseal_rows(merchant_id, BUYER_PII.name, items, label)}
        for column, new in changed.items():
            columns[column][index] = new
        moved += len(changed)
        versions.append(vault.ensure_key(merchant_id, label))
    for column in PII_COLUMNS:
        frame[column] = pd.Series(columns[column], dtype="string")
    frame[PII_KEY_VERSION] = pd.Series(versions, dtype="Int64")
    delete_orders(conn, schema, BUYER_PII.name, zip(frame["channel"].tolist(), frame["marketplace_order_id"].tolist(), strict=True))
    conn.load_frame(schema, BUYER_PII.name, frame)
    return moved


def _reseal_raw_rows(
    conn: Connection,
    vault: Vault,
    merchant_id: str,
    schema: str,
    channel: str,
    table: str,
    order_ids: Sequence[str],
    due: dict[tuple[str, str], date],
    policy: Policy,
    today: date,
) -> int:
    in_core = {
        order_id
        for (order_id,) in conn.fetchall(
            f"SELECT marketplace_order_id FROM {schema}.{ORDERS.name} WHERE channel = ? AND {order_ids_match(conn)}",
            [channel, list(order_ids)],
        )
    } if conn.table_exists(schema, ORDERS.name) else set()
    rows = raw_payloads_of(conn, merchant_id, channel, ORDER_DATASET, order_ids)
    by_label: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for partition_date, record_key, payload, extracted_at in rows:
        if record_key in in_core:
            label = _label_for(due.get((channel, record_key)), today)
        else:
            label = due_label(unmatched_due_day(policy, extracted_at))
        by_label[label].append((partition_date, record_key, payload))
    moved = 0
    updates: list[tuple[str, str, str, int]] = []
    for label, group in by_label.items():
        sealed = reseal_payloads(vault, merchant_id, table, channel, [(key, text) for _, key, text in group], label=label)
        moved += sealed.values
        for (partition_date, record_key, _), new, version in zip(group, sealed.texts, sealed.key_versions, strict=True):
            if version is not None:
                updates.append((partition_date, record_key, new, version))
    if updates:
        # One statement for all rows: an UPDATE per row costs about a millisecond on DuckDB.
        frame = pd.DataFrame(updates, columns=["partition_date", "record_key", "payload", "version"])
        temp_schema = "pg_temp" if conn.dialect == "postgres" else "temp"
        conn.execute(f"DROP TABLE IF EXISTS {_RESEALED}")
        conn.execute(f"CREATE TEMP TABLE {_RESEALED} (partition_date TEXT, record_key TEXT, payload TEXT, version INTEGER)")
        conn.load_frame(temp_schema, _RESEALED, frame)
        json_type = "JSON" if conn.dialect == "duckdb" else "JSONB"
        conn.execute(
            f"UPDATE {schema}.{table} SET payload = CAST(x.payload AS {json_type}), {PII_KEY_VERSION} = x.version "
            f"FROM {_RESEALED} x WHERE {table}.partition_date = CAST(x.partition_date AS DATE) "
            f"AND {table}.record_key = x.record_key"
        )
    return moved


_RESEALED = "illuma_resealed"
