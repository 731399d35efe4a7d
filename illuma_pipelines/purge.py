"""Retention purges, account erasure and deletion requests: the privacy policy's deletion promises
as set-based SQL over one merchant's schema. No Dagster here; the clock (`now`) is an argument.

- `purge_pii` (daily): buyer PII that reached its limit goes from every place it lives: the
  vault-encrypted `core_buyer_pii` rows, the PII fields inside raw payloads (redacted in place, the
  rest of the payload kept byte for byte), quarantine copies and expired export archives. Order
  facts are never touched.
- `erase_account`: a terminated merchant's schema, export files, data keys and registry rows, once
  its grace period has passed (or at once on an immediate-deletion request).
- `request_deletion`: records a rights request and terminates the account; `withdraw_deletion`
  closes it as withdrawn (audited) and reactivates the account, unless its erasure has begun.

Every action that changed something writes one `platform.retention_ledger` row (merchant, rule,
target, action, rows, cutoff, policy version, run). The purge changes the merchant's tables in the
merchant's own scope (ADR 0001), which cannot reach the ledger: its rows are staged in the same
transaction as the change (the merchant's report table and signed outbox) and written to the
ledger right after the commit, or by the next run if the process died in between (see OUTBOX_TABLE
below). A purge killed midway thus ends with both or neither, and a re-run finds nothing left to do
and writes nothing. Ledger rows never hold a PII value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from illuma_pipelines.core.tables import BUYER_PII, ORDER_STATUS_HISTORY, ORDERS
from illuma_pipelines.marketplaces import all_pii_keys, raw_datasets, raw_table_name
from illuma_pipelines.merchant_ids import merchant_schema, validate_merchant_id
from illuma_pipelines.paths import data_dir, var_dir
from illuma_pipelines.raw_records import QUARANTINE
from illuma_pipelines.registry import (
    ACTIVE,
    DELETION_KINDS,
    OFFBOARDED,
    RegistryError,
    merchant_overrides,
    open_deletion_request,
    record_audit,
)
from illuma_pipelines.retention import (
    DEFAULT_POLICY,
    Anchor,
    Category,
    Policy,
    Rule,
    cutoffs,
    effective_policy,
    erasure_deadline,
    request_deadline,
    request_status,
)
from illuma_pipelines.warehouse import (
    PLATFORM_SCHEMA,
    Connection,
    TableSpec,
    Warehouse,
    any_of,
    cols,
)

# Every channel's PII keys (illuma_pipelines/marketplaces.py), in one pattern: a marketplace added
# there is redacted here without a change.
PII_JSON_KEYS = all_pii_keys()
# A PII key with a JSON string value; `\1` keeps the key, the value becomes null.
PII_VALUE_PATTERN = r'"(' + "|".join(PII_JSON_KEYS) + r')"\s*:\s*"(?:[^"\\]|\\.)*"'
REDACTED_VALUE = r'"\1":null'
PII_TABLE = BUYER_PII.name
ORDERS_TABLE = ORDERS.name
HISTORY_TABLE = ORDER_STATUS_HISTORY.name
QUARANTINE_TABLE = QUARANTINE.name
LEDGER = f"{PLATFORM_SCHEMA}.retention_ledger"
REPORT_VIEW = "retention_purges"
# The ledger row that marks an erasure complete: the merchant's registry rows are deleted last.
ERASED_MARKER = ("merchant_account", f"{PLATFORM_SCHEMA}.merchants")


class ErasureNotDue(RegistryError):
    """The merchant's account erasure is not due yet (active, or within its grace period)."""


@dataclass(frozen=True)
class LedgerEntry:
    rule_id: str
    target: str
    action: str
    rows_affected: int
    cutoff: datetime | None = None


@dataclass
class PurgeResult:
    merchant_id: str
    entries: list[LedgerEntry] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(e.rows_affected for e in self.entries)

    def by_target(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries:
            out[e.target] = out.get(e.target, 0) + e.rows_affected
        return out


_PII_RE = re.compile(PII_VALUE_PATTERN)
_REPLACEMENT = r'"\1":null'


def redact_payload_text(text: str) -> str:
    """The same redaction the purge runs in SQL, in Python (for callers holding a payload)."""
    return _PII_RE.sub(_REPLACEMENT, text)


# ---------------------------------------------------------------------------------- SQL pieces
def _as_text(dialect: str, column: str) -> str:
    return f"CAST({column} AS {'VARCHAR' if dialect == 'duckdb' else 'TEXT'})"


def _has_pii(dialect: str, column: str) -> str:
    if dialect == "duckdb":
        return f"regexp_matches({_as_text(dialect, column)}, ?)"
    return f"{_as_text(dialect, column)} ~ ?"


def _redacted(dialect: str, column: str, *, json_column: bool = True) -> str:
    text = f"regexp_replace({_as_text(dialect, column)}, ?, ?, 'g')"
    if not json_column:
        return text
    return f"CAST({text} AS {'JSON' if dialect == 'duckdb' else 'JSONB'})"


# Statuses that mean the order (or part of it) left the warehouse, and those that end it unshipped.
# A partial refund is first seen on fulfilled orders as often as not (eBay reports FULFILLED and
# PARTIALLY_REFUNDED together), so it counts as shipped: at worst 90 days from when it was seen.
SHIPPED_STATUSES = ("partially_shipped", "shipped", "delivered", "returned", "partially_refunded")
ENDED_UNSHIPPED_STATUSES = ("cancelled", "refunded")
_SHIPMENT = "COALESCE(o.shipped_at, f.first_shipped)"


def anchor_sql(rule: Rule) -> tuple[str, str]:
    """(extra condition, anchor expression) over `core_orders o` joined with the first-seen times
    `f` (illuma_firsts) for an order-dated PII rule.

    Shipment is the channel's ship time, else when the order was first seen shipped: eBay's order
    payload carries no ship date, and an order whose shipment we never learn the time of must
    still fall due. Cancellation is when it was first seen cancelled (or refunded unshipped).
    """
    if rule.anchor is Anchor.DELIVERY:
        fallback = _SHIPMENT if rule.fallback_anchor is Anchor.SHIPMENT else "NULL"
        return "TRUE", f"COALESCE(o.delivered_at, {fallback})"
    if rule.anchor is Anchor.SHIPMENT:
        return "TRUE", _SHIPMENT
    if rule.anchor is Anchor.CANCELLATION:
        ended = ", ".join(f"'{s}'" for s in ENDED_UNSHIPPED_STATUSES)
        return (
            f"o.status IN ({ended}) AND {_SHIPMENT} IS NULL",
            "COALESCE(f.first_cancelled, o.last_updated_at, o.purchased_at)",
        )
    raise RegistryError(f"rule {rule.id!r} is not dated by an order event (anchor {rule.anchor})")


# ------------------------------------------------------------------------------------- ledger
def _ledger(
    conn: Connection,
    merchant_id: str,
    entry: LedgerEntry,
    *,
    policy: Policy,
    now: datetime,
    run_id: str,
) -> None:
    conn.execute(
        f"INSERT INTO {LEDGER} (ledger_id, merchant_id, rule_id, target, action, rows_affected, "
        "cutoff, policy_version, policy_fingerprint, purged_at, run_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            uuid.uuid4().hex,
            merchant_id,
            entry.rule_id,
            entry.target,
            entry.action,
            entry.rows_affected,
            entry.cutoff,
            policy.version,
            policy.fingerprint(),
            now,
            run_id,
        ],
    )


