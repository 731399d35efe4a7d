"""Jobs: what a scheduled or sensor-driven run materializes."""


import dagster as dg

from assets.partitions import merchant_daily_partitions

# Everything partitioned date × merchant, in one run per merchant and day (DESIGN.md §3: each run
# costs bookkeeping, each dbt invocation seconds; batch a merchant's day into one run).
merchant_daily_job = dg.define_asset_job(
    "merchant_daily_job",
    selection=dg.AssetSelection.all().materializable() - dg.AssetSelection.groups("compliance"),
    partitions_def=merchant_daily_partitions,
    description="All of one merchant's assets for one day: extracts, core, analytics.",
)
