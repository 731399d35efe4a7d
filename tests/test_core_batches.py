"""core_orders in batches (`load_orders_partition`): batch size and worker processes change nothing
in what lands, a stopped run leaves whole batches and a re-run completes it; both engines."""

import copy
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.core import core_orders
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines.core.orders import default_normalize_workers, load_orders_partition
from illuma_pipelines.core.tables import (
    BUYER_PII,
    ORDER_ADJUSTMENTS,
    ORDER_LINES,
    ORDER_STATUS_HISTORY,
    ORDERS,
    PII_COLUMNS,
)
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.raw_records import QUARANTINE, raw_table
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.sandbox.server import SandboxClock, SandboxConfig, SandboxServer
from illuma_pipelines.sealing import unseal_payloads
from illuma_pipelines.vault import FileKeyStore, LocalKeyring, Vault
from resources import sandbox_clients
from resources.warehouse import WarehouseResource
from tests.sandbox_helpers import sandbox_now
from tests.test_core_assets import CHANNELS, LOOKBACK, ORDER_EXTRACTS, _rows, _vault_resource

# Source: Amazon SP-API Orders v2026-01-01 searchOrders, the documentation's example response.
TEMPLATE = json.loads(
    (Path(__file__).parent / "fixtures" / "amazon" / "amazon_v2026_searchOrders_docexample.json").read_text()
)["orders"][0]
CORE = (ORDERS, ORDER_LINES, ORDER_ADJUSTMENTS, ORDER_STATUS_HISTORY)
SKIP = {"loaded_at", "run_id"}


def _vault(tmp_path: Path) -> tuple[Vault, list]:
    events: list = []
    vault = Vault(
        FileKeyStore(tmp_path / f"ks-{secrets.token_hex(3)}.json"),
        LocalKeyring([secrets.token_bytes(32)]),
        audit_sink=events.append,
    )
    return vault, events


def _table(warehouse, mid, spec):
    names = [c.name for c in spec.columns if c.name not in SKIP]
    rows = _rows(warehouse, mid, f"SELECT {', '.join(names)} FROM {merchant_schema(mid)}.{spec.name}")
    return sorted(rows, key=repr)


def _landed(warehouse, vault, mid):
    """Every core order table of `mid` (provenance aside) and its buyer PII decrypted."""
    schema = merchant_schema(mid)
    out = {spec.name: _table(warehouse, mid, spec) for spec in CORE}
    out[QUARANTINE.name] = _table(warehouse, mid, QUARANTINE)
    pii = []
    for row in _rows(warehouse, mid, f"SELECT channel, marketplace_order_id, {', '.join(PII_COLUMNS)} FROM {schema}.{BUYER_PII.name}"):
        record_id = f"{row[0]}:{row[1]}"
        pii.append(
            (
                record_id,
                *(
                    vault.reveal(mid, BUYER_PII.name, col, record_id, value, actor="test", purpose="batch test")
                    if value is not None
                    else None
                    for col, value in zip(PII_COLUMNS, row[2:], strict=True)
                ),
            )
        )
    out[BUYER_PII.name] = sorted(pii)
    return out


def _copy_table(warehouse, source, target, spec):
    """Copy every row of table `spec` from merchant `source` to merchant `target`, in key order:
    read in the source's scope, written in the target's (no scope reaches both)."""
    names = spec.column_names
    # JSON as its text: psycopg hands JSONB over as Python objects.
    select = ", ".join(f"CAST({c.name} AS TEXT) AS {c.name}" if c.type == "json" else c.name for c in spec.columns)
    rows = _rows(warehouse, source, f"SELECT {select} FROM {merchant_schema(source)}.{spec.name} ORDER BY record_key")
    assert rows, f"{spec.name} of {source} is empty"
    with warehouse.merchant_scope(target) as conn:
        conn.load_frame(merchant_schema(target), spec.name, pd.DataFrame(rows, columns=names))


def _amazon(order_id: str, status: str, updated: str, buyer: str = "Jane Doe") -> dict:
    record = copy.deepcopy(TEMPLATE)
    record["orderId"] = order_id
    record["lastUpdatedTime"] = updated
    record["fulfillment"]["fulfillmentStatus"] = status
    record["buyer"]["buyerName"] = buyer
    return record


