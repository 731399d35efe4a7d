"""Benchmark: normalize N order lines from a raw Amazon extract, encrypt the PII, load the core
tables — on DuckDB and on PostgreSQL — against a bare load of the same raw file.

    .venv/bin/python bench/normalize.py [--lines 1000000] [--chunk-orders 20000] [--engines duckdb,postgres]

The raw file is NDJSON of Orders v2026-01-01 records (the official doc example, with its ids
varied and 1 to 4 lines per order). For each engine, in a fresh child process (so peak memory is
its own): the bare load (DuckDB `read_json` into a table; PostgreSQL `COPY` of the lines into a
jsonb table), then the pipeline in chunks: parse with exact decimals → normalize → encrypt buyer
PII with the vault → bulk-load orders, lines and buyer_pii. Prints lines/s, peak RSS and the
ratio pipeline time / bare-load time. Goals (issue 4): >= 200,000 lines/s on DuckDB, ratio <= 4,
peak < 2 GB.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TEMPLATE = ROOT / "tests" / "fixtures" / "amazon" / "amazon_v2026_searchOrders_docexample.json"
PG_ADMIN = os.environ.get("ILLUMA_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MERCHANT = "bench_merchant"


def write_raw(path: Path, lines: int) -> int:
    """NDJSON of v2026 orders with `lines` order lines in all; returns the number of orders."""
    template = json.loads(TEMPLATE.read_text())["orders"][0]
    item = template["orderItems"][0]
    orders = written = 0
    with path.open("w") as out:
        while written < lines:
            n = min(1 + orders % 4, lines - written)
            order = copy.deepcopy(template)
            order["orderId"] = f"{100 + orders // 10_000_000:03d}-{orders // 1000 % 10_000_000:07d}-{orders % 10_000_000:07d}"
            order["orderItems"] = []
            for i in range(n):
                line = copy.deepcopy(item)
                line["orderItemId"] = f"{orders:010d}{i:02d}"
                order["orderItems"].append(line)
            order["buyer"]["buyerName"] = f"Buyer {orders}"
            out.write(json.dumps(order, separators=(",", ":")) + "\n")
            orders += 1
            written += n
    return orders


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_engine(engine: str, raw: Path, url: str, chunk_orders: int) -> dict:
    from assets.core import BUYER_PII, ORDER_LINES, ORDERS, encrypted_pii_frame
    from illuma_pipelines import normalize
    from illuma_pipelines.registry import add_merchant
    from illuma_pipelines.vault import FileKeyStore, LocalKeyring, Vault
    from illuma_pipelines.warehouse import Warehouse

    warehouse = Warehouse.from_url(url)
    add_merchant(warehouse, MERCHANT)
    schema = f"m_{MERCHANT}"

    # Bare load of the same raw file: the engine's own fastest path.
    started = time.perf_counter()
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect(url[len("duckdb:///") :])
        con.execute(f"CREATE TABLE {schema}.bare AS SELECT * FROM read_json('{raw}', format='newline_delimited')")
        con.close()
    else:
        import psycopg

        with psycopg.connect(url) as con:
            con.execute(f"CREATE TABLE {schema}.bare (payload jsonb)")
            with con.cursor() as cur, cur.copy(f"COPY {schema}.bare (payload) FROM STDIN") as cp, raw.open() as f:
                for line in f:
                    cp.write_row((line.rstrip("\n"),))
    bare_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as keys:
        vault = Vault(FileKeyStore(Path(keys) / "ks.json"), LocalKeyring([secrets.token_bytes(32)]))
        with warehouse.merchant_scope(MERCHANT) as conn:
            for spec in (ORDERS, ORDER_LINES, BUYER_PII):
                conn.create_table(schema, spec)
        now = datetime.now(UTC)
        provenance = {"partition_date": now.date(), "loaded_at": now, "run_id": "bench"}
        lines = orders = 0
        started = time.perf_counter()
        with raw.open() as f:
            while True:
                chunk = [normalize.loads(line) for _, line in zip(range(chunk_orders), f, strict=False)]
                if not chunk:
                    break
                result = normalize.amazon.normalize_orders(chunk)
                frames = {
                    ORDERS.name: normalize.to_frame(result.orders),
                    ORDER_LINES.name: normalize.to_frame(result.lines),
                    BUYER_PII.name: encrypted_pii_frame(vault, MERCHANT, result.pii),
                }
                with warehouse.merchant_scope(MERCHANT) as conn:
                    for table, frame in frames.items():
                        frame = frame.assign(**provenance)
                        spec_cols = {c.name for c in (ORDERS if table == ORDERS.name else ORDER_LINES if table == ORDER_LINES.name else BUYER_PII).columns}
                        conn.load_frame(schema, table, frame[[c for c in frame.columns if c in spec_cols]])
                lines += len(result.lines)
                orders += len(result.orders)
                del chunk, result, frames
        pipeline_seconds = time.perf_counter() - started
        with warehouse.connect() as conn:
            loaded = conn.row_count(schema, ORDER_LINES.name)
    assert loaded == lines, (loaded, lines)
    return {
        "engine": engine,
        "orders": orders,
        "lines": lines,
        "pipeline_seconds": pipeline_seconds,
        "bare_seconds": bare_seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--chunk-orders", type=int, default=20_000)
    parser.add_argument("--engines", default="duckdb,postgres")
    parser.add_argument("--child", nargs=3, metavar=("ENGINE", "RAW", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, raw, url = args.child
        print(json.dumps(run_engine(engine, Path(raw), url, args.chunk_orders)))
        return 0

    with tempfile.TemporaryDirectory(prefix="illuma_bench_normalize_") as tmp:
        return _bench(args, Path(tmp))


def _bench(args: argparse.Namespace, work: Path) -> int:
    raw = work / "orders.ndjson"
    started = time.perf_counter()
    n_orders = write_raw(raw, args.lines)
    print(f"raw extract: {args.lines:,} lines in {n_orders:,} orders, {raw.stat().st_size / 1e6:.0f} MB "
          f"NDJSON (written in {time.perf_counter() - started:.0f} s)")
    for engine in args.engines.split(","):
        db = None
        if engine == "duckdb":
            url = f"duckdb:///{work / 'bench.duckdb'}"
        else:
            import psycopg

            db = f"illuma_bench_{secrets.token_hex(4)}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as con:
                con.execute(f"CREATE DATABASE {db}")
            url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{db}"
        try:
            out = subprocess.run(
                [sys.executable, __file__, "--chunk-orders", str(args.chunk_orders), "--child", engine, str(raw), url],
                capture_output=True, text=True, check=True,
            )
        except subprocess.CalledProcessError as exc:
            print(exc.stderr[-3000:])
            raise
        finally:
            if db:
                with psycopg.connect(PG_ADMIN, autocommit=True) as con:
                    con.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
                    con.execute(f"DROP ROLE IF EXISTS m_{MERCHANT}_rw")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rate = r["lines"] / r["pipeline_seconds"]
        print(
            f"{engine:<9} {r['lines']:,} lines normalized + PII encrypted + loaded in {r['pipeline_seconds']:.1f} s "
            f"= {rate:,.0f} lines/s; bare load {r['bare_seconds']:.1f} s; ratio {r['pipeline_seconds'] / r['bare_seconds']:.1f}; "
            f"peak RSS {r['peak_rss_mb']:,.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
