-- Orders, one row per channel and order id (core_orders), with their UTC purchase and ship days.
-- Incremental, like stg_order_lines: a build re-reads the orders that landed (partition_date)
-- within the trailing window (macros/build_window.sql); an order landed again replaces its earlier
-- copy by key. (A table, not a view: the UTC days are computed once, not in every model that
-- reads them.)
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['channel', 'order_id'],
) }}
select
    channel,
    marketplace_order_id as order_id,
    marketplace_id,
    status,
    channel_status,
    fulfillment_channel,
    currency,
    purchased_at,
    shipped_at,
    delivered_at,
    {{ utc_date('purchased_at') }} as purchased_date,
    {{ utc_date('coalesce(shipped_at, delivered_at)') }} as shipped_date,
    {{ money('order_total') }} as order_total,
    {{ money('items_subtotal') }} as items_subtotal,
    {{ money('tax_total') }} as tax_total,
    {{ money('shipping_total') }} as shipping_total,
    {{ money('promotion_total') }} as promotion_total,
    {{ money('marketplace_fee_total') }} as marketplace_fee_total
from {{ source('core', 'core_orders') }}
{% if is_incremental() %}
where partition_date >= {{ window_start() }}
{% endif %}
