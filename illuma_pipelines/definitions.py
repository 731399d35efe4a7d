"""The code location's Definitions: it only assembles.

Built when the code location loads, not at import: `defs` is a `@dg.definitions` function, so the
environment (ILLUMA_ENV, ILLUMA_WAREHOUSE_URL, `illuma_pipelines.environment`) is read and checked
by the process that loads it, not by whoever imports this module. Call `defs()` for the
Definitions.
"""

from __future__ import annotations

import dagster as dg

from assets.analytics import analytics_dbt_models
from assets.backups import backup_assets, backup_checks
from assets.catalog import catalog_assets
from assets.checks import quality_checks
from assets.compliance import compliance_assets
from assets.concurrency import selected_executor
from assets.core import core_assets
from assets.extracts import extract_assets
from assets.freshness import orders_landed_by_deadline
from assets.platform import platform_assets
from assets.pricing import pricing_assets
from assets.reports import report_assets
from illuma_pipelines.environment import current_environment
from resources import resources_for
from sensors.analytics import analytics_refresh_sensor
from sensors.audit import audit_log_sensor
from sensors.backups import (
    backup_health_job,
    backup_health_schedule,
    backup_job,
    backup_schedule,
    restore_check_job,
    restore_check_schedule,
)
from sensors.catalog import catalog_import_job, catalog_inbox_sensor
from sensors.compliance import (
    account_erasure_job,
    erasure_sensor,
    pii_purge_job,
    pii_purge_schedule,
)
from sensors.freshness import freshness_job, freshness_schedule
from sensors.jobs import merchant_analytics_job, merchant_daily_job
from sensors.keys import key_rotation_job, key_rotation_schedule
from sensors.merchants import merchants_sensor
from sensors.reports import (
    monthly_report_job,
    monthly_reports_schedule,
    privacy_statement_job,
    privacy_statements_schedule,
    run_failure_alert_sensor,
    settlement_report_job,
    settlement_report_sensor,
)
from sensors.schedules import merchant_daily_schedule


@dg.definitions
def defs() -> dg.Definitions:
    # Fails the load with a clear message when the environment is wrong (e.g. production
    # without ILLUMA_WAREHOUSE_URL), rather than at the first run.
    environment = current_environment()
    return dg.Definitions(
        assets=[
            *platform_assets, *extract_assets, *core_assets, *catalog_assets, *pricing_assets,
            analytics_dbt_models, *compliance_assets, *report_assets, *backup_assets,
        ],
        asset_checks=[*quality_checks, orders_landed_by_deadline, *backup_checks],
        jobs=[
            merchant_daily_job, merchant_analytics_job, catalog_import_job, key_rotation_job, pii_purge_job,
            account_erasure_job, freshness_job, monthly_report_job, settlement_report_job, privacy_statement_job,
            backup_job, restore_check_job, backup_health_job,
        ],
        schedules=[
            merchant_daily_schedule, key_rotation_schedule, pii_purge_schedule, freshness_schedule,
            monthly_reports_schedule, privacy_statements_schedule, backup_schedule, restore_check_schedule,
            backup_health_schedule,
        ],
        sensors=[
            merchants_sensor, erasure_sensor, audit_log_sensor, catalog_inbox_sensor, analytics_refresh_sensor,
            settlement_report_sensor, run_failure_alert_sensor,
        ],
        resources=resources_for(environment.name),
        # ILLUMA_EXECUTOR, read and checked at load (assets/concurrency.py, ADR 0012).
        executor=selected_executor(environment),
    )