def _unseal_raw_orders(warehouse, vault, mid):
    """Open the PII sealed in a merchant's raw orders (bound to that merchant), so the rows can be
    copied to other merchants as plain API payloads."""
    schema = merchant_schema(mid)
    for channel in CHANNELS:
        table = raw_table(channel, "orders").name
        rows = _rows(warehouse, mid, f"SELECT record_key, CAST(payload AS TEXT) FROM {schema}.{table}")
        texts = unseal_payloads(vault, mid, table, channel, rows, actor="pipeline:tests", purpose="copy the sandbox day")
        with warehouse.merchant_scope(mid) as conn:
            for (key, _), text in zip(rows, texts, strict=True):
                conn.execute(
                    f"UPDATE {schema}.{table} SET payload = CAST(? AS {'JSON' if warehouse.dialect == 'duckdb' else 'JSONB'}), "
                    "pii_key_version = NULL WHERE record_key = ?",
                    [text, key],
                )


def _stage(warehouse, mid, day, records, keys=None):
    """Raw Amazon order rows of `mid` for `day`, in this order, as the extract leaves them."""
    spec, schema = raw_table("amazon", "orders"), merchant_schema(mid)
    now = datetime.now(UTC)
    frame = pd.DataFrame(
        {
            "partition_date": [day] * len(records),
            "source": "amazon.test",
            "record_key": keys or [r["orderId"] for r in records],
            "payload": [json.dumps(r) for r in records],
            "window_start": pd.Series([None] * len(records), dtype="datetime64[us, UTC]"),
            "window_end": pd.Series([None] * len(records), dtype="datetime64[us, UTC]"),
            "extracted_at": pd.Series([now] * len(records), dtype="datetime64[us, UTC]"),
            "run_id": "extract",
        }
    )
    with warehouse.merchant_scope(mid) as conn:
        conn.create_table(schema, spec)
        # One statement per record keeps the stored order the order given, on both engines.
        for i in range(len(frame)):
            conn.load_frame(schema, spec.name, frame.iloc[i : i + 1])


def _sandbox_day(warehouse, merchant_id, instance, name, seed):
    mid = merchant_id(name)
    add_merchant(warehouse, mid, channels={c: ChannelConnection(c, f"sandbox:{mid}") for c in CHANNELS})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    now = sandbox_now()
    day = (now - timedelta(days=6)).date()
    clock = SandboxClock.fixed_at(datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1, minutes=10))
    config = SandboxConfig(seed=seed, clock=clock, history_start=day - timedelta(days=60), orders_page_size=20)
    return mid, day, config


def test_core_orders_asset_takes_its_batch_config_from_the_run(warehouse, warehouse_url, merchant_id, instance, tmp_path):
    mid, day, config = _sandbox_day(warehouse, merchant_id, instance, "batchcfg", 29)
    resources = {"warehouse": WarehouseResource(url=warehouse_url), "vault": _vault_resource(tmp_path)}
    partition = merchant_date_key(mid, day.isoformat())
    with SandboxServer(config) as sandbox:
        resources.update(sandbox_clients(sandbox.base_url))
        run_config = {"ops": {**LOOKBACK["ops"], "core_orders": {"config": {"batch_records": 4, "workers": 1}}}}
        result = dg.materialize(
            [*ORDER_EXTRACTS, core_orders], partition_key=partition, resources=resources,
            instance=instance, run_config=run_config,
        )
        assert result.success
        logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
        assert any("in batches of 4 by 1 worker process(es)" in message for message in logs), logs
        schema = merchant_schema(mid)
        raw = sum(_rows(warehouse, mid, f"SELECT count(*) FROM {schema}.raw_{c}_orders")[0][0] for c in CHANNELS)
        assert _rows(warehouse, mid, f"SELECT count(*), count(DISTINCT channel || marketplace_order_id) FROM {schema}.{ORDERS.name}") == [(raw, raw)]
        with pytest.raises(Exception, match="batch_records"):
            dg.materialize(
                [*ORDER_EXTRACTS, core_orders], partition_key=partition, resources=resources, instance=instance,
                run_config={"ops": {**LOOKBACK["ops"], "core_orders": {"config": {"batch_records": 0}}}},
            )


