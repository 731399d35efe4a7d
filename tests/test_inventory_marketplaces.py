"""Inventory snapshots keyed by marketplace (issue 13, item 5): a table made before stock was read
per marketplace is migrated on either engine, its rows kept under the channel-wide marketplace."""

from __future__ import annotations

from datetime import UTC, date, datetime

from illuma_pipelines.core.inventory import load_inventory_partition, migrate_inventory_snapshots
from illuma_pipelines.core.tables import CHANNEL_WIDE, INVENTORY_SNAPSHOTS
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.registry import add_merchant
from illuma_pipelines.warehouse import TableSpec

# The table as it was: one row per day, SKU and channel.
BEFORE = TableSpec(
    INVENTORY_SNAPSHOTS.name,
    tuple(c for c in INVENTORY_SNAPSHOTS.columns if c.name != "marketplace_id"),
    primary_key=("snapshot_date", "sku", "channel"),
)
_ROW = {
    "master_part": "BRK-1", "part_match": "sku", "available": 5, "units_sold_30d": 0, "stock_out": False,
    "run_id": "old-run",
}


def _insert(conn, schema: str, row: dict) -> None:
    conn.execute(
        f"INSERT INTO {schema}.{INVENTORY_SNAPSHOTS.name} ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
        list(row.values()),
    )


def test_a_snapshot_table_from_before_marketplaces_is_migrated_in_place(warehouse, merchant_id):
    mid = merchant_id("stock")
    add_merchant(warehouse, mid)
    schema = merchant_schema(mid)
    at = datetime(2026, 11, 1, 6, tzinfo=UTC)
    with warehouse.merchant_scope(mid) as conn:
        conn.create_table(schema, BEFORE)
        _insert(conn, schema, {**_ROW, "snapshot_date": date(2026, 11, 1), "channel": "amazon", "sku": "BRK-1", "loaded_at": at})
        # As dbt's staging view reads it: on PostgreSQL the table cannot be dropped under it.
        conn.execute(f"CREATE VIEW {schema}.stg_stock AS SELECT snapshot_date, sku FROM {schema}.{INVENTORY_SNAPSHOTS.name}")

    load_inventory_partition(warehouse, mid, "2026-11-02", "new-run")  # migrates, then loads a day with no stock
    with warehouse.merchant_scope(mid) as conn:
        migrate_inventory_snapshots(conn, schema)  # a second time changes nothing
        assert conn.fetchall(
            f"SELECT channel, marketplace_id, sku, available FROM {schema}.{INVENTORY_SNAPSHOTS.name}"
        ) == [("amazon", CHANNEL_WIDE, "BRK-1", 5)]
        # The key now holds the marketplace: the same SKU and day in two pools.
        for marketplace in ("A1PA6795UKMFR9", "A1F83G8C2ARO7P"):
            _insert(conn, schema, {
                **_ROW, "snapshot_date": date(2026, 11, 1), "channel": "amazon", "marketplace_id": marketplace,
                "sku": "BRK-1", "loaded_at": at,
            })
        assert conn.fetchone(f"SELECT count(*) FROM {schema}.stg_stock") == (3,)
