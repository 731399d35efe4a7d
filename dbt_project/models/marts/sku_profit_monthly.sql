{#- Profit per month, SKU × channel (and currency), on two bases named in `basis`:
    - accrual: the month each line was posted (a settlement that crosses a month end is split by
      its lines' posted months; a refund is in the month it was posted);
    - cash: the month of the settlement's deposit.
    Tax and the deposit bridge (reserves, transfers) are not profit and are left out.

    revenue    sales' principal, shipping, promotions (negative) and reimbursements;
    refunds    the revenue given back, as a positive amount;
    fees       every fee-group line (commission, fulfillment, storage, ads, ...) as a positive
               amount, net of fees returned on refunds;
    cost_of_goods  Σ unit cost of the catalog version valid at the sale × quantity sold
               (intermediate/int_settlement_lines.sql). NULL when any sale of the row has no
               known cost; cost_missing_reason says why and uncosted_units how many (never 0);
    unattributed_fees  this row's share of the month's unattributed pool: the lines of the same
               channel, currency, basis and month that no SKU can carry (no SKU on the line, nor a
               single-SKU order), spread pro rata by revenue over the SKUs with positive revenue;
               each share is rounded to 0.0001 and the SKU with the most revenue takes the rounding
               remainder, so the shares add up to the pool exactly. A pool with no revenue to
               carry it stays whole on a row of its own with sku NULL (under fees), beside the
               month's sales no SKU can carry (their revenue, with no known cost: 'no_sku');
    net_profit = revenue - refunds - fees - cost_of_goods - unattributed_fees;
    margin     = net_profit / (revenue - refunds), rounded to 4 decimals.

    Incremental: the months from the month of as_of_date - trailing_days on, and the months (of
    either basis) of every line that landed since then, are recomputed whole
    (macros/build_window.sql), so a late settlement or refund corrects an earlier month. -#}
-- depends_on: {{ ref('stg_settlement_lines') }}, {{ ref('stg_settlements') }}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_window(month_in_window('basis', 'month')) }}",
) }}
with lines as (
    select 'accrual' as basis, accrual_month as month, l.*
    from {{ ref('int_settlement_lines') }} as l
    where accrual_month is not null
    union all
    select 'cash' as basis, cash_month as month, l.*
    from {{ ref('int_settlement_lines') }} as l
    where cash_month is not null
),

profit_lines as (
    select *
    from lines
    where {{ in_groups('fee_category', ['revenue', 'fee']) }}
    {% if is_incremental() %}
        and {{ month_in_window('basis', 'month') }}
    {% endif %}
),

sku_rows as (
    select
        basis,
        month,
        channel,
        currency,
        attributed_sku as sku,
        master_part,
        {{ money("sum(case when category_group = 'revenue' and transaction_kind <> 'refund' then amount else 0 end)") }} as revenue,
        {{ money("-sum(case when category_group = 'revenue' and transaction_kind = 'refund' then amount else 0 end)") }} as refunds,
        {{ money("-sum(case when category_group = 'fee' then amount else 0 end)") }} as fees,
        sum(case when is_cost_line then coalesce(units, 0) else 0 end) as units_sold,
        {{ money('sum(cost_of_goods)') }} as costed,
        count(cost_missing_reason) as uncosted_lines,
        sum(case when cost_missing_reason is not null then coalesce(units, 0) else 0 end) as uncosted_units,
        min(cost_missing_reason) as cost_missing_reason
    from profit_lines
    where attributed_sku is not null
    group by basis, month, channel, currency, attributed_sku, master_part
),

pools as (
    select basis, month, channel, currency, {{ money('sum(amount)') }} as pool_amount
    from profit_lines
    where attributed_sku is null and category_group = 'fee'
    group by basis, month, channel, currency
),

