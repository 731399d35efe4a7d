"""The `--vars`, target and password environment of one dbt invocation: which merchant, which day,
which engine, and the merchant's own confinement (ADR 0001)."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict

from illuma_pipelines.merchant_ids import validate_merchant_id
from illuma_pipelines.warehouse import DuckDBWarehouse, PostgresWarehouse, Warehouse

PASSWORD_ENV = "ILLUMA_PG_PASSWORD"  # read by profiles.yml; set only for the dbt process


def dbt_target(warehouse_url: str) -> str:
    if warehouse_url.startswith("duckdb:///"):
        return "duckdb"
    if warehouse_url.startswith(("postgresql", "postgres://")):
        return "postgres"
    raise ValueError(f"no dbt target for warehouse url scheme {warehouse_url.split(':', 1)[0]!r}")


def build_dbt_vars(merchant_id: str, partition_date: str, warehouse: Warehouse) -> tuple[dict[str, str], dict[str, str]]:
    """(vars, env) for a merchant-partition dbt run. The vars never hold a password: on
    PostgreSQL the merchant login's password goes in `env`, for the dbt process alone."""
    validate_merchant_id(merchant_id)
    vars_: dict[str, str] = {"merchant_id": merchant_id, "partition_date": partition_date}
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
