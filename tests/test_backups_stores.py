"""Backup stores (an S3-compatible server started here, on 127.0.0.1), key-store backups and
rotation under the retention policy (ADR 0013)."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from illuma_pipelines.backups import (
    DirectoryStore,
    S3Store,
    create_backup,
    list_backups,
    restore_backup,
    verify_backup,
)
from illuma_pipelines.backups.keystore import backup_key_store, restore_key_store
from illuma_pipelines.backups.retention import due_backups, expire_backups, weekly_ids
from illuma_pipelines.registry import add_merchant
from illuma_pipelines.warehouse import DuckDBWarehouse

pytestmark = pytest.mark.usefixtures("backup_key")


@pytest.fixture
def s3_store():
    """A bucket on moto's S3 server, started on a free port of 127.0.0.1 and stopped after."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        client = boto3.client(
            "s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        )
        client.create_bucket(Bucket="illuma-backups")
        yield S3Store("illuma-backups", prefix="prod/", client=client)
    finally:
        server.stop()


@pytest.fixture
def duck(tmp_path):
    wh = DuckDBWarehouse(tmp_path / "var" / "data" / "warehouse.duckdb")
    wh.ensure_platform()
    add_merchant(wh, "s3_test_one")
    return wh


def test_a_backup_goes_to_s3_in_parts_and_comes_back(duck, s3_store, tmp_path):
    s3_store.PART_BYTES = 5 * 1024 * 1024  # S3's minimum part: the platform file needs several
    big = bytes(secrets.token_bytes(1024)) * (12 * 1024)  # 12 MiB through three parts
    s3_store.write("wh-20260101T000000Z-abcdef", "blob", [big[i:i + 65536] for i in range(0, len(big), 65536)])
    assert s3_store.read_bytes("wh-20260101T000000Z-abcdef", "blob") == big
    assert s3_store.incomplete_ids() == ["wh-20260101T000000Z-abcdef"]  # no manifest: never listed
    s3_store.delete("wh-20260101T000000Z-abcdef")

    manifest = create_backup(duck, s3_store)
    assert [b.backup_id for b in list_backups(s3_store)] == [manifest["backup_id"]]
    keys = [o["Key"] for o in s3_store.client.list_objects_v2(Bucket="illuma-backups")["Contents"]]
    assert all(k.startswith(f"prod/{manifest['backup_id']}/") for k in keys) and len(keys) == 3
    verify_backup(s3_store, manifest["backup_id"])
    restored = restore_backup(duck, s3_store, manifest["backup_id"], f"duckdb:///{tmp_path / 'r' / 'warehouse.duckdb'}")
    assert restored.ok and restored.tables_compared == len(manifest["tables"])
    s3_store.delete(manifest["backup_id"])
    assert list_backups(s3_store) == [] and "Contents" not in s3_store.client.list_objects_v2(Bucket="illuma-backups")


def test_rotation_keeps_dailies_a_week_and_weeklies_90_days():
    now = datetime(2026, 12, 7, 3, tzinfo=UTC)  # a Monday
    created = {f"wh-{(now - timedelta(days=d)):%Y%m%dT%H%M%SZ}-{d:06x}": now - timedelta(days=d) for d in range(0, 120)}
    due = due_backups(created, now)
    kept = sorted(set(created) - set(due))
    weekly = weekly_ids(created)
    # Everything of the last 7 days; older, only each ISO week's first (Mondays), never past 90 days.
    assert {b for b in kept if created[b] >= now - timedelta(days=6)} == {b for b in created if created[b] >= now - timedelta(days=6)}
    older = [created[b] for b in kept if created[b] < now - timedelta(days=7)]
    assert older and all(at.isoweekday() == 1 for at in older)
    assert all(at > now - timedelta(days=91) for at in created.values() if at in older)
    assert all(due[b] == "backups" for b in due if created[b] < now - timedelta(days=90))
    assert {due[b] for b in due} == {"backups", "backups_daily"}
    assert all(b not in due or created[b] < now - timedelta(days=89) for b in weekly)


def test_expiry_deletes_and_records_in_the_ledger(duck, tmp_path):
    store = DirectoryStore(tmp_path / "backups")
    old = create_backup(duck, store, now=datetime.now(UTC) - timedelta(days=100))
    recent = create_backup(duck, store)
    due = expire_backups(duck, store, datetime.now(UTC), run_id="rotation")
    assert due == {old["backup_id"]: "backups"}
    assert [b.backup_id for b in list_backups(store)] == [recent["backup_id"]]
    with duck.connect() as conn:
        rows = conn.fetchall("SELECT merchant_id, rule_id, target, action, run_id FROM platform.retention_ledger")
    assert rows == [("*", "backups", f"backup:{old['backup_id']}", "delete_backups", "rotation")]
    assert expire_backups(duck, store, datetime.now(UTC), run_id="again") == {}


