"""The PII vault against real key files in tmp_path: format, binding, rotation, shredding, audit."""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from illuma_pipelines.merchant_ids import InvalidMerchantId
from illuma_pipelines.vault import (
    CIPHERTEXT_REGEX,
    MASTER_KEY_ENV_VAR,
    RETIREMENT_GRACE,
    ROTATION_DAYS,
    AlreadyEncrypted,
    AuditSinkMissing,
    CiphertextRejected,
    FileKeyStore,
    KeyDestroyed,
    KeyStoreError,
    KeyUnwrapFailed,
    KeyVersionExists,
    LocalKeyring,
    MalformedCiphertext,
    MasterKeyError,
    RevealEvent,
    UnknownKeyVersion,
    Vault,
    VaultError,
    is_ciphertext,
    key_version,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ACME = "acme_parts"
OTHER = "bolt_bros"


class Clock:
    """A settable clock: rotation and grace periods are tested without waiting 90 days."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class Env:
    """One vault deployment: a key store file, a master key and the audit events it emitted."""

    def __init__(self, root: Path, master_key: bytes | None = None) -> None:
        self.root = root
        self.master_key = master_key or os.urandom(32)
        self.store_path = root / "keys" / "keystore.json"
        self.store = FileKeyStore(self.store_path)
        self.keyring = LocalKeyring([self.master_key])
        self.clock = Clock()
        self.events: list[RevealEvent] = []
        self.vault = self.make_vault()

    def make_vault(self, keyring: LocalKeyring | None = None, **kwargs: object) -> Vault:
        """A second Vault over the same files stands in for another process."""
        return Vault(
            FileKeyStore(self.store_path),
            keyring or self.keyring,
            audit_sink=self.events.append,
            clock=self.clock,
            **kwargs,
        )

    def reveal(
        self,
        merchant: str,
        table: str,
        column: str,
        record: str,
        ciphertext: str | None,
        vault: Vault | None = None,
    ) -> str | None:
        return (vault or self.vault).reveal(
            merchant, table, column, record, ciphertext, actor="ops@illuma", purpose="test"
        )


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


@pytest.fixture(scope="module")
def shared_env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    # Hypothesis runs many examples per test; one deployment for all of them keeps that fast.
    return Env(tmp_path_factory.mktemp("vault"))


def raw_data_key(env: Env, merchant: str, version: int) -> bytes:
    kv = next(kv for kv in env.store.versions(merchant) if kv.version == version)
    assert kv.wrapped_key is not None
    context = {
        "purpose": "illuma-pii-data-key",
        "merchant_id": merchant,
        "key_version": str(version),
    }
    return env.keyring.unwrap(kv.kek_id, kv.wrapped_key, context)


# --------------------------------------------------------------------------- round trip, format

text_values = st.text(max_size=200)
record_ids = st.text(min_size=1, max_size=60)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plaintext=text_values, record_id=record_ids)
def test_round_trip_any_unicode_text(shared_env: Env, plaintext: str, record_id: str) -> None:
    ciphertext = shared_env.vault.encrypt(ACME, "orders", "buyer_name", record_id, plaintext)
    assert is_ciphertext(ciphertext)
    assert shared_env.reveal(ACME, "orders", "buyer_name", record_id, ciphertext) == plaintext


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(st.one_of(st.none(), text_values), max_size=30))
def test_encrypt_column_matches_single_values(shared_env: Env, values: list[str | None]) -> None:
    ids = [f"112-{i:07d}" for i in range(len(values))]
    encrypted = shared_env.vault.encrypt_column(ACME, "orders", "ship_address", ids, values)
    assert [c is None for c in encrypted] == [v is None for v in values]
    for record_id, value, ciphertext in zip(ids, values, encrypted, strict=True):
        assert shared_env.reveal(ACME, "orders", "ship_address", record_id, ciphertext) == value


def test_none_stays_none_and_is_not_audited(env: Env) -> None:
    assert env.vault.encrypt(ACME, "orders", "buyer_phone", "o1", None) is None
    assert env.reveal(ACME, "orders", "buyer_phone", "o1", None) is None
    assert env.events == []


def test_ciphertext_format_and_documented_associated_data(env: Env) -> None:
    first = env.vault.encrypt(ACME, "orders", "buyer_email", "111-222", "jo@example.com")
    second = env.vault.encrypt(ACME, "orders", "buyer_email", "111-222", "jo@example.com")
    assert first != second  # fresh random nonce each time
    tag, version, nonce_b64, sealed_b64 = first.split(".")
    assert (tag, version) == ("v1", "1")
    assert key_version(first) == 1
    nonce = base64.b64decode(nonce_b64, validate=True)
    sealed = base64.b64decode(sealed_b64, validate=True)
    assert len(nonce) == 12
    assert len(sealed) == len(b"jo@example.com") + 16

    # Rebuild the associated data exactly as docs/decisions/0002-pii-vault.md describes it and
    # open the value with the raw data key: the documented format is the real one.
    def lp(text: str) -> bytes:
        raw = text.encode()
        return len(raw).to_bytes(4, "big") + raw

    aad = (
        b"illuma-pii\x00v1\x00"
        + (1).to_bytes(4, "big")
        + lp(ACME)
        + lp("orders")
        + lp("buyer_email")
        + b"111-222"
    )
    assert AESGCM(raw_data_key(env, ACME, 1)).decrypt(nonce, sealed, aad) == b"jo@example.com"


# --------------------------------------------------------------------------- binding, tampering


@pytest.mark.parametrize(
    ("merchant", "table", "column", "record"),
    [
        (OTHER, "orders", "buyer_name", "114-1"),  # another merchant
        (ACME, "returns", "buyer_name", "114-1"),  # another table
        (ACME, "orders", "ship_address", "114-1"),  # another column
        (ACME, "orders", "buyer_name", "114-2"),  # another row
    ],
)
def test_ciphertext_moved_elsewhere_fails(
    env: Env, merchant: str, table: str, column: str, record: str
) -> None:
    env.vault.encrypt(OTHER, "orders", "buyer_name", "x", "someone")  # OTHER has a version 1 too
    ciphertext = env.vault.encrypt(ACME, "orders", "buyer_name", "114-1", "Ada Lovelace")
    with pytest.raises(CiphertextRejected) as excinfo:
        env.reveal(merchant, table, column, record, ciphertext)
    assert "Ada" not in str(excinfo.value)
    assert "another merchant, table, column or record" in str(excinfo.value)
    assert env.events[-1].outcome == "CiphertextRejected"


def test_ciphertext_moved_to_merchant_without_keys_fails(env: Env) -> None:
    ciphertext = env.vault.encrypt(ACME, "orders", "buyer_name", "114-1", "Ada Lovelace")
    with pytest.raises(UnknownKeyVersion, match="no key version 1"):
        env.reveal("new_merchant", "orders", "buyer_name", "114-1", ciphertext)


_TAMPER_ALPHABET = "0123456789.=+/abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# The ciphertext of a 12-byte value under version 1 always has this length; hypothesis must not
# draw from the (random) ciphertext itself, or its examples would not replay.
_TAMPER_LENGTH = len("v1.1.") + 16 + 1 + 4 * ((len("Grace Hopper") + 16 + 2) // 3)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(index=st.integers(0, _TAMPER_LENGTH - 1), shift=st.integers(1, len(_TAMPER_ALPHABET) - 1))
def test_any_single_character_change_fails(shared_env: Env, index: int, shift: int) -> None:
    ciphertext = shared_env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "Grace Hopper")
    assert len(ciphertext) == _TAMPER_LENGTH
    original = _TAMPER_ALPHABET.index(ciphertext[index])
    char = _TAMPER_ALPHABET[(original + shift) % len(_TAMPER_ALPHABET)]
    tampered = ciphertext[:index] + char + ciphertext[index + 1 :]
    with pytest.raises(VaultError) as excinfo:
        shared_env.reveal(ACME, "orders", "buyer_name", "r1", tampered)
    assert "Grace" not in str(excinfo.value)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bit=st.integers(0, (len("Grace Hopper") + 16) * 8 - 1))
def test_flipping_any_sealed_bit_fails_authentication(shared_env: Env, bit: int) -> None:
    ciphertext = shared_env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "Grace Hopper")
    head, sealed_b64 = ciphertext.rsplit(".", 1)
    sealed = bytearray(base64.b64decode(sealed_b64))
    sealed[bit // 8] ^= 1 << (bit % 8)
    tampered = head + "." + base64.b64encode(bytes(sealed)).decode()
    with pytest.raises(CiphertextRejected):
        shared_env.reveal(ACME, "orders", "buyer_name", "r1", tampered)


def test_non_canonical_base64_is_rejected(env: Env) -> None:
    # 14 plaintext bytes + 16 tag bytes = 30 bytes: no padding, so take a 1-byte plaintext
    # (17 sealed bytes, "xxx=" tail) whose last character carries two unused bits.
    ciphertext = env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "A")
    head, sealed_b64 = ciphertext.rsplit(".", 1)
    assert sealed_b64.endswith("=") and not sealed_b64.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(sealed_b64[-2])
    variant = sealed_b64[:-2] + alphabet[last ^ 1] + "="  # same decoded bytes, other spelling
    assert binascii.a2b_base64(variant) == binascii.a2b_base64(sealed_b64)
    tampered = head + "." + variant
    assert not is_ciphertext(tampered)
    with pytest.raises(MalformedCiphertext, match="non-canonical"):
        env.reveal(ACME, "orders", "buyer_name", "r1", tampered)


def test_plaintext_where_a_ciphertext_belongs_is_reported_without_echoing_it(env: Env) -> None:
    with pytest.raises(MalformedCiphertext) as excinfo:
        env.reveal(ACME, "orders", "buyer_name", "r1", "Margaret Hamilton")
    assert "Margaret" not in str(excinfo.value)
    assert "written without the vault" in str(excinfo.value)
    assert env.events[-1].outcome == "MalformedCiphertext"
    assert env.events[-1].key_version is None


# --------------------------------------------------------------------------- detection helper


def test_is_ciphertext_recognises_only_vault_strings(env: Env) -> None:
    ciphertext = env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "x")
    assert is_ciphertext(ciphertext)
    for value in [
        None,
        42,
        b"v1.1.abc",
        "",
        "John Smith",
        "john@example.com",
        "v1.1.abc.def",
        ciphertext.replace("v1.", "v2.", 1),
        ciphertext.replace("v1.1.", "v1.01.", 1),
        ciphertext.replace("v1.1.", "v1.0.", 1),
        ciphertext + "\n",
        ciphertext[:-4],
    ]:
        assert not is_ciphertext(value), value


@settings(max_examples=300)
@given(value=st.text(max_size=80))
def test_arbitrary_text_is_not_mistaken_for_a_ciphertext(value: str) -> None:
    assert not is_ciphertext(value)


def test_sql_pattern_agrees_with_is_ciphertext_in_duckdb(env: Env) -> None:
    values = env.vault.encrypt_column(
        ACME, "orders", "buyer_name", ["a", "b", "c"], ["", "x", "é" * 40]
    )
    samples = [
        *values,
        "Jane Doe",
        "v1.1.abc.def",
        values[0][:-1],
        values[1].replace("v1.1.", "v1.01."),
    ]
    con = duckdb.connect()
    for sample in samples:
        (matched,) = con.execute(
            "select regexp_full_match(?, ?)", [sample, CIPHERTEXT_REGEX]
        ).fetchone()
        assert matched == is_ciphertext(sample), sample


# --------------------------------------------------------------------------- input validation


def test_invalid_inputs_are_refused_with_what_to_fix(env: Env) -> None:
    with pytest.raises(InvalidMerchantId):
        env.vault.encrypt("Acme Parts", "orders", "buyer_name", "r1", "x")
    with pytest.raises(ValueError, match="unqualified lowercase SQL identifier"):
        env.vault.encrypt(ACME, "m_acme_parts.orders", "buyer_name", "r1", "x")
    with pytest.raises(ValueError, match="invalid column 'Buyer_Name'"):
        env.vault.encrypt(ACME, "orders", "Buyer_Name", "r1", "x")
    with pytest.raises(ValueError, match="record id"):
        env.vault.encrypt(ACME, "orders", "buyer_name", "", "x")
    with pytest.raises(TypeError, match="is a int") as excinfo:
        env.vault.encrypt(ACME, "orders", "buyer_phone", "r1", 5551234)  # type: ignore[arg-type]
    assert "5551234" not in str(excinfo.value)
    with pytest.raises(ValueError, match="lone surrogate") as excinfo:
        env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "Bad \ud800 Name")
    assert "Bad" not in str(excinfo.value)
    with pytest.raises(ValueError, match="2 record ids but 1 values"):
        env.vault.encrypt_column(ACME, "orders", "buyer_name", ["a", "b"], ["x"])


def test_encrypting_a_ciphertext_again_is_refused(env: Env) -> None:
    ciphertext = env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "x")
    with pytest.raises(AlreadyEncrypted):
        env.vault.encrypt(ACME, "orders", "buyer_name", "r1", ciphertext)


def test_timestamps_must_be_timezone_aware(env: Env) -> None:
    env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "x")
    with pytest.raises(ValueError, match="timezone-aware"):
        env.vault.rotate_if_due(ACME, datetime(2027, 1, 1))


def test_no_public_decrypt_bypasses_the_audit() -> None:
    public = [name for name in dir(Vault) if not name.startswith("_")]
    assert not [name for name in public if "decrypt" in name or "open" in name]


# --------------------------------------------------------------------------- audit


def test_reveal_emits_an_audit_event_without_the_plaintext(env: Env) -> None:
    ciphertext = env.vault.encrypt(
        ACME, "orders", "ship_address", "113-9", "1 Infinite Loop, Cupertino"
    )
    env.clock.advance(hours=1)
    value = env.vault.reveal(
        ACME,
        "orders",
        "ship_address",
        "113-9",
        ciphertext,
        actor="label-printer",
        purpose="print shipping label",
    )
    assert value == "1 Infinite Loop, Cupertino"
    (event,) = env.events
    assert event.as_dict() == {
        "at": (T0 + timedelta(hours=1)).isoformat(),
        "actor": "label-printer",
        "purpose": "print shipping label",
        "merchant_id": ACME,
        "table": "orders",
        "column": "ship_address",
        "record_id": "113-9",
        "key_version": 1,
        "outcome": "revealed",
    }
    rendered = repr(event) + json.dumps(event.as_dict())
    assert "Infinite" not in rendered and "Cupertino" not in rendered
    assert ciphertext not in rendered


def test_reveal_requires_an_audit_sink_actor_and_purpose(env: Env) -> None:
    ciphertext = env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "x")
    silent = Vault(env.store, env.keyring, clock=env.clock)
    with pytest.raises(AuditSinkMissing, match="audit_sink"):
        silent.reveal(ACME, "orders", "buyer_name", "r1", ciphertext, actor="a", purpose="b")
    with pytest.raises(ValueError, match="actor"):
        env.vault.reveal(ACME, "orders", "buyer_name", "r1", ciphertext, actor=" ", purpose="b")
    with pytest.raises(ValueError, match="purpose"):
        env.vault.reveal(ACME, "orders", "buyer_name", "r1", ciphertext, actor="a", purpose="")


def test_a_failing_audit_sink_withholds_the_value(env: Env) -> None:
    ciphertext = env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "x")

    def broken_sink(event: RevealEvent) -> None:
        raise OSError("audit log unavailable")

    vault = Vault(env.store, env.keyring, audit_sink=broken_sink, clock=env.clock)
    with pytest.raises(OSError, match="audit log unavailable"):
        vault.reveal(ACME, "orders", "buyer_name", "r1", ciphertext, actor="a", purpose="b")


# --------------------------------------------------------------------------- rotation


def _encrypt_rows(env: Env, count: int, prefix: str) -> dict[tuple[str, str], tuple[str, str]]:
    """{(record_id, column): (plaintext, ciphertext)} for a small orders table."""
    rows = {}
    for column in ("buyer_name", "buyer_email"):
        ids = [f"{prefix}-{i}" for i in range(count)]
        values = [f"{column} of {record}" for record in ids]
        for record, value, ciphertext in zip(
            ids, values, env.vault.encrypt_column(ACME, "orders", column, ids, values), strict=True
        ):
            rows[(record, column)] = (value, ciphertext)
    return rows


def test_rotation_keeps_every_record_readable_and_reencryption_moves_them(env: Env) -> None:
    old_rows = _encrypt_rows(env, 10, "old")
    assert env.vault.rotate_if_due(ACME, T0 + timedelta(days=ROTATION_DAYS - 1)) is None
    env.clock.advance(days=ROTATION_DAYS)
    assert env.vault.rotate_if_due(ACME) == 2
    assert env.vault.rotate_if_due(ACME) is None  # the new version is not due yet
    assert env.vault.current_version(ACME) == 2

    new_rows = _encrypt_rows(env, 5, "new")
    assert {key_version(c) for _, c in new_rows.values()} == {2}
    rows = {**old_rows, **new_rows}
    for (record, column), (value, ciphertext) in rows.items():
        assert env.reveal(ACME, "orders", column, record, ciphertext) == value

    batch = [(record, column, ciphertext) for (record, column), (_, ciphertext) in rows.items()]
    batch.append(("null-row", "buyer_name", None))
    moved = list(env.vault.reencrypt_rows(ACME, "orders", batch))
    assert {(record, column) for record, column, _ in moved} == set(old_rows)
    for record, column, ciphertext in moved:
        assert key_version(ciphertext) == 2
        rows[(record, column)] = (rows[(record, column)][0], ciphertext)
    for (record, column), (value, ciphertext) in rows.items():
        assert env.reveal(ACME, "orders", column, record, ciphertext) == value

    again = [(record, column, ciphertext) for (record, column), (_, ciphertext) in rows.items()]
    assert list(env.vault.reencrypt_rows(ACME, "orders", again)) == []

    (record, column), (value, ciphertext) = next(iter(old_rows.items()))
    single = env.vault.reencrypt(ACME, "orders", column, record, ciphertext)
    assert key_version(single) == 2
    assert env.vault.reencrypt(ACME, "orders", column, record, single) == single
    # The old key version still decrypts until it is retired: no downtime during re-encryption.
    assert env.reveal(ACME, "orders", column, record, ciphertext) == value


def test_reencryption_rejects_a_moved_ciphertext(env: Env) -> None:
    ciphertext = env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "x")
    env.vault.create_key_version(ACME)
    with pytest.raises(CiphertextRejected):
        list(env.vault.reencrypt_rows(ACME, "orders", [("r2", "buyer_name", ciphertext)]))


def test_retired_versions_are_destroyed_only_when_unused(env: Env) -> None:
    old = env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "Old Name")
    env.clock.advance(days=ROTATION_DAYS)
    assert env.vault.rotate_if_due(ACME) == 2
    # Still referenced: kept.
    assert env.vault.retire_unused_versions(ACME, {1, 2}) == []
    # Unreferenced but only just rotated out: another process may still be writing with it.
    assert env.vault.retire_unused_versions(ACME, {2}) == []
    env.clock.advance(seconds=RETIREMENT_GRACE.total_seconds())
    assert env.vault.retire_unused_versions(ACME, {1, 2}) == []
    assert env.reveal(ACME, "orders", "buyer_name", "r1", old) == "Old Name"

    new = env.vault.reencrypt(ACME, "orders", "buyer_name", "r1", old)
    assert env.vault.retire_unused_versions(ACME, [key_version(new)]) == [1]
    assert env.reveal(ACME, "orders", "buyer_name", "r1", new) == "Old Name"
    with pytest.raises(KeyDestroyed, match="key version 1 of merchant 'acme_parts' was destroyed"):
        env.reveal(ACME, "orders", "buyer_name", "r1", old)

    # The current version is never destroyed, even when nothing references it yet.
    assert env.vault.retire_unused_versions(ACME, []) == []
    assert env.vault.current_version(ACME) == 2
    (v1, v2) = env.store.versions(ACME)
    assert (
        v1.wrapped_key is None
        and v1.destroyed_at == env.clock.now
        and v1.retired_at == T0 + timedelta(days=ROTATION_DAYS)
    )
    assert v2.wrapped_key is not None and v2.retired_at is None


def test_versions_in_use_must_be_ints(env: Env) -> None:
    env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "x")
    with pytest.raises(TypeError, match="key_version"):
        env.vault.retire_unused_versions(ACME, ["1"])  # type: ignore[list-item]


# --------------------------------------------------------------------------- crypto-shredding


def test_destroying_a_merchants_keys_shreds_only_that_merchant(env: Env) -> None:
    acme = _encrypt_rows(env, 3, "a")
    env.clock.advance(days=ROTATION_DAYS)
    env.vault.rotate_if_due(ACME)
    acme.update(_encrypt_rows(env, 3, "b"))  # ciphertexts under both versions
    other = env.vault.encrypt(OTHER, "orders", "buyer_name", "o1", "Unaffected Buyer")

    assert env.vault.destroy_merchant_keys(ACME) == [1, 2]
    assert env.vault.destroy_merchant_keys(ACME) == []  # idempotent
    for vault in (env.vault, env.make_vault()):  # this process and a fresh one
        for (record, column), (_, ciphertext) in acme.items():
            with pytest.raises(KeyDestroyed, match="destroyed"):
                env.reveal(ACME, "orders", column, record, ciphertext, vault=vault)
        assert (
            env.reveal(OTHER, "orders", "buyer_name", "o1", other, vault=vault)
            == "Unaffected Buyer"
        )
    assert env.events[0].outcome == "KeyDestroyed"

    stored = json.loads(env.store_path.read_bytes())["merchants"]
    assert all(item["wrapped_key"] is None for item in stored[ACME])
    assert all(item["wrapped_key"] is not None for item in stored[OTHER])

    with pytest.raises(KeyDestroyed, match="create_key_version"):
        env.vault.encrypt(ACME, "orders", "buyer_name", "r9", "New PII")
    # Re-onboarding is explicit and never brings the shredded data back.
    assert env.vault.create_key_version(ACME) == 3
    fresh = env.vault.encrypt(ACME, "orders", "buyer_name", "r9", "New PII")
    assert env.reveal(ACME, "orders", "buyer_name", "r9", fresh) == "New PII"
    (record, column), (_, ciphertext) = next(iter(acme.items()))
    with pytest.raises(KeyDestroyed):
        env.reveal(ACME, "orders", column, record, ciphertext)


def test_another_process_sees_the_destruction_within_the_cache_ttl(env: Env) -> None:
    reader = env.make_vault(cache_ttl_seconds=0)
    ciphertext = env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "x")
    assert (
        env.reveal(ACME, "orders", "buyer_name", "r1", ciphertext, vault=reader) == "x"
    )  # key cached
    env.vault.destroy_merchant_keys(ACME)
    with pytest.raises(KeyDestroyed):
        env.reveal(ACME, "orders", "buyer_name", "r1", ciphertext, vault=reader)


# --------------------------------------------------------------------------- key files


def test_key_store_file_holds_no_raw_key_and_no_pii(env: Env) -> None:
    pii = "Buyer Who Must Not Leak"
    env.vault.encrypt(ACME, "orders", "buyer_name", "r1", pii)
    env.vault.create_key_version(ACME)
    env.vault.encrypt(OTHER, "orders", "buyer_name", "r1", pii)
    content = env.store_path.read_bytes()
    secrets = [
        raw_data_key(env, ACME, 1),
        raw_data_key(env, ACME, 2),
        raw_data_key(env, OTHER, 1),
        env.master_key,
    ]
    for secret in secrets:
        for encoding in (
            secret,
            secret.hex().encode(),
            secret.hex().upper().encode(),
            base64.b64encode(secret),
            base64.urlsafe_b64encode(secret),
            base64.b64encode(secret).rstrip(b"="),
            base64.b32encode(secret),
        ):
            assert encoding not in content
    assert pii.encode() not in content
    assert stat.S_IMODE(env.store_path.stat().st_mode) == 0o600
    assert sorted(p.name for p in env.store_path.parent.iterdir()) == [
        "keystore.json",
        "keystore.json.lock",
    ]


def test_wrapped_key_copied_to_another_merchant_does_not_unwrap(env: Env) -> None:
    env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "x")
    ciphertext = env.vault.encrypt(OTHER, "orders", "buyer_name", "r1", "y")
    doc = json.loads(env.store_path.read_bytes())
    doc["merchants"][OTHER][0]["wrapped_key"] = doc["merchants"][ACME][0]["wrapped_key"]
    env.store_path.write_text(json.dumps(doc))
    with pytest.raises(KeyUnwrapFailed, match="bolt_bros"):
        env.reveal(OTHER, "orders", "buyer_name", "r1", ciphertext, vault=env.make_vault())


def test_master_key_from_environment_and_its_errors(tmp_path: Path) -> None:
    key = os.urandom(32)
    encoded = base64.b64encode(key).decode()
    keyring = LocalKeyring.from_env(environ={MASTER_KEY_ENV_VAR: encoded + "\n"})
    assert keyring.current_kek_id == LocalKeyring([key]).current_kek_id
    assert base64.b64decode(LocalKeyring.generate_master_key()).__len__() == 32

    with pytest.raises(MasterKeyError, match=f"{MASTER_KEY_ENV_VAR} is not set.*generate one"):
        LocalKeyring.from_env(environ={})
    short = base64.b64encode(os.urandom(16)).decode()
    with pytest.raises(MasterKeyError, match="decodes to 16 bytes.*exactly 32 bytes") as excinfo:
        LocalKeyring.from_env(environ={MASTER_KEY_ENV_VAR: short})
    assert short not in str(excinfo.value)
    with pytest.raises(MasterKeyError, match="not valid base64") as excinfo:
        LocalKeyring.from_env(environ={MASTER_KEY_ENV_VAR: "not-a-key!" + encoded})
    assert encoded not in str(excinfo.value)
    with pytest.raises(MasterKeyError, match="is empty"):
        LocalKeyring.from_env(environ={MASTER_KEY_ENV_VAR: "  "})
    with pytest.raises(MasterKeyError, match="repeats"):
        LocalKeyring.from_env(environ={MASTER_KEY_ENV_VAR: f"{encoded},{encoded}"})


def test_master_key_file_must_exist_and_live_outside_the_data_folder(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    key_file = tmp_path / "secrets" / "master.key"
    with pytest.raises(MasterKeyError, match="does not exist"):
        LocalKeyring.from_file(key_file, data_dir=data_dir)
    key_file.parent.mkdir()
    key_file.write_text(LocalKeyring.generate_master_key() + "\n")
    assert LocalKeyring.from_file(key_file, data_dir=data_dir).current_kek_id.startswith("local:")

    inside = data_dir / "keys" / "master.key"
    inside.parent.mkdir()
    inside.write_text(LocalKeyring.generate_master_key())
    with pytest.raises(MasterKeyError, match="inside the data folder"):
        LocalKeyring.from_file(inside, data_dir=data_dir)
    with pytest.raises(KeyStoreError, match="inside the data folder"):
        FileKeyStore(data_dir / "keystore.json", data_dir=data_dir)
    (tmp_path / "short.key").write_text(base64.b64encode(os.urandom(31)).decode())
    with pytest.raises(MasterKeyError, match="31 bytes"):
        LocalKeyring.from_file(tmp_path / "short.key")


def test_wrong_master_key_is_named_as_such(env: Env) -> None:
    ciphertext = env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "x")
    stranger = env.make_vault(LocalKeyring([os.urandom(32)]))
    with pytest.raises(MasterKeyError, match="does not hold KEK"):
        env.reveal(ACME, "orders", "buyer_name", "r1", ciphertext, vault=stranger)


def test_kek_rotation_rewraps_keys_without_touching_data(env: Env) -> None:
    before = env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "Before Rotation")
    env.vault.create_key_version(ACME)
    other = env.vault.encrypt(OTHER, "orders", "buyer_name", "r1", "Other Buyer")
    new_key = os.urandom(32)
    transition = LocalKeyring.from_env(
        environ={
            MASTER_KEY_ENV_VAR: f"{base64.b64encode(new_key).decode()},{base64.b64encode(env.master_key).decode()}"
        }
    )
    rotating = env.make_vault(transition)
    assert rotating.rewrap_merchant_keys(ACME) == 2
    assert rotating.rewrap_merchant_keys(OTHER) == 1
    assert rotating.rewrap_merchant_keys(ACME) == 0
    assert {kv.kek_id for m in (ACME, OTHER) for kv in env.store.versions(m)} == {
        transition.current_kek_id
    }

    only_new = env.make_vault(LocalKeyring([new_key]))
    assert (
        env.reveal(ACME, "orders", "buyer_name", "r1", before, vault=only_new) == "Before Rotation"
    )
    assert env.reveal(OTHER, "orders", "buyer_name", "r1", other, vault=only_new) == "Other Buyer"
    with pytest.raises(MasterKeyError, match="does not hold KEK"):
        env.reveal(
            ACME,
            "orders",
            "buyer_name",
            "r1",
            before,
            vault=env.make_vault(LocalKeyring([env.master_key])),
        )


def test_key_store_refuses_duplicates_resurrection_and_garbage(env: Env) -> None:
    env.vault.encrypt(ACME, "orders", "buyer_name", "r1", "x")
    (kv,) = env.store.versions(ACME)
    with pytest.raises(KeyVersionExists):
        env.store.put_version(kv)
    env.vault.destroy_merchant_keys(ACME)
    with pytest.raises(KeyDestroyed):
        env.store.put_version(kv, replace=True)
    with pytest.raises(KeyStoreError, match="no version 7"):
        env.store.destroy(ACME, 7, T0)
    env.store_path.write_text("{not json")
    with pytest.raises(KeyStoreError, match="not valid JSON.*restore"):
        env.store.versions(ACME)
    env.store_path.write_text("{}")
    with pytest.raises(KeyStoreError, match="not an ILLUMA key store"):
        env.store.versions(ACME)


def _encrypt_in_another_process(store_path: str, master_key: bytes, index: int) -> str:
    vault = Vault(FileKeyStore(store_path), LocalKeyring([master_key]))
    return vault.encrypt("race_merchant", "orders", "buyer_name", f"r{index}", f"buyer {index}")


def test_processes_racing_to_create_the_first_key_agree_on_one(env: Env) -> None:
    with ProcessPoolExecutor(max_workers=4) as pool:
        futures = [
            pool.submit(_encrypt_in_another_process, str(env.store_path), env.master_key, i)
            for i in range(8)
        ]
        ciphertexts = [f.result() for f in futures]
    assert len(env.store.versions("race_merchant")) == 1
    for index, ciphertext in enumerate(ciphertexts):
        assert (
            env.reveal("race_merchant", "orders", "buyer_name", f"r{index}", ciphertext)
            == f"buyer {index}"
        )
