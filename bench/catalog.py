"""Benchmark: loading a merchant's parts catalog (issue 14) against a bare load of the same file.

    .venv/bin/python bench/catalog.py [--parts 200000] [--fitments 3] [--engines duckdb,postgres] [--bare-runs 3] [--keep]

A deterministic catalog CSV of `--parts` parts with 1 to 2*fitments-1 fitment rows each (`--fitments`
on average: 600,000 rows for the defaults), OEM-style part numbers, brands and part types of
outdoor power, auto and agricultural parts, GTIN-12s with leading zeros, costs in USD, one part in
fifty superseded (some through `SUB=` in the SKU cell, some in chains) and one extra column.

Per engine, in a throwaway warehouse (bench/common.py), each step timed through its commit:
1. bare: the file into one table by the engine alone, as the admin: DuckDB
   `CREATE TABLE ... AS SELECT * FROM read_csv(...)` in a new database file of its own, PostgreSQL
   `COPY ... FROM STDIN (FORMAT csv, HEADER)` into a new table of text columns: the file as it is,
   so no key or index (the file has none), logged like the catalog's tables (an UNLOGGED table
   would skip the WAL the import must write), created in the COPY's transaction (which skips
   nothing unless the server runs wal_level=minimal; the `wal_level` is printed). `--bare-runs`
   loads (3 by default), each into a fresh table, before the imports; the ratios are to their
   median (single loads of the same file ranged 0.79-1.11 s on the shared 2-core machine).
2. import: `illuma_pipelines.catalog.import_catalog_file` (parse, validate, resolve supersessions,
   compare with the stored versions, write parts, fitment, rejects and the file record), run in a
   child process of its own so its peak resident memory (getrusage ru_maxrss) is the import's
   alone (plus the interpreter and its libraries: about 230 MB before it reads anything).
3. change: a second file, the same catalog with one part in ten re-costed: closes and opens those
   versions (SCD type 2); then 4. the same file again (a no-op: recognised by its SHA-256).

Prints rows per second, seconds, peak RSS and the ratio import / bare for each, and the CPU
seconds the import took in Python (all its threads) and, on PostgreSQL, in its server process:
on 2 cores the wall time cannot go below half their sum, whatever overlaps. Goal (issue 14):
ratio <= 3 and peak memory < 1 GB at 200,000 parts.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import admin_url, pg_dbname, throwaway_warehouse_url  # noqa: E402

if TYPE_CHECKING:
    from illuma_pipelines.warehouse import Warehouse

MERCHANT = "bench_catalog"
HEADER = [
    "sku", "brand", "mpn", "part_type", "gtin", "unit_cost", "cost_currency", "landed_cost", "map_price",
    "min_price", "max_price", "superseded_by", "fitment_year_from", "fitment_year_to", "fitment_make",
    "fitment_model", "fitment_engine", "equipment_model", "country_of_origin",
]
BRANDS = [
    ("Briggs & Stratton", "BS", "Air Filter"), ("Rotary", "ROT", "Mower Blade"), ("Stens", "STENS", "Spark Plug"),
    ("Oregon", "OR", "Saw Chain"), ("ACDelco", "ACD", "Brake Pad Set"), ("Kohler", "KO", "Oil Filter"),
    ("John Deere", "JD", "Drive Belt"), ("Husqvarna", "HUS", "Blade Adapter"), ("Dorman", "DOR", "Control Arm"),
    ("Gates", "GAT", "Serpentine Belt"),
]
MAKES = [("Chevrolet", "Silverado 1500", "5.3L V8"), ("Ford", "F-150", "3.5L V6"), ("Honda", "GCV160", ""),
         ("Toro", "Recycler 22", ""), ("John Deere", "X350", ""), ("Kubota", "BX2380", "D902"),
         ("Cub Cadet", "XT1", ""), ("Toyota", "Tacoma", "2.7L I4")]
ORIGINS = ["US", "CN", "MX", "DE", "JP", ""]


def _gtin12(n: int) -> str:
    body = f"{n % 10**11:011d}"
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(body.zfill(13)))
    return body + str((10 - total % 10) % 10)


def write_catalog(path: Path, parts: int, fitments: int, *, recost_every: int = 0) -> int:
    """Write the benchmark's catalog CSV; returns its number of data rows. `recost_every`: one
    part in that many gets another unit cost (the second file of the change step)."""
    rows = 0
    span = max(1, 2 * fitments - 1)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(HEADER)
        for i in range(parts):
            brand, prefix, part_type = BRANDS[i % len(BRANDS)]
            mpn = f"{100000 + i * 7 % 900000}-{i % 97:02d}"
            sku = f"{prefix}-{mpn}"
            cents = 150 + (i * 37) % 20000
            if recost_every and i % recost_every == 0:
                cents += 25
            cost = f"{cents // 100}.{cents % 100:02d}"
            landed = f"{(cents * 11 // 10) // 100}.{(cents * 11 // 10) % 100:02d}"
            low = cents * 2
            row = [sku, brand, mpn, part_type, _gtin12(i * 104729) if i % 5 else "", cost, "USD", landed,
                   f"{low // 100}.{low % 100:02d}" if i % 3 == 0 else "", f"{low // 100}.{low % 100:02d}",
                   f"{low * 2 // 100}.{low * 2 % 100:02d}", "", "", "", "", "", "", "", ORIGINS[i % len(ORIGINS)]]
            if i % 50 == 1:
                row[11] = f"{prefix}-{100000 + (i + 1) * 7 % 900000}-{(i + 1) % 97:02d}"  # the next part
            elif i % 50 == 2:
                row[0] = f"{sku} SUB= {prefix}-{mpn}R"  # OEM notation; the target has no row of its own
            for f in range(1 + (i * 7919) % span):
                make, model, engine = MAKES[(i + f) % len(MAKES)]
                year = 1995 + (i + 3 * f) % 25
                row[12:18] = [str(year), str(year + 1 + f % 6), make, model, engine, f"{model} {f}" if i % 4 == 0 else ""]
                out.writerow(row)
                rows += 1
    return rows


# ------------------------------------------------------------------------------------ bare loads


def bare_duckdb(csv_path: Path, work: Path) -> float:
    import duckdb

    target = work / "bare.duckdb"
    target.unlink(missing_ok=True)
    started = time.perf_counter()
    con = duckdb.connect(str(target))
    con.execute("CREATE TABLE catalog AS SELECT * FROM read_csv(?, header = true)", [str(csv_path)])
    con.close()  # checkpoints, as the warehouse does after each unit of work
    return time.perf_counter() - started


def bare_postgres(csv_path: Path, url: str) -> float:
    import psycopg

    columns = ", ".join(f"{name} text" for name in HEADER)
    started = time.perf_counter()
    with psycopg.connect(admin_url(pg_dbname(url))) as con:
        con.execute(f"CREATE TABLE public.bare_catalog ({columns})")
        with con.cursor().copy("COPY public.bare_catalog FROM STDIN (FORMAT csv, HEADER)") as copy, open(csv_path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                copy.write(chunk)
    elapsed = time.perf_counter() - started
    with psycopg.connect(admin_url(pg_dbname(url)), autocommit=True) as con:
        con.execute("DROP TABLE public.bare_catalog")
    return elapsed


def _wal_level(url: str) -> str:
    import psycopg

    with psycopg.connect(admin_url(pg_dbname(url))) as con:
        return con.execute("SHOW wal_level").fetchone()[0]


# ------------------------------------------------------------------------------------ the import


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process
    return usage.ru_utime + usage.ru_stime


def _server_cpu_seconds(wh: Warehouse) -> float | None:
    """The CPU time of the PostgreSQL backend the import used (the merchant's pooled connection,
    which the import opened), read from /proc: only for a server on this machine, else None."""
    import os

    try:
        with wh.merchant_scope(MERCHANT) as conn:
            pid = conn.fetchone("SELECT pg_backend_pid()")[0]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _import_in_child(url: str, path: str) -> dict:
    """Runs in a fresh process: one import, its seconds, the CPU seconds it took here (all
    threads) and, on PostgreSQL, in the server, and the process's peak RSS."""
    sys.path.insert(0, str(ROOT))
    from illuma_pipelines.catalog import import_catalog_file
    from illuma_pipelines.warehouse import Warehouse

    wh = Warehouse.from_url(url)
    cpu = _cpu_seconds()
    started = time.perf_counter()
    summary = import_catalog_file(wh, MERCHANT, Path(path))
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "server_cpu_seconds": _server_cpu_seconds(wh) if wh.dialect == "postgres" else None,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **summary.metadata(),
    }


