{#- Settlement lines with what the profit marts need beside them: the settlement's deposit date,
    the category group (both from int_settlement_lines_dated), the SKU a line is attributed to and
    its cost of goods.

    - accrual_date: the line's posted date (the deposit date when it has none); cash basis uses
      the settlement's deposit_date.
    - attributed_sku: the line's SKU; else, when its order has exactly one SKU, that SKU; else NULL
      (the line belongs to the unattributed pool: storage, subscriptions, ads without an order...).
    - master_part: the catalog's for the SKU at the sale, else the order line's, else the SKU.
    - cost of goods is carried by sale principal lines only: unit cost of the catalog version
      valid at the sale (the order's purchase time, else the line's posting) × quantity. A line
      whose cost is not known has cost_of_goods NULL and cost_missing_reason says why; it is never
      costed at 0. Refunds do not give cost back: whether a returned unit is resalable is not in
      the data.
    - quantity: the line's; a sale principal line without one (eBay's transactions and payouts
      carry no quantity) takes its order's units when the order has exactly one SKU.

    Incremental, over the settlements stg_settlement_lines rewrote (those with a line posted or
    landed within the trailing window, macros/build_window.sql): sku_profit_monthly then reads the few months it
    recomputes from here instead of joining every line of the merchant's history to its orders
    and the catalog at every build. Like the marts, an older line keeps the attribution and cost
    it was given (a catalog cost corrected after the fact needs --full-refresh). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_window_settlements(ref('stg_settlement_lines')) }}",
) }}
with lines as (
    select * from {{ ref('int_settlement_lines_dated') }} as dated
    {% if is_incremental() %}
    where {{ in_window_settlements('dated', ref('stg_settlement_lines')) }}
    {% endif %}
),

-- Per order and SKU, then per order (two groupings instead of a count(distinct sku) of every
-- order line: bench/analytics.py, 2.1 s -> 1.3 s for the model at a year of a large merchant).
order_line_parts as (
    select
        channel, order_id, sku, min(master_part) as master_part,
        sum(coalesce(quantity_shipped, quantity_ordered)) as units
    from {{ ref('stg_order_lines') }}
    where sku is not null
    group by channel, order_id, sku
),

order_skus as (
    select channel, order_id, min(sku) as sku, count(*) as sku_count, sum(units) as units
    from order_line_parts
    group by channel, order_id
),

attributed as (
    select
        lines.*,
        coalesce(lines.sku, case when os.sku_count = 1 then os.sku end) as attributed_sku,
        coalesce(o.purchased_at, lines.posted_at) as sale_at,
        lines.transaction_kind = 'sale' and lines.fee_category = 'principal' as is_cost_line,
        coalesce(
            lines.quantity,
            case
                when lines.transaction_kind = 'sale' and lines.fee_category = 'principal'
                    and os.sku_count = 1 and (lines.sku is null or lines.sku = os.sku)
                then os.units
            end
        ) as units
    from lines
    left join {{ ref('stg_orders') }} as o
        on o.channel = lines.channel and o.order_id = lines.order_id
    left join order_skus as os
        on os.channel = lines.channel and os.order_id = lines.order_id
)

select
    a.*,
    {{ month_start('a.accrual_date') }} as accrual_month,
    {{ month_start('a.deposit_date') }} as cash_month,
    coalesce(c.master_part, olp.master_part, a.attributed_sku) as master_part,
    c.unit_cost,
    case
        when not a.is_cost_line or a.attributed_sku is null then null
        when a.sale_at is null then 'no_sale_date'
        when c.sku is null then 'sku_not_in_catalog'
        when c.unit_cost is null then 'no_unit_cost_in_catalog'
        when c.cost_currency is not null and c.cost_currency <> a.currency then 'cost_in_other_currency'
        when a.units is null then 'no_quantity_on_line'
    end as cost_missing_reason,
    case
        when a.is_cost_line and a.attributed_sku is not null and c.unit_cost is not null
            and (c.cost_currency is null or c.cost_currency = a.currency) and a.units is not null
        then {{ money('c.unit_cost * a.units') }}
    end as cost_of_goods
from attributed as a
left join {{ ref('stg_catalog_parts') }} as c
    on c.sku = a.attributed_sku
    and c.valid_from <= a.sale_at
    and (c.valid_to is null or c.valid_to > a.sale_at)
left join order_line_parts as olp
    on olp.channel = a.channel and olp.order_id = a.order_id and olp.sku = a.attributed_sku