def _apply(
    wh: Warehouse,
    result: PurgeResult,
    entry_of: callable,
    *,
    policy: Policy,
    now: datetime,
    run_id: str,
) -> None:
    """Run one purge step and its ledger row in one transaction; a step that changed nothing
    (returns None, or a count of 0) writes nothing."""
    with wh.connect() as conn:
        entry = entry_of(conn)
        if entry is not None and (entry.rows_affected > 0 or entry.action == "drop_schema"):
            _ledger(conn, result.merchant_id, entry, policy=policy, now=now, run_id=run_id)
            result.entries.append(entry)


# A purge changes the merchant's tables inside the merchant's scope, where the platform's ledger is
# out of reach (ADR 0001). Its ledger rows are written there, in the same transaction as the
# changes: into the merchant's own report table and into an outbox, each outbox row signed with the
# platform's ledger key (which no merchant scope can read). The platform then copies the outbox
# into platform.retention_ledger, checking each signature (a row the merchant's scope forged or
# altered is refused and audited), and empties it. A purge killed between the two finds its rows
# in the outbox on the next run: the ledger ends with both or neither, as before.
OUTBOX_TABLE = "retention_outbox"
_LEDGER_COLUMNS = (
    "ledger_id text!", "rule_id text!", "target text!", "action text!", "rows_affected bigint!",
    "cutoff timestamptz", "policy_version text!", "policy_fingerprint text!", "purged_at timestamptz!",
    "run_id text!",
)
OUTBOX = TableSpec(OUTBOX_TABLE, cols(*_LEDGER_COLUMNS, "signature text!"), primary_key=("ledger_id",))
REPORT = TableSpec(REPORT_VIEW, cols(*_LEDGER_COLUMNS), primary_key=("ledger_id",))
_LEDGER_NAMES = [c.split()[0] for c in _LEDGER_COLUMNS]


def _signature(key: bytes, merchant_id: str, row: Sequence) -> str:
    def text(value: object) -> str:
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat()
        return "" if value is None else str(value)

    message = "\x1f".join([merchant_id, *(text(v) for v in row)])
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def _stage(
    conn: Connection,
    merchant_id: str,
    entries: Iterable[LedgerEntry],
    key: bytes,
    *,
    policy: Policy,
    now: datetime,
    run_id: str,
) -> list[list]:
    """Write `entries` to the merchant's report table and signed outbox, in the caller's
    merchant-scope transaction; returns the ledger rows, which the caller hands to flush_ledger
    (what the merchant's outbox holds never replaces them: a rule or trigger there could drop
    rows on their way in)."""
    schema = merchant_schema(merchant_id)
    conn.create_table(schema, OUTBOX)
    conn.create_table(schema, REPORT)
    staged = []
    for entry in entries:
        row = [
            uuid.uuid4().hex, entry.rule_id, entry.target, entry.action, entry.rows_affected,
            entry.cutoff, policy.version, policy.fingerprint(), now, run_id,
        ]
        marks = ", ".join("?" * len(row))
        conn.execute(f"INSERT INTO {schema}.{REPORT_VIEW} ({', '.join(_LEDGER_NAMES)}) VALUES ({marks})", row)
        conn.execute(
            f"INSERT INTO {schema}.{OUTBOX_TABLE} ({', '.join(_LEDGER_NAMES)}, signature) VALUES ({marks}, ?)",
            [*row, _signature(key, merchant_id, row)],
        )
        staged.append(row)
    return staged


