-- Every settled amount by day, channel, currency and fee category (with its group: revenue, tax,
-- fee or bridge), signed as on the lines (money to the seller positive). The day is the line's
-- posted date (accrual). Incremental: the days from as_of_date - trailing_days on, and the days
-- of every line that landed since then, are recomputed, so a late settlement corrects them
-- (macros/build_window.sql).
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
    fee_category,
    category_group,
    {{ money('sum(amount)') }} as amount,
    count(*) as line_count
from {{ ref('int_settlement_lines_dated') }}
where accrual_date is not null
{% if is_incremental() %}
    and {{ day_in_window('accrual_date') }}
{% endif %}
group by accrual_date, channel, currency, fee_category, category_group
