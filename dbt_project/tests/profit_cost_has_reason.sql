-- Structural: a profit row without cost of goods says why, and a row with it has no reason; a
-- row without cost has no net profit (an unknown cost is never taken as 0).
select basis, month, channel, currency, sku, cost_of_goods, net_profit, cost_missing_reason
from {{ ref('sku_profit_monthly') }}
where (cost_of_goods is null) <> (cost_missing_reason is not null)
    or (cost_of_goods is null and net_profit is not null)