def flush_ledger(wh: Warehouse, merchant_id: str, key: bytes, staged: Sequence[Sequence] = ()) -> int:
    """Write to platform.retention_ledger, each row once, the rows this process just staged and
    those a stopped purge left in the merchant's outbox (signature checked: a row the merchant's
    scope forged or altered is refused and audited); then empty the outbox. Returns how many rows
    the ledger gained."""
    schema = merchant_schema(merchant_id)
    with wh.merchant_scope(merchant_id) as conn:
        rows = conn.fetchall(
            f"SELECT {', '.join(_LEDGER_NAMES)}, signature FROM {schema}.{OUTBOX_TABLE}"
        ) if conn.table_exists(schema, OUTBOX_TABLE) else []
    if not rows and not staged:
        return 0
    verified = [r[:-1] for r in rows if hmac.compare_digest(r[-1] or "", _signature(key, merchant_id, r[:-1]))]
    good = list({row[0]: list(row) for row in [*verified, *staged]}.values())
    added = 0
    with wh.connect() as conn:
        have = {r[0] for r in conn.fetchall(
            f"SELECT ledger_id FROM {LEDGER} WHERE {any_of(conn.dialect, 'ledger_id')}", [[r[0] for r in good]]
        )} if good else set()
        for row in good:
            if row[0] in have:
                continue
            conn.execute(
                f"INSERT INTO {LEDGER} (merchant_id, {', '.join(_LEDGER_NAMES)}) VALUES (?{', ?' * len(row)})",
                [merchant_id, *row],
            )
            added += 1
        if len(verified) < len(rows):
            record_audit(
                conn,
                actor="platform:ledger",
                action="retention.ledger_rejected",
                merchant_id=merchant_id,
                details={"rows": len(rows) - len(verified), "reason": "outbox row without a valid signature"},
            )
    if rows:
        with wh.merchant_scope(merchant_id) as conn:
            conn.execute(
                f"DELETE FROM {schema}.{OUTBOX_TABLE} WHERE {any_of(conn.dialect, 'ledger_id')}", [[r[0] for r in rows]]
            )
    return added


def _record(
    wh: Warehouse, merchant_id: str, entries: list[LedgerEntry], *, policy: Policy, now: datetime, run_id: str
) -> None:
    """Ledger rows for changes made outside a merchant-scope transaction (export files)."""
    if not entries:
        return
    _, key = wh.placement()
    with wh.merchant_scope(merchant_id) as conn:
        staged = _stage(conn, merchant_id, entries, key, policy=policy, now=now, run_id=run_id)
    flush_ledger(wh, merchant_id, key, staged)


# ---------------------------------------------------------------------------------- PII purge
def purge_pii(
    wh: Warehouse,
    merchant_id: str,
    *,
    now: datetime,
    run_id: str,
    policy: Policy | None = None,
    in_transaction: Callable[[Connection, Policy, bool], None] | None = None,
) -> PurgeResult:
    """Remove every piece of the merchant's buyer PII that has reached its retention limit, under
    `policy` (default: the merchant's own, DEFAULT_POLICY with its overrides).

    `in_transaction(conn, policy, have_orders)` runs after the deletes and redactions, in the same
    transaction, with the temp table of first-seen times (`FIRSTS_TABLE`) in place when the
    merchant has orders: the shredding purge re-seals the remaining PII there
    (illuma_pipelines/shredding.py).

    One transaction, in the merchant's own scope (ADR 0001): the due orders are found once (each
    under the first policy rule that made it due), then each table is changed with one set-based
    statement, and the ledger rows are staged with the changes (report table and signed outbox),
    then written to the platform's ledger after the commit (flush_ledger), so a purge killed midway
    leaves nothing half done and the next run does it all. Values already removed are not matched again: a re-run changes nothing and writes no
    ledger row. Export archives past their expiry go last (files, with their own bookkeeping).
    """
    validate_merchant_id(merchant_id)
    now = now.astimezone(UTC)
    schema = merchant_schema(merchant_id)
    policy = policy or merchant_policy(wh, merchant_id)
    cut = cutoffs(now, policy)
    result = PurgeResult(merchant_id)
    order_rules = policy.rules_for(Category.BUYER_PII)
    raw_rule_of = {r.follows: r for r in policy.rules_for(Category.RAW_PAYLOAD_PII) if r.follows}
    unmatched = policy.rule("raw_pii_unmatched")
    rules = {r.id: r for r in policy.rules}

    if not wh.merchant_schema_exists(merchant_id):
        raise RegistryError(f"merchant {merchant_id!r} has no schema {schema!r}: nothing to purge")
    _, key = wh.placement()
    flush_ledger(wh, merchant_id, key)  # rows of a purge stopped after its commit
    with wh.merchant_scope(merchant_id) as conn:
        have_orders = conn.table_exists(schema, ORDERS_TABLE)
        entries: list[LedgerEntry] = []

        def add(counts: Iterable[tuple[str, int]], target: str) -> None:
            for rule_id, n in sorted(counts):
                if n:
                    rule = rules[rule_id]
                    entries.append(LedgerEntry(rule_id, target, str(rule.action), int(n), cut[rule_id]))

        if have_orders:
            _due_orders(conn, schema, order_rules, cut)
        # 1. The vault-encrypted PII table: delete the rows of due orders.
        if have_orders and conn.table_exists(schema, PII_TABLE):
            table = f"{schema}.{PII_TABLE}"
            on_keys = f"d.channel = {table}.channel AND d.marketplace_order_id = {table}.marketplace_order_id"
            add(
                conn.fetchall(
                    f"SELECT d.rule_id, count(*) FROM {_DUE} d JOIN {table} ON {on_keys} GROUP BY d.rule_id"
                ),
                table,
            )
            conn.execute(f"DELETE FROM {table} WHERE EXISTS (SELECT 1 FROM {_DUE} d WHERE {on_keys})")
        # 2. Raw payloads: redact the PII fields of due orders' records (and of records no order
        #    dates, after the unmatched rule's period), keep the rest byte for byte.
        for channel, dataset in raw_datasets(may_name_buyer=True):
            name = raw_table_name(channel, dataset)
            if not conn.table_exists(schema, name):
                continue
            table = f"{schema}.{name}"
            by_order = dataset == "orders" and have_orders
            # Rows checked once need no second look: the daily purge reads only new rows and
            # rows newly due, however long the history. A re-extracted row comes in unchecked.
            conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {CHECKED_COLUMN} TIMESTAMPTZ")
            _raw_candidates(conn, schema, table, channel, by_order, raw_rule_of, unmatched, cut)
            add(_redact_candidates(conn, table, now), table)
        # 3. Quarantine copies of rejected records (payload kept as text; few rows).
        if conn.table_exists(schema, QUARANTINE_TABLE):
            table = f"{schema}.{QUARANTINE_TABLE}"
            n = conn.execute_count(
                f"UPDATE {table} SET payload = {_redacted(conn.dialect, 'payload', json_column=False)} "
                f"WHERE payload IS NOT NULL AND extracted_at < ? AND {_has_pii(conn.dialect, 'payload')}",
                [PII_VALUE_PATTERN, REDACTED_VALUE, cut[unmatched.id], PII_VALUE_PATTERN],
            )
            add([(unmatched.id, n)], table)
        if in_transaction is not None:
            in_transaction(conn, policy, have_orders)
        staged = _stage(conn, merchant_id, entries, key, policy=policy, now=now, run_id=run_id)
        result.entries.extend(entries)
    flush_ledger(wh, merchant_id, key, staged)

    # 4. Export archives past their expiry (7 days, or earlier when PII inside them is due).
    from illuma_pipelines import export

    deleted = export.delete_expired_exports(wh, now, merchant_id=merchant_id)
    if deleted:
        rule = policy.rule("exports")
        entry = LedgerEntry(rule.id, "exports", str(rule.action), len(deleted), cut[rule.id])
        _record(wh, merchant_id, [entry], policy=policy, now=now, run_id=run_id)
        result.entries.append(entry)
    with wh.connect() as conn:
        record_audit(
            conn,
            actor=f"run:{run_id}",
            action="retention.pii_purge",
            merchant_id=merchant_id,
            details={"rows": result.total, "by_target": result.by_target(), "policy": policy.version},
            at=now,
        )
    return result


