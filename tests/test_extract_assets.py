"""Extract assets through the real sandbox server and clients, into a real warehouse."""

import json
import tempfile
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from assets.extracts import day_window, extract_assets
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.sandbox.amazon import (
    amazon_orders_updated_between,
    amazon_transactions_posted_between,
)
from illuma_pipelines.sandbox.faults import FAULT_KINDS, FaultConfig
from resources import sandbox_clients
from resources.amazon import AmazonSellingPartnerHttp
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource
from tests.sandbox_helpers import amazon_sandbox, sandbox_now

AMAZON_CORE = [a for a in extract_assets if a.key.path[-1] in ("amazon_orders", "amazon_financial_transactions")]


def _fast_amazon(base_url: str) -> AmazonSellingPartnerHttp:
    local = sandbox_clients(base_url)["amazon"]
    # Short timeouts and backoff so injected faults cost milliseconds, not minutes; rates sped up
    # as the sandbox's are.
    return AmazonSellingPartnerHttp(
        endpoint=local.endpoint,
        token_url=local.token_url,
        client_id=local.client_id,
        client_secret=local.client_secret,
        read_timeout=0.4,
        connect_timeout=1.0,
        backoff_base=0.01,
        backoff_cap=0.05,
        max_retries=12,
        rate_speedup=1000.0,
    )


def _vault() -> VaultResource:
    """A vault with a key store of its own in a fresh temporary folder (never the project's)."""
    keys = Path(tempfile.mkdtemp(prefix="illuma-keys-"))
    return VaultResource(key_store_path=str(keys / "keystore.json"), master_key_file=str(keys / "master.key"))


def _materialize(assets, instance, url, base_url, merchant_id, day):
    return dg.materialize(
        assets,
        partition_key=merchant_date_key(merchant_id, day),
        resources={"warehouse": WarehouseResource(url=url), "amazon": _fast_amazon(base_url), "vault": _vault()},
        instance=instance,
    )


def _raw_keys(warehouse, merchant_id, table, day):
    with warehouse.merchant_scope(merchant_id) as conn:
        return sorted(
            r[0]
            for r in conn.fetchall(
                f"SELECT record_key FROM {merchant_schema(merchant_id)}.{table} WHERE partition_date = ?", [day]
            )
        )


def test_faulty_multi_day_extract_lands_exactly_what_the_sandbox_holds(warehouse, warehouse_url, merchant_id, instance):
    now = sandbox_now()
    days = [(now - timedelta(days=n)).date().isoformat() for n in (3, 2)]
    merchants = [merchant_id("flt_a"), merchant_id("flt_b")]
    for mid in merchants:
        add_merchant(warehouse, mid, channels={"amazon": ChannelConnection("amazon", f"sandbox:{mid}")})
    instance.add_dynamic_partitions(MERCHANTS, merchants)
    share = 0.2 / len(FAULT_KINDS)
    faults = FaultConfig(**{k: share for k in FAULT_KINDS}, seed=5, timeout_seconds=1.0, retry_after_seconds=0.01)
    with amazon_sandbox(now=now, faults=faults, orders_page_size=5, finances_page_size=4) as sandbox:
        for _ in range(2):  # the second run must change nothing
            for mid in merchants:
                for day in days:
                    assert _materialize(AMAZON_CORE, instance, warehouse_url, sandbox.base_url, mid, day).success
            for mid in merchants:
                for day in days:
                    start, end = day_window(day, 2)
                    held_orders = sorted(o["orderId"] for o in amazon_orders_updated_between(sandbox.state, mid, start, end))
                    held_tx = sorted(t["transactionId"] for t in amazon_transactions_posted_between(sandbox.state, mid, start, end))
                    assert held_orders, "the sandbox should hold orders for these days"
                    assert _raw_keys(warehouse, mid, "raw_amazon_orders", day) == held_orders
                    assert _raw_keys(warehouse, mid, "raw_amazon_financial_transactions", day) == held_tx
        injected = sandbox.state.faults.counts
    assert sum(injected.values()) > 0 and len([k for k, v in injected.items() if v]) >= 5
    quarantined = []
    for mid in merchants:
        with warehouse.merchant_scope(mid) as conn:
            quarantined += conn.fetchall(
                f"SELECT dataset, reason, payload FROM {merchant_schema(mid)}.raw_quarantine"
            )
    # Only the sandbox's deliberately broken copies are quarantined, each with its reason.
    for dataset, reason, payload in quarantined:
        record = json.loads(payload)
        assert ("orderId" not in record) or ("transactionId" not in record), (dataset, reason)
        assert reason


