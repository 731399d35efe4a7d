"""One dbt build per merchant once its day (or a backfill of many days) has landed (ADR 0009).

`analytics_refresh_sensor` watches the runs that change a merchant's core data: successful runs of
`merchant_daily_job` and `catalog_import_job`. A merchant with such a run that ended after its
last analytics build started gets one `merchant_analytics_job` run, but only once none of its runs
is queued or in flight: while a backfill's days (or an analytics run) are still going, the
merchant waits, so thirty backfilled days make one build, not thirty. When one of those days is
older than the incremental models' trailing window, the build is a full refresh: an incremental
build would not reach it.

The instance is asked only about what changed: the watched jobs' runs updated since the cursor
(pages in update order), then, per merchant with news, whether a run of it is in flight and when
its analytics were last built. Never the date × merchant key space (ADR 0006).

The cursor holds, per watched job, how far its runs were read and the ids read in the last few
seconds (a run committed a moment late is read again, and recognized), and the merchants waiting
with the newest run seen of each and the oldest day those runs landed: `{"jobs": {job: {"after":
epoch s, "seen": [run id]}}, "pending": {merchant: [run id, end epoch s, oldest day or null]}}`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.analytics import analytics_dbt_models, trailing_days
from assets.partitions import DATE_DIM, MERCHANTS
from illuma_pipelines.dbt_vars import validate_as_of_date
from illuma_pipelines.merchant_ids import InvalidMerchantId, validate_merchant_id
from sensors.catalog import catalog_import_job
from sensors.jobs import merchant_analytics_job, merchant_daily_job
from sensors.merchants import runs_in_flight
from sensors.tags import MERCHANT_PARTITION_TAG, MERCHANT_TAG, PARTITION_TAG

DATE_PARTITION_TAG = f"{PARTITION_TAG}/{DATE_DIM}"  # the day of a date × merchant run

# The jobs whose successful runs change what a merchant's analytics read, and the run tag that
# names the merchant of each (Dagster's partition tags: set on every run, backfills from the UI
# included, where our own MERCHANT_TAG may be missing).
WATCHED_JOBS: Mapping[str, str] = {
    merchant_daily_job.name: MERCHANT_PARTITION_TAG,
    catalog_import_job.name: PARTITION_TAG,
}
# Runs read again at each tick's start: a run's update time is taken before its row commits, so
# one committed a moment after a later one would otherwise fall behind the cursor.
OVERLAP_SECONDS = 5.0
# A sensor with no cursor yet (first start, or reset) reads the last two days: a day's schedule
# and its stragglers. Older days are built by launching merchant_analytics_job by hand.
INITIAL_LOOKBACK_SECONDS = 2 * 86400.0
PAGE_SIZE = 1000
PAGES_PER_TICK = 5  # a long pause is caught up over several ticks, each well within the tick timeout

ANALYTICS_OP = analytics_dbt_models.op.name


def analytics_run_request(
    merchant_id: str, *, as_of_date: str | None = None, full_refresh: bool = False, run_key: str | None = None
) -> dg.RunRequest:
    """The request for one merchant's `merchant_analytics_job` run, tagged like every merchant run
    (the instance runs one run per MERCHANT_TAG value at a time, ADR 0006). `as_of_date` defaults
    to the day the run builds (UTC); `full_refresh` rebuilds the incremental models."""
    validate_merchant_id(merchant_id)
    config: dict[str, object] = {}
    if as_of_date is not None:
        config["as_of_date"] = validate_as_of_date(as_of_date)
    if full_refresh:
        config["full_refresh"] = True
    return dg.RunRequest(
        run_key=run_key,
        partition_key=merchant_id,
        run_config={"ops": {ANALYTICS_OP: {"config": config}}} if config else {},
        tags={MERCHANT_TAG: merchant_id},
    )


def analytics_run_requests(
    merchant_ids: Iterable[str], *, as_of_date: str | None = None, full_refresh: bool = False
) -> list[dg.RunRequest]:
    """One request per merchant, for a caller that runs them itself (the demo's execute path: job
    `merchant_analytics_job`, partition key = the request's, its tags and run config)."""
    return [analytics_run_request(m, as_of_date=as_of_date, full_refresh=full_refresh) for m in merchant_ids]


def build_merchant_analytics(
    definitions: dg.Definitions,
    instance: dg.DagsterInstance,
    merchant_ids: Iterable[str],
    *,
    as_of_date: str | None = None,
    full_refresh: bool = False,
    tags: Mapping[str, str] | None = None,
) -> dict[str, dg.ExecuteInProcessResult]:
    """Build each merchant's analytics in this process, one `merchant_analytics_job` run each,
    in order, with the definitions' resources; a failed run is returned, not raised."""
    job = definitions.resolve_job_def(merchant_analytics_job.name)
    results = {}
    for request in analytics_run_requests(merchant_ids, as_of_date=as_of_date, full_refresh=full_refresh):
        results[request.partition_key] = job.execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            run_config=request.run_config,
            tags={**request.tags, **(tags or {})},
            raise_on_error=False,
        )
    return results


