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


def _keyed_schedule(name: str, job, cron: str, description: str, key: str) -> dg.ScheduleDefinition:
    """A schedule of one run per tick, keyed by `name`'s prefix and the tick's time as `key` formats it."""
    prefix = name.removesuffix("_schedule")

    @dg.schedule(
        name=name, job=job, cron_schedule=cron, execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING, description=description,
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_key=f"{prefix}:{context.scheduled_execution_time:{key}}")

    return _schedule


backup_schedule = _keyed_schedule(
    "backup_schedule", backup_job, "0 3 * * *",
    "Daily at 03:00 UTC, after the 02:00 PII purge: what it purged is not in the new backup.", "%Y-%m-%d",
)
restore_check_schedule = _keyed_schedule(
    "restore_check_schedule", restore_check_job, "0 5 1 1,4,7,10 *",
    "Quarterly restore test (privacy policy §6), the first day of each quarter at 05:00 UTC.", "%Y-%m-%d",
)
backup_health_schedule = _keyed_schedule(
    "backup_health_schedule", backup_health_job, "15 * * * *",
    "Hourly: fail the backup check when backups or restore tests are overdue.", "%Y-%m-%dT%H",
)
