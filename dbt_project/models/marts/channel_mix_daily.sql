-- Sales by purchase day (UTC), channel and currency: orders, units and items sold, and each
-- channel's share of the day's items sales in that currency (cancelled orders left out).
with lines as (
    select channel, order_id, sum(coalesce(quantity_ordered, 0)) as units
    from {{ ref('stg_order_lines') }}
    group by channel, order_id
),

daily as (
    select
        o.purchased_date,
        o.channel,
        o.currency,
        count(*) as order_count,
        sum(coalesce(l.units, 0)) as units,
        {{ money('sum(coalesce(o.items_subtotal, 0))') }} as items_sales
    from {{ ref('stg_orders') }} as o
    left join lines as l
        on l.channel = o.channel and l.order_id = o.order_id
    where o.status <> 'cancelled' and o.purchased_date is not null and o.currency is not null
    group by o.purchased_date, o.channel, o.currency
)

select
    purchased_date,
    channel,
    currency,
    order_count,
    cast(units as integer) as units,
    items_sales,
    {{ money(round_div('items_sales', 'sum(items_sales) over (partition by purchased_date, currency)', 4)) }} as share_of_sales
from daily