def test_a_restored_key_store_never_brings_a_shredded_key_back(duck, tmp_path, vault_resource):
    from illuma_pipelines.shredding import purge_and_shred

    vault = vault_resource.get(duck)
    today = datetime.now(UTC).date()
    sealed = {}
    for label in (f"due:{today.isoformat()}", f"due:{(today + timedelta(days=20)).isoformat()}"):
        sealed[label] = vault.encrypt_column("s3_test_one", "core_buyer_pii", "buyer_name", ["amazon:1"], ["Ada"], label=label)[0]
    store = DirectoryStore(tmp_path / "backups")
    path = vault_resource.resolved_key_store_path()
    manifest = backup_key_store(store, path)
    assert b"wrapped_key" not in store.read_bytes(manifest["backup_id"], "keystore.json")
    purge_and_shred(duck, vault, "s3_test_one", now=datetime.now(UTC), run_id="purge")
    restored_path = tmp_path / "restored-keys" / "keystore.json"
    summary = restore_key_store(duck, store, manifest["backup_id"], restored_path, live_key_store=path)
    assert summary["destroyed_again"] == 1
    entries = json.loads(restored_path.read_text())["merchants"]["s3_test_one"]
    state = {e["label"]: e["wrapped_key"] is None for e in entries if e.get("label")}
    assert state == {f"due:{today.isoformat()}": True, f"due:{(today + timedelta(days=20)).isoformat()}": False}
    # Without the live key store (lost), the audit log and the labels' days still say which died.
    restored_path.unlink()
    assert restore_key_store(duck, store, manifest["backup_id"], restored_path)["destroyed_again"] == 1
    assert oct(restored_path.stat().st_mode & 0o777) == "0o600"


def test_every_placed_warehouse_is_backed_up_and_restored_on_its_own(tmp_path, monkeypatch):
    """With merchants placed in a named warehouse (ADR 0011), one backup holds main and it; each
    restores alone, and the erased merchant stays out of the named one too."""
    from illuma_pipelines import purge
    from illuma_pipelines.placement import open_warehouse
    from resources.vault import VaultResource

    monkeypatch.setenv("ILLUMA_WAREHOUSES", json.dumps({"east": f"duckdb:///{tmp_path / 'east' / 'east.duckdb'}"}))
    wh = open_warehouse(f"duckdb:///{tmp_path / 'var' / 'data' / 'warehouse.duckdb'}")
    wh.ensure_platform()
    add_merchant(wh, "placed_main")
    add_merchant(wh, "placed_east", placement="east")
    add_merchant(wh, "placed_gone", placement="east")
    store = DirectoryStore(tmp_path / "backups")
    manifest = create_backup(wh, store)
    assert set(manifest["warehouses"]) == {"main", "east"}
    assert manifest["warehouses"]["east"]["merchants"] == ["placed_east", "placed_gone"]
    assert {i["name"] for i in manifest["items"]} == {
        "platform.duckdb", "m_placed_main.duckdb", "east.m_placed_east.duckdb", "east.m_placed_gone.duckdb"}
    vault = VaultResource(key_store_path=str(tmp_path / "k" / "ks.json"), master_key_file=str(tmp_path / "k" / "m.key")).get(wh)
    purge.request_deletion(wh, "placed_gone", immediate=True, requested_by="merchant:ticket")
    purge.erase_account(wh, vault, "placed_gone", now=datetime.now(UTC), run_id="erase")

    main = restore_backup(wh, store, manifest["backup_id"], f"duckdb:///{tmp_path / 'r-main' / 'warehouse.duckdb'}")
    assert main.ok and main.excluded_merchants == []
    east_target = tmp_path / "r-east" / "east.duckdb"
    east = restore_backup(wh, store, manifest["backup_id"], f"duckdb:///{east_target}", warehouse="east")
    assert east.ok and east.excluded_merchants == ["placed_gone"] and east.notes
    restored = sorted(p.name for p in (tmp_path / "r-east").rglob("*.duckdb"))
    assert restored == ["m_placed_east.duckdb"]
    with pytest.raises(Exception, match="holds warehouse"):
        restore_backup(wh, store, manifest["backup_id"], f"duckdb:///{tmp_path / 'x.duckdb'}", warehouse="west")


def test_the_restore_check_restores_every_warehouse_of_the_backup(tmp_path, monkeypatch):
    from illuma_pipelines.backups import restore_check
    from illuma_pipelines.placement import open_warehouse

    monkeypatch.setenv("ILLUMA_WAREHOUSES", json.dumps({"east": f"duckdb:///{tmp_path / 'east' / 'east.duckdb'}"}))
    wh = open_warehouse(f"duckdb:///{tmp_path / 'var' / 'data' / 'warehouse.duckdb'}")
    wh.ensure_platform()
    add_merchant(wh, "check_main")
    add_merchant(wh, "check_east", placement="east")
    store = DirectoryStore(tmp_path / "backups")
    manifest = create_backup(wh, store)
    result = restore_check(wh, store)
    assert result.ok and result.tables_compared == len(manifest["tables"])
    assert any(k.startswith("east:") for k in manifest["tables"])
    leftovers = [p for p in (tmp_path / "var").iterdir() if p.name.startswith("illuma_restore_check")]
    assert leftovers == []
