"""Every partitions definition of the asset graph, in one place: the date × merchant grain and
merchants as dynamic partitions (docs/decisions/0006-partitions-runs-concurrency.md)."""


import dagster as dg

from illuma_pipelines.merchant_ids import validate_merchant_id

MERCHANTS = "merchants"
DATE_DIM, MERCHANT_DIM = "date", "merchant"
# Two years of daily history: the furthest back Amazon settlements and tax questions reach us.
HISTORY_START = "2025-01-01"

merchant_partitions = dg.DynamicPartitionsDefinition(name=MERCHANTS)
daily_partitions = dg.DailyPartitionsDefinition(start_date=HISTORY_START, timezone="UTC")
merchant_daily_partitions = dg.MultiPartitionsDefinition(
    {DATE_DIM: daily_partitions, MERCHANT_DIM: merchant_partitions}
)


def merchant_date_key(merchant_id: str, date: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({DATE_DIM: date, MERCHANT_DIM: merchant_id})


def partition_parts(context: dg.AssetExecutionContext) -> tuple[str, str]:
    """(merchant_id, date) of a date × merchant partitioned step."""
    keys = context.partition_key.keys_by_dimension  # type: ignore[union-attr]
    # Partition keys can be added by hand in the UI: validate before they reach SQL or paths.
    return validate_merchant_id(keys[MERCHANT_DIM]), keys[DATE_DIM]
