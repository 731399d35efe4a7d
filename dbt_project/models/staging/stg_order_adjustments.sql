-- Refunds, returns and other adjustments of orders (core_order_adjustments).
select
    channel,
    marketplace_order_id as order_id,
    adjustment_seq,
    line_id,
    kind,
    {{ money('amount') }} as amount,
    currency,
    occurred_at,
    {{ utc_date('occurred_at') }} as occurred_date,
    reason,
    adjustment_id,
    status
from {{ source('core', 'core_order_adjustments') }}
