"""`illuma backups ...`: create, list, verify, restore and check backups (ADR 0013).

Wired into the `illuma` CLI by `add_backups_commands`; the warehouse is the CLI's own
(`--warehouse-url`, else the environment's), the store `default_store()`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from datetime import UTC, datetime

from illuma_pipelines.backups import (
    default_store,
    list_backups,
    restore_backup,
    restore_check,
    verify_backup,
)
from illuma_pipelines.backups.core import create_backup
from illuma_pipelines.backups.keystore import backup_key_store, restore_key_store
from illuma_pipelines.backups.retention import expire_backups
from illuma_pipelines.warehouse import ADMIN_URL_VAR


def _admin() -> str | None:
    return os.environ.get(ADMIN_URL_VAR) or None


def _key_store_path():
    from resources.vault import VaultResource

    return VaultResource().resolved_key_store_path()


def _create(args: argparse.Namespace, warehouse: Callable) -> int:
    wh, store = warehouse(args), default_store()
    now = datetime.now(UTC)
    manifest = create_backup(wh, store, now=now, admin_url=_admin())
    size = sum(i["encrypted_bytes"] for i in manifest["items"])
    print(f"backup {manifest['backup_id']}: {len(manifest['merchants'])} merchants, {len(manifest['tables'])} tables, "
          f"{size:,} bytes encrypted under {manifest['key_id']} in {store.description} ({manifest['duration_seconds']} s)")
    if not args.no_key_store and _key_store_path().exists():
        print(f"key store backup {backup_key_store(store, _key_store_path(), now=now)['backup_id']}")
    if args.expire:
        for backup_id, rule in sorted(expire_backups(wh, store, now, run_id="cli:backups-create").items()):
            print(f"expired {backup_id} (rule {rule})")
    return 0


def _list(args: argparse.Namespace, warehouse: Callable) -> int:
    store = default_store()
    backups = list_backups(store)
    print(f"{'backup':<28} {'kind':<9} {'taken (UTC)':<16} {'engine':<8} {'merchants':>9} {'tables':>6} {'bytes':>14}")
    for b in backups:
        print(f"{b.backup_id:<28} {b.kind:<9} {b.created_at:%Y-%m-%d %H:%M} {b.engine:<8} {b.merchants:>9} {b.tables:>6} {b.encrypted_bytes:>14,}")
    if not backups:
        print(f"(no backups in {store.description})")
    return 0


def _verify(args: argparse.Namespace, warehouse: Callable) -> int:
    manifest = verify_backup(default_store(), args.backup)
    chunks = sum(len(i["chunk_sha256"]) for i in manifest["items"])
    print(f"{args.backup}: every one of {chunks} chunks in {len(manifest['items'])} objects decrypted and checked")
    return 0


def _restore(args: argparse.Namespace, warehouse: Callable) -> int:
    live, store = warehouse(args), default_store()
    if args.backup.startswith("ks-"):
        summary = restore_key_store(live, store, args.backup, args.into, live_key_store=_key_store_path(), force=args.force)
        print(f"key store {args.backup} restored to {args.into}: {summary['keys']} keys, "
              f"{summary['destroyed_again']} destroyed again (shredded or erased since)")
        return 0
    result = restore_backup(live, store, args.backup, args.into, force=args.force, admin_url=_admin(), warehouse=args.warehouse)
    print(f"{args.backup} ({args.warehouse}) restored into {result.target} in {result.seconds} s: "
          f"{result.tables_compared} tables compared with the manifest")
    for merchant in result.excluded_merchants:
        print(f"  left out {merchant}: erased since the backup")
    for merchant, rows in sorted(result.purges_reapplied.items()):
        print(f"  purge re-applied for {merchant}: {rows} rows")
    for note in result.notes:
        print(f"  note: {note}")
    for mismatch in result.mismatches:
        print(f"  MISMATCH {mismatch}")
    return 0 if result.ok else 1


def _check(args: argparse.Namespace, warehouse: Callable) -> int:
    result = restore_check(warehouse(args), default_store(), backup_id=args.backup, admin_url=_admin())
    print(f"restore check of {result.backup_id}: {'ok' if result.ok else 'FAILED'}, {result.tables_compared} tables, "
          f"{result.seconds} s (recorded in platform.backup_checks)")
    for mismatch in result.mismatches:
        print(f"  MISMATCH {mismatch}")
    return 0 if result.ok else 1


def add_backups_commands(sub, warehouse: Callable) -> None:
    """Add `backups create|list|verify|restore|check` to the CLI's subcommands; `warehouse(args)`
    opens the CLI's warehouse."""
    backups = sub.add_parser("backups", help="encrypted warehouse backups (ADR 0013)").add_subparsers(
        dest="action", required=True
    )

    def bind(parser, fn):
        parser.set_defaults(func=lambda args: fn(args, warehouse))

    create = backups.add_parser("create", help="back up every warehouse now (and the key store apart)")
    create.add_argument("--no-key-store", action="store_true", help="skip the key store backup")
    create.add_argument("--expire", action="store_true", help="then delete backups the retention policy makes due")
    bind(create, _create)
    bind(backups.add_parser("list", help="backups in the store, oldest first"), _list)
    verify = backups.add_parser("verify", help="decrypt and check every chunk of a backup (writes nothing)")
    verify.add_argument("backup")
    bind(verify, _verify)
    restore = backups.add_parser(
        "restore", help="restore a backup into a database you name; erasures and purges since are re-applied"
    )
    restore.add_argument("backup", help="a backup id (wh-...: warehouse; ks-...: key store)")
    restore.add_argument("--into", required=True, help="postgresql://admin@host/db, duckdb:///path/warehouse.duckdb, or a key store path")
    restore.add_argument("--warehouse", default="main", help="which warehouse of the backup (ILLUMA_WAREHOUSES names)")
    restore.add_argument("--force", action="store_true", help="allow replacing the live warehouse or an occupied target")
    bind(restore, _restore)
    check = backups.add_parser("check", help="restore into a scratch database, compare, record, drop (what the quarterly job does)")
    check.add_argument("backup", nargs="?", default=None, help="default: the latest warehouse backup")
    bind(check, _check)
