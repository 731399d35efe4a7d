"""Every partitions definition of the asset graph, in one place: the date × merchant grain and
merchants as dynamic partitions (docs/decisions/0006-partitions-runs-concurrency.md)."""


import dagster as dg

from illuma_pipelines.merchant_ids import validate_merchant_id
from illuma_pipelines.registry import ACTIVE, list_merchants
from illuma_pipelines.warehouse import Warehouse

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


def active_merchant_partitions(instance: dg.DagsterInstance, warehouse: Warehouse) -> list[str]:
    """The active merchants that have their partition, sorted: what a schedule runs for (an
    offboarded merchant keeps its partitions until erasure, but nothing runs for it)."""
    active = {m.merchant_id for m in list_merchants(warehouse, status=ACTIVE)}
    return sorted(set(instance.get_dynamic_partitions(MERCHANTS)) & active)


def partition_parts(context: dg.AssetExecutionContext) -> tuple[str, str]:
    """(merchant_id, date) of a date × merchant partitioned step."""
    keys = context.partition_key.keys_by_dimension  # type: ignore[union-attr]
    # Partition keys can be added by hand in the UI: validate before they reach SQL or paths.
    return validate_merchant_id(keys[MERCHANT_DIM]), keys[DATE_DIM]


# Reports: a merchant's month (the monthly report) and quarter (the privacy statement).
MONTH_DIM, QUARTER_DIM = "month", "quarter"
monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=HISTORY_START, timezone="UTC")
quarterly_partitions = dg.TimeWindowPartitionsDefinition(
    cron_schedule="0 0 1 1,4,7,10 *", start=HISTORY_START, fmt="%Y-%m-%d", timezone="UTC"
)
merchant_monthly_partitions = dg.MultiPartitionsDefinition({MONTH_DIM: monthly_partitions, MERCHANT_DIM: merchant_partitions})
merchant_quarterly_partitions = dg.MultiPartitionsDefinition(
    {QUARTER_DIM: quarterly_partitions, MERCHANT_DIM: merchant_partitions}
)


def merchant_period_parts(context: dg.AssetExecutionContext, dimension: str) -> tuple[str, str]:
    """(merchant_id, the period's first day) of a month × merchant or quarter × merchant step."""
    keys = context.partition_key.keys_by_dimension  # type: ignore[union-attr]
    return validate_merchant_id(keys[MERCHANT_DIM]), keys[dimension]
