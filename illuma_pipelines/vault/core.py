"""The Vault: encrypts buyer PII per merchant, reveals it only through an audited call, rotates
and shreds the merchant's data keys."""

from __future__ import annotations

import binascii
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from illuma_pipelines.merchant_ids import validate_merchant_id
from illuma_pipelines.vault.ciphertext import (
    FORMAT_TAG,
    MAX_RECORD_ID_CHARS,
    NONCE_BYTES,
    ParsedCiphertext,
    aad_prefix,
    format_ciphertext,
    is_ciphertext,
    parse_ciphertext,
    validate_binding,
    validate_identifier,
    validate_record_id,
)
from illuma_pipelines.vault.errors import (
    AlreadyEncrypted,
    AuditSinkMissing,
    CiphertextRejected,
    KeyDestroyed,
    KeyVersionExists,
    UnknownKeyVersion,
    VaultError,
)
from illuma_pipelines.vault.keys import KeyProvider, KeyStore, KeyVersion

# Privacy policy, section 07: keys rotate automatically on a 90-day cycle.
ROTATION_DAYS = 90
ROTATION_PERIOD = timedelta(days=ROTATION_DAYS)
# A process resolves the current key version at most every cache TTL, so right after a rotation
# another process may still be writing with the previous version. A version that stopped being
# current less than this long ago is never destroyed, even if no stored ciphertext uses it yet.
RETIREMENT_GRACE = timedelta(days=1)
DEFAULT_CACHE_TTL_SECONDS = 60.0
_MAX_AUDIT_TEXT = 500
# A key label: a kind and what it is for, e.g. "due:2027-01-05" or "hold:2026-12-06".
_LABEL = re.compile(r"[a-z][a-z_]{0,15}:[0-9A-Za-z_.-]{1,40}")


def validate_label(label: object) -> str:
    if not isinstance(label, str) or not _LABEL.fullmatch(label):
        raise ValueError(
            f"key label {label!r} is not of the form '<kind>:<what>' (e.g. 'due:2027-01-05'); "
            "labels name what a key's lifetime follows"
        )
    return label


@dataclass(frozen=True)
class RevealEvent:
    """What the audit sink receives for every reveal: who, why, what and when, never the value."""

    at: datetime
    actor: str
    purpose: str
    merchant_id: str
    table: str
    column: str
    record_id: str
    key_version: int | None
    outcome: str  # "revealed", or the name of the VaultError that stopped the reveal

    def as_dict(self) -> dict[str, str | int | None]:
        return {
            "at": self.at.isoformat(),
            "actor": self.actor,
            "purpose": self.purpose,
            "merchant_id": self.merchant_id,
            "table": self.table,
            "column": self.column,
            "record_id": self.record_id,
            "key_version": self.key_version,
            "outcome": self.outcome,
        }


@dataclass(frozen=True)
class BatchRevealEvent(RevealEvent):
    """The one audit event of a `Vault.reveal_batch`: who, why, merchant, table, which columns and
    how many values and records; `column` and `record_id` are "*". Never a value, never a record id
    list (a batch can hold a merchant's every order)."""

    columns: tuple[str, ...] = ()
    values: int = 0
    records: int = 0
    key_versions: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, str | int | None]:  # type: ignore[override]
        out: dict = super().as_dict()
        out.update(
            batch=True,
            columns=list(self.columns),
            values=self.values,
            records=self.records,
            key_versions=list(self.key_versions),
        )
        return out


