"""Buyer PII sealed at landing and deleted by crypto-shredding (ADR 0007), judged from the bytes on
disk, on DuckDB and PostgreSQL: real sandbox data through the real extracts and core assets, then
the shredding purge."""

import re
import secrets
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import zstandard

from assets.core import core_assets
from assets.extracts import extract_assets
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines import normalize
from illuma_pipelines.core.tables import BUYER_PII, PII_COLUMNS
from illuma_pipelines.export import export_merchant
from illuma_pipelines.marketplaces import (
    CHANNELS,
    ORDER_DATASET,
    normalizer,
    raw_datasets,
    raw_table_name,
)
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.raw_records import QUARANTINE
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.sandbox.faults import FaultConfig
from illuma_pipelines.sandbox.server import SandboxClock, SandboxConfig, SandboxServer
from illuma_pipelines.sealing import (
    PAYLOAD_COLUMN,
    seal_payloads,
    unseal_payloads,
    unsealed_pii_keys,
)
from illuma_pipelines.shredding import labels_to_destroy, purge_and_shred
from illuma_pipelines.vault import CIPHERTEXT_PATTERN, FileKeyStore, KeyDestroyed, Vault
from illuma_pipelines.warehouse import PLATFORM_SCHEMA, Warehouse
from resources import sandbox_clients
from resources.warehouse import WarehouseResource
from tests.conftest import admin_dsn
from tests.sandbox_helpers import sandbox_now

LOOKBACK = {"ops": {a.op.name: {"config": {"lookback_hours": 2}} for a in extract_assets}}
ACTOR = "pipeline:tests"


def _rows(warehouse, mid, sql, params=()):
    """The rows of a query on `mid`'s tables, in that merchant's scope."""
    with warehouse.merchant_scope(mid) as conn:
        return conn.fetchall(sql, params)


def _land(warehouse, warehouse_url, instance, vault_resource, mid, *, faults=None):
    """A day of real sandbox data for `mid` through every extract and the core assets."""
    add_merchant(warehouse, mid, channels={c: ChannelConnection(c, f"sandbox:{mid}") for c in CHANNELS})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    now = sandbox_now()
    day = (now - timedelta(days=3)).date()
    t1 = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1, minutes=10)
    config = SandboxConfig(
        seed=17, clock=SandboxClock.fixed_at(t1), history_start=day - timedelta(days=60),
        faults=faults or FaultConfig(),
    )
    with SandboxServer(config) as sandbox:
        result = dg.materialize(
            [*extract_assets, *core_assets],
            partition_key=merchant_date_key(mid, day.isoformat()),
            resources={"warehouse": WarehouseResource(url=warehouse_url), "vault": vault_resource,
                       **sandbox_clients(sandbox.base_url)},
            instance=instance,
            run_config=LOOKBACK,
        )
    assert result.success
    return day, t1


def _pii_values(warehouse, vault, mid):
    """(channel, order id) -> identifying PII values of each order, read from the sealed raw
    payloads through the vault and the normalizers (postal codes left out: they collide with part
    numbers)."""
    schema = merchant_schema(mid)
    out: dict[tuple[str, str], set[str]] = {}
    for channel in CHANNELS:
        table = raw_table_name(channel, ORDER_DATASET)
        rows = _rows(warehouse, mid, f"SELECT record_key, CAST(payload AS TEXT) FROM {schema}.{table}")
        texts = unseal_payloads(vault, mid, table, channel, rows, actor=ACTOR, purpose="test")
        for pii in normalizer(channel).normalize_orders([normalize.loads(t) for t in texts]).pii:
            values = {pii.buyer_name, pii.ship_name, pii.buyer_email, pii.buyer_phone, pii.address_line1}
            out.setdefault((channel, pii.marketplace_order_id), set()).update(v for v in values if v and len(v) >= 6)
    return out


