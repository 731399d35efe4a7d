"""Merchants placed across warehouses (docs/decisions/0011-warehouse-placement.md).

One PostgreSQL server holds a few thousand merchant schemas; past that, merchants live on several.
Each merchant is placed in one named warehouse: `main` (ILLUMA_WAREHOUSE_URL, or the local DuckDB
file), which also holds the `platform` schema (registry, audit log, ledger, exports, reports), or
one of ILLUMA_WAREHOUSES. `platform.merchant_warehouses` in main records each merchant's placement
(no row: `main`).

`PlacedWarehouse` is the `Warehouse` every caller gets (`open_warehouse`: the Dagster resource,
the CLI): platform operations go to main, merchant operations — merchant scopes, provisioning,
erasure, dbt's target — to the merchant's own warehouse, so code written against one warehouse
works unchanged. A merchant's placement is read once per `PlacedWarehouse` (a resource builds one
per step) and never changes while it has data (`registry.place_merchant` refuses a move).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from illuma_pipelines.environment import (
    WAREHOUSE_ADMIN_URLS_VAR,
    WAREHOUSES_VAR,
    named_warehouses,
    warehouse_admin_urls,
)
from illuma_pipelines.merchant_ids import validate_merchant_id
from illuma_pipelines.warehouse import (
    ADMIN_URL_VAR,
    MAIN,
    PLACED_TABLES,
    PLATFORM_SCHEMA,
    Connection,
    DuckDBWarehouse,
    PostgresWarehouse,
    Warehouse,
    WarehouseError,
)

PLACEMENT_TABLE = f"{PLATFORM_SCHEMA}.merchant_warehouses"


def read_placement(conn: Connection, merchant_id: str) -> str | None:
    """The merchant's recorded warehouse name on the platform connection `conn`; None without a
    row (a merchant registered before placements existed, or not registered: it is in `main`)."""
    if not conn.table_exists(PLATFORM_SCHEMA, "merchant_warehouses"):
        return None
    row = conn.fetchone(f"SELECT warehouse FROM {PLACEMENT_TABLE} WHERE merchant_id = ?", [merchant_id])
    return row[0] if row else None


def _same_server(a: str, b: str) -> bool:
    from psycopg.conninfo import conninfo_to_dict

    from illuma_pipelines.warehouse import _plain_dsn

    x, y = conninfo_to_dict(_plain_dsn(a)), conninfo_to_dict(_plain_dsn(b))
    return bool(x.get("host")) and (x.get("host"), str(x.get("port") or 5432)) == (
        y.get("host"),
        str(y.get("port") or 5432),
    )


def _admin_url_for(name: str, url: str, default_admin: str | None) -> str | None:
    """A named PostgreSQL warehouse's admin URL: its own in ILLUMA_WAREHOUSE_ADMIN_URLS, else
    ILLUMA_WAREHOUSE_ADMIN_URL when that is on the same server (provisioning reconnects it to the
    named database); else None, and provisioning there says what to set."""
    own = warehouse_admin_urls().get(name)
    if own:
        return own
    if default_admin and _same_server(default_admin, url):
        return default_admin
    return None


class PlacedWarehouse(Warehouse):
    """The main warehouse and the named ones, one interface: see the module's docstring."""

    def __init__(self, main: Warehouse, named: Mapping[str, Warehouse] | None = None) -> None:
        self.main = main
        self.dialect = main.dialect
        self.url = main.url
        self._named = dict(named or {})
        if MAIN in self._named:
            raise WarehouseError(f"{MAIN!r} is the main warehouse, not a named one")
        self._placements: dict[str, str] = {}

    @classmethod
    def from_config(cls, main_url: str, admin_url: str | None = None) -> PlacedWarehouse:
        """Main at `main_url`, and the warehouses ILLUMA_WAREHOUSES names (validated)."""
        import os

        main = Warehouse.from_url(main_url, admin_url=admin_url)
        default_admin = admin_url or os.environ.get(ADMIN_URL_VAR) or None
        named: dict[str, Warehouse] = {}
        for name, url in named_warehouses(main_url).items():
            if url.startswith("duckdb:///"):
                named[name] = Warehouse.from_url(url)
            else:
                named[name] = PostgresWarehouse(
                    url, admin_url=_admin_url_for(name, url, default_admin) or "", platform_tables=PLACED_TABLES
                )
        return cls(main, named)

    # ----------------------------------------------------------------------------- placement
    def warehouse_names(self) -> tuple[str, ...]:
        return (MAIN, *sorted(self._named))

    def named(self, name: str) -> Warehouse:
        """The warehouse called `name`, or an error naming the configured ones."""
        if name == MAIN:
            return self.main
        if name not in self._named:
            raise WarehouseError(
                f"unknown warehouse {name!r}: this configuration names {', '.join(self.warehouse_names())} "
                f"(more are added in {WAREHOUSES_VAR})"
            )
        return self._named[name]

    def warehouse_of(self, merchant_id: str) -> str:
        validate_merchant_id(merchant_id)
        if merchant_id not in self._placements:
            with self.main.connect() as conn:
                name = read_placement(conn, merchant_id) or MAIN
            if name != MAIN and name not in self._named:
                raise WarehouseError(
                    f"merchant {merchant_id!r} is placed in warehouse {name!r}, which this process's "
                    f"configuration does not name: add it to {WAREHOUSES_VAR}"
                )
            self._placements[merchant_id] = name
        return self._placements[merchant_id]

    def merchant_warehouse(self, merchant_id: str) -> Warehouse:
        return self.named(self.warehouse_of(merchant_id))

    def forget_placement(self, merchant_id: str) -> None:
        self._placements.pop(merchant_id, None)

    def drops_with_platform(self, merchant_id: str) -> bool:
        wh = self.merchant_warehouse(merchant_id)
        return wh is self.main and wh.drops_with_platform(merchant_id)

    # ----------------------------------------------------------------------------- platform: main
    def connect(self) -> contextlib.AbstractContextManager[Connection]:
        return self.main.connect()

    def ensure_platform(self) -> None:
        self.main.ensure_platform()

    def placement(self) -> tuple[str, bytes]:
        # The ledger key signs and checks purge rows on the platform's side: main's, for everyone.
        return self.main.placement()

    def provision(self) -> list[str]:
        """Provision main (PostgreSQL: the whole platform; DuckDB: its platform file) and every
        named PostgreSQL warehouse (its merchant-login bookkeeping, the erasure function and the
        pipeline's login); say what was done, one line each."""
        done = []
        for name, wh in (("main", self.main), *sorted(self._named.items())):
            if isinstance(wh, PostgresWarehouse):
                if name == MAIN:
                    wh.provision()
                    done.append(
                        f"provisioned {wh.dbname}: platform schema, guards, pipeline login {wh.login!r} (not a superuser)"
                    )
                else:
                    if not wh.admin_url:
                        raise WarehouseError(
                            f"warehouse {name!r} is on another server than {ADMIN_URL_VAR}: give its admin URL "
                            f'in {WAREHOUSE_ADMIN_URLS_VAR} ({{"{name}": "postgresql://admin@host/db"}})'
                        )
                    wh.provision()
                    done.append(f"provisioned warehouse {name!r} ({wh.dbname}): merchant logins, pipeline login {wh.login!r}")
            elif isinstance(wh, DuckDBWarehouse):
                if name == MAIN:
                    wh.ensure_platform()
                    done.append(f"platform ready in {wh.path}; merchants get their own files in {wh.merchants_dir}")
                else:
                    wh.merchants_dir.mkdir(parents=True, exist_ok=True)
                    done.append(f"warehouse {name!r}: merchants placed there get their own files in {wh.merchants_dir}")
        return done

    # ----------------------------------------------------------------------------- merchant: placed
    def merchant_scope(self, merchant_id: str) -> contextlib.AbstractContextManager[Connection]:
        return self.merchant_warehouse(merchant_id).merchant_scope(merchant_id)

    def create_merchant_schema(self, merchant_id: str) -> str:
        wh = self.merchant_warehouse(merchant_id)
        if isinstance(wh, PostgresWarehouse) and wh is not self.main and not wh.admin_url:
            name = self.warehouse_of(merchant_id)
            raise WarehouseError(
                f"onboarding {merchant_id!r} in warehouse {name!r} provisions its login there, which needs "
                f"that server's admin URL: set {WAREHOUSE_ADMIN_URLS_VAR} ({{\"{name}\": \"postgresql://admin@host/db\"}})"
            )
        return wh.create_merchant_schema(merchant_id)

    def drop_merchant_schema(self, merchant_id: str) -> None:
        self.merchant_warehouse(merchant_id).drop_merchant_schema(merchant_id)

    def drop_merchant_schema_in(self, conn: Connection, merchant_id: str) -> None:
        wh = self.merchant_warehouse(merchant_id)
        if wh is self.main:
            wh.drop_merchant_schema_in(conn, merchant_id)
        else:
            # Another database: its own transaction (purge.erase_account ledgers it first).
            wh.drop_merchant_schema(merchant_id)

    def merchant_schema_exists(self, merchant_id: str) -> bool:
        return self.merchant_warehouse(merchant_id).merchant_schema_exists(merchant_id)

    def merchant_ids(self) -> list[str]:
        ids: set[str] = set()
        for name in self.warehouse_names():
            ids.update(self.named(name).merchant_ids())
        return sorted(ids)


def open_warehouse(url: str, admin_url: str | None = None) -> PlacedWarehouse:
    """The warehouse for a process whose main warehouse is `url`: main plus ILLUMA_WAREHOUSES."""
    return PlacedWarehouse.from_config(url, admin_url=admin_url)
