"""Core assets through the real sandbox, the real clients and the real extracts, on both engines."""

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from assets.core import core_assets
from assets.extracts import day_window, extract_assets
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines import normalize
from illuma_pipelines.core.inventory import master_parts_from_ebay, snapshot_rows
from illuma_pipelines.core.orders import is_newer_or_same
from illuma_pipelines.core.tables import (
    BUYER_PII,
    INVENTORY_SNAPSHOTS,
    ORDER_ADJUSTMENTS,
    ORDER_LINES,
    ORDER_STATUS_HISTORY,
    ORDERS,
    PII_COLUMNS,
)
from illuma_pipelines.key_rotation import ROTATION_ACTION, rotate_merchant_keys
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.sandbox.ebay import (
    order_plans_modified_between as ebay_order_plans_modified_between,
)
from illuma_pipelines.sandbox.server import SandboxClock, SandboxConfig, SandboxServer, SandboxState
from illuma_pipelines.sealing import unseal_payloads
from illuma_pipelines.vault import FileKeyStore, LocalKeyring, Vault, is_ciphertext, key_version
from illuma_pipelines.warehouse import IN_SCHEMA, PLATFORM_SCHEMA
from resources import sandbox_clients
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource
from sensors.keys import key_rotation_job, key_rotation_schedule
from tests.sandbox_helpers import clear_of_midnight, merchant_where, sandbox_now

CHANNELS = ("amazon", "ebay", "walmart")
EXTRACTS = [a for a in extract_assets if a.key.path[-1] in {f"{c}_{d}" for c in CHANNELS for d in ("orders", "inventory")}]
ORDER_EXTRACTS = [a for a in EXTRACTS if a.key.path[-1].endswith("_orders")]
# Ten days of order updates per partition: refunds and cancellations in most merchants' data.
LOOKBACK_HOURS = 240
LOOKBACK = {"ops": {a.op.name: {"config": {"lookback_hours": LOOKBACK_HOURS}} for a in ORDER_EXTRACTS}}


def _vault_resource(tmp_path) -> VaultResource:
    keys = tmp_path / "keys"
    return VaultResource(key_store_path=str(keys / "keystore.json"), master_key_file=str(keys / "master.key"))


def _materialize(instance, url, base_url, vault, merchant_id, day):
    result = dg.materialize(
        [*EXTRACTS, *core_assets],
        partition_key=merchant_date_key(merchant_id, day),
        resources={"warehouse": WarehouseResource(url=url), "vault": vault, **sandbox_clients(base_url)},
        instance=instance,
        run_config=LOOKBACK,
    )
    assert result.success
    return result


def _rows(warehouse, merchant_id, sql, params=()):
    """The rows of a query on `merchant_id`'s tables, in that merchant's scope."""
    with warehouse.merchant_scope(merchant_id) as conn:
        return conn.fetchall(sql, params)


def _platform_rows(warehouse, sql, params=()):
    """The rows of a query on the platform schema, on the platform connection."""
    with warehouse.connect() as conn:
        return conn.fetchall(sql, params)


def _current_orders(warehouse, mid):
    schema = merchant_schema(mid)
    return {
        (c, o): (s, u)
        for c, o, s, u in _rows(
            warehouse, mid, f"SELECT channel, marketplace_order_id, status, last_updated_at FROM {schema}.{ORDERS.name}"
        )
    }


def _assert_one_current_row_per_order(warehouse, mid):
    schema = merchant_schema(mid)
    total, distinct = _rows(
        warehouse,
        mid,
        f"SELECT count(*), count(DISTINCT channel || ':' || marketplace_order_id) FROM {schema}.{ORDERS.name}",
    )[0]
    assert total == distinct > 0
    (orphans,) = _rows(
        warehouse,
        mid,
        f"SELECT count(*) FROM {schema}.{ORDER_LINES.name} l LEFT JOIN {schema}.{ORDERS.name} o "
        "ON o.channel = l.channel AND o.marketplace_order_id = l.marketplace_order_id "
        "WHERE o.marketplace_order_id IS NULL",
    )[0]
    assert orphans == 0


def _table_counts(warehouse, mid):
    schema = merchant_schema(mid)
    return {
        spec.name: _rows(warehouse, mid, f"SELECT count(*) FROM {schema}.{spec.name}")[0][0]
        for spec in (ORDERS, ORDER_LINES, ORDER_ADJUSTMENTS, ORDER_STATUS_HISTORY, BUYER_PII)
    }