AuditSink = Callable[[RevealEvent], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _wrap_context(merchant_id: str, version: int) -> dict[str, str]:
    return {
        "purpose": "illuma-pii-data-key",
        "merchant_id": merchant_id,
        "key_version": str(version),
    }


@dataclass
class _MerchantKeys:
    """A snapshot of one merchant's key versions plus the data keys unwrapped so far."""

    loaded_at: float
    versions: dict[int, KeyVersion]
    ciphers: dict[int, AESGCM]

    @property
    def current(self) -> KeyVersion | None:
        """The general key's current version (see `current_for`)."""
        return self.current_for(None)

    def current_for(self, label: str | None) -> KeyVersion | None:
        """The newest live version of the key with `label` (None: the general key)."""
        live = [kv for kv in self.versions.values() if not kv.destroyed and kv.label == label]
        return max(live, key=lambda kv: kv.version) if live else None


def _check_audit_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_AUDIT_TEXT:
        raise ValueError(
            f"reveal needs `{name}`: a non-empty string of at most {_MAX_AUDIT_TEXT} characters "
            "saying who reads the value and why (it goes to the audit log)"
        )
    return value


class Vault:
    """Per-merchant envelope encryption of PII values bound to (merchant, table, column, record).

    Data keys are unwrapped once per (merchant, version) and kept in memory; the merchant's key
    list is re-read from the key store at most every `cache_ttl_seconds`, so a rotation or a
    destruction made by another process is seen within that time (this process's own are seen at
    once).
    """

    def __init__(
        self,
        key_store: KeyStore,
        key_provider: KeyProvider,
        *,
        audit_sink: AuditSink | None = None,
        clock: Callable[[], datetime] = utc_now,
        cache_ttl_seconds: float = DEFAULT_CACHE_TTL_SECONDS,
    ) -> None:
        self._store = key_store
        self._provider = key_provider
        self._audit_sink = audit_sink
        self._clock = clock
        self._ttl = cache_ttl_seconds
        self._cache: dict[str, _MerchantKeys] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ keys

    def _now(self, now: datetime | None) -> datetime:
        value = self._clock() if now is None else now
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                "vault timestamps must be timezone-aware (use datetime.now(UTC)); naive times "
                "would make the 90-day rotation depend on the machine's time zone"
            )
        return value

    def _snapshot(self, merchant_id: str, *, fresh: bool = False) -> _MerchantKeys:
        snap = self._cache.get(merchant_id)
        if snap is None or fresh or time.monotonic() - snap.loaded_at > self._ttl:
            versions = {kv.version: kv for kv in self._store.versions(merchant_id)}
            # Keep unwrapped keys of versions that are still live: a KEK rewrap changes the
            # wrapping, never the data key, and unwrapping again would cost a KMS call.
            kept = (
                {}
                if snap is None
                else {
                    v: c
                    for v, c in snap.ciphers.items()
                    if v in versions and not versions[v].destroyed
                }
            )
            snap = _MerchantKeys(time.monotonic(), versions, kept)
            self._cache[merchant_id] = snap
        return snap

    def _cipher(self, merchant_id: str, version: int) -> AESGCM:
        snap = self._snapshot(merchant_id)
        cipher = snap.ciphers.get(version)
        if cipher is not None:
            return cipher
        if version not in snap.versions:
            # Another process may have created it since our snapshot.
            snap = self._snapshot(merchant_id, fresh=True)
        kv = snap.versions.get(version)
        if kv is None:
            known = ", ".join(str(v) for v in sorted(snap.versions)) or "none"
            raise UnknownKeyVersion(
                f"merchant {merchant_id!r} has no key version {version} (key store holds: {known}); "
                "the value was encrypted against another key store: point the vault at the key "
                "store that belongs to this data"
            )
        if kv.destroyed or kv.wrapped_key is None:
            raise KeyDestroyed(
                f"key version {version} of merchant {merchant_id!r} was destroyed at "
                f"{kv.destroyed_at.isoformat() if kv.destroyed_at else 'an unknown time'}; values "
                "encrypted under it are unrecoverable by design (retired or crypto-shredded)"
            )
        data_key = self._provider.unwrap(
            kv.kek_id, kv.wrapped_key, _wrap_context(merchant_id, version)
        )
        cipher = AESGCM(data_key)
        snap.ciphers[version] = cipher
        return cipher

    def _current_cipher(self, merchant_id: str, label: str | None = None) -> tuple[int, AESGCM]:
        snap = self._snapshot(merchant_id)
        current = snap.current_for(label)
        if current is None:
            snap = self._snapshot(merchant_id, fresh=True)
            current = snap.current_for(label)
        if current is None and label is not None:
            # A labelled key comes and goes with its data: create it (racing writers agree on one).
            # The general key marks a merchant keyed at all: erasure destroys it with the rest.
            validate_label(label)
            self._current_cipher(merchant_id)
            self._new_version(merchant_id, self._now(None), label=label, only_if_none=True)
            current = self._live_current(merchant_id, label)
        if current is None:
            if any(kv.label is None for kv in snap.versions.values()):
                raise KeyDestroyed(
                    f"every key of merchant {merchant_id!r} was destroyed (crypto-shredded), so the "
                    "vault will not encrypt new PII for it; if the merchant is onboarded again, call "
                    "Vault.create_key_version for it first"
                )
            # First key: only if still none, so racing processes agree on version 1 instead of
            # each stacking a version on the other's.
            validate_merchant_id(merchant_id)
            self._new_version(merchant_id, self._now(None), only_if_none=True)
            current = self._live_current(merchant_id)
        return current.version, self._cipher(merchant_id, current.version)

    def _new_version(
        self, merchant_id: str, now: datetime, *, label: str | None = None, only_if_none: bool = False
    ) -> int | None:
        """Create the next version (numbers are shared by all of the merchant's keys) of the key
        with `label`; None if another writer created that version number first (or, with
        `only_if_none`, if the general key has any version already, or the labelled key a live
        one)."""
        with self._lock:
            snap = self._snapshot(merchant_id, fresh=True)
            general = any(kv.label is None for kv in snap.versions.values())
            if only_if_none and (general if label is None else snap.current_for(label)):
                return None
            previous = snap.current_for(label)
            version = max(snap.versions, default=0) + 1
            data_key = AESGCM.generate_key(bit_length=256)
            kek_id = self._provider.current_kek_id
            wrapped = self._provider.wrap(kek_id, data_key, _wrap_context(merchant_id, version))
            try:
                self._store.put_version(
                    KeyVersion(merchant_id, version, kek_id, wrapped, created_at=now, label=label)
                )
            except KeyVersionExists:
                self._snapshot(merchant_id, fresh=True)
                return None
            if previous is not None:
                self._store.mark_retired(merchant_id, previous.version, now)
            self._snapshot(merchant_id, fresh=True).ciphers[version] = AESGCM(data_key)
            return version

    def create_key_version(self, merchant_id: str, now: datetime | None = None) -> int:
        """Make a new data-key version the current one and return its number.

        Encryption creates the first version by itself; call this to re-key a merchant whose keys
        were destroyed, or to rotate ahead of schedule (e.g. after a suspected leak).
        """
        validate_merchant_id(merchant_id)
        created = self._new_version(merchant_id, self._now(now))
        if created is not None:
            return created
        return self._live_current(merchant_id).version

    def _live_current(self, merchant_id: str, label: str | None = None) -> KeyVersion:
        """The current version right after one was created here or by a concurrent writer."""
        current = self._snapshot(merchant_id, fresh=True).current_for(label)
        if current is None:
            raise KeyDestroyed(
                f"the key version just created for merchant {merchant_id!r} was destroyed at once "
                "by another process (a crypto-shredding ran concurrently); check the merchant's "
                "status before writing its PII"
            )
        return current

    def current_version(self, merchant_id: str) -> int | None:
        """The version new values are encrypted with; None if the merchant has no live key."""
        validate_merchant_id(merchant_id)
        current = self._snapshot(merchant_id).current
        return None if current is None else current.version

    def ensure_key(self, merchant_id: str, label: str | None = None) -> int:
        """The version new values will be encrypted with (under the key with `label`, None: the
        general key), creating that key if it has none. Call it before a long write transaction
        so the key store is not touched inside it."""
        return self._current_cipher(merchant_id, label)[0]

    def key_label(self, merchant_id: str, version: int) -> str | None:
        """The label of one of the merchant's key versions (None: the general key)."""
        snap = self._snapshot(merchant_id)
        if version not in snap.versions:
            snap = self._snapshot(merchant_id, fresh=True)
        kv = snap.versions.get(version)
        if kv is None:
            raise UnknownKeyVersion(f"merchant {merchant_id!r} has no key version {version}")
        return kv.label

    def live_labels(self, merchant_id: str) -> dict[str, list[int]]:
        """label -> live versions of the merchant's labelled keys."""
        out: dict[str, list[int]] = {}
        for kv in self._snapshot(merchant_id, fresh=True).versions.values():
            if kv.label is not None and not kv.destroyed:
                out.setdefault(kv.label, []).append(kv.version)
        return out

    def live_versions(self, merchant_id: str) -> set[int]:
        """Every key version of the merchant that still opens its values (general and labelled)."""
        versions = self._snapshot(merchant_id, fresh=True).versions.values()
        return {kv.version for kv in versions if not kv.destroyed}

    def general_versions(self, merchant_id: str) -> list[int]:
        """The live versions of the merchant's general (unlabelled) key."""
        versions = self._snapshot(merchant_id, fresh=True).versions.values()
        return sorted(kv.version for kv in versions if kv.label is None and not kv.destroyed)

    def destroy_labelled_keys(
        self, merchant_id: str, labels: Iterable[str], now: datetime | None = None
    ) -> list[int]:
        """Crypto-shred the keys with these labels: every live version is destroyed, so every copy
        of a value sealed under them (live rows, free pages, WAL, backups, exports) is unreadable.
        Returns the versions destroyed."""
        validate_merchant_id(merchant_id)
        wanted = set(labels)
        now = self._now(now)
        destroyed: list[int] = []
        with self._lock:
            for kv in self._snapshot(merchant_id, fresh=True).versions.values():
                if kv.label in wanted and kv.label is not None and not kv.destroyed:
                    self._store.destroy(merchant_id, kv.version, now)
                    destroyed.append(kv.version)
            if destroyed:
                self._snapshot(merchant_id, fresh=True)
        return sorted(destroyed)

    def rotate_if_due(self, merchant_id: str, now: datetime | None = None) -> int | None:
        """Create a new version if the current one is ROTATION_DAYS old; return it, else None.

        Old versions keep decrypting until retire_unused_versions destroys them, so rotating needs
        no downtime. A merchant without keys is left alone (its first key comes with its first PII).
        """
        validate_merchant_id(merchant_id)
        now = self._now(now)
        current = self._snapshot(merchant_id, fresh=True).current
        if current is None or now - current.created_at < ROTATION_PERIOD:
            return None
        return self._new_version(merchant_id, now)  # labelled keys live no longer than their data

    def retire_unused_versions(
        self, merchant_id: str, versions_in_use: Iterable[int], now: datetime | None = None
    ) -> list[int]:
        """Destroy the merchant's old key versions that no stored ciphertext references.

        `versions_in_use` must cover every place the merchant's ciphertexts live that should stay
        readable (see key_version()). The current version, versions still in use and versions
        retired less than RETIREMENT_GRACE ago are kept. Returns the destroyed versions.
        """
        validate_merchant_id(merchant_id)
        now = self._now(now)
        in_use: set[int] = set()
        for version in versions_in_use:
            if isinstance(version, bool) or not isinstance(version, int):
                raise TypeError(
                    f"versions_in_use must hold int key versions, got {type(version).__name__}; "
                    "parse them with key_version(ciphertext)"
                )
            in_use.add(version)
        destroyed: list[int] = []
        with self._lock:
            snap = self._snapshot(merchant_id, fresh=True)
            current = snap.current
            if current is None:
                return destroyed
            for kv in sorted(snap.versions.values(), key=lambda kv: kv.version):
                if kv.label is not None:
                    continue  # labelled keys are destroyed with their data, not retired
                if kv.destroyed or kv.version >= current.version or kv.version in in_use:
                    continue
                if kv.retired_at is None:
                    # A rotation stopped between creating the new version and retiring the old one;
                    # finish it now and start the grace period from here.
                    self._store.mark_retired(merchant_id, kv.version, now)
                    continue
                if now - kv.retired_at < RETIREMENT_GRACE:
                    continue
                self._store.destroy(merchant_id, kv.version, now)
                destroyed.append(kv.version)
            self._snapshot(merchant_id, fresh=True)
        return destroyed

    def destroy_merchant_keys(self, merchant_id: str, now: datetime | None = None) -> list[int]:
        """Crypto-shred the merchant: destroy every key version, so every copy of its ciphertexts
        (tables, backups, exports) becomes unreadable. Returns the versions destroyed."""
        validate_merchant_id(merchant_id)
        now = self._now(now)
        destroyed: list[int] = []
        with self._lock:
            for kv in self._snapshot(merchant_id, fresh=True).versions.values():
                if not kv.destroyed:
                    self._store.destroy(merchant_id, kv.version, now)
                    destroyed.append(kv.version)
            self._cache.pop(merchant_id, None)
            self._snapshot(merchant_id, fresh=True)
        return sorted(destroyed)

    def rewrap_merchant_keys(self, merchant_id: str) -> int:
        """KEK rotation: re-wrap the merchant's live data keys under the provider's current KEK.

        Data keys, and so every ciphertext, stay as they are. Run it for every merchant in the
        registry before dropping the old KEK. Returns how many versions were re-wrapped.
        """
        validate_merchant_id(merchant_id)
        target = self._provider.current_kek_id
        count = 0
        with self._lock:
            for kv in self._snapshot(merchant_id, fresh=True).versions.values():
                if kv.destroyed or kv.wrapped_key is None or kv.kek_id == target:
                    continue
                context = _wrap_context(merchant_id, kv.version)
                data_key = self._provider.unwrap(kv.kek_id, kv.wrapped_key, context)
                wrapped = self._provider.wrap(target, data_key, context)
                try:
                    self._store.put_version(
                        replace(kv, kek_id=target, wrapped_key=wrapped), replace=True
                    )
                except KeyDestroyed:
                    continue  # destroyed meanwhile by another process: nothing left to rewrap
                count += 1
            self._snapshot(merchant_id, fresh=True)
        return count

    # ------------------------------------------------------------------ values

    def encrypt(
        self, merchant_id: str, table: str, column: str, record_id: str, plaintext: str | None
    ) -> str | None:
        """Encrypt one PII value for its row; None stays None (an absent value is not PII)."""
        return self.encrypt_column(merchant_id, table, column, [record_id], [plaintext])[0]

    def encrypt_column(
        self,
        merchant_id: str,
        table: str,
        column: str,
        record_ids: Iterable[str],
        plaintexts: Iterable[str | None],
        *,
        label: str | None = None,
    ) -> list[str | None]:
        """Encrypt a column of values (one per record id, in order) under the current version of
        the key with `label` (None: the general key)."""
        validate_binding(merchant_id, table, column)
        ids = list(record_ids)
        values = list(plaintexts)
        if len(ids) != len(values):
            raise ValueError(
                f"encrypt_column got {len(ids)} record ids but {len(values)} values for "
                f"{table}.{column}; pass one record id per value, in the same order"
            )
        if all(value is None for value in values):
            # Nothing to encrypt: don't create (or demand) a key for an all-empty column.
            return [None] * len(values)
        version, cipher = self._current_cipher(merchant_id, label)
        prefix = aad_prefix(merchant_id, table, column, version)
        # One getrandom call for the whole column instead of one per value: the nonces are as
        # random, and the syscall was a visible share of the per-value cost.
        nonces = os.urandom(NONCE_BYTES * len(values))
        seal = cipher.encrypt
        head = f"{FORMAT_TAG}.{version}."
        b64 = binascii.b2a_base64
        out: list[str | None] = []
        append = out.append
        for index, (record_id, value) in enumerate(zip(ids, values, strict=True)):
            if value is None:
                append(None)
                continue
            if not isinstance(record_id, str) or not 0 < len(record_id) <= MAX_RECORD_ID_CHARS:
                validate_record_id(record_id)
            if not isinstance(value, str):
                raise TypeError(
                    f"PII value for {table}.{column} record {record_id!r} is a "
                    f"{type(value).__name__}; the vault encrypts str (or None)"
                )
            if value.startswith("v1.") and is_ciphertext(value):
                raise AlreadyEncrypted(
                    f"value for {table}.{column} record {record_id!r} is already a vault "
                    "ciphertext; store it as it is instead of encrypting it again"
                )
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"value for {table}.{column} record {record_id!r} cannot be UTF-8 encoded "
                    f"(lone surrogate at position {exc.start}); repair the text where it is parsed"
                ) from None
            nonce = nonces[index * NONCE_BYTES : (index + 1) * NONCE_BYTES]
            sealed = seal(nonce, data, prefix + record_id.encode("utf-8"))
            # format_ciphertext inlined: this loop is the hot path of every PII column.
            append(
                head
                + b64(nonce, newline=False).decode("ascii")
                + "."
                + b64(sealed, newline=False).decode("ascii")
            )
        return out

    def _open(
        self,
        merchant_id: str,
        table: str,
        column: str,
        record_id: str,
        parsed: ParsedCiphertext,
        prefixes: dict[tuple[str, int], bytes] | None = None,
    ) -> bytes:
        """Internal decryption; public reads go through reveal(), which audits. `prefixes` caches
        the associated data's prefix per (column, version) over a batch."""
        cipher = self._cipher(merchant_id, parsed.key_version)
        if prefixes is None:
            prefix = aad_prefix(merchant_id, table, column, parsed.key_version)
        else:
            prefix = prefixes.get((column, parsed.key_version))
            if prefix is None:
                prefix = prefixes[(column, parsed.key_version)] = aad_prefix(merchant_id, table, column, parsed.key_version)
        aad = prefix + record_id.encode("utf-8")
        try:
            return cipher.decrypt(parsed.nonce, parsed.sealed, aad)
        except InvalidTag:
            raise CiphertextRejected(
                f"ciphertext for merchant {merchant_id!r}, {table}.{column}, record {record_id!r} "
                f"(key version {parsed.key_version}) failed authentication: it was altered, or it "
                "was encrypted for another merchant, table, column or record and copied here; read "
                "it with the binding it was written for, or restore the value from its source"
            ) from None

    def _reveal_audit(self, actor: str, purpose: str) -> tuple[AuditSink, str, str]:
        """The audit sink and the checked actor and purpose every reveal needs first."""
        sink = self._audit_sink
        if sink is None:
            raise AuditSinkMissing(
                "this Vault has no audit sink, so it cannot reveal PII; build it with "
                "Vault(..., audit_sink=<callable taking a RevealEvent>)"
            )
        return sink, _check_audit_text("actor", actor), _check_audit_text("purpose", purpose)

    def reveal(
        self,
        merchant_id: str,
        table: str,
        column: str,
        record_id: str,
        ciphertext: str | None,
        *,
        actor: str,
        purpose: str,
    ) -> str | None:
        """Decrypt one value for a named actor and purpose, audited.

        The audit sink receives a RevealEvent (never the plaintext) before the value is returned;
        failed attempts are audited too. If the sink raises, the value is not returned. A None
        ciphertext (no value stored) returns None without an event: nothing is disclosed.
        """
        sink, actor, purpose = self._reveal_audit(actor, purpose)
        validate_binding(merchant_id, table, column)
        validate_record_id(record_id)
        if ciphertext is None:
            return None

        def audit(key_version: int | None, outcome: str) -> None:
            sink(
                RevealEvent(
                    at=self._now(None),
                    actor=actor,
                    purpose=purpose,
                    merchant_id=merchant_id,
                    table=table,
                    column=column,
                    record_id=record_id,
                    key_version=key_version,
                    outcome=outcome,
                )
            )

        key_version: int | None = None
        try:
            parsed = parse_ciphertext(ciphertext)
            key_version = parsed.key_version
            plaintext = self._open(merchant_id, table, column, record_id, parsed).decode("utf-8")
        except VaultError as exc:
            audit(key_version, type(exc).__name__)
            raise
        audit(key_version, "revealed")
        return plaintext

    def reveal_batch(
        self,
        merchant_id: str,
        table: str,
        items: Iterable[tuple[str, str, str | None]],
        *,
        actor: str,
        purpose: str,
    ) -> list[str | None]:
        """Decrypt many values of one merchant's table for one actor and purpose, with ONE audit
        event for the whole batch (a `BatchRevealEvent`: who, why, merchant, table, columns, how
        many values and records, key versions; never a value).

        `items` are (record_id, column, ciphertext); the plaintexts come back in the same order
        (None for None). The guarantees are reveal()'s: an audit sink, an actor and a purpose are
        required; every binding and record id is checked before anything is decrypted; the event
        reaches the sink before any value is returned, and if the sink raises nothing is returned;
        a failure (a moved, altered or malformed ciphertext, a destroyed key) is audited with its
        error name and raised, and no value of the batch is returned. A batch holding only None
        discloses nothing and emits no event. Use it where one event per value would cost more
        than the work (a merchant's data export); single reads keep using reveal().
        """
        sink, actor, purpose = self._reveal_audit(actor, purpose)
        validate_merchant_id(merchant_id)
        validate_identifier("table", table)
        rows = list(items)
        checked: set[str] = set()
        for row in rows:
            if not isinstance(row, tuple) or len(row) != 3:
                raise TypeError(
                    "reveal_batch items are (record_id, column, ciphertext) tuples; got "
                    f"{type(row).__name__}"
                )
            record_id, column, _ = row
            if column not in checked:
                validate_binding(merchant_id, table, column)
                checked.add(column)
            validate_record_id(record_id)
        present = [(r, c, v) for r, c, v in rows if v is not None]
        if not present:
            return [None] * len(rows)
        columns = tuple(sorted({c for _, c, _ in present}))
        records = len({r for r, _, _ in present})

        def audit(key_versions: set[int], outcome: str) -> None:
            sink(
                BatchRevealEvent(
                    at=self._now(None),
                    actor=actor,
                    purpose=purpose,
                    merchant_id=merchant_id,
                    table=table,
                    column="*",
                    record_id="*",
                    key_version=max(key_versions) if len(key_versions) == 1 else None,
                    outcome=outcome,
                    columns=columns,
                    values=len(present),
                    records=records,
                    key_versions=tuple(sorted(key_versions)),
                )
            )

        versions: set[int] = set()
        prefixes: dict[tuple[str, int], bytes] = {}
        out: list[str | None] = []
        try:
            for record_id, column, ciphertext in rows:
                if ciphertext is None:
                    out.append(None)
                    continue
                parsed = parse_ciphertext(ciphertext)
                versions.add(parsed.key_version)
                out.append(self._open(merchant_id, table, column, record_id, parsed, prefixes).decode("utf-8"))
        except VaultError as exc:
            out.clear()
            audit(versions, type(exc).__name__)
            raise
        audit(versions, "revealed")
        return out

    def reencrypt(
        self, merchant_id: str, table: str, column: str, record_id: str, ciphertext: str
    ) -> str:
        """Return `ciphertext` re-encrypted under the current version (unchanged if already current)."""
        validate_record_id(record_id)
        for _, _, new in self.reencrypt_rows(merchant_id, table, [(record_id, column, ciphertext)]):
            return new
        return ciphertext

    def reencrypt_rows(
        self, merchant_id: str, table: str, rows: Iterable[tuple[str, str, str | None]]
    ) -> Iterator[tuple[str, str, str]]:
        """For (record_id, column, ciphertext) rows of one table, yield (record_id, column, new
        ciphertext) for each value under an older key version; current, newer and None values are
        skipped. Nothing is decrypted for values already current, so re-running it is cheap."""
        return self._seal_again(
            merchant_id, table, rows, None,
            # Current already, or under a labelled key that lives as long as its data.
            keep=lambda old, current: old >= current or self.key_label(merchant_id, old) is not None,
        )

    def reseal_rows(
        self,
        merchant_id: str,
        table: str,
        rows: Iterable[tuple[str, str, str | None]],
        label: str,
    ) -> Iterator[tuple[str, str, str]]:
        """For (record_id, column, ciphertext) rows of one table, yield (record_id, column, new
        ciphertext) for each value not yet under the current version of the key with `label`:
        the value is decrypted and sealed again under that key, bound to the same row. Used when
        a value's due day becomes known or moves (ADR 0007); None values are skipped."""
        return self._seal_again(merchant_id, table, rows, validate_label(label), keep=lambda old, current: old == current)

    def _seal_again(
        self,
        merchant_id: str,
        table: str,
        rows: Iterable[tuple[str, str, str | None]],
        label: str | None,
        *,
        keep: Callable[[int, int], bool],
    ) -> Iterator[tuple[str, str, str]]:
        """(record_id, column, new ciphertext) for each value of `rows` that `keep(its version,
        the current version of the key with `label`)` does not keep: decrypted and sealed again
        under that current version, bound to the same row."""
        validate_merchant_id(merchant_id)
        validate_identifier("table", table)
        version, cipher = self._current_cipher(merchant_id, label)
        prefixes: dict[str, bytes] = {}
        for record_id, column, ciphertext in rows:
            if ciphertext is None:
                continue
            parsed = parse_ciphertext(ciphertext)
            if keep(parsed.key_version, version):
                continue
            prefix = prefixes.get(column)
            if prefix is None:
                validate_binding(merchant_id, table, column)
                prefix = prefixes[column] = aad_prefix(merchant_id, table, column, version)
            validate_record_id(record_id)
            data = self._open(merchant_id, table, column, record_id, parsed)
            nonce = os.urandom(NONCE_BYTES)
            sealed = cipher.encrypt(nonce, data, prefix + record_id.encode("utf-8"))
            yield record_id, column, format_ciphertext(version, nonce, sealed)
