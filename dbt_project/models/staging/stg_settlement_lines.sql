-- Every signed amount of every settlement (core_settlement_lines; money to the seller positive).
-- Incremental: a build re-reads the lines posted or landed (partition_date) within the trailing
-- window (trailing_days, see macros/build_window.sql); a line landed again replaces its earlier
-- copy by key.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['channel', 'settlement_id', 'line_seq'],
    pre_hook="{{ delete_window('partition_date >= ' ~ window_start() ~ ' or posted_date >= ' ~ window_start()) }}",
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
from {{ source('core', 'core_settlement_lines') }}
{% if is_incremental() %}
where partition_date >= {{ window_start() }} or posted_date >= {{ window_start() }}
{% endif %}
