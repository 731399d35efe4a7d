"""Benchmark: what routing merchants to their warehouse costs (ADR 0011).

    .venv/bin/python bench/placement.py [--samples 300]

Two throwaway PostgreSQL databases on the server of ILLUMA_BENCH_PG_URL (a superuser; default
postgresql://postgres@127.0.0.1:5432/postgres): `main`, provisioned as the platform, and `eu2`, a
named warehouse (ILLUMA_WAREHOUSES). One merchant is placed in each. The pipeline logs in as
`illuma_app`. Medians, interleaved, of one merchant scope with `SELECT 1`:

- plain, cached: one `PostgresWarehouse` reused (its login lookup cached);
- plain, new: a new `PostgresWarehouse` per scope (what `WarehouseResource.get()` gave each step);
- routed, new: `open_warehouse(url)` per scope, for the merchant in main and the one in eu2 (what
  the resource gives each step now: one placement read more);
- routed, cached: one `PlacedWarehouse` reused.

The databases, and the merchants' login roles with them, are dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ADMIN = os.environ.get("ILLUMA_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _median_ms(fn, samples: int) -> float:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    from illuma_pipelines.placement import open_warehouse
    from illuma_pipelines.registry import add_merchant
    from illuma_pipelines.warehouse import PostgresWarehouse

    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    tag = secrets.token_hex(3)
    dbs = [f"bench_place_main_{tag}", f"bench_place_eu2_{tag}"]
    with psycopg.connect(ADMIN, autocommit=True) as con:
        for db in dbs:
            con.execute(f"CREATE DATABASE {db}")
    try:
        os.environ["ILLUMA_WAREHOUSE_ADMIN_URL"] = ADMIN
        server = conninfo_to_dict(ADMIN)
        base = f"postgresql://illuma_app@{server.get('host') or '127.0.0.1'}:{server.get('port') or 5432}"
        url = f"{base}/{dbs[0]}"
        os.environ["ILLUMA_WAREHOUSES"] = json.dumps({"eu2": f"{base}/{dbs[1]}"})
        PostgresWarehouse(url, admin_url=ADMIN).provision()
        routed = open_warehouse(url)
        home, away = f"bench_home_{tag}", f"bench_away_{tag}"
        add_merchant(routed, home)
        add_merchant(routed, away, placement="eu2")
        plain = PostgresWarehouse(url)

        def scope(wh, merchant):
            def run():
                with wh().merchant_scope(merchant) as conn:
                    conn.fetchone("SELECT 1")
            return run

        cases = {
            "plain, cached (main)": scope(lambda: plain, home),
            "plain, new per scope (main)": scope(lambda: PostgresWarehouse(url), home),
            "routed, new per scope (main)": scope(lambda: open_warehouse(url), home),
            "routed, new per scope (eu2)": scope(lambda: open_warehouse(url), away),
            "routed, cached (eu2)": scope(lambda: routed, away),
        }
        for fn in cases.values():
            fn()  # warm the pool
        results: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(3):
            for name, fn in cases.items():
                results[name].append(_median_ms(fn, args.samples // 3 or 1))
        for name, values in results.items():
            print(f"{name:<30} {statistics.median(values):6.2f} ms")
        for merchant in (home, away):
            routed.drop_merchant_schema(merchant)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as con:
            for db in dbs:
                con.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


if __name__ == "__main__":
    main()