def test_batches_and_workers_land_the_same_as_one_batch(warehouse, warehouse_url, merchant_id, instance, tmp_path):
    """Real sandbox orders of all three channels plus one record the normalizer rejects, loaded
    as one batch, in batches of 3, and in batches of 3 normalized by a worker process."""
    source, day, config = _sandbox_day(warehouse, merchant_id, instance, "batchsrc", 23)
    source_vault = _vault_resource(tmp_path)
    with SandboxServer(config) as sandbox:
        result = dg.materialize(
            ORDER_EXTRACTS,
            partition_key=merchant_date_key(source, day.isoformat()),
            resources={"warehouse": WarehouseResource(url=warehouse_url), "vault": source_vault, **sandbox_clients(sandbox.base_url)},
            instance=instance,
            run_config=LOOKBACK,
        )
    assert result.success
    _unseal_raw_orders(warehouse, source_vault.get(warehouse), source)
    _stage(warehouse, source, day.isoformat(), [_amazon("999-0000000-0000001", "TELEPORTED", "2024-12-25T14:45:00Z")])
    counts = {c: _rows(warehouse, source, f"SELECT count(*) FROM {merchant_schema(source)}.raw_{c}_orders")[0][0] for c in CHANNELS}
    assert all(n > 3 for n in counts.values()), counts

    landed = {}
    for name, batch, workers in (("one", 10**6, 0), ("small", 3, 0), ("worker", 3, 1)):
        mid = merchant_id(f"batch{name}")
        add_merchant(warehouse, mid)
        for channel in CHANNELS:
            warehouse.ensure_merchant_table(mid, raw_table(channel, "orders"))
        for channel in CHANNELS:
            _copy_table(warehouse, source, mid, raw_table(channel, "orders"))
        vault, _ = _vault(tmp_path)
        done = load_orders_partition(warehouse, vault, mid, day.isoformat(), f"run-{name}", batch_records=batch, workers=workers)
        assert done.workers == workers
        assert done.rejected == 1
        assert done.orders_in_partition == done.orders_written == sum(counts.values()) - 1
        assert 0 < done.pii_written <= done.orders_written < done.lines_written
        landed[name] = _landed(warehouse, vault, mid)
    quarantine = landed["one"][QUARANTINE.name]
    assert len(quarantine) == 1 and "unknown fulfillmentStatus 'TELEPORTED'" in quarantine[0][4]
    assert landed["small"] == landed["one"]
    assert landed["worker"] == landed["one"]
    assert landed["one"][ORDER_ADJUSTMENTS.name], "the sandbox's day holds refunds or cancellations"


def test_an_order_in_two_batches_ends_as_its_latest_version(warehouse, merchant_id, tmp_path):
    mid = merchant_id("batchdup")
    add_merchant(warehouse, mid)
    day = "2024-12-26"
    order = "111-2222222-3333333"
    older = _amazon(order, "UNSHIPPED", "2024-12-25T11:00:00Z", buyer="Old Name")
    newer = _amazon(order, "SHIPPED", "2024-12-25T15:00:00Z", buyer="New Name")
    # Newer first, then the older copy: the older one must not win.
    _stage(warehouse, mid, day, [newer, older], keys=[f"{order}#1", f"{order}#2"])
    vault, _ = _vault(tmp_path)
    done = load_orders_partition(warehouse, vault, mid, day, "run", batch_records=1, workers=0)
    schema = merchant_schema(mid)
    assert done.orders_in_partition == 2 and done.orders_written == 1
    assert _rows(warehouse, mid, f"SELECT status FROM {schema}.{ORDERS.name}") == [("delivered",)]
    assert _rows(warehouse, mid, f"SELECT status, previous_status FROM {schema}.{ORDER_STATUS_HISTORY.name}") == [
        ("delivered", None)
    ]
    assert [p[1] for p in _landed(warehouse, vault, mid)[BUYER_PII.name]] == ["New Name"]

    # Older first: both versions land in turn, and the history shows the change.
    mid2 = merchant_id("batchdup")
    add_merchant(warehouse, mid2)
    _stage(warehouse, mid2, day, [older, newer], keys=[f"{order}#1", f"{order}#2"])
    vault2, _ = _vault(tmp_path)
    done = load_orders_partition(warehouse, vault2, mid2, day, "run", batch_records=1, workers=0)
    schema2 = merchant_schema(mid2)
    assert done.orders_written == 2
    assert _rows(warehouse, mid2, f"SELECT count(*), max(status) FROM {schema2}.{ORDERS.name}") == [(1, "delivered")]
    assert sorted(
        _rows(warehouse, mid2, f"SELECT status, previous_status FROM {schema2}.{ORDER_STATUS_HISTORY.name}"), key=repr
    ) == sorted([("unshipped", None), ("delivered", "unshipped")], key=repr)
    assert [p[1] for p in _landed(warehouse, vault2, mid2)[BUYER_PII.name]] == ["New Name"]


