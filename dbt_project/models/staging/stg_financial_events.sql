-- Finance transactions by component (core_financial_events: Amazon Finances 2024-06-19, eBay
-- Finances), before and after they settle.
select
    channel,
    transaction_id,
    transaction_type,
    component_seq,
    transaction_kind,
    status,
    posted_at,
    posted_date,
    order_id,
    sku,
    amount_type,
    amount_description,
    fee_category,
    {{ money('amount') }} as amount,
    currency,
    marketplace_id,
    group_id
from {{ source('core', 'core_financial_events') }}
