"""The merchant data export (privacy policy §10) on both engines: a merchant built by the real
core assets from sandbox-rendered Amazon orders and the eBay documentation example, exported,
re-read and checked against the warehouse; PII, audit, expiry, deletion and the CLI."""

import hashlib
import io
import json
import re
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.core import core_orders
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines import normalize, retention
from illuma_pipelines.cli import main
from illuma_pipelines.core.tables import PII_COLUMNS
from illuma_pipelines.export import (
    BUYER_PII_TABLE,
    REVEAL_PURPOSE,
    ExportError,
    ExportVerificationError,
    delete_expired_exports,
    delete_merchant_exports,
    export_merchant,
    verify_export,
)
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.raw_records import RecordRule, raw_table, split_records
from illuma_pipelines.registry import (
    ChannelConnection,
    RegistryError,
    add_merchant,
    offboard_merchant,
)
from illuma_pipelines.sandbox.amazon import orders_created_on, render_order
from illuma_pipelines.sandbox.world import MerchantWorld
from illuma_pipelines.vault import (
    CIPHERTEXT_REGEX,
    CiphertextRejected,
    FileKeyStore,
    LocalKeyring,
    Vault,
    is_ciphertext,
)
from illuma_pipelines.vault.core import BatchRevealEvent
from illuma_pipelines.warehouse import IN_SCHEMA
from resources.amazon import DEFAULT_ORDER_DATASETS
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource
from tests.test_core_assets import _platform_rows, _rows

# The sandbox world renders Amazon orders as of AS_OF; every order of the week before is in one
# raw partition. The eBay documentation example is dated 2–4 March 2026 too.
AS_OF = datetime(2026, 3, 5, 12, tzinfo=UTC)
DAY = "2026-03-04"
SECRET_REF = "env:AMAZON_REFRESH_EXPORT_TEST"
EBAY_FIXTURE = Path(__file__).parent / "fixtures" / "ebay" / "ebay_getOrders_doc_shape.json"


@pytest.fixture(autouse=True)
def _local_dirs(tmp_path, monkeypatch):
    # Default export folder and key files under tmp_path, never the project's var/.
    monkeypatch.setenv("ILLUMA_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ILLUMA_DATA_DIR", str(tmp_path / "var" / "data"))
    monkeypatch.delenv("ILLUMA_MASTER_KEY", raising=False)


def _amazon_records() -> list[dict]:
    """Amazon orders of 26 Feb – 4 Mar that had shipped by AS_OF (their PII falls due 30 days after
    shipment), rendered by the sandbox in the Orders v2026-01-01 shape."""
    world = MerchantWorld(7, "export_world", date(2026, 2, 20))
    plans = [
        plan
        for offset in range(7)
        for plan in orders_created_on(world, date(2026, 2, 26) + timedelta(days=offset))
        if (plan.status_at(AS_OF) or ("",))[0] in ("SHIPPED", "DELIVERED")
    ]
    assert len(plans) > 10
    return [render_order(plan, AS_OF, frozenset(DEFAULT_ORDER_DATASETS)) for plan in plans]


def _ebay_records() -> list[dict]:
    return normalize.ebay.orders_from_response(normalize.loads(EBAY_FIXTURE.read_text()))


def _expected_pii(amazon: list[dict], ebay: list[dict]) -> dict[tuple[str, str], dict[str, str | None]]:
    pii = [*normalize.amazon.normalize_orders(amazon).pii, *normalize.ebay.normalize_orders(ebay).pii]
    return {(p.channel, p.marketplace_order_id): {c: getattr(p, c) for c in PII_COLUMNS} for p in pii}


