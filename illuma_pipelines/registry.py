"""The merchant registry and channel connections in the warehouse's `platform` schema.

A channel connection stores a credential *reference* (where the secret lives), never the secret:
`env:NAME` (an environment variable read when a client needs it) or `sandbox:<merchant_id>` (the
local marketplace sandbox's per-merchant credentials).

Each merchant is placed in one warehouse (platform.merchant_warehouses; ADR 0011): `main` unless
`illuma merchants add --warehouse NAME` says otherwise. The placement never changes while the
merchant has data there.

A merchant may have a report e-mail address (platform.report_recipients): where its reports are
sent. A merchant without one gets its reports rendered but not sent.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from illuma_pipelines.environment import EnvironmentConfigError, validate_warehouse_name
from illuma_pipelines.marketplaces import CHANNELS, marketplace
from illuma_pipelines.merchant_ids import merchant_schema, validate_merchant_id
from illuma_pipelines.placement import PLACEMENT_TABLE, read_placement
from illuma_pipelines.retention import effective_policy, erasure_deadline
from illuma_pipelines.warehouse import (
    IN_SCHEMA,
    MAIN,
    PLATFORM_SCHEMA,
    Connection,
    TableSpec,
    Warehouse,
    cols,
)

__all__ = ["CHANNELS"]  # re-exported for the CLI's help text
ACTIVE, OFFBOARDED = "active", "offboarded"
CREDENTIAL_REF = re.compile(r"(env:[A-Z][A-Z0-9_]{0,127}|sandbox:[a-z][a-z0-9_]{1,39})")
MARKETPLACE_ID = re.compile(r"[A-Za-z0-9_.-]{1,40}")
# A bare address (no display name, no comments): the dot-atom local part of RFC 5322 and a domain
# of DNS labels with a top-level name; ASCII only, so no look-alike or header-breaking character.
REPORT_EMAIL = re.compile(
    r"(?=.{6,254}\Z)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)


class RegistryError(ValueError):
    """A registry request that cannot be carried out as asked."""


class PendingDeletion(RegistryError):
    """The merchant asked for its account to be deleted and the request is still open."""


DELETION_KINDS = ("deletion", "immediate_deletion")


@dataclass(frozen=True)
class DeletionRequest:
    """A merchant's open deletion request, and when its account's erasure is due."""

    request_id: str
    merchant_id: str
    kind: str
    received_at: datetime
    deadline: datetime  # the request's answer deadline (30 days, privacy policy §10)
    requested_by: str
    erasure_due_at: datetime | None  # None while the account is not terminated

    def describe(self) -> str:
        due = (
            f"its data is due for erasure from {self.erasure_due_at:%Y-%m-%d %H:%M} UTC"
            if self.erasure_due_at
            else "its erasure is not scheduled (the account is not terminated)"
        )
        return (
            f"merchant {self.merchant_id!r} has a pending {self.kind.replace('_', ' ')} request "
            f"({self.request_id}, received {self.received_at:%Y-%m-%d %H:%M} UTC from "
            f"{self.requested_by}, to be answered by {self.deadline:%Y-%m-%d %H:%M} UTC); {due}"
        )


def _utc(moment: datetime | None) -> datetime | None:
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def open_deletion_request(conn: Connection, merchant_id: str) -> DeletionRequest | None:
    """The merchant's oldest open deletion request, if any (platform.data_requests), with the
    erasure deadline its termination sets under the merchant's retention policy."""
    if not conn.table_exists(PLATFORM_SCHEMA, "data_requests"):
        return None
    request = conn.fetchone(
        f"SELECT request_id, kind, received_at, deadline, requested_by FROM {PLATFORM_SCHEMA}.data_requests "
        f"WHERE merchant_id = ? AND kind IN {DELETION_KINDS} AND completed_at IS NULL "
        "ORDER BY received_at LIMIT 1",
        [merchant_id],
    )
    if request is None:
        return None
    request_id, kind, received_at, deadline, requested_by = request
    row = conn.fetchone(
        f"SELECT status, offboarded_at, deletion_requested_at, immediate_deletion "
        f"FROM {PLATFORM_SCHEMA}.merchants WHERE merchant_id = ?",
        [merchant_id],
    )
    erasure_due = None
    if row is not None and row[0] == OFFBOARDED and row[1] is not None:
        immediate = bool(row[3])
        anchor = _utc(row[2] if immediate and row[2] is not None else row[1])
        # The merchant's overrides can shorten the account rule.
        erasure_due = erasure_deadline(
            anchor, immediate, policy=effective_policy(merchant_overrides(conn, merchant_id))
        )
    return DeletionRequest(
        request_id, merchant_id, kind, _utc(received_at), _utc(deadline), requested_by, erasure_due
    )


