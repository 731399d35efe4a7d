-- Every version of every catalog part (catalog_parts, slowly changing: valid from `valid_from`
-- until `valid_to`, open-ended while NULL) with its unit cost.
select
    sku,
    current_sku,
    master_part,
    brand,
    mpn,
    {{ money('unit_cost') }} as unit_cost,
    cost_currency,
    valid_from,
    valid_to
from {{ source('catalog', 'catalog_parts') }}
