"""The compliance assets end to end: real sandbox data through the extract and core assets, then
`pii_purge` and `account_erasure` as Dagster runs, on DuckDB and on Postgres. After the purge no
buyer PII is left anywhere in the merchant's schema; after the erasure nothing of the merchant is
left in any schema, file, key store or Dagster partition."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from assets.compliance import ACCOUNT_ERASURE_KEY, compliance_assets
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines import normalize, purge
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.sandbox.server import SandboxClock, SandboxConfig, SandboxServer
from illuma_pipelines.sealing import unseal_payloads
from illuma_pipelines.vault import KeyDestroyed
from illuma_pipelines.warehouse import IN_SCHEMA
from resources.warehouse import WarehouseResource
from sensors.compliance import erasure_requests
from sensors.merchants import _merchant_runs, sync_merchant_partitions
from tests.sandbox_helpers import sandbox_now
from tests.test_core_assets import BUYER_PII, CHANNELS, _materialize, _vault_resource
from tests.test_purge import _rows, assert_warehouse_erased, provisioned_login

NAME_FIELDS = ("buyer_name", "ship_name")
PII_FIELDS = (*NAME_FIELDS, "buyer_email", "buyer_phone", "address_line1")


def _all_text(warehouse, mid):
    """Every text value of every table in the merchant's schema, raw payloads included."""
    schema = merchant_schema(mid)
    out = []
    with warehouse.merchant_scope(mid) as conn:
        tables = conn.base_tables(schema)
        # The scan sees the merchant's tables (an empty catalog would prove nothing).
        assert {BUYER_PII.name, "core_orders", *(f"raw_{c}_orders" for c in CHANNELS)} <= set(tables)
        for table in tables:
            for (column,) in conn.fetchall(
                f"SELECT column_name FROM information_schema.columns WHERE table_name = ? AND {IN_SCHEMA}",
                [table, schema, schema],
            ):
                out += [v for (v,) in conn.fetchall(f"SELECT CAST({column} AS TEXT) FROM {schema}.{table}") if v]
    return out


def _files_naming(folder: Path, needles) -> list[str]:
    """Files under `folder` whose bytes contain any of `needles`."""
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and any(n.encode() in path.read_bytes() for n in needles)
    )


def _pii_per_order(warehouse, mid, vault):
    """(channel, order id) -> the identifying PII its raw payloads hold, as (field, value) pairs
    (sealed at landing: opened through the vault), found with the normalizers themselves."""
    out: dict[tuple[str, str], set[tuple[str, str]]] = {}
    schema = merchant_schema(mid)
    for channel in CHANNELS:
        table = f"raw_{channel}_orders"
        rows = _rows(warehouse, mid, f"SELECT record_key, CAST(payload AS TEXT) FROM {schema}.{table}")
        texts = unseal_payloads(vault, mid, table, channel, rows, actor="pipeline:tests", purpose="find the landed PII")
        payloads = [normalize.loads(text) for text in texts]
        for pii in getattr(normalize, channel).normalize_orders(payloads).pii:
            pairs = {(f, getattr(pii, f)) for f in PII_FIELDS if getattr(pii, f)}
            out.setdefault((pii.channel, pii.marketplace_order_id), set()).update(pairs)
    return out


def _compliance(instance, url, vault_res, mid, day, as_of, selection):
    return dg.materialize(
        selection,
        partition_key=merchant_date_key(mid, day),
        resources={"warehouse": WarehouseResource(url=url), "vault": vault_res},
        instance=instance,
        run_config={"ops": {a.op.name: {"config": {"as_of": as_of.isoformat()}} for a in selection}},
        raise_on_error=False,
        tags={"illuma/merchant": mid},
    )


