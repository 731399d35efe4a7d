"""Repricing (group `pricing`, date × merchant): the day's competitive prices and the price we
recommend for each SKU. Thin: the work is in `illuma_pipelines.pricing`. We recommend; nothing here
writes a price to a marketplace (that waits for the merchant's approval flow)."""

import dagster as dg

from assets.catalog import CATALOG_PARTS_KEY
from assets.concurrency import MERCHANT_STEP_TAGS, WAREHOUSE_POOL
from assets.core import ORDER_LINES_KEY
from assets.extracts import extract_key
from assets.partitions import merchant_daily_partitions, partition_parts
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.pricing import (
    COMPETITIVE_PRICES,
    COMPETITIVE_PRICES_QUARANTINE_DATASET,
    RECOMMENDATIONS,
    PricingRuleError,
    import_inbox_rule_files,
    load_competitive_prices_partition,
    load_recommendations_partition,
    recommendations_out_of_bounds,
)
from illuma_pipelines.raw_records import QUARANTINE
from resources.inbox import InboxResource
from resources.warehouse import WarehouseResource

KINDS = {"python", "duckdb", "postgres"}
OWNERS = ["team:data"]
GROUP = "pricing"

COMPETITIVE_PRICES_KEY = dg.AssetKey(["core", "competitive_prices"])
RECOMMENDATIONS_KEY = dg.AssetKey(["pricing", "recommendations"])
WITHIN_BOUNDS_CHECK = "recommendations_within_bounds"


@dg.asset(
    key=COMPETITIVE_PRICES_KEY,
    deps=[extract_key("amazon", "competitive_pricing")],
    partitions_def=merchant_daily_partitions,
    group_name=GROUP,
    kinds=KINDS,
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    op_tags=MERCHANT_STEP_TAGS,
)
def competitive_prices(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One row per day, marketplace, SKU (or ASIN) and condition from the Amazon competitive
    pricing extract (Product Pricing: getCompetitivePricing entries, or getListingOffers /
    getItemOffers payloads): buy-box price and holder, lowest prices by fulfillment channel, the
    merchant's own offer, offer counts and currency. Unreadable records go to raw_quarantine."""
    merchant_id, day = partition_parts(context)
    done = load_competitive_prices_partition(warehouse.get(), merchant_id, day, context.run.run_id)
    if done.rejected:
        context.log.warning(
            f"{done.rejected} competitive pricing record(s) of {merchant_id} {day} could not be read; see "
            f"{merchant_schema(merchant_id)}.{QUARANTINE.name} (dataset {COMPETITIVE_PRICES_QUARANTINE_DATASET})"
        )
    return dg.MaterializeResult(metadata={**done.metadata(), "table": COMPETITIVE_PRICES.name})


@dg.asset(
    key=RECOMMENDATIONS_KEY,
    deps=[COMPETITIVE_PRICES_KEY, CATALOG_PARTS_KEY, ORDER_LINES_KEY, extract_key("amazon", "inventory")],
    partitions_def=merchant_daily_partitions,
    group_name=GROUP,
    kinds=KINDS,
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    op_tags=MERCHANT_STEP_TAGS,
    check_specs=[
        dg.AssetCheckSpec(
            WITHIN_BOUNDS_CHECK,
            asset=RECOMMENDATIONS_KEY,
            description="Every recommended price lies within its floor and ceiling.",
        )
    ],
)
def pricing_recommendations(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, inbox: InboxResource
) -> dg.MaterializeResult:
    """Per SKU, marketplace and day: current price, competitor reference, recommended price, its
    floor (cost with the minimum margin and fees, raised to MAP and min_price) and ceiling
    (max_price), and the reason in words, from the day's competitive prices, the catalog version
    valid on the day and the merchant's pricing rules (new rule files in its inbox applied first).
    A SKU without cost, rule or competitor data gets a row with no price and the reason."""
    merchant_id, day = partition_parts(context)
    wh = warehouse.get()
    folder = inbox.merchant_dir(merchant_id, "pricing_rules")
    try:
        applied = import_inbox_rule_files(wh, merchant_id, folder, actor=f"dagster:pricing/recommendations:{context.run.run_id}")
    except PricingRuleError as exc:
        # Recommending with the rules the merchant meant to replace would mislead: stop and say why.
        raise dg.Failure(f"{exc}\nFix or remove the file in {folder}, then re-run.", allow_retries=False) from exc
    for name, count in applied.items():
        context.log.info(f"applied {count} pricing rule(s) from {folder / name}")
    done = load_recommendations_partition(wh, merchant_id, day, context.run.run_id)
    outside = recommendations_out_of_bounds(wh, merchant_id, day)
    return dg.MaterializeResult(
        metadata={**done.metadata(), "rule_files_applied": len(applied), "table": RECOMMENDATIONS.name},
        check_results=[
            dg.AssetCheckResult(
                check_name=WITHIN_BOUNDS_CHECK, passed=outside == 0, metadata={"outside_bounds": outside}
            )
        ],
    )


pricing_assets = [competitive_prices, pricing_recommendations]
