"""What the benchmarks share: a throwaway warehouse on either engine."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

PG_ADMIN = os.environ.get("ILLUMA_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def throwaway_warehouse_url(engine: str, work: Path, merchant_id: str) -> Iterator[str]:
    """A DuckDB file under `work`, or a new PostgreSQL database (with any `<name>_bare` copy and the
    merchant's role) dropped afterwards."""
    if engine == "duckdb":
        yield f"duckdb:///{work / 'bench.duckdb'}"
        return
    import psycopg

    dbname = f"illuma_bench_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {dbname}")
    try:
        yield f"{PG_ADMIN.rsplit('/', 1)[0]}/{dbname}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            con.execute(f"DROP DATABASE IF EXISTS {dbname}_bare WITH (FORCE)")
            con.execute(f"DROP ROLE IF EXISTS m_{merchant_id}_rw")
