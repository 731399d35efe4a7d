"""The audit log: materializations and failed runs copied once from the Dagster event log, the
sensor that does it, key rotation audited, append-only on PostgreSQL, the 12-month purge."""

import json
import secrets
import threading
from datetime import UTC, datetime, time, timedelta

import dagster as dg
import psycopg
import pytest

from assets.extracts import extract_assets
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines.audit import (
    MATERIALIZED,
    RUN_FAILED,
    SECURITY_LOGS_PURGED,
    MaterializationFacts,
    RunFacts,
    audit_run,
    numeric_counts,
    purge_security_logs,
    run_actor,
    run_events,
)
from illuma_pipelines.core.tables import BUYER_PII
from illuma_pipelines.key_rotation import ROTATION_ACTION, rotate_merchant_keys
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.registry import ChannelConnection, add_merchant, record_audit
from illuma_pipelines.retention import DEFAULT_POLICY, can_delete_security_log, rule_cutoff
from illuma_pipelines.retention.periods import add_months
from illuma_pipelines.warehouse import (
    AUDIT_LOG_MIN_RETENTION,
    PIPELINE_ROLE,
    TableSpec,
    Warehouse,
    cols,
)
from resources import sandbox_clients
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource
from sensors.audit import audit_log_sensor, audit_run_materializations, finished_runs_after
from tests.conftest import admin_dsn, pipeline_url, throwaway_database
from tests.sandbox_helpers import amazon_sandbox, sandbox_now

AMAZON_CORE = [a for a in extract_assets if a.key.path[-1] in ("amazon_orders", "amazon_financial_transactions")]
ORDERS = TableSpec("orders", cols("order_id text!"))


def _audit_rows(warehouse, where: str = "TRUE", params=()):
    with warehouse.connect() as conn:
        rows = conn.fetchall(
            f"SELECT event_id, occurred_at, actor, action, merchant_id, details FROM platform.audit_log WHERE {where}",
            list(params),
        )
    return [(*r[:5], r[5] if isinstance(r[5], dict) else json.loads(r[5])) for r in rows]


def _day() -> str:
    return (sandbox_now() - timedelta(days=2)).date().isoformat()


# ------------------------------------------------------------------------------ pure helpers


def test_numeric_counts_keep_finite_numbers_only():
    metadata = {
        "records": dg.IntMetadataValue(12),
        "seconds": dg.FloatMetadataValue(0.25),
        "nan": dg.FloatMetadataValue(float("nan")),
        "skipped": dg.TextMetadataValue("amazon not connected for acme"),
        "flag": dg.BoolMetadataValue(True),
        "payload": dg.JsonMetadataValue({"buyerName": "Jane"}),
        "plain": 3,
    }
    assert numeric_counts(metadata) == {"plain": 3, "records": 12, "seconds": 0.25}


def test_run_actor_names_the_launching_user_when_tagged():
    assert run_actor("abc", {}) == "run:abc"
    assert run_actor("abc", {"user": "ana@illuma.example"}) == "user:ana@illuma.example run:abc"
    assert run_actor("abc", {"dagster/user": "bo@illuma.example"}) == "user:bo@illuma.example run:abc"


def test_run_events_are_built_from_plain_run_facts():
    # No Dagster here: the sensor-side reader turns a run into RunFacts; these become the rows.
    run = RunFacts(
        run_id="r1",
        job="merchant_daily_job",
        tags={"dagster/schedule_name": "merchant_daily_schedule"},
        partition="2026-11-20|acme_parts",
        merchant_hints=("bad id!", "acme_parts"),
        outcome=RUN_FAILED,
        ended_at=1_764_000_000.0,
        failed_steps=("core_orders", "analytics_dbt_models"),
        materializations=(
            MaterializationFacts(1, "extracts/amazon_orders", "2026-11-20|acme_parts", "s1", 1_763_999_000.0,
                                 {"records": dg.IntMetadataValue(3), "note": "text"}, merchant_hint="acme_parts"),
            MaterializationFacts(2, "platform/thing", "bolt_power", "s2", None, {}),
            MaterializationFacts(3, "platform/other", "nobody", "s3", None, {}),
        ),
    )
    tagged, by_partition, fallback, outcome = run_events(run, registered={"bolt_power"})
    assert [e.merchant_id for e in (tagged, by_partition, fallback, outcome)] == [
        "acme_parts", "bolt_power", "acme_parts", "acme_parts"
    ]
    assert tagged.action == MATERIALIZED and tagged.actor == "run:r1"
    assert tagged.details == {
        "asset_key": "extracts/amazon_orders", "partition": "2026-11-20|acme_parts", "job": "merchant_daily_job",
        "step": "s1", "storage_id": 1, "counts": {"records": 3}, "launched_by": "schedule:merchant_daily_schedule",
    }
    assert tagged.occurred_at == datetime.fromtimestamp(1_763_999_000.0, UTC)
    assert outcome.action == RUN_FAILED
    assert outcome.details["failed_steps"] == ["analytics_dbt_models", "core_orders"]
    assert outcome.details["materializations"] == 3
    # Same facts, same ids: copying a run twice adds nothing.
    assert [e.event_id for e in run_events(run, {"bolt_power"})] == [
        e.event_id for e in (tagged, by_partition, fallback, outcome)
    ]
    # A successful run without materializations has nothing to audit (and opens no connection).
    assert audit_run(None, RunFacts(run_id="r2", job="j", tags={}, partition=None)) == 0


