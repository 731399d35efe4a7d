"""Retention purges and account erasure on both engines, with a controllable clock.

One test per order-dated policy row at its boundary: the second before the due day nothing goes;
on the due day the PII goes from everywhere it lived (PII table, raw payloads, quarantine), order
facts stay. Then idempotency, resumption after a crash, security logs, erasure.
"""

import contextlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from illuma_pipelines import normalize, purge
from illuma_pipelines.audit import purge_security_logs
from illuma_pipelines.core.tables import BUYER_PII, ORDER_STATUS_HISTORY, ORDERS, PII_COLUMNS
from illuma_pipelines.dbt_vars import merchant_parse_cache, parse_cache_dir
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.paths import DBT_PROJECT_DIR
from illuma_pipelines.raw_records import QUARANTINE, raw_table
from illuma_pipelines.registry import add_merchant, record_audit
from illuma_pipelines.retention import DEFAULT_POLICY
from illuma_pipelines.vault import KeyDestroyed
from illuma_pipelines.warehouse import Warehouse
from resources.vault import VaultResource

ANCHOR = datetime(2026, 1, 31, 13, 45, tzinfo=UTC)
SECOND = timedelta(seconds=1)
NAME, EMAIL, STREET = "Jane Q Buyer", "jane.buyer@example.com", "1 Elm Street"

# Payloads in each channel's documented shape, carrying PII and an exact amount.
PAYLOADS = {
    "amazon": lambda oid: {
        "orderId": oid,
        "buyer": {"buyerName": NAME, "buyerEmail": EMAIL},
        "recipient": {"deliveryAddress": {"name": NAME, "addressLine1": STREET, "city": "Boise",
                                          "postalCode": "83702", "countryCode": "US", "phone": "+1 208 555 0100"}},
        "proceeds": {"grandTotal": {"amount": "12.50", "currencyCode": "USD"}},
    },
    "ebay": lambda oid: {
        "orderId": oid,
        "buyer": {"username": "jane_buyer_77", "buyerRegistrationAddress": {
            "fullName": NAME, "email": EMAIL, "primaryPhone": {"phoneNumber": "2085550100"},
            "contactAddress": {"addressLine1": STREET, "city": "Boise", "countryCode": "US"}}},
        "fulfillmentStartInstructions": [{"shippingStep": {"shipTo": {
            "fullName": NAME, "contactAddress": {"addressLine1": STREET, "countryCode": "US"}}}}],
        "pricingSummary": {"total": {"value": "12.50", "currency": "USD"}},
    },
    "walmart": lambda oid: {
        "purchaseOrderId": oid,
        "customerEmailId": EMAIL,
        "shippingInfo": {"phone": "2085550100", "methodCode": "Standard", "postalAddress": {
            "name": NAME, "address1": STREET, "city": "Boise", "state": "ID", "postalCode": "83702",
            "country": "USA"}},
        "orderLines": {"orderLine": [{"charges": {"charge": [{"chargeAmount": {"amount": 12.50}}]}}]},
    },
}


def _json_type(wh: Warehouse) -> str:
    return "JSON" if wh.dialect == "duckdb" else "JSONB"


def _setup(wh: Warehouse, mid: str) -> str:
    add_merchant(wh, mid)
    schema = merchant_schema(mid)
    with wh.merchant_scope(mid) as conn:
        for spec in (ORDERS, BUYER_PII, ORDER_STATUS_HISTORY, QUARANTINE, raw_table("ebay", "financial_transactions"),
                     *(raw_table(c, "orders") for c in PAYLOADS)):
            conn.create_table(schema, spec)
    return schema