@dataclass
class AnalyticsPlan:
    """One evaluation's outcome: the runs to request, the merchants still waiting (a run of
    theirs in flight), and the cursor to keep."""

    requests: list[dg.RunRequest] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    covered: list[str] = field(default_factory=list)  # new runs, but analytics already built after them
    cursor: str = ""


def _merchant_of(run: dg.DagsterRun) -> str | None:
    key = run.tags.get(WATCHED_JOBS[run.job_name])
    try:
        return validate_merchant_id(key) if key else None
    except InvalidMerchantId:
        return None  # a hand-added partition key: no merchant's analytics to build


def _read_new_runs(
    instance: dg.DagsterInstance,
    job_name: str,
    state: Mapping[str, object],
    now: float,
    page_size: int,
    pages_per_tick: int,
) -> tuple[list[dg.RunRecord], dict[str, object]]:
    """The job's successful runs updated since the cursor's `state`, and the job's next state.

    Two reads: the last OVERLAP_SECONDS before the cursor again (runs committed late; those already
    seen are skipped), then what is newer, in pages of update time, strictly forward, so however
    many runs share those seconds the cursor always advances."""
    after = float(state.get("after", now - INITIAL_LOOKBACK_SECONDS))  # type: ignore[arg-type]
    seen = set(state.get("seen", []))  # type: ignore[arg-type]
    successful = {"job_name": job_name, "statuses": [dg.DagsterRunStatus.SUCCESS]}
    read = list(
        instance.get_run_records(
            dg.RunsFilter(
                **successful,
                updated_after=datetime.fromtimestamp(after - OVERLAP_SECONDS, UTC),
                updated_before=datetime.fromtimestamp(after, UTC) + timedelta(microseconds=1),
            )
        )
    )
    start = after
    for _ in range(pages_per_tick):
        page = instance.get_run_records(
            dg.RunsFilter(**successful, updated_after=datetime.fromtimestamp(start, UTC)),
            limit=page_size,
            order_by="update_timestamp",
            ascending=True,
        )
        read += page
        if len(page) < page_size:
            break
        start = page[-1].update_timestamp.timestamp()
    newest = max([after, *(r.update_timestamp.timestamp() for r in read)])
    fresh = list({r.dagster_run.run_id: r for r in read if r.dagster_run.run_id not in seen}.values())
    next_seen = sorted(
        {r.dagster_run.run_id for r in read if r.update_timestamp.timestamp() > newest - OVERLAP_SECONDS}
    )
    return fresh, {"after": newest, "seen": next_seen}


def _analytics_built_after(instance: dg.DagsterInstance, merchant_id: str, ended: float) -> bool:
    """Whether every analytics model of the merchant was last built by a run that started after
    `ended` (a run that started earlier may not have read what ended then)."""
    starts: dict[str, float | None] = {}
    for key in sorted(analytics_dbt_models.keys, key=lambda k: k.to_user_string()):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[merchant_id]), limit=1
        ).records
        if not records:
            return False
        run_id = records[0].run_id
        if run_id not in starts:
            run = instance.get_run_record_by_id(run_id)
            starts[run_id] = run.start_time if run else None
        start = starts[run_id]
        if start is None or start < ended:
            return False
    return True


