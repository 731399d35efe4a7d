"""PII vault: application-level AES-256-GCM envelope encryption of buyer PII, per merchant.

Pure domain logic (no Dagster). See docs/decisions/0002-pii-vault.md for the format and policy.
"""

from illuma_pipelines.vault.ciphertext import (
    CIPHERTEXT_PATTERN,
    CIPHERTEXT_REGEX,
    associated_data,
    is_ciphertext,
    key_version,
)
from illuma_pipelines.vault.core import (
    RETIREMENT_GRACE,
    ROTATION_DAYS,
    ROTATION_PERIOD,
    AuditSink,
    RevealEvent,
    Vault,
)
from illuma_pipelines.vault.errors import (
    AlreadyEncrypted,
    AuditSinkMissing,
    CiphertextRejected,
    KeyDestroyed,
    KeyStoreError,
    KeyUnwrapFailed,
    KeyVersionExists,
    MalformedCiphertext,
    MasterKeyError,
    UnknownKeyVersion,
    VaultError,
)
from illuma_pipelines.vault.keys import (
    MASTER_KEY_ENV_VAR,
    FileKeyStore,
    KeyProvider,
    KeyStore,
    KeyVersion,
    LocalKeyring,
)

__all__ = [
    "CIPHERTEXT_PATTERN",
    "CIPHERTEXT_REGEX",
    "MASTER_KEY_ENV_VAR",
    "RETIREMENT_GRACE",
    "ROTATION_DAYS",
    "ROTATION_PERIOD",
    "AlreadyEncrypted",
    "AuditSink",
    "AuditSinkMissing",
    "CiphertextRejected",
    "FileKeyStore",
    "KeyDestroyed",
    "KeyProvider",
    "KeyStore",
    "KeyStoreError",
    "KeyUnwrapFailed",
    "KeyVersion",
    "KeyVersionExists",
    "LocalKeyring",
    "MalformedCiphertext",
    "MasterKeyError",
    "RevealEvent",
    "UnknownKeyVersion",
    "Vault",
    "VaultError",
    "associated_data",
    "is_ciphertext",
    "key_version",
]
