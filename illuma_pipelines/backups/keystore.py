"""The PII vault's key store, backed up on its own (ADR 0013).

Warehouse backups never hold key material: the vault's wrapped data keys live in the key store
(`var/keys/keystore.json` locally), outside the warehouse and the data folder. The key store is
backed up apart, encrypted the same way, and never kept past the policy's 90 days (retention.py):
an old key store next to an old warehouse backup would otherwise undo a crypto-shredding.

A restored key store never resurrects a destroyed key. Before it is written, every key is
destroyed again that (1) the live key store holds as a tombstone, (2) belongs to a merchant the
live ledger records as erased since the backup, (3) the live audit log records as shredded since
the backup (`pii.keys_shredded`, with its versions), or (4) carries a `due:<day>` label whose day
has come, so what the daily purges shredded stays shredded even when the live key store itself is
lost. Hold keys are not destroyed by date alone: their live values are moved off them by the purge
first, and (3) names the ones it destroyed.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from illuma_pipelines.backups.core import (
    KEYSTORE,
    _Writer,
    decrypted,
    new_backup_id,
    open_backup,
)
from illuma_pipelines.backups.crypto import CHUNK_BYTES, BackupError, BackupKeyring
from illuma_pipelines.backups.restore import erased_since
from illuma_pipelines.backups.store import BackupStore
from illuma_pipelines.warehouse import Warehouse

ITEM = "keystore.json"


def backup_key_store(
    store: BackupStore, key_store_path: str | os.PathLike[str], *, keyring: BackupKeyring | None = None,
    now: datetime | None = None,
) -> dict:
    """Encrypt the key store file into `store` as a `ks-...` backup; returns its manifest."""
    path = Path(key_store_path)
    if not path.exists():
        raise BackupError(f"no key store at {path}: nothing to back up (the vault creates it with the first PII)")
    keyring = keyring or BackupKeyring.load()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    backup_id = new_backup_id(KEYSTORE, now)
    doc = json.loads(path.read_bytes())
    entries = sum(len(v) for v in doc.get("merchants", {}).values())
    writer = _Writer(store, keyring, backup_id, CHUNK_BYTES)
    try:
        with path.open("rb") as source:
            writer.put(ITEM, source, format="illuma-keystore")
        return writer.finish({
            "kind": KEYSTORE, "created_at": now.isoformat(), "source": str(path),
            "merchants": sorted(doc.get("merchants", {})), "tables": {}, "key_entries": entries,
        })
    except BaseException:
        store.delete(backup_id)
        raise


def restore_key_store(
    live: Warehouse,
    store: BackupStore,
    backup_id: str,
    target_path: str | os.PathLike[str],
    *,
    live_key_store: str | os.PathLike[str] | None = None,
    force: bool = False,
    keyring: BackupKeyring | None = None,
    now: datetime | None = None,
) -> dict:
    """Write key store backup `backup_id` to `target_path`, destroying first every key the
    module docstring names. Returns {"keys", "destroyed_again", "erased_merchants"}."""
    from illuma_pipelines.shredding import DUE, labels_to_destroy

    now = (now or datetime.now(UTC)).astimezone(UTC)
    target = Path(target_path)
    if target.exists() and not force:
        raise BackupError(f"{target} exists: restore the key store elsewhere, or pass --force to replace it")
    manifest, data_key = open_backup(store, backup_id, keyring)
    if manifest["kind"] != KEYSTORE:
        raise BackupError(f"{backup_id} is a {manifest['kind']} backup, not a key store backup")
    doc = json.loads(b"".join(decrypted(store, manifest, data_key, ITEM)))
    tombstones: set[tuple[str, int]] = set()
    live_path = Path(live_key_store) if live_key_store else None
    if live_path and live_path.exists():
        for merchant, entries in json.loads(live_path.read_bytes()).get("merchants", {}).items():
            tombstones |= {(merchant, int(e["version"])) for e in entries if e.get("wrapped_key") is None}
    since = datetime.fromisoformat(manifest["created_at"])
    erased = erased_since(live, since)
    tombstones |= _shredded_since(live, since)
    destroyed, total = 0, 0
    for merchant, entries in doc.get("merchants", {}).items():
        labels = {e["label"] for e in entries if e.get("label")}
        doomed = {label for label in labels_to_destroy(labels, now.date()) if label.startswith(f"{DUE}:")}
        for entry in entries:
            total += 1
            if entry.get("wrapped_key") is None:
                continue
            if merchant in erased or (merchant, int(entry["version"])) in tombstones or entry.get("label") in doomed:
                entry["wrapped_key"] = None
                entry["destroyed_at"] = now.isoformat()
                destroyed += 1
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.restoring")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(json.dumps(doc, indent=1, sort_keys=True).encode())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    return {"keys": total, "destroyed_again": destroyed, "erased_merchants": sorted(erased & set(doc.get("merchants", {})))}


def _shredded_since(live: Warehouse, since: datetime) -> set[tuple[str, int]]:
    """(merchant, key version) of every key the live audit log records as shredded since `since`."""
    from illuma_pipelines.shredding import SHRED_ACTION
    from illuma_pipelines.warehouse import PLATFORM_SCHEMA

    out: set[tuple[str, int]] = set()
    with live.connect() as conn:
        rows = conn.fetchall(
            f"SELECT merchant_id, CAST(details AS TEXT) FROM {PLATFORM_SCHEMA}.audit_log "
            "WHERE action = ? AND occurred_at >= ?",
            [SHRED_ACTION, since],
        )
    for merchant, details in rows:
        versions = (json.loads(details) if details else {}).get("key_versions") or []
        out |= {(merchant, int(v)) for v in versions}
    return out