def _build_merchant(warehouse, warehouse_url, mid):
    """Register the merchant, land raw extracts and materialize the core tables through the real
    `core_orders` asset, with the default vault (keys under ILLUMA_VAR_DIR, as the CLI finds them);
    add a dbt-style view. Returns the vault and the expected plaintext PII per order."""
    vault_res = VaultResource()
    add_merchant(
        warehouse,
        mid,
        display_name="Export Parts Co",
        channels={
            "amazon": ChannelConnection("amazon", SECRET_REF, ("ATVPDKIKX0DER",)),
            "ebay": ChannelConnection("ebay", f"sandbox:{mid}"),
        },
    )
    # An in-memory Dagster instance: these tests need the run, not its history.
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    schema = merchant_schema(mid)
    amazon, ebay = _amazon_records(), _ebay_records()
    with warehouse.merchant_scope(mid) as conn:
        for channel, records in (("amazon", amazon), ("ebay", ebay)):
            split = split_records(
                records, RecordRule(key_fields=("orderId",)), dataset=f"{channel}_orders",
                source=f"{channel}.orders", partition_date=DAY, window=(None, None),
                extracted_at=AS_OF, run_id="test",
            )
            conn.create_table(schema, raw_table(channel, "orders"))
            conn.load_frame(schema, f"raw_{channel}_orders", split.raw)
    result = dg.materialize(
        [core_orders],
        partition_key=merchant_date_key(mid, DAY),
        resources={"warehouse": WarehouseResource(url=warehouse_url), "vault": vault_res},
        instance=instance,
    )
    assert result.success
    with warehouse.merchant_scope(mid) as conn:
        conn.execute(
            f"CREATE VIEW {schema}.fct_orders_by_channel AS SELECT channel, count(*) AS orders, "
            f"sum(order_total) AS revenue FROM {schema}.core_orders GROUP BY channel"
        )
    return vault_res.get(warehouse), _expected_pii(amazon, ebay)


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _parquet_rows(data: bytes) -> list[dict]:
    return pq.read_table(io.BytesIO(data)).to_pylist()