_DUE, _CAND, _HIT, _REDACTED = "illuma_due", "illuma_cand", "illuma_hit", "illuma_redacted"
_FIRSTS = FIRSTS_TABLE = "illuma_firsts"
# Added by the purge to each PII-bearing raw table: when the row's payload was found clean (or
# redacted). Extracts write new rows without it.
CHECKED_COLUMN = "pii_checked_at"


def _temp_table(conn: Connection, name: str, select: str, params: list) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(f"CREATE TEMP TABLE {name} AS {select}", params)
    if conn.dialect == "postgres":
        # Autovacuum never analyzes temp tables: without statistics the planner guesses sizes
        # and picks nested loops over millions of rows.
        conn.execute(f"ANALYZE {name}")


def _due_orders(conn: Connection, schema: str, order_rules: Iterable[Rule], cut: dict) -> None:
    """Temp table illuma_due: (channel, marketplace_order_id, rule_id) of every order whose PII is
    due, under the first rule (in policy order) that made it due."""
    shipped = ", ".join(f"'{s}'" for s in SHIPPED_STATUSES)
    ended = ", ".join(f"'{s}'" for s in ENDED_UNSHIPPED_STATUSES)
    history = (
        f"{schema}.{HISTORY_TABLE}"
        if conn.table_exists(schema, HISTORY_TABLE)
        else f"(SELECT channel, marketplace_order_id, status, last_updated_at AS changed_at FROM {schema}.{ORDERS_TABLE} WHERE FALSE)"
    )
    # When each order was first seen shipped, and first seen ended unshipped: one pass over history.
    _temp_table(
        conn,
        _FIRSTS,
        f"SELECT h.channel, h.marketplace_order_id, "
        f"MIN(CASE WHEN h.status IN ({shipped}) THEN h.changed_at END) AS first_shipped, "
        f"MIN(CASE WHEN h.status IN ({ended}) THEN h.changed_at END) AS first_cancelled "
        f"FROM {history} h GROUP BY h.channel, h.marketplace_order_id",
        [],
    )
    whens, params = [], []
    for rule in order_rules:
        condition, anchor = anchor_sql(rule)
        channel_filter = "TRUE" if rule.applies_to == "all" else f"o.channel = '{rule.applies_to}'"
        whens.append(f"WHEN {channel_filter} AND {condition} AND {anchor} < ? THEN '{rule.id}'")
        params.append(cut[rule.id])
    _temp_table(
        conn,
        _DUE,
        f"SELECT * FROM (SELECT o.channel, o.marketplace_order_id, CASE {' '.join(whens)} END AS rule_id "
        f"FROM {schema}.{ORDERS_TABLE} o LEFT JOIN {_FIRSTS} f ON f.channel = o.channel "
        "AND f.marketplace_order_id = o.marketplace_order_id) due WHERE rule_id IS NOT NULL",
        params,
    )


def _row_id(dialect: str) -> str:
    return "rowid" if dialect == "duckdb" else "ctid"


def _raw_candidates(
    conn: Connection,
    schema: str,
    table: str,
    channel: str,
    by_order: bool,
    raw_rule_of: dict,
    unmatched: Rule,
    cut: dict,
) -> None:
    """Temp table illuma_cand: (rid, rule_id) of the raw rows whose PII is due, before looking
    inside the payloads (cheap: keys and dates only)."""
    rid = _row_id(conn.dialect)
    if by_order:
        mapping = " ".join(f"WHEN '{leader}' THEN '{rule.id}'" for leader, rule in raw_rule_of.items())
        select = (
            f"SELECT r.{rid} AS rid, COALESCE(CASE d.rule_id {mapping} END, CASE WHEN o.marketplace_order_id "
            f"IS NULL AND r.extracted_at < ? THEN '{unmatched.id}' END) AS rule_id FROM {table} r "
            f"LEFT JOIN {_DUE} d ON d.channel = '{channel}' AND d.marketplace_order_id = r.record_key "
            f"LEFT JOIN {schema}.{ORDERS_TABLE} o ON o.channel = '{channel}' AND o.marketplace_order_id = r.record_key "
            f"WHERE r.{CHECKED_COLUMN} IS NULL"
        )
    else:
        select = (
            f"SELECT r.{rid} AS rid, CASE WHEN r.extracted_at < ? THEN '{unmatched.id}' END AS rule_id "
            f"FROM {table} r WHERE r.{CHECKED_COLUMN} IS NULL"
        )
    _temp_table(conn, _CAND, f"SELECT * FROM ({select}) c WHERE rule_id IS NOT NULL", [cut[unmatched.id]])


