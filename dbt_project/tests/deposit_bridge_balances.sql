-- Structural: every settlement's bridge balances (net proceeds + reserves + transfers = the sum
-- of its lines); a failure is a bug in the models, not in the data.
select channel, settlement_id, net_proceeds, reserve_held, reserve_released, transfer, lines_total
from {{ ref('settlement_reconciliation') }}
where net_proceeds + reserve_held + reserve_released + transfer <> lines_total
