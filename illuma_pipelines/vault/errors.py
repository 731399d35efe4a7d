"""Exceptions raised by the PII vault.

Messages name the merchant, table, column, record and key version involved, never a plaintext
value, a key or a ciphertext body: they end up in Dagster event logs.
"""

from __future__ import annotations


class VaultError(Exception):
    """Base class for every error the vault raises on purpose."""


class MasterKeyError(VaultError):
    """The key-encryption key (master key) is missing, malformed or not the one needed."""


class KeyStoreError(VaultError):
    """The key store is unreadable, inconsistent or refused an operation."""


class KeyVersionExists(KeyStoreError):
    """Another writer stored this key version first (put_version without replace)."""


class MalformedCiphertext(VaultError, ValueError):
    """A value that should be a vault ciphertext does not have the vault format."""


class CiphertextRejected(VaultError):
    """Authentication failed: the ciphertext was altered, or it belongs to another merchant,
    table, column or record than the one it is being read for."""


class KeyDestroyed(VaultError):
    """The key version a ciphertext needs was destroyed (retired or crypto-shredded)."""


class UnknownKeyVersion(VaultError):
    """A ciphertext names a key version the key store never held for that merchant."""


class KeyUnwrapFailed(VaultError):
    """A wrapped data key did not authenticate under its key-encryption key."""


class AlreadyEncrypted(VaultError, ValueError):
    """encrypt() was given a value that is already a vault ciphertext."""


class AuditSinkMissing(VaultError):
    """reveal() was called on a vault built without an audit sink."""
