"""Run tags that name a run's merchant: the ones this code location sets, and Dagster's own."""

from assets.partitions import MERCHANT_DIM

# Set on every run requested for one merchant (schedules, sensors, the demo). The production
# instance limits runs to one per value of this tag (deploy/dagster.yaml, ADR 0006).
MERCHANT_TAG = "illuma/merchant"
# Dagster tags a partitioned run with its partition key, and a date × merchant run also with each
# dimension's key.
PARTITION_TAG = "dagster/partition"
MERCHANT_PARTITION_TAG = f"{PARTITION_TAG}/{MERCHANT_DIM}"
# Every tag under which a run may name a merchant.
MERCHANT_RUN_TAGS = (MERCHANT_PARTITION_TAG, PARTITION_TAG, MERCHANT_TAG)
