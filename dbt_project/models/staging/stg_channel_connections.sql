-- The merchant's connected marketplace channels, one row per channel, from the platform registry.
-- A table, not a view: it records the build's as_of_date, which reports read as of when the
-- analytics stand.
{{ config(materialized='table') }}
select
    merchant_id,
    channel,
    coalesce(marketplace_ids, '') as marketplace_ids,
    cast(connected_at as timestamp) as connected_at,
    {{ as_of() }} as as_of_date
from {{ source('registry', 'registry_channel_connections') }}
