"""The warehouse as a Dagster resource: the environment's own unless a URL is given, with the
warehouses merchants are placed in (ADR 0011)."""


import dagster as dg

from illuma_pipelines.environment import warehouse_url
from illuma_pipelines.placement import open_warehouse
from illuma_pipelines.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The merchant warehouse. Leave `url` empty for the environment's warehouse
    (`illuma_pipelines.environment.warehouse_url`: ILLUMA_WAREHOUSE_URL, else locally the DuckDB
    file), the same one the `illuma` CLI uses; tests and benchmarks pass their own. That URL is
    the `main` warehouse; merchants placed in one of ILLUMA_WAREHOUSES are reached there through
    the same object (`illuma_pipelines.placement.PlacedWarehouse`)."""

    url: str = ""

    def resolved_url(self) -> str:
        # Resolved when used, in the process that uses it: a URL with a password never becomes
        # resource config shown in the UI.
        return self.url or warehouse_url()

    def get(self) -> Warehouse:
        return open_warehouse(self.resolved_url())

    @property
    def dialect(self) -> str:
        return self.get().dialect
