"""The `--vars`, target and environment of one dbt invocation: which merchant, as of which day,
which engine, and the merchant's own confinement (ADR 0001); and where dbt's parse of a merchant's
project is kept between its builds (ADR 0009, "Speed")."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from datetime import date
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from illuma_pipelines.merchant_ids import validate_merchant_id
from illuma_pipelines.paths import DBT_PROJECT_DIR
from illuma_pipelines.warehouse import DuckDBWarehouse, PostgresWarehouse, Warehouse

PASSWORD_ENV = "ILLUMA_PG_PASSWORD"  # read by profiles.yml; set only for the dbt process
# The build's day, read by the models when they run (macros/build_window.sql), never while dbt
# parses: as a var it would change every day, and any change of --vars makes dbt parse anew.
AS_OF_DATE_ENV = "ILLUMA_AS_OF_DATE"
PARTIAL_PARSE = "partial_parse.msgpack"
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def dbt_target(warehouse_url: str) -> str:
    if warehouse_url.startswith("duckdb:///"):
        return "duckdb"
    if warehouse_url.startswith(("postgresql", "postgres://")):
        return "postgres"
    raise ValueError(f"no dbt target for warehouse url scheme {warehouse_url.split(':', 1)[0]!r}")


def validate_as_of_date(value: str) -> str:
    """`value` if it is a real calendar date written YYYY-MM-DD. Models put it in SQL as a literal,
    so nothing else may pass (`date.fromisoformat` alone also takes 20261101 and week dates)."""
    if not _ISO_DATE.fullmatch(value):
        raise ValueError(f"as_of_date {value!r} is not a date written YYYY-MM-DD (e.g. 2026-11-20)")
    try:
        date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"as_of_date {value!r} is not a calendar date: {exc}") from None
    return value


def build_dbt_vars(merchant_id: str, as_of_date: str, warehouse: Warehouse) -> tuple[dict[str, str], dict[str, str]]:
    """(vars, env) for one merchant's dbt build over all of its dates, as of `as_of_date` (the
    build's day: incremental models rebuild a trailing window ending there).

    The vars hold what stays the same from one build of the merchant to the next (the merchant,
    its file or its server, database and login), so that dbt reuses its parse of the project
    (`merchant_parse_cache`); the env holds what changes with every build (`as_of_date`) and, on
    PostgreSQL, the merchant login's password: both for the dbt process alone, never in its
    arguments, vars or logs."""
    validate_merchant_id(merchant_id)
    vars_: dict[str, str] = {"merchant_id": merchant_id}
    env = {AS_OF_DATE_ENV: validate_as_of_date(as_of_date)}
    # The merchant's own warehouse (ADR 0011): its file, or its server and database.
    warehouse = warehouse.merchant_warehouse(merchant_id)
    if isinstance(warehouse, DuckDBWarehouse):
        vars_["duckdb_path"] = str(warehouse.merchant_file(merchant_id))
        return vars_, env
    assert isinstance(warehouse, PostgresWarehouse)
    dsn, password = warehouse.merchant_dsn(merchant_id)
    parts = conninfo_to_dict(dsn)
    vars_.update(
        pg_host=str(parts.get("host") or "127.0.0.1"),
        pg_port=str(parts.get("port") or 5432),
        pg_user=str(parts["user"]),
        pg_dbname=str(parts.get("dbname") or "postgres"),
    )
    return vars_, {**env, PASSWORD_ENV: password}


def parse_cache_dir() -> Path:
    """Where each merchant's parse of the dbt project is kept between its builds."""
    return DBT_PROJECT_DIR / "target" / "merchant_parse"


def merchant_dbt_files(merchant_id: str) -> list[Path]:
    """The merchant's kept parses (one per engine) and its builds' target directories (their
    compiled SQL names its schema): erasure removes them with the merchant's other files."""
    validate_merchant_id(merchant_id)
    caches = [merchant_parse_cache(parse_cache_dir(), target, merchant_id) for target in ("duckdb", "postgres")]
    # Build directories are "<merchant>-<run>-<n>": merchant ids hold no "-", so no other
    # merchant's directory starts so.
    return [p for p in caches if p.exists()] + sorted((DBT_PROJECT_DIR / "target").glob(f"{merchant_id}-*"))


def merchant_parse_cache(cache_dir: Path, target: str, merchant_id: str) -> Path:
    """Where the merchant's parse of the project is kept for its next build: one file per engine
    and merchant, so that builds of different merchants, which may run at the same time, never
    write the same file. dbt checks the file before it uses it (dbt version, vars, target,
    profile, the checksum of every project file) and parses anew what no longer matches."""
    return cache_dir / target / f"{validate_merchant_id(merchant_id)}.msgpack"


def seed_partial_parse(cache: Path, target_path: Path) -> bool:
    """Put the kept parse into a dbt invocation's own target path, before dbt starts."""
    target_path.mkdir(parents=True, exist_ok=True)
    if not cache.exists():
        return False
    shutil.copyfile(cache, target_path / PARTIAL_PARSE)
    return True


def keep_partial_parse(target_path: Path, cache: Path) -> None:
    """Keep the parse dbt wrote into its target path for the merchant's next build: written
    beside the cache and renamed over it, so a build that starts meanwhile reads the old parse or
    the new one, never half of one."""
    written = target_path / PARTIAL_PARSE
    if not written.exists():
        return
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.")
    try:
        with os.fdopen(fd, "wb") as out, open(written, "rb") as src:
            shutil.copyfileobj(src, out)
        os.replace(tmp, cache)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