@dataclass(frozen=True)
class ChannelConnection:
    channel: str
    credential_ref: str
    marketplace_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    display_name: str
    status: str
    created_at: datetime
    offboarded_at: datetime | None = None
    channels: tuple[ChannelConnection, ...] = field(default_factory=tuple)
    report_email: str | None = None  # None: reports are rendered, not sent
    warehouse: str = MAIN  # the warehouse holding its schema (ADR 0011)

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(c.channel for c in self.channels)


def utcnow() -> datetime:
    return datetime.now(UTC)


def validate_channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise RegistryError(f"unknown channel {channel!r}: choose one of {', '.join(CHANNELS)}")
    return channel


def validate_credential_ref(ref: str) -> str:
    if not isinstance(ref, str) or not CREDENTIAL_REF.fullmatch(ref):
        raise RegistryError(
            "a credential reference is 'env:VARIABLE_NAME' (uppercase) or 'sandbox:<merchant_id>'; "
            "never put the secret itself in the registry"
        )
    return ref


def validate_report_email(address: str) -> str:
    """The address, trimmed and with its domain in lowercase, if it is a plain e-mail address."""
    text = address.strip() if isinstance(address, str) else ""
    if not REPORT_EMAIL.fullmatch(text) or len(text.partition("@")[0]) > 64:
        shown = repr(text if len(text) <= 80 else text[:77] + "...")
        raise RegistryError(
            f"{shown} is not an e-mail address a report can go to: give a bare address such as "
            "reports@acme-parts.com (no display name, no spaces)"
        )
    local, _, domain = text.partition("@")
    return f"{local}@{domain.lower()}"


def report_email(conn: Connection, merchant_id: str) -> str | None:
    """Where the merchant's reports are sent; None when it has no report e-mail."""
    if not conn.table_exists(PLATFORM_SCHEMA, "report_recipients"):
        return None
    row = conn.fetchone(
        f"SELECT email FROM {PLATFORM_SCHEMA}.report_recipients WHERE merchant_id = ?", [merchant_id]
    )
    return row[0] if row else None


def _write_report_email(
    conn: Connection, merchant_id: str, address: str | None, *, actor: str, at: datetime
) -> None:
    """Set (or, with None, remove) the merchant's report e-mail, audited with the address's domain
    only. Setting an address again lifts its suppression: the data team has checked it with the
    merchant, and a provider that still finds it inactive suppresses it again."""
    before = report_email(conn, merchant_id)
    conn.execute(f"DELETE FROM {PLATFORM_SCHEMA}.report_recipients WHERE merchant_id = ?", [merchant_id])
    lifted = 0
    if address is not None:
        conn.execute(
            f"INSERT INTO {PLATFORM_SCHEMA}.report_recipients (merchant_id, email, set_at, set_by) VALUES (?, ?, ?, ?)",
            [merchant_id, address, at, actor],
        )
        lifted = conn.execute_count(
            f"DELETE FROM {PLATFORM_SCHEMA}.report_suppressions WHERE recipient = ?", [address]
        )
    if before == address and not lifted:
        return
    details: dict = {"domain": address.partition("@")[2]} if address else {}
    if before is not None:
        details["previous_domain"] = before.partition("@")[2]
    if lifted:
        details["suppression_lifted"] = True
    record_audit(
        conn,
        actor=actor,
        action="merchant.report_email_set" if address else "merchant.report_email_removed",
        merchant_id=merchant_id,
        details=details,
        at=at,
    )


def set_report_email(
    warehouse: Warehouse,
    merchant_id: str,
    address: str | None,
    *,
    actor: str = "cli",
    at: datetime | None = None,
) -> Merchant:
    """Set the address the merchant's reports go to (None: stop sending them; they are still
    rendered). Audited; the address is validated first."""
    validate_merchant_id(merchant_id)
    address = validate_report_email(address) if address is not None else None
    with warehouse.connect() as conn:
        row = conn.fetchone(f"SELECT status FROM {PLATFORM_SCHEMA}.merchants WHERE merchant_id = ?", [merchant_id])
        if not row:
            raise RegistryError(f"unknown merchant {merchant_id!r}: see 'illuma merchants list'")
        _write_report_email(conn, merchant_id, address, actor=actor, at=at or utcnow())
    return get_merchant(warehouse, merchant_id)


