"""The warehouse as a Dagster resource: the environment's own unless a URL is given."""


import dagster as dg

from illuma_pipelines.environment import warehouse_url
from illuma_pipelines.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The merchant warehouse. Leave `url` empty for the environment's warehouse
    (`illuma_pipelines.environment.warehouse_url`: ILLUMA_WAREHOUSE_URL, else locally the DuckDB
    file), the same one the `illuma` CLI uses; tests and benchmarks pass their own."""

    url: str = ""

    def resolved_url(self) -> str:
        # Resolved when used, in the process that uses it: a URL with a password never becomes
        # resource config shown in the UI.
        return self.url or warehouse_url()

    def get(self) -> Warehouse:
        return Warehouse.from_url(self.resolved_url())

    @property
    def dialect(self) -> str:
        return self.get().dialect
