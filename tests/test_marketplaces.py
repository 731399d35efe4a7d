"""The one description of the marketplaces (illuma_pipelines/marketplaces.py) and every consumer of
it: a channel that lacks a dataset, PII keys, a normalizer, a sandbox plug-in, an extract, a
resource or a place in the purge fails here."""

import importlib
import inspect
import json
from datetime import UTC, datetime, timedelta

import pytest

from assets.compliance import PII_PURGE_KEY, pii_purge
from assets.core import INVENTORY_SNAPSHOTS_KEY, ORDERS_KEY, core_orders, inventory_snapshots
from assets.extracts import EXTRACT_SPECS, extract_key
from illuma_pipelines import marketplaces, purge, quality, registry, retention
from illuma_pipelines.marketplaces import (
    CHANNELS,
    MARKETPLACES,
    UnknownChannel,
    raw_datasets,
    raw_table_name,
)
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.normalize import normalize_order_payloads
from illuma_pipelines.raw_records import raw_table
from illuma_pipelines.registry import add_merchant
from illuma_pipelines.retention import policy as retention_policy
from illuma_pipelines.sandbox.server import SandboxConfig, build_app
from resources import resources_for

# Datasets the core layer reads from every channel.
CORE_DATASETS = ("orders", "inventory")


@pytest.mark.parametrize("market", MARKETPLACES, ids=lambda m: m.channel)
def test_every_marketplace_is_complete(market):
    assert market.channel.isidentifier() and market.channel == market.channel.lower()
    names = [d.name for d in market.datasets]
    assert len(names) == len(set(names)) and set(CORE_DATASETS) <= set(names)
    assert market.dataset("orders").may_name_buyer, "order payloads always carry the buyer"
    assert market.pii_keys and len(market.pii_keys) == len(set(market.pii_keys))
    normalizer = importlib.import_module(market.normalizer)
    for name in ("normalize_orders", "normalize_inventory"):
        assert callable(getattr(normalizer, name, None)), f"{market.normalizer} lacks {name}"
    plugin = importlib.import_module(market.sandbox)
    assert callable(getattr(plugin, "routes", None)), f"{market.sandbox} lacks routes(state)"


def test_unknown_channels_are_refused_everywhere():
    with pytest.raises(UnknownChannel, match="etsy"):
        marketplaces.marketplace("etsy")
    with pytest.raises(registry.RegistryError, match="etsy"):
        registry.validate_channel("etsy")
    with pytest.raises(retention.RetentionError, match="etsy"):
        retention_policy.check_channel("etsy")
    with pytest.raises(ValueError, match="etsy"):
        normalize_order_payloads("etsy", [])


@pytest.mark.parametrize("channel", CHANNELS)
def test_each_consumer_knows_each_channel(channel):
    assert registry.validate_channel(channel) == channel
    assert retention_policy.check_channel(channel) == channel
    assert normalize_order_payloads(channel, []).orders == []
    # The quality suites accept the channel in the channel column.
    sets = [
        e.kwargs["value_set"]
        for e in quality.SUITES["orders"]
        if e.kwargs.get("column") == "channel" and "value_set" in e.kwargs
    ]
    assert sets and all(channel in s for s in sets)


def test_channel_rules_of_the_retention_policy_name_known_channels():
    for rule in retention.DEFAULT_POLICY.rules:
        assert rule.applies_to == retention.ALL_CHANNELS or rule.applies_to in CHANNELS


def test_every_dataset_has_exactly_one_extract_and_each_extract_a_dataset():
    specs = [(s.channel, s.dataset) for s in EXTRACT_SPECS]
    assert len(specs) == len(set(specs))
    assert set(specs) == set(raw_datasets())
    for spec in EXTRACT_SPECS:
        assert raw_table(spec.channel, spec.dataset).name == raw_table_name(spec.channel, spec.dataset)


@pytest.mark.parametrize("env", ["local", "production"])
def test_every_channel_has_a_client_resource(env):
    resources = resources_for(env)
    for channel in CHANNELS:
        assert channel in resources, f"{env} resources lack a {channel} client"


def test_the_sandbox_mounts_every_channel():
    app = build_app(SandboxConfig(seed=1))
    mounted = {getattr(route, "path", "") for route in app.routes}
    assert {f"/{c}" for c in CHANNELS} <= mounted


def test_the_graph_reads_every_channel():
    orders_deps = core_orders.asset_deps[ORDERS_KEY]
    assert {extract_key(c, "orders") for c in CHANNELS} <= set(orders_deps)
    assert {extract_key(c, "inventory") for c in CHANNELS} <= set(inventory_snapshots.asset_deps[INVENTORY_SNAPSHOTS_KEY])
    assert {extract_key(c, d) for c, d in raw_datasets(may_name_buyer=True)} <= set(pii_purge.asset_deps[PII_PURGE_KEY])


def test_the_purge_pattern_covers_every_channels_keys():
    for market in MARKETPLACES:
        for key in market.pii_keys:
            text = json.dumps({key: "PII-SENTINEL", "amount": 12.5})
            assert "PII-SENTINEL" not in purge.redact_payload_text(text), (market.channel, key)
            assert "12.5" in purge.redact_payload_text(text)


def test_the_purge_redacts_every_raw_dataset_that_may_name_the_buyer(warehouse, merchant_id):
    """Records no order dates, long past the unmatched rule: every PII key of the channel is
    redacted in every dataset marked as naming the buyer, on both engines."""
    mid = merchant_id("mkt")
    add_merchant(warehouse, mid)
    schema = merchant_schema(mid)
    landed = datetime(2025, 3, 1, 12, tzinfo=UTC)
    json_type = "JSON" if warehouse.dialect == "duckdb" else "JSONB"
    with warehouse.merchant_scope(mid) as conn:
        for channel, dataset in raw_datasets(may_name_buyer=True):
            conn.create_table(schema, raw_table(channel, dataset))
            payload = {key: f"PII-SENTINEL-{key}" for key in marketplaces.marketplace(channel).pii_keys}
            conn.execute(
                f"INSERT INTO {schema}.{raw_table_name(channel, dataset)} (partition_date, source, record_key, "
                f"payload, extracted_at, run_id) VALUES (?, 'seed', 'R-1', CAST(? AS {json_type}), ?, 'seed')",
                [landed.date(), json.dumps({"id": "R-1", **payload}), landed],
            )
    purge.purge_pii(warehouse, mid, now=landed + timedelta(days=400), run_id="r")
    with warehouse.merchant_scope(mid) as conn:
        for channel, dataset in raw_datasets(may_name_buyer=True):
            (text,) = conn.fetchone(f"SELECT CAST(payload AS TEXT) FROM {schema}.{raw_table_name(channel, dataset)}")
            assert "PII-SENTINEL" not in text and "R-1" in text, (channel, dataset)


def test_consumers_do_not_keep_their_own_channel_list():
    """The modules that once wrote the list out read it from marketplaces.py now."""
    for module in (registry, retention_policy, purge, quality):
        assert getattr(module, "CHANNELS", CHANNELS) is CHANNELS, module.__name__
        source = inspect.getsource(module)
        assert '("amazon", "ebay", "walmart")' not in source and "['amazon', 'ebay', 'walmart']" not in source