def _checkpointed_duckdb_file(warehouse: Warehouse, mid: str | None) -> Path:
    """The DuckDB file of merchant `mid` (None: the platform's), its WAL written into it."""
    scope = warehouse.merchant_scope(mid) if mid else warehouse.connect()
    with scope as conn:
        conn.execute("CHECKPOINT")
    return warehouse.merchant_file(mid) if mid else warehouse.path


@dataclass(frozen=True)
class _WalSlice:
    """Bytes `start` to `end` of a PostgreSQL WAL segment file."""

    path: Path
    start: int
    end: int

    def read_bytes(self) -> bytes:
        with self.path.open("rb") as f:
            f.seek(self.start)
            return f.read(self.end - self.start)

    def __str__(self) -> str:
        return f"{self.path}[{self.start}:{self.end}]"


class _WalSince:
    """The PostgreSQL WAL written from now on, kept on disk under its own segment names by a
    temporary replication slot (dropped with the admin session that holds it).

    The WAL is the whole server's: segments written before the test, recycled under later names,
    still hold other databases' (and other tests') plaintext, such as sandbox buyer names drawn
    from the same pools. Everything of a merchant created after `start` is in the WAL from
    `start` on, and the slot keeps those segments from being recycled, so scanning that range
    scans every WAL byte the merchant's data can be in, and nothing older.
    """

    def __init__(self, con) -> None:
        self._con = con
        (self.start,) = con.execute(
            "SELECT lsn - '0/0' FROM pg_create_physical_replication_slot(%s, true, true)",
            [f"illuma_test_{secrets.token_hex(4)}"],
        ).fetchone()
        (data_dir,) = con.execute("SELECT current_setting('data_directory')").fetchone()
        self.dir = Path(data_dir) / "pg_wal"
        (self.segment,) = con.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'").fetchone()
        (self.timeline,) = con.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()

    def slices(self) -> list[_WalSlice]:
        """The WAL from `start` to the current end, by segment file."""
        (end,) = self._con.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone()
        per_id = 0x1_0000_0000 // self.segment
        out = []
        for number in range(int(self.start) // self.segment, (int(end) - 1) // self.segment + 1):
            base = number * self.segment
            path = self.dir / f"{self.timeline:08X}{number // per_id:08X}{number % per_id:08X}"
            assert path.is_file(), f"WAL segment {path} is missing though the slot keeps it"
            out.append(_WalSlice(path, max(int(self.start), base) - base, min(int(end), base + self.segment) - base))
        return out


@pytest.fixture
def wal(warehouse) -> Iterator[_WalSince | None]:
    """On PostgreSQL, the WAL written during the test (see _WalSince); None on DuckDB."""
    if warehouse.dialect != "postgres":
        yield None
        return
    with psycopg.connect(admin_dsn(warehouse.url), autocommit=True) as con:
        yield _WalSince(con)


def _data_files(warehouse: Warehouse, mid: str | None, wal: _WalSince | None) -> list[Path | _WalSlice]:
    """Every file the engine keeps merchant `mid`'s data in (None: the platform's): its DuckDB
    file and that file's WAL, or the PostgreSQL relation files (tables and their TOAST) of its
    schema and the WAL written since `wal` began. Found on PostgreSQL through the admin login (the
    pipeline's may neither checkpoint nor read the data directory's path)."""
    if warehouse.dialect == "duckdb":
        path = _checkpointed_duckdb_file(warehouse, mid)
        return [p for p in (path, Path(f"{path}.wal")) if p.exists()]
    schema = merchant_schema(mid) if mid else PLATFORM_SCHEMA
    with psycopg.connect(admin_dsn(warehouse.url), autocommit=True) as con:
        con.execute("CHECKPOINT")
        (data_dir,) = con.execute("SELECT current_setting('data_directory')").fetchone()
        rels = con.execute(
            "SELECT pg_relation_filepath(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND pg_relation_filepath(c.oid) IS NOT NULL "
            "UNION SELECT pg_relation_filepath(c.reltoastrelid) FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.reltoastrelid <> 0",
            [schema, schema],
        ).fetchall()
    assert rels, f"no relation files found for schema {schema}"
    files = [f for (rel,) in rels for f in Path(data_dir).glob(f"{rel}*") if f.is_file()]
    return [*files, *wal.slices()]


def _all_data_files(warehouse: Warehouse, mid: str, wal: _WalSince | None) -> list[Path | _WalSlice]:
    """The merchant's files and the platform's: every place its PII could have been written to."""
    return sorted(set(_data_files(warehouse, mid, wal)) | set(_data_files(warehouse, None, wal)), key=str)


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _readable_bytes(path: Path | _WalSlice) -> bytes:
    """A file's bytes as an attacker reads them: as stored, plus every zstd frame in it
    decompressed (DuckDB stores JSON columns zstd-compressed)."""
    data = path.read_bytes()
    parts = [data]
    start = data.find(_ZSTD_MAGIC)
    while start != -1:
        try:
            parts.append(zstandard.ZstdDecompressor().decompressobj().decompress(data[start : start + 4 * 1024 * 1024]))
        except zstandard.ZstdError:
            pass
        start = data.find(_ZSTD_MAGIC, start + 4)
    return b"\n".join(parts)


def _found_in(files: list[Path | _WalSlice], values: set[str]) -> dict[str, list[str]]:
    """Each of `values` found in the files, with the files it is in."""
    found: dict[str, list[str]] = {}
    for path in files:
        data = _readable_bytes(path)
        for v in values:
            if v.encode() in data:
                found.setdefault(v, []).append(str(path))
    return found


def _sealed_copies(warehouse, mid):
    """Every sealed value of the merchant's schema with its binding: (table, record id, column,
    ciphertext, order key or None)."""
    schema = merchant_schema(mid)
    out = []
    for channel, order_id, *values in _rows(
        warehouse, mid, f"SELECT channel, marketplace_order_id, {', '.join(PII_COLUMNS)} FROM {schema}.{BUYER_PII.name}"
    ):
        out += [(BUYER_PII.name, f"{channel}:{order_id}", c, v, (channel, order_id))
                for c, v in zip(PII_COLUMNS, values, strict=True) if v]
    pattern = re.compile(r'"([^"]+)"\s*:\s*"(' + CIPHERTEXT_PATTERN.pattern + ')"')
    for channel, dataset in raw_datasets(may_name_buyer=True):
        table = raw_table_name(channel, dataset)
        for key, text in _rows(warehouse, mid, f"SELECT record_key, CAST(payload AS TEXT) FROM {schema}.{table}"):
            order = (channel, key) if dataset == ORDER_DATASET else None
            out += [(table, f"{key}/{m.group(1)}", PAYLOAD_COLUMN, m.group(2), order) for m in pattern.finditer(text)]
    return out


def test_labels_fall_due_on_their_day():
    today = date(2027, 1, 10)
    labels = ["due:2027-01-09", "due:2027-01-10", "due:2027-01-11", "hold:2027-01-09", "hold:2027-01-10", "other:x"]
    assert labels_to_destroy(labels, today) == ["due:2027-01-09", "due:2027-01-10", "hold:2027-01-09"]


def test_sealing_keeps_every_other_byte_and_binds_each_value(warehouse, merchant_id, vault_resource):
    mid = merchant_id("seal")
    add_merchant(warehouse, mid)
    vault = vault_resource.get(warehouse)
    text = (
        '{"orderId":"113-1","buyer":{"buyerName":"Zoë \\"Z\\" Quinn","buyerEmail":"zq@example.com"},'
        '"amount":12.50,"qty":3,"note":null,"city":"","recipient":{"deliveryAddress":{"city":"Boise"}}}'
    )
    sealed = seal_payloads(vault, mid, "raw_amazon_orders", "amazon", [("113-1", text)], label="hold:2027-01-10")
    (out,) = sealed.texts
    assert sealed.values == 3 and sealed.key_versions[0] is not None
    assert "Quinn" not in out and "zq@example.com" not in out and "Boise" not in out
    assert '"amount":12.50,"qty":3,"note":null,"city":""' in out and unsealed_pii_keys("amazon", out) == []
    # Sealing is idempotent, and unsealing gives the original text back byte for byte.
    again = seal_payloads(vault, mid, "raw_amazon_orders", "amazon", [("113-1", out)], label="hold:2027-01-10")
    assert again.texts == [out] and again.values == 0
    assert unseal_payloads(vault, mid, "raw_amazon_orders", "amazon", [("113-1", out)], actor=ACTOR, purpose="t") == [text]
    # Bound to the record: the same payload under another record id does not open.
    with pytest.raises(Exception, match="failed authentication"):
        unseal_payloads(vault, mid, "raw_amazon_orders", "amazon", [("113-2", out)], actor=ACTOR, purpose="t")


def test_pii_is_sealed_at_landing_and_never_on_disk_in_clear(
    warehouse, warehouse_url, merchant_id, instance, vault_resource, tmp_path, wal
):
    mid = merchant_id("land")
    faults = FaultConfig(malformed_record=0.3, seed=3)
    _land(warehouse, warehouse_url, instance, vault_resource, mid, faults=faults)
    vault = vault_resource.get(warehouse)
    schema = merchant_schema(mid)
    per_order = _pii_values(warehouse, vault, mid)
    values = set().union(*per_order.values())
    assert len(values) > 20
    # Every PII field of every raw payload and quarantine copy is a ciphertext.
    for channel, dataset in raw_datasets(may_name_buyer=True):
        table = raw_table_name(channel, dataset)
        with warehouse.merchant_scope(mid) as conn:
            texts = conn.fetchall(f"SELECT CAST(payload AS TEXT) FROM {schema}.{table}") if conn.table_exists(schema, table) else []
        for (text,) in texts:
            assert unsealed_pii_keys(channel, text) == [], table
    quarantined = _rows(warehouse, mid, f"SELECT source, payload FROM {schema}.{QUARANTINE.name} WHERE payload IS NOT NULL")
    assert quarantined, "the injected malformed records should be quarantined"
    for source, text in quarantined:
        assert unsealed_pii_keys(source.split(".")[0], text) == []
    # No plaintext value in the engine's files (the merchant's and the platform's), though the
    # scan reads what is there: the order ids, stored in clear in the same payloads, are found in
    # the merchant's own files.
    order_ids = {order_id for _, order_id in per_order}
    assert len(_found_in(_data_files(warehouse, mid, wal), order_ids)) > len(order_ids) // 2
    assert _found_in(_all_data_files(warehouse, mid, wal), values) == {}

    # The merchant's own export opens the sealed fields (audited) and carries no ciphertext.
    exported = export_merchant(warehouse, vault, mid, requested_by="support:test", out_dir=tmp_path / "exports")
    with zipfile.ZipFile(exported.path) as zf:
        raw_csv = "".join(zf.read(n).decode() for n in zf.namelist() if n.startswith("data/raw_") and n.endswith(".csv"))
    assert not CIPHERTEXT_PATTERN.search(raw_csv)
    assert any(value in raw_csv for value in values)


def test_a_purge_leaves_purged_pii_undecryptable_everywhere(
    warehouse, warehouse_url, merchant_id, instance, vault_resource, tmp_path, wal
):
    mid = merchant_id("shred")
    day, t1 = _land(warehouse, warehouse_url, instance, vault_resource, mid)
    vault = vault_resource.get(warehouse)
    schema = merchant_schema(mid)
    per_order = _pii_values(warehouse, vault, mid)
    # A backup-like copy of every sealed value before the purge (the DuckDB file itself, too).
    before = _sealed_copies(warehouse, mid)
    assert before
    backup = None
    if warehouse.dialect == "duckdb":
        # The merchant's file, restored as the merchant's file of another warehouse.
        backup = Warehouse.from_url(f"duckdb:///{tmp_path / 'backup' / 'warehouse.duckdb'}")
        backup.merchant_file(mid).parent.mkdir(parents=True)
        shutil.copy(_checkpointed_duckdb_file(warehouse, mid), backup.merchant_file(mid))

    # First purge at t1: nothing is due yet; every value moves from its hold key to its due key
    # (or today's hold key while its order has no due day).
    result, shred = purge_and_shred(warehouse, vault, mid, now=t1, run_id="r1")
    assert result.total == 0 and shred.metadata()["values_resealed"] > 0
    resealed = _sealed_copies(warehouse, mid)
    used = {vault.key_label(mid, int(c.split(".")[1])) for *_, c, _ in resealed}
    assert any(label.startswith("due:") for label in used)
    assert all(label.startswith("due:") or label == f"hold:{t1.date().isoformat()}" for label in used), used

    # A year on: every dated order's PII is due. The purge deletes and redacts it and destroys
    # the keys, so every earlier copy of it fails to decrypt, wherever it is.
    later = t1 + timedelta(days=365)
    result, shred = purge_and_shred(warehouse, vault, mid, now=later, run_id="r2")
    assert result.total > 0 and shred.metadata()["keys_destroyed"] > 0
    surviving = {
        (c, o) for c, o in _rows(warehouse, mid, f"SELECT channel, marketplace_order_id FROM {schema}.{BUYER_PII.name}")
    }
    purged_orders = set(per_order) - surviving
    assert purged_orders
    # Every copy is tried on its own (a batch stops at its first destroyed key), through a vault
    # on the same key store and master key that audits into a list: the pipeline's vault writes
    # an audit row per call, a DuckDB connection each, a thousand times here. The pipeline's own
    # vault is checked on the first copy and on the survivors' batch.
    audited = []
    quiet = Vault(
        FileKeyStore(vault_resource.resolved_key_store_path()), vault_resource._keyring(), audit_sink=audited.append
    )
    dead_copies = [c for c in before + resealed if c[4] is None or c[4] not in surviving]
    assert dead_copies
    table, record_id, column, ciphertext, _ = dead_copies[0]
    with pytest.raises(KeyDestroyed):
        vault.reveal_batch(mid, table, [(record_id, column, ciphertext)], actor=ACTOR, purpose="shred test")
    for table, record_id, column, ciphertext, _ in dead_copies:
        with pytest.raises(KeyDestroyed):
            quiet.reveal_batch(mid, table, [(record_id, column, ciphertext)], actor=ACTOR, purpose="shred test")
    assert len(audited) == len(dead_copies)
    by_table = {}
    for table, record_id, column, ciphertext, _ in _sealed_copies(warehouse, mid):
        by_table.setdefault(table, []).append((record_id, column, ciphertext))
    assert by_table
    for table, items in by_table.items():
        plains = vault.reveal_batch(mid, table, items, actor=ACTOR, purpose="shred test")
        assert len(plains) == len(items) and all(plains)
    # Nothing of a purged order is left in clear in the files, and no live key is older than the
    # rotation period.
    purged_values = set().union(*(per_order[o] for o in purged_orders))
    assert _found_in(_all_data_files(warehouse, mid, wal), purged_values) == {}
    assert all(label.startswith(("due:", "hold:")) for label in vault.live_labels(mid))
    if backup is not None:
        # The backup file still holds the old ciphertexts; the keys that opened them are gone.
        old = _rows(
            backup,
            mid,
            f"SELECT channel, marketplace_order_id, buyer_name FROM {schema}.{BUYER_PII.name} WHERE buyer_name IS NOT NULL",
        )
        dead = [(c, o, v) for c, o, v in old if (c, o) in purged_orders]
        assert dead
        for channel, order_id, value in dead:
            with pytest.raises(KeyDestroyed):
                vault.reveal(mid, BUYER_PII.name, "buyer_name", f"{channel}:{order_id}", value, actor=ACTOR, purpose="t")


def test_landing_seals_while_writing_and_keeps_every_other_byte(tmp_path):
    """The extract's own path (`split_records` with the sealers): opening the sealed rows gives
    back exactly the text the record would have landed as in clear, exact decimals included; the
    quarantine copy of a bad record is sealed too, bound to its own row."""
    from decimal import Decimal

    from illuma_pipelines.raw_records import RecordRule, dumps_payload, split_records
    from illuma_pipelines.retention import DEFAULT_POLICY
    from illuma_pipelines.shredding import extract_sealers
    from illuma_pipelines.vault import FileKeyStore, LocalKeyring, Vault

    vault = Vault(FileKeyStore(tmp_path / "ks.json"), LocalKeyring([b"k" * 32]), audit_sink=lambda event: None)
    mid, now = "acme_seal", datetime(2026, 11, 26, 10, tzinfo=UTC)
    records = [
        {"orderId": "113-1", "lastUpdatedTime": "2026-11-26T09:00:00Z",
         "buyer": {"buyerName": "Zoë \"Z\" Quinn", "buyerEmail": "zq@example.com"},
         "orderItems": [{"quantityOrdered": 3, "itemPrice": {"amount": Decimal("36.00")},
                         "promotionDiscount": {"amount": Decimal("-4.50")}}],
         "recipient": {"deliveryAddress": {"name": "Zoe Quinn", "city": "Boise", "addressLine2": ""}},
         "extra": {"name": 7, "nested": [{"phone": "+1 208 555 0100"}]}},
        {"lastUpdatedTime": "2026-11-26T09:00:00Z", "buyer": {"buyerName": "No Id"}},  # quarantined
    ]
    sealer, quarantine_sealer = extract_sealers(vault, mid, "amazon", "orders", policy=DEFAULT_POLICY, extracted_at=now)
    split = split_records(
        records, RecordRule(key_fields=("orderId",), required=("orderId",)), dataset="amazon_orders",
        source="amazon.searchOrders", partition_date="2026-11-26", window=(now, now), extracted_at=now, run_id="r",
        sealer=sealer, quarantine_sealer=quarantine_sealer,
    )
    (text,) = split.raw["payload"].tolist()
    assert split.sealed == 6 and unsealed_pii_keys("amazon", text) == []
    assert "Quinn" not in text and "555 0100" not in text and '"name":7' in text and '"amount":-4.50' in text
    opened = unseal_payloads(vault, mid, "raw_amazon_orders", "amazon", [("113-1", text)], actor=ACTOR, purpose="t")
    assert opened == [dumps_payload(records[0])]
    assert split.raw["pii_key_version"].tolist() == [vault.ensure_key(mid, "hold:2026-11-26")]
    (bad,) = split.quarantine["payload"].tolist()
    assert "No Id" not in bad
    opened_bad = unseal_payloads(
        vault, mid, QUARANTINE.name, "amazon", [("amazon_orders/2026-11-26/1", bad)], actor=ACTOR, purpose="t"
    )
    assert opened_bad == [dumps_payload(records[1])]


def test_a_value_whose_key_was_destroyed_opens_as_null(warehouse, merchant_id, vault_resource):
    """What the purge shredded is gone for the pipeline too: reading such a payload gives null
    for the value, the rest of the record as it was, instead of failing the reader."""
    mid = merchant_id("gone")
    add_merchant(warehouse, mid)
    vault = vault_resource.get(warehouse)
    text = '{"orderId":"113-9","buyer":{"buyerName":"Ann Lee"},"qty":2}'
    (sealed,) = seal_payloads(vault, mid, "raw_amazon_orders", "amazon", [("113-9", text)], label="due:2027-01-10").texts
    assert vault.destroy_labelled_keys(mid, ["due:2027-01-10"])
    (opened,) = unseal_payloads(vault, mid, "raw_amazon_orders", "amazon", [("113-9", sealed)], actor=ACTOR, purpose="t")
    assert opened == '{"orderId":"113-9","buyer":{"buyerName":null},"qty":2}'