def _buyer_pii_from_raw(warehouse, schema, vault):
    """Every buyer PII value the raw order payloads hold (sealed at landing: opened through the
    vault), found with the normalizers themselves."""
    values: set[str] = set()
    names: set[str] = set()
    mid = schema.removeprefix("m_")
    for channel in CHANNELS:
        table = f"raw_{channel}_orders"
        rows = _rows(warehouse, mid, f"SELECT record_key, CAST(payload AS TEXT) FROM {schema}.{table}")
        texts = unseal_payloads(vault, mid, table, channel, rows, actor="pipeline:tests", purpose="find the landed PII")
        payloads = [normalize.loads(text) for text in texts]
        for pii in getattr(normalize, channel).normalize_orders(payloads).pii:
            names.update(v for v in (pii.buyer_name, pii.ship_name) if v)
            # Not postal codes: five digits collide with part numbers (an MPN of 12253 failed this).
            values.update(v for v in (pii.buyer_email, pii.buyer_phone, pii.address_line1) if v)
    return names, values


def _schema_text_cells(conn, schema):
    """Every text value of every non-raw table of `schema` that `conn` reaches (JSON cast to text)."""
    tables = conn.fetchall(
        f"SELECT table_name FROM information_schema.tables WHERE {IN_SCHEMA} "
        "AND table_name NOT LIKE 'raw\\_%' ESCAPE '\\'",
        [schema, schema],
    )
    assert tables, f"no tables found in {schema}"
    cells = []
    for (table,) in tables:
        columns = [
            c
            for c, t in conn.fetchall(
                f"SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? AND {IN_SCHEMA}",
                [table, schema, schema],
            )
            if t.upper() in ("VARCHAR", "TEXT", "JSON", "JSONB", "CHARACTER VARYING")
        ]
        for column in columns:
            cells += [
                (f"{schema}.{table}.{column}", v)
                for (v,) in conn.fetchall(f"SELECT CAST({column} AS TEXT) FROM {schema}.{table}")
                if v
            ]
    return cells


def _text_cells(warehouse, merchant_id):
    """Every text value of every non-raw table of the merchant (read in its scope) and of the
    platform schema (on the platform connection)."""
    with warehouse.merchant_scope(merchant_id) as conn:
        cells = _schema_text_cells(conn, merchant_schema(merchant_id))
    with warehouse.connect() as conn:
        return cells + _schema_text_cells(conn, PLATFORM_SCHEMA)


def _in_memory_audit_vault(vault_res: VaultResource) -> tuple[Vault, list]:
    """The same key store and master key, auditing into a list: revealing every value through the
    warehouse audit log would open a connection per value."""
    events: list = []
    keyring = LocalKeyring.from_file(vault_res.resolved_master_key_file())
    return Vault(FileKeyStore(vault_res.resolved_key_store_path()), keyring, audit_sink=events.append), events


def _reveal_all(vault, warehouse, merchant_id):
    rows = _rows(
        warehouse,
        merchant_id,
        f"SELECT channel, marketplace_order_id, {', '.join(PII_COLUMNS)} FROM {merchant_schema(merchant_id)}.{BUYER_PII.name}",
    )
    revealed = []
    for row in rows:
        record_id = f"{row[0]}:{row[1]}"
        for column, value in zip(PII_COLUMNS, row[2:], strict=True):
            if value is not None:
                plain = vault.reveal(
                    merchant_id, BUYER_PII.name, column, record_id, value, actor="test", purpose="core test"
                )
                revealed.append((record_id, column, plain))
    return rows, revealed


def _holds_a_cancelled_ebay_order(config: SandboxConfig, day: date) -> Callable[[str], bool]:
    """Whether an eBay order is cancelled (so refunded too) among those a merchant's first
    partition lands, so that its loads hold both kinds of adjustment: about one random id in seven
    hundred has no cancellation or no refund in the window."""
    state = SandboxState(config)
    start, end = day_window(day.isoformat(), LOOKBACK_HOURS)

    def holds(mid: str) -> bool:
        plans = ebay_order_plans_modified_between(state, mid, start, end, state.now())
        return any(p.cancel_at is not None and p.cancel_at <= state.now() for p in plans)

    return holds