def test_the_database_minimum_is_the_policy_minimum():
    assert AUDIT_LOG_MIN_RETENTION == str(DEFAULT_POLICY.rule("security_logs").period)


# ------------------------------------------------------------------ materializations, sensor


def test_a_real_run_is_audited_once_with_merchant_and_counts(warehouse, warehouse_url, merchant_id, instance, vault_resource):
    mid = merchant_id("aud")
    add_merchant(warehouse, mid, channels={"amazon": ChannelConnection("amazon", f"sandbox:{mid}")})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    day = _day()
    with amazon_sandbox() as sandbox:
        result = dg.materialize(
            AMAZON_CORE,
            partition_key=merchant_date_key(mid, day),
            resources={
                "warehouse": WarehouseResource(url=warehouse_url),
                "vault": vault_resource,
                "amazon": sandbox_clients(sandbox.base_url)["amazon"],
            },
            instance=instance,
            tags={"user": "ana@illuma.example"},
        )
    assert result.success
    expected = {
        m.asset_key.to_user_string(): m.metadata["records"].value
        for a in AMAZON_CORE
        for m in result.asset_materializations_for_node(a.op.name)
    }
    assert len(expected) == 2 and any(expected.values())

    assert audit_run_materializations(instance, result.run_id, warehouse) == 2
    rows = _audit_rows(warehouse, "action = ? AND merchant_id = ?", [MATERIALIZED, mid])
    assert len(rows) == 2
    for _, occurred_at, actor, _, merchant, details in rows:
        assert actor == f"user:ana@illuma.example run:{result.run_id}"
        assert merchant == mid
        assert details["partition"] == f"{day}|{mid}"
        assert details["counts"]["records"] == expected[details["asset_key"]]
        assert {"quarantined", "requests", "pages"} <= set(details["counts"])
        # Counts only: the text metadata (window bounds) stays out.
        assert "window_start" not in json.dumps(details)
        assert occurred_at.tzinfo is not None

    assert audit_run_materializations(instance, result.run_id, warehouse) == 0
    assert len(_audit_rows(warehouse, "merchant_id = ? AND action = ?", [mid, MATERIALIZED])) == 2


def test_sensor_audits_every_finished_run_once(tmp_path, merchant_id, instance, vault_resource):
    # DuckDB only: the engine-specific writes are those of the test above, on both engines.
    warehouse_url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    warehouse = Warehouse.from_url(warehouse_url)
    mid, ghost = merchant_id("sens"), merchant_id("ghost")
    # Connected to eBay only: the Amazon extract lands a visible, empty materialization (no HTTP).
    add_merchant(warehouse, mid, channels={"ebay": ChannelConnection("ebay", f"sandbox:{mid}")})
    instance.add_dynamic_partitions(MERCHANTS, [mid, ghost])
    day = _day()
    resources = {
        "warehouse": WarehouseResource(url=warehouse_url),
        "vault": vault_resource,
        "amazon": sandbox_clients("http://127.0.0.1:9")["amazon"],
    }
    ok = dg.materialize(AMAZON_CORE[:1], partition_key=merchant_date_key(mid, day), resources=resources, instance=instance)
    # Never registered: the extract refuses the partition and the run fails.
    failed = dg.materialize(
        AMAZON_CORE[:1], partition_key=merchant_date_key(ghost, day), resources=resources,
        instance=instance, raise_on_error=False,
    )
    assert ok.success and not failed.success

    # Paged one event at a time across event types, nothing is skipped or repeated.
    first = finished_runs_after(instance, 0, limit=1)
    second = finished_runs_after(instance, first[0][0], limit=1)
    assert [r for _, r in first + second] == [ok.run_id, failed.run_id]
    assert finished_runs_after(instance, second[0][0], limit=1) == []

    sensor_resources = {"warehouse": WarehouseResource(url=warehouse_url)}
    with dg.build_sensor_context(instance=instance, resources=sensor_resources) as context:
        result = audit_log_sensor(context)
    assert result.cursor == str(second[0][0])
    assert "2 finished run(s): 2 new audit row(s)" in result.skip_reason.skip_message

    (mat,) = _audit_rows(warehouse, "merchant_id = ? AND action = ?", [mid, MATERIALIZED])
    assert mat[2] == f"run:{ok.run_id}"
    assert mat[5]["asset_key"] == "extracts/amazon_orders" and mat[5]["counts"] == {"records": 0}
    (fail,) = _audit_rows(warehouse, "merchant_id = ? AND action = ?", [ghost, RUN_FAILED])
    assert fail[2] == f"run:{failed.run_id}"
    assert fail[5]["failed_steps"] == [AMAZON_CORE[0].op.name] and fail[5]["materializations"] == 0
    assert "register" not in json.dumps(fail[5]), "error text stays out of the audit log"

    with dg.build_sensor_context(instance=instance, resources=sensor_resources, cursor=result.cursor) as context:
        again = audit_log_sensor(context)
    assert again.cursor is None and "no run finished" in again.skip_reason.skip_message
    # From scratch (a lost cursor) it writes nothing twice.
    with dg.build_sensor_context(instance=instance, resources=sensor_resources) as context:
        assert "0 new audit row(s)" in audit_log_sensor(context).skip_reason.skip_message


