{#- Every shipped order against its settlement lines, and the lines that name no order.

    One row per channel × order: every shipped order (macros/orders.sql) and every order id found
    on settlement lines; match_status:
    - settled: a sale line of the order has settled;
    - pending: shipped, not settled yet, within the channel's usual delay as of as_of_date
      (macros/build_window.sql: Amazon 14 days, eBay 7, Walmart 14; var settlement_delay_days);
    - unsettled_overdue: shipped, not settled, past that delay;
    - settled_not_shipped: lines for an order we hold that has not shipped (or was cancelled);
    - unknown_order: lines naming an order id we do not hold (an FBA shipment id, an order older
      than our extracts).
    Plus one row per channel × settlement × currency for the lines with no order id (the
    unattributed pool: storage, subscriptions, ads...), match_status `unattributed`.

    Differences compare what settled on the order's sale lines with the order: principal vs
    items_subtotal, shipping vs shipping_total, promotion vs promotion_total (the order keeps the
    discount positive, the lines negative, so their sum is the difference). -#}
with order_lines as (
    select
        channel,
        order_id,
        sum(case when transaction_kind = 'sale' and fee_category = 'principal' then amount else 0 end) as settled_principal,
        sum(case when transaction_kind = 'sale' and fee_category = 'shipping_charged' then amount else 0 end) as settled_shipping,
        sum(case when transaction_kind = 'sale' and fee_category = 'promotion' then amount else 0 end) as settled_promotion,
        sum(case when {{ in_groups('fee_category', ['fee']) }} then amount else 0 end) as settled_fees,
        sum(case when transaction_kind = 'refund' and {{ in_groups('fee_category', ['revenue']) }} then amount else 0 end) as refunded,
        sum(amount) as settled_total,
        count(*) filter (where transaction_kind = 'sale') as sale_line_count,
        count(*) as line_count,
        count(distinct settlement_id) as settlement_count,
        min(case when transaction_kind = 'sale' then deposit_date end) as first_sale_deposit_date,
        max(deposit_date) as last_deposit_date,
        min(currency) as currency
    from {{ ref('int_settlement_lines_dated') }}
    where order_id is not null
    group by channel, order_id
),

event_fees as (
    select channel, order_id, sum(amount) as financial_event_fees
    from {{ ref('stg_financial_events') }}
    where order_id is not null and {{ in_groups('fee_category', ['fee']) }}
    group by channel, order_id
),

orders as (
    select
        o.*,
        {{ is_shipped('o.status', 'coalesce(o.shipped_at, o.delivered_at)') }} as is_shipped,
        coalesce(o.shipped_date, o.purchased_date) as ship_day
    from {{ ref('stg_orders') }} as o
),

matched as (
    select
        coalesce(o.channel, l.channel) as channel,
        coalesce(o.order_id, l.order_id) as order_id,
        case
            when o.order_id is null then 'unknown_order'
            when not o.is_shipped then 'settled_not_shipped'
            when coalesce(l.sale_line_count, 0) > 0 then 'settled'
            when {{ as_of() }} - o.ship_day > {{ settlement_delay_days('o.channel') }} then 'unsettled_overdue'
            else 'pending'
        end as match_status,
        o.status as order_status,
        o.ship_day as shipped_date,
        coalesce(o.currency, l.currency) as currency,
        o.items_subtotal,
        o.shipping_total,
        o.promotion_total,
        {{ money('l.settled_principal') }} as settled_principal,
        {{ money('l.settled_shipping') }} as settled_shipping,
        {{ money('l.settled_promotion') }} as settled_promotion,
        {{ money('l.settled_fees') }} as settled_fees,
        {{ money('l.refunded') }} as refunded,
        {{ money('l.settled_total') }} as settled_total,
        {{ money('f.financial_event_fees') }} as financial_event_fees,
        coalesce(l.line_count, 0) as line_count,
        coalesce(l.settlement_count, 0) as settlement_count,
        l.first_sale_deposit_date,
        l.last_deposit_date,
        {{ settlement_delay_days('coalesce(o.channel, l.channel)') }} as settlement_delay_days,
        {{ as_of() }} - o.ship_day as days_since_shipped
    from orders as o
    full outer join order_lines as l
        on l.channel = o.channel and l.order_id = o.order_id
    left join event_fees as f
        on f.channel = coalesce(o.channel, l.channel) and f.order_id = coalesce(o.order_id, l.order_id)
    -- Every shipped order, and every order that has settlement lines.
    where coalesce(o.is_shipped, false) or l.order_id is not null
),

pool as (
    select
        channel,
        settlement_id,
        currency,
        sum(case when {{ in_groups('fee_category', ['fee']) }} then amount else 0 end) as settled_fees,
        sum(amount) as settled_total,
        count(*) as line_count,
        max(deposit_date) as last_deposit_date
    from {{ ref('int_settlement_lines_dated') }}
    where order_id is null
    group by channel, settlement_id, currency
)

select
    m.channel,
    m.order_id,
    cast(null as {{ dbt.type_string() }}) as settlement_id,
    m.match_status,
    m.order_status,
    m.shipped_date,
    m.currency,
    m.items_subtotal,
    m.shipping_total,
    m.promotion_total,
    m.settled_principal,
    m.settled_shipping,
    m.settled_promotion,
    m.settled_fees,
    m.refunded,
    m.settled_total,
    m.financial_event_fees,
    m.line_count,
    m.settlement_count,
    m.first_sale_deposit_date,
    m.last_deposit_date,
    m.settlement_delay_days,
    m.days_since_shipped,
    case when m.match_status = 'settled' then {{ money('m.settled_principal - m.items_subtotal') }} end as principal_difference,
    case when m.match_status = 'settled' then {{ money('m.settled_shipping - m.shipping_total') }} end as shipping_difference,
    case when m.match_status = 'settled' then {{ money('m.settled_promotion + m.promotion_total') }} end as promotion_difference
from matched as m

union all

select
    channel,
    cast(null as {{ dbt.type_string() }}) as order_id,
    settlement_id,
    'unattributed' as match_status,
    cast(null as {{ dbt.type_string() }}) as order_status,
    cast(null as date) as shipped_date,
    currency,
    cast(null as decimal(18, 4)) as items_subtotal,
    cast(null as decimal(18, 4)) as shipping_total,
    cast(null as decimal(18, 4)) as promotion_total,
    cast(null as decimal(18, 4)) as settled_principal,
    cast(null as decimal(18, 4)) as settled_shipping,
    cast(null as decimal(18, 4)) as settled_promotion,
    {{ money('settled_fees') }} as settled_fees,
    cast(null as decimal(18, 4)) as refunded,
    {{ money('settled_total') }} as settled_total,
    cast(null as decimal(18, 4)) as financial_event_fees,
    line_count,
    1 as settlement_count,
    cast(null as date) as first_sale_deposit_date,
    last_deposit_date,
    cast(null as integer) as settlement_delay_days,
    cast(null as integer) as days_since_shipped,
    cast(null as decimal(18, 4)) as principal_difference,
    cast(null as decimal(18, 4)) as shipping_difference,
    cast(null as decimal(18, 4)) as promotion_difference
from pool
