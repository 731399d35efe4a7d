"""The PII vault as a Dagster resource: wrapped data keys and the master key kept apart from the data.

Local default: the key store is `var/keys/keystore.json` and the master key comes from
ILLUMA_MASTER_KEY or, when that is unset, from `var/keys/master.key` (generated on first use,
mode 0600). Both must lie outside the data folder (`illuma_pipelines.paths.data_dir()`): a copy of
the data must never carry the keys that open it (docs/decisions/0002-pii-vault.md).
"""

import os
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from illuma_pipelines.paths import data_dir, var_dir
from illuma_pipelines.registry import record_audit
from illuma_pipelines.vault import (
    MASTER_KEY_ENV_VAR,
    FileKeyStore,
    LocalKeyring,
    MasterKeyError,
    RevealEvent,
    Vault,
)
from illuma_pipelines.vault.keys import ensure_outside
from illuma_pipelines.warehouse import Warehouse

REVEAL_ACTION = "pii.reveal"
# The pipeline's own reads of sealed PII (normalizing raw payloads, the plaintext-PII check): one
# audit row per batch, apart from the reveals people ask for (ADR 0007).
PIPELINE_READ_ACTION = "pii.pipeline_read"
PIPELINE_ACTOR_PREFIX = "pipeline:"


def default_keys_dir() -> Path:
    return var_dir() / "keys"


def audit_sink_for(warehouse: Warehouse):
    """An audit sink writing every reveal (who, why, what record, outcome; never the value) to
    platform.audit_log."""

    def sink(event: RevealEvent) -> None:
        details = event.as_dict()
        details.pop("actor", None)
        details.pop("merchant_id", None)
        with warehouse.connect() as conn:
            record_audit(
                conn,
                actor=event.actor,
                action=PIPELINE_READ_ACTION if event.actor.startswith(PIPELINE_ACTOR_PREFIX) else REVEAL_ACTION,
                merchant_id=event.merchant_id,
                details=details,
                at=event.at,
            )

    return sink


class VaultResource(dg.ConfigurableResource):
    """The PII vault. Empty paths mean the local defaults under var/keys/ (never under the data
    folder). `master_key` (e.g. `dg.EnvVar("ILLUMA_MASTER_KEY")`) wins over the key file; without
    it ILLUMA_MASTER_KEY is read when set, else the key file, generated if `generate_master_key`."""

    key_store_path: str = ""
    master_key_file: str = ""
    master_key: str = ""
    generate_master_key: bool = True

    _vaults: dict[str, Vault] = PrivateAttr(default_factory=dict)

    def resolved_key_store_path(self) -> Path:
        return Path(self.key_store_path) if self.key_store_path else default_keys_dir() / "keystore.json"

    def resolved_master_key_file(self) -> Path:
        return Path(self.master_key_file) if self.master_key_file else default_keys_dir() / "master.key"

    def _keyring(self) -> LocalKeyring:
        if self.master_key:
            # Production passes dg.EnvVar("ILLUMA_MASTER_KEY"): errors name that variable.
            return LocalKeyring.from_env(MASTER_KEY_ENV_VAR, environ={MASTER_KEY_ENV_VAR: self.master_key})
        if os.environ.get(MASTER_KEY_ENV_VAR):
            return LocalKeyring.from_env()
        path = self.resolved_master_key_file()
        if not path.exists():
            if not self.generate_master_key:
                raise MasterKeyError(
                    f"no master key: set {MASTER_KEY_ENV_VAR} or create {path} (mode 0600, one "
                    "base64 32-byte key per line) outside the data folder"
                )
            _generate_master_key_file(path)
        return LocalKeyring.from_file(path, data_dir=data_dir())

    def get(self, warehouse: Warehouse) -> Vault:
        """The vault, auditing reveals into `warehouse`'s platform.audit_log. Built once per
        resource instance and warehouse, so unwrapped data keys are reused across a run's assets."""
        cached = self._vaults.get(warehouse.url)
        if cached is None:
            store = FileKeyStore(self.resolved_key_store_path(), data_dir=data_dir())
            cached = Vault(store, self._keyring(), audit_sink=audit_sink_for(warehouse))
            self._vaults[warehouse.url] = cached
        return cached


def _generate_master_key_file(path: Path) -> None:
    ensure_outside(path, data_dir(), "master key file")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Written 0600 from the start, then linked into place: the key is never readable by others,
    # never seen half-written, and of two processes racing here the loser keeps the winner's key.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(LocalKeyring.generate_master_key() + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        return
    finally:
        tmp.unlink()
    dg.get_dagster_logger().warning(
        f"generated a new local PII master key at {path} (mode 0600) because {MASTER_KEY_ENV_VAR} "
        "is unset and no key file existed; back it up apart from the data: without it the "
        "encrypted buyer PII cannot be read"
    )