def _details(value) -> dict:
    return value if isinstance(value, dict) else json.loads(value)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def test_export_round_trip_matches_the_warehouse_and_the_cli(
    warehouse, warehouse_url, merchant_id, tmp_path, monkeypatch, capsys
):
    mid = merchant_id("exp")
    schema = merchant_schema(mid)
    vault, expected_pii = _build_merchant(warehouse, warehouse_url, mid)

    result = export_merchant(warehouse, vault, mid, requested_by="support:alice", now=AS_OF)

    # One archive under data_dir()/exports/<id>/, private, hash recorded in platform.exports.
    assert result.path.parent == tmp_path / "var" / "data" / "exports" / mid
    assert result.path.stat().st_mode & 0o777 == 0o600
    assert not [p for p in result.path.parent.iterdir() if p != result.path]
    digest = hashlib.sha256(result.path.read_bytes()).hexdigest()
    ((path, sha, rows, created, expires, by, deleted),) = _platform_rows(
        warehouse,
        "SELECT path, sha256, row_count, created_at, expires_at, requested_by, deleted_at "
        "FROM platform.exports WHERE export_id = ?",
        [result.export_id],
    )
    assert (Path(path), sha, by, deleted) == (result.path, digest, "support:alice", None)
    assert result.sha256 == digest and created == AS_OF and expires == result.expires_at

    manifest = verify_export(result.path, sha256=sha)
    assert manifest["merchant_id"] == mid and manifest["policy_version"] == retention.POLICY_VERSION
    assert manifest["created_at"] == AS_OF.isoformat() and manifest["expires_at"] == expires.isoformat()
    assert rows == manifest["row_count"] == result.total_rows > 0

    # Every relation of the merchant's schema is there (tables and views), with the warehouse's
    # row counts and columns; each file's sha256 is the manifest's.
    relations = dict(
        _rows(warehouse, mid, f"SELECT table_name, table_type FROM information_schema.tables WHERE {IN_SCHEMA}", [schema, schema])
    )
    data = {t["name"]: t for t in manifest["tables"] if t["source"].startswith(f"{schema}.")}
    assert set(data) == set(relations)
    assert {"raw_amazon_orders", "raw_ebay_orders", "raw_quarantine", "core_orders", "core_order_lines",
            BUYER_PII_TABLE, "fct_orders_by_channel", "registry_channel_connections"} <= set(data)
    members = _members(result.path)
    for name, entry in data.items():
        (count,) = _rows(warehouse, mid, f"SELECT count(*) FROM {schema}.{name}")[0]
        columns = [c for (c,) in _rows(
            warehouse,
            mid,
            f"SELECT column_name FROM information_schema.columns WHERE table_name = ? AND {IN_SCHEMA} "
            "ORDER BY ordinal_position",
            [name, schema, schema],
        )]
        assert entry["row_count"] == count and entry["columns"] == columns, name
        assert set(entry["files"]) == {f"data/{name}.parquet", f"data/{name}.csv"}
        for member, meta in entry["files"].items():
            assert hashlib.sha256(members[member]).hexdigest() == meta["sha256"]
        assert result.row_counts[name] == count
    assert data["core_orders"]["row_count"] > 10 and data["fct_orders_by_channel"]["row_count"] == 2

    # Values survive the trip exactly (decimals, timestamps, dates), PII aside.
    for name in ("core_orders", "core_order_lines", "core_order_adjustments", "fct_orders_by_channel"):
        columns = data[name]["columns"]
        exported = sorted((tuple(r[c] for c in columns) for r in _parquet_rows(members[f"data/{name}.parquet"])), key=repr)
        stored = sorted(_rows(warehouse, mid, f"SELECT {', '.join(columns)} FROM {schema}.{name}"), key=repr)
        assert exported == stored, name

    # PII: decrypted for the merchant, equal to what the normalizers handed the vault; the other
    # columns are the warehouse's.
    pii_rows = _parquet_rows(members[f"data/{BUYER_PII_TABLE}.parquet"])
    assert {(r["channel"], r["marketplace_order_id"]): {c: r[c] for c in PII_COLUMNS} for r in pii_rows} == expected_pii
    stored_pii = _rows(warehouse, mid, f"SELECT {', '.join(PII_COLUMNS)} FROM {schema}.{BUYER_PII_TABLE}")
    ciphertexts = {v for row in stored_pii for v in row if v}
    assert ciphertexts and all(is_ciphertext(v) for v in ciphertexts)
    names = {v["buyer_name"] for v in expected_pii.values() if v["buyer_name"]}
    csv_text = members[f"data/{BUYER_PII_TABLE}.csv"].decode()
    assert names and all(name in csv_text for name in names)
    assert result.pii_values_revealed == len(ciphertexts) and result.pii_values_withheld == 0

    # No ciphertext and no credential reference anywhere in the archive.
    everything = b"\n".join(members.values()).decode("utf-8", "replace")
    assert not re.search(CIPHERTEXT_REGEX, everything)
    for value in ciphertexts:
        assert value not in everything
    assert "AMAZON_REFRESH_EXPORT_TEST" not in everything and "credential_ref" not in everything
    account = {t["name"]: t for t in manifest["tables"] if t["source"].startswith("platform.")}
    assert account["merchant"]["row_count"] == 1 and account["channel_connections"]["row_count"] == 2
    assert "credential_ref" not in account["channel_connections"]["columns"]
    (merchant_row,) = _parquet_rows(members["account/merchant.parquet"])
    assert merchant_row["display_name"] == "Export Parts Co"

    # Audit: one batch reveal and one export.created, by the requester, without PII; the rights
    # request is tracked with its 30-day deadline and completed.
    audit = _platform_rows(
        warehouse, "SELECT action, actor, details FROM platform.audit_log WHERE merchant_id = ? "
        "AND action IN ('pii.reveal', 'export.created')", [mid],
    )
    by_action = {a: (actor, _details(d)) for a, actor, d in audit}
    assert sorted(a for a, _, _ in audit) == ["export.created", "pii.reveal"]
    reveal_actor, reveal = by_action["pii.reveal"]
    assert (reveal_actor, reveal["purpose"], reveal["table"], reveal["values"]) == (
        "support:alice", REVEAL_PURPOSE, BUYER_PII_TABLE, len(ciphertexts))
    assert reveal["batch"] is True and reveal["records"] == len(expected_pii)
    created_actor, created_details = by_action["export.created"]
    assert created_actor == "support:alice"
    assert created_details["rows"] == rows and created_details["sha256"] == digest
    # Hex ids and digests are left out of the search: a postal code such as 59130 may occur in them
    # by chance.
    audit_text = re.sub(r"[0-9a-f]{16,}", "<hex>", " ".join(json.dumps(d, default=str) for _, d in by_action.values()))
    plaintexts = {v for pii in expected_pii.values() for v in pii.values() if v and len(v) > 3}
    assert not [v for v in plaintexts if v in audit_text]
    ((kind, received, deadline, completed, outcome, requester),) = _platform_rows(
        warehouse,
        "SELECT kind, received_at, deadline, completed_at, outcome, requested_by FROM platform.data_requests "
        "WHERE request_id = ?",
        [result.request_id],
    )
    assert (kind, received, completed, requester) == ("export", AS_OF, AS_OF, "support:alice")
    assert deadline == AS_OF + timedelta(days=30) and result.export_id in outcome

    # A changed byte, a dropped file or a wrong count is caught.
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(result.path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            body = src.read(name)
            if name == "data/core_orders.csv":
                body = body.replace(b"amazon", b"amazom", 1)
            dst.writestr(name, body)
    with pytest.raises(ExportVerificationError, match="core_orders.csv sha256"):
        verify_export(tampered)
    with pytest.raises(ExportVerificationError, match="archive sha256 differs"):
        verify_export(result.path, sha256="0" * 64)
    with zipfile.ZipFile(result.path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            body = src.read(name)
            if name == "manifest.json":
                doc = json.loads(body)
                next(t for t in doc["tables"] if t["name"] == "core_orders")["row_count"] += 1
                body = json.dumps(doc).encode()
            dst.writestr(name, body)
    with pytest.raises(ExportVerificationError, match=r"core_orders\.(csv|parquet) holds \d+ rows, the manifest says"):
        verify_export(tampered)


    # The same through the command line: the default folder and vault, the archive path, its
    # sha256, row counts and expiry printed; --out picks the folder; an unknown merchant is refused.
    monkeypatch.setenv("ILLUMA_WAREHOUSE_URL", warehouse_url)
    monkeypatch.delenv("ILLUMA_DATA_DIR")
    capsys.readouterr()
    assert main(["merchants", "export", mid, "--requested-by", "support:carol"]) == 0
    out = capsys.readouterr().out
    cli_path = Path(re.search(r"archive: (\S+)", out).group(1))
    assert cli_path.parent == result.path.parent and cli_path != result.path
    cli_manifest = verify_export(cli_path, sha256=re.search(r"sha256: ([0-9a-f]{64})", out).group(1))
    counts = {t["name"]: t["row_count"] for t in cli_manifest["tables"]}
    assert counts == {t["name"]: t["row_count"] for t in manifest["tables"]}
    assert f"core_orders {counts['core_orders']}" in " ".join(out.split())
    assert f"expires: {cli_manifest['expires_at'][:10]}" in out
    assert [r for (r,) in _platform_rows(
        warehouse, "SELECT requested_by FROM platform.exports WHERE merchant_id = ? ORDER BY created_at", [mid]
    )] == ["support:alice", "support:carol"]
    assert main(["merchants", "export", mid, "--out", str(tmp_path / "elsewhere")]) == 0
    assert len(list((tmp_path / "elsewhere").glob(f"{mid}-*.zip"))) == 1
    assert main(["merchants", "export", merchant_id("ghost")]) == 2
    assert "unknown merchant" in capsys.readouterr().err


def test_expiry_withholding_deletion_and_refusals(warehouse, warehouse_url, merchant_id, tmp_path):
    mid = merchant_id("expiry")
    schema = merchant_schema(mid)
    vault, _ = _build_merchant(warehouse, warehouse_url, mid)

    # Shipped last week: the exports rule (7 days) comes first.
    first = export_merchant(warehouse, vault, mid, requested_by="support:bob", now=AS_OF)
    assert first.expires_at == _midnight(AS_OF.date() + timedelta(days=7))

    # The day before: kept. On the day: deleted, audited, and a second run changes nothing.
    assert delete_expired_exports(warehouse, first.expires_at - timedelta(days=1), mid) == []
    assert first.path.exists()
    assert delete_expired_exports(warehouse, first.expires_at, mid) == [first.export_id]
    assert not first.path.exists()
    assert delete_expired_exports(warehouse, first.expires_at + timedelta(days=1), mid) == []
    ((deleted_at,),) = _platform_rows(warehouse, "SELECT deleted_at FROM platform.exports WHERE export_id = ?", [first.export_id])
    assert deleted_at == first.expires_at
    expired = _platform_rows(warehouse, "SELECT details FROM platform.audit_log WHERE action = 'export.expired' AND merchant_id = ?", [mid])
    assert [_details(d)["export_id"] for (d,) in expired] == [first.export_id]

    # 25 days after the earliest Amazon shipment, that order's PII is due in 5 days: sooner.
    ((shipped,),) = _rows(warehouse, mid, f"SELECT min(shipped_at) FROM {schema}.core_orders WHERE channel = 'amazon'")
    later = _midnight(shipped.astimezone(UTC).date() + timedelta(days=25)) + timedelta(hours=12)
    second = export_merchant(warehouse, vault, mid, requested_by="support:bob", now=later)
    assert second.expires_at == _midnight(shipped.astimezone(UTC).date() + timedelta(days=30))
    assert second.expires_at < later + timedelta(days=5)
    assert second.pii_values_withheld == 0

    # Once it is due, the export leaves that order's PII out instead of outliving the rule.
    overdue = second.expires_at + timedelta(hours=1)
    third = export_merchant(warehouse, vault, mid, requested_by="support:bob", now=overdue)
    assert third.pii_values_withheld > 0 and third.expires_at > overdue
    manifest = verify_export(third.path)
    assert manifest["pii"]["values_withheld_past_retention"] == third.pii_values_withheld
    early = {o for (o,) in _rows(
        warehouse, mid, f"SELECT marketplace_order_id FROM {schema}.core_orders WHERE channel = 'amazon' AND shipped_at < ?",
        [_midnight(shipped.astimezone(UTC).date() + timedelta(days=1))],
    )}
    pii_rows = _parquet_rows(_members(third.path)[f"data/{BUYER_PII_TABLE}.parquet"])
    assert early and all(
        all(r[c] is None for c in PII_COLUMNS) == (r["marketplace_order_id"] in early) for r in pii_rows
    )

    # A file already gone is not an error; the row is still closed.
    second.path.unlink()
    assert delete_expired_exports(warehouse, second.expires_at, mid) == [second.export_id]

    # A ciphertext outside the decrypted columns stops the export: nothing registered, no file.
    token = vault.encrypt(mid, "notes", "body", "n1", "Call Pat Buyer at 555-0100")
    with warehouse.merchant_scope(mid) as conn:
        conn.execute(f"CREATE TABLE {schema}.notes (body VARCHAR)")
        conn.execute(f"INSERT INTO {schema}.notes VALUES (?)", [token])
    out = tmp_path / "refused"
    before = _platform_rows(warehouse, "SELECT count(*) FROM platform.exports WHERE merchant_id = ?", [mid])
    with pytest.raises(ExportError, match=r"notes\.body holds a vault ciphertext"):
        export_merchant(warehouse, vault, mid, requested_by="support:bob", now=AS_OF, out_dir=out)
    assert _platform_rows(warehouse, "SELECT count(*) FROM platform.exports WHERE merchant_id = ?", [mid]) == before
    assert not list(out.iterdir())
    failed = _platform_rows(
        warehouse, "SELECT completed_at, outcome FROM platform.data_requests WHERE merchant_id = ? AND outcome LIKE 'failed%'", [mid]
    )
    assert failed == [(None, "failed: ExportError")]
    with warehouse.merchant_scope(mid) as conn:
        conn.execute(f"DROP TABLE {schema}.notes")
    # Encrypted PII without a vault, or a naive clock, is refused with what to do.
    with pytest.raises(ExportError, match="no vault was given"):
        export_merchant(warehouse, None, mid, requested_by="support:bob", now=AS_OF, out_dir=out)
    with pytest.raises(ExportError, match="timezone-aware"):
        export_merchant(warehouse, vault, mid, requested_by="support:bob", now=datetime(2026, 3, 5))
    assert not list(out.iterdir())

    # Offboarded merchants still export; erasure deletes every remaining file and leftovers.
    offboard_merchant(warehouse, mid)
    fourth = export_merchant(warehouse, vault, mid, requested_by="merchant:self", now=AS_OF)
    leftover = fourth.path.with_name(f".{fourth.path.name}.dead.partial")
    leftover.write_bytes(b"half an archive")
    assert delete_merchant_exports(warehouse, mid, AS_OF) == 2  # third and fourth
    assert not third.path.exists() and not fourth.path.parent.exists()
    assert delete_merchant_exports(warehouse, mid, AS_OF) == 0
    assert _platform_rows(warehouse, "SELECT count(*) FROM platform.exports WHERE merchant_id = ? AND deleted_at IS NULL", [mid]) == [(0,)]

    with pytest.raises(RegistryError, match="unknown merchant"):
        export_merchant(warehouse, vault, merchant_id("ghost"), requested_by="support:bob")


# ------------------------------------------------------------------------------- batch reveal


def _memory_vault(tmp_path, sink=None):
    events: list = []
    keyring = LocalKeyring.from_env("K", environ={"K": LocalKeyring.generate_master_key()})
    vault = Vault(FileKeyStore(tmp_path / "keys" / "ks.json"), keyring, audit_sink=sink or events.append)
    return vault, events


def test_batch_reveal_writes_one_audit_event_and_keeps_reveals_guarantees(tmp_path):
    vault, events = _memory_vault(tmp_path)
    ids = [f"amazon:{i}" for i in range(50)]
    names = [f"Buyer Number {i}" for i in range(50)]
    emails = [None if i % 5 == 0 else f"b{i}@example.com" for i in range(50)]
    name_ct = vault.encrypt_column("shop_a", "core_buyer_pii", "buyer_name", ids, names)
    email_ct = vault.encrypt_column("shop_a", "core_buyer_pii", "buyer_email", ids, emails)
    items = [*zip(ids, ["buyer_name"] * 50, name_ct, strict=True), *zip(ids, ["buyer_email"] * 50, email_ct, strict=True)]

    plain = vault.reveal_batch("shop_a", "core_buyer_pii", items, actor="support:a", purpose="export")
    assert plain == [*names, *emails]
    (event,) = events
    assert isinstance(event, BatchRevealEvent)
    details = event.as_dict()
    assert (details["actor"], details["purpose"], details["merchant_id"], details["table"]) == (
        "support:a", "export", "shop_a", "core_buyer_pii")
    assert (details["values"], details["records"], details["columns"], details["outcome"]) == (
        90, 50, ["buyer_email", "buyer_name"], "revealed")
    rendered = json.dumps(details)
    assert "Buyer Number" not in rendered and "example.com" not in rendered and "amazon:" not in rendered

    # Only None: nothing disclosed, no event.
    assert vault.reveal_batch("shop_a", "core_buyer_pii", [("amazon:0", "buyer_email", None)], actor="a", purpose="b") == [None]
    assert len(events) == 1
    # Actor and purpose are required; a bad binding is refused before anything is decrypted.
    with pytest.raises(ValueError, match="actor"):
        vault.reveal_batch("shop_a", "core_buyer_pii", items, actor=" ", purpose="b")
    with pytest.raises(ValueError, match="record id"):
        vault.reveal_batch("shop_a", "core_buyer_pii", [("", "buyer_name", name_ct[0])], actor="a", purpose="b")
    assert len(events) == 1
    # A ciphertext moved to another record fails the whole batch, audited with the error name.
    moved = [*items[:3], ("amazon:999", "buyer_name", name_ct[0])]
    with pytest.raises(CiphertextRejected):
        vault.reveal_batch("shop_a", "core_buyer_pii", moved, actor="a", purpose="b")
    assert events[-1].outcome == "CiphertextRejected" and len(events) == 2

    # If the audit sink fails, no value comes back.
    def broken(event):
        raise OSError("audit log unavailable")

    silent = Vault(FileKeyStore(tmp_path / "keys" / "ks.json"), vault._provider, audit_sink=broken)
    with pytest.raises(OSError, match="audit log unavailable"):
        silent.reveal_batch("shop_a", "core_buyer_pii", items, actor="a", purpose="b")