def _seed(wh, mid, channel, oid, *, status="shipped", shipped=None, delivered=None, updated=None,
          extracted=ANCHOR, in_core=True, seen_shipped=None):
    schema = merchant_schema(mid)
    with wh.merchant_scope(mid) as conn:
        if in_core:
            conn.execute(
                f"INSERT INTO {schema}.core_orders (channel, marketplace_order_id, status, channel_status, "
                "fulfillment_channel, shipped_at, delivered_at, last_updated_at, order_total, currency, "
                "partition_date, loaded_at, run_id) VALUES (?, ?, ?, ?, 'merchant', ?, ?, ?, 12.50, 'USD', ?, ?, 'seed')",
                [channel, oid, status, status.upper(), shipped, delivered, updated or ANCHOR, ANCHOR.date(), ANCHOR],
            )
            conn.execute(
                f"INSERT INTO {schema}.core_buyer_pii (channel, marketplace_order_id, buyer_name, buyer_email, "
                "partition_date, loaded_at, run_id) VALUES (?, ?, 'v1:sealed-name', 'v1:sealed-email', ?, ?, 'seed')",
                [channel, oid, ANCHOR.date(), ANCHOR],
            )
            if seen_shipped is not None:  # first seen shipped by a channel that gives no ship date
                conn.execute(
                    f"INSERT INTO {schema}.core_order_status_history (channel, marketplace_order_id, status, "
                    "channel_status, changed_at, partition_date, loaded_at, run_id) "
                    "VALUES (?, ?, 'shipped', 'FULFILLED', ?, ?, ?, 'seed')",
                    [channel, oid, seen_shipped, ANCHOR.date(), ANCHOR],
                )
            if status == "cancelled":
                conn.execute(
                    f"INSERT INTO {schema}.core_order_status_history (channel, marketplace_order_id, status, "
                    "channel_status, changed_at, partition_date, loaded_at, run_id) "
                    "VALUES (?, ?, 'cancelled', 'CANCELLED', ?, ?, ?, 'seed')",
                    [channel, oid, updated or ANCHOR, ANCHOR.date(), ANCHOR],
                )
        conn.execute(
            f"INSERT INTO {schema}.raw_{channel}_orders (partition_date, source, record_key, payload, "
            f"extracted_at, run_id) VALUES (?, 'seed', ?, CAST(? AS {_json_type(wh)}), ?, 'seed')",
            [extracted.date(), oid, json.dumps(PAYLOADS[channel](oid)), extracted],
        )


def _rows(wh, mid, sql, params=()):
    """The rows of a query on the merchant's own tables (only its scope reaches them)."""
    with wh.merchant_scope(mid) as conn:
        return conn.fetchall(sql, params)


def _state(wh, mid, channel, oid):
    """(PII row present, raw payload text) of one order."""
    schema = merchant_schema(mid)
    with wh.merchant_scope(mid) as conn:
        (pii,) = conn.fetchone(
            f"SELECT count(*) FROM {schema}.core_buyer_pii WHERE channel = ? AND marketplace_order_id = ?",
            [channel, oid],
        )
        (payload,) = conn.fetchone(
            f"SELECT CAST(payload AS TEXT) FROM {schema}.raw_{channel}_orders WHERE record_key = ?", [oid]
        )
    return pii, payload


_LEDGER_COLUMNS = "ledger_id, rule_id, target, action, rows_affected"


def _platform_ledger(wh, mid):
    """The merchant's rows of platform.retention_ledger: (ledger id, rule, target, action, rows)."""
    with wh.connect() as conn:
        return conn.fetchall(
            f"SELECT {_LEDGER_COLUMNS} FROM platform.retention_ledger WHERE merchant_id = ? ORDER BY rule_id, target",
            [mid],
        )


def _ledger(wh, mid):
    """The merchant's rows of platform.retention_ledger: (rule, target, action, rows)."""
    return [row[1:] for row in _platform_ledger(wh, mid)]


def _merchant_ledger(wh, mid, table):
    """The ledger rows in one of the merchant's own tables, its report (purge.REPORT_VIEW) or its
    outbox (purge.OUTBOX_TABLE), as _platform_ledger; none before the first purge made it."""
    schema = merchant_schema(mid)
    with wh.merchant_scope(mid) as conn:
        if not conn.table_exists(schema, table):
            return []
        return conn.fetchall(f"SELECT {_LEDGER_COLUMNS} FROM {schema}.{table} ORDER BY rule_id, target")


def _assert_report_matches_ledger(wh, mid):
    """The merchant's own report (a table in its schema) holds exactly the rows the platform
    ledger holds for it, ledger ids included (each row once, none lost, none extra), and nothing
    is left waiting in the outbox."""
    assert sorted(_merchant_ledger(wh, mid, purge.REPORT_VIEW)) == sorted(_platform_ledger(wh, mid))
    assert _merchant_ledger(wh, mid, purge.OUTBOX_TABLE) == []


def provisioned_login(wh, mid):
    """Check the merchant's warehouse is there (its schema; on DuckDB its file) and return its
    PostgreSQL login role (in platform.merchant_logins and in pg_roles), or None on DuckDB (no
    logins: the merchant's file is its boundary)."""
    assert wh.merchant_schema_exists(mid)
    if wh.dialect != "postgres":
        return None
    with wh.connect() as conn:
        (role,) = conn.fetchone("SELECT role_name FROM platform.merchant_logins WHERE merchant_id = ?", [mid])
        assert conn.fetchone("SELECT count(*) FROM pg_roles WHERE rolname = ?", [role])[0] == 1
    return role


