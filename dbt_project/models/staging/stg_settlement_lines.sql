-- Every signed amount of every settlement (core_settlement_lines; money to the seller positive).
-- Incremental: a build rewrites whole every settlement with a line posted or landed
-- (partition_date) within the trailing window (trailing_days; macros/build_window.sql,
-- window_settlements), so a line landed again replaces its earlier copy.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_window_settlements(source('core', 'core_settlement_lines')) }}",
) }}
select
    channel,
    settlement_id,
    line_seq,
    posted_at,
    posted_date,
    transaction_type,
    transaction_kind,
    transaction_id,
    order_id,
    sku,
    product_id,
    quantity,
    amount_type,
    amount_description,
    fee_category,
    {{ money('amount') }} as amount,
    currency,
    marketplace_id,
    partition_date
from {{ source('core', 'core_settlement_lines') }} as src
{% if is_incremental() %}
where {{ in_window_settlements('src', source('core', 'core_settlement_lines')) }}
{% endif %}
