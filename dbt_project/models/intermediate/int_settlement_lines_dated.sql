{#- Settlement lines with their settlement's deposit date, their accrual date (the line's posted
    date, else the deposit date) and their category group: what the marts by day and by order
    need. int_settlement_lines adds the SKU attribution and cost of goods on top; a mart that needs
    neither reads this one, so it does not join every line to the orders and the catalog (at a
    year of a large merchant that join was most of the daily build: bench/analytics.py). -#}
select
    l.*,
    s.deposit_date,
    coalesce(l.posted_date, s.deposit_date) as accrual_date,
    {{ category_group('l.fee_category') }} as category_group
from {{ ref('stg_settlement_lines') }} as l
left join {{ ref('stg_settlements') }} as s
    on s.channel = l.channel and s.settlement_id = l.settlement_id
