"""The warehouse on both engines: schemas per merchant, isolation, bulk loads, idempotent writes."""

from datetime import UTC, datetime
from decimal import Decimal

import duckdb
import pandas as pd
import psycopg
import pytest

from illuma_pipelines.merchant_ids import InvalidMerchantId, merchant_schema
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.warehouse import (
    TableSpec,
    Warehouse,
    WarehouseError,
    cols,
)
from tests.test_merchant_ids import BAD_IDS

ORDERS = TableSpec("orders", cols("order_id text!", "total money", "placed_at timestamptz", "day date!"))


def _frame(n: int, day: str = "2026-11-01") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(n)],
            "total": [Decimal(f"{i}.{i % 100:02d}") for i in range(n)],
            "placed_at": [datetime(2026, 11, 1, 12, tzinfo=UTC)] * n,
            "day": [day] * n,
        }
    )


def test_onboarding_creates_the_merchant_schema(warehouse, merchant_id):
    mid = merchant_id()
    assert not warehouse.merchant_schema_exists(mid)
    add_merchant(warehouse, mid, channels={"amazon": ChannelConnection("amazon", f"sandbox:{mid}")})
    assert warehouse.merchant_schema_exists(mid)
    with warehouse.merchant_scope(mid) as conn:
        rows = conn.fetchall(f"SELECT channel FROM {merchant_schema(mid)}.registry_channel_connections")
    assert rows == [("amazon",)]


def test_merchant_scope_cannot_reach_another_merchant(warehouse, merchant_id):
    """Plain statements; the attacks (triggers, role escape, every DuckDB spelling) are in
    tests/test_isolation.py."""
    a, b = merchant_id("a"), merchant_id("b")
    for mid in (a, b):
        add_merchant(warehouse, mid)
        warehouse.ensure_merchant_table(mid, ORDERS)
    with warehouse.merchant_scope(b) as conn:
        conn.load_frame(merchant_schema(b), "orders", _frame(3))

    statements = [
        f"SELECT * FROM {merchant_schema(b)}.orders",
        f"INSERT INTO {merchant_schema(b)}.orders (order_id, day) VALUES ('x', '2026-11-01')",
        f"DELETE FROM {merchant_schema(b)}.orders",
        "SELECT * FROM platform.channel_connections",
    ]
    for sql in statements:
        with pytest.raises((psycopg.Error, duckdb.Error)) as err:
            with warehouse.merchant_scope(a) as conn:
                conn.execute(sql)
        if warehouse.dialect == "postgres":
            # The database itself refuses: permission denied.
            assert "permission denied" in str(err.value)
        else:
            # Nothing of B's, or of the platform, exists in A's file.
            assert "does not exist" in str(err.value)
    with warehouse.merchant_scope(b) as conn:
        assert conn.row_count(merchant_schema(b), "orders") == 3


def test_the_platform_connection_cannot_reach_merchant_tables(warehouse, merchant_id):
    mid = merchant_id()
    add_merchant(warehouse, mid)
    warehouse.ensure_merchant_table(mid, ORDERS)
    with pytest.raises((psycopg.Error, duckdb.Error)):
        with warehouse.connect() as conn:
            conn.fetchall(f"SELECT * FROM {merchant_schema(mid)}.orders")


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_merchant_ids_never_reach_the_database(warehouse, bad):
    with pytest.raises(InvalidMerchantId, match="invalid merchant id"):
        add_merchant(warehouse, bad)
    with pytest.raises(InvalidMerchantId):
        warehouse.create_merchant_schema(bad)
    with pytest.raises(InvalidMerchantId):
        with warehouse.merchant_scope(bad):
            pass


def test_scope_of_unknown_merchant_says_onboard_first(warehouse, merchant_id):
    with pytest.raises(WarehouseError, match="onboard it first"):
        with warehouse.merchant_scope(merchant_id()):
            pass


def test_replace_rows_is_idempotent_and_exact(warehouse, merchant_id):
    mid = merchant_id()
    add_merchant(warehouse, mid)
    warehouse.ensure_merchant_table(mid, ORDERS)
    schema = merchant_schema(mid)
    for _ in range(2):
        with warehouse.merchant_scope(mid) as conn:
            conn.replace_rows(schema, "orders", {"day": "2026-11-01"}, _frame(1000))
            conn.replace_rows(schema, "orders", {"day": "2026-11-02"}, _frame(10, "2026-11-02"))
    with warehouse.merchant_scope(mid) as conn:
        assert conn.row_count(schema, "orders") == 1010
        total = conn.fetchone(f"SELECT sum(total) FROM {schema}.orders WHERE day = '2026-11-01'")[0]
    assert Decimal(total) == sum(Decimal(f"{i}.{i % 100:02d}") for i in range(1000))


