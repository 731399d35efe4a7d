"""The one Definitions object of the code location: it only assembles."""

from __future__ import annotations

import dagster as dg

from assets.analytics import analytics_dbt_models
from assets.extracts import extract_assets
from assets.platform import platform_assets
from resources import current_environment, resources_for
from sensors.jobs import merchant_daily_job
from sensors.merchants import merchants_sensor
from sensors.schedules import merchant_daily_schedule

defs = dg.Definitions(
    assets=[*platform_assets, *extract_assets, analytics_dbt_models],
    jobs=[merchant_daily_job],
    schedules=[merchant_daily_schedule],
    sensors=[merchants_sensor],
    resources=resources_for(current_environment()),
)
