"""The one concurrency rule for every step that opens a merchant's warehouse data (ADR 0001, 0006).

Each such step (extracts, core tables, dbt, compliance, key rotation, and the asset checks that
read what they wrote) carries both:
- the `warehouse` pool: how many warehouse steps the instance runs at once, across all runs (the
  local instance allows 2, one per core; production 8);
- the op tag `illuma/warehouse=merchant`, limited to 1 by EXECUTOR within a run. A run is one
  merchant's, and the instance runs one run per merchant at a time (the `illuma/merchant` run tag),
  so no two processes open one merchant's DuckDB file at once, while different merchants, each in
  a file of its own, run side by side. Pools are named per definition, not per partition, so the
  per-merchant half of the rule is the run tag and this op tag rather than a pool per merchant.
"""

import dagster as dg

WAREHOUSE_POOL = "warehouse"
MERCHANT_STEP_TAG = "illuma/warehouse"
MERCHANT_STEP_TAGS = {MERCHANT_STEP_TAG: "merchant"}

# The executor of every job: a run's steps in processes of their own, at most one at a time of
# those that open the merchant's data. Step processes fork from a server that has imported the
# code location once per run: importing it (dagster-dbt, dbt) costs 3.3 s, which every one of a
# merchant-day run's 20 steps otherwise paid again when the run was loaded from another module
# (bench/isolation.py measures the runs).
EXECUTOR = dg.multiprocess_executor.configured(
    {
        "tag_concurrency_limits": [{"key": MERCHANT_STEP_TAG, "limit": 1}],
        "start_method": {"forkserver": {"preload_modules": ["illuma_pipelines.definitions"]}},
    }
)
