-- Order lines (core_order_lines), one row per channel, order and line id. Incremental: a build
-- re-reads the lines that landed (partition_date) within the trailing window (trailing_days, see
-- macros/build_window.sql); a line landed again replaces its earlier copy by key.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['channel', 'order_id', 'line_id'],
    pre_hook="{{ delete_window('partition_date >= ' ~ window_start()) }}",
) }}
select
    channel,
    marketplace_order_id as order_id,
    line_id,
    sku,
    master_part,
    part_match,
    quantity_ordered,
    quantity_shipped,
    {{ money('unit_price') }} as unit_price,
    {{ money('item_price') }} as item_price,
    {{ money('shipping_price') }} as shipping_price,
    {{ money('promotion_discount') }} as promotion_discount,
    currency,
    line_status,
    partition_date
from {{ source('core', 'core_order_lines') }}
{% if is_incremental() %}
where partition_date >= {{ window_start() }}
{% endif %}