def test_a_newer_spec_adds_its_nullable_columns_to_an_existing_table(warehouse, merchant_id):
    """Tables made by an earlier release gain the columns a release adds (e.g. core_orders'
    other_charges_total); their rows keep their values and read NULL in the new column."""
    mid = merchant_id()
    add_merchant(warehouse, mid)
    warehouse.ensure_merchant_table(mid, ORDERS)
    schema = merchant_schema(mid)
    with warehouse.merchant_scope(mid) as conn:
        conn.replace_rows(schema, "orders", {"day": "2026-11-01"}, _frame(3))
    newer = TableSpec("orders", ORDERS.columns + cols("fees money", "note text"))
    for _ in range(2):  # a second call finds nothing to add
        with warehouse.merchant_scope(mid) as conn:
            conn.create_table(schema, newer)
    with warehouse.merchant_scope(mid) as conn:
        rows = conn.fetchall(f"SELECT order_id, total, fees, note FROM {schema}.orders ORDER BY order_id")
        assert [(r[0], Decimal(r[1]), r[2], r[3]) for r in rows] == [
            ("o0", Decimal("0.00"), None, None), ("o1", Decimal("1.01"), None, None), ("o2", Decimal("2.02"), None, None)
        ]
        frame = _frame(1, "2026-11-02").assign(fees=[Decimal("2.50")], note=["core charge"])
        conn.replace_rows(schema, "orders", {"day": "2026-11-02"}, frame)
        assert conn.fetchone(f"SELECT fees, note FROM {schema}.orders WHERE day = '2026-11-02'")[1] == "core charge"
    stricter = TableSpec("orders", newer.columns + cols("required_now text!"))
    with pytest.raises(WarehouseError, match="NOT NULL column required_now"):
        with warehouse.merchant_scope(mid) as conn:
            conn.create_table(schema, stricter)


def test_a_failed_replace_keeps_the_previous_rows(warehouse, merchant_id):
    mid = merchant_id()
    add_merchant(warehouse, mid)
    warehouse.ensure_merchant_table(mid, ORDERS)
    schema = merchant_schema(mid)
    with warehouse.merchant_scope(mid) as conn:
        conn.replace_rows(schema, "orders", {"day": "2026-11-01"}, _frame(5))
    bad = _frame(5).assign(day=None)  # violates NOT NULL after the delete ran
    with pytest.raises((duckdb.Error, psycopg.Error), match="(?i)null"):
        with warehouse.merchant_scope(mid) as conn:
            conn.replace_rows(schema, "orders", {"day": "2026-11-01"}, bad)
    with warehouse.merchant_scope(mid) as conn:
        assert conn.row_count(schema, "orders") == 5


def test_drop_merchant_schema_removes_everything(warehouse, merchant_id):
    mid = merchant_id()
    add_merchant(warehouse, mid)
    warehouse.ensure_merchant_table(mid, ORDERS)
    warehouse.drop_merchant_schema(mid)
    assert not warehouse.merchant_schema_exists(mid)
    warehouse.drop_merchant_schema(mid)  # idempotent


def test_unsupported_url_is_explained_without_the_password():
    with pytest.raises(WarehouseError, match="unsupported warehouse url") as err:
        Warehouse.from_url("mysql://user:hunter2@db/x")
    assert "hunter2" not in str(err.value)


def test_unreachable_postgres_is_a_clear_error():
    wh = Warehouse.from_url("postgresql://nobody:s3cret@127.0.0.1:1/none")
    with pytest.raises(WarehouseError, match="cannot reach the PostgreSQL warehouse") as err:
        wh.ensure_platform()
    assert "s3cret" not in str(err.value)


def test_iter_batches_streams_while_the_connection_writes(warehouse, merchant_id):
    mid = merchant_id()
    add_merchant(warehouse, mid)
    schema = merchant_schema(mid)
    copy = TableSpec("orders_copy", ORDERS.columns)
    with warehouse.merchant_scope(mid) as conn:
        conn.create_table(schema, ORDERS)
        conn.create_table(schema, copy)
        conn.load_frame(schema, ORDERS.name, _frame(25))
    with warehouse.merchant_scope(mid) as conn:
        sizes = []
        for rows in conn.iter_batches(f"SELECT order_id, total, day FROM {schema}.{ORDERS.name} ORDER BY order_id", size=10):
            sizes.append(len(rows))
            # Other statements between batches do not disturb the stream.
            for order_id, total, day in rows:
                conn.execute(f"INSERT INTO {schema}.{copy.name} (order_id, total, day) VALUES (?, ?, ?)", [order_id, total, day])
            assert conn.row_count(schema, copy.name) == sum(sizes)
    assert sizes == [10, 10, 5]
    with warehouse.merchant_scope(mid) as conn:
        assert conn.fetchall(f"SELECT order_id, total FROM {schema}.{copy.name} EXCEPT SELECT order_id, total FROM {schema}.{ORDERS.name}") == []
        assert conn.row_count(schema, copy.name) == 25