def resolve_credential(ref: str, channel: str = "amazon") -> str:
    """The secret a credential reference points at, read at the moment a client needs it.

    Amazon and eBay: the merchant's OAuth refresh token. Walmart issues each seller its own key
    pair: `client_id:client_secret`.
    """
    validate_credential_ref(ref)
    validate_channel(channel)
    kind, _, name = ref.partition(":")
    if kind == "sandbox":
        if channel == "walmart":
            return f"sandbox-client-{name}:sandbox-secret-{name}"
        return f"sandbox-refresh-{name}"
    value = os.environ.get(name)
    if not value:
        raise RegistryError(f"credential reference {ref!r} names an environment variable that is not set")
    return value


def record_audit(
    conn: Connection,
    *,
    actor: str,
    action: str,
    merchant_id: str | None,
    details: dict | None = None,
    at: datetime | None = None,
) -> str:
    """Append one audit event (who, what, which merchant, when, counts). Never pass PII in details."""
    event_id = uuid.uuid4().hex
    conn.execute(
        f"INSERT INTO {PLATFORM_SCHEMA}.audit_log (event_id, occurred_at, actor, action, merchant_id, details) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [event_id, at or utcnow(), actor, action, merchant_id, json.dumps(details or {}, sort_keys=True, default=str)],
    )
    return event_id


# The merchant's own copy of its channel connections (no credential reference), for its dbt models:
# a merchant scope cannot read the platform schema (ADR 0001), so the platform writes the copy into
# the merchant's schema, from the merchant's scope, whenever the connections change.
CONNECTIONS_COPY = TableSpec(
    "registry_channel_connections",
    cols("merchant_id text!", "channel text!", "marketplace_ids text", "connected_at timestamptz!"),
    primary_key=("channel",),
)


def sync_connections_copy(warehouse: Warehouse, merchant_id: str) -> int:
    """Rewrite the merchant's copy of its channel connections from the registry."""
    with warehouse.connect() as conn:
        frame = conn.fetch_df(
            f"SELECT merchant_id, channel, marketplace_ids, connected_at FROM {PLATFORM_SCHEMA}.channel_connections "
            "WHERE merchant_id = ? ORDER BY channel",
            [merchant_id],
        )
    schema = merchant_schema(merchant_id)
    with warehouse.merchant_scope(merchant_id) as conn:
        # A view of the platform table before ADR 0001's isolation; the merchant cannot read that.
        if conn.fetchone(
            f"SELECT 1 FROM information_schema.tables WHERE table_name = ? AND table_type = 'VIEW' AND {IN_SCHEMA}",
            [CONNECTIONS_COPY.name, schema, schema],
        ):
            conn.execute(f"DROP VIEW {schema}.{CONNECTIONS_COPY.name}")
        conn.create_table(schema, CONNECTIONS_COPY)
        return conn.replace_rows(schema, CONNECTIONS_COPY.name, {}, frame)


def place_merchant(
    warehouse: Warehouse, merchant_id: str, name: str | None, *, at: datetime | None = None
) -> tuple[str, str | None]:
    """Record the warehouse that holds (or will hold) the merchant's schema; return its name and
    the one recorded before (None: no row). The caller audits it (add_merchant's audit row).

    `name` None keeps the merchant's placement (`main` for a new one). A name must be one the
    configuration knows (`main` or one of ILLUMA_WAREHOUSES). Moving a merchant that has data in
    its warehouse is refused (RegistryError, nothing changed): its schema would be left behind.
    Written before the schema is created, so a run stopped in between creates it there next time.
    """
    validate_merchant_id(merchant_id)
    if name is not None:
        try:
            validate_warehouse_name(name)
        except EnvironmentConfigError as exc:
            raise RegistryError(str(exc)) from None
        if name not in warehouse.warehouse_names():
            raise RegistryError(
                f"unknown warehouse {name!r}: configured are {', '.join(warehouse.warehouse_names())} "
                "(`main` is ILLUMA_WAREHOUSE_URL; others are named in ILLUMA_WAREHOUSES)"
            )
    warehouse.forget_placement(merchant_id)
    with warehouse.connect() as conn:
        recorded = read_placement(conn, merchant_id)
    current = recorded or MAIN
    target = name or current
    if target != current and warehouse.merchant_schema_exists(merchant_id):
        raise RegistryError(
            f"merchant {merchant_id!r} has data in warehouse {current!r}: moving a merchant between "
            f"warehouses is not supported. Keep --warehouse {current}, or erase the merchant first "
            "(illuma merchants request-deletion) and add it again"
        )
    if recorded != target:
        with warehouse.connect() as conn:
            conn.execute(f"DELETE FROM {PLACEMENT_TABLE} WHERE merchant_id = ?", [merchant_id])
            conn.execute(
                f"INSERT INTO {PLACEMENT_TABLE} (merchant_id, warehouse, placed_at) VALUES (?, ?, ?)",
                [merchant_id, target, at or utcnow()],
            )
        warehouse.forget_placement(merchant_id)
    return target, recorded


