-- One row per settlement: the sum of its lines against the total the marketplace reports, and
-- the deposit bridge (net proceeds + reserve movements + transfers = lines total, which is the
-- deposit when the settlement adds up). A difference is shown and flagged, never plugged.
with line_totals as (
    select
        channel,
        settlement_id,
        count(*) as line_count,
        sum(amount) as lines_total,
        sum(case when not {{ in_groups('fee_category', ['bridge']) }} then amount else 0 end) as net_proceeds,
        sum(case when fee_category = 'reserve_held' then amount else 0 end) as reserve_held,
        sum(case when fee_category = 'reserve_released' then amount else 0 end) as reserve_released,
        sum(case when fee_category = 'transfer' then amount else 0 end) as transfer,
        min(posted_date) as first_posted_date,
        max(posted_date) as last_posted_date
    from {{ ref('stg_settlement_lines') }}
    group by channel, settlement_id
),

joined as (
    select
        coalesce(s.channel, t.channel) as channel,
        coalesce(s.settlement_id, t.settlement_id) as settlement_id,
        s.kind,
        s.marketplace_id,
        s.period_start,
        s.period_end,
        s.deposit_date,
        s.currency,
        s.reported_total,
        coalesce(t.line_count, 0) as line_count,
        {{ money('coalesce(t.lines_total, 0)') }} as lines_total,
        {{ money('coalesce(t.net_proceeds, 0)') }} as net_proceeds,
        {{ money('coalesce(t.reserve_held, 0)') }} as reserve_held,
        {{ money('coalesce(t.reserve_released, 0)') }} as reserve_released,
        {{ money('coalesce(t.transfer, 0)') }} as transfer,
        t.first_posted_date,
        t.last_posted_date,
        s.loaded_lines_total,
        s.loaded_line_count,
        s.settlement_id is not null as has_settlement_record
    from {{ ref('stg_settlements') }} as s
    full outer join line_totals as t
        on t.channel = s.channel and t.settlement_id = s.settlement_id
)

select
    channel,
    settlement_id,
    kind,
    marketplace_id,
    period_start,
    period_end,
    deposit_date,
    currency,
    reported_total,
    line_count,
    lines_total,
    {{ money('reported_total - lines_total') }} as difference,
    coalesce(reported_total = lines_total, false) as adds_up,
    case
        when not has_settlement_record then 'no_settlement_record'
        when reported_total is null then 'no_reported_total'
        when reported_total = lines_total then 'adds_up'
        else 'does_not_add_up'
    end as reconciliation_status,
    net_proceeds,
    reserve_held,
    reserve_released,
    transfer,
    reported_total as deposit,
    first_posted_date,
    last_posted_date,
    -- The loader's own count and sum of the lines: they differ from ours only if a line changed
    -- outside the staging window since it was last rebuilt (then run with --full-refresh).
    coalesce(loaded_lines_total = lines_total and loaded_line_count = line_count, false) as loader_agrees
from joined
