"""Encrypted warehouse backups and restores that never bring deleted data back (ADR 0013), on
DuckDB and PostgreSQL: real pg_dump/pg_restore, real files, the real vault and purges."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from illuma_pipelines import purge
from illuma_pipelines.backups import (
    BackupIntegrityError,
    BackupKeyError,
    DirectoryStore,
    create_backup,
    list_backups,
    restore_backup,
    verify_backup,
)
from illuma_pipelines.backups.core import PG_ITEM, decrypted, open_backup
from illuma_pipelines.backups.store import MANIFEST
from illuma_pipelines.core.tables import BUYER_PII, ORDERS
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.registry import add_merchant
from illuma_pipelines.shredding import purge_and_shred
from illuma_pipelines.vault import KeyDestroyed
from illuma_pipelines.warehouse import DuckDBWarehouse
from tests.conftest import PG_ADMIN_URL

ACTOR, PURPOSE = "pipeline:tests", "prove a restore keeps deleted data deleted"


pytestmark = pytest.mark.usefixtures("backup_key")


def seal(vault, mid, oid, value, label):
    return vault.encrypt_column(mid, "core_buyer_pii", "buyer_name", [f"amazon:{oid}"], [value], label=label)[0]


def add_order(wh, vault, mid, oid, *, shipped: datetime, name: str) -> str:
    """An Amazon order shipped at `shipped`, its buyer's name sealed under its due day's key."""
    schema = merchant_schema(mid)
    due = (shipped + timedelta(days=30)).date()  # shipment + 30 while no delivery is known
    ciphertext = seal(vault, mid, oid, name, f"due:{due.isoformat()}")
    with wh.merchant_scope(mid) as conn:
        for spec in (ORDERS, BUYER_PII):
            conn.create_table(schema, spec)
        conn.execute(
            f"INSERT INTO {schema}.core_orders (channel, marketplace_order_id, status, channel_status, "
            "fulfillment_channel, shipped_at, last_updated_at, order_total, currency, partition_date, loaded_at, "
            "run_id) VALUES ('amazon', ?, 'shipped', 'SHIPPED', 'merchant', ?, ?, 12.50, 'USD', ?, ?, 'seed')",
            [oid, shipped, shipped, shipped.date(), shipped],
        )
        conn.execute(
            f"INSERT INTO {schema}.core_buyer_pii (channel, marketplace_order_id, buyer_name, partition_date, "
            "loaded_at, run_id) VALUES ('amazon', ?, ?, ?, ?, 'seed')",
            [oid, ciphertext, shipped.date(), shipped],
        )
    return ciphertext


def reveal(vault, mid, oid, ciphertext):
    return vault.reveal(mid, "core_buyer_pii", "buyer_name", f"amazon:{oid}", ciphertext, actor=ACTOR, purpose=PURPOSE)


@pytest.fixture
def scratch_target(warehouse, tmp_path):
    """Where a restore goes: a DuckDB path, or a database made and dropped by the test."""
    if isinstance(warehouse, DuckDBWarehouse):
        yield f"duckdb:///{tmp_path / 'restored' / 'warehouse.duckdb'}"
        return
    from psycopg.conninfo import make_conninfo

    name = f"illuma_restore_{secrets.token_hex(4)}"
    try:
        yield make_conninfo(PG_ADMIN_URL, dbname=name)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def restored_bytes(warehouse, target: str) -> list[tuple[Path, bytes]]:
    """Every file the restored copy is made of, checkpointed first."""
    if isinstance(warehouse, DuckDBWarehouse):
        root = Path(target[len("duckdb:///"):]).parent
        return [(p, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]
    with psycopg.connect(target, autocommit=True) as con:
        con.execute("CHECKPOINT")
        (data_dir,) = con.execute("SELECT current_setting('data_directory')").fetchone()
        (oid,) = con.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()
    root = Path(data_dir) / "base" / str(oid)
    return [(p, p.read_bytes()) for p in sorted(root.iterdir()) if p.is_file()]


def test_a_restore_never_brings_erased_or_purged_data_back(warehouse, merchant_id, vault_resource, scratch_target, tmp_path):
    vault = vault_resource.get(warehouse)
    store = DirectoryStore(tmp_path / "backups")
    now = datetime.now(UTC)
    erased, purged = merchant_id("gone"), merchant_id("kept")
    for mid in (erased, purged):
        add_merchant(warehouse, mid)
    gone_order = f"ORD-GONE-{secrets.token_hex(4)}"
    gone_ct = add_order(warehouse, vault, erased, gone_order, shipped=now - timedelta(days=3), name="Erin Erased")
    due_ct = add_order(warehouse, vault, purged, "ORD-DUE", shipped=now - timedelta(days=45), name="Paula Purged")
    live_ct = add_order(warehouse, vault, purged, "ORD-LIVE", shipped=now - timedelta(days=2), name="Lena Live")

    manifest = create_backup(warehouse, store, admin_url=PG_ADMIN_URL)
    assert {erased, purged} <= set(manifest["merchants"])
    assert manifest["tables"][f"{merchant_schema(purged)}.core_buyer_pii"]["rows"] == 2

    # After the backup: one merchant erased, the other's due PII purged with its key shredded.
    purge.request_deletion(warehouse, erased, immediate=True, requested_by="merchant:ticket-1")
    purge.erase_account(warehouse, vault, erased, now=datetime.now(UTC), run_id="erase")
    result, shred = purge_and_shred(warehouse, vault, purged, now=datetime.now(UTC), run_id="purge")
    assert result.total >= 1 and shred.destroyed_versions

    restored = restore_backup(warehouse, store, manifest["backup_id"], scratch_target, admin_url=PG_ADMIN_URL)
    assert restored.ok, restored.mismatches
    # Other tests' merchants share the session's database (and some left ledger rows dated in the
    # future by their clocks): only this test's two are judged.
    ours = {erased, purged}
    assert [m for m in restored.excluded_merchants if m in ours] == [erased]
    assert {m: n for m, n in restored.purges_reapplied.items() if m in ours} == {purged: 1}

    # Erased: not one byte of it in the restored copy, no registry row, its keys gone.
    files = restored_bytes(warehouse, scratch_target)
    assert files
    for path, data in files:
        for needle in (gone_order, gone_ct, merchant_schema(erased) + ".duckdb"):
            assert needle.encode() not in data, f"{needle} found in {path}"
    if isinstance(warehouse, DuckDBWarehouse):
        target_wh = DuckDBWarehouse(Path(scratch_target[len("duckdb:///"):]))
        assert not target_wh.merchant_file(erased).exists()
    else:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        from illuma_pipelines.warehouse import PostgresWarehouse

        target_wh = PostgresWarehouse(make_conninfo(warehouse.url, dbname=conninfo_to_dict(scratch_target)["dbname"]))
        with psycopg.connect(scratch_target) as con:
            assert con.execute("SELECT to_regnamespace(%s)", [merchant_schema(erased)]).fetchone()[0] is None
    assert not target_wh.merchant_schema_exists(erased)
    with target_wh.connect() as conn:
        assert conn.fetchone("SELECT count(*) FROM platform.merchants WHERE merchant_id = ?", [erased])[0] == 0
        assert conn.fetchone(
            "SELECT count(*) FROM platform.retention_ledger WHERE merchant_id = ? AND action = 'drop_schema'", [erased]
        )[0] == 1
    with pytest.raises(KeyDestroyed):
        reveal(vault, erased, gone_order, gone_ct)

    # Purged: its row gone again from the restored copy, and the copy the backup holds opens no more.
    schema = merchant_schema(purged)
    with target_wh.merchant_scope(purged) as conn:
        rows = dict(conn.fetchall(f"SELECT marketplace_order_id, buyer_name FROM {schema}.core_buyer_pii"))
    assert set(rows) == {"ORD-LIVE"}
    with pytest.raises(KeyDestroyed):
        reveal(vault, purged, "ORD-DUE", due_ct)
    assert any(due_ct.encode() in data for _, data in restored_bytes_of_backup(store, manifest))
    assert reveal(vault, purged, "ORD-LIVE", rows["ORD-LIVE"]) == "Lena Live"
    assert rows["ORD-LIVE"] == live_ct


def restored_bytes_of_backup(store, manifest):
    """The decrypted objects of a backup, pg_dump's compressed archive as the SQL it holds (the
    purged ciphertext is in there: only its key is gone)."""
    import subprocess

    _, key = open_backup(store, manifest["backup_id"])
    out = []
    for item in manifest["items"]:
        data = b"".join(decrypted(store, manifest, key, item["name"]))
        if item["name"] == PG_ITEM:
            data = subprocess.run(["pg_restore", "-f", "-"], input=data, capture_output=True, check=True, timeout=60).stdout
            assert b"CREATE TABLE" in data
        out.append((item["name"], data))
    return out


def test_backups_hold_no_key_material(warehouse, merchant_id, vault_resource, tmp_path):
    """The vault's key store and master key live outside the warehouse: no wrapped data key, no
    master key, no key store document is in any backup object."""
    vault = vault_resource.get(warehouse)
    mid = merchant_id("keys")
    add_merchant(warehouse, mid)
    add_order(warehouse, vault, mid, "ORD-1", shipped=datetime.now(UTC), name="Kim Keys")
    store = DirectoryStore(tmp_path / "backups")
    manifest = create_backup(warehouse, store, admin_url=PG_ADMIN_URL)
    keystore = json.loads(Path(vault_resource.resolved_key_store_path()).read_text())
    wrapped = [e["wrapped_key"] for entries in keystore["merchants"].values() for e in entries if e["wrapped_key"]]
    master = Path(vault_resource.resolved_master_key_file()).read_text().strip()
    assert wrapped
    for name, data in restored_bytes_of_backup(store, manifest):
        for secret in [*wrapped, master, "illuma-keystore-v1"]:
            assert secret.encode() not in data, f"key material in {name}"


def test_the_manifest_describes_the_backup(warehouse, merchant_id, vault_resource, tmp_path):
    vault = vault_resource.get(warehouse)
    mid = merchant_id("manifest")
    add_merchant(warehouse, mid)
    add_order(warehouse, vault, mid, "ORD-1", shipped=datetime.now(UTC), name="Max Manifest")
    store = DirectoryStore(tmp_path / "backups")
    manifest = create_backup(warehouse, store, admin_url=PG_ADMIN_URL)
    assert manifest["key_id"].startswith("backup:") and manifest["mac"]
    assert manifest["tables"][f"{merchant_schema(mid)}.core_orders"]["rows"] == 1
    assert manifest["tables"]["platform.merchants"]["rows"] >= 1
    for item in manifest["items"]:
        stored = store.read_bytes(manifest["backup_id"], item["name"])
        assert len(stored) == item["encrypted_bytes"] and item["chunk_sha256"]
        assert b"Max Manifest" not in stored and mid.encode() not in stored  # encrypted at rest
    if warehouse.dialect == "postgres":
        assert [i["name"] for i in manifest["items"]] == [PG_ITEM]
        assert manifest["server_major"] == manifest["pg_dump_major"]
        # pg_dump ran as the read-only backup login, never as the pipeline or a superuser.
        with psycopg.connect(PG_ADMIN_URL) as con:
            row = con.execute(
                "SELECT rolsuper, rolbypassrls, pg_has_role('illuma_backup', 'pg_read_all_data', 'USAGE'), "
                "pg_has_role('illuma_backup', 'pg_write_all_data', 'USAGE') FROM pg_roles WHERE rolname = 'illuma_backup'"
            ).fetchone()
        assert row == (False, True, True, False)
    else:
        assert {i["name"] for i in manifest["items"]} >= {"platform.duckdb", f"{merchant_schema(mid)}.duckdb"}
    assert [b.backup_id for b in list_backups(store)] == [manifest["backup_id"]]
    assert verify_backup(store, manifest["backup_id"])["backup_id"] == manifest["backup_id"]


def test_a_restore_refuses_the_live_warehouse_and_an_occupied_target(warehouse, tmp_path, scratch_target):
    from illuma_pipelines.backups import BackupError

    store = DirectoryStore(tmp_path / "backups")
    manifest = create_backup(warehouse, store, admin_url=PG_ADMIN_URL)
    live = warehouse.url if warehouse.dialect == "duckdb" else _admin_dsn_of(warehouse.url)
    with pytest.raises(BackupError, match="live warehouse"):
        restore_backup(warehouse, store, manifest["backup_id"], live, admin_url=PG_ADMIN_URL)
    restore_backup(warehouse, store, manifest["backup_id"], scratch_target, admin_url=PG_ADMIN_URL)
    with pytest.raises(BackupError, match="pass --force"):
        restore_backup(warehouse, store, manifest["backup_id"], scratch_target, admin_url=PG_ADMIN_URL)
    again = restore_backup(warehouse, store, manifest["backup_id"], scratch_target, force=True, admin_url=PG_ADMIN_URL)
    assert again.ok and again.tables_compared == len(manifest["tables"])


def _admin_dsn_of(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    return make_conninfo(PG_ADMIN_URL, dbname=conninfo_to_dict(url)["dbname"])


# ------------------------------------------------------------------ tampering (no database)
@pytest.fixture
def small_backup(tmp_path):
    """A DuckDB warehouse backed up in 4 KiB chunks, so its objects have many."""
    wh = DuckDBWarehouse(tmp_path / "data" / "warehouse.duckdb")
    wh.ensure_platform()
    add_merchant(wh, "tamper_test")
    store = DirectoryStore(tmp_path / "backups")
    manifest = create_backup(wh, store, chunk_bytes=4096)
    return store, manifest


def _object(store, manifest, name=None) -> Path:
    name = name or manifest["items"][-1]["name"]
    return store.root / manifest["backup_id"] / name


def test_a_flipped_byte_fails_verification(small_backup):
    store, manifest = small_backup
    path = _object(store, manifest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BackupIntegrityError, match=r"chunk \d+ does not match"):
        verify_backup(store, manifest["backup_id"])


def test_a_truncated_or_extended_object_fails_verification(small_backup):
    store, manifest = small_backup
    path = _object(store, manifest)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 100])
    with pytest.raises(BackupIntegrityError, match="truncated"):
        verify_backup(store, manifest["backup_id"])
    path.write_bytes(whole + b"x")
    with pytest.raises(BackupIntegrityError, match="extended"):
        verify_backup(store, manifest["backup_id"])


def test_reordered_or_foreign_chunks_fail_authentication(small_backup):
    """Even with hashes that match (an attacker's own list), chunk AAD binds place and backup."""
    from illuma_pipelines.backups.crypto import decrypt_stream

    store, manifest = small_backup
    item = manifest["items"][-1]
    _, key = open_backup(store, manifest["backup_id"])
    raw = _object(store, manifest).read_bytes()
    records, pos = [], 16
    while pos < len(raw):
        length = int.from_bytes(raw[pos:pos + 4], "big")
        records.append(raw[pos:pos + 4 + 12 + length])
        pos += 4 + 12 + length
    assert len(records) >= 3
    swapped = [records[1], records[0], *records[2:]]
    import hashlib

    hashes = [hashlib.sha256(r).hexdigest() for r in swapped]
    with pytest.raises(BackupIntegrityError, match="chunk 0 fails authentication"):
        list(decrypt_stream(key, manifest["backup_id"], item["name"], [raw[:16], *swapped], hashes))
    dropped = records[:-1]  # the final chunk removed: the new last one lacks the final flag
    with pytest.raises(BackupIntegrityError, match="fails authentication"):
        list(decrypt_stream(key, manifest["backup_id"], item["name"], [raw[:16], *dropped],
                            [hashlib.sha256(r).hexdigest() for r in dropped]))
    with pytest.raises(BackupIntegrityError, match="fails authentication"):
        list(decrypt_stream(key, "wh-20260101T000000Z-000000", item["name"], [raw], item["chunk_sha256"]))


def test_an_edited_manifest_or_a_wrong_key_is_refused(small_backup, monkeypatch):
    store, manifest = small_backup
    path = store.root / manifest["backup_id"] / MANIFEST
    doc = json.loads(path.read_text())
    doc["tables"]["platform.merchants"]["rows"] += 1
    path.write_text(json.dumps(doc))
    with pytest.raises(BackupIntegrityError, match="manifest was altered"):
        verify_backup(store, manifest["backup_id"])
    monkeypatch.setenv("ILLUMA_BACKUP_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    with pytest.raises(BackupKeyError, match="not among the keys loaded"):
        verify_backup(store, manifest["backup_id"])


def test_the_local_backup_key_file_is_private_and_outside_the_data(tmp_path, monkeypatch):
    from illuma_pipelines.backups import BackupKeyring

    monkeypatch.delenv("ILLUMA_BACKUP_KEY")
    ring = BackupKeyring.load()
    key_file = tmp_path / "var" / "keys" / "backup.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert BackupKeyring.load().keys == ring.keys
    monkeypatch.setenv("ILLUMA_BACKUP_KEY_FILE", str(tmp_path / "var" / "data" / "backup.key"))
    with pytest.raises(BackupKeyError, match="inside the data folder"):
        BackupKeyring.load()


def test_the_dagster_instance_database_is_backed_up_and_restored_alone(pg_url, tmp_path, monkeypatch):
    """Production's Dagster database (DAGSTER_PG_URL) is one more object of the backup, dumped by
    its own login, restorable on its own and never over the live one."""
    from psycopg.conninfo import make_conninfo

    from illuma_pipelines.backups import BackupError
    from illuma_pipelines.warehouse import Warehouse
    from tests.conftest import throwaway_database

    with throwaway_database("illuma_dagster") as dagster_db, throwaway_database("illuma_dagster_copy") as copy_db:
        with psycopg.connect(make_conninfo(PG_ADMIN_URL, dbname=dagster_db), autocommit=True) as con:
            con.execute("CREATE TABLE runs (run_id text PRIMARY KEY, body jsonb)")
            con.execute("INSERT INTO runs SELECT 'r' || i, jsonb_build_object('i', i) FROM generate_series(1, 3) i")
        monkeypatch.setenv("DAGSTER_PG_URL", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{dagster_db}")
        wh = Warehouse.from_url(pg_url)
        store = DirectoryStore(tmp_path / "backups")
        manifest = create_backup(wh, store, admin_url=PG_ADMIN_URL)
        assert "dagster.pgdump" in [i["name"] for i in manifest["items"]]
        assert manifest["tables"]["dagster:public.runs"]["rows"] == 3
        with pytest.raises(BackupError, match="live warehouse"):
            restore_backup(wh, store, manifest["backup_id"], make_conninfo(PG_ADMIN_URL, dbname=dagster_db), warehouse="dagster")
        result = restore_backup(wh, store, manifest["backup_id"], make_conninfo(PG_ADMIN_URL, dbname=copy_db), warehouse="dagster")
        assert result.ok and result.tables_compared == 1 and "merchants sensor" in result.notes[0]
        with psycopg.connect(make_conninfo(PG_ADMIN_URL, dbname=copy_db)) as con:
            assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 3


def test_a_chunk_tampered_late_in_the_dump_leaves_the_target_untouched(warehouse, merchant_id, vault_resource, tmp_path, scratch_target):
    """The restore checks each chunk (its GCM tag) as it streams; the first bad one stops it, and
    the target is as before (PostgreSQL: one transaction; DuckDB: nothing leaves the staging
    folder)."""
    vault = vault_resource.get(warehouse)
    mid = merchant_id("late")
    add_merchant(warehouse, mid)
    for i in range(40):
        add_order(warehouse, vault, mid, f"ORD-{i}", shipped=datetime.now(UTC), name=f"Buyer {i}")
    store = DirectoryStore(tmp_path / "backups")
    manifest = create_backup(warehouse, store, admin_url=PG_ADMIN_URL, chunk_bytes=4096)
    item = manifest["items"][0] if warehouse.dialect == "postgres" else manifest["items"][-1]
    assert len(item["chunk_sha256"]) >= 3
    path = store.root / manifest["backup_id"] / item["name"]
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # inside the last chunk
    path.write_bytes(bytes(data))
    with pytest.raises(BackupIntegrityError, match=r"chunk \d+ fails authentication") as caught:
        restore_backup(warehouse, store, manifest["backup_id"], scratch_target, admin_url=PG_ADMIN_URL)
    bad = int(re.search(r"chunk (\d+)", str(caught.value)).group(1))
    assert bad >= len(item["chunk_sha256"]) - 2  # late: most of the object had streamed
    if warehouse.dialect == "postgres":
        with psycopg.connect(scratch_target) as con:
            assert con.execute("SELECT to_regnamespace('platform')").fetchone()[0] is None
    else:
        root = Path(scratch_target[len("duckdb:///"):]).parent
        assert not any(p.suffix == ".duckdb" for p in root.rglob("*"))


# ------------------------------------------------------------- DuckDB file checksums (no database)
def _resigned(store, manifest, edit) -> str:
    """Rewrite a backup's manifest with `edit` and sign it again with its own data key: what a
    backup made another way would hold (the MAC is not what is under test)."""
    from illuma_pipelines.backups.crypto import manifest_mac

    path = store.root / manifest["backup_id"] / MANIFEST
    doc = json.loads(path.read_text())
    edit(doc)
    _, key = open_backup(store, manifest["backup_id"])
    doc["mac"] = manifest_mac(key, doc)
    path.write_text(json.dumps(doc))
    return manifest["backup_id"]


def _records(raw: bytes) -> list[bytes]:
    """The chunk records of an encrypted object (after its 16-byte header)."""
    records, pos = [], 16
    while pos < len(raw):
        length = int.from_bytes(raw[pos:pos + 4], "big")
        records.append(raw[pos:pos + 4 + 12 + length])
        pos += 4 + 12 + length
    return records


def test_a_duckdb_backup_records_each_file_by_its_chunk_tags_and_a_restore_proves_it(small_backup, tmp_path):
    """A DuckDB table's manifest entry is its row count and its file's checksum: the digest of the
    file's chunk tags in order (a keyed checksum of its bytes, made with the encryption at no
    cost). The restore writes the file back byte for byte, checks that digest with the tags it
    authenticated, and counts every table again."""
    from illuma_pipelines.backups.crypto import tags_digest

    store, manifest = small_backup
    live = DuckDBWarehouse(tmp_path / "data" / "warehouse.duckdb")
    sources = {"platform.duckdb": live.path, "m_tamper_test.duckdb": live.merchant_file("tamper_test")}
    for item in manifest["items"]:
        assert "plain_sha256" not in item
        digest = tags_digest()
        for record in _records(_object(store, manifest, item["name"]).read_bytes()):
            digest.update(record[-16:])
        assert item["tags_sha256"] == digest.hexdigest()
        assert item["plain_bytes"] == sources[item["name"]].stat().st_size
    table = manifest["tables"]["m_tamper_test.registry_channel_connections"]
    assert table == {"rows": 0, "checksum": "file-gcm-tags:" + manifest["items"][-1]["tags_sha256"]}
    target = tmp_path / "restored" / "warehouse.duckdb"
    result = restore_backup(live, store, manifest["backup_id"], f"duckdb:///{target}")
    assert result.ok and result.tables_compared == len(manifest["tables"])
    restored = DuckDBWarehouse(target).merchant_file("tamper_test")
    assert restored.read_bytes() == sources["m_tamper_test.duckdb"].read_bytes()

    # A row count the file does not hold is reported, table by table.
    def one_more_row(doc):
        doc["tables"]["platform.merchants"]["rows"] += 1

    _resigned(store, manifest, one_more_row)
    again = restore_backup(live, store, manifest["backup_id"], f"duckdb:///{target}", force=True)
    assert [m.split(":")[0] for m in again.mismatches] == ["platform.merchants"]


def test_chunk_tags_that_do_not_match_the_manifest_are_refused(small_backup, tmp_path):
    store, manifest = small_backup

    def other_digest(doc):
        doc["items"][-1]["tags_sha256"] = "0" * 64

    _resigned(store, manifest, other_digest)
    target = tmp_path / "restored" / "warehouse.duckdb"
    live = DuckDBWarehouse(tmp_path / "data" / "warehouse.duckdb")
    with pytest.raises(BackupIntegrityError, match="chunk tags do not match"):
        restore_backup(live, store, manifest["backup_id"], f"duckdb:///{target}")
    assert not target.exists() and not DuckDBWarehouse(target).merchants_dir.exists()
    with pytest.raises(BackupIntegrityError, match="chunk tags do not match"):
        verify_backup(store, manifest["backup_id"])


def _as_file_sha256(store, manifest, live: DuckDBWarehouse):
    """An edit making `manifest` what a backup made before tag digests holds: each object's
    plaintext sha256, and its tables' checksum `file-sha256:<it>`."""
    import hashlib

    sources = {"platform.duckdb": live.path, "m_tamper_test.duckdb": live.merchant_file("tamper_test")}

    def edit(doc):
        for item in doc["items"]:
            del item["tags_sha256"]
            item["plain_sha256"] = hashlib.sha256(sources[item["name"]].read_bytes()).hexdigest()
        for name, table in doc["tables"].items():
            item = next(i for i in doc["items"] if i["name"].removesuffix(".duckdb") == name.split(".")[0])
            table["checksum"] = "file-sha256:" + item["plain_sha256"]

    return edit


def test_a_backup_with_file_sha256_from_before_tag_digests_still_restores_and_verifies(small_backup, tmp_path):
    """Backups made before tag digests name each DuckDB file by the sha256 of its plaintext: a
    restore and a verification hash the plaintext again and compare it, and refuse a mismatch."""
    store, manifest = small_backup
    live = DuckDBWarehouse(tmp_path / "data" / "warehouse.duckdb")
    _resigned(store, manifest, _as_file_sha256(store, manifest, live))
    assert verify_backup(store, manifest["backup_id"])["items"][-1]["plain_sha256"]
    target = tmp_path / "restored" / "warehouse.duckdb"
    result = restore_backup(live, store, manifest["backup_id"], f"duckdb:///{target}")
    assert result.ok and result.tables_compared == len(manifest["tables"])

    def other_digest(doc):
        doc["items"][-1]["plain_sha256"] = "0" * 64

    _resigned(store, manifest, other_digest)
    with pytest.raises(BackupIntegrityError, match="plaintext does not match"):
        restore_backup(live, store, manifest["backup_id"], f"duckdb:///{tmp_path / 'again' / 'warehouse.duckdb'}")
    assert not (tmp_path / "again" / "warehouse.duckdb").exists()
    with pytest.raises(BackupIntegrityError, match="plaintext does not match"):
        verify_backup(store, manifest["backup_id"])


def _flip(records):
    records[1] = records[1][:40] + bytes([records[1][40] ^ 1]) + records[1][41:]
    return records


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (_flip, r"chunk 1 fails authentication"),
        (lambda r: [r[0], r[2], r[1], *r[3:]], r"chunk 1 fails authentication"),
        (lambda r: r[:-1], r"truncated after chunk \d+"),
        (lambda r: [*r[:-1], r[-1][:-5]], r"truncated inside chunk \d+"),
        (lambda r: [*r, r[0]], r"extended"),
    ],
    ids=["flipped-byte", "swapped-chunks", "final-chunk-dropped", "cut-short", "chunk-appended"],
)
def test_a_restore_refuses_a_tampered_truncated_or_reordered_object(small_backup, tmp_path, edit, error):
    """The restore checks each chunk by its GCM tag, which binds it to its backup, object, index
    and final flag: an altered, swapped, dropped or added chunk stops it before anything reaches
    the target, and the error names the object and chunk. `verify` refuses the same object."""
    store, manifest = small_backup
    path = _object(store, manifest)
    raw = path.read_bytes()
    records = _records(raw)
    assert len(records) >= 4
    path.write_bytes(raw[:16] + b"".join(edit(list(records))))
    target = tmp_path / "restored" / "warehouse.duckdb"
    live = DuckDBWarehouse(tmp_path / "data" / "warehouse.duckdb")
    with pytest.raises(BackupIntegrityError, match=error) as caught:
        restore_backup(live, store, manifest["backup_id"], f"duckdb:///{target}")
    assert manifest["items"][-1]["name"] in str(caught.value)
    assert not target.exists() and not DuckDBWarehouse(target).merchants_dir.exists()
    with pytest.raises(BackupIntegrityError, match=manifest["items"][-1]["name"]):
        verify_backup(store, manifest["backup_id"])


def test_a_backup_with_row_checksums_from_before_file_checksums_still_restores(small_backup, tmp_path):
    """Backups made before file checksums hold a checksum of every table's rows and no file
    sha256: a restore hashes the rows again and compares those."""
    from illuma_pipelines.backups.core import duckdb_stats

    store, manifest = small_backup
    live = DuckDBWarehouse(tmp_path / "data" / "warehouse.duckdb")
    rows = {}
    with live.connect() as conn:
        rows.update(duckdb_stats(conn))
    with live.merchant_scope("tamper_test") as conn:
        rows.update(duckdb_stats(conn))

    def as_before(doc):
        for item in doc["items"]:
            del item["tags_sha256"]
        doc["tables"] = rows

    _resigned(store, manifest, as_before)
    target = tmp_path / "restored" / "warehouse.duckdb"
    assert restore_backup(live, store, manifest["backup_id"], f"duckdb:///{target}").ok

    def one_checksum_off(doc):
        doc["tables"]["m_tamper_test.registry_channel_connections"]["checksum"] = "1"

    _resigned(store, manifest, one_checksum_off)
    again = restore_backup(live, store, manifest["backup_id"], f"duckdb:///{target}", force=True)
    assert [m.split(":")[0] for m in again.mismatches] == ["m_tamper_test.registry_channel_connections"]


def test_a_stream_stage_hands_on_its_failure_and_stops_with_its_consumer():
    """`ahead` runs a stage on a thread: the producer's exception reaches the consumer, and a
    consumer that stops early stops (and closes) the producer."""
    import threading

    from illuma_pipelines.backups.crypto import ahead

    def failing():
        yield b"a"
        raise BackupIntegrityError("chunk 1 fails authentication")

    got = []
    with pytest.raises(BackupIntegrityError, match="chunk 1"):
        for block in ahead(failing()):
            got.append(block)
    assert got == [b"a"]

    closed = threading.Event()

    def endless():
        try:
            while True:
                yield b"x"
        finally:
            closed.set()

    stream = ahead(endless())
    assert next(stream) == b"x"
    stream.close()
    assert closed.wait(5)


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 3 * 4096, 3 * 4096 + 17])
def test_any_size_round_trips_and_ends_with_a_short_final_chunk(size, tmp_path):
    """Chunks are full but the last, which is short (empty when the size is a multiple of the
    chunk) and carries the final flag; a file read in whole chunks and a file's mapped bytes give
    the same format, and it decrypts from blocks, from a stream and from a mapped file alike."""
    import hashlib
    import io
    import mmap

    from illuma_pipelines.backups.crypto import (
        ChunkBuffers,
        ItemStats,
        decrypt_stream,
        encrypt_stream,
        tags_digest,
    )

    key, data, buffers = secrets.token_bytes(32), secrets.token_bytes(size), ChunkBuffers()
    backup_id = "wh-20260101T000000Z-000000"
    plain = tmp_path / "plain"
    plain.write_bytes(data)
    with plain.open("rb") as handle, contextlib.ExitStack() as stack:
        mapped = stack.enter_context(mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)) if size else io.BytesIO()
        for source in (io.BytesIO(data), mapped):
            stats = ItemStats()
            sealed = b"".join(bytes(b) for b in encrypt_stream(key, backup_id, "x", source, stats, 4096, buffers))
            assert len(stats.chunk_sha256) == size // 4096 + 1 and stats.plain_bytes == size
            assert stats.encrypted_bytes == len(sealed)
            assert stats.chunk_sha256 == [hashlib.sha256(r).hexdigest() for r in _records(sealed)]
            stored = tmp_path / "sealed"
            stored.write_bytes(sealed)
            for hashes in (True, False):
                for where in ([sealed], io.BytesIO(sealed), stored.open("rb", buffering=0)):
                    tags = tags_digest()
                    with contextlib.closing(where) if hasattr(where, "close") else contextlib.nullcontext():
                        back = b"".join(bytes(b) for b in decrypt_stream(
                            key, backup_id, "x", where, stats.chunk_sha256, buffers, 4096, tags=tags, hashes=hashes,
                        ))
                    assert back == data and tags.hexdigest() == stats.tags_sha256


def test_a_duckdb_backup_waits_for_a_file_in_use_and_copies_it_once_free(tmp_path):
    """Each file is attached (locked) while it is checkpointed, counted and copied: a file another
    connection holds is waited for, then backed up with what that connection wrote."""
    import threading
    import time

    import duckdb

    wh = DuckDBWarehouse(tmp_path / "data" / "warehouse.duckdb")
    wh.ensure_platform()
    add_merchant(wh, "busy_test")
    holder = duckdb.connect(str(wh.merchant_file("busy_test")))
    holder.execute("CREATE TABLE main.late (i INTEGER)")
    holder.execute("INSERT INTO main.late SELECT * FROM range(3)")
    released = threading.Timer(0.5, holder.close)
    released.start()
    started = time.monotonic()
    manifest = create_backup(wh, DirectoryStore(tmp_path / "backups"))
    released.join()
    assert time.monotonic() - started >= 0.4
    assert manifest["tables"]["m_busy_test.late"]["rows"] == 3