def test_fetch_text_gives_every_value_as_text_on_both_engines(warehouse, merchant_id):
    # PostgreSQL's goes through the server's CSV: quoting, line breaks, NULL against '' and a lone
    # empty column (an empty line) must come back as the values they were.
    mid = merchant_id()
    add_merchant(warehouse, mid)
    with warehouse.merchant_scope(mid) as conn:
        frame = conn.fetch_text(
            "SELECT * FROM (VALUES ('a,b', NULL, 'say \"hi\"'), ('', 'two\nlines', CAST(CAST(12.5 AS DECIMAL(18,4)) AS VARCHAR))) "
            "AS t(p, q, r) ORDER BY p DESC"
        )
        assert frame.to_dict("records") == [
            {"p": "a,b", "q": "", "r": 'say "hi"'}, {"p": "", "q": "two\nlines", "r": "12.5000"},
        ]
        assert all(str(t) == "str" for t in frame.dtypes)
        assert conn.fetch_text("SELECT * FROM (VALUES (CAST(NULL AS VARCHAR)), ('x'), ('')) AS t(v)")["v"].tolist() == ["", "x", ""]
        empty = conn.fetch_text("SELECT 'a' AS x, 'b' AS y WHERE 1 = 0")
        assert list(empty.columns) == ["x", "y"] and len(empty) == 0


def test_duckdb_memory_is_capped_and_a_bad_cap_is_refused(tmp_path, monkeypatch):
    wh = Warehouse.from_url(f"duckdb:///{tmp_path / 'w.duckdb'}")
    with wh.connect() as conn:
        (limit,) = conn.fetchone("SELECT current_setting('memory_limit')")
    # DuckDB's own default is 80% of the machine's memory; ours is 512MB (DuckDB prints MiB).
    assert limit.endswith("MiB") and 450 < float(limit.split()[0]) < 500, limit
    monkeypatch.setenv("ILLUMA_DUCKDB_MEMORY_LIMIT", "256MB")
    with Warehouse.from_url(f"duckdb:///{tmp_path / 'w.duckdb'}").connect() as conn:
        (limit,) = conn.fetchone("SELECT current_setting('memory_limit')")
    assert float(limit.split()[0]) < 250, limit
    monkeypatch.setenv("ILLUMA_DUCKDB_MEMORY_LIMIT", "lots")
    with pytest.raises(WarehouseError, match="invalid DuckDB memory limit 'lots'"):
        Warehouse.from_url(f"duckdb:///{tmp_path / 'w.duckdb'}")


def test_steps_side_by_side_create_one_new_table_without_a_conflict(pg_url, merchant_id):
    """A merchant's first run on Celery workers: two steps create the same missing table at once
    (raw records, quarantine). PostgreSQL's CREATE TABLE IF NOT EXISTS alone fails one of them on
    pg_type's unique index (seen in the Celery test); the first keeps the name locked until it
    commits, the other then finds the table. Each scope is held open a moment after creating, as a
    step's transaction is. PostgreSQL only: steps run side by side on PostgreSQL only (Celery is
    refused with DuckDB, whose merchant file has one writer step at a time, ADR 0001, 0012)."""
    import threading
    import time

    from illuma_pipelines.warehouse import Warehouse

    warehouse = Warehouse.from_url(pg_url)
    mid = merchant_id()
    add_merchant(warehouse, mid)
    schema = merchant_schema(mid)
    errors: list[BaseException] = []

    def create(spec: TableSpec, start: threading.Barrier) -> None:
        try:
            with warehouse.merchant_scope(mid) as conn:
                start.wait(10)
                conn.create_table(schema, spec)
                time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    for i in range(12):
        spec = TableSpec(f"raw_{i}", ORDERS.columns)
        start = threading.Barrier(3)
        threads = [threading.Thread(target=create, args=(spec, start)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        with warehouse.merchant_scope(mid) as conn:
            assert conn.table_exists(schema, spec.name)
