"""The great-expectations asset checks on real core tables: green on sandbox data, red on bad rows."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.checks import (
    INVENTORY_QUALITY,
    NO_PLAINTEXT_PII,
    ORDERS_QUALITY,
    no_plaintext_pii,
    orders_quality,
    quality_checks,
)
from assets.core import INVENTORY_SNAPSHOTS_KEY, core_assets, core_orders, inventory_snapshots
from assets.extracts import extract_assets
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines.core.tables import ORDER_LINES, ORDERS
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.raw_records import RecordRule, raw_table, split_records
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.sandbox.server import SandboxClock, SandboxConfig, SandboxServer
from illuma_pipelines.warehouse import Warehouse
from resources import sandbox_clients
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource
from tests.sandbox_helpers import sandbox_now
from tests.test_reconciliation import amazon_de_order, ebay_de_order, walmart_ca_order

EXTRACTS = [a for a in extract_assets if a.key.path[-1].endswith(("_orders", "_inventory"))]


def test_checks_pass_on_sandbox_data_and_catch_bad_rows(warehouse, warehouse_url, merchant_id, instance, tmp_path):
    mid = merchant_id("gx")
    add_merchant(warehouse, mid, channels={c: ChannelConnection(c, f"sandbox:{mid}") for c in ("amazon", "ebay", "walmart")})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    now = sandbox_now()
    day = (now - timedelta(days=2)).date().isoformat()
    resources = {
        "warehouse": WarehouseResource(url=warehouse_url),
        "vault": VaultResource(key_store_path=str(tmp_path / "keys" / "ks.json"), master_key_file=str(tmp_path / "keys" / "master.key")),
    }
    config = SandboxConfig(seed=3, clock=SandboxClock.fixed_at(now), history_start=now.date() - timedelta(days=60))
    with SandboxServer(config) as sandbox:
        result = dg.materialize(
            [*EXTRACTS, *core_assets, *quality_checks],
            partition_key=merchant_date_key(mid, day),
            resources={**resources, **sandbox_clients(sandbox.base_url)},
            instance=instance,
            raise_on_error=False,
        )
    failing = {e.check_name: e.metadata for e in result.get_asset_check_evaluations() if not e.passed}
    assert not failing, failing
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert {ORDERS_QUALITY, INVENTORY_QUALITY, NO_PLAINTEXT_PII} <= set(evaluations)
    assert all(e.passed for e in evaluations.values()), {n: e.metadata for n, e in evaluations.items() if not e.passed}
    assert evaluations[ORDERS_QUALITY].metadata["rows"].value > 0
    assert evaluations[NO_PLAINTEXT_PII].metadata["known_values_hunted"].value > 0

    # Now break the data: a status outside the vocabulary, and a buyer's name copied into a title.
    schema = merchant_schema(mid)
    with warehouse.merchant_scope(mid) as conn:
        conn.execute(f"UPDATE {schema}.{ORDERS.name} SET status = 'lost_in_space' WHERE partition_date = ?", [day])
        order_id = conn.fetchone(f"SELECT marketplace_order_id FROM {schema}.{ORDER_LINES.name} LIMIT 1")[0]
        conn.execute(
            f"UPDATE {schema}.{ORDER_LINES.name} SET title = 'buyer-copy@example.com' WHERE marketplace_order_id = ?",
            [order_id],
        )
    # Re-run the two checks (with the inventory asset, which leaves orders alone: a partitioned
    # run needs a partitioned asset in it).
    result = dg.materialize(
        [*core_assets, *quality_checks],
        selection=dg.AssetSelection.assets(inventory_snapshots)
        | dg.AssetSelection.checks(orders_quality, no_plaintext_pii),
        partition_key=merchant_date_key(mid, day),
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    failed = {e.check_name: e for e in result.get_asset_check_evaluations() if not e.passed}
    assert set(failed) == {ORDERS_QUALITY, NO_PLAINTEXT_PII}
    assert any("status" in f for f in failed[ORDERS_QUALITY].metadata["failures"].value)
    findings = failed[NO_PLAINTEXT_PII].metadata["findings"].value
    assert findings == [f"{ORDER_LINES.name}.title: e-mail address (1)"] or any("title" in f for f in findings)
    assert "buyer-copy@example.com" not in str(findings)


RAW_ORDER_KEYS = {"amazon": ("orderId",), "ebay": ("orderId",), "walmart": ("purchaseOrderId",)}


def _land_raw_orders(warehouse: Warehouse, mid: str, day: str, records: dict[str, list[dict]]) -> None:
    """Raw order rows as the extracts land them (one per record, keyed by order id)."""
    schema = merchant_schema(mid)
    with warehouse.merchant_scope(mid) as conn:
        for channel, payloads in records.items():
            split = split_records(
                payloads, RecordRule(key_fields=RAW_ORDER_KEYS[channel]), dataset=f"{channel}_orders",
                source=f"{channel}.orders", partition_date=day, window=(None, None),
                extracted_at=datetime.now(UTC), run_id="test",
            )
            spec = raw_table(channel, "orders")
            conn.create_table(schema, spec)
            conn.execute(f"DELETE FROM {schema}.{spec.name} WHERE partition_date = ?", [day])
            conn.load_frame(schema, spec.name, split.raw)


def test_orders_quality_blocks_on_line_shipping_that_disagrees_with_the_order(merchant_id, instance, tmp_path):
    """Issue 13: the real blocking check, through Dagster on DuckDB, on real-shaped orders of every
    channel (an EBAY_DE line of 4 with per-unit shipping and a shipping discount, Amazon.de, Walmart
    Canada): green as normalized; red, with the inventory snapshot downstream not built, once a
    line's shipping disagrees with its order's."""
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    warehouse = Warehouse.from_url(url)
    warehouse.ensure_platform()
    mid = merchant_id("recon")
    add_merchant(warehouse, mid, channels={c: ChannelConnection(c, f"sandbox:{mid}") for c in RAW_ORDER_KEYS})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    day = "2026-11-15"
    schema = merchant_schema(mid)
    resources = {
        "warehouse": WarehouseResource(url=url),
        "vault": VaultResource(key_store_path=str(tmp_path / "keys" / "ks.json"), master_key_file=str(tmp_path / "keys" / "master.key")),
    }

    def run(selection: dg.AssetSelection) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [*core_assets, *quality_checks],
            selection=selection,
            partition_key=merchant_date_key(mid, day),
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )

    def snapshot_built(result: dg.ExecuteInProcessResult) -> bool:
        return INVENTORY_SNAPSHOTS_KEY in {e.asset_key for e in result.get_asset_materialization_events()}

    check = dg.AssetSelection.checks(orders_quality)
    everything = dg.AssetSelection.assets(core_orders, inventory_snapshots).without_checks() | check
    _land_raw_orders(warehouse, mid, day, {"ebay": [ebay_de_order()], "amazon": [amazon_de_order()], "walmart": [walmart_ca_order()]})
    result = run(everything)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed, evaluation.metadata
    assert evaluation.metadata["rows"].value == 3
    assert result.success and snapshot_built(result)
    with warehouse.merchant_scope(mid) as conn:
        stored = conn.fetchall(
            f"SELECT quantity_ordered, shipping_price FROM {schema}.{ORDER_LINES.name} WHERE channel = 'ebay'"
        )
    assert [(q, float(p)) for q, p in stored] == [(4, 19.8)]

    # The stored line shipping back to the per-unit value the defective normalizer wrote: the
    # check alone (with the snapshot downstream of core/orders) fails and blocks the snapshot.
    with warehouse.merchant_scope(mid) as conn:
        conn.execute(f"UPDATE {schema}.{ORDER_LINES.name} SET shipping_price = 4.95 WHERE channel = 'ebay'")
    result = run(dg.AssetSelection.assets(inventory_snapshots).without_checks() | check)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["failures"].value == ["orders do not reconcile with their lines on shipping: 1 order(s)"]
    assert evaluation.metadata["reconciliation"].value == [
        "ebay 04-11923-58230: shipping 19.80 on the order, 4.95 from its lines"
    ]
    assert not result.success and not snapshot_built(result)

    # A raw order whose summary charges five units' shipping for a line of four, landed and
    # normalized in the same run as the check: the run stops before the snapshot.
    disagreeing = ebay_de_order("04-11923-58231")
    disagreeing["pricingSummary"]["deliveryCost"] = {"value": "24.75", "currency": "EUR"}
    disagreeing["pricingSummary"]["total"] = {"value": "126.02", "currency": "EUR"}
    _land_raw_orders(warehouse, mid, day, {"ebay": [ebay_de_order(), disagreeing]})
    result = run(everything)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["reconciliation"].value == [
        "ebay 04-11923-58231: shipping 24.75 on the order, 19.80 from its lines"
    ]
    assert not snapshot_built(result)
