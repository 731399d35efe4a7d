-- Settlements (Amazon settlement reports, eBay payouts, Walmart reconciliation reports), one row
-- per channel and settlement id (core_settlements).
select
    channel,
    settlement_id,
    kind,
    marketplace_id,
    period_start,
    period_end,
    deposit_date,
    currency,
    {{ money('reported_total') }} as reported_total,
    {{ money('lines_total') }} as loaded_lines_total,
    line_count as loaded_line_count,
    status
from {{ source('core', 'core_settlements') }}