def _redact_candidates(conn: Connection, table: str, now: datetime) -> list[tuple[str, int]]:
    """Redact the candidates whose payload still holds PII; (rule_id, rows changed) per rule.

    The PII test reads the payload only of candidate rows (the CASE keeps the engine from running
    the pattern over the whole table). DuckDB redacts with its regex engine; PostgreSQL's regex
    replace costs about 0.7 ms a payload with this many keys, so there the payloads are redacted in
    Python (the same pattern) and written back by row id in the same transaction.
    """
    dialect, rid = conn.dialect, _row_id(conn.dialect)
    payload = f"CASE WHEN c.rid IS NOT NULL THEN {_as_text(dialect, 'r.payload')} END"
    test = f"regexp_matches({payload}, ?)" if dialect == "duckdb" else f"{payload} ~ ?"
    _temp_table(
        conn,
        _HIT,
        f"SELECT c.rid, c.rule_id FROM {_CAND} c JOIN {table} r ON r.{rid} = c.rid WHERE {test}",
        [PII_VALUE_PATTERN],
    )
    counts = conn.fetchall(f"SELECT rule_id, count(*) FROM {_HIT} GROUP BY rule_id")
    if counts:
        _redact_hits(conn, table, now)
    # Candidates without PII left (redacted before, or never had any) are marked checked too. On
    # Postgres the redacted rows have new ctids and are already marked; the rest keep theirs.
    conn.execute(
        f"UPDATE {table} SET {CHECKED_COLUMN} = ? WHERE {rid} IN (SELECT rid FROM {_CAND}) "
        f"AND {CHECKED_COLUMN} IS NULL",
        [now],
    )
    return counts


def _redact_hits(conn: Connection, table: str, now: datetime) -> None:
    if conn.dialect == "duckdb":
        conn.execute(
            f"UPDATE {table} SET payload = {_redacted('duckdb', 'payload')}, {CHECKED_COLUMN} = ? "
            f"FROM {_HIT} h WHERE {table}.rowid = h.rid",
            [PII_VALUE_PATTERN, REDACTED_VALUE, now],
        )
        return
    import pandas as pd

    rows = conn.fetchall(
        f"SELECT CAST(h.rid AS TEXT), CAST(r.payload AS TEXT) FROM {_HIT} h JOIN {table} r ON r.ctid = h.rid"
    )
    redacted = pd.DataFrame(
        {"rid": [r[0] for r in rows], "payload": [_PII_RE.sub(_REPLACEMENT, r[1]) for r in rows]}
    )
    conn.execute(f"DROP TABLE IF EXISTS {_REDACTED}")
    conn.execute(f"CREATE TEMP TABLE {_REDACTED} (rid TEXT, payload TEXT)")
    conn.load_frame("pg_temp", _REDACTED, redacted)
    conn.execute(
        f"UPDATE {table} SET payload = CAST(x.payload AS JSONB), {CHECKED_COLUMN} = ? FROM {_REDACTED} x "
        f"WHERE {table}.ctid = CAST(x.rid AS TID)",
        [now],
    )


# --------------------------------------------------------------------------------- overrides
def merchant_policy(wh: Warehouse, merchant_id: str) -> Policy:
    """DEFAULT_POLICY with the merchant's stored overrides applied (and re-checked)."""
    with wh.connect() as conn:
        return effective_policy(merchant_overrides(conn, merchant_id))


def set_retention_override(
    wh: Warehouse, merchant_id: str, rule_id: str, period: str, *, actor: str, now: datetime | None = None
) -> Policy:
    """Store a merchant's override of one rule's period, after checking it with every other
    override it has (retention.InvalidOverride when it would lengthen a maximum or shorten a
    minimum). Audited. Returns the merchant's new policy."""
    validate_merchant_id(merchant_id)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    with wh.connect() as conn:
        if not conn.fetchone(f"SELECT 1 FROM {PLATFORM_SCHEMA}.merchants WHERE merchant_id = ?", [merchant_id]):
            raise RegistryError(f"unknown merchant {merchant_id!r}: see 'illuma merchants list'")
        overrides = {**merchant_overrides(conn, merchant_id), rule_id: period}
        policy = effective_policy(overrides)
        stored = str(policy.overrides[rule_id])
        conn.execute(
            f"DELETE FROM {PLATFORM_SCHEMA}.retention_overrides WHERE merchant_id = ? AND rule_id = ?",
            [merchant_id, rule_id],
        )
        conn.execute(
            f"INSERT INTO {PLATFORM_SCHEMA}.retention_overrides (merchant_id, rule_id, period, set_at, set_by) "
            "VALUES (?, ?, ?, ?, ?)",
            [merchant_id, rule_id, stored, now, actor],
        )
        record_audit(
            conn, actor=actor, action="retention.override_set", merchant_id=merchant_id,
            details={"rule_id": rule_id, "period": stored, "policy": policy.fingerprint()}, at=now,
        )
    return policy


# ---------------------------------------------------------------------- requests and erasure
@dataclass(frozen=True)
class ErasureStatus:
    merchant_id: str
    status: str
    terminated_at: datetime | None
    immediate: bool
    deadline: datetime | None

    def due(self, now: datetime) -> bool:
        return self.deadline is not None and now >= self.deadline


def erasure_status(conn: Connection, merchant_id: str, policy: Policy = DEFAULT_POLICY) -> ErasureStatus | None:
    """The merchant's termination and erasure deadline; None when it is not registered."""
    row = conn.fetchone(
        f"SELECT status, offboarded_at, deletion_requested_at, immediate_deletion "
        f"FROM {PLATFORM_SCHEMA}.merchants WHERE merchant_id = ?",
        [merchant_id],
    )
    if row is None:
        return None
    status, offboarded_at, requested_at, immediate = row
    immediate = bool(immediate)
    if status != OFFBOARDED or offboarded_at is None:
        return ErasureStatus(merchant_id, status, None, immediate, None)
    anchor = requested_at if immediate and requested_at is not None else offboarded_at
    anchor = anchor if anchor.tzinfo else anchor.replace(tzinfo=UTC)
    deadline = erasure_deadline(anchor, immediate, policy=policy)
    return ErasureStatus(merchant_id, status, offboarded_at, immediate, deadline)


