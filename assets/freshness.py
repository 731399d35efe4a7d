"""Freshness of each merchant's core orders: yesterday's partition should land by 09:00 UTC
(docs/decisions/0010-reports-delivery-freshness.md says why a check of our own, not Dagster's
time-partition freshness checks, which need a time-partitioned asset, nor a FreshnessPolicy,
which judges the asset by its last update of any partition: one merchant would hide another)."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.concurrency import MERCHANT_STEP_TAGS, WAREHOUSE_POOL
from assets.core import ORDERS_KEY
from assets.partitions import active_merchant_partitions, merchant_date_key
from resources.warehouse import WarehouseResource

DEADLINE_HOUR_UTC = 9


class FreshnessConfig(dg.Config):
    as_of: str | None = None
    """The time to judge at (ISO 8601, UTC); unset: now. The day judged is the one before it."""


def deadline_and_day(as_of: datetime) -> tuple[datetime, str]:
    """(the deadline that has passed last, the partition date due by it): 09:00 UTC of as_of's day
    for yesterday's partition, or of the day before when as_of is earlier than 09:00."""
    deadline = as_of.replace(hour=DEADLINE_HOUR_UTC, minute=0, second=0, microsecond=0)
    if as_of < deadline:
        deadline -= timedelta(days=1)
    return deadline, (deadline - timedelta(days=1)).date().isoformat()


@dg.asset_check(
    asset=ORDERS_KEY,
    name="yesterday_landed_by_0900_utc",
    description="Each active merchant's core orders of yesterday landed by 09:00 UTC; lists the "
    "merchants whose partition is missing or landed late.",
    # It reads the registry: the warehouse rule of every step that opens it (ADR 0001).
    pool=WAREHOUSE_POOL,
    op_tags=MERCHANT_STEP_TAGS,
)
def orders_landed_by_deadline(
    context: dg.AssetCheckExecutionContext, config: FreshnessConfig, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    try:
        as_of = datetime.fromisoformat(config.as_of).astimezone(UTC) if config.as_of else datetime.now(UTC)
    except ValueError:
        raise dg.Failure(
            f"as_of {config.as_of!r} is not an ISO 8601 time (e.g. 2026-12-06T09:00:00+00:00); leave it out for now"
        ) from None
    deadline, day = deadline_and_day(as_of)
    merchants = active_merchant_partitions(context.instance, warehouse.get())
    keys = {str(merchant_date_key(m, day)): m for m in merchants}
    landed: dict[str, float] = {}
    if keys:
        # The merchants of one date only, never every date × merchant key (ADR 0006).
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=ORDERS_KEY, asset_partitions=list(keys)), limit=10 * len(keys)
        ).records
        for record in records:
            merchant = keys.get(record.partition_key or "")
            if merchant is not None:
                landed[merchant] = min(landed.get(merchant, record.timestamp), record.timestamp)
    missing = [m for m in merchants if m not in landed]
    late = [m for m in merchants if m in landed and landed[m] > deadline.timestamp()]
    return dg.AssetCheckResult(
        passed=not missing and not late,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(merchants) - len(missing) - len(late)} of {len(merchants)} active merchants' orders of {day} "
            f"landed by {deadline:%Y-%m-%d %H:%M} UTC"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; late: {', '.join(late)}" if late else "")
        ),
        metadata={"day": day, "deadline": deadline.isoformat(), "missing": missing, "late": late},
    )
