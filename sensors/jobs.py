"""Jobs: what a scheduled or sensor-driven run materializes, selected explicitly.

Each job names what it runs (asset groups or asset keys), never "everything but ...": an asset in a
new group joins no job until one names it. tests/test_jobs.py holds each job's exact selection.
"""


import dagster as dg

from assets.freshness import orders_landed_by_deadline
from assets.partitions import merchant_daily_partitions, merchant_partitions

# The groups of a merchant's daily run, upstream first. The catalog is not among them: it loads
# when a merchant drops a file (catalog_import_job, requested by the catalog inbox sensor). Nor
# are the analytics: they build once per merchant over all its dates (merchant_analytics_job).
MERCHANT_DAILY_GROUPS = ("extracts", "core", "pricing")
MERCHANT_ANALYTICS_GROUPS = ("analytics",)

# One run per merchant and day for its extracts, core tables and pricing (ADR 0006: each run costs
# Dagster bookkeeping, so a merchant's day is one run).
merchant_daily_job = dg.define_asset_job(
    "merchant_daily_job",
    # The 09:00 UTC freshness check judges every merchant's day: it runs in freshness_job.
    selection=dg.AssetSelection.groups(*MERCHANT_DAILY_GROUPS) - dg.AssetSelection.checks(orders_landed_by_deadline),
    partitions_def=merchant_daily_partitions,
    description="All of one merchant's daily assets for one day: extracts, core, pricing.",
)

# One dbt build per merchant over all of its dates, requested by analytics_refresh_sensor once the
# merchant's day (or a backfill of many days) has landed (ADR 0009: dbt took 8.6 s of a 14 s
# merchant-day run, so building per merchant-day would dominate every refresh and backfill).
merchant_analytics_job = dg.define_asset_job(
    "merchant_analytics_job",
    selection=dg.AssetSelection.groups(*MERCHANT_ANALYTICS_GROUPS),
    partitions_def=merchant_partitions,
    description="One merchant's dbt models and tests, over all of its dates, into its own schema.",
)