def due_erasures(wh: Warehouse, now: datetime, policy: Policy | None = None) -> list[ErasureStatus]:
    """Offboarded merchants whose erasure is due at `now` (under each one's own policy unless
    `policy` is given), oldest deadline first."""
    out = []
    with wh.connect() as conn:
        if not conn.table_exists(PLATFORM_SCHEMA, "merchants"):
            return []
        ids = [r[0] for r in conn.fetchall(
            f"SELECT merchant_id FROM {PLATFORM_SCHEMA}.merchants WHERE status = ?", [OFFBOARDED]
        )]
        for merchant_id in ids:
            own = policy if policy is not None else effective_policy(merchant_overrides(conn, merchant_id))
            status = erasure_status(conn, merchant_id, own)
            if status is not None and status.due(now):
                out.append(status)
    return sorted(out, key=lambda s: (s.deadline, s.merchant_id))


def request_deletion(
    wh: Warehouse,
    merchant_id: str,
    *,
    immediate: bool = False,
    requested_by: str,
    now: datetime | None = None,
) -> dict:
    """Record a deletion request (privacy policy §8, §10) and terminate the account.

    The account's data is erased 30 days after termination, or at once with `immediate`. Asking
    again while a request is open returns it (an immediate request upgrades an ordinary one).
    """
    validate_merchant_id(merchant_id)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    with wh.connect() as conn:
        row = conn.fetchone(
            f"SELECT status, offboarded_at FROM {PLATFORM_SCHEMA}.merchants WHERE merchant_id = ?", [merchant_id]
        )
        if row is None:
            raise RegistryError(f"unknown merchant {merchant_id!r}: see 'illuma merchants list'")
        open_request = conn.fetchone(
            f"SELECT request_id, kind, received_at, deadline FROM {PLATFORM_SCHEMA}.data_requests "
            "WHERE merchant_id = ? AND kind IN ('deletion', 'immediate_deletion') AND completed_at IS NULL "
            "ORDER BY received_at LIMIT 1",
            [merchant_id],
        )
        kind = "immediate_deletion" if immediate else "deletion"
        if open_request and (open_request[1] == "immediate_deletion" or not immediate):
            request_id, kind, received_at, deadline = open_request
        else:
            request_id, received_at, deadline = uuid.uuid4().hex, now, request_deadline(now)
            conn.execute(
                f"INSERT INTO {PLATFORM_SCHEMA}.data_requests (request_id, merchant_id, kind, received_at, "
                "deadline, requested_by) VALUES (?, ?, ?, ?, ?, ?)",
                [request_id, merchant_id, kind, received_at, deadline, requested_by],
            )
            conn.execute(
                f"UPDATE {PLATFORM_SCHEMA}.merchants SET status = ?, offboarded_at = COALESCE(offboarded_at, ?), "
                "deletion_requested_at = ?, immediate_deletion = ? WHERE merchant_id = ?",
                [OFFBOARDED, now, now, immediate, merchant_id],
            )
            record_audit(
                conn,
                actor=requested_by,
                action="merchant.deletion_requested",
                merchant_id=merchant_id,
                details={"request_id": request_id, "immediate": immediate, "was": row[0]},
                at=now,
            )
        # Under the merchant's own policy, as the erasure sensor will judge it (`due_erasures`).
        status = erasure_status(conn, merchant_id, effective_policy(merchant_overrides(conn, merchant_id)))
    return {
        "request_id": request_id,
        "merchant_id": merchant_id,
        "kind": kind,
        "received_at": received_at,
        "deadline": deadline,
        "erasure_due_at": status.deadline if status else None,
    }


def withdraw_deletion(
    wh: Warehouse, merchant_id: str, *, requested_by: str, now: datetime | None = None
) -> dict:
    """Withdraw a merchant's open deletion request (the merchant changed its mind).

    In one transaction: the request is closed in platform.data_requests (completed now, outcome
    `withdrawn`), the account is active again (no longer terminated, so its erasure is no longer
    due), and the audit log records who withdrew it. Refused (RegistryError, nothing changed)
    without an open request, or once the erasure has begun (the merchant's schema is gone): an
    erasure is never undone halfway. The erasure re-checks the account under a row lock before it
    drops anything, so a withdrawal and an erasure cannot both go ahead.
    """
    validate_merchant_id(merchant_id)
    if not requested_by or not requested_by.strip():
        raise RegistryError("say who asked for the withdrawal (--requested-by NAME): it goes to the audit log")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    with wh.connect() as conn:
        row = conn.fetchone(f"SELECT status FROM {PLATFORM_SCHEMA}.merchants WHERE merchant_id = ?", [merchant_id])
        if row is None:
            if already_erased(conn, merchant_id):
                raise RegistryError(f"merchant {merchant_id!r} was erased: there is no request left to withdraw")
            raise RegistryError(f"unknown merchant {merchant_id!r}: see 'illuma merchants list'")
        pending = open_deletion_request(conn, merchant_id)
        if pending is None:
            raise RegistryError(
                f"merchant {merchant_id!r} has no pending deletion request: nothing to withdraw "
                "(see 'illuma requests --all')"
            )
        # The registry row first: on PostgreSQL this waits for an erasure step holding it.
        conn.execute(
            f"UPDATE {PLATFORM_SCHEMA}.merchants SET status = ?, offboarded_at = NULL, deletion_requested_at = NULL, "
            "immediate_deletion = FALSE WHERE merchant_id = ?",
            [ACTIVE, merchant_id],
        )
        if not wh.merchant_schema_exists(merchant_id) or _schema_drop_ledgered(
            conn, merchant_id, merchant_schema(merchant_id), pending.received_at
        ):
            raise RegistryError(
                f"the erasure of {merchant_id!r} has begun (its schema is gone or being dropped): the request can no "
                "longer be withdrawn; the erasure completes at its next run, after which the merchant "
                "can be registered again ('illuma merchants add')"
            )
        conn.execute(
            f"UPDATE {PLATFORM_SCHEMA}.data_requests SET completed_at = ?, outcome = 'withdrawn' "
            f"WHERE merchant_id = ? AND kind IN {DELETION_KINDS} AND completed_at IS NULL",
            [now, merchant_id],
        )
        record_audit(
            conn,
            actor=requested_by,
            action="merchant.deletion_withdrawn",
            merchant_id=merchant_id,
            details={
                "request_id": pending.request_id,
                "kind": pending.kind,
                "received_at": pending.received_at.isoformat(),
                "erasure_was_due_at": pending.erasure_due_at.isoformat() if pending.erasure_due_at else None,
                "was": row[0],
            },
            at=now,
        )
    return {
        "request_id": pending.request_id,
        "merchant_id": merchant_id,
        "kind": pending.kind,
        "received_at": pending.received_at,
        "withdrawn_at": now,
        "erasure_was_due_at": pending.erasure_due_at,
    }