def test_purge_then_erasure_through_dagster(warehouse, warehouse_url, merchant_id, instance, tmp_path, monkeypatch):
    monkeypatch.setenv("ILLUMA_DATA_DIR", str(tmp_path / "data"))
    mid = merchant_id("gdpr")
    schema = merchant_schema(mid)
    add_merchant(warehouse, mid, channels={c: ChannelConnection(c, f"sandbox:{mid}") for c in CHANNELS})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    vault_res = _vault_resource(tmp_path)
    now = sandbox_now()
    day = (now - timedelta(days=3)).date()
    t1 = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1, minutes=10)
    config = SandboxConfig(seed=5, clock=SandboxClock.fixed_at(t1), history_start=day - timedelta(days=60))
    with SandboxServer(config) as sandbox:
        _materialize(instance, warehouse_url, sandbox.base_url, vault_res, mid, day.isoformat())
    per_order = _pii_per_order(warehouse, mid, vault_res.get(warehouse))
    fields = {field for pairs in per_order.values() for field, _ in pairs}
    assert fields & set(NAME_FIELDS) and fields - set(NAME_FIELDS)  # names, and emails, phones or addresses
    (shipped,) = _rows(warehouse, mid, f"SELECT count(*) FROM {schema}.core_orders WHERE shipped_at IS NOT NULL")[0]
    (facts_before,) = _rows(warehouse, mid, f"SELECT count(*) FROM {schema}.core_orders")[0]
    assert shipped > 0

    # A year on, every shipped or cancelled order's PII is past its limit.
    later = t1 + timedelta(days=365)
    result = _compliance(instance, warehouse_url, vault_res, mid, day.isoformat(), later, [compliance_assets[0]])
    assert result.success
    (mat,) = [e for e in result.get_asset_materialization_events()]
    assert mat.materialization.metadata["rows_affected"].value > 0
    (open_orders,) = _rows(
        warehouse,
        mid,
        f"SELECT count(*) FROM {schema}.core_orders WHERE shipped_at IS NULL AND status <> 'cancelled'",
    )[0]
    (pii_left,) = _rows(warehouse, mid, f"SELECT count(*) FROM {schema}.{BUYER_PII.name}")[0]
    assert pii_left <= open_orders  # only orders still to be fulfilled keep their PII
    # Every order that shipped or ended (the sandbox's eBay orders carry no ship date: their
    # shipment is when first seen shipped) has no PII left anywhere in the schema.
    open_keys = set(_rows(
        warehouse,
        mid,
        f"SELECT channel, marketplace_order_id FROM {schema}.core_orders WHERE status IN ('pending', 'unshipped')",
    ))
    kept = {v for key, pairs in per_order.items() if key in open_keys for _, v in pairs}
    closed = {v for key, pairs in per_order.items() if key not in open_keys for _, v in pairs} - kept
    assert closed
    text = "\n".join(_all_text(warehouse, mid))
    leaked = sorted(v for v in closed if v in text)
    assert leaked == [], "buyer PII survived the purge"
    assert _rows(warehouse, mid, f"SELECT count(*) FROM {schema}.core_orders")[0][0] == facts_before
    # A re-run changes nothing.
    again = _compliance(instance, warehouse_url, vault_res, mid, day.isoformat(), later, [compliance_assets[0]])
    (mat,) = [e for e in again.get_asset_materialization_events()]
    assert mat.materialization.metadata["rows_affected"].value == 0

    # Erasure is refused (no retry) while the account is active; then the merchant asks for it.
    refused = _compliance(instance, warehouse_url, vault_res, mid, day.isoformat(), later, [compliance_assets[1]])
    assert not refused.success
    purge.request_deletion(warehouse, mid, immediate=True, requested_by="merchant", now=later)
    # Other tests' merchants share the Postgres test database: look at this one's request.
    (request,) = [r for r in erasure_requests(warehouse, later) if r.tags["illuma/merchant"] == mid]
    assert request.job_name == "account_erasure_job" and request.tags["illuma/merchant"] == mid
    ciphertext = _rows(warehouse, mid, f"SELECT buyer_name FROM {schema}.{BUYER_PII.name} WHERE buyer_name IS NOT NULL")
    login = provisioned_login(warehouse, mid)
    erased = _compliance(instance, warehouse_url, vault_res, mid, day.isoformat(), later, [compliance_assets[1]])
    assert erased.success
    assert_warehouse_erased(warehouse, mid, login)
    with warehouse.connect() as conn:
        assert conn.fetchone("SELECT count(*) FROM platform.merchants WHERE merchant_id = ?", [mid])[0] == 0
    if ciphertext:
        vault = vault_res.get(warehouse)
        try:
            vault.reveal(mid, BUYER_PII.name, "buyer_name", "x:y", ciphertext[0][0], actor="t", purpose="t")
        except KeyDestroyed:
            pass
        else:
            raise AssertionError("an erased merchant's ciphertext still decrypts")

    # The merchants sensor's plan: the partition, its runs and its materializations go.
    run_ids = _merchant_runs(instance, mid)
    assert run_ids
    home = Path(instance.root_directory)
    assert any(p.name.startswith(tuple(run_ids)) for p in home.rglob("*"))  # per-run files exist
    assert _files_naming(home, [mid])  # e.g. compute logs of dbt and the extracts name m_<id>
    changes = sync_merchant_partitions(instance, warehouse)
    assert changes.to_remove == [mid]
    assert mid not in instance.get_dynamic_partitions(MERCHANTS)
    assert _merchant_runs(instance, mid) == set()
    for key in instance.all_asset_keys():
        assert not [k for k in instance.get_materialized_partitions(key) if k.endswith(f"|{mid}")], key
    # No materialization event of the merchant is left in the event log (only Dagster's cached
    # "latest materialization" per asset key may name it, until that asset next materializes).
    for key in (ACCOUNT_ERASURE_KEY, *(dg.AssetKey(["extracts", f"{c}_orders"]) for c in CHANNELS)):
        records = instance.fetch_materializations(key, limit=1000).records
        assert not [r for r in records if r.partition_key and r.partition_key.endswith(f"|{mid}")]
    assert not (tmp_path / "data" / "exports" / mid).exists()
    # Nothing under the Dagster home names the merchant or one of its runs, in its name or its
    # bytes: compute logs, per-run event logs and deleted rows of the SQLite files included.
    assert not [p for p in home.rglob("*") if any(r in p.name for r in run_ids)]
    assert _files_naming(home, [mid, *run_ids]) == []
