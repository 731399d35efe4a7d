-- Profit per month and master part over all channels (and per currency), on the accrual and the
-- cash basis: sku_profit_monthly summed (see its description for every figure). A part with any
-- sale of unknown cost has NULL cost of goods, net profit and margin, and says why. The row with
-- master_part NULL holds the unattributed pools no revenue could carry.
-- Incremental like sku_profit_monthly: the months it recomputes are recomputed here.
-- depends_on: {{ ref('stg_settlement_lines') }}, {{ ref('stg_settlements') }}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_window(month_in_window('basis', 'month')) }}",
) }}
select
    basis,
    month,
    currency,
    master_part,
    count(distinct sku) as sku_count,
    {{ money('sum(revenue)') }} as revenue,
    {{ money('sum(refunds)') }} as refunds,
    {{ money('sum(fees)') }} as fees,
    cast(sum(units_sold) as integer) as units_sold,
    case when count(*) = count(cost_of_goods) then {{ money('sum(cost_of_goods)') }} end as cost_of_goods,
    {{ money('sum(unattributed_fees)') }} as unattributed_fees,
    case when count(*) = count(net_profit) then {{ money('sum(net_profit)') }} end as net_profit,
    case when count(*) = count(net_profit) then
        {{ money(round_div('sum(net_profit)', 'sum(revenue) - sum(refunds)', 4)) }}
    end as margin,
    cast(sum(uncosted_units) as integer) as uncosted_units,
    min(cost_missing_reason) as cost_missing_reason
from {{ ref('sku_profit_monthly') }}
{% if is_incremental() %}
where {{ month_in_window('basis', 'month') }}
{% endif %}
group by basis, month, currency, master_part
