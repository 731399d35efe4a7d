"""Encrypted backup and restore of a whole warehouse vs bare pg_dump/pg_restore and file copies.

A warehouse of `--merchants` merchants and `--orders` orders in all (core orders, their sealed
buyer PII and, unless --no-payloads, raw order payloads), on PostgreSQL and on DuckDB. Per engine:

- bare: `pg_dump -Fc` to a file and `pg_restore` of it into a new database (PostgreSQL), or a
  copy of every database file out and back (DuckDB);
- ours: `create_backup` (one snapshot, counts and checksums, AES-256-GCM chunks, a directory
  store) and `restore_backup` (every chunk checked, pg_restore in one transaction, counts and
  checksums compared, ledger re-application).

Each measured step runs in a child process; its peak memory (with pg_dump/pg_restore, its own
children) is the `wait4` rusage. Goals (issue 18): backup and restore <= 1.3 x bare, peak < 500 MB.

    .venv/bin/python bench/backup.py                                   # 200 merchants, 10M orders
    .venv/bin/python bench/backup.py --merchants 5 --orders 20000 --engines duckdb   # a quick look
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PG_ADMIN, admin_url, pg_dbname, throwaway_warehouse_url  # noqa: E402

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def _series(dialect: str, start: int, n: int) -> str:
    if dialect == "duckdb":
        return f"range({start}, {start + n}) AS g(i)"
    return f"generate_series({start}, {start + n - 1}) AS g(i)"


def build(url: str, merchants: int, orders: int, payloads: bool) -> None:
    from illuma_pipelines.core.tables import BUYER_PII, ORDERS
    from illuma_pipelines.merchant_ids import merchant_schema
    from illuma_pipelines.raw_records import raw_table
    from illuma_pipelines.registry import add_merchant
    from illuma_pipelines.warehouse import Warehouse

    wh = Warehouse.from_url(url)
    wh.ensure_platform()
    raw = raw_table("amazon", "orders")
    json_type = "JSON" if wh.dialect == "duckdb" else "JSONB"
    per = orders // merchants
    oid = "CAST(i AS VARCHAR)"
    seal = "'v1.7.' || md5(CAST(i AS VARCHAR) || '{}') || '.' || md5(CAST(i AS VARCHAR)) || md5(CAST(i AS VARCHAR) || 'x')"
    payload = (
        "'{\"orderId\":\"O-' || " + oid + " || '\",\"buyer\":{\"buyerName\":\"' || " + seal.format("n")
        + " || '\"},\"orderStatus\":\"SHIPPED\",\"proceeds\":{\"grandTotal\":{\"amount\":\"12.50\",\"currencyCode\":\"USD\"}}}'"
    )
    started = time.monotonic()
    for k in range(merchants):
        mid = f"bench_bk_{k:04d}"
        add_merchant(wh, mid)
        schema = merchant_schema(mid)
        series = _series(wh.dialect, k * per, per)
        with wh.merchant_scope(mid) as conn:
            for spec in (ORDERS, BUYER_PII, *([raw] if payloads else [])):
                conn.create_table(schema, spec)
            conn.execute(
                f"INSERT INTO {schema}.core_orders (channel, marketplace_order_id, purchased_at, shipped_at, status, "
                "channel_status, fulfillment_channel, currency, order_total, partition_date, loaded_at, run_id) "
                f"SELECT 'amazon', 'O-' || {oid}, CAST(? AS TIMESTAMPTZ), CAST(? AS TIMESTAMPTZ), 'shipped', 'Shipped', "
                f"'merchant', 'USD', 12.50 + i % 100, CAST(? AS DATE), CAST(? AS TIMESTAMPTZ), 'bench' FROM {series}",
                [NOW, NOW, NOW.date(), NOW],
            )
            conn.execute(
                f"INSERT INTO {schema}.core_buyer_pii (channel, marketplace_order_id, buyer_name, buyer_email, "
                "address_line1, partition_date, loaded_at, run_id, pii_key_version) "
                f"SELECT 'amazon', 'O-' || {oid}, {seal.format('n')}, {seal.format('e')}, {seal.format('a')}, "
                f"CAST(? AS DATE), CAST(? AS TIMESTAMPTZ), 'bench', 7 FROM {series}",
                [NOW.date(), NOW],
            )
            if payloads:
                conn.execute(
                    f"INSERT INTO {schema}.{raw.name} (partition_date, source, record_key, payload, extracted_at, run_id) "
                    f"SELECT CAST(? AS DATE), 'searchOrders', 'O-' || {oid}, CAST({payload} AS {json_type}), "
                    f"CAST(? AS TIMESTAMPTZ), 'bench' FROM {series}",
                    [NOW.date(), NOW],
                )
        if (k + 1) % max(1, merchants // 10) == 0:
            print(f"  built {k + 1}/{merchants} merchants ({time.monotonic() - started:.0f} s)", flush=True)


# ------------------------------------------------------------------------- measured steps
def step(op: str, args: dict) -> dict:
    """Run in the child: one measured operation; returns what it wants reported."""
    from illuma_pipelines.backups import DirectoryStore, create_backup, restore_backup
    from illuma_pipelines.warehouse import Warehouse

    if op == "bare_pg_dump":
        subprocess.run(["pg_dump", "-Fc", "--no-password", "-f", args["file"], "-d", args["admin"]], check=True)
        return {"bytes": os.path.getsize(args["file"])}
    if op == "bare_pg_restore":
        subprocess.run(["psql", "-q", "-d", PG_ADMIN, "-c", f"CREATE DATABASE {args['db']}"], check=True)
        subprocess.run(["pg_restore", "--no-password", "--single-transaction", "--exit-on-error", "-d",
                        admin_url(args["db"]), args["file"]], check=True)
        return {}
    if op == "bare_copy":
        total = 0
        for src in [Path(p) for p in args["files"]]:
            dst = Path(args["dest"]) / src.relative_to(args["root"])
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            total += dst.stat().st_size
        return {"bytes": total}
    wh = Warehouse.from_url(args["url"])
    store = DirectoryStore(args["store"])
    if op == "backup":
        manifest = create_backup(wh, store, admin_url=PG_ADMIN)
        return {"backup_id": manifest["backup_id"], "bytes": sum(i["encrypted_bytes"] for i in manifest["items"]),
                "plain_bytes": sum(i["plain_bytes"] for i in manifest["items"]),
                "rows": sum(t["rows"] for t in manifest["tables"].values())}
    if op == "restore":
        result = restore_backup(wh, store, args["backup_id"], args["into"], admin_url=PG_ADMIN)
        if not result.ok:
            raise SystemExit(f"restore differs from the manifest: {result.mismatches[:3]}")
        return {"tables": result.tables_compared}
    raise SystemExit(f"unknown step {op}")


def measured(op: str, args: dict) -> dict:
    """Run `op` in a child process: wall time, peak RSS (child and its children), its report."""
    out = Path(tempfile.mkstemp(prefix="bench-backup-")[1])
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, "--step", op, json.dumps(args), str(out)])
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"step {op} failed (exit {proc.returncode})")
    report = json.loads(out.read_text() or "{}")
    out.unlink()
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024, **report}


def run_engine(engine: str, merchants: int, orders: int, payloads: bool, work: Path) -> list[tuple]:
    rows = []
    with throwaway_warehouse_url(engine, work, "bench_bk_0000") as url:
        t0 = time.monotonic()
        build(url, merchants, orders, payloads)
        print(f"{engine}: built {merchants} merchants, {orders:,} orders in {time.monotonic() - t0:.0f} s", flush=True)
        if engine == "postgres":
            db = pg_dbname(url)
            subprocess.run(["psql", "-q", "-d", admin_url(db), "-c", "CHECKPOINT"], check=True)
            dump = work / "bare.pgdump"
            bare_b = measured("bare_pg_dump", {"file": str(dump), "admin": admin_url(db)})
            bare_r = measured("bare_pg_restore", {"file": str(dump), "db": f"{db}_bare"})
            into = admin_url(f"{db}_restored")
        else:
            from illuma_pipelines.warehouse import DuckDBWarehouse

            wh = DuckDBWarehouse(Path(url[len("duckdb:///"):]))
            for scope in [wh.connect(), *(wh.merchant_scope(m) for m in wh.merchant_ids())]:
                with scope as conn:
                    conn.execute("CHECKPOINT")
            files = [str(wh.path), *(str(p) for p in sorted(wh.merchants_dir.glob("*.duckdb")))]
            bare_b = measured("bare_copy", {"files": files, "root": str(work), "dest": str(work / "bare-out")})
            out_files = [str(p) for p in sorted((work / "bare-out").rglob("*.duckdb"))]
            bare_r = measured("bare_copy", {"files": out_files, "root": str(work / "bare-out"), "dest": str(work / "bare-back")})
            into = f"duckdb:///{work / 'restored' / 'warehouse.duckdb'}"
        ours_b = measured("backup", {"url": url, "store": str(work / "backups")})
        ours_r = measured("restore", {"url": url, "store": str(work / "backups"), "backup_id": ours_b["backup_id"], "into": into})
        if engine == "postgres":
            subprocess.run(["psql", "-q", "-d", PG_ADMIN, "-c", f"DROP DATABASE IF EXISTS {pg_dbname(url)}_restored WITH (FORCE)"], check=True)
        size = ours_b["plain_bytes"] / 1e6
        rows.append((engine, "backup", bare_b, ours_b, size))
        rows.append((engine, "restore", bare_r, ours_r, size))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merchants", type=int, default=200)
    parser.add_argument("--orders", type=int, default=10_000_000)
    parser.add_argument("--engines", default="postgres,duckdb")
    parser.add_argument("--no-payloads", action="store_true", help="core tables only, no raw order payloads")
    parser.add_argument("--work", default="", help="a folder for the DuckDB files and backups (default: a temp dir)")
    parser.add_argument("--step", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        op, params, out = args.step
        Path(out).write_text(json.dumps(step(op, json.loads(params))))
        return 0
    os.environ.setdefault("ILLUMA_BACKUP_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    results = []
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        work = Path(tempfile.mkdtemp(prefix=f"bench-backup-{engine}-", dir=args.work or None))
        os.environ["ILLUMA_VAR_DIR"] = str(work / "var")
        try:
            results += run_engine(engine, args.merchants, args.orders, not args.no_payloads, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.merchants} merchants, {args.orders:,} orders{'' if not args.no_payloads else ' (no payloads)'}")
    print(f"{'engine':<9} {'step':<8} {'bare s':>8} {'ours s':>8} {'ratio':>6} {'ours MB/s':>10} {'bare MB':>8} "
          f"{'ours MB':>8} {'peak MB ours':>12} {'peak MB bare':>12}")
    for engine, what, bare, ours, size in results:
        print(f"{engine:<9} {what:<8} {bare['seconds']:>8.2f} {ours['seconds']:>8.2f} {ours['seconds'] / bare['seconds']:>6.2f} "
              f"{size / ours['seconds']:>10.1f} {bare.get('bytes', 0) / 1e6:>8.1f} {ours.get('bytes', 0) / 1e6:>8.1f} "
              f"{ours['peak_mb']:>12.0f} {bare['peak_mb']:>12.0f}")
    print("goals: ratio <= 1.3, peak < 500 MB (the child process with pg_dump/pg_restore)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
