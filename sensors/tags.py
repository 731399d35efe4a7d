"""Run tags that name a run's merchant and the marketplaces it calls: the ones this code location
sets, and Dagster's own."""

from collections.abc import Iterable

from assets.partitions import MERCHANT_DIM
from illuma_pipelines.marketplaces import CHANNELS

# Set on every run requested for one merchant (schedules, sensors, the demo). The production
# instance limits runs to one per value of this tag (deploy/dagster.yaml, ADR 0006).
MERCHANT_TAG = "illuma/merchant"
# Dagster tags a partitioned run with its partition key, and a date × merchant run also with each
# dimension's key.
PARTITION_TAG = "dagster/partition"
MERCHANT_PARTITION_TAG = f"{PARTITION_TAG}/{MERCHANT_DIM}"
# Every tag under which a run may name a merchant.
MERCHANT_RUN_TAGS = (MERCHANT_PARTITION_TAG, PARTITION_TAG, MERCHANT_TAG)

# Set on every run that calls a marketplace (a merchant's day): one tag per channel the merchant
# is connected to, so the production instance can cap how many runs call one marketplace at once
# (`illuma/channel/amazon` etc., deploy/dagster.yaml). The value is always "true".
CHANNEL_TAG_PREFIX = "illuma/channel/"


def channel_tag(channel: str) -> str:
    """The run tag that says a run calls `channel`'s API."""
    return f"{CHANNEL_TAG_PREFIX}{channel}"


def merchant_run_tags(merchant_id: str, channels: Iterable[str] = ()) -> dict[str, str]:
    """The tags of a run of one merchant: its id (one run per merchant at a time) and, for a run
    that calls the marketplaces, each of the merchant's channels (runs per marketplace)."""
    unknown = sorted(set(channels) - set(CHANNELS))
    if unknown:
        raise ValueError(f"unknown channel(s) {unknown} for merchant {merchant_id!r}: known are {list(CHANNELS)}")
    return {MERCHANT_TAG: merchant_id, **{channel_tag(c): "true" for c in sorted(set(channels))}}
