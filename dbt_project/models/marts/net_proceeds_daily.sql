-- Net proceeds by posted day, channel and currency: revenue (sales' principal, shipping,
-- promotions, reimbursements), refunds (the revenue given back, as a positive amount), fees (as a
-- positive amount, net of fees returned on refunds), tax passed through (signed), and
-- net_proceeds = revenue - refunds + tax - fees = the sum of every non-bridge line. The bridge to
-- the deposits: reserve_held + reserve_released + transfer; lines_total = net_proceeds + bridge.
-- Incremental like fees_by_category_daily (trailing window from as_of_date, plus the days of the
-- lines landed within it).
-- depends_on: {{ ref('stg_settlement_lines') }}, {{ ref('stg_settlements') }}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_window(day_in_window('posted_date')) }}",
) }}
select
    accrual_date as posted_date,
    channel,
    currency,
    {{ money("sum(case when " ~ in_groups('fee_category', ['revenue']) ~ " and transaction_kind <> 'refund' then amount else 0 end)") }} as revenue,
    {{ money("-sum(case when " ~ in_groups('fee_category', ['revenue']) ~ " and transaction_kind = 'refund' then amount else 0 end)") }} as refunds,
    {{ money("-sum(case when " ~ in_groups('fee_category', ['fee']) ~ " then amount else 0 end)") }} as fees,
    {{ money("sum(case when " ~ in_groups('fee_category', ['tax']) ~ " then amount else 0 end)") }} as tax,
    {{ money("sum(case when not " ~ in_groups('fee_category', ['bridge']) ~ " then amount else 0 end)") }} as net_proceeds,
    {{ money("sum(case when fee_category = 'reserve_held' then amount else 0 end)") }} as reserve_held,
    {{ money("sum(case when fee_category = 'reserve_released' then amount else 0 end)") }} as reserve_released,
    {{ money("sum(case when fee_category = 'transfer' then amount else 0 end)") }} as transfer,
    {{ money('sum(amount)') }} as lines_total,
    count(*) as line_count,
    count(distinct settlement_id) as settlement_count
from {{ ref('int_settlement_lines_dated') }}
where accrual_date is not null
{% if is_incremental() %}
    and {{ day_in_window('accrual_date') }}
{% endif %}
group by accrual_date, channel, currency
