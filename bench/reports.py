"""Benchmark: rendering the monthly report (issue 16) of a big merchant, XLSX and PDF.

    .venv/bin/python bench/reports.py [--lines 1000000] [--skus 20000] [--keep]

The benchmark measures rendering, so the merchant's analytics are not built by dbt: the tables the
report reads are generated directly, with the models' shapes (dbt_project/models), in a throwaway
DuckDB warehouse (bench/common.py): `--lines` order lines in January 2026 (two per order, over
three channels), one settlement line per sale and per commission (twice the order lines), `--skus`
SKUs each sold on one channel (sku_profit_monthly on both bases, inventory_health), 18 fee
categories by day, weekly settlements, 5% of the orders still unsettled.

Then, each in a child process of its own (of a parent that stays small: Linux carries a parent's
RSS high-water mark into its children) so its peak resident memory (getrusage ru_maxrss) is its
alone, the interpreter and its libraries included: reading the report's data from the warehouse
(`monthly_report_data`), then rendering the XLSX, or the PDF (and its PNG preview). Prints the
seconds of each step and each child's peak RSS. Goal (issue 16): XLSX and PDF each under 60 s and
1 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import throwaway_warehouse_url  # noqa: E402

MERCHANT = "bench_reports"
MONTH = "2026-01"
CHANNELS = ("amazon", "ebay", "walmart")


def _tables(lines: int, skus: int) -> dict[str, str]:
    """CREATE TABLE ... AS SELECT for each model the monthly report reads (DuckDB SQL; pseudo-random
    but deterministic through hash())."""
    orders = lines // 2
    channel = "['amazon', 'ebay', 'walmart'][1 + (i % 3)]"
    return {
        "stg_channel_connections": "SELECT 'amazon' AS channel, DATE '2026-02-03' AS as_of_date",
        "stg_orders": f"""
            SELECT {channel} AS channel, printf('%03d-%07d-%07d', i % 997, i, CAST(hash(i) % 9999999 AS BIGINT)) AS order_id,
                   DATE '2026-01-01' + CAST(i % 31 AS INTEGER) AS purchased_date,
                   DATE '2026-01-02' + CAST(i % 31 AS INTEGER) AS shipped_date,
                   CASE WHEN i % 50 = 0 THEN 'cancelled' ELSE 'shipped' END AS status, 'USD' AS currency
            FROM range({orders}) AS t(i)""",
        "stg_order_lines": f"""
            SELECT o.channel, o.order_id, CAST(n AS VARCHAR) AS line_id,
                   printf('SKU-%05d', (hash(o.order_id) + n) % {skus}) AS sku,
                   printf('BRAND|P%05d', (hash(o.order_id) + n) % {skus}) AS master_part,
                   1 + CAST(CAST(hash(o.order_id || n) % 3 AS BIGINT) AS INTEGER) AS quantity_ordered,
                   1 + CAST(CAST(hash(o.order_id || n) % 3 AS BIGINT) AS INTEGER) AS quantity_shipped,
                   CAST(5 + (CAST(hash(o.order_id || n) % 20000 AS BIGINT)) / 100.0 AS DECIMAL(18, 4)) AS item_price, 'USD' AS currency
            FROM stg_orders AS o, range(1, 3) AS t(n)""",
        "order_settlement_match": """
            SELECT channel, order_id, CAST(NULL AS VARCHAR) AS settlement_id,
                   CASE WHEN CAST(hash(order_id) % 20 AS BIGINT) = 0 THEN 'pending' ELSE 'settled' END AS match_status,
                   status AS order_status, shipped_date, currency,
                   CAST(40 AS DECIMAL(18, 4)) AS items_subtotal, CAST(0 AS DECIMAL(18, 4)) AS shipping_total,
                   CAST(0 AS DECIMAL(18, 4)) AS promotion_total, CAST(40 AS DECIMAL(18, 4)) AS settled_principal,
                   CAST(0 AS DECIMAL(18, 4)) AS settled_shipping, CAST(0 AS DECIMAL(18, 4)) AS settled_promotion,
                   CASE WHEN CAST(hash(order_id) % 997 AS BIGINT) = 0 THEN CAST(-1 AS DECIMAL(18, 4)) ELSE 0 END AS principal_difference,
                   CAST(0 AS DECIMAL(18, 4)) AS shipping_difference, CAST(0 AS DECIMAL(18, 4)) AS promotion_difference,
                   DATE '2026-02-03' - shipped_date AS days_since_shipped, 14 AS settlement_delay_days,
                   shipped_date + 10 AS last_deposit_date
            FROM stg_orders WHERE status <> 'cancelled'""",
        "stg_settlements": f"""
            SELECT c.channel, printf('%s-S%d', c.channel, w) AS settlement_id, DATE '2026-01-01' + CAST(7 * w AS INTEGER) AS deposit_date
            FROM (SELECT unnest({list(CHANNELS)}) AS channel) AS c, range(5) AS t(w)""",
        "stg_settlement_lines": """
            SELECT l.channel, printf('%s-S%d', l.channel, least(4, (CAST(o.purchased_date - DATE '2026-01-01' AS INTEGER) + 3) // 7)) AS settlement_id,
                   'USD' AS currency, k.fee_category, 'sale' AS transaction_kind,
                   CAST(CASE WHEN k.fee_category = 'principal' THEN l.item_price ELSE -0.15 * l.item_price END AS DECIMAL(18, 4)) AS amount
            FROM stg_order_lines AS l JOIN stg_orders AS o ON o.channel = l.channel AND o.order_id = l.order_id,
                 (SELECT unnest(['principal', 'commission']) AS fee_category) AS k""",
        "settlement_reconciliation": """
            SELECT s.channel, s.settlement_id, 'settlement' AS kind, s.deposit_date, 'USD' AS currency,
                   sum(l.amount) AS reported_total, sum(l.amount) AS lines_total, CAST(0 AS DECIMAL(18, 4)) AS difference,
                   'adds_up' AS reconciliation_status, sum(l.amount) AS net_proceeds, sum(l.amount) AS deposit
            FROM stg_settlements AS s JOIN stg_settlement_lines AS l USING (channel, settlement_id)
            GROUP BY ALL""",
        "fees_by_category_daily": """
            SELECT DATE '2026-01-01' + CAST(d AS INTEGER) AS posted_date, c.channel, 'USD' AS currency, f.category_group, f.fee_category,
                   CAST(CASE WHEN f.category_group = 'revenue' THEN 1 ELSE -1 END * (100 + CAST(hash(d || c.channel || f.fee_category) % 90000 AS BIGINT)) / 100.0
                        AS DECIMAL(18, 4)) AS amount, 10 AS line_count
            FROM range(31) AS t(d), (SELECT unnest(['amazon', 'ebay', 'walmart']) AS channel) AS c, fee_categories AS f""",
        "net_proceeds_daily": """
            SELECT posted_date, channel, currency,
                   sum(CASE WHEN category_group = 'revenue' THEN amount ELSE 0 END) AS revenue,
                   CAST(0 AS DECIMAL(18, 4)) AS refunds,
                   -sum(CASE WHEN category_group = 'fee' THEN amount ELSE 0 END) AS fees,
                   sum(CASE WHEN category_group = 'tax' THEN amount ELSE 0 END) AS tax,
                   sum(CASE WHEN category_group <> 'bridge' THEN amount ELSE 0 END) AS net_proceeds,
                   sum(CASE WHEN fee_category = 'reserve_held' THEN amount ELSE 0 END) AS reserve_held,
                   sum(CASE WHEN fee_category = 'reserve_released' THEN amount ELSE 0 END) AS reserve_released,
                   sum(CASE WHEN fee_category = 'transfer' THEN amount ELSE 0 END) AS transfer
            FROM fees_by_category_daily GROUP BY ALL""",
        "sku_profit_monthly": f"""
            SELECT b.basis, DATE '2026-01-01' AS month, ['amazon', 'ebay', 'walmart'][1 + (s % 3)] AS channel,
                   'USD' AS currency, printf('SKU-%05d', s) AS sku, printf('BRAND|P%05d', s) AS master_part,
                   CAST(CAST(hash(s) % 500000 AS BIGINT) / 100.0 AS DECIMAL(18, 4)) AS revenue, CAST(CAST(hash(s) % 700 AS BIGINT) / 100.0 AS DECIMAL(18, 4)) AS refunds,
                   CAST(CAST(hash(s) % 75000 AS BIGINT) / 100.0 AS DECIMAL(18, 4)) AS fees, CAST(CAST(hash(s) % 400 AS BIGINT) AS INTEGER) AS units_sold,
                   CAST(CAST(hash(s) % 200000 AS BIGINT) / 100.0 AS DECIMAL(18, 4)) AS cost_of_goods, CAST(1.25 AS DECIMAL(18, 4)) AS unattributed_fees,
                   CAST((CAST(hash(s) % 500000 AS BIGINT) - CAST(hash(s) % 700 AS BIGINT) - CAST(hash(s) % 75000 AS BIGINT) - CAST(hash(s) % 200000 AS BIGINT) - 125) / 100.0 AS DECIMAL(18, 4)) AS net_profit,
                   CAST(0.1234 AS DECIMAL(18, 4)) AS margin, 0 AS uncosted_units, CAST(NULL AS VARCHAR) AS cost_missing_reason
            FROM range({skus}) AS t(s), (SELECT unnest(['accrual', 'cash']) AS basis) AS b""",
        "channel_mix_daily": """
            SELECT o.purchased_date, o.channel, o.currency, count(DISTINCT o.order_id) AS order_count,
                   sum(l.quantity_ordered) AS units, sum(l.item_price) AS items_sales
            FROM stg_orders AS o JOIN stg_order_lines AS l USING (channel, order_id) GROUP BY ALL""",
        "inventory_health": f"""
            SELECT ['amazon', 'ebay', 'walmart'][1 + (s % 3)] AS channel, '*' AS marketplace_id, printf('SKU-%05d', s) AS sku,
                   printf('BRAND|P%05d', s) AS master_part, DATE '2026-02-03' AS snapshot_date,
                   CAST(CAST(hash(s) % 300 AS BIGINT) AS INTEGER) - 40 AS raw_available, 0 AS inbound, 0 AS reserved,
                   CAST(CAST(hash(s) % 8 AS BIGINT) AS INTEGER) AS stock_out_days_30d, CAST(CAST(hash(s) % 90 AS BIGINT) AS INTEGER) AS units_sold_30d,
                   CAST(CAST(hash(s) % 250 AS BIGINT) AS INTEGER) AS units_sold_90d
            FROM range({skus}) AS t(s)""",
    }


def _generate(url: str, lines: int, skus: int) -> None:
    from illuma_pipelines.merchant_ids import merchant_schema
    from illuma_pipelines.registry import add_merchant
    from illuma_pipelines.settlements import vocab
    from illuma_pipelines.warehouse import Warehouse

    warehouse = Warehouse.from_url(url)
    warehouse.ensure_platform()
    add_merchant(warehouse, MERCHANT, display_name="Bench Parts & Co")
    schema = merchant_schema(MERCHANT)
    groups = {"revenue": vocab.REVENUE_CATEGORIES, "tax": vocab.TAX_CATEGORIES, "fee": vocab.FEE_ONLY_CATEGORIES,
              "bridge": vocab.BRIDGE_CATEGORIES}
    with warehouse.merchant_scope(MERCHANT) as conn:
        conn.execute(f"USE {schema}")
        conn.execute("CREATE TABLE fee_categories AS SELECT * FROM (VALUES "
                     + ", ".join(f"('{n}', '{g}')" for g, names in groups.items() for n in names)
                     + ") AS v(fee_category, category_group)")
        for name, sql in _tables(lines, skus).items():
            conn.execute(f"CREATE TABLE {name} AS {sql}")
        conn.execute(
            "CREATE TABLE inventory_health_final AS SELECT channel, marketplace_id, sku, master_part, snapshot_date, "
            "greatest(raw_available, 0) AS available, inbound, reserved, raw_available <= 0 AS stock_out, "
            "stock_out_days_30d, units_sold_30d, units_sold_90d, "
            "CASE WHEN units_sold_30d > 0 THEN CAST(round(greatest(raw_available, 0) * 30.0 / units_sold_30d) AS DECIMAL(18, 4)) END AS days_of_cover, "
            "raw_available > 0 AND units_sold_90d = 0 AS slow_mover FROM inventory_health"
        )
        conn.execute("DROP TABLE inventory_health")
        conn.execute("ALTER TABLE inventory_health_final RENAME TO inventory_health")
        counts = {t: conn.fetchone(f"SELECT count(*) FROM {t}")[0] for t in ("stg_order_lines", "stg_settlement_lines", "sku_profit_monthly")}
    print("generated: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()), flush=True)


def _child(url: str, what: str, out_dir: Path) -> dict:
    """One step in this (child) process: read the report's data, render `what`."""
    from illuma_pipelines.reports.data import monthly_report_data
    from illuma_pipelines.warehouse import Warehouse

    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    data = monthly_report_data(Warehouse.from_url(url), MERCHANT, MONTH, "Bench Parts & Co")
    read = time.perf_counter() - started
    after_read = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    if what == "xlsx":
        from illuma_pipelines.reports.xlsx import render_xlsx

        path = render_xlsx(data, out_dir / "monthly.xlsx")
    else:
        from illuma_pipelines.reports.pdf import render_pdf

        path = render_pdf(data, out_dir / "monthly.pdf")
    rendered = time.perf_counter() - started
    return {
        "what": what, "rows": len(data.tables["orders"]), "read_s": read, "render_s": rendered,
        "rss_imported_mb": imported, "rss_after_read_mb": after_read,
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "size_mb": path.stat().st_size / 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--skus", type=int, default=20_000)
    parser.add_argument("--keep", action="store_true", help="keep the warehouse and the files (printed)")
    parser.add_argument("--child", nargs=3, metavar=("URL", "WHAT", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--generate", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        _generate(args.generate, args.lines, args.skus)
        return 0
    if args.child:
        url, what, out = args.child
        print(json.dumps(_child(url, what, Path(out))))
        return 0
    work = Path(tempfile.mkdtemp(prefix="illuma-bench-reports-"))
    with throwaway_warehouse_url("duckdb", work, MERCHANT) as url:
        # Every step in a child process: a child's ru_maxrss starts from its parent's high-water
        # mark (Linux carries it over fork and exec), so the parent stays small.
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--generate", url, "--lines", str(args.lines), "--skus", str(args.skus)], check=True
        )
        print(f"generated in {time.perf_counter() - started:.1f} s", flush=True)
        failed = False
        for what in ("xlsx", "pdf"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", url, what, str(work)], capture_output=True, text=True, check=False
            )
            if done.returncode:
                print(done.stderr[-4000:], file=sys.stderr)
                return 1
            r = json.loads(done.stdout.strip().splitlines()[-1])
            ok = r["render_s"] < 60 and r["rss_peak_mb"] < 1024
            failed |= not ok
            print(
                f"{what.upper()}: {r['rows']:,} order rows; read {r['read_s']:.1f} s, render {r['render_s']:.1f} s; "
                f"peak RSS {r['rss_peak_mb']:.0f} MB (after imports {r['rss_imported_mb']:.0f} MB, after the read "
                f"{r['rss_after_read_mb']:.0f} MB); file {r['size_mb']:.1f} MB; goal < 60 s and < 1 GB: "
                f"{'met' if ok else 'MISSED'}",
                flush=True,
            )
    if args.keep:
        print(f"files kept in {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