-- Sales no SKU can carry (a sale of a several-SKU order that names no SKU, an order we do not
-- hold): their revenue stays revenue, on a row of its own, with no known cost.
unattributed_sales as (
    select
        basis, month, channel, currency,
        {{ money("sum(case when transaction_kind <> 'refund' then amount else 0 end)") }} as revenue,
        {{ money("-sum(case when transaction_kind = 'refund' then amount else 0 end)") }} as refunds,
        sum(case when is_cost_line then 1 else 0 end) as cost_lines
    from profit_lines
    where attributed_sku is null and category_group = 'revenue'
    group by basis, month, channel, currency
),

uncarried_pools as (
    select p.*
    from pools as p
    where not exists (
        select 1 from sku_rows as s
        where s.basis = p.basis and s.month = p.month and s.channel = p.channel
            and s.currency = p.currency and s.revenue > 0
    )
),

ranked as (
    select
        s.*,
        p.pool_amount,
        sum(case when s.revenue > 0 then s.revenue else 0 end)
            over (partition by s.basis, s.month, s.channel, s.currency) as carrying_revenue,
        row_number()
            over (partition by s.basis, s.month, s.channel, s.currency order by s.revenue desc, s.sku, s.master_part) as revenue_rank
    from sku_rows as s
    left join pools as p
        on p.basis = s.basis and p.month = s.month and p.channel = s.channel and p.currency = s.currency
),

shares as (
    select
        ranked.*,
        case
            when pool_amount is null or revenue <= 0 or revenue_rank = 1 then 0
            else {{ round_div('cast(pool_amount as decimal(38, 4)) * revenue', 'carrying_revenue', 8) }}
        end as rounded_share
    from ranked
),

allocated as (
    select
        shares.*,
        case
            when pool_amount is null or carrying_revenue <= 0 then 0
            when revenue_rank = 1
                then pool_amount - sum(rounded_share) over (partition by basis, month, channel, currency)
            else rounded_share
        end as pool_share
    from shares
),

sku_profit as (
    select
        basis,
        month,
        channel,
        currency,
        sku,
        master_part,
        revenue,
        refunds,
        fees,
        units_sold,
        case when uncosted_lines = 0 then coalesce(costed, 0) end as cost_of_goods,
        -pool_share as unattributed_fees,
        uncosted_units,
        cost_missing_reason
    from allocated

    union all

    -- Unattributed sales, and a fee pool no SKU's revenue can carry in its month, on one row of
    -- their own per month, channel and currency (sku NULL).
    select
        coalesce(u.basis, p.basis) as basis,
        coalesce(u.month, p.month) as month,
        coalesce(u.channel, p.channel) as channel,
        coalesce(u.currency, p.currency) as currency,
        cast(null as {{ dbt.type_string() }}) as sku,
        cast(null as {{ dbt.type_string() }}) as master_part,
        coalesce(u.revenue, 0) as revenue,
        coalesce(u.refunds, 0) as refunds,
        -coalesce(p.pool_amount, 0) as fees,
        0 as units_sold,
        case when coalesce(u.cost_lines, 0) = 0 then 0 end as cost_of_goods,
        0 as unattributed_fees,
        0 as uncosted_units,
        case when coalesce(u.cost_lines, 0) > 0 then 'no_sku' end as cost_missing_reason
    from unattributed_sales as u
    full outer join uncarried_pools as p
        on p.basis = u.basis and p.month = u.month and p.channel = u.channel and p.currency = u.currency
)

select
    basis,
    month,
    channel,
    currency,
    sku,
    master_part,
    {{ money('revenue') }} as revenue,
    {{ money('refunds') }} as refunds,
    {{ money('fees') }} as fees,
    cast(units_sold as integer) as units_sold,
    {{ money('cost_of_goods') }} as cost_of_goods,
    {{ money('unattributed_fees') }} as unattributed_fees,
    {{ money('revenue - refunds - fees - cost_of_goods - unattributed_fees') }} as net_profit,
    {{ money(round_div('revenue - refunds - fees - cost_of_goods - unattributed_fees', 'revenue - refunds', 4)) }} as margin,
    cast(uncosted_units as integer) as uncosted_units,
    cost_missing_reason
from sku_profit
