"""Backup rotation under the retention policy (ADR 0003 and 0013): daily backups are kept 7 days
(`backups_daily`), each UTC ISO week's first backup — the weekly one — up to 90 days (`backups`),
and nothing longer; the same for key-store backups. Every deletion is a row in the retention
ledger (merchant `*`: a backup is the whole platform's, no merchant's)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from illuma_pipelines.backups.core import list_backups
from illuma_pipelines.backups.store import BackupStore
from illuma_pipelines.retention import DEFAULT_POLICY, Policy, cutoffs
from illuma_pipelines.warehouse import PLATFORM_SCHEMA, Warehouse

LEDGER_MERCHANT = "*"
DAILY_RULE, WEEKLY_RULE = "backups_daily", "backups"
# A backup started but never finished (its run was killed) is removed after this long.
INCOMPLETE_GRACE = timedelta(days=1)


def weekly_ids(created: dict[str, datetime]) -> set[str]:
    """The first backup of each UTC ISO week, per kind: the weekly ones."""
    first: dict[tuple[str, int, int], tuple[datetime, str]] = {}
    for backup_id, at in created.items():
        year, week, _ = at.astimezone(UTC).isocalendar()
        key = (backup_id[:2], year, week)
        if key not in first or (at, backup_id) < first[key]:
            first[key] = (at, backup_id)
    return {backup_id for _, backup_id in first.values()}


def due_backups(created: dict[str, datetime], now: datetime, policy: Policy = DEFAULT_POLICY) -> dict[str, str]:
    """backup id -> the rule that makes it due now."""
    cut = cutoffs(now, policy)
    weekly = weekly_ids(created)
    out = {}
    for backup_id, at in created.items():
        if at < cut[WEEKLY_RULE]:
            out[backup_id] = WEEKLY_RULE
        elif backup_id not in weekly and at < cut[DAILY_RULE]:
            out[backup_id] = DAILY_RULE
    return out


def expire_backups(
    live: Warehouse, store: BackupStore, now: datetime, *, run_id: str, policy: Policy = DEFAULT_POLICY
) -> dict[str, str]:
    """Delete every backup the policy makes due, with a ledger row each; returns id -> rule."""
    now = now.astimezone(UTC)
    created = {b.backup_id: b.created_at for b in list_backups(store)}
    due = due_backups(created, now, policy)
    cut = cutoffs(now, policy)
    for backup_id in store.incomplete_ids():
        started = datetime.strptime(backup_id.split("-")[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if started < now - INCOMPLETE_GRACE:
            store.delete(backup_id)
    for backup_id, rule_id in sorted(due.items()):
        store.delete(backup_id)
        with live.connect() as conn:
            conn.execute(
                f"INSERT INTO {PLATFORM_SCHEMA}.retention_ledger (ledger_id, merchant_id, rule_id, target, action, "
                "rows_affected, cutoff, policy_version, policy_fingerprint, purged_at, run_id) "
                "VALUES (?, ?, ?, ?, 'delete_backups', 1, ?, ?, ?, ?, ?)",
                [uuid.uuid4().hex, LEDGER_MERCHANT, rule_id, f"backup:{backup_id}", cut[rule_id], policy.version,
                 policy.fingerprint(), now, run_id],
            )
    return due