def test_core_orders_are_current_idempotent_encrypted_and_rotate(warehouse, warehouse_url, merchant_id, instance, tmp_path):
    # The values are sealed under a key labelled by the day of the loads, checked at the end.
    clear_of_midnight(timedelta(minutes=5))
    now = sandbox_now()
    day = (now - timedelta(days=6)).date()
    t1 = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1, minutes=10)
    clock = SandboxClock.fixed_at(t1)
    config = SandboxConfig(seed=11, clock=clock, history_start=day - timedelta(days=60), orders_page_size=20)
    mid = merchant_where(merchant_id, "core", _holds_a_cancelled_ebay_order(config, day), f"an eBay order cancelled on {day}")
    schema = merchant_schema(mid)
    add_merchant(warehouse, mid, channels={c: ChannelConnection(c, f"sandbox:{mid}") for c in CHANNELS})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    vault_res = _vault_resource(tmp_path)
    vault = vault_res.get(warehouse)
    # The merchant's first key is 100 days old, so the rotation job must rotate it.
    assert vault.create_key_version(mid, now=now - timedelta(days=100)) == 1
    names: set[str] = set()
    values: set[str] = set()

    def run(partition_day: str) -> None:
        _materialize(instance, warehouse_url, sandbox.base_url, vault_res, mid, partition_day)
        # A re-run replaces the partition's raw rows: collect the PII that landed each time.
        found_names, found_values = _buyer_pii_from_raw(warehouse, schema, vault)
        names.update(found_names)
        values.update(found_values)

    with SandboxServer(config) as sandbox:
        for _ in range(2):
            run(day.isoformat())
            _assert_one_current_row_per_order(warehouse, mid)
            counts = _table_counts(warehouse, mid)
            if _ == 0:
                first = counts
        assert counts == first, "a re-run must not change any core table"
        (raw_orders,) = _rows(
            warehouse,
            mid,
            "SELECT " + " + ".join(f"(SELECT count(*) FROM {schema}.raw_{c}_orders)" for c in CHANNELS),
        )[0]
        rejected = _rows(warehouse, mid, f"SELECT source, reason FROM {schema}.raw_quarantine WHERE dataset = 'core_orders'")
        # Every raw order lands; the sandbox's data holds nothing the normalizers must reject.
        assert counts[ORDERS.name] == raw_orders
        assert rejected == []
        (first_seen,) = _rows(
            warehouse, mid, f"SELECT count(*) FROM {schema}.{ORDER_STATUS_HISTORY.name} WHERE previous_status IS NULL"
        )[0]
        assert first_seen == counts[ORDER_STATUS_HISTORY.name] == counts[ORDERS.name]

        # A day later orders have moved on: the next partition updates them in place.
        clock.set(t1 + timedelta(days=1))
        before = _current_orders(warehouse, mid)
        next_day = (day + timedelta(days=1)).isoformat()
        run(next_day)
        _assert_one_current_row_per_order(warehouse, mid)
        after = _current_orders(warehouse, mid)
        changed = {k for k in before if k in after and after[k][0] != before[k][0]}
        assert changed, "some orders should have changed status within a day"
        history = _rows(
            warehouse,
            mid,
            f"SELECT channel, marketplace_order_id, status, previous_status FROM {schema}.{ORDER_STATUS_HISTORY.name} "
            "WHERE previous_status IS NOT NULL",
        )
        assert {(c, o) for c, o, _, _ in history} == changed
        for c, o, status, previous in history:
            assert (previous, status) == (before[(c, o)][0], after[(c, o)][0])

        # Re-running the older partition (and the newer one) changes nothing: no regression.
        history_count = _table_counts(warehouse, mid)[ORDER_STATUS_HISTORY.name]
        run(day.isoformat())
        run(next_day)
        assert _current_orders(warehouse, mid) == after
        assert _table_counts(warehouse, mid)[ORDER_STATUS_HISTORY.name] == history_count

    kinds = {k for (k,) in _rows(warehouse, mid, f"SELECT DISTINCT kind FROM {schema}.{ORDER_ADJUSTMENTS.name}")}
    assert {"refund", "cancellation"} <= kinds
    amounts = _rows(warehouse, mid, f"SELECT amount FROM {schema}.{ORDER_ADJUSTMENTS.name} WHERE kind = 'refund'")
    assert all(a is None or a.__class__.__name__ == "Decimal" for (a,) in amounts)

    # Buyer PII: ciphertexts only, and no plaintext anywhere outside the raw layer.
    pii_rows = _rows(warehouse, mid, f"SELECT {', '.join(PII_COLUMNS)} FROM {schema}.{BUYER_PII.name}")
    assert pii_rows and all(v is None or is_ciphertext(v) for row in pii_rows for v in row)
    assert names and values
    for where, cell in _text_cells(warehouse, mid):
        assert not any(name in cell for name in names), f"a buyer name leaked into {where}"
        assert cell not in values, f"buyer PII leaked into {where}"

    logs = "\n".join(str(e) for run in instance.get_runs() for e in instance.all_logs(run.run_id))
    assert not any(name in logs for name in names), "a buyer name leaked into the Dagster event log"

    # Reads go through the audit log: one audited reveal, then every value through a vault on the
    # same keys that audits into memory.
    (row,) = _rows(warehouse, mid, f"SELECT channel, marketplace_order_id, buyer_name FROM {schema}.{BUYER_PII.name} WHERE buyer_name IS NOT NULL LIMIT 1")
    name = vault.reveal(mid, BUYER_PII.name, "buyer_name", f"{row[0]}:{row[1]}", row[2], actor="support:test", purpose="test")
    assert name in names
    audit = _platform_rows(warehouse, "SELECT actor, CAST(details AS TEXT) FROM platform.audit_log WHERE action = 'pii.reveal' AND merchant_id = ?", [mid])
    assert [a for a, _ in audit] == ["support:test"] and name not in audit[0][1]
    reader, events = _in_memory_audit_vault(vault_res)
    rows, revealed = _reveal_all(reader, warehouse, mid)
    assert len(events) == len(revealed)
    revealed_names = {v for _, column, v in revealed if column in ("buyer_name", "ship_name")}
    assert revealed_names and revealed_names <= names
    # Written under today's hold key (ADR 0007): not the merchant's 100-day-old general key.
    (held,) = {key_version(v) for row in rows for v in row[2:] if v}
    assert held != 1 and vault.key_label(mid, held) == f"hold:{datetime.now(UTC).date().isoformat()}"

    # Rotation: the 100-day-old general key is replaced; the values under their hold key stay as
    # they are (a labelled key lives no longer than its data) and still reveal.
    result = key_rotation_job.execute_in_process(
        instance=instance, resources={"warehouse": WarehouseResource(url=warehouse_url), "vault": vault_res}
    )
    assert result.success
    rotated_rows, revealed_after = _reveal_all(_in_memory_audit_vault(vault_res)[0], warehouse, mid)
    assert {key_version(v) for row in rotated_rows for v in row[2:] if v} == {held}
    assert sorted(revealed_after) == sorted(revealed)
    audited = _platform_rows(
        warehouse, "SELECT details FROM platform.audit_log WHERE action = ? AND merchant_id = ?", [ROTATION_ACTION, mid]
    )
    assert len(audited) == 1
    details = audited[0][0] if isinstance(audited[0][0], dict) else json.loads(audited[0][0])
    assert details["rotated_to"] == held + 1 and details["reencrypted_values"] == 0

    # Two days on, the retired general version is past its grace period: destroyed, data still readable.
    later = datetime.now(UTC) + timedelta(days=2)
    summary = rotate_merchant_keys(vault, warehouse, mid, later, "test")
    assert summary["destroyed_versions"] == [1] and summary["rotated_to"] is None
    _, revealed_last = _reveal_all(_in_memory_audit_vault(vault_res)[0], warehouse, mid)
    assert sorted(revealed_last) == sorted(revealed)

    # Inventory: one row per day, SKU and channel.
    dupes = _rows(
        warehouse,
        mid,
        f"SELECT snapshot_date, sku, channel, count(*) FROM {schema}.{INVENTORY_SNAPSHOTS.name} "
        "GROUP BY snapshot_date, sku, channel HAVING count(*) > 1",
    )
    assert dupes == []
    per_channel = dict(
        _rows(warehouse, mid, f"SELECT channel, count(*) FROM {schema}.{INVENTORY_SNAPSHOTS.name} WHERE snapshot_date = ? GROUP BY channel", [day])
    )
    assert set(per_channel) == set(CHANNELS)
    (mapped,) = _rows(
        warehouse, mid, f"SELECT count(*) FROM {schema}.{INVENTORY_SNAPSHOTS.name} WHERE part_match = 'ebay_mpn' AND mpn IS NOT NULL"
    )[0]
    assert mapped > 0
    # Order lines name the part they sold by the same rule as the day's snapshots.
    pairs = _rows(
        warehouse, mid,
        f"SELECT l.master_part, l.part_match, s.master_part, s.part_match FROM {schema}.core_order_lines l "
        f"JOIN {schema}.{INVENTORY_SNAPSHOTS.name} s ON s.sku = l.sku AND s.channel = l.channel "
        "AND s.snapshot_date = l.partition_date WHERE l.partition_date = ?",
        [day],
    )
    assert pairs and all((a, b) == (c, d) for a, b, c, d in pairs), pairs
    assert {b for _, b, _, _ in pairs} >= {"ebay_mpn"}


