"""The `--vars` and target for one dbt invocation: which merchant, which day, which engine."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from illuma_pipelines.merchant_ids import merchant_role, validate_merchant_id


def dbt_target(warehouse_url: str) -> str:
    if warehouse_url.startswith("duckdb:///"):
        return "duckdb"
    if warehouse_url.startswith(("postgresql", "postgres://")):
        return "postgres"
    raise ValueError(f"no dbt target for warehouse url scheme {warehouse_url.split(':', 1)[0]!r}")


def build_dbt_vars(merchant_id: str, partition_date: str, warehouse_url: str) -> dict[str, str]:
    """Vars for a merchant-partition dbt run. Never includes a password: that stays in the env."""
    validate_merchant_id(merchant_id)
    vars_: dict[str, str] = {"merchant_id": merchant_id, "partition_date": partition_date}
    target = dbt_target(warehouse_url)
    if target == "duckdb":
        vars_["duckdb_path"] = warehouse_url[len("duckdb:///") :]
    else:
        parts = urlsplit(warehouse_url)
        vars_.update(
            pg_host=parts.hostname or "127.0.0.1",
            pg_port=str(parts.port or 5432),
            pg_user=unquote(parts.username or "postgres"),
            pg_dbname=(parts.path or "/postgres").lstrip("/") or "postgres",
            merchant_role=merchant_role(merchant_id),
        )
    return vars_
