-- The settlements whose lines do not add up to the total the marketplace reports, with the
-- difference (reported - lines). A warning, not an error: the data team sees the exception on the
-- asset in the UI, and the analytics still build (the difference is shown, never plugged).
{{ config(severity='warn') }}
select channel, settlement_id, deposit_date, currency, reported_total, lines_total, difference, reconciliation_status
from {{ ref('settlement_reconciliation') }}
where not adds_up
