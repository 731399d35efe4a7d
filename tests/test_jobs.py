"""Each job runs exactly what it names: its resolved selection is pinned here, and an asset in a new
group joins no job (ADR 0006). Change a set below only when a job is meant to run something else."""

import dagster as dg
import pytest

from assets.analytics import analytics_dbt_models
from assets.partitions import merchant_daily_partitions, merchant_partitions
from illuma_pipelines.definitions import defs
from sensors.jobs import MERCHANT_ANALYTICS_GROUPS, MERCHANT_DAILY_GROUPS

EXTRACTS = {
    f"extracts/{name}"
    for name in (
        "amazon_competitive_pricing",
        "amazon_financial_transactions",
        "amazon_inventory",
        "amazon_orders",
        "amazon_settlement_reports",
        "ebay_financial_transactions",
        "ebay_inventory",
        "ebay_orders",
        "ebay_payout_transactions",
        "ebay_payouts",
        "walmart_inventory",
        "walmart_orders",
        "walmart_settlement_reports",
    )
}
CORE = {
    f"core/{name}"
    for name in (
        "buyer_pii",
        "financial_events",
        "inventory_snapshots",
        "order_adjustments",
        "order_lines",
        "order_status_history",
        "orders",
        "settlement_lines",
        "settlements",
    )
}
# The dbt project is the one list of models and their tests: the analytics job is exactly its
# assets and checks (the models' names are pinned by the dbt project's own tests).
ANALYTICS = {k.to_user_string() for k in analytics_dbt_models.keys}
ANALYTICS_CHECKS = {f"{k.asset_key.to_user_string()}:{k.name}" for k in analytics_dbt_models.check_keys}
PRICING = {"core/competitive_prices", "pricing/recommendations"}

# job -> (asset keys, asset checks "asset:check", ops of a job without assets)
EXPECTED = {
    "merchant_daily_job": (
        EXTRACTS | CORE | PRICING,
        {
            "pricing/recommendations:recommendations_within_bounds",
            "core/buyer_pii:no_plaintext_pii",
            "core/inventory_snapshots:inventory_quality",
            "core/order_adjustments:order_adjustments_quality",
            "core/order_lines:order_lines_quality",
            "core/orders:orders_quality",
        },
        None,
    ),
    "merchant_analytics_job": (ANALYTICS, ANALYTICS_CHECKS, None),
    "catalog_import_job": ({"catalog/parts"}, set(), None),
    "pii_purge_job": ({"compliance/pii_purge"}, set(), None),
    "account_erasure_job": ({"compliance/account_erasure"}, set(), None),
    "key_rotation_job": (set(), set(), {"rotated_pii_keys"}),
    "monthly_report_job": ({"reports/monthly"}, {"reports/monthly:no_buyer_pii"}, None),
    "settlement_report_job": ({"reports/settlements"}, {"reports/settlements:no_buyer_pii"}, None),
    "privacy_statement_job": ({"reports/privacy_statement"}, {"reports/privacy_statement:no_buyer_pii"}, None),
    # A job of one check: the asset it checks is not materialized.
    "freshness_job": (set(), {"core/orders:yesterday_landed_by_0900_utc"}, {"core__orders_yesterday_landed_by_0900_utc"}),
    # The backup runs its own age check after it; the hourly health job runs the check alone.
    "backup_job": ({"backups/warehouse"}, {"backups/warehouse:backups_recent_and_restore_tested"}, None),
    "restore_check_job": ({"backups/restore_check"}, set(), None),
    "backup_health_job": (
        set(),
        {"backups/warehouse:backups_recent_and_restore_tested"},
        {"backups__warehouse_backups_recent_and_restore_tested"},
    ),
}


def _runs(definitions: dg.Definitions, job_name: str) -> tuple[set[str], set[str], set[str] | None]:
    """What a job runs: its asset keys, its asset checks and, for a job without assets, its ops."""
    job = definitions.get_repository_def().get_job(job_name)
    layer = job.asset_layer
    keys = set(layer.selected_asset_keys)
    checks = {
        f"{k.asset_key.to_user_string()}:{k.name}" for k in layer.asset_graph.asset_check_keys
    }
    ops = None if keys else set(job.graph.node_dict)
    return {k.to_user_string() for k in keys}, checks, ops


@pytest.fixture(scope="module")
def definitions() -> dg.Definitions:
    return defs()


def test_every_job_of_the_location_is_pinned(definitions):
    jobs = {j.name for j in definitions.get_repository_def().get_all_jobs() if not j.name.startswith("__")}
    assert jobs == set(EXPECTED)


@pytest.mark.parametrize("job_name", sorted(EXPECTED))
def test_each_job_runs_exactly_its_selection(definitions, job_name):
    assert _runs(definitions, job_name) == EXPECTED[job_name]


@pytest.mark.parametrize(
    ("job_name", "groups"),
    [("merchant_daily_job", MERCHANT_DAILY_GROUPS), ("merchant_analytics_job", MERCHANT_ANALYTICS_GROUPS)],
)
def test_the_merchant_jobs_are_their_groups(definitions, job_name, groups):
    graph = definitions.get_repository_def().asset_graph
    in_groups = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name in groups}
    assert _runs(definitions, job_name)[0] == in_groups


def test_analytics_build_per_merchant_not_per_merchant_day(definitions):
    """dbt runs once per merchant over all its dates (ADR 0009): never inside a merchant-day run,
    and the analytics job is partitioned by merchant alone."""
    assert "analytics/stg_channel_connections" in ANALYTICS and len(ANALYTICS_CHECKS) >= 4
    assert not ANALYTICS & _runs(definitions, "merchant_daily_job")[0]
    assert definitions.resolve_job_def("merchant_analytics_job").partitions_def == merchant_partitions
    assert definitions.resolve_job_def("merchant_daily_job").partitions_def == merchant_daily_partitions


def test_an_asset_in_a_new_group_joins_no_job(definitions):
    @dg.asset(key=["reports", "merchant_summary"], group_name="reports", partitions_def=merchant_daily_partitions)
    def merchant_summary() -> None:
        """A report, as a later group would add one."""

    extended = dg.Definitions.merge(definitions, dg.Definitions(assets=[merchant_summary]))
    assert "reports/merchant_summary" in {
        k.to_user_string() for k in extended.get_repository_def().asset_graph.get_all_asset_keys()
    }
    for job_name, expected in EXPECTED.items():
        assert _runs(extended, job_name) == expected, job_name



def test_every_step_that_opens_merchant_data_follows_the_warehouse_rule():
    """Every op that uses the warehouse, asset checks included (a blocking check once died on the
    lock of a writer running beside it), is in the `warehouse` pool and carries the op tag that
    every job's executor limits to one step at a time (assets/concurrency.py, ADR 0001)."""
    from assets.concurrency import MERCHANT_STEP_TAG, WAREHOUSE_POOL

    definitions = defs()
    ops = {}
    for name in EXPECTED:
        job = definitions.resolve_job_def(name)
        ops.update({op.name: op for op in job.graph.node_defs if "warehouse" in op.required_resource_keys})
    checks = {name for name in ops if name.endswith(("_quality", "_no_plaintext_pii"))}
    assert len(checks) >= 4 and len(ops) >= len(checks) + 15, sorted(ops)
    for name, op in ops.items():
        assert op.pool == WAREHOUSE_POOL, name
        assert op.tags.get(MERCHANT_STEP_TAG) == "merchant", name