def test_a_stored_order_is_replaced_only_by_a_version_at_least_as_recent():
    t = datetime(2026, 11, 1, 12, tzinfo=UTC)
    d1, d2 = datetime(2026, 11, 1).date(), datetime(2026, 11, 2).date()
    assert is_newer_or_same((t, d1), None)
    assert is_newer_or_same((t, d1), (t, d1))  # a re-run
    assert is_newer_or_same((t, d2), (t, d1))  # seen again in the next day's lookback
    assert not is_newer_or_same((t, d1), (t, d2))
    assert not is_newer_or_same((t - timedelta(hours=1), d2), (t, d1))
    assert is_newer_or_same((None, d2), (None, d1)) and not is_newer_or_same((None, d2), (t, d1))


def test_inventory_rows_sum_locations_map_parts_and_compute_cover():
    rec = normalize.InventoryRecord
    base = dict(asin_or_item_id=None, fnsku=None, marketplace_id=None, condition=None, inbound=None,
                reserved=None, unfulfillable=None, total_quantity=None, as_of=None)
    records = [
        rec(channel="walmart", sku="A", location="n1", fulfillable=None, merchant_fulfilled=4, **base),
        rec(channel="walmart", sku="A", location="n2", fulfillable=2, merchant_fulfilled=None, **base),
        rec(channel="ebay", sku="B", location=None, fulfillable=None, merchant_fulfilled=0, **base),
    ]
    parts = master_parts_from_ebay([{"sku": "A", "product": {"mpn": "17D828", "brand": "ACDelco"}}, {"sku": "B"}])
    # Records without a marketplace are one channel-wide pool: its cover counts every market's sales.
    rows = snapshot_rows(records, parts, {("walmart", "WALMART_US", "A"): 8, ("walmart", "WALMART_CA", "A"): 4}, "2026-11-01")
    by_key = {(r["channel"], r["sku"]): r for r in rows}
    assert {r["marketplace_id"] for r in rows} == {"*"}
    a, b = by_key[("walmart", "A")], by_key[("ebay", "B")]
    assert (a["available"], a["merchant_fulfilled"], a["fulfillable"]) == (6, 4, 2)
    assert (a["mpn"], a["brand"], a["part_match"]) == ("17D828", "ACDelco", "ebay_mpn")
    assert a["days_of_cover"] == 15.0 and not a["stock_out"]
    assert (b["master_part"], b["part_match"], b["stock_out"], b["days_of_cover"]) == ("B", "sku", True, None)


