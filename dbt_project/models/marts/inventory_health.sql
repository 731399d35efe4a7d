-- Stock health per channel and SKU as of as_of_date: the latest inventory snapshot on or before
-- that day, units sold over the last 30 and 90 days (order lines of orders not cancelled, by
-- purchase day), days of cover = available / (units sold in 30 days / 30), NULL without sales;
-- stock-out days among the last 30 snapshots; a slow mover holds stock and sold nothing in 90
-- days, or holds more than 180 days of cover.
with latest as (
    select *
    from (
        select
            s.*,
            row_number() over (partition by channel, sku order by snapshot_date desc) as recency
        from {{ ref('stg_inventory_snapshots') }} as s
        where snapshot_date <= {{ as_of() }}
    ) as ranked
    where recency = 1
),

stock_outs as (
    select channel, sku, count(*) filter (where stock_out) as stock_out_days_30d
    from {{ ref('stg_inventory_snapshots') }}
    where snapshot_date > {{ as_of() }} - 30 and snapshot_date <= {{ as_of() }}
    group by channel, sku
),

sales as (
    select
        l.channel,
        l.sku,
        sum(case when o.purchased_date > {{ as_of() }} - 30 then coalesce(l.quantity_shipped, l.quantity_ordered, 0) else 0 end) as units_sold_30d,
        sum(coalesce(l.quantity_shipped, l.quantity_ordered, 0)) as units_sold_90d
    from {{ ref('stg_order_lines') }} as l
    inner join {{ ref('stg_orders') }} as o
        on o.channel = l.channel and o.order_id = l.order_id
    where o.status <> 'cancelled'
        and o.purchased_date > {{ as_of() }} - 90 and o.purchased_date <= {{ as_of() }}
        and l.sku is not null
    group by l.channel, l.sku
),

health as (
    select
        {{ as_of() }} as as_of_date,
        latest.channel,
        latest.sku,
        latest.master_part,
        latest.snapshot_date,
        latest.available,
        latest.inbound,
        latest.reserved,
        latest.stock_out,
        coalesce(stock_outs.stock_out_days_30d, 0) as stock_out_days_30d,
        cast(coalesce(sales.units_sold_30d, 0) as integer) as units_sold_30d,
        cast(coalesce(sales.units_sold_90d, 0) as integer) as units_sold_90d,
        case when coalesce(sales.units_sold_30d, 0) > 0
            then {{ money(round_div('latest.available * 30', 'sales.units_sold_30d', 0)) }}
        end as days_of_cover
    from latest
    left join stock_outs
        on stock_outs.channel = latest.channel and stock_outs.sku = latest.sku
    left join sales
        on sales.channel = latest.channel and sales.sku = latest.sku
)

select
    health.*,
    available > 0 and (units_sold_90d = 0 or days_of_cover > 180) as slow_mover
from health
