"""Benchmark: the daily PII purge over one merchant with N orders, a tenth of them past the PII
limit, on DuckDB and on PostgreSQL, against the bare engine statements that clear the same rows.
The purge is the shredding purge the `pii_purge` asset runs (ADR 0007): the row purge, the
re-sealing of the values waiting under hold keys, and the destruction of the keys that fell due.

    .venv/bin/python bench/purge.py [--orders 10000000] [--engines duckdb,postgres]

Data (generated in the engine with SQL, Amazon orders): core_orders (one in ten shipped 200 days
before the purge clock, the rest 5 days before), core_buyer_pii (four ciphertext-sized columns per
order) and raw_amazon_orders (one v2026-shaped payload per order with buyer name, e-mail and
address). The purge is `illuma_pipelines.purge.purge_pii` exactly as the `pii_purge` asset runs
it: due-order detection per policy rule, PII rows deleted, raw payload fields redacted, ledger
rows, audit event, in one transaction; then (`shredding.purge_and_shred`) the values landed today
under the hold key (one order in 90, sealed with real vault ciphertexts in core_buyer_pii and the
raw payloads) re-sealed under their due day's key, and today's due key destroyed. The other rows
stand for a steady state: their values already sit under their due day's key (`pii_key_version`).
The bare baseline runs, on a copy of the same data (a
copy of the merchant's own DuckDB file; a Postgres template database, where the statements run as
the admin) and in one transaction timed through its commit, the two
statements a hand-written purge would: DELETE the due orders' PII rows and UPDATE their raw
payloads with the same regex redaction in SQL, keyed by a plain `shipped_at < cutoff`.
Prints rows per second for both and the ratio purge time / bare time. Goal (issue 5): ratio <= 2.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import admin_url, copy_pg_database, pg_dbname, throwaway_warehouse_url  # noqa: E402
from illuma_pipelines import purge  # noqa: E402
from illuma_pipelines.core.orders import encrypted_pii_frame  # noqa: E402
from illuma_pipelines.core.tables import BUYER_PII, ORDER_STATUS_HISTORY, ORDERS  # noqa: E402
from illuma_pipelines.merchant_ids import merchant_schema  # noqa: E402
from illuma_pipelines.raw_records import raw_table  # noqa: E402
from illuma_pipelines.registry import add_merchant  # noqa: E402
from illuma_pipelines.retention import cutoffs  # noqa: E402
from illuma_pipelines.sealing import due_label, hold_label, seal_payloads  # noqa: E402
from illuma_pipelines.shredding import purge_and_shred  # noqa: E402
from illuma_pipelines.vault import FileKeyStore, LocalKeyring, Vault  # noqa: E402
from illuma_pipelines.warehouse import Warehouse  # noqa: E402

# One order in this many landed today: its PII waits under today's hold key.
PENDING_EVERY = 90

MERCHANT = "bench_purge"
NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def _series(dialect: str, n: int) -> str:
    return f"range(0, {n}) AS g(i)" if dialect == "duckdb" else f"generate_series(0, {n - 1}) AS g(i)"


def build(wh: Warehouse, orders: int, vault: Vault) -> None:
    add_merchant(wh, MERCHANT)
    schema = merchant_schema(MERCHANT)
    raw = raw_table("amazon", "orders")
    json_type = "JSON" if wh.dialect == "duckdb" else "JSONB"
    series = _series(wh.dialect, orders)
    shipped = (
        "CAST(? AS TIMESTAMPTZ) - CASE WHEN i % 10 = 0 THEN INTERVAL '200 days' ELSE INTERVAL '5 days' END"
    )
    with wh.merchant_scope(MERCHANT) as conn:
        for spec in (ORDERS, BUYER_PII, ORDER_STATUS_HISTORY, raw):
            conn.create_table(schema, spec)
        conn.execute(
            f"INSERT INTO {schema}.core_orders (channel, marketplace_order_id, purchased_at, shipped_at, status, "
            "channel_status, fulfillment_channel, currency, order_total, partition_date, loaded_at, run_id) "
            f"SELECT 'amazon', 'O-' || CAST(i AS VARCHAR), {shipped}, {shipped}, 'shipped', 'Shipped', "
            f"'merchant', 'USD', 12.50, CAST(? AS DATE), CAST(? AS TIMESTAMPTZ), 'bench' FROM {series}",
            [NOW, NOW, NOW.date(), NOW],
        )
        seal = "'v1:' || md5(CAST(i AS VARCHAR) || '{}') || md5(CAST(i AS VARCHAR))"
        # Steady state: each value under the key of its due day (shipment + 30 days, Amazon).
        due_today = vault.ensure_key(MERCHANT, due_label(NOW.date()))
        due_later = vault.ensure_key(MERCHANT, due_label((NOW - timedelta(days=5) + timedelta(days=30)).date()))
        conn.execute(
            f"INSERT INTO {schema}.core_buyer_pii (channel, marketplace_order_id, buyer_name, buyer_email, "
            "ship_name, address_line1, partition_date, loaded_at, run_id, pii_key_version) "
            f"SELECT 'amazon', 'O-' || CAST(i AS VARCHAR), {seal.format('n')}, {seal.format('e')}, "
            f"{seal.format('s')}, {seal.format('a')}, CAST(? AS DATE), CAST(? AS TIMESTAMPTZ), 'bench', "
            f"CASE WHEN i % 10 = 0 THEN {due_today} ELSE {due_later} END FROM {series} WHERE i % {PENDING_EVERY} <> 1",
            [NOW.date(), NOW],
        )
        oid = "CAST(i AS VARCHAR)"
        payload = (
            "'{\"orderId\":\"O-' || " + oid + " || '\",\"buyer\":{\"buyerName\":\"Buyer ' || " + oid
            + " || '\",\"buyerEmail\":\"b' || " + oid + " || '@example.com\"},\"recipient\":{\"deliveryAddress\":"
            "{\"name\":\"Buyer ' || " + oid + " || '\",\"addressLine1\":\"' || " + oid
            + " || ' Elm Street\",\"city\":\"Boise\",\"postalCode\":\"83702\",\"countryCode\":\"US\"}},"
            "\"orderStatus\":\"SHIPPED\",\"proceeds\":{\"grandTotal\":{\"amount\":\"12.50\",\"currencyCode\":\"USD\"}}}'"
        )
        conn.execute(
            f"INSERT INTO {schema}.{raw.name} (partition_date, source, record_key, payload, extracted_at, run_id, "
            f"pii_key_version) SELECT CAST(? AS DATE), 'searchOrders', 'O-' || {oid}, CAST({payload} AS {json_type}), "
            f"CAST(? AS TIMESTAMPTZ), 'bench', CASE WHEN i % 10 = 0 THEN {due_today} ELSE {due_later} END "
            f"FROM {series} WHERE i % {PENDING_EVERY} <> 1",
            [NOW.date(), NOW],
        )
    _land_pending(wh, vault, orders, payload_of=lambda i: _payload(i))
    if wh.dialect == "postgres":
        with wh.merchant_scope(MERCHANT) as conn:
            for table in ("core_orders", "core_buyer_pii", raw.name):
                conn.execute(f"ANALYZE {schema}.{table}")


def _payload(i: int) -> str:
    return (
        f'{{"orderId":"O-{i}","buyer":{{"buyerName":"Buyer {i}","buyerEmail":"b{i}@example.com"}},'
        f'"recipient":{{"deliveryAddress":{{"name":"Buyer {i}","addressLine1":"{i} Elm Street","city":"Boise",'
        f'"postalCode":"83702","countryCode":"US"}}}},"orderStatus":"SHIPPED",'
        f'"proceeds":{{"grandTotal":{{"amount":"12.50","currencyCode":"USD"}}}}}}'
    )


def _land_pending(wh: Warehouse, vault: Vault, orders: int, payload_of) -> None:
    """The orders landed today (one in PENDING_EVERY), sealed for real under today's hold key, as
    the extract and core assets leave them."""
    import pandas as pd

    schema = merchant_schema(MERCHANT)
    ids = list(range(1, orders, PENDING_EVERY))
    label = hold_label(NOW.date())
    for start in range(0, len(ids), 50_000):
        chunk = ids[start : start + 50_000]
        keys = [f"O-{i}" for i in chunk]
        pii = pd.DataFrame(
            {
                "channel": "amazon", "marketplace_order_id": keys,
                **{c: [f"{c} {i}" for i in chunk] for c in ("buyer_name", "buyer_email", "ship_name", "address_line1")},
                **{c: [None] * len(chunk) for c in ("buyer_phone", "address_line2", "address_line3", "city",
                                                     "state_or_region", "postal_code", "country_code")},
            }
        )
        frame = encrypted_pii_frame(vault, MERCHANT, pii, label)
        frame["partition_date"], frame["loaded_at"], frame["run_id"] = NOW.date(), NOW, "bench"
        sealed = seal_payloads(vault, MERCHANT, "raw_amazon_orders", "amazon",
                               [(k, payload_of(i)) for k, i in zip(keys, chunk, strict=True)], label=label)
        raw = pd.DataFrame(
            {
                "partition_date": NOW.date(), "source": "searchOrders", "record_key": keys, "payload": sealed.texts,
                "extracted_at": NOW, "run_id": "bench",
                "pii_key_version": pd.Series(sealed.key_versions, dtype="Int64"),
            }
        )
        with wh.merchant_scope(MERCHANT) as conn:
            conn.load_frame(schema, "core_buyer_pii", frame)
            conn.load_frame(schema, "raw_amazon_orders", raw)


def bare(url: str, dialect: str) -> tuple[float, int]:
    """The hand-written statements on a copy of the same data, timed through their commit: `url` is
    the copy's admin URL (PostgreSQL) or the copy of the merchant's file (DuckDB, `duckdb:///`)."""
    schema = merchant_schema(MERCHANT)
    cutoff = cutoffs(NOW)["buyer_pii_amazon_delivery"]
    due = f"SELECT marketplace_order_id FROM {schema}.core_orders WHERE shipped_at < ?"
    redacted = purge._redacted(dialect, "payload")  # the same redaction expression
    delete = f"DELETE FROM {schema}.core_buyer_pii WHERE marketplace_order_id IN ({due})"
    update = f"UPDATE {schema}.raw_amazon_orders SET payload = {redacted} WHERE record_key IN ({due})"
    if dialect == "postgres":
        import psycopg

        started = time.perf_counter()
        # As the admin: plain statements measure the engine, whichever role runs them (no row
        # security on these tables), and the copy keeps no pipeline or merchant sessions.
        with psycopg.connect(url) as con:
            n1 = con.execute(delete.replace("?", "%s"), [cutoff]).rowcount
            n2 = con.execute(update.replace("?", "%s"), [purge.PII_VALUE_PATTERN, purge.REDACTED_VALUE, cutoff]).rowcount
        return time.perf_counter() - started, n1 + n2
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect(url.removeprefix("duckdb:///"))
    con.execute("BEGIN")
    (n1,) = con.execute(delete, [cutoff]).fetchone()
    (n2,) = con.execute(update, [purge.PII_VALUE_PATTERN, purge.REDACTED_VALUE, cutoff]).fetchone()
    con.execute("COMMIT")
    con.close()  # DuckDB checkpoints here, as the warehouse does after each unit of work
    return time.perf_counter() - started, n1 + n2


def _copy(engine: str, wh: Warehouse, work: Path) -> str:
    """A copy of the built data for the bare statements: the merchant's own file (DuckDB; copied
    under its own name, in another folder, so its catalog is still `m_<id>`), or the whole database
    through a Postgres template (the pipeline's pooled sessions ended first: a template must have
    none; they reconnect on next use). Returns the URL the bare statements use."""
    if engine == "duckdb":
        import shutil

        source = wh.merchant_file(MERCHANT)
        target = work / "bare" / source.name
        target.parent.mkdir()
        shutil.copyfile(source, target)
        wal = source.with_name(source.name + ".wal")
        if wal.exists():
            shutil.copyfile(wal, target.with_name(target.name + ".wal"))
        return f"duckdb:///{target}"
    source = pg_dbname(wh.url)
    copy_pg_database(source, f"{source}_bare")
    return admin_url(f"{source}_bare")


def run_engine(engine: str, orders: int, work: Path) -> dict:
    with throwaway_warehouse_url(engine, work, MERCHANT) as url:
        return _run(engine, url, orders, work)


def _run(engine: str, url: str, orders: int, work: Path) -> dict:
    os.environ["ILLUMA_DATA_DIR"] = str(work / "data")
    # The bare statements run on a plain DuckDB connection (80% of the machine); the warehouse's
    # 512MB default cannot even build 10M orders with their primary keys. Same room for both.
    os.environ.setdefault("ILLUMA_DUCKDB_MEMORY_LIMIT", "4GB")
    wh = Warehouse.from_url(url)
    wh.ensure_platform()
    vault = Vault(FileKeyStore(work / "keys" / "keystore.json"), LocalKeyring([secrets.token_bytes(32)]),
                  audit_sink=lambda event: None)
    t0 = time.perf_counter()
    build(wh, orders, vault)
    built = time.perf_counter() - t0
    bare_s, bare_rows = bare(_copy(engine, wh, work), engine)
    t0 = time.perf_counter()
    result, shred = purge_and_shred(wh, vault, MERCHANT, now=NOW, run_id="bench")
    purge_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rerun, _ = purge_and_shred(wh, vault, MERCHANT, now=NOW, run_id="bench-rerun")
    rerun_s = time.perf_counter() - t0
    return {
        "engine": engine, "orders": orders, "build_s": built, "bare_s": bare_s, "bare_rows": bare_rows,
        "purge_s": purge_s, "purge_rows": result.total, "rerun_s": rerun_s, "rerun_rows": rerun.total,
        **shred.metadata(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000_000)
    parser.add_argument("--engines", default="duckdb,postgres")
    args = parser.parse_args()
    print(f"orders: {args.orders:,}; due: {args.orders // 10:,} (one in ten); purge clock {NOW.isoformat()}")
    for engine in args.engines.split(","):
        with tempfile.TemporaryDirectory(prefix="illuma-purge-bench-") as tmp:
            r = run_engine(engine, args.orders, Path(tmp))
        print(
            f"{engine:<9} build {r['build_s']:7.1f} s | bare {r['bare_s']:6.2f} s ({r['bare_rows']:,} rows, "
            f"{r['bare_rows'] / r['bare_s']:,.0f} rows/s) | purge {r['purge_s']:6.2f} s ({r['purge_rows']:,} rows, "
            f"{r['purge_rows'] / r['purge_s']:,.0f} rows/s) | ratio {r['purge_s'] / r['bare_s']:.2f} "
            f"| re-run {r['rerun_s']:.2f} s, {r['rerun_rows']} rows | re-sealed {r['values_resealed']:,} values, "
            f"{r['keys_destroyed']} key(s) destroyed",
            flush=True,
        )
        if r["purge_rows"] != r["bare_rows"]:
            print(f"  mismatch: the purge cleared {r['purge_rows']:,} values, the bare statements {r['bare_rows']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