class _FailingVault(Vault):
    """The real vault, failing once its `fail_after`-th column of the run has been encrypted."""

    fail_after = 10**9

    def encrypt_column(self, *args, **kwargs):
        self.fail_after -= 1
        if self.fail_after < 0:
            raise RuntimeError("injected failure: the run stops here")
        return super().encrypt_column(*args, **kwargs)


def test_a_stopped_run_leaves_whole_batches_and_a_rerun_completes_it(warehouse, merchant_id, tmp_path):
    mid = merchant_id("batchstop")
    add_merchant(warehouse, mid)
    schema = merchant_schema(mid)
    day = "2024-12-26"
    records = [_amazon(f"222-0000000-{i:07d}", "SHIPPED", "2024-12-25T15:00:00Z", buyer=f"Buyer {i}") for i in range(7)]
    _stage(warehouse, mid, day, records)
    keys = tmp_path / "keys.json"
    keyring = LocalKeyring([secrets.token_bytes(32)])
    events: list = []
    failing = _FailingVault(FileKeyStore(keys), keyring, audit_sink=events.append)
    # Batches of 3; every batch encrypts len(PII_COLUMNS) columns. Fail inside the third batch.
    failing.fail_after = 2 * len(PII_COLUMNS) + 1
    with pytest.raises(RuntimeError, match="injected failure"):
        load_orders_partition(warehouse, failing, mid, day, "run-1", batch_records=3, workers=0)
    # The first two batches are committed whole; nothing of the third is.
    assert _rows(warehouse, mid, f"SELECT count(*) FROM {schema}.{ORDERS.name}") == [(6,)]
    assert _rows(warehouse, mid, f"SELECT count(*) FROM {schema}.{BUYER_PII.name}") == [(6,)]
    assert _rows(warehouse, mid, f"SELECT count(*) FROM {schema}.{ORDER_STATUS_HISTORY.name}") == [(6,)]

    vault = Vault(FileKeyStore(keys), keyring, audit_sink=events.append)
    done = load_orders_partition(warehouse, vault, mid, day, "run-2", batch_records=3, workers=0)
    assert done.orders_written == 7
    for spec in (ORDERS, BUYER_PII, ORDER_STATUS_HISTORY):
        assert _rows(warehouse, mid, f"SELECT count(*) FROM {schema}.{spec.name}") == [(7,)], spec.name
    (lines,) = _rows(warehouse, mid, f"SELECT count(*) FROM {schema}.{ORDER_LINES.name}")[0]
    assert lines == 7 * len(TEMPLATE["orderItems"])
    names = sorted(p[1] for p in _landed(warehouse, vault, mid)[BUYER_PII.name])
    assert names == sorted(f"Buyer {i}" for i in range(7))


def test_default_workers_only_for_partitions_of_several_batches(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_normalize_workers(10, 10) == 0
    assert default_normalize_workers(11, 10) == 2
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert default_normalize_workers(10**6, 10) == 4
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert default_normalize_workers(10**6, 10) == 0