def test_sensor_is_in_the_definitions():
    from illuma_pipelines.definitions import defs

    assert defs().resolve_sensor_def("audit_log_sensor") is not None


# ------------------------------------------------------------------------------ key rotation


def test_key_rotation_and_retirement_are_audited_even_when_rotation_fails_midway(warehouse, merchant_id, tmp_path):
    mid = merchant_id("keys")
    add_merchant(warehouse, mid)
    keys = tmp_path / "keys"
    vault = VaultResource(key_store_path=str(keys / "keystore.json"), master_key_file=str(keys / "master.key")).get(warehouse)
    now = datetime.now(UTC)
    vault.create_key_version(mid, now=now - timedelta(days=100))
    warehouse.ensure_merchant_table(mid, BUYER_PII)

    rotate_merchant_keys(vault, warehouse, mid, now, "test:rotation")
    later = now + timedelta(days=2)
    rotate_merchant_keys(vault, warehouse, mid, later, "test:rotation")
    # A stored value the vault cannot read stops the next rotation after its new key exists.
    with warehouse.merchant_scope(mid) as conn:
        conn.execute(
            f"INSERT INTO {merchant_schema(mid)}.{BUYER_PII.name} (channel, marketplace_order_id, buyer_name, "
            "partition_date, loaded_at, run_id) VALUES ('amazon', 'o1', 'not-a-ciphertext', ?, ?, 'r')",
            [now.date(), now],
        )
    with pytest.raises(Exception, match="ciphertext"):
        rotate_merchant_keys(vault, warehouse, mid, now + timedelta(days=200), "test:rotation")

    rows = sorted(_audit_rows(warehouse, "merchant_id = ? AND action = ?", [mid, ROTATION_ACTION]), key=lambda r: r[1])
    assert [r[2] for r in rows] == ["test:rotation"] * 3
    assert rows[0][5]["rotated_to"] == 2 and rows[0][5]["destroyed_versions"] == []
    assert rows[1][5]["rotated_to"] is None and rows[1][5]["destroyed_versions"] == [1]
    assert rows[2][5] == {"rotated_to": 3, "current_version": 3, "failed": "MalformedCiphertext"}


# ---------------------------------------------------------------------- append-only, purge


@pytest.fixture(params=["duckdb", "postgres"])
def own_warehouse(request, tmp_path):
    """A warehouse of this test's own: purges act on the whole audit log."""
    if request.param == "duckdb":
        wh = Warehouse.from_url(f"duckdb:///{tmp_path / 'audit.duckdb'}")
        wh.ensure_platform()
        yield wh
        return
    request.getfixturevalue("pg_url")  # skips (or fails under CI) when Postgres is unreachable
    with throwaway_database("illuma_audit") as dbname:
        wh = Warehouse.from_url(pipeline_url(dbname))
        wh.ensure_platform()
        yield wh


def _months_ago(months: int, at: time = time(15, 30)) -> datetime:
    return datetime.combine(add_months(datetime.now(UTC).date(), -months), at, UTC)


