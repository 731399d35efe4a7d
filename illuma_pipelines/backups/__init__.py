"""Encrypted warehouse backups, restores that are checked, and restores that never bring deleted
data back. No Dagster here; see docs/decisions/0013-backups.md.

    create_backup(warehouse, store) -> manifest        core.py (PostgreSQL pg_dump, DuckDB files)
    verify_backup(store, backup_id)                    every chunk decrypted and checked
    list_backups(store), latest_backup(store)
    restore_backup(live, store, backup_id, into_url)    restore.py: checks, erasures, purges
    restore_check(live, store)                          scratch restore, platform.backup_checks
    backup_key_store(store, path), restore_key_store    keystore.py
    expire_backups(live, store, now)                    retention.py: 7 days daily, 90 weekly
    default_store()                                     store.py: var/backups/ or an S3 bucket
"""

from illuma_pipelines.backups.core import (
    KEYSTORE,
    WAREHOUSE,
    BackupInfo,
    create_backup,
    latest_backup,
    list_backups,
    open_backup,
    read_manifest,
    verify_backup,
)
from illuma_pipelines.backups.crypto import (
    BACKUP_KEY_ENV,
    BackupError,
    BackupIntegrityError,
    BackupKeyError,
    BackupKeyring,
)
from illuma_pipelines.backups.restore import (
    RestoreResult,
    last_successful_check,
    restore_backup,
    restore_check,
)
from illuma_pipelines.backups.store import BackupStore, DirectoryStore, S3Store, default_store

__all__ = [
    "BACKUP_KEY_ENV",
    "KEYSTORE",
    "WAREHOUSE",
    "BackupError",
    "BackupInfo",
    "BackupIntegrityError",
    "BackupKeyError",
    "BackupKeyring",
    "BackupStore",
    "DirectoryStore",
    "RestoreResult",
    "S3Store",
    "create_backup",
    "default_store",
    "last_successful_check",
    "latest_backup",
    "list_backups",
    "open_backup",
    "read_manifest",
    "restore_backup",
    "restore_check",
    "verify_backup",
]
