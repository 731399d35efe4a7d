-- Stock health per channel, marketplace and SKU as of as_of_date: each marketplace's pool in the
-- SKU's latest inventory snapshot on or before that day (a pool is never summed with another:
-- EU marketplaces sharing a Pan-European pool each report the same units), units sold in that
-- marketplace over the last 30 and 90 days (order lines of orders not cancelled, by purchase day;
-- a channel-wide pool, marketplace_id '*', counts every marketplace of its channel), days of
-- cover = available / (units sold in 30 days / 30), NULL without sales; stock-out days among the
-- last 30 snapshots; a slow mover holds stock and sold nothing in 90 days, or holds more than 180
-- days of cover.
with latest as (
    select *
    from (
        select
            s.*,
            -- Every pool of the SKU's latest day: rows from before the split ('*') drop out once
            -- the SKU has been snapshotted per marketplace.
            rank() over (partition by channel, sku order by snapshot_date desc) as recency
        from {{ ref('stg_inventory_snapshots') }} as s
        where snapshot_date <= {{ as_of() }}
    ) as ranked
    where recency = 1
),

stock_outs as (
    select channel, marketplace_id, sku, count(*) filter (where stock_out) as stock_out_days_30d
    from {{ ref('stg_inventory_snapshots') }}
    where snapshot_date > {{ as_of() }} - 30 and snapshot_date <= {{ as_of() }}
    group by channel, marketplace_id, sku
),

sales as (
    select
        l.channel,
        coalesce(o.marketplace_id, '*') as marketplace_id,
        l.sku,
        sum(case when o.purchased_date > {{ as_of() }} - 30 then coalesce(l.quantity_shipped, l.quantity_ordered, 0) else 0 end) as units_sold_30d,
        sum(coalesce(l.quantity_shipped, l.quantity_ordered, 0)) as units_sold_90d
    from {{ ref('stg_order_lines') }} as l
    inner join {{ ref('stg_orders') }} as o
        on o.channel = l.channel and o.order_id = l.order_id
    where o.status <> 'cancelled'
        and o.purchased_date > {{ as_of() }} - 90 and o.purchased_date <= {{ as_of() }}
        and l.sku is not null
    group by l.channel, coalesce(o.marketplace_id, '*'), l.sku
),

pool_sales as (
    select
        latest.channel,
        latest.marketplace_id,
        latest.sku,
        sum(sales.units_sold_30d) as units_sold_30d,
        sum(sales.units_sold_90d) as units_sold_90d
    from latest
    inner join sales
        on sales.channel = latest.channel and sales.sku = latest.sku
        and (latest.marketplace_id = '*' or sales.marketplace_id = latest.marketplace_id)
    group by latest.channel, latest.marketplace_id, latest.sku
),

health as (
    select
        {{ as_of() }} as as_of_date,
        latest.channel,
        latest.marketplace_id,
        latest.sku,
        latest.master_part,
        latest.snapshot_date,
        latest.available,
        latest.inbound,
        latest.reserved,
        latest.stock_out,
        coalesce(stock_outs.stock_out_days_30d, 0) as stock_out_days_30d,
        cast(coalesce(pool_sales.units_sold_30d, 0) as integer) as units_sold_30d,
        cast(coalesce(pool_sales.units_sold_90d, 0) as integer) as units_sold_90d,
        case when coalesce(pool_sales.units_sold_30d, 0) > 0
            then {{ money(round_div('latest.available * 30', 'pool_sales.units_sold_30d', 0)) }}
        end as days_of_cover
    from latest
    left join stock_outs
        on stock_outs.channel = latest.channel and stock_outs.marketplace_id = latest.marketplace_id
        and stock_outs.sku = latest.sku
    left join pool_sales
        on pool_sales.channel = latest.channel and pool_sales.marketplace_id = latest.marketplace_id
        and pool_sales.sku = latest.sku
)

select
    health.*,
    available > 0 and (units_sold_90d = 0 or days_of_cover > 180) as slow_mover
from health
