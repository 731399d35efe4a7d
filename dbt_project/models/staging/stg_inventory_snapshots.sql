-- Daily stock per channel, marketplace and SKU (core_inventory_snapshots): each marketplace's
-- pool apart; marketplace_id '*' is a channel-wide pool (eBay's, and rows from before the split).
select
    snapshot_date,
    channel,
    marketplace_id,
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
