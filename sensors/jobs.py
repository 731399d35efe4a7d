"""Jobs: what a scheduled or sensor-driven run materializes, selected explicitly.

Each job names what it runs (asset groups or asset keys), never "everything but ...": an asset in a
new group joins no job until one names it. tests/test_jobs.py holds each job's exact selection.
"""


import dagster as dg

from assets.partitions import merchant_daily_partitions

# The groups of a merchant's daily run, upstream first. The catalog is not among them: it loads
# when a merchant drops a file (catalog_import_job, requested by the catalog inbox sensor).
MERCHANT_DAILY_GROUPS = ("extracts", "core", "pricing", "analytics")

# One run per merchant and day for its extracts, core tables and analytics (ADR 0006: each run
# costs Dagster bookkeeping and each dbt invocation seconds, so a merchant's day is one run).
merchant_daily_job = dg.define_asset_job(
    "merchant_daily_job",
    selection=dg.AssetSelection.groups(*MERCHANT_DAILY_GROUPS),
    partitions_def=merchant_daily_partitions,
    description="All of one merchant's assets for one day: extracts, core, pricing, analytics.",
)