def already_erased(conn: Connection, merchant_id: str) -> bool:
    rule_id, target = ERASED_MARKER
    return bool(conn.fetchone(
        f"SELECT 1 FROM {LEDGER} WHERE merchant_id = ? AND rule_id = ? AND target = ? LIMIT 1",
        [merchant_id, rule_id, target],
    ))


def merchant_files(merchant_id: str) -> list:
    """Files of the merchant outside the warehouse: its export folder under the data folder, its
    reports and their outbox copies, the demo's step output for it (dbt's log lines name its
    schema), and dbt's kept parses and build directories of it. Its runs' files under the
    Dagster home go with its runs (`sensors.merchants.forget_merchant_history`)."""
    validate_merchant_id(merchant_id)
    from illuma_pipelines.dbt_vars import merchant_dbt_files
    from illuma_pipelines.reports.store import report_paths

    candidates = (
        data_dir() / "exports" / merchant_id, var_dir() / "logs" / "demo" / f"{merchant_id}.log",
        *report_paths(merchant_id), *merchant_dbt_files(merchant_id),
    )
    return [path for path in candidates if path.exists()]


def erase_account(
    wh: Warehouse,
    vault: object,
    merchant_id: str,
    *,
    now: datetime,
    run_id: str,
    policy: Policy | None = None,
) -> PurgeResult:
    """Erase a terminated merchant once due: export files, its schema (and role), its data keys
    (crypto-shredding any copy of its ciphertexts, backups included), then its registry rows.
    Only ledger rows (and the security log) remain. Re-running after completion does nothing;
    a run killed midway resumes where it stopped, as each step is idempotent.
    """
    validate_merchant_id(merchant_id)
    now = now.astimezone(UTC)
    result = PurgeResult(merchant_id)
    policy = policy or merchant_policy(wh, merchant_id)
    with wh.connect() as conn:
        status = erasure_status(conn, merchant_id, policy)
        if status is None:
            if already_erased(conn, merchant_id):
                return result
            raise RegistryError(f"unknown merchant {merchant_id!r}: see 'illuma merchants list'")
    if status.status == ACTIVE or status.deadline is None:
        raise ErasureNotDue(
            f"merchant {merchant_id!r} is {status.status}: erasure follows termination; use "
            "'illuma merchants request-deletion' (add --immediate to skip the 30-day grace)"
        )
    if not status.due(now):
        raise ErasureNotDue(
            f"erasure of {merchant_id!r} is due from {status.deadline.isoformat()} (30 days after "
            "termination); ask for immediate deletion to erase it now"
        )

    def step(fn: callable) -> None:
        _apply(wh, result, fn, policy=policy, now=now, run_id=run_id)

    # Export archives first: they are the copies most likely to travel.
    from illuma_pipelines import export

    def still_terminated(conn: Connection) -> None:
        # Touches the registry row: on PostgreSQL a concurrent withdrawal waits for this step's
        # transaction (and then finds the schema gone), or has committed and stops the erasure here.
        if not conn.execute_count(
            f"UPDATE {PLATFORM_SCHEMA}.merchants SET status = status WHERE merchant_id = ? AND status = ?",
            [merchant_id, OFFBOARDED],
        ):
            raise ErasureNotDue(
                f"merchant {merchant_id!r} is no longer terminated (its deletion request was "
                "withdrawn): the erasure stops, keeping its schema, data keys and registry rows"
            )

    with wh.connect() as conn:
        still_terminated(conn)
    n_exports = export.delete_merchant_exports(wh, merchant_id, now)
    for path in merchant_files(merchant_id):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def forget_exports(conn: Connection) -> LedgerEntry:
        # The files are gone; their rows (paths, who asked) go too, leaving the count here.
        n = conn.execute_count(f"DELETE FROM {PLATFORM_SCHEMA}.exports WHERE merchant_id = ?", [merchant_id])
        return LedgerEntry("merchant_schema", f"{PLATFORM_SCHEMA}.exports", "delete_files", max(n, n_exports))

    step(forget_exports)

    def forget_reports(conn: Connection) -> LedgerEntry:
        # Its report files are gone with its files above; their rows and its report address go too.
        from illuma_pipelines.reports.store import forget_reports as forget

        return LedgerEntry("merchant_schema", f"{PLATFORM_SCHEMA}.reports", "delete_rows", forget(conn, merchant_id))

    step(forget_reports)

    schema = merchant_schema(merchant_id)

    rows_held = 0
    if wh.merchant_schema_exists(merchant_id):
        # Counted in the merchant's own scope (the platform's login cannot read its tables).
        with wh.merchant_scope(merchant_id) as conn:
            rows_held = sum(conn.row_count(schema, t) for t in conn.base_tables(schema))

    with_platform = wh.drops_with_platform(merchant_id)

    def drop_schema(conn: Connection) -> LedgerEntry | None:
        still_terminated(conn)
        if not wh.merchant_schema_exists(merchant_id):
            return None
        if not with_platform:
            # Placed in another database (ADR 0011), which no transaction here spans: the ledger
            # row commits first and marks the erasure begun (a withdrawal is refused from then on),
            # then the schema is dropped there. A run stopped between the two finds the row and
            # the schema on its next run, and drops without a second row.
            if _schema_drop_ledgered(conn, merchant_id, schema):
                return None
            return LedgerEntry("merchant_schema", schema, "drop_schema", rows_held)
        # PostgreSQL: dropped through the admin-owned erasure function, in this transaction with
        # its ledger row. DuckDB: the merchant's file is deleted.
        wh.drop_merchant_schema_in(conn, merchant_id)
        return LedgerEntry("merchant_schema", schema, "drop_schema", rows_held)

    step(drop_schema)
    if not with_platform and wh.merchant_schema_exists(merchant_id):
        wh.drop_merchant_schema(merchant_id)

    destroyed = vault.destroy_merchant_keys(merchant_id, now)
    if destroyed:
        step(lambda conn: LedgerEntry("merchant_keys", "vault", "destroy_keys", len(destroyed)))

    def delete_registry(conn: Connection) -> LedgerEntry:
        conn.execute(f"DELETE FROM {PLATFORM_SCHEMA}.channel_connections WHERE merchant_id = ?", [merchant_id])
        conn.execute(f"DELETE FROM {PLATFORM_SCHEMA}.retention_overrides WHERE merchant_id = ?", [merchant_id])
        if conn.table_exists(PLATFORM_SCHEMA, "merchant_warehouses"):
            conn.execute(f"DELETE FROM {PLATFORM_SCHEMA}.merchant_warehouses WHERE merchant_id = ?", [merchant_id])
        n = conn.execute_count(f"DELETE FROM {PLATFORM_SCHEMA}.merchants WHERE merchant_id = ?", [merchant_id])
        conn.execute(
            f"UPDATE {PLATFORM_SCHEMA}.data_requests SET completed_at = ?, outcome = 'erased' "
            "WHERE merchant_id = ? AND kind IN ('deletion', 'immediate_deletion') AND completed_at IS NULL",
            [now, merchant_id],
        )
        record_audit(
            conn,
            actor=f"run:{run_id}",
            action="merchant.erased",
            merchant_id=merchant_id,
            details={"by_target": result.by_target(), "policy": policy.version},
            at=now,
        )
        rule_id, target = ERASED_MARKER
        return LedgerEntry(rule_id, target, "delete_rows", n)

    step(delete_registry)
    wh.forget_placement(merchant_id)
    return result