def run_import(url: str, path: Path) -> dict:
    # A process per import (spawned, not forked: nothing of this process's memory counts).
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_import_in_child, url, str(path)).result()


def run_engine(engine: str, first: Path, second: Path, rows: int, work: Path, bare_runs: int) -> None:
    from illuma_pipelines.registry import add_merchant
    from illuma_pipelines.warehouse import Warehouse

    work.mkdir(parents=True, exist_ok=True)
    with throwaway_warehouse_url(engine, work, MERCHANT) as url:
        wh = Warehouse.from_url(url)
        wh.ensure_platform()
        add_merchant(wh, MERCHANT)
        bares = [bare_duckdb(first, work) if engine == "duckdb" else bare_postgres(first, url) for _ in range(bare_runs)]
        bare = statistics.median(bares)
        setting = f", wal_level {_wal_level(url)}" if engine == "postgres" else ""
        print(f"{engine:<9} bare    {bare:6.2f} s  {rows / bare:>10,.0f} rows/s  "
              f"(median of {', '.join(f'{b:.2f}' for b in bares)}{setting})", flush=True)
        for label, path in (("import", first), ("change", second), ("again", second)):
            r = run_import(url, path)
            extra = (
                f"parts new {r['parts_new']:,} changed {r['parts_changed']:,} unchanged {r['parts_unchanged']:,}, "
                f"fitment {r['fitment_rows']:,}, rejected {r['rows_rejected']:,}"
                if not r["already_loaded"] else "already loaded: nothing changed"
            )
            server = f", server {r['server_cpu_seconds']:.2f} s" if r["server_cpu_seconds"] is not None else ""
            print(
                f"{engine:<9} {label:<7} {r['seconds']:6.2f} s  {rows / r['seconds']:>10,.0f} rows/s  "
                f"peak RSS {r['max_rss_mb']:6.0f} MB  ratio {r['seconds'] / bare:5.2f}  "
                f"(CPU: python {r['cpu_seconds']:.2f} s{server}; {extra})",
                flush=True,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=200_000)
    parser.add_argument("--fitments", type=int, default=3, help="fitment rows per part, on average")
    parser.add_argument("--engines", default="duckdb,postgres")
    parser.add_argument("--bare-runs", type=int, default=3, help="bare loads per engine; ratios are to their median")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (the CSV files)")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="illuma-catalog-bench-")
    work = Path(tmp)
    first, second = work / "catalog.csv", work / "catalog-recosted.csv"
    rows = write_catalog(first, args.parts, args.fitments)
    write_catalog(second, args.parts, args.fitments, recost_every=10)
    print(
        f"{args.parts:,} parts, {rows:,} rows ({first.stat().st_size / 1e6:.1f} MB); goal: ratio <= 3, peak RSS < 1 GB",
        flush=True,
    )
    try:
        for engine in args.engines.split(","):
            run_engine(engine, first, second, rows, work / engine, max(1, args.bare_runs))
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