def test_inventory_rows_keep_each_marketplace_pool_and_its_own_sales():
    rec = normalize.InventoryRecord
    base = dict(asin_or_item_id=None, fnsku=None, condition=None, inbound=None, reserved=None,
                unfulfillable=None, total_quantity=None, as_of=None, location=None, merchant_fulfilled=None)
    records = [
        rec(channel="amazon", sku="A", marketplace_id="A1PA6795UKMFR9", fulfillable=6, **base),
        rec(channel="amazon", sku="A", marketplace_id="A1F83G8C2ARO7P", fulfillable=0, **base),
    ]
    sold = {("amazon", "A1PA6795UKMFR9", "A"): 6, ("amazon", "A1F83G8C2ARO7P", "A"): 3}
    rows = {r["marketplace_id"]: r for r in snapshot_rows(records, {}, sold, "2026-11-01")}
    de, uk = rows["A1PA6795UKMFR9"], rows["A1F83G8C2ARO7P"]
    assert (de["available"], de["units_sold_30d"], de["days_of_cover"], de["stock_out"]) == (6, 6, 30.0, False)
    assert (uk["available"], uk["units_sold_30d"], uk["days_of_cover"], uk["stock_out"]) == (0, 3, 0.0, True)


@pytest.mark.parametrize("env_key", [True, False])
def test_vault_resource_keeps_keys_outside_the_data_folder(tmp_path, monkeypatch, env_key):
    from illuma_pipelines.vault import LocalKeyring, MasterKeyError

    monkeypatch.setenv("ILLUMA_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("ILLUMA_DATA_DIR", raising=False)
    if env_key:
        monkeypatch.setenv("ILLUMA_MASTER_KEY", LocalKeyring.generate_master_key())
    else:
        monkeypatch.delenv("ILLUMA_MASTER_KEY", raising=False)
    from illuma_pipelines.warehouse import Warehouse

    wh = Warehouse.from_url(f"duckdb:///{tmp_path / 'var' / 'data' / 'w.duckdb'}")
    vault = VaultResource().get(wh)
    token = vault.encrypt("shop_a", "core_buyer_pii", "buyer_name", "amazon:1", "Jane Roe")
    assert is_ciphertext(token)
    key_file = tmp_path / "var" / "keys" / "master.key"
    assert (tmp_path / "var" / "keys" / "keystore.json").exists()
    assert key_file.exists() != env_key
    if not env_key:
        assert key_file.stat().st_mode & 0o777 == 0o600
    inside_file = tmp_path / "var" / "data" / "master.key"
    inside_file.parent.mkdir(parents=True, exist_ok=True)
    inside_file.write_text(LocalKeyring.generate_master_key() + "\n")
    inside = VaultResource(master_key_file=str(inside_file), generate_master_key=False)
    monkeypatch.delenv("ILLUMA_MASTER_KEY", raising=False)
    with pytest.raises(MasterKeyError):
        inside.get(wh)


def test_key_rotation_schedule_requests_one_run_per_day():
    with dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 27, 4, 30, tzinfo=UTC)) as context:
        (request,) = key_rotation_schedule.evaluate_tick(context).run_requests
    assert request.run_key == "key_rotation:2026-11-27"
    assert key_rotation_schedule.job_name == key_rotation_job.name


