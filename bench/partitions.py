"""Benchmark: the Dagster UI's partition queries for a date × merchant asset on Postgres storage.

Registers N merchants (default 500) in a Dagster instance backed by the PostgreSQL service,
records materializations for the most recent days of every merchant, then times the GraphQL
queries the UI sends for a date × merchant asset over two years of daily partitions: the
partition health query (status ranges + stats) and the asset graph query. Prints the figures.

    .venv/bin/python bench/partitions.py [--merchants 500] [--days-materialized 7] [--repeat 5]

Uses a throwaway database on ILLUMA_BENCH_PG_URL (default postgres@127.0.0.1:5432) that it drops
afterwards. The code location is loaded out of process from workspace.yaml, as the UI loads it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get("ILLUMA_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ASSET = ["extracts", "amazon_orders"]

PARTITION_HEALTH = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension(startIdx: 0, endIdx: 50) { name type partitionKeys }
      assetPartitionStatuses {
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey primaryDimEndKey
            secondaryDim {
              ... on DefaultPartitionStatuses { materializedPartitions failedPartitions }
              ... on TimePartitionStatuses { ranges { startKey endKey status } }
            }
          }
        }
      }
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
    }
  }
}
"""

ASSET_GRAPH = """
query AssetGraphQuery {
  assetNodes {
    id
    assetKey { path }
    groupName
    isPartitioned
    isMaterializable
    kinds
    dependencyKeys { path }
    dependedByKeys { path }
    partitionDefinition { description dimensionTypes { name type } }
  }
}
"""


def timed(fn, repeat: int) -> tuple[float, float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), max(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--merchants", type=int, default=500)
    parser.add_argument("--days-materialized", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    dbname = f"illuma_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {dbname}")
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    home = Path(tempfile.mkdtemp(prefix="illuma_bench_home_"))
    (home / "dagster.yaml").write_text(
        f"storage:\n  postgres:\n    postgres_url: \"{base}/{dbname}\"\ntelemetry:\n  enabled: false\n"
    )
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        return _run(args, dbname)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


def _run(args: argparse.Namespace, dbname: str) -> int:
    import dagster as dg
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    from assets.partitions import (
        HISTORY_START,
        MERCHANTS,
        merchant_daily_partitions,
        merchant_date_key,
    )

    instance = dg.DagsterInstance.get()
    merchants = [f"bench_m{i:04d}" for i in range(args.merchants)]
    started = time.perf_counter()
    instance.add_dynamic_partitions(MERCHANTS, merchants)
    add_seconds = time.perf_counter() - started

    today = date.today()
    days = [(today - timedelta(days=n)).isoformat() for n in range(args.days_materialized, 0, -1)]
    started = time.perf_counter()
    for day in days:
        for merchant_id in merchants:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=ASSET, partition=merchant_date_key(merchant_id, day))
            )
    events_seconds = time.perf_counter() - started
    n_days = (today - date.fromisoformat(HISTORY_START)).days

    with define_out_of_process_context(str(ROOT / "workspace.yaml"), None, instance) as context:
        def query(q: str, variables: dict | None = None):
            result = execute_dagster_graphql(context, q, variables or {})
            if result.errors:
                raise RuntimeError(f"GraphQL errors: {result.errors}")
            return result.data

        health_med, health_max, health = timed(
            lambda: query(PARTITION_HEALTH, {"assetKey": {"path": ASSET}}), args.repeat
        )
        graph_med, graph_max, graph = timed(lambda: query(ASSET_GRAPH), args.repeat)

    stats = health["assetNodeOrError"]["partitionStats"]
    expected = args.merchants * len(days)
    if stats["numMaterialized"] != expected:
        raise RuntimeError(f"expected {expected} materialized partitions, the UI query says {stats}")
    total_keys = len(merchant_daily_partitions.get_partition_keys(dynamic_partitions_store=instance)) if args.merchants <= 200 else None

    print(f"Dagster {dg.__version__} on PostgreSQL (database {dbname}, dropped afterwards)")
    print(f"merchants: {args.merchants}; daily partitions since {HISTORY_START}: {n_days}; "
          f"date x merchant partitions: {args.merchants * n_days:,}"
          + (f" (enumerated {total_keys:,})" if total_keys else ""))
    print(f"register merchants: {add_seconds:.2f} s; record {expected:,} materializations: {events_seconds:.1f} s")
    print(f"partition health query (status ranges + stats): median {health_med:.3f} s, max {health_max:.3f} s "
          f"over {args.repeat} runs; numPartitions={stats['numPartitions']:,}, numMaterialized={stats['numMaterialized']:,}")
    print(f"asset graph query ({len(graph['assetNodes'])} asset nodes): median {graph_med:.3f} s, max {graph_max:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