def _schema_drop_ledgered(conn: Connection, merchant_id: str, schema: str, since: datetime | None = None) -> bool:
    """Whether the ledger holds the drop of the merchant's schema by the erasure under way: one
    recorded since `since` (the open deletion request's receipt), or, without it, since the
    merchant's open request."""
    if since is None:
        pending = open_deletion_request(conn, merchant_id)
        if pending is None:
            return False
        since = pending.received_at
    return bool(conn.fetchone(
        f"SELECT 1 FROM {LEDGER} WHERE merchant_id = ? AND rule_id = 'merchant_schema' AND target = ? "
        "AND action = 'drop_schema' AND purged_at >= ? LIMIT 1",
        [merchant_id, schema, since],
    ))


# ------------------------------------------------------------------------------------ reports
def purge_report(wh: Warehouse, merchant_id: str, since: datetime | None = None) -> list[dict]:
    """The merchant's ledger rows, newest first: what was purged, under which rule, when."""
    validate_merchant_id(merchant_id)
    with wh.connect() as conn:
        rows = conn.fetchall(
            f"SELECT purged_at, rule_id, target, action, rows_affected, cutoff, policy_version, run_id "
            f"FROM {LEDGER} WHERE merchant_id = ? AND purged_at >= ? ORDER BY purged_at DESC, rule_id",
            [merchant_id, since or datetime(1970, 1, 1, tzinfo=UTC)],
        )
    keys = ("purged_at", "rule_id", "target", "action", "rows_affected", "cutoff", "policy_version", "run_id")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def requests_report(
    wh: Warehouse, now: datetime, *, include_done: bool = False, merchant_id: str | None = None
) -> list[dict]:
    """Rights requests with their 30-day deadline and status (on_time, due_soon, overdue, done)."""
    where, params = ("WHERE merchant_id = ?", [validate_merchant_id(merchant_id)]) if merchant_id else ("", [])
    with wh.connect() as conn:
        if not conn.table_exists(PLATFORM_SCHEMA, "data_requests"):
            return []
        rows = conn.fetchall(
            f"SELECT request_id, merchant_id, kind, received_at, deadline, completed_at, outcome "
            f"FROM {PLATFORM_SCHEMA}.data_requests {where} ORDER BY deadline, request_id",
            params,
        )
    out = []
    for request_id, merchant_id, kind, received, deadline, completed, outcome in rows:
        received = received if received.tzinfo else received.replace(tzinfo=UTC)
        if completed is not None and completed.tzinfo is None:
            completed = completed.replace(tzinfo=UTC)
        # A request stamped after `now` (another host's clock, a replayed test clock) is not late.
        status = str(request_status(received, completed, max(now, received)))
        if status == "done" and not include_done:
            continue
        out.append({
            "request_id": request_id, "merchant_id": merchant_id, "kind": kind,
            "received_at": received, "deadline": deadline, "completed_at": completed,
            "outcome": outcome, "status": status,
        })
    return out


def late_requests(rows: Iterable[dict]) -> list[dict]:
    return [r for r in rows if r["status"] in ("due_soon", "overdue")]