def test_normalizer_rejects_are_quarantined_and_the_rest_lands(warehouse, warehouse_url, merchant_id, instance, tmp_path):
    from pathlib import Path

    from assets.core import core_orders
    from illuma_pipelines.raw_records import (
        RecordRule,
        raw_payload_batches,
        raw_table,
        split_records,
    )

    mid = merchant_id("rej")
    schema = merchant_schema(mid)
    add_merchant(warehouse, mid, channels={"ebay": ChannelConnection("ebay", f"sandbox:{mid}")})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    body = normalize.loads((Path(__file__).parent / "fixtures" / "ebay" / "ebay_getOrders_doc_shape.json").read_text())
    records = normalize.ebay.orders_from_response(body)
    broken = {**records[0], "orderId": "99-00000-00000", "orderFulfillmentStatus": "TELEPORTED"}
    day = "2026-03-04"
    split = split_records(
        [*records, broken], RecordRule(key_fields=("orderId",)), dataset="ebay_orders", source="ebay.getOrders",
        partition_date=day, window=(None, None), extracted_at=datetime.now(UTC), run_id="test",
    )
    with warehouse.merchant_scope(mid) as conn:
        conn.create_table(schema, raw_table("ebay", "orders"))
        conn.load_frame(schema, "raw_ebay_orders", split.raw)
    for _ in range(2):
        result = dg.materialize(
            [core_orders],
            partition_key=merchant_date_key(mid, day),
            resources={"warehouse": WarehouseResource(url=warehouse_url), "vault": _vault_resource(tmp_path)},
            instance=instance,
        )
        assert result.success
    mats = {m.asset_key.path[-1]: m for m in result.asset_materializations_for_node("core_orders")}
    assert mats["orders"].metadata["rejected"].value == 1
    assert mats["orders"].metadata["orders_written"].value == len(records)
    quarantined = _rows(warehouse, mid, f"SELECT dataset, source, reason, position, payload FROM {schema}.raw_quarantine")
    assert len(quarantined) == 1
    dataset, source, reason, position, payload = quarantined[0]
    assert (dataset, source) == ("core_orders", "ebay.normalize_orders") and "TELEPORTED" in reason
    # The row names the broken record itself: its payload, at its place in the partition's stream.
    with warehouse.merchant_scope(mid) as conn:
        stream = [row for rows in raw_payload_batches(conn, mid, "ebay", "orders", day, 100) for row in rows]
    assert stream[position][0] == "99-00000-00000" and payload == stream[position][1]
    assert _rows(warehouse, mid, f"SELECT count(*) FROM {schema}.{ORDERS.name}")[0][0] == len(records)