def test_purge_keeps_security_logs_exactly_twelve_months(own_warehouse):
    wh = own_warehouse
    old, young = _months_ago(13), _months_ago(11)
    with wh.connect() as conn:
        old_id = record_audit(conn, actor="t", action="t.old", merchant_id=None, at=old)
        young_id = record_audit(conn, actor="t", action="t.young", merchant_id=None, at=young)
    due = datetime.combine(add_months(old.date(), 12) + timedelta(days=1), time(0), UTC)
    anniversary = old.replace(year=old.year + 1) if add_months(old.date(), 12).day == old.day else None

    def ids():
        return {r[0] for r in _audit_rows(wh, "action IN ('t.old', 't.young')")}

    for before in filter(None, [anniversary, due - timedelta(microseconds=1)]):
        assert not can_delete_security_log(old, before)
        assert purge_security_logs(wh, before) == 0
        assert ids() == {old_id, young_id}
    assert can_delete_security_log(old, due) and rule_cutoff(DEFAULT_POLICY.rule("security_logs"), due) > old
    assert purge_security_logs(wh, due) == 1
    assert ids() == {young_id}
    assert purge_security_logs(wh, due + timedelta(days=20)) == 0  # younger rows always stay
    assert ids() == {young_id}
    purges = _audit_rows(wh, "action = ?", [SECURITY_LOGS_PURGED])
    assert sorted(p[5]["rows_deleted"] for p in purges) == [1]  # purges that deleted nothing add no row
    assert all(p[5]["rule"] == "security_logs" for p in purges)


@pytest.fixture
def pg_warehouse(pg_url):
    wh = Warehouse.from_url(pg_url)
    wh.ensure_platform()
    return wh


def _refused(con, sql, params=None):
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info, con.transaction():
        con.execute(sql, params)
    return str(info.value)


def test_postgres_audit_log_is_insert_only_even_for_superusers(pg_warehouse, merchant_id):
    wh = pg_warehouse
    mid = merchant_id("ro")
    add_merchant(wh, mid)
    wh.ensure_merchant_table(mid, ORDERS)
    with wh.connect() as conn:
        event = record_audit(conn, actor="t", action="t.row", merchant_id=mid, at=_months_ago(24))
    with psycopg.connect(admin_dsn(wh.url), autocommit=True) as con:
        assert con.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
        for role in (None, PIPELINE_ROLE):
            if role:
                con.execute(f"SET ROLE {role}")
            for sql in (
                "UPDATE platform.audit_log SET actor = 'x' WHERE event_id = %s",
                "DELETE FROM platform.audit_log WHERE event_id = %s",
            ):
                _refused(con, sql, [event])
            _refused(con, "TRUNCATE platform.audit_log")
            new_id = f"{role or 'superuser'}-{secrets.token_hex(4)}"
            con.execute(
                "INSERT INTO platform.audit_log (event_id, occurred_at, actor, action) VALUES (%s, now(), 'x', 't.insert')",
                [new_id],
            )
            assert con.execute("SELECT count(*) FROM platform.audit_log WHERE event_id = %s", [new_id]).fetchone() == (1,)
        # The pipeline's role has platform rights and none on any merchant schema (ADR 0001).
        message = _refused(con, f"SELECT * FROM {merchant_schema(mid)}.orders")
        assert "permission denied" in message
        _refused(con, f"INSERT INTO {merchant_schema(mid)}.orders VALUES ('o1')")
        _refused(con, "DROP TRIGGER audit_log_append_only ON platform.audit_log")
        _refused(con, "ALTER TABLE platform.audit_log DISABLE TRIGGER audit_log_append_only")
        con.execute("RESET ROLE")
        # Even with the purge setting, a 24-month-old row cannot be updated, nor the table truncated.
        with con.transaction():
            con.execute("SET LOCAL illuma.purge = 'security_logs'")
            _refused(con, "UPDATE platform.audit_log SET actor = 'x' WHERE event_id = %s", [event])
    assert [r[0] for r in _audit_rows(wh, "event_id = ?", [event])] == [event]


def test_postgres_trigger_refuses_young_rows_even_to_the_purge(pg_warehouse):
    wh = pg_warehouse
    with wh.connect() as conn:
        young = record_audit(conn, actor="t", action="t.young", merchant_id=None, at=_months_ago(11))
    # A purge clock two years ahead selects the row; the database's clock refuses, all or nothing.
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only: DELETE refused"):
        purge_security_logs(wh, datetime.now(UTC) + timedelta(days=730))
    assert [r[0] for r in _audit_rows(wh, "event_id = ?", [young])] == [young]
    with psycopg.connect(wh._dsn) as con:
        con.execute("SET LOCAL illuma.purge = 'security_logs'")
        _refused(con, "DELETE FROM platform.audit_log WHERE event_id = %s", [young])


def test_postgres_platform_setup_is_idempotent_and_safe_concurrently(pg_url):
    with throwaway_database("illuma_setup") as dbname:
        wh = Warehouse.from_url(pipeline_url(dbname))
        errors: list[BaseException] = []

        def setup() -> None:
            try:
                wh.ensure_platform()
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=setup) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wh.ensure_platform()
        assert errors == []
        with psycopg.connect(wh._dsn) as con:
            triggers = con.execute(
                "SELECT tgname, tgenabled::text FROM pg_trigger WHERE tgrelid = 'platform.audit_log'::regclass "
                "AND NOT tgisinternal ORDER BY tgname"
            ).fetchall()
        assert triggers == [("audit_log_append_only", "A"), ("audit_log_no_truncate", "A")]
