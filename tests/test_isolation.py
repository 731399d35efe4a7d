"""Tenant isolation under attack (ADR 0001): a merchant's own SQL never runs with anyone's rights
but its own, and never reaches another merchant or the platform.

PostgreSQL: merchant A plants a probe function in its schema and wires it to every hook a
merchant's SQL can own (row triggers, a rule, a view, a row-level security policy). The probe logs
who it runs as, then tries to steal B's PII and the platform's registry, switch role, erase B,
drop the platform schema and run a program on the server. The platform then does all its work on
A (key rotation, the shredding PII purge, an export, dbt, erasure); each operation must fire the
probe, always as A's own login, with every attempt refused. Then direct escapes from A's scope, a
forged ledger row, one merchant id in two databases, the superuser login refusal, and what
information_schema shows A; and a rule of A's on its own outbox cannot keep its purges off the
platform's ledger. The limit ADR 0001 accepts is pinned too: the pg_catalog shows A other
merchants' schema and table names, never a value of theirs.

DuckDB: from A's confined file every spelling of B's data or of the platform (qualified names,
ATTACH, file readers, COPY, extensions, configuration changes, the catalog views) finds nothing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from assets.analytics import source_table_specs
from illuma_pipelines import purge
from illuma_pipelines.core.tables import BUYER_PII, ORDER_STATUS_HISTORY, ORDERS
from illuma_pipelines.dbt_vars import build_dbt_vars
from illuma_pipelines.export import export_merchant
from illuma_pipelines.key_rotation import rotate_merchant_keys
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.paths import DBT_PROJECT_DIR, PROJECT_ROOT
from illuma_pipelines.raw_records import QUARANTINE, raw_table
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.shredding import purge_and_shred
from illuma_pipelines.warehouse import PIPELINE_ROLE, PostgresWarehouse, Warehouse, WarehouseError
from tests.conftest import PG_ADMIN_URL, admin_dsn, pipeline_url, throwaway_database

NAME, EMAIL = "Jane Q Buyer", "jane.buyer@example.com"
SECRET = "b-secret-marker-7f3a"  # B's data on DuckDB
TABLES = (ORDERS, BUYER_PII, ORDER_STATUS_HISTORY, QUARANTINE, raw_table("amazon", "orders"))
# Escapes tried from A's scope; each must be refused by the database as a missing privilege.
ESCAPES = ("SET ROLE {b_role}", f"SET ROLE {PIPELINE_ROLE}", "SET ROLE postgres",
           "SET SESSION AUTHORIZATION postgres", "SET SESSION AUTHORIZATION {b_role}",
           "SELECT set_config('role', 'postgres', false)",
           "SELECT platform.erase_merchant_warehouse('{b}')")


# ------------------------------------------------------------------------------ PostgreSQL setup
def _onboard(wh: Warehouse, mid: str) -> None:
    add_merchant(wh, mid, channels={"amazon": ChannelConnection("amazon", f"sandbox:{mid}")})


def _seed(wh: Warehouse, vault, mid: str, *, now: datetime) -> None:
    """Core and raw tables in the merchant's own scope: order O-old shipped 400 days before `now`
    (its PII due), O-open not shipped (its PII kept); buyer PII sealed by the vault."""
    schema = merchant_schema(mid)
    old = now - timedelta(days=400)
    with wh.merchant_scope(mid) as conn:
        for spec in TABLES:
            conn.create_table(schema, spec)
        for oid, status, shipped in (("O-old", "shipped", old), ("O-open", "unshipped", None)):
            conn.execute(
                f"INSERT INTO {schema}.core_orders (channel, marketplace_order_id, status, channel_status, "
                "fulfillment_channel, shipped_at, delivered_at, last_updated_at, order_total, currency, "
                "partition_date, loaded_at, run_id) VALUES ('amazon', ?, ?, ?, 'merchant', ?, ?, ?, 12.50, 'USD', ?, ?, 'seed')",
                [oid, status, status.upper(), shipped, shipped, shipped or now, (shipped or now).date(), now],
            )
            record = [f"amazon:{oid}"]
            name = vault.encrypt_column(mid, BUYER_PII.name, "buyer_name", record, [NAME])[0]
            email = vault.encrypt_column(mid, BUYER_PII.name, "buyer_email", record, [EMAIL])[0]
            conn.execute(
                f"INSERT INTO {schema}.core_buyer_pii (channel, marketplace_order_id, buyer_name, buyer_email, "
                "partition_date, loaded_at, run_id) VALUES ('amazon', ?, ?, ?, ?, ?, 'seed')",
                [oid, name, email, (shipped or now).date(), now],
            )
            payload = {"orderId": oid, "buyer": {"buyerName": NAME, "buyerEmail": EMAIL},
                       "proceeds": {"grandTotal": {"amount": "12.50", "currencyCode": "USD"}}}
            conn.execute(
                f"INSERT INTO {schema}.raw_amazon_orders (partition_date, source, record_key, payload, "
                "extracted_at, run_id) VALUES (?, 'seed', ?, CAST(? AS JSONB), ?, 'seed')",
                [(shipped or now).date(), oid, json.dumps(payload), shipped or now],
            )


def _login(wh: Warehouse, mid: str) -> str:
    with wh.connect() as conn:
        return conn.fetchone("SELECT role_name FROM platform.merchant_logins WHERE merchant_id = ?", [mid])[0]


def _merchant_state(wh: Warehouse, mid: str) -> dict[str, list]:
    schema = merchant_schema(mid)
    with wh.merchant_scope(mid) as conn:
        return {t: conn.fetchall(f"SELECT * FROM {schema}.{t} ORDER BY 1, 2")
                for t in ("core_orders", "core_buyer_pii", "raw_amazon_orders")}


def _platform_state(wh: Warehouse, mid: str) -> dict[str, list]:
    with wh.connect() as conn:
        state = {t: conn.fetchall(f"SELECT * FROM platform.{t} WHERE merchant_id = ? ORDER BY 1, 2", [mid])
                 for t in ("merchants", "channel_connections", "merchant_logins")}
        state["placement"] = conn.fetchall("SELECT * FROM platform.placement")
        state["platform tables"] = conn.fetchall(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'platform' ORDER BY 1"
        )
    return state


# ---------------------------------------------------------------------------------- the probe
def _probe_steps(a: str, a_role: str, b: str, b_role: str) -> list[tuple[str, str]]:
    """(label, statement) the probe tries each time it runs; only RESET ROLE may succeed."""
    steal = f"INSERT INTO {merchant_schema(a)}.zz_loot SELECT '{{0}}', t::text FROM {{1}} t"
    return [
        *((f"escape: {sql}", sql) for sql in (s.format(b_role=b_role, b=b) for s in ESCAPES)),
        ("reset role", "RESET ROLE"),
        ("steal B pii", steal.format("b_pii", f"{merchant_schema(b)}.core_buyer_pii")),
        *((f"steal platform.{t}", steal.format(t, f"platform.{t}"))
          for t in ("channel_connections", "merchant_logins", "placement")),
        ("grant B's role", f"GRANT {b_role} TO {a_role}"),
        ("become superuser", f"ALTER ROLE {a_role} SUPERUSER"),
        ("drop the platform", "DROP SCHEMA platform CASCADE"),
        ("run a program", "COPY (SELECT 1) TO PROGRAM 'true'"),
        ("read a server file", "SELECT pg_read_file('postgresql.conf')"),
    ]


def _plant_probe(wh: Warehouse, a: str, b: str, channel: str) -> list[tuple[str, str]]:
    """As merchant A: the probe and every hook that runs it. Returns the probe's steps.

    Every run writes one `entry` row and one row per step (what happened) to zz_log, and
    notifies `channel` (the notification outlives A's schema, so erasure can be watched too)."""
    sa, a_role, b_role = merchant_schema(a), _login(wh, a), _login(wh, b)
    steps = _probe_steps(a, a_role, b, b_role)
    log = (f"INSERT INTO {sa}.zz_log (fired_by, step, session_login, acting_role, outcome) "
           "VALUES (p_by, $s${}$s$, session_user, current_user, {});")
    succeeded, failed = "'SUCCEEDED'", "SQLSTATE || ' ' || SQLERRM"
    attempts = "\n".join(
        f"BEGIN EXECUTE $s${sql}$s$; {log.format(label, succeeded)}\n"
        f"EXCEPTION WHEN others THEN {log.format(label, failed)} END;"
        for label, sql in steps
    )
    entry = log.format("entry", "'ran'")
    with wh.merchant_scope(a) as conn:
        for ddl in (
            f"CREATE TABLE {sa}.zz_loot (source text, data text)",
            f"CREATE TABLE {sa}.zz_log (id bigserial PRIMARY KEY, fired_by text, step text, "
            "session_login text, acting_role text, outcome text)",
            f"CREATE FUNCTION {sa}.zz_probe(p_by text) RETURNS integer LANGUAGE plpgsql AS $probe$\n"
            f"BEGIN\n{entry}\n"
            f"PERFORM pg_notify('{channel}', p_by || ' ' || session_user || ' ' || current_user);\n"
            f"{attempts}\nRETURN 0;\nEND\n$probe$",
            f"CREATE FUNCTION {sa}.zz_probe_trigger() RETURNS trigger LANGUAGE plpgsql AS $t$\n"
            f"BEGIN PERFORM {sa}.zz_probe(TG_OP || ' ' || TG_TABLE_NAME); RETURN NULL; END\n$t$",
            *(f"CREATE TRIGGER zz_after_{op.lower()} AFTER {op} ON {sa}.{table} FOR EACH ROW "
              f"EXECUTE FUNCTION {sa}.zz_probe_trigger()"
              for table in ("core_buyer_pii", "raw_amazon_orders") for op in ("DELETE", "UPDATE")),
            f"CREATE RULE zz_rule AS ON DELETE TO {sa}.core_buyer_pii DO ALSO SELECT {sa}.zz_probe('rule')",
            f"CREATE VIEW {sa}.zz_view AS SELECT {sa}.zz_probe('view') AS probed",
            # Read by export, dbt and erasure's row count; FORCE binds the owner too.
            f"ALTER TABLE {sa}.registry_channel_connections ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {sa}.registry_channel_connections FORCE ROW LEVEL SECURITY",
            f"CREATE POLICY zz_policy ON {sa}.registry_channel_connections USING ({sa}.zz_probe('policy') = 0)",
        ):
            conn.execute(ddl)
    return steps


class ProbeWatch:
    """What A's probe recorded: its log (read in A's scope) and its notifications."""

    def __init__(self, wh: Warehouse, a: str, steps: list[tuple[str, str]], listener: psycopg.Connection) -> None:
        self.wh, self.a, self.steps, self.listener = wh, a, steps, listener
        self.role = _login(wh, a)
        self.seen = 0

    def log(self) -> list[tuple]:
        with self.wh.merchant_scope(self.a) as conn:
            return conn.fetchall(
                f"SELECT id, fired_by, step, session_login, acting_role, outcome FROM {merchant_schema(self.a)}.zz_log ORDER BY id"
            )

    def new_runs(self, operation: str) -> set[str]:
        """The hooks that ran the probe since the last call; checks that it ran, only ever as A,
        and that every step but RESET ROLE was refused for want of privilege."""
        rows = self.log()[self.seen:]
        self.seen += len(rows)
        runs = [r for r in rows if r[2] == "entry"]
        assert runs, f"{operation}: the probe never ran, so the attack was not tried"
        assert {(r[3], r[4]) for r in rows} == {(self.role, self.role)}, f"{operation}: ran as {rows}"
        assert len(rows) == len(runs) * (1 + len(self.steps)), f"{operation}: a probe run stopped early: {rows}"
        for _, fired_by, step, _, _, outcome in rows:
            if step not in ("entry", "reset role"):
                assert outcome.startswith("42501 "), f"{operation} ({fired_by}): {step} -> {outcome}"
        return {r[1] for r in runs}

    def notified(self) -> set[tuple[str, ...]]:
        """(hook, session_user, current_user) of every run notified so far (after its commit)."""
        return {tuple(n.payload.rsplit(" ", 2)) for n in self.listener.notifies(timeout=1.0)}


@contextmanager
def _listening(wh: Warehouse, channel: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(admin_dsn(wh.url), autocommit=True) as listener:
        listener.execute(f"LISTEN {channel}")
        yield listener


def _run_dbt(wh: Warehouse, mid: str, day: str, work: Path) -> None:
    # As the analytics asset does: the tables its sources read exist, empty if nothing landed.
    for spec in source_table_specs():
        wh.ensure_merchant_table(mid, spec)
    dbt_vars, secret_env = build_dbt_vars(mid, day, wh)
    dbt = Path(sys.executable).with_name("dbt")
    proc = subprocess.run(
        [str(dbt), "build", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
         "--target", "postgres", "--vars", json.dumps(dbt_vars),
         "--target-path", str(work / "target"), "--log-path", str(work / "logs")],
        cwd=PROJECT_ROOT, env={**os.environ, **secret_env}, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


# ------------------------------------------------------------------------------ PostgreSQL tests
def test_merchant_code_runs_as_the_merchant_through_every_platform_operation(
    pg_url, merchant_id, vault_resource, tmp_path, monkeypatch
):
    monkeypatch.setenv("ILLUMA_DATA_DIR", str(tmp_path / "data"))
    wh = Warehouse.from_url(pg_url)
    vault = vault_resource.get(wh)
    a, b = merchant_id("a"), merchant_id("b")
    start = datetime.now(UTC)  # the vault's keys are made by the real clock
    later = start + timedelta(days=100)  # keys due for rotation, O-old's PII due for the purge
    for mid in (a, b):
        _onboard(wh, mid)
        _seed(wh, vault, mid, now=start)
    b_before, platform_before = _merchant_state(wh, b), _platform_state(wh, b)
    channel = f"zz_{a}"
    steps = _plant_probe(wh, a, b, channel)

    with _listening(wh, channel) as listener:
        probe = ProbeWatch(wh, a, steps, listener)
        rotated = rotate_merchant_keys(vault, wh, a, later, "test:rotation")
        assert rotated["reencrypted_values"] > 0
        assert probe.new_runs("key rotation") == {"UPDATE core_buyer_pii"}

        result, _ = purge_and_shred(wh, vault, a, now=later, run_id="attacked-purge")
        assert result.by_target()[f"{merchant_schema(a)}.core_buyer_pii"] == 1
        assert {"DELETE core_buyer_pii", "rule", "UPDATE raw_amazon_orders"} <= probe.new_runs("PII purge")

        export = export_merchant(wh, vault, a, requested_by="merchant:a", now=later, out_dir=tmp_path / "exports")
        assert export.row_counts["zz_view"] == 1
        assert probe.new_runs("export") == {"view", "policy"}

        _run_dbt(wh, a, later.date().isoformat(), tmp_path / "dbt")
        assert probe.new_runs("dbt build") == {"policy"}

        with wh.merchant_scope(a) as conn:
            assert conn.fetchall(f"SELECT * FROM {merchant_schema(a)}.zz_loot") == []
        # Everything notified so far ran as A too; what comes next is the erasure's.
        assert {run[1:] for run in probe.notified()} == {(probe.role, probe.role)}
        purge.request_deletion(wh, a, immediate=True, requested_by="merchant:a", now=later)
        erased = purge.erase_account(wh, vault, a, now=later, run_id="attacked-erasure")
        assert {e.rule_id for e in erased.entries} >= {"merchant_schema", "merchant_account"}
        # The erasure counted A's rows in A's scope: the policy ran there, as A, once more.
        assert probe.notified() == {("policy", probe.role, probe.role)}

    with wh.connect() as conn:
        assert conn.fetchone("SELECT count(*) FROM pg_roles WHERE rolname = ?", [probe.role])[0] == 0
        assert conn.fetchone("SELECT to_regnamespace(?) IS NULL", [merchant_schema(a)])[0]
    assert _merchant_state(wh, b) == b_before
    assert _platform_state(wh, b) == platform_before
    # B still works: its own purge runs in its own scope.
    assert purge.purge_pii(wh, b, now=later, run_id="after").by_target()[f"{merchant_schema(b)}.core_buyer_pii"] == 1


def test_no_role_switch_out_of_a_merchant_scope(pg_url, merchant_id):
    wh = Warehouse.from_url(pg_url)
    a, b = merchant_id("a"), merchant_id("b")
    for mid in (a, b):
        _onboard(wh, mid)
    a_role, b_role = _login(wh, a), _login(wh, b)
    for statement in ESCAPES:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with wh.merchant_scope(a) as conn:
                conn.execute(statement.format(b_role=b_role, b=b))
    with wh.merchant_scope(a) as conn:
        conn.execute("RESET ROLE")
        assert conn.fetchone("SELECT session_user, current_user") == (a_role, a_role)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.fetchall(f"SELECT * FROM {merchant_schema(b)}.registry_channel_connections")
    with wh.merchant_scope(b) as conn:
        assert conn.fetchall(f"SELECT channel FROM {merchant_schema(b)}.registry_channel_connections") == [("amazon",)]


def test_a_forged_ledger_row_is_refused_and_audited(pg_url, merchant_id, vault_resource):
    wh = Warehouse.from_url(pg_url)
    vault = vault_resource.get(wh)
    a = merchant_id("a")
    now = datetime.now(UTC)
    _onboard(wh, a)
    _seed(wh, vault, a, now=now)
    schema = merchant_schema(a)
    # Rows a merchant would like on its record, signed without the key (it cannot read it).
    forged = [secrets.token_hex(16) for _ in range(2)]
    with wh.merchant_scope(a) as conn:
        conn.create_table(schema, purge.OUTBOX)
        for ledger_id in forged:
            conn.execute(
                f"INSERT INTO {schema}.retention_outbox (ledger_id, rule_id, target, action, rows_affected, cutoff, "
                "policy_version, policy_fingerprint, purged_at, run_id, signature) "
                "VALUES (?, 'buyer_pii_shipment', ?, 'delete', 999999, NULL, 'forged', 'forged', ?, 'forged', ?)",
                [ledger_id, f"{schema}.core_buyer_pii", now, secrets.token_hex(32)],
            )
    assert purge.flush_ledger(wh, a, wh.placement()[1]) == 0
    # The genuine path still works: a real purge's rows reach the ledger.
    result = purge.purge_pii(wh, a, now=now + timedelta(days=100), run_id="genuine")
    assert result.entries
    with wh.connect() as conn:
        ledger = conn.fetchall("SELECT ledger_id, run_id FROM platform.retention_ledger WHERE merchant_id = ?", [a])
        rejected = conn.fetchall(
            "SELECT CAST(details AS TEXT) FROM platform.audit_log WHERE merchant_id = ? AND action = 'retention.ledger_rejected'",
            [a],
        )
    assert not {lid for lid, _ in ledger} & set(forged)
    assert {run for _, run in ledger} == {"genuine"} and len(ledger) == len(result.entries)
    assert [json.loads(d)["rows"] for (d,) in rejected] == [len(forged)]
    with wh.merchant_scope(a) as conn:
        assert conn.fetchall(f"SELECT ledger_id FROM {schema}.retention_outbox") == []


def test_one_merchant_id_in_two_databases_gets_two_logins(pg_url, merchant_id):
    wh1 = Warehouse.from_url(pg_url)
    with throwaway_database("illuma_twin") as db2:
        PostgresWarehouse(pipeline_url(db2), admin_url=PG_ADMIN_URL).provision()
        wh2 = Warehouse.from_url(pipeline_url(db2))
        mid = merchant_id("twin")
        schema = merchant_schema(mid)
        for wh, value in ((wh1, "first"), (wh2, "second")):
            _onboard(wh, mid)
            with wh.merchant_scope(mid) as conn:
                conn.execute(f"CREATE TABLE {schema}.kept (v text)")
                conn.execute(f"INSERT INTO {schema}.kept VALUES (?)", [value])
        role1, role2 = _login(wh1, mid), _login(wh2, mid)
        assert role1 != role2
        assert all(re.fullmatch(rf"m_{mid}_[0-9a-f]{{8}}", r) for r in (role1, role2))

        wh1.drop_merchant_schema(mid)
        assert not wh1.merchant_schema_exists(mid)
        with wh1.connect() as conn:
            assert conn.fetchall("SELECT rolname FROM pg_roles WHERE rolname IN (?, ?)", [role1, role2]) == [(role2,)]
        with wh2.merchant_scope(mid) as conn:
            assert conn.fetchall(f"SELECT v FROM {schema}.kept") == [("second",)]
            assert conn.fetchone("SELECT current_user")[0] == role2
        wh2.drop_merchant_schema(mid)


def test_a_copy_of_the_database_gets_logins_of_its_own(merchant_id):
    """A database made from another (a restore on the same server, CREATE DATABASE ... TEMPLATE)
    carries the original's placement tag; on provisioning it gets its own, and its merchants new
    logins owning its copy of their data, so erasure works in each whatever the other holds."""
    with throwaway_database("illuma_orig") as original:
        wh1 = Warehouse.from_url(pipeline_url(original))
        wh1.ensure_platform()
        mid = merchant_id("copy")
        schema = merchant_schema(mid)
        _onboard(wh1, mid)
        with wh1.merchant_scope(mid) as conn:
            conn.execute(f"CREATE TABLE {schema}.kept (v text)")
            conn.execute(f"INSERT INTO {schema}.kept VALUES ('data')")
        role1 = _login(wh1, mid)
        with throwaway_database("illuma_copy", template=original) as copy:
            wh2 = Warehouse.from_url(pipeline_url(copy))
            wh2.ensure_platform()
            role2 = _login(wh2, mid)
            assert role2 != role1 and wh2.placement()[0] != wh1.placement()[0]
            with wh2.merchant_scope(mid) as conn:
                assert conn.fetchone(f"SELECT session_user, (SELECT v FROM {schema}.kept)") == (role2, "data")
                conn.execute(f"CREATE TABLE {schema}.made_in_copy (v text)")  # the new login owns the schema
            wh2.drop_merchant_schema(mid)
            with wh1.merchant_scope(mid) as conn:
                assert conn.fetchone(f"SELECT session_user, (SELECT v FROM {schema}.kept)") == (role1, "data")
            wh1.drop_merchant_schema(mid)
            with wh1.connect() as conn:
                assert conn.fetchall("SELECT rolname FROM pg_roles WHERE rolname IN (?, ?)", [role1, role2]) == []


def test_a_superuser_pipeline_login_is_refused(pg_url):
    superuser = conninfo_to_dict(admin_dsn(pg_url))
    wh = Warehouse.from_url(f"postgresql://{superuser['user']}@{superuser['host']}:{superuser['port']}/{superuser['dbname']}")
    with pytest.raises(WarehouseError, match="superuser"):
        with wh.connect():
            pass


def _a_and_b_with_orders(wh: Warehouse, merchant_id, vault) -> tuple[str, str]:
    a, b = merchant_id("a"), merchant_id("b")
    for mid in (a, b):
        _onboard(wh, mid)
    _seed(wh, vault, b, now=datetime.now(UTC))
    with wh.merchant_scope(b) as conn:
        conn.execute(f"ANALYZE {merchant_schema(b)}.core_orders")
    return a, b


def test_information_schema_shows_a_merchant_only_its_own(pg_url, merchant_id, vault_resource):
    wh = Warehouse.from_url(pg_url)
    a, b = _a_and_b_with_orders(wh, merchant_id, vault_resource.get(wh))
    # Routines leave `platform` out of the check: the audit guard's trigger function keeps the
    # default EXECUTE for PUBLIC (listed, yet unusable without USAGE on the schema).
    views = (("schemata", "schema_name", {"platform"}), ("tables", "table_schema", {"platform"}),
             ("columns", "table_schema", {"platform"}), ("routines", "routine_schema", set()))
    with wh.merchant_scope(a) as conn:
        for view, column, hidden in views:
            shown = {r[0] for r in conn.fetchall(f"SELECT DISTINCT {column} FROM information_schema.{view}")}
            assert not shown & {merchant_schema(b), *hidden}, f"{view}: {shown}"
        assert merchant_schema(a) in {r[0] for r in conn.fetchall("SELECT schema_name FROM information_schema.schemata")}


# ----------------------------------------------------------------- known gaps (product bugs to fix)
def test_the_catalog_shows_a_merchant_names_never_values(pg_url, merchant_id, vault_resource):
    """The limit ADR 0001 accepts, pinned both ways: PostgreSQL's catalogs show A the names of B's
    schema and tables (readable by every login), but no value of B's: not its rows, and not the
    column statistics (pg_stats, which hold sampled values, shows only columns A may read)."""
    wh = Warehouse.from_url(pg_url)
    a, b = _a_and_b_with_orders(wh, merchant_id, vault_resource.get(wh))
    b_schema = merchant_schema(b)
    with psycopg.connect(admin_dsn(pg_url), autocommit=True) as admin:
        admin.execute(f"ANALYZE {b_schema}.core_orders")  # B's statistics exist to be leaked
        assert admin.execute("SELECT count(*) FROM pg_stats WHERE schemaname = %s", [b_schema]).fetchone()[0] > 0
    with wh.merchant_scope(a) as conn:
        assert conn.fetchall("SELECT nspname FROM pg_namespace WHERE nspname = ?", [b_schema]) == [(b_schema,)]
        assert conn.fetchall("SELECT count(*) FROM pg_stats WHERE schemaname = ?", [b_schema]) == [(0,)]
        conn.execute("SAVEPOINT probe")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.fetchall(f"SELECT * FROM {b_schema}.core_orders")
        conn.execute("ROLLBACK TO SAVEPOINT probe")


def test_a_merchant_cannot_keep_its_purges_off_the_ledger(pg_url, merchant_id, vault_resource):
    wh = Warehouse.from_url(pg_url)
    a = merchant_id("a")
    now = datetime.now(UTC)
    _onboard(wh, a)
    _seed(wh, vault_resource.get(wh), a, now=now)
    schema = merchant_schema(a)
    with wh.merchant_scope(a) as conn:
        conn.create_table(schema, purge.OUTBOX)
        conn.execute(f"CREATE RULE zz_swallow AS ON INSERT TO {schema}.retention_outbox DO INSTEAD NOTHING")
    result = purge.purge_pii(wh, a, now=now + timedelta(days=100), run_id="swallowed")
    assert result.by_target()[f"{schema}.core_buyer_pii"] == 1  # the purge did delete PII
    with wh.connect() as conn:
        ledger = conn.fetchall("SELECT rule_id FROM platform.retention_ledger WHERE merchant_id = ?", [a])
    assert sorted(r[0] for r in ledger) == sorted(e.rule_id for e in result.entries)


# ---------------------------------------------------------------------------------------- DuckDB
def _duckdb_attacks(b_schema: str, b_file: Path, platform_file: Path, drop: Path) -> list[list[str]]:
    """Each attack: statements run in one scope of A; the last one's rows are what A got."""
    return [
        [f"SELECT * FROM {b_schema}.b_private"],
        [f'SELECT * FROM "{b_schema}".b_private'],
        [f'SELECT * FROM "{b_schema}"."b_private"'],
        [f"SELECT * FROM w.{b_schema}.b_private"],
        [f"SELECT * FROM {b_schema}.main.b_private"],
        ['SELECT * FROM "platform".merchants'],
        ["SELECT * FROM platform.merchants"],
        ["SELECT * FROM w.platform.merchants"],
        [f"SET schema = '{b_schema}'", "SELECT * FROM b_private"],
        [f"USE {b_schema}", "SELECT * FROM b_private"],
        [f"ATTACH '{b_file}' AS x", "SELECT * FROM x.b_private"],
        [f"ATTACH '{b_file}' AS x (READ_ONLY)", "SELECT * FROM x.b_private"],
        [f"ATTACH '{platform_file}' AS x", "SELECT * FROM x.platform.merchants"],
        *([f"SELECT * FROM {reader}('{b_file}')"] for reader in ("read_text", "read_csv", "read_blob")),
        [f"COPY (SELECT 1) TO '{drop / 'stolen.csv'}'"],
        [f"EXPORT DATABASE '{drop / 'export'}'"],
        [f"SELECT * FROM glob('{b_file.parent}/*')"],
        ["INSTALL httpfs"],
        ["LOAD httpfs"],
        ["SET enable_external_access = true"],
        ["SET lock_configuration = false"],
    ]


DENIED = re.compile(
    r"does not exist|No catalog \+ schema named|disabled by configuration|disabled through configuration"
    r"|configuration has been locked"
)
CATALOG_QUERIES = (
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM information_schema.schemata",
    "SELECT * FROM duckdb_databases()",
    "SELECT * FROM duckdb_tables()",
)


def test_duckdb_merchant_file_reaches_nothing_else(tmp_path, merchant_id):
    platform_file = tmp_path / "w.duckdb"
    wh = Warehouse.from_url(f"duckdb:///{platform_file}")
    wh.ensure_platform()
    a, b = merchant_id("a"), merchant_id("b")
    for mid in (a, b):
        _onboard(wh, mid)
    b_schema, b_file = merchant_schema(b), wh.merchant_file(b)
    with wh.merchant_scope(b) as conn:
        conn.execute(f"CREATE TABLE {b_schema}.b_private (v VARCHAR)")
        conn.execute(f"INSERT INTO {b_schema}.b_private VALUES (?)", [SECRET])
    with wh.connect() as conn:
        assert {r[0] for r in conn.fetchall("SELECT merchant_id FROM platform.merchants")} == {a, b}
    drop = tmp_path / "drop"  # where A would write what it took

    def leaked(rows: list[tuple]) -> list[str]:
        cells = [str(c) for row in rows for c in row]
        return [c for c in cells if SECRET in c or b in c or c == "platform" or str(platform_file) in c]

    for attack in _duckdb_attacks(b_schema, b_file, platform_file, drop):
        try:
            with wh.merchant_scope(a) as conn:
                for statement in attack:
                    rows = conn.fetchall(statement)
        except duckdb.Error as exc:
            # Refused as absent, or as outside the confinement: never for a mistake in the attack.
            assert DENIED.search(str(exc)), f"{attack}: {exc}"
        else:
            assert not leaked(rows), f"{attack} -> {rows}"
    assert not drop.exists()

    with wh.merchant_scope(a) as conn:
        for query in CATALOG_QUERIES:
            rows = conn.fetchall(query)
            assert merchant_schema(a) in str(rows), f"{query} shows nothing at all: {rows}"
            assert not leaked(rows), f"{query} -> {rows}"

    wh.drop_merchant_schema(a)
    a_file = wh.merchant_file(a)
    assert not a_file.exists() and not a_file.with_name(a_file.name + ".wal").exists()
    assert not wh.merchant_schema_exists(a)
    with wh.merchant_scope(b) as conn:
        assert conn.fetchall(f"SELECT v FROM {b_schema}.b_private") == [(SECRET,)]
