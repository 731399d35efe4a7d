"""Benchmark: what sealing buyer PII at landing costs the extract (ADR 0007).

    .venv/bin/python bench/landing.py [--records 100000] [--engines duckdb,postgres] [--runs 3]

N Amazon Orders v2026-01-01 records (the official doc example, ids and buyer varied, 1 to 4 lines
each) go through the extract asset's own landing steps, in this process, as one partition:
`raw_records.split_records` (keys, checks, exact-decimal JSON text) and the raw table load
(`replace_rows`), without and with the sealers of `shredding.extract_sealers` (every PII field of
every payload sealed with the vault while the JSON text is made, the rest kept byte for byte). The HTTP fetch is left out of both:
it only adds the same time to each. Prints microseconds per record for both and their ratio,
the fastest of `--runs` each. Goal (issue 11): ratio <= 1.5.
"""

from __future__ import annotations

import argparse
import copy
import json
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import throwaway_warehouse_url  # noqa: E402
from illuma_pipelines.merchant_ids import merchant_schema  # noqa: E402
from illuma_pipelines.raw_records import RecordRule, ensure_pii_key_column, raw_table, split_records  # noqa: E402
from illuma_pipelines.registry import add_merchant  # noqa: E402
from illuma_pipelines.retention import DEFAULT_POLICY  # noqa: E402
from illuma_pipelines.shredding import extract_sealers  # noqa: E402
from illuma_pipelines.vault import FileKeyStore, LocalKeyring, Vault  # noqa: E402
from illuma_pipelines.warehouse import Warehouse  # noqa: E402

TEMPLATE = ROOT / "tests" / "fixtures" / "amazon" / "amazon_v2026_searchOrders_docexample.json"
MERCHANT = "bench_landing"
DAY = "2026-11-26"
RULE = RecordRule(key_fields=("orderId",), required=("orderId", "lastUpdatedTime"))


def records(n: int) -> list[dict]:
    template = json.loads(TEMPLATE.read_text())["orders"][0]
    out = []
    for i in range(n):
        order = copy.deepcopy(template)
        order["orderId"] = f"{100 + i // 10_000_000:03d}-{i // 1000 % 10_000_000:07d}-{i % 10_000_000:07d}"
        order["lastUpdatedTime"] = "2026-11-26T10:00:00Z"
        buyer = order.setdefault("buyer", {})
        buyer["buyerName"] = f"Buyer {i}"
        buyer["buyerEmail"] = f"buyer{i}@marketplace.amazon.com"
        order["orderItems"] = order["orderItems"][:1] * (1 + i % 4)
        out.append(order)
    return out


def land(wh: Warehouse, batch: list[dict], vault: Vault | None) -> float:
    """One partition through split, (seal,) load; seconds."""
    schema = merchant_schema(MERCHANT)
    table = raw_table("amazon", "orders")
    started = time.perf_counter()
    extracted = datetime.now(UTC)
    sealer = quarantine_sealer = None
    if vault is not None:
        sealer, quarantine_sealer = extract_sealers(
            vault, MERCHANT, "amazon", "orders", policy=DEFAULT_POLICY, extracted_at=extracted
        )
    split = split_records(
        batch, RULE, dataset="amazon_orders", source="amazon.searchOrders", partition_date=DAY,
        window=(extracted - timedelta(days=1), extracted), extracted_at=extracted, run_id="bench",
        sealer=sealer, quarantine_sealer=quarantine_sealer,
    )
    with wh.merchant_scope(MERCHANT) as conn:
        conn.replace_rows(schema, table.name, {"partition_date": DAY}, split.raw)
    return time.perf_counter() - started


def run_engine(engine: str, batch: list[dict], runs: int, work: Path) -> tuple[float, float]:
    with throwaway_warehouse_url(engine, work, MERCHANT) as url:
        wh = Warehouse.from_url(url)
        wh.ensure_platform()
        add_merchant(wh, MERCHANT)
        schema = merchant_schema(MERCHANT)
        with wh.merchant_scope(MERCHANT) as conn:
            conn.create_table(schema, raw_table("amazon", "orders"))
            ensure_pii_key_column(conn, schema, "raw_amazon_orders")
        vault = Vault(FileKeyStore(work / "keys.json"), LocalKeyring([secrets.token_bytes(32)]))
        vault.ensure_key(MERCHANT, f"hold:{DAY}")
        plain = min(land(wh, batch, None) for _ in range(runs))
        sealed = min(land(wh, batch, vault) for _ in range(runs))
        return plain, sealed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--engines", default="duckdb,postgres")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    batch = records(args.records)
    print(f"{args.records:,} Amazon order records, one partition; fastest of {args.runs} runs each")
    for engine in args.engines.split(","):
        with tempfile.TemporaryDirectory(prefix="illuma-landing-bench-") as tmp:
            plain, sealed = run_engine(engine, batch, args.runs, Path(tmp))
        n = args.records
        print(
            f"{engine:<9} without sealing {plain / n * 1e6:6.1f} us/record | with sealing {sealed / n * 1e6:6.1f} "
            f"us/record | ratio {sealed / plain:.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
