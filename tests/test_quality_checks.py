"""The great-expectations asset checks on real core tables: green on sandbox data, red on bad rows."""

from datetime import timedelta

import dagster as dg

from assets.checks import (
    INVENTORY_QUALITY,
    NO_PLAINTEXT_PII,
    ORDERS_QUALITY,
    no_plaintext_pii,
    orders_quality,
    quality_checks,
)
from assets.core import core_assets, inventory_snapshots
from assets.extracts import extract_assets
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines.core.tables import ORDER_LINES, ORDERS
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.sandbox.server import SandboxClock, SandboxConfig, SandboxServer
from resources import sandbox_clients
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource
from tests.sandbox_helpers import sandbox_now

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
