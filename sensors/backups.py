"""Backups: the daily backup, the quarterly restore test and an hourly health check (ADR 0013)."""

import dagster as dg

from assets.backups import BACKUP_KEY, RESTORE_CHECK_KEY, backups_recent_and_restore_tested

backup_job = dg.define_asset_job(
    "backup_job",
    selection=dg.AssetSelection.assets(BACKUP_KEY),
    description="Back up every warehouse (encrypted), the key store apart, and expire old backups.",
)
restore_check_job = dg.define_asset_job(
    "restore_check_job",
    selection=dg.AssetSelection.assets(RESTORE_CHECK_KEY),
    description="Restore the latest backup into a scratch database and compare it with its manifest.",
)
backup_health_job = dg.define_asset_job(
    "backup_health_job",
    selection=dg.AssetSelection.checks(backups_recent_and_restore_tested),
    description="Is the last backup younger than 26 hours, and a restore tested within 92 days?",
)


@dg.schedule(
    job=backup_job, cron_schedule="0 3 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 03:00 UTC, after the 02:00 PII purge: what it purged is not in the new backup.",
)
def backup_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"backup:{context.scheduled_execution_time:%Y-%m-%d}")


@dg.schedule(
    job=restore_check_job, cron_schedule="0 5 1 1,4,7,10 *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Quarterly restore test (privacy policy §6), the first day of each quarter at 05:00 UTC.",
)
def restore_check_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"restore_check:{context.scheduled_execution_time:%Y-%m-%d}")


@dg.schedule(
    job=backup_health_job, cron_schedule="15 * * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: fail the backup check when backups or restore tests are overdue.",
)
def backup_health_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"backup_health:{context.scheduled_execution_time:%Y-%m-%dT%H}")
