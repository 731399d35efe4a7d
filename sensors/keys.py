"""PII key rotation, daily: the job and its schedule."""


import dagster as dg

from assets.keys import rotated_pii_keys


@dg.job(description="Rotate every merchant's PII data key once it is 90 days old, re-encrypt its "
        "buyer PII to the new key and destroy key versions nothing uses; audited.")
def key_rotation_job() -> None:
    rotated_pii_keys()


@dg.schedule(
    job=key_rotation_job,
    cron_schedule="30 4 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily check: rotate the keys of any merchant whose newest key is 90 days old.",
)
def key_rotation_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"key_rotation:{day}")
