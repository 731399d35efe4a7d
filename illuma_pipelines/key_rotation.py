"""PII key rotation, without Dagster: a merchant whose newest data key is 90 days old gets a new
one, its buyer PII is re-encrypted to it, and key versions nothing references any more are
destroyed.

The pure key steps live in the vault (`rotate_if_due`, `reencrypt_rows`, `retire_unused_versions`);
this module reads and writes `core_buyer_pii` and leaves an audit row per merchant it changed
(counts and key versions, never a value).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from illuma_pipelines.core.tables import BUYER_PII, PII_COLUMNS
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.registry import list_merchants, record_audit
from illuma_pipelines.vault import Vault, key_version
from illuma_pipelines.warehouse import Warehouse

ROTATION_ACTION = "pii.keys_rotated"
ROTATION_RUN_ACTION = "pii.key_rotation_run"


def rotate_merchant_keys(
    vault: Vault, warehouse: Warehouse, merchant_id: str, now: datetime, actor: str
) -> dict[str, object]:
    """Rotate one merchant's key if due, re-encrypt its stored PII to the current version and
    retire the versions no stored value uses. Returns the counts (also written to the audit log)."""
    if vault.current_version(merchant_id) is None:
        # No live key: no PII was ever encrypted (or it was crypto-shredded). Nothing to rotate,
        # and calling the vault further would create a key.
        return {"rotated_to": None, "reencrypted_values": 0, "destroyed_versions": []}
    rotated_to = vault.rotate_if_due(merchant_id, now)
    try:
        reencrypted, destroyed = _reencrypt_and_retire(vault, warehouse, merchant_id, now)
    except Exception as exc:
        if rotated_to is not None:
            # The new key exists whatever happens next: the log must say so, and why it stopped.
            _audit_rotation(
                warehouse, merchant_id, now, actor,
                {"rotated_to": rotated_to, "current_version": rotated_to, "failed": type(exc).__name__},
            )
        raise
    summary = {
        "rotated_to": rotated_to,
        "current_version": vault.current_version(merchant_id),
        "reencrypted_values": reencrypted,
        "destroyed_versions": destroyed,
    }
    if rotated_to is not None or reencrypted or destroyed:
        _audit_rotation(warehouse, merchant_id, now, actor, summary)
    return summary


def _reencrypt_and_retire(
    vault: Vault, warehouse: Warehouse, merchant_id: str, now: datetime
) -> tuple[int, list[int]]:
    schema, table = merchant_schema(merchant_id), BUYER_PII.name
    in_use: set[int] = set()
    reencrypted = 0
    with warehouse.merchant_scope(merchant_id) as conn:
        if conn.table_exists(schema, table):
            rows = conn.fetchall(
                f"SELECT channel, marketplace_order_id, {', '.join(PII_COLUMNS)} FROM {schema}.{table}"
            )
            values = {(f"{r[0]}:{r[1]}", col): r[2 + i] for r in rows for i, col in enumerate(PII_COLUMNS)}
            changed: dict[str, dict[str, str]] = {}
            for record_id, column, new in vault.reencrypt_rows(merchant_id, table, _cells(values)):
                changed.setdefault(record_id, {})[column] = new
                values[(record_id, column)] = new
            for record_id, new_values in changed.items():
                channel, order_id = record_id.split(":", 1)
                assignments = ", ".join(f"{c} = ?" for c in new_values)
                conn.execute(
                    f"UPDATE {schema}.{table} SET {assignments} WHERE channel = ? AND marketplace_order_id = ?",
                    [*new_values.values(), channel, order_id],
                )
                reencrypted += len(new_values)
            in_use = {key_version(v) for v in values.values() if v is not None}
    return reencrypted, vault.retire_unused_versions(merchant_id, in_use, now)


def _audit_rotation(
    warehouse: Warehouse, merchant_id: str, now: datetime, actor: str, details: dict[str, object]
) -> None:
    with warehouse.connect() as conn:
        record_audit(conn, actor=actor, action=ROTATION_ACTION, merchant_id=merchant_id, details=details, at=now)


def _cells(values: dict[tuple[str, str], str | None]) -> Iterable[tuple[str, str, str | None]]:
    for (record_id, column), value in values.items():
        yield record_id, column, value


def rotate_all_merchants(vault: Vault, warehouse: Warehouse, now: datetime, actor: str) -> tuple[dict[str, int], list[str]]:
    """Rotate every registered merchant that is due; the run's totals (also audited) and the
    merchants rotated."""
    rotated, reencrypted, destroyed, checked = [], 0, 0, 0
    for merchant in list_merchants(warehouse):
        summary = rotate_merchant_keys(vault, warehouse, merchant.merchant_id, now, actor)
        checked += 1
        reencrypted += int(summary["reencrypted_values"])
        destroyed += len(summary["destroyed_versions"])
        if summary["rotated_to"] is not None:
            rotated.append(merchant.merchant_id)
    totals = {
        "merchants_checked": checked,
        "merchants_rotated": len(rotated),
        "values_reencrypted": reencrypted,
        "key_versions_destroyed": destroyed,
    }
    with warehouse.connect() as conn:
        record_audit(conn, actor=actor, action=ROTATION_RUN_ACTION, merchant_id=None, details=totals, at=now)
    return totals, rotated