def assert_warehouse_erased(wh, mid, login):
    """Nothing of the merchant is left in the warehouse: no schema (DuckDB: no file, no write-ahead
    log or spill folder), no login role, no merchant_logins row. `login` is provisioned_login() taken
    before the erasure."""
    schema = merchant_schema(mid)
    assert not wh.merchant_schema_exists(mid)
    with wh.connect() as conn:
        assert conn.fetchone("SELECT count(*) FROM platform.merchant_logins WHERE merchant_id = ?", [mid])[0] == 0
        if wh.dialect == "postgres":
            assert conn.fetchone("SELECT to_regnamespace(?) IS NULL", [schema])[0]
            assert conn.fetchone("SELECT count(*) FROM pg_roles WHERE rolname = ?", [login])[0] == 0
    if wh.dialect == "duckdb":
        assert not wh.merchant_file(mid).exists()
        assert sorted(p.name for p in wh.merchants_dir.glob(f"{schema}.*")) == []


def _no_pii_left(payload: str) -> None:
    for value in (NAME, EMAIL, STREET, "jane_buyer_77", "2085550100", "83702"):
        assert value not in payload


# rule -> (channel, seed kwargs, the day the rule falls due): the hand-written table of
# tests/test_retention.py, applied to data.
CASES = {
    "buyer_pii_amazon_delivery": ("amazon", {"shipped": ANCHOR - timedelta(days=2), "delivered": ANCHOR},
                                  datetime(2026, 3, 2, tzinfo=UTC)),
    "buyer_pii_amazon_delivery(shipment fallback)": ("amazon", {"shipped": ANCHOR}, datetime(2026, 3, 2, tzinfo=UTC)),
    "buyer_pii_shipment": ("ebay", {"shipped": ANCHOR}, datetime(2026, 5, 1, tzinfo=UTC)),
    "buyer_pii_shipment(walmart)": ("walmart", {"shipped": ANCHOR, "delivered": ANCHOR + timedelta(days=3)},
                                    datetime(2026, 5, 1, tzinfo=UTC)),
    # eBay's order payload has no ship date: shipment is when the order was first seen shipped.
    "buyer_pii_shipment(ebay, first seen shipped)": ("ebay", {"seen_shipped": ANCHOR}, datetime(2026, 5, 1, tzinfo=UTC)),
    "buyer_pii_cancelled": ("walmart", {"status": "cancelled", "updated": ANCHOR}, datetime(2026, 3, 2, tzinfo=UTC)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_pii_rule_at_its_boundary(warehouse, merchant_id, case):
    rule_id = case.split("(")[0]
    channel, seed, due_day = CASES[case]
    mid = merchant_id()
    schema = _setup(warehouse, mid)
    _seed(warehouse, mid, channel, "O-1", **seed)
    _seed(warehouse, mid, channel, "O-open", status="unshipped")  # never shipped: PII still needed
    order_before = _rows(warehouse, mid, f"SELECT * FROM {schema}.core_orders ORDER BY marketplace_order_id")

    day_before = purge.purge_pii(warehouse, mid, now=due_day - SECOND, run_id="r1")
    assert day_before.total == 0
    pii, payload = _state(warehouse, mid, channel, "O-1")
    assert pii == 1 and NAME in payload

    on_the_day = purge.purge_pii(warehouse, mid, now=due_day, run_id="r2")
    pii, payload = _state(warehouse, mid, channel, "O-1")
    assert pii == 0
    _no_pii_left(payload)
    doc = json.loads(payload)
    assert "12.5" in payload and doc  # the rest of the payload is kept, amounts exact
    raw_rule = DEFAULT_POLICY.rule(rule_id.replace("buyer_pii", "raw_pii")).id
    assert {(e.rule_id, e.rows_affected) for e in on_the_day.entries} == {(rule_id, 1), (raw_rule, 1)}
    # The open order keeps its PII; order facts are untouched.
    pii_open, payload_open = _state(warehouse, mid, channel, "O-open")
    assert pii_open == 1 and NAME in payload_open
    assert _rows(warehouse, mid, f"SELECT * FROM {schema}.core_orders ORDER BY marketplace_order_id") == order_before
    # The merchant's own report shows it, row for row as the platform's ledger.
    report = _rows(warehouse, mid, f"SELECT rule_id, rows_affected FROM {schema}.{purge.REPORT_VIEW}")
    assert sorted(report) == sorted((e.rule_id, e.rows_affected) for e in on_the_day.entries)
    _assert_report_matches_ledger(warehouse, mid)


def test_unmatched_raw_records_and_quarantine_at_their_boundary(warehouse, merchant_id):
    mid = merchant_id()
    schema = _setup(warehouse, mid)
    jt = _json_type(warehouse)
    _seed(warehouse, mid, "amazon", "O-reject", in_core=False)  # a record the normalizer rejected
    with warehouse.merchant_scope(mid) as conn:
        conn.execute(
            f"INSERT INTO {schema}.raw_ebay_financial_transactions (partition_date, source, record_key, payload, "
            f"extracted_at, run_id) VALUES (?, 'seed', 'T-1', CAST(? AS {jt}), ?, 'seed')",
            [ANCHOR.date(), json.dumps({"transactionId": "T-1", "buyer": {"username": "jane_buyer_77"},
                                        "amount": {"value": "12.50"}}), ANCHOR],
        )
        conn.execute(
            f"INSERT INTO {schema}.raw_quarantine (partition_date, dataset, source, position, reason, payload, "
            "extracted_at, run_id) VALUES (?, 'amazon_orders', 'seed', 0, 'bad date', ?, ?, 'seed')",
            [ANCHOR.date(), json.dumps(PAYLOADS["amazon"]("O-q")), ANCHOR],
        )
    due = datetime(2026, 3, 2, tzinfo=UTC)

    def texts():
        with warehouse.merchant_scope(mid) as conn:
            return [
                conn.fetchone(f"SELECT CAST(payload AS TEXT) FROM {schema}.raw_amazon_orders")[0],
                conn.fetchone(f"SELECT CAST(payload AS TEXT) FROM {schema}.raw_ebay_financial_transactions")[0],
                conn.fetchone(f"SELECT payload FROM {schema}.raw_quarantine")[0],
            ]

    assert purge.purge_pii(warehouse, mid, now=due - SECOND, run_id="r1").total == 0
    assert all("jane" in t.lower() for t in texts())
    result = purge.purge_pii(warehouse, mid, now=due, run_id="r2")
    for text in texts():
        _no_pii_left(text)
        assert "12.5" in text
    assert {e.rule_id for e in result.entries} == {"raw_pii_unmatched"}
    assert result.total == 3


def test_a_rerun_changes_nothing_and_writes_no_ledger_rows(warehouse, merchant_id):
    mid = merchant_id()
    _setup(warehouse, mid)
    for i, channel in enumerate(PAYLOADS):
        _seed(warehouse, mid, channel, f"O-{i}", shipped=ANCHOR)
    later = ANCHOR + timedelta(days=200)
    first = purge.purge_pii(warehouse, mid, now=later, run_id="r1")
    assert first.total == 6
    ledger = _ledger(warehouse, mid)
    assert sum(r[3] for r in ledger) == 6
    _assert_report_matches_ledger(warehouse, mid)
    again = purge.purge_pii(warehouse, mid, now=later + timedelta(days=1), run_id="r2")
    assert again.total == 0 and again.entries == []
    assert _ledger(warehouse, mid) == ledger
    _assert_report_matches_ledger(warehouse, mid)


class _CrashingWarehouse:
    """The real warehouse, whose process dies (an exception) as it is about to run the n-th SQL
    statement containing `fragment`, on the platform's connection or in the merchant's scope."""

    def __init__(self, wh: Warehouse, fragment: str, n: int) -> None:
        self._wh, self.fragment, self.left = wh, fragment, n
        self.dialect, self.url = wh.dialect, wh.url

    @contextlib.contextmanager
    def connect(self):
        with self._wh.connect() as conn:
            yield _CrashingConnection(conn, self)

    @contextlib.contextmanager
    def merchant_scope(self, merchant_id):
        with self._wh.merchant_scope(merchant_id) as conn:
            yield _CrashingConnection(conn, self)

    def __getattr__(self, name):
        return getattr(self._wh, name)


class _CrashingConnection:
    def __init__(self, conn, owner) -> None:
        self._conn, self._owner = conn, owner

    def __getattr__(self, name):
        attr = getattr(self._conn, name)
        if name not in ("execute", "execute_count", "fetchall", "fetchone", "load_frame"):
            return attr

        def statement(sql, *args, **kwargs):  # load_frame's first argument is a schema name
            if self._owner.fragment in str(sql):
                self._owner.left -= 1
                if self._owner.left == 0:
                    raise KeyboardInterrupt("killed midway")
            return attr(sql, *args, **kwargs)

        return statement


# (statement the process dies at, its occurrence, PII purged by then, ledger written by then)
CRASHES = {
    "after the PII delete": ("raw_amazon_orders ADD COLUMN", 1, False, False),
    "between raw tables": ("raw_ebay_orders ADD COLUMN", 1, False, False),
    "amid the merchant's ledger rows": (f"{purge.OUTBOX_TABLE} (ledger_id", 3, False, False),
    "after the merchant's commit": ("FROM platform.retention_ledger WHERE ledger_id", 1, True, False),
    "amid the platform's ledger rows": ("INSERT INTO platform.retention_ledger", 3, True, False),
    "before the outbox is emptied": (f"{purge.OUTBOX_TABLE} WHERE ledger_id", 1, True, True),
}


@pytest.mark.parametrize("crash", list(CRASHES))
def test_a_purge_killed_midway_completes_on_the_next_run(warehouse, merchant_id, crash):
    mid = merchant_id()
    _setup(warehouse, mid)
    for i, channel in enumerate(PAYLOADS):
        _seed(warehouse, mid, channel, f"O-{i}", shipped=ANCHOR)
    later = ANCHOR + timedelta(days=200)
    fragment, n, purged, ledgered = CRASHES[crash]
    crashing = _CrashingWarehouse(warehouse, fragment, n)
    with pytest.raises(KeyboardInterrupt):
        purge.purge_pii(crashing, mid, now=later, run_id="killed")
    # Killed in the merchant's transaction: nothing half done, nothing ledgered. Killed after it:
    # the PII is gone and its ledger rows wait, signed, in the outbox until a run copies them;
    # the platform's ledger holds all of them or none.
    for i, channel in enumerate(PAYLOADS):
        pii, payload = _state(warehouse, mid, channel, f"O-{i}")
        assert (pii, NAME in payload) == ((0, False) if purged else (1, True))
    outbox = _merchant_ledger(warehouse, mid, purge.OUTBOX_TABLE)
    assert sum(r[4] for r in outbox) == (6 if purged else 0)
    assert _merchant_ledger(warehouse, mid, purge.REPORT_VIEW) == outbox  # written together
    assert sum(r[3] for r in _ledger(warehouse, mid)) == (6 if ledgered else 0)
    purge.purge_pii(warehouse, mid, now=later, run_id="resumed")
    for i, channel in enumerate(PAYLOADS):
        pii, payload = _state(warehouse, mid, channel, f"O-{i}")
        assert pii == 0
        _no_pii_left(payload)
    ledger = _ledger(warehouse, mid)
    assert sum(r[3] for r in ledger) == 6  # every value counted once
    assert len({(r[0], r[1]) for r in ledger}) == len(ledger)
    _assert_report_matches_ledger(warehouse, mid)


def test_security_logs_survive_every_purge(warehouse, merchant_id, tmp_path):
    mid = merchant_id()
    _setup(warehouse, mid)
    _seed(warehouse, mid, "ebay", "O-1", shipped=ANCHOR)
    with warehouse.connect() as conn:
        # Eleven months old by the real clock: inside the 12-month minimum whatever the date.
        record_audit(conn, actor="test", action="pii.reveal", merchant_id=mid,
                     at=datetime.now(UTC) - timedelta(days=330))
        before = conn.fetchone("SELECT count(*) FROM platform.audit_log WHERE merchant_id = ?", [mid])[0]
    purge.purge_pii(warehouse, mid, now=ANCHOR + timedelta(days=200), run_id="r1")
    purge.request_deletion(warehouse, mid, immediate=True, requested_by="merchant", now=ANCHOR + timedelta(days=201))
    vault = VaultResource(key_store_path=str(tmp_path / "k" / "ks.json"), master_key_file=str(tmp_path / "k" / "mk"))
    purge.erase_account(warehouse, vault.get(warehouse), mid, now=ANCHOR + timedelta(days=201), run_id="r2")
    # The security-log purge (run daily by pii_purge, by the real clock) keeps rows under 12 months.
    assert purge_security_logs(warehouse, datetime.now(UTC)) >= 0
    with warehouse.connect() as conn:
        after = conn.fetchone("SELECT count(*) FROM platform.audit_log WHERE merchant_id = ?", [mid])[0]
        kept = conn.fetchone(
            "SELECT count(*) FROM platform.audit_log WHERE merchant_id = ? AND action = 'pii.reveal'", [mid]
        )[0]
    assert after > before and kept == 1


# ------------------------------------------------------------------------------------ erasure
def _vault(tmp_path, wh):
    res = VaultResource(key_store_path=str(tmp_path / "keys" / "ks.json"), master_key_file=str(tmp_path / "keys" / "mk"))
    return res.get(wh)


def test_erasure_waits_30_days_then_leaves_only_the_ledger(warehouse, merchant_id, tmp_path, monkeypatch):
    monkeypatch.setenv("ILLUMA_DATA_DIR", str(tmp_path / "data"))
    mid = merchant_id()
    _setup(warehouse, mid)
    _seed(warehouse, mid, "amazon", "O-1", shipped=ANCHOR)
    login = provisioned_login(warehouse, mid)
    vault = _vault(tmp_path, warehouse)
    sealed = vault.encrypt_column(mid, "core_buyer_pii", "buyer_name", ["amazon:O-1"], [NAME])[0]
    export_dir = purge.data_dir() / "exports" / mid
    export_dir.mkdir(parents=True)
    (export_dir / "old-export.zip").write_bytes(b"archive")
    # A report rendered for the merchant: its files and its row go with the account.
    from illuma_pipelines.reports.store import get_report, record_report, reports_dir

    report_dir = reports_dir(mid, "2026-01")
    report_dir.mkdir(parents=True)
    (report_dir / "monthly.pdf").write_bytes(b"%PDF-1.4")
    record_report(warehouse, mid, "monthly", "2026-01", [report_dir / "monthly.pdf"])

    with pytest.raises(purge.ErasureNotDue, match="active"):
        purge.erase_account(warehouse, vault, mid, now=ANCHOR, run_id="early")
    request = purge.request_deletion(warehouse, mid, requested_by="merchant:support-ticket-1", now=ANCHOR)
    assert request["deadline"] == ANCHOR + timedelta(days=30)
    due = datetime(2026, 3, 2, tzinfo=UTC)  # termination day + 30
    assert request["erasure_due_at"] == due
    assert mid not in [s.merchant_id for s in purge.due_erasures(warehouse, due - SECOND)]
    with pytest.raises(purge.ErasureNotDue, match="due from"):
        purge.erase_account(warehouse, vault, mid, now=due - SECOND, run_id="early")
    assert mid in [s.merchant_id for s in purge.due_erasures(warehouse, due)]

    # dbt's kept parse of the merchant and a build's directory (its compiled SQL names the schema).
    dbt_files = [merchant_parse_cache(parse_cache_dir(), "duckdb", mid), DBT_PROJECT_DIR / "target" / f"{mid}-run1-0"]
    other = DBT_PROJECT_DIR / "target" / f"{mid}x-run1-0"  # another merchant's, whose id starts alike
    for path in (*dbt_files, other):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("compiled for m_" + mid)
    result = purge.erase_account(warehouse, vault, mid, now=due, run_id="erase")
    assert {e.rule_id for e in result.entries} == {"merchant_schema", "merchant_keys", "merchant_account"}
    assert [p for p in dbt_files if p.exists()] == [] and other.exists()
    other.unlink()
    assert_warehouse_erased(warehouse, mid, login)
    with warehouse.connect() as conn:
        for table in ("merchants", "channel_connections"):
            assert conn.fetchone(f"SELECT count(*) FROM platform.{table} WHERE merchant_id = ?", [mid])[0] == 0
        (done,) = conn.fetchone("SELECT outcome FROM platform.data_requests WHERE merchant_id = ?", [mid])
        assert done == "erased"
    assert not export_dir.exists()
    assert not report_dir.parent.exists() and get_report(warehouse, mid, "monthly", "2026-01") is None
    with pytest.raises(KeyDestroyed):
        _vault(tmp_path, warehouse).reveal(mid, "core_buyer_pii", "buyer_name", "amazon:O-1", sealed,
                                           actor="test", purpose="prove shredding")
    ledger = _ledger(warehouse, mid)
    assert ledger and not any(NAME in str(row) for row in ledger)

    # Done is done: a re-run (e.g. the sensor's retry) changes nothing and adds no ledger rows.
    assert purge.erase_account(warehouse, vault, mid, now=due + SECOND, run_id="again").entries == []
    assert _ledger(warehouse, mid) == ledger
    assert purge.requests_report(warehouse, due, merchant_id=mid) == []


def test_immediate_deletion_skips_the_grace_period(warehouse, merchant_id, tmp_path):
    mid = merchant_id()
    _setup(warehouse, mid)
    login = provisioned_login(warehouse, mid)
    vault = _vault(tmp_path, warehouse)
    purge.request_deletion(warehouse, mid, requested_by="merchant", now=ANCHOR)
    upgraded = purge.request_deletion(warehouse, mid, immediate=True, requested_by="merchant", now=ANCHOR + SECOND)
    assert upgraded["kind"] == "immediate_deletion" and upgraded["erasure_due_at"] == ANCHOR + SECOND
    purge.erase_account(warehouse, vault, mid, now=ANCHOR + SECOND, run_id="now")
    assert_warehouse_erased(warehouse, mid, login)


def test_requests_are_reported_near_and_past_their_deadline(warehouse, merchant_id):
    mid = merchant_id()
    _setup(warehouse, mid)
    purge.request_deletion(warehouse, mid, requested_by="merchant", now=ANCHOR)
    statuses = {
        day: [r["status"] for r in purge.requests_report(warehouse, ANCHOR + timedelta(days=day), merchant_id=mid)]
        for day in (1, 27, 31)
    }
    assert statuses == {1: ["on_time"], 27: ["due_soon"], 31: ["overdue"]}
    assert purge.late_requests(purge.requests_report(warehouse, ANCHOR + timedelta(days=31), merchant_id=mid))


def test_redaction_in_python_matches_the_sql(warehouse, merchant_id):
    mid = merchant_id()
    _setup(warehouse, mid)
    _seed(warehouse, mid, "ebay", "O-1", shipped=ANCHOR)
    purge.purge_pii(warehouse, mid, now=ANCHOR + timedelta(days=100), run_id="r")
    _, payload = _state(warehouse, mid, "ebay", "O-1")
    expected = json.loads(purge.redact_payload_text(json.dumps(PAYLOADS["ebay"]("O-1"))))
    assert json.loads(payload) == expected


def test_cli_request_deletion_report_and_requests(warehouse, warehouse_url, merchant_id, tmp_path, capsys):
    from illuma_pipelines.cli import main

    mid = merchant_id()
    _setup(warehouse, mid)
    _seed(warehouse, mid, "ebay", "O-1", shipped=ANCHOR)
    purge.purge_pii(warehouse, mid, now=ANCHOR + timedelta(days=100), run_id="r")
    assert main(["--warehouse-url", warehouse_url, "merchants", "purge-report", mid]) == 0
    out = capsys.readouterr().out
    assert "buyer_pii_shipment" in out and "raw_pii_shipment" in out
    assert main(["--warehouse-url", warehouse_url, "merchants", "request-deletion", mid, "--immediate"]) == 0
    assert "immediate_deletion request" in capsys.readouterr().out
    assert main(["--warehouse-url", warehouse_url, "requests"]) in (0, 1)
    assert mid in capsys.readouterr().out
    assert main(["--warehouse-url", warehouse_url, "merchants", "request-deletion", "nobody_here"]) == 2
    assert "unknown merchant" in capsys.readouterr().err


# ----------------------------------------------------------- redaction against the documented shapes
FIXTURES = Path(__file__).parent / "fixtures"
ORDER_FIXTURES = [
    *(p for p in sorted((FIXTURES / "amazon").glob("amazon_*.json"))
      if re.search(r"^amazon_(v2026_)?(getOrders?|searchOrders)_", p.name) and "_400" not in p.name),
    FIXTURES / "ebay" / "ebay_getOrders_doc_shape.json",
    FIXTURES / "walmart" / "walmart_acknowledgeOrder_eolabs_fetchOrdersAcknowledge.json",
]


def _order_records(body: dict) -> list:
    if "orders" in body:
        return body["orders"]
    if "order" in body:
        return [body["order"]]
    payload = body["payload"]
    return payload.get("Orders", [payload])


def _pii_values(channel: str, records: list) -> list[str]:
    result = getattr(normalize, channel).normalize_orders(records)
    return [
        getattr(p, f) for p in result.pii for f in PII_COLUMNS if f != "country_code" and getattr(p, f)
    ]


@pytest.mark.parametrize("path", ORDER_FIXTURES, ids=lambda p: p.name)
def test_redaction_leaves_no_pii_in_any_documented_order_shape(path):
    channel = path.name.split("_")[0]
    text = path.read_text(encoding="utf-8")
    before = _pii_values(channel, _order_records(normalize.loads(text)))  # empty for some sandbox shapes
    redacted = purge.redact_payload_text(text)
    assert _pii_values(channel, _order_records(normalize.loads(redacted))) == []
    for value in before:
        assert f'"{value}"' not in redacted
    # Order facts survive: the same orders, the same totals.
    facts = getattr(normalize, channel).normalize_orders(_order_records(normalize.loads(redacted)))
    original = getattr(normalize, channel).normalize_orders(_order_records(normalize.loads(text)))
    assert [(o.marketplace_order_id, o.order_total, o.country_code) for o in facts.orders] == [
        (o.marketplace_order_id, o.order_total, o.country_code) for o in original.orders
    ]


def test_the_order_fixtures_carry_pii_of_every_channel():
    with_pii = {
        p.name.split("_")[0]
        for p in ORDER_FIXTURES
        if _pii_values(p.name.split("_")[0], _order_records(normalize.loads(p.read_text(encoding="utf-8"))))
    }
    assert with_pii == {"amazon", "ebay", "walmart"}


def test_redaction_of_finance_and_settlement_rows():
    recon = (FIXTURES / "walmart" / "walmart_reconFileJson_mediocre_readme_example.json").read_text()
    rows = json.loads(recon)
    cities = {r["Ship to City"] for r in rows if r.get("Ship to City")}
    assert cities
    cleaned = json.loads(purge.redact_payload_text(recon))
    assert all(r.get("Ship to City") is None and r.get("Ship to Zipcode") is None for r in cleaned)
    assert [r.get("Customer Order #") for r in cleaned] == [r.get("Customer Order #") for r in rows]
    transactions = (FIXTURES / "ebay" / "ebay_getTransactions_doc_shape.json").read_text()
    names = re.findall(r'"username"\s*:\s*"([^"]+)"', transactions)
    assert names and not any(n in purge.redact_payload_text(transactions) for n in names)


def test_financial_records_survive_the_pii_purge(warehouse, merchant_id):
    mid = merchant_id()
    schema = _setup(warehouse, mid)
    _seed(warehouse, mid, "amazon", "O-1", shipped=ANCHOR)
    settlement = raw_table("amazon", "settlement_reports")
    row = {"settlement-id": "S-1", "order-id": "O-1", "amount": "12.50", "amount-type": "ItemPrice"}
    with warehouse.merchant_scope(mid) as conn:
        conn.create_table(schema, settlement)
        conn.execute(
            f"INSERT INTO {schema}.{settlement.name} (partition_date, source, record_key, payload, extracted_at, "
            f"run_id) VALUES (?, 'seed', 'S-1:1', CAST(? AS {_json_type(warehouse)}), ?, 'seed')",
            [ANCHOR.date(), json.dumps(row), ANCHOR],
        )

    def facts():
        with warehouse.merchant_scope(mid) as conn:
            return (
                conn.fetchall(f"SELECT channel, marketplace_order_id, order_total, currency, shipped_at FROM {schema}.core_orders"),
                conn.fetchall(f"SELECT CAST(payload AS TEXT) FROM {schema}.{settlement.name}"),
            )

    before = facts()
    result = purge.purge_pii(warehouse, mid, now=ANCHOR + timedelta(days=400), run_id="r")
    assert result.total == 2 and _state(warehouse, mid, "amazon", "O-1")[0] == 0
    assert facts() == before


def test_a_merchant_override_shortens_the_pii_period_and_never_lengthens_it(warehouse, warehouse_url, merchant_id, capsys):
    from illuma_pipelines.cli import main

    mid = merchant_id()
    _setup(warehouse, mid)
    _seed(warehouse, mid, "ebay", "O-1", shipped=ANCHOR)
    args = ["--warehouse-url", warehouse_url, "merchants", "retention-override", mid]
    assert main([*args, "buyer_pii_shipment", "120d"]) == 2
    assert "may only shorten it" in capsys.readouterr().err
    assert main([*args, "buyer_pii_shipment", "60d"]) == 0
    assert "buyer_pii_shipment=60 days" in capsys.readouterr().out
    due = datetime(2026, 4, 1, tzinfo=UTC)  # 31 January + 60 days
    assert purge.purge_pii(warehouse, mid, now=due - SECOND, run_id="r1").total == 0
    result = purge.purge_pii(warehouse, mid, now=due, run_id="r2")
    assert {(e.rule_id, e.rows_affected) for e in result.entries} == {("buyer_pii_shipment", 1), ("raw_pii_shipment", 1)}
    assert _state(warehouse, mid, "ebay", "O-1")[0] == 0
    with warehouse.connect() as conn:
        (audited,) = conn.fetchone(
            "SELECT count(*) FROM platform.audit_log WHERE action = 'retention.override_set' AND merchant_id = ?", [mid]
        )
    assert audited == 1


def test_a_re_extracted_payload_of_a_purged_order_is_redacted_again(warehouse, merchant_id):
    mid = merchant_id()
    schema = _setup(warehouse, mid)
    _seed(warehouse, mid, "amazon", "O-1", shipped=ANCHOR)
    later = ANCHOR + timedelta(days=100)
    assert purge.purge_pii(warehouse, mid, now=later, run_id="r1").total == 2
    # The next day's extract lands the order again (a late refund), PII and all.
    with warehouse.merchant_scope(mid) as conn:
        conn.execute(
            f"INSERT INTO {schema}.raw_amazon_orders (partition_date, source, record_key, payload, extracted_at, "
            f"run_id) VALUES (?, 'seed', 'O-1', CAST(? AS {_json_type(warehouse)}), ?, 'seed')",
            [later.date(), json.dumps(PAYLOADS["amazon"]("O-1")), later],
        )
    again = purge.purge_pii(warehouse, mid, now=later + timedelta(days=1), run_id="r2")
    assert [(e.target.split(".")[-1], e.rows_affected) for e in again.entries] == [("raw_amazon_orders", 1)]
    with warehouse.merchant_scope(mid) as conn:
        payloads = [p for (p,) in conn.fetchall(f"SELECT CAST(payload AS TEXT) FROM {schema}.raw_amazon_orders")]
        unchecked = conn.fetchone(f"SELECT count(*) FROM {schema}.raw_amazon_orders WHERE pii_checked_at IS NULL")[0]
    assert len(payloads) == 2 and unchecked == 0
    for payload in payloads:
        _no_pii_left(payload)

