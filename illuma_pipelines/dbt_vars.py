"""The `--vars`, target and password environment of one dbt invocation: which merchant, as of which
day, which engine, and the merchant's own confinement (ADR 0001)."""

from __future__ import annotations

import re
from datetime import date

from psycopg.conninfo import conninfo_to_dict

from illuma_pipelines.merchant_ids import validate_merchant_id
from illuma_pipelines.warehouse import DuckDBWarehouse, PostgresWarehouse, Warehouse

PASSWORD_ENV = "ILLUMA_PG_PASSWORD"  # read by profiles.yml; set only for the dbt process
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
    build's day: incremental models rebuild a trailing window ending there). The vars never hold a
    password: on PostgreSQL the merchant login's password goes in `env`, for the dbt process alone."""
    validate_merchant_id(merchant_id)
    vars_: dict[str, str] = {"merchant_id": merchant_id, "as_of_date": validate_as_of_date(as_of_date)}
    # The merchant's own warehouse (ADR 0011): its file, or its server and database.
    warehouse = warehouse.merchant_warehouse(merchant_id)
    if isinstance(warehouse, DuckDBWarehouse):
        vars_["duckdb_path"] = str(warehouse.merchant_file(merchant_id))
        return vars_, {}
    assert isinstance(warehouse, PostgresWarehouse)
    dsn, password = warehouse.merchant_dsn(merchant_id)
    parts = conninfo_to_dict(dsn)
    vars_.update(
        pg_host=str(parts.get("host") or "127.0.0.1"),
        pg_port=str(parts.get("port") or 5432),
        pg_user=str(parts["user"]),
        pg_dbname=str(parts.get("dbname") or "postgres"),
    )
    return vars_, {PASSWORD_ENV: password}