def add_merchant(
    warehouse: Warehouse,
    merchant_id: str,
    *,
    display_name: str | None = None,
    channels: dict[str, ChannelConnection] | None = None,
    report_email: str | None = None,
    placement: str | None = None,
    actor: str = "cli",
    at: datetime | None = None,
) -> Merchant:
    """Register (or re-activate) a merchant, connect its channels and create its schema in the
    warehouse it is placed in (`placement`: a configured warehouse name; None keeps its placement,
    `main` for a new merchant; see place_merchant).

    Idempotent: adding an existing merchant updates its name and channel connections (and its
    report e-mail when one is given; without one, any address it has is kept). Refused
    (PendingDeletion, nothing changed) while the merchant has an open deletion request: re-adding
    it would cancel the erasure the merchant asked for and leave the request to go overdue. A
    withdrawal is its own audited step (`purge.withdraw_deletion`).
    """
    validate_merchant_id(merchant_id)
    channels = channels or {}
    for name, conn_spec in channels.items():
        validate_channel(name)
        validate_credential_ref(conn_spec.credential_ref)
        for mp in conn_spec.marketplace_ids:
            if not MARKETPLACE_ID.fullmatch(mp):
                raise RegistryError(f"invalid marketplace id {mp!r} for channel {name}")
            if not marketplace(name).is_marketplace_id(mp):
                # Another channel's id would reach every request of this one (an Amazon id as
                # eBay's X-EBAY-C-MARKETPLACE-ID): refuse it before anything is stored.
                raise RegistryError(
                    f"{mp!r} is not a {name} marketplace id (such as {marketplace(name).marketplace_id_examples}); "
                    f"check the --channel {name}=REF@... value"
                )
    email = validate_report_email(report_email) if report_email is not None else None
    at = at or utcnow()
    warehouse.ensure_platform()
    with warehouse.connect() as conn:
        pending = open_deletion_request(conn, merchant_id)
    if pending is not None:
        raise PendingDeletion(
            f"{pending.describe()}. Adding it again would cancel that erasure. If the merchant "
            f"withdrew the request, record the withdrawal first: illuma merchants withdraw-deletion "
            f"{merchant_id} --requested-by NAME"
        )
    placed, placed_before = place_merchant(warehouse, merchant_id, placement, at=at)
    warehouse.create_merchant_schema(merchant_id)
    with warehouse.connect() as conn:
        existing = conn.fetchone(
            f"SELECT status FROM {PLATFORM_SCHEMA}.merchants WHERE merchant_id = ?", [merchant_id]
        )
        if existing:
            conn.execute(
                f"UPDATE {PLATFORM_SCHEMA}.merchants SET display_name = ?, status = ?, offboarded_at = NULL "
                "WHERE merchant_id = ?",
                [display_name or merchant_id, ACTIVE, merchant_id],
            )
        else:
            conn.execute(
                f"INSERT INTO {PLATFORM_SCHEMA}.merchants (merchant_id, display_name, status, created_at, "
                "immediate_deletion) VALUES (?, ?, ?, ?, FALSE)",
                [merchant_id, display_name or merchant_id, ACTIVE, at],
            )
        for name, conn_spec in sorted(channels.items()):
            conn.execute(
                f"DELETE FROM {PLATFORM_SCHEMA}.channel_connections WHERE merchant_id = ? AND channel = ?",
                [merchant_id, name],
            )
            conn.execute(
                f"INSERT INTO {PLATFORM_SCHEMA}.channel_connections (merchant_id, channel, credential_ref, "
                "marketplace_ids, connected_at) VALUES (?, ?, ?, ?, ?)",
                [merchant_id, name, conn_spec.credential_ref, ",".join(conn_spec.marketplace_ids), at],
            )
        record_audit(
            conn,
            actor=actor,
            action="merchant.reactivated" if existing else "merchant.added",
            merchant_id=merchant_id,
            details={
                "channels": sorted(channels),
                "warehouse": placed,
                **({"warehouse_before": placed_before} if placed_before not in (None, placed) else {}),
            },
            at=at,
        )
        if email is not None:
            _write_report_email(conn, merchant_id, email, actor=actor, at=at)
    sync_connections_copy(warehouse, merchant_id)
    return get_merchant(warehouse, merchant_id)


