"""The privacy policy's deletion promises as assets (group `compliance`, date × merchant).

`pii_purge` runs daily for every registered merchant: buyer PII past its retention limit goes
from the PII table, raw payloads, quarantine copies and export archives. `account_erasure` erases
a terminated merchant once its grace period is over (or at once on an immediate-deletion request);
the erasure sensor requests it. Both are thin: the work is in `illuma_pipelines.purge`, and each
action writes its row in `platform.retention_ledger` (the merchant's `retention_purges` view).
"""

from datetime import UTC, datetime

import dagster as dg

from assets.concurrency import MERCHANT_STEP_TAGS, WAREHOUSE_POOL
from assets.core import BUYER_PII_KEY
from assets.extracts import extract_key
from assets.partitions import merchant_daily_partitions, partition_parts
from illuma_pipelines import purge
from illuma_pipelines.audit import purge_security_logs
from illuma_pipelines.marketplaces import raw_datasets
from illuma_pipelines.registry import RegistryError
from illuma_pipelines.shredding import purge_and_shred
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource

PII_PURGE_KEY = dg.AssetKey(["compliance", "pii_purge"])
ACCOUNT_ERASURE_KEY = dg.AssetKey(["compliance", "account_erasure"])
OWNERS = ["team:data"]


class PurgeConfig(dg.Config):
    as_of: str = ""
    """The purge clock, an ISO 8601 time with its offset (for replays and audits); empty: now."""


def purge_clock(config: PurgeConfig) -> datetime:
    if not config.as_of:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(config.as_of)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise dg.Failure(
            f"as_of {config.as_of!r} is not an ISO 8601 time with an offset, e.g. "
            "2026-11-27T00:00:00+00:00; leave it empty to purge as of now",
            allow_retries=False,
        )
    return moment.astimezone(UTC)


def _metadata(result: purge.PurgeResult) -> dict:
    by_rule: dict[str, int] = {}
    for entry in result.entries:
        by_rule[entry.rule_id] = by_rule.get(entry.rule_id, 0) + entry.rows_affected
    return {
        "rows_affected": result.total,
        "ledger_rows": len(result.entries),
        **{f"rule_{rule}": n for rule, n in sorted(by_rule.items())},
        "by_target": dg.MetadataValue.json(result.by_target()),
    }


def _compliance_asset(key: dg.AssetKey, deps: list[dg.AssetKey]):
    return dg.asset(
        key=key,
        deps=deps,
        partitions_def=merchant_daily_partitions,
        group_name="compliance",
        kinds={"python"},
        owners=OWNERS,
        pool=WAREHOUSE_POOL,
        op_tags=MERCHANT_STEP_TAGS,
    )


@_compliance_asset(PII_PURGE_KEY, [BUYER_PII_KEY, *(extract_key(c, d) for c, d in raw_datasets(may_name_buyer=True))])
def pii_purge(
    context: dg.AssetExecutionContext, config: PurgeConfig, warehouse: WarehouseResource, vault: VaultResource
) -> dg.MaterializeResult:
    """Buyer PII past its retention limit (Amazon: 30 days after delivery; every channel: 90 days
    after shipment; cancelled orders: 30 days), removed from the vault-encrypted PII table, the
    raw payloads (fields redacted, the rest kept), quarantine copies and expired export archives.
    Order facts stay. The values left are re-sealed under the key of their due day, and the keys
    that fell due are destroyed, so no copy of purged PII stays readable anywhere. Re-runs change
    nothing; each action is a ledger row. Also deletes security log rows older than their 12-month
    minimum (by the real clock)."""
    merchant_id, _ = partition_parts(context)
    now = purge_clock(config)
    wh = warehouse.get()
    try:
        result, shred = purge_and_shred(wh, vault.get(wh), merchant_id, now=now, run_id=context.run.run_id)
    except RegistryError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    # Security logs are kept at least 12 months: purged by the real clock only, never by `as_of`.
    security_logs = purge_security_logs(warehouse.get(), datetime.now(UTC), actor=f"run:{context.run.run_id}")
    context.log.info(f"PII purge of {merchant_id} as of {now.isoformat()}: {result.total} value(s) removed")
    return dg.MaterializeResult(
        metadata={
            "as_of": now.isoformat(),
            **_metadata(result),
            **shred.metadata(),
            "security_log_rows_purged": security_logs,
        }
    )


@_compliance_asset(ACCOUNT_ERASURE_KEY, [PII_PURGE_KEY])
def account_erasure(
    context: dg.AssetExecutionContext,
    config: PurgeConfig,
    warehouse: WarehouseResource,
    vault: VaultResource,
) -> dg.MaterializeResult:
    """A terminated merchant's data erased once due (30 days after termination, at once on an
    immediate-deletion request): its schema and role, export files and data keys (crypto-shredding
    every remaining copy of its PII, backups included), then its registry rows. The ledger rows
    remain; the merchants sensor then removes its Dagster partitions and runs once none is in
    flight. Refuses (without retry) when the erasure is not due."""
    merchant_id, _ = partition_parts(context)
    now = purge_clock(config)
    wh = warehouse.get()
    try:
        result = purge.erase_account(wh, vault.get(wh), merchant_id, now=now, run_id=context.run.run_id)
    except RegistryError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    context.log.info(f"erased {merchant_id}: {result.by_target()}")
    return dg.MaterializeResult(metadata={"as_of": now.isoformat(), **_metadata(result)})


compliance_assets = [pii_purge, account_erasure]
