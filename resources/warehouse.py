"""The warehouse as a Dagster resource: DuckDB by default, PostgreSQL when the URL says so."""


import dagster as dg

from illuma_pipelines.paths import default_warehouse_url
from illuma_pipelines.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The merchant warehouse. Leave `url` empty for the project-local DuckDB file."""

    url: str = ""

    def resolved_url(self) -> str:
        return self.url or default_warehouse_url()

    def get(self) -> Warehouse:
        return Warehouse.from_url(self.resolved_url())

    @property
    def dialect(self) -> str:
        return self.get().dialect