def test_unconnected_channel_is_skipped_visibly(warehouse, warehouse_url, merchant_id, instance):
    mid = merchant_id("noamz")
    add_merchant(warehouse, mid, channels={"ebay": ChannelConnection("ebay", f"sandbox:{mid}")})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    day = (sandbox_now() - timedelta(days=2)).date().isoformat()
    with amazon_sandbox() as sandbox:
        result = _materialize(AMAZON_CORE[:1], instance, warehouse_url, sandbox.base_url, mid, day)
        assert sum(sandbox.state.served.values()) == 0  # no request was made for it
    (mat,) = result.asset_materializations_for_node(AMAZON_CORE[0].op.name)
    assert mat.metadata["skipped"].value == f"amazon not connected for {mid}"
    assert mat.metadata["records"].value == 0


def test_no_secret_or_buyer_pii_in_logs_or_event_metadata(warehouse, warehouse_url, merchant_id, instance, caplog):
    mid = merchant_id("scan")
    add_merchant(warehouse, mid, channels={"amazon": ChannelConnection("amazon", f"sandbox:{mid}")})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    day = (sandbox_now() - timedelta(days=2)).date().isoformat()
    faults = FaultConfig(expired_token=0.1, server_error=0.1, seed=3, retry_after_seconds=0.01)
    with amazon_sandbox(faults=faults) as sandbox:
        result = _materialize(AMAZON_CORE, instance, warehouse_url, sandbox.base_url, mid, day)
        tokens = sandbox.state.issued_access_tokens()
    assert result.success
    with warehouse.merchant_scope(mid) as conn:
        rows = conn.fetchall(f"SELECT payload FROM {merchant_schema(mid)}.raw_amazon_orders")
        payloads = [json.loads(r[0]) if isinstance(r[0], str) else r[0] for r in rows]
    pii = set()
    for order in payloads:
        pii.add((order.get("buyer") or {}).get("buyerName"))
        pii.add((order.get("buyer") or {}).get("buyerEmail"))
        address = (order.get("recipient") or {}).get("deliveryAddress") or {}
        pii.update({address.get("name"), address.get("addressLine1"), address.get("phone")})
    pii.discard(None)
    pii.discard("")
    assert pii, "the sandbox should have produced buyer PII to look for"
    secrets = {"illuma-sandbox-app-secret", f"sandbox-refresh-{mid}", *tokens}
    events = instance.all_logs(result.run_id)
    text = "\n".join(str(e) for e in events) + "\n" + caplog.text
    for value in secrets | pii:
        assert value not in text, f"a secret or PII value leaked into logs/events: {value[:4]}..."


def test_unknown_merchant_partition_fails_with_a_clear_error(warehouse_url, merchant_id, instance):
    mid = merchant_id("ghost")
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    with amazon_sandbox() as sandbox:
        result = dg.materialize(
            AMAZON_CORE[:1],
            partition_key=merchant_date_key(mid, "2026-11-01"),
            resources={
                "warehouse": WarehouseResource(url=warehouse_url), "amazon": _fast_amazon(sandbox.base_url), "vault": _vault()
            },
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    assert "unknown merchant" in str(result.get_step_failure_events()[0].event_specific_data.error)


@pytest.mark.parametrize("day", ["2026-11-01"])
def test_day_window_has_the_lookback(day):
    start, end = day_window(day, 2)
    assert start.isoformat() == "2026-10-31T22:00:00+00:00"
    assert end.isoformat() == "2026-11-02T00:00:00+00:00"
