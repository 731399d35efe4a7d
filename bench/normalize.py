"""Benchmark: normalize N order lines from a raw Amazon extract, encrypt the PII, load the core
tables — on DuckDB and on PostgreSQL — against a bare load of the same raw file.

    .venv/bin/python bench/normalize.py [--lines 1000000] [--chunk-orders 20000] [--engines duckdb,postgres]

The raw file is NDJSON of Orders v2026-01-01 records (the official doc example, with its ids
varied and 1 to 4 lines per order). For each engine, each step in a fresh child process (so peak
memory is its own): first the bare load (DuckDB `read_json` into a table; PostgreSQL `COPY` of
the lines into a jsonb table), then the pipeline, `--chunk-orders` records at a time, through the
core_orders asset's own functions: `normalize.normalize_order_payloads` (parse with exact
decimals and normalize record by record) → `normalize.to_frame` → `encrypted_pii_frame` (vault)
→ `load_frame` of orders, lines and buyer_pii, with GC paused over each batch as the asset does.
Prints lines/s, the pipeline's peak RSS (and the bare load's), and the ratio pipeline time /
bare-load time. Goals (issue 4): >= 200,000 lines/s on DuckDB, ratio <= 4, peak < 2 GB.
"""

from __future__ import annotations

import argparse
import itertools
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
    # Shallow copies are enough: only the ids and the buyer name vary, and json.dumps does not
    # care that the other parts are shared.
    order = dict(template)
    orders = written = 0
    with path.open("w") as out:
        while written < lines:
            n = min(1 + orders % 4, lines - written)
            order["orderId"] = f"{100 + orders // 10_000_000:03d}-{orders // 1000 % 10_000_000:07d}-{orders % 10_000_000:07d}"
            order["orderItems"] = [{**item, "orderItemId": f"{orders:010d}{i:02d}"} for i in range(n)]
            order["buyer"] = {**template["buyer"], "buyerName": f"Buyer {orders}"}
            out.write(json.dumps(order, separators=(",", ":")) + "\n")
            orders += 1
            written += n
    return orders


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_bare(engine: str, raw: Path, url: str) -> dict:
    """The bare load of the raw file: the engine's own fastest path."""
    from illuma_pipelines.registry import add_merchant
    from illuma_pipelines.warehouse import Warehouse

    add_merchant(Warehouse.from_url(url), MERCHANT)
    schema = f"m_{MERCHANT}"
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
    return {"bare_seconds": bare_seconds, "bare_peak_rss_mb": peak_rss_mb()}


def run_pipeline(engine: str, raw: Path, url: str, chunk_orders: int) -> dict:
    """The core_orders path over the raw file, `chunk_orders` records at a time."""
    from assets.core import BUYER_PII, ORDER_LINES, ORDERS, _with_provenance, encrypted_pii_frame
    from illuma_pipelines import normalize
    from illuma_pipelines.vault import FileKeyStore, LocalKeyring, Vault
    from illuma_pipelines.warehouse import Warehouse

    warehouse = Warehouse.from_url(url)
    schema = f"m_{MERCHANT}"
    with tempfile.TemporaryDirectory() as keys:
        vault = Vault(FileKeyStore(Path(keys) / "ks.json"), LocalKeyring([secrets.token_bytes(32)]))
        with warehouse.merchant_scope(MERCHANT) as conn:
            for spec in (ORDERS, ORDER_LINES, BUYER_PII):
                conn.create_table(schema, spec)
        now = datetime.now(UTC)
        day = now.date().isoformat()
        lines = orders = 0
        started = time.perf_counter()
        with raw.open() as f:
            while True:
                chunk = list(itertools.islice(f, chunk_orders))
                if not chunk:
                    break
                # The core_orders asset's own steps, GC paused over the batch as it does: parse +
                # normalize record by record, encrypt the PII column by column, one frame per
                # table, provenance columns.
                with normalize.paused_gc():
                    result = normalize.normalize_order_payloads("amazon", chunk)
                    del chunk
                    frames = {
                        ORDERS.name: normalize.to_frame(result.orders, normalize.Order),
                        ORDER_LINES.name: normalize.to_frame(result.lines, normalize.OrderLine),
                        BUYER_PII.name: encrypted_pii_frame(vault, MERCHANT, result.pii),
                    }
                    with warehouse.merchant_scope(MERCHANT) as conn:
                        for table, frame in frames.items():
                            conn.load_frame(schema, table, _with_provenance(frame, day, now, "bench"))
                    lines += len(result.lines)
                    orders += len(result.orders)
                    del result, frames
        pipeline_seconds = time.perf_counter() - started
        with warehouse.connect() as conn:
            loaded = conn.row_count(schema, ORDER_LINES.name)
    assert loaded == lines, (loaded, lines)
    return {
        "engine": engine,
        "orders": orders,
        "lines": lines,
        "pipeline_seconds": pipeline_seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--chunk-orders", type=int, default=20_000)
    parser.add_argument("--engines", default="duckdb,postgres")
    parser.add_argument("--child", nargs=4, metavar=("STEP", "ENGINE", "RAW", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, engine, raw, url = args.child
        if step == "bare":
            print(json.dumps(run_bare(engine, Path(raw), url)))
        else:
            print(json.dumps(run_pipeline(engine, Path(raw), url, args.chunk_orders)))
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
            r: dict = {}
            for step in ("bare", "pipeline"):
                out = subprocess.run(
                    [sys.executable, __file__, "--chunk-orders", str(args.chunk_orders), "--child", step, engine, str(raw), url],
                    capture_output=True, text=True, check=True,
                )
                r.update(json.loads(out.stdout.strip().splitlines()[-1]))
        except subprocess.CalledProcessError as exc:
            print(exc.stderr[-3000:])
            raise
        finally:
            if db:
                with psycopg.connect(PG_ADMIN, autocommit=True) as con:
                    con.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
                    con.execute(f"DROP ROLE IF EXISTS m_{MERCHANT}_rw")
        rate = r["lines"] / r["pipeline_seconds"]
        print(
            f"{engine:<9} {r['lines']:,} lines normalized + PII encrypted + loaded in {r['pipeline_seconds']:.1f} s "
            f"= {rate:,.0f} lines/s; bare load {r['bare_seconds']:.1f} s; ratio {r['pipeline_seconds'] / r['bare_seconds']:.1f}; "
            f"peak RSS {r['peak_rss_mb']:,.0f} MB (bare load's own process: {r['bare_peak_rss_mb']:,.0f} MB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
