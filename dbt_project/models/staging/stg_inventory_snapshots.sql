-- Daily stock per channel and SKU (core_inventory_snapshots).
select
    snapshot_date,
    channel,
    sku,
    master_part,
    fulfillable,
    inbound,
    reserved,
    unfulfillable,
    total_quantity,
    available,
    units_sold_30d,
    stock_out
from {{ source('core', 'core_inventory_snapshots') }}
