"""Backups as assets (group `operations`, ADR 0013).

`backups/warehouse` (daily): an encrypted backup of every warehouse, the vault's key store backed
up apart, and the backups the retention policy makes due deleted (ledgered).
`backups/restore_check` (quarterly, and on demand): the latest backup restored into a scratch
database, every table compared with the manifest, recorded in platform.backup_checks.
The check `backups_recent_and_restore_tested` fails when the last backup is older than 26 hours
or the last successful restore test older than 92 days. The work is in `illuma_pipelines.backups`.
"""


import os
from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.concurrency import MERCHANT_STEP_TAGS, WAREHOUSE_POOL
from illuma_pipelines.backups import (
    WAREHOUSE,
    BackupError,
    create_backup,
    default_store,
    last_successful_check,
    latest_backup,
    restore_check,
)
from illuma_pipelines.backups.keystore import backup_key_store
from illuma_pipelines.backups.retention import expire_backups
from illuma_pipelines.warehouse import ADMIN_URL_VAR
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource

BACKUP_KEY = dg.AssetKey(["backups", "warehouse"])
RESTORE_CHECK_KEY = dg.AssetKey(["backups", "restore_check"])
BACKUP_HEALTH_CHECK = "backups_recent_and_restore_tested"
GROUP, OWNERS = "operations", ["team:data"]
MAX_BACKUP_AGE = timedelta(hours=26)  # a daily backup, with two hours of slack
MAX_RESTORE_TEST_AGE = timedelta(days=92)  # quarterly (privacy policy §6), with a day of slack


def _admin_url() -> str | None:
    # Read in the run's process; provisioning the backup login and scratch databases needs it.
    return os.environ.get(ADMIN_URL_VAR) or None


@dg.asset(
    key=BACKUP_KEY, group_name=GROUP, owners=OWNERS, kinds={"postgres", "duckdb", "s3"}, pool=WAREHOUSE_POOL,
    op_tags=MERCHANT_STEP_TAGS,
)
def warehouse_backup(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, vault: VaultResource
) -> dg.MaterializeResult:
    """The daily encrypted backup of every warehouse (pg_dump in one snapshot, or the checkpointed
    DuckDB files), the vault's key store backed up apart, and backups past their retention deleted."""
    wh = warehouse.get()
    store = default_store()
    now = datetime.now(UTC)
    manifest = create_backup(wh, store, now=now, admin_url=_admin_url())
    keystore_id = "none (no key store yet)"
    key_store = vault.resolved_key_store_path()
    if key_store.exists():
        keystore_id = backup_key_store(store, key_store, now=now)["backup_id"]
    expired = expire_backups(wh, store, now, run_id=context.run.run_id)
    encrypted = sum(i["encrypted_bytes"] for i in manifest["items"])
    context.log.info(f"backup {manifest['backup_id']}: {encrypted:,} bytes in {store.description}; expired {len(expired)}")
    return dg.MaterializeResult(metadata={
        "backup_id": manifest["backup_id"],
        "key_store_backup_id": keystore_id,
        "store": store.description,
        "encrypted_bytes": encrypted,
        "tables": len(manifest["tables"]),
        "merchants": len(manifest["merchants"]),
        "rows": sum(t["rows"] for t in manifest["tables"].values()),
        "seconds": manifest["duration_seconds"],
        "expired_backups": len(expired),
    })


class RestoreCheckConfig(dg.Config):
    backup_id: str = ""
    """The backup to check; empty: the latest warehouse backup."""


@dg.asset(
    key=RESTORE_CHECK_KEY, group_name=GROUP, owners=OWNERS, kinds={"postgres", "duckdb"}, pool=WAREHOUSE_POOL,
    op_tags=MERCHANT_STEP_TAGS, deps=[BACKUP_KEY],
)
def backup_restore_check(
    context: dg.AssetExecutionContext, config: RestoreCheckConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """A backup restored into a scratch database and compared table by table with its manifest
    (row counts and checksums); recorded in platform.backup_checks; the scratch copy dropped."""
    result = restore_check(warehouse.get(), default_store(), backup_id=config.backup_id or None, admin_url=_admin_url())
    metadata = {
        "backup_id": result.backup_id,
        "backup_taken_at": result.backup_created_at.isoformat(),
        "tables_compared": result.tables_compared,
        "erased_merchants_left_out": len(result.excluded_merchants),
        "purges_reapplied": dg.MetadataValue.json(result.purges_reapplied),
        "seconds": result.seconds,
    }
    if not result.ok:
        raise dg.Failure(
            f"restore check of {result.backup_id}: {len(result.mismatches)} table(s) differ from the manifest: "
            + "; ".join(result.mismatches[:5]),
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


def backup_health(last_backup: datetime | None, last_restore_test: datetime | None, now: datetime) -> tuple[bool, str]:
    """Whether backups are recent (26 hours) and restores tested (92 days), and why not."""
    problems = []
    if last_backup is None:
        problems.append("no warehouse backup at all")
    elif now - last_backup > MAX_BACKUP_AGE:
        problems.append(f"last backup {last_backup:%Y-%m-%d %H:%M} UTC is {(now - last_backup).total_seconds() / 3600:.0f} h old (limit 26 h)")
    if last_restore_test is None:
        problems.append("no successful restore test recorded")
    elif now - last_restore_test > MAX_RESTORE_TEST_AGE:
        problems.append(f"last successful restore test {last_restore_test:%Y-%m-%d} is {(now - last_restore_test).days} days old (limit 92)")
    return not problems, "; ".join(problems) or "backups recent and a restore tested within 92 days"


# It reads the platform: the warehouse rule of every step that opens it (ADR 0001).
@dg.asset_check(
    asset=BACKUP_KEY, name=BACKUP_HEALTH_CHECK, blocking=False, pool=WAREHOUSE_POOL, op_tags=MERCHANT_STEP_TAGS
)
def backups_recent_and_restore_tested(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Fails when the last backup is older than 26 hours or the last successful restore test
    older than 92 days (privacy policy §6: daily backups, restores tested quarterly)."""
    now = datetime.now(UTC)
    try:
        latest = latest_backup(default_store(), WAREHOUSE)
    except BackupError as exc:
        return dg.AssetCheckResult(passed=False, description=f"the backup store cannot be read: {exc}")
    last_check = last_successful_check(warehouse.get())
    passed, why = backup_health(latest.created_at if latest else None, last_check, now)
    return dg.AssetCheckResult(
        passed=passed,
        description=why,
        metadata={
            "last_backup": latest.backup_id if latest else "none",
            "last_successful_restore_test": last_check.isoformat() if last_check else "none",
        },
    )


backup_assets = [warehouse_backup, backup_restore_check]
backup_checks = [backups_recent_and_restore_tested]