def offboard_merchant(
    warehouse: Warehouse, merchant_id: str, *, actor: str = "cli", at: datetime | None = None
) -> Merchant:
    """Mark a merchant offboarded: extraction stops; its data is kept until erasure."""
    validate_merchant_id(merchant_id)
    at = at or utcnow()
    with warehouse.connect() as conn:
        row = conn.fetchone(f"SELECT status FROM {PLATFORM_SCHEMA}.merchants WHERE merchant_id = ?", [merchant_id])
        if not row:
            raise RegistryError(f"unknown merchant {merchant_id!r}: see 'illuma merchants list'")
        if row[0] != OFFBOARDED:
            conn.execute(
                f"UPDATE {PLATFORM_SCHEMA}.merchants SET status = ?, offboarded_at = ? WHERE merchant_id = ?",
                [OFFBOARDED, at, merchant_id],
            )
            record_audit(conn, actor=actor, action="merchant.offboarded", merchant_id=merchant_id, at=at)
    return get_merchant(warehouse, merchant_id)


def list_merchants(warehouse: Warehouse, status: str | None = None) -> list[Merchant]:
    """Every registered merchant (optionally of one status) with its channel connections."""
    with warehouse.connect() as conn:
        if not conn.table_exists(PLATFORM_SCHEMA, "merchants"):
            return []
        where, params = ("WHERE status = ?", [status]) if status else ("", [])
        rows = conn.fetchall(
            f"SELECT merchant_id, display_name, status, created_at, offboarded_at "
            f"FROM {PLATFORM_SCHEMA}.merchants {where} ORDER BY merchant_id",
            params,
        )
        links = conn.fetchall(
            f"SELECT merchant_id, channel, credential_ref, marketplace_ids "
            f"FROM {PLATFORM_SCHEMA}.channel_connections ORDER BY merchant_id, channel"
        )
        emails = dict(
            conn.fetchall(f"SELECT merchant_id, email FROM {PLATFORM_SCHEMA}.report_recipients")
            if conn.table_exists(PLATFORM_SCHEMA, "report_recipients")
            else []
        )
        placed = dict(
            conn.fetchall(f"SELECT merchant_id, warehouse FROM {PLACEMENT_TABLE}")
            if conn.table_exists(PLATFORM_SCHEMA, "merchant_warehouses")
            else []
        )
    by_merchant: dict[str, list[ChannelConnection]] = {}
    for mid, channel, ref, mps in links:
        by_merchant.setdefault(mid, []).append(
            ChannelConnection(channel, ref, tuple(m for m in (mps or "").split(",") if m))
        )
    return [
        Merchant(mid, name, st, created, off, tuple(by_merchant.get(mid, ())), emails.get(mid), placed.get(mid, MAIN))
        for mid, name, st, created, off in rows
    ]


def get_merchant(warehouse: Warehouse, merchant_id: str) -> Merchant:
    validate_merchant_id(merchant_id)
    for merchant in list_merchants(warehouse):
        if merchant.merchant_id == merchant_id:
            return merchant
    raise RegistryError(f"unknown merchant {merchant_id!r}: see 'illuma merchants list'")


def merchant_overrides(conn: Connection, merchant_id: str) -> dict[str, str]:
    """The merchant's retention overrides: rule id -> period (only ever shorter maxima)."""
    if not conn.table_exists(PLATFORM_SCHEMA, "retention_overrides"):
        return {}
    return dict(conn.fetchall(
        f"SELECT rule_id, period FROM {PLATFORM_SCHEMA}.retention_overrides WHERE merchant_id = ?",
        [merchant_id],
    ))