def plan_analytics_runs(
    instance: dg.DagsterInstance,
    cursor: str | None,
    now: float | None = None,
    *,
    page_size: int = PAGE_SIZE,
    pages_per_tick: int = PAGES_PER_TICK,
) -> AnalyticsPlan:
    """What `analytics_refresh_sensor` requests given its cursor, with no sensor context needed:
    the demo or a CLI can evaluate it the same way (keeping the cursor on the instance)."""
    now = datetime.now(UTC).timestamp() if now is None else now
    state = json.loads(cursor) if cursor else {}
    jobs_state: dict[str, dict[str, object]] = dict(state.get("jobs", {}))
    pending: dict[str, list] = dict(state.get("pending", {}))
    for job_name in WATCHED_JOBS:
        fresh, jobs_state[job_name] = _read_new_runs(
            instance, job_name, jobs_state.get(job_name, {}), now, page_size, pages_per_tick
        )
        for record in fresh:
            merchant_id = _merchant_of(record.dagster_run)
            if not merchant_id:
                continue
            ended = record.end_time or record.update_timestamp.timestamp()
            day = record.dagster_run.tags.get(DATE_PARTITION_TAG)
            run_id, last, oldest = pending.get(merchant_id, [None, 0.0, None])
            if ended > last:
                run_id, last = record.dagster_run.run_id, ended
            if day and (oldest is None or day < oldest):
                oldest = day
            pending[merchant_id] = [run_id, last, oldest]

    plan = AnalyticsPlan()
    if not pending:
        plan.cursor = json.dumps({"jobs": jobs_state, "pending": {}}, sort_keys=True)
        return plan
    merchants = set(instance.get_dynamic_partitions(MERCHANTS))
    # The first day an incremental build recomputes, for a build as of today (UTC).
    window_start = (datetime.fromtimestamp(now, UTC) - timedelta(days=trailing_days())).date().isoformat()
    still: dict[str, list] = {}
    for merchant_id, (run_id, ended, oldest) in sorted(pending.items()):
        if merchant_id not in merchants:
            continue  # erased meanwhile: nothing to build
        if runs_in_flight(instance, merchant_id):
            still[merchant_id] = [run_id, ended, oldest]  # more days coming, or a build already queued
            plan.waiting.append(merchant_id)
        elif _analytics_built_after(instance, merchant_id, ended):
            plan.covered.append(merchant_id)
        else:
            full_refresh = oldest is not None and oldest < window_start
            plan.requests.append(
                analytics_run_request(
                    merchant_id,
                    full_refresh=full_refresh,
                    run_key=f"merchant_analytics:{merchant_id}:{run_id}{':full' if full_refresh else ''}",
                )
            )
    plan.cursor = json.dumps({"jobs": jobs_state, "pending": still}, sort_keys=True)
    return plan


def _names(merchant_ids: Sequence[str]) -> str:
    return ", ".join(merchant_ids[:10]) + (f" and {len(merchant_ids) - 10} more" if len(merchant_ids) > 10 else "")


@dg.sensor(
    job=merchant_analytics_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests one analytics (dbt) build per merchant once its daily or catalog runs "
    "have succeeded since its last build and none of its runs is queued or in flight (run key: "
    "the merchant and the newest run seen, so a backfill of many days makes one build).",
)
def analytics_refresh_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    plan = plan_analytics_runs(context.instance, context.cursor)
    if plan.waiting:
        context.log.info(f"waiting for runs in flight of {_names(plan.waiting)}")
    if plan.covered:
        context.log.info(f"analytics already built after the new runs of {_names(plan.covered)}")
    if not plan.requests:
        why = f"{len(plan.waiting)} merchant(s) waiting for runs in flight" if plan.waiting else "no new data"
        return dg.SensorResult(skip_reason=f"no analytics build to request: {why}", cursor=plan.cursor)
    context.log.info(f"requesting analytics builds for {_names([r.partition_key for r in plan.requests])}")
    return dg.SensorResult(run_requests=plan.requests, cursor=plan.cursor)
