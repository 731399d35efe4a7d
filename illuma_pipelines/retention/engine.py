"""Deadlines, due checks and SQL cutoffs for the retention rules. Pure: the clock is an argument.

Day semantics (the one definition every function here shares). Periods count whole UTC calendar
days from the UTC day of the anchor event, so a purge that runs once a day can act with one cutoff:

- maximum ("within N"): due from 00:00 UTC on day(anchor) + N, the deadline day, and never the day
  before. That instant is never later than anchor + N exactly, so a daily purge run early on the
  deadline day meets "within N" to within its own start-up latency.
- minimum ("at least N"): due (deletion allowed, and then performed) from 00:00 UTC on the day after
  day(anchor) + N, the first midnight by which a full N has passed for any time of day the anchor
  had. Minima are never acted on a moment early; the cost is at most one extra day of keeping.

`cutoffs(now)` turns that into one timestamp per rule such that `anchor < cutoff` holds exactly when
the rule is due, so purges are single set-based statements, e.g.
`UPDATE orders SET buyer_name = NULL, ... WHERE channel = 'amazon'
AND coalesce(delivered_at, shipped_at) < %(cutoff)s` (coalesce = the fallback anchor).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta

from illuma_pipelines.retention.errors import RetentionError
from illuma_pipelines.retention.periods import add_months, to_utc, utc_day, utc_midnight
from illuma_pipelines.retention.policy import (
    DEFAULT_POLICY,
    Anchor,
    Category,
    Kind,
    Policy,
    Rule,
    check_channel,
)

Anchors = Mapping[Anchor | str, datetime | None]
_ONE_DAY = timedelta(days=1)


def anchor_time(rule: Rule, anchors: Anchors) -> datetime | None:
    """The time the rule counts from: its anchor's, else its fallback's, else None (not yet)."""
    for event in (rule.anchor, rule.fallback_anchor):
        moment = None if event is None else anchors.get(event)
        if moment is not None:
            return to_utc(moment, f"anchors[{str(event)!r}]")
    return None


def _due_day(rule: Rule, anchor_day: date) -> date:
    end = rule.period.add_to(anchor_day)
    return end if rule.kind is Kind.MAXIMUM else end + _ONE_DAY


def purge_due_at(rule: Rule, anchors: Anchors) -> datetime | None:
    """00:00 UTC of the day the rule's action falls due, or None while its anchor event is unknown.

    For a maximum this is the deadline: the data must be gone that day. For a minimum it is the
    earliest moment the data may be (and then is) purged.
    """
    moment = anchor_time(rule, anchors)
    if moment is None:
        return None
    return utc_midnight(_due_day(rule, moment.date()))


def is_due(rule: Rule, anchors: Anchors, now: datetime) -> bool:
    """Whether the rule's action is due at `now` (False while its anchor event is unknown)."""
    due_at = purge_due_at(rule, anchors)
    return due_at is not None and to_utc(now, "now") >= due_at


def _latest_due_anchor_day(rule: Rule, today: date) -> date:
    # _due_day is monotonic in the anchor day, so the due anchors are exactly the days up to a last
    # one. Start from the period's inverse and walk a few days to it: calendar months do not
    # invert exactly (31 March + 1 month = 30 April, and so is 30 March + 1 month).
    period = rule.period
    if period.family == "days":
        guess = date.fromordinal(today.toordinal() - period.magnitude)
    else:
        guess = add_months(today, -period.magnitude)
    while _due_day(rule, guess + _ONE_DAY) <= today:
        guess += _ONE_DAY
    while _due_day(rule, guess) > today:
        guess -= _ONE_DAY
    return guess


def rule_cutoff(rule: Rule, now: datetime) -> datetime:
    """The timestamp with `anchor < cutoff` exactly when `is_due(rule, anchors, now)`."""
    today = utc_day(now, "now")
    return utc_midnight(_latest_due_anchor_day(rule, today) + _ONE_DAY)


def cutoffs(now: datetime, policy: Policy = DEFAULT_POLICY) -> dict[str, datetime]:
    """One cutoff per rule id for a purge at `now`: act on rows whose anchor < cutoff."""
    return {rule.id: rule_cutoff(rule, now) for rule in policy.rules}


def pii_due_date(
    channel: str,
    shipped_at: datetime | None,
    delivered_at: datetime | None = None,
    *,
    cancelled_at: datetime | None = None,
    policy: Policy = DEFAULT_POLICY,
) -> datetime | None:
    """When an order's buyer PII must be gone: the earliest deadline of the channel's PII rules.

    Defaults: Amazon min(delivery + 30 days, shipment + 90 days), shipment + 30 days while the
    delivery is unknown; other channels shipment + 90 days; any channel cancellation + 30 days for
    an order that never shipped. None while the order is neither shipped nor cancelled (its PII is
    still needed to fulfil it).
    """
    check_channel(channel)
    anchors = {
        Anchor.SHIPMENT: shipped_at,
        Anchor.DELIVERY: delivered_at,
        Anchor.CANCELLATION: cancelled_at,
    }
    deadlines = [
        due
        for rule in policy.rules_for(Category.BUYER_PII, channel)
        if (due := purge_due_at(rule, anchors)) is not None
    ]
    return min(deadlines, default=None)


def erasure_deadline(
    terminated_at: datetime, immediate: bool, *, policy: Policy = DEFAULT_POLICY
) -> datetime:
    """By when a terminated account's data must be gone.

    Normally the latest deadline of the maximum rules counted from account termination (30 days by
    default). With `immediate` (the merchant asked for deletion now; pass the time of that request)
    it is due at once: the request's own 30-day deadline (`request_deadline`) is the outer limit.
    """
    terminated = to_utc(terminated_at, "terminated_at")
    if immediate:
        return terminated
    deadlines = [
        purge_due_at(rule, {Anchor.ACCOUNT_TERMINATION: terminated})
        for rule in policy.rules
        if rule.anchor is Anchor.ACCOUNT_TERMINATION and rule.kind is Kind.MAXIMUM
    ]
    if not deadlines:
        raise RetentionError(
            f"policy {policy.version} has no maximum rule counted from account termination: "
            f"restore the merchant_account rule"
        )
    return max(d for d in deadlines if d is not None)


def account_erasure_due(
    terminated_at: datetime, now: datetime, immediate: bool, *, policy: Policy = DEFAULT_POLICY
) -> bool:
    return to_utc(now, "now") >= erasure_deadline(terminated_at, immediate, policy=policy)


def _minimum_passed(rule_id: str, created_at: datetime, now: datetime, policy: Policy) -> bool:
    return is_due(policy.rule(rule_id), {Anchor.CREATED: created_at}, now)


def can_delete_security_log(
    created_at: datetime, now: datetime, *, policy: Policy = DEFAULT_POLICY
) -> bool:
    """False until the security-log minimum (12 months by default) has fully passed."""
    return _minimum_passed("security_logs", created_at, now, policy)


def can_delete_financial_record(
    created_at: datetime, now: datetime, *, policy: Policy = DEFAULT_POLICY
) -> bool:
    """False until the financial-records minimum (7 years by default) has fully passed."""
    return _minimum_passed("financial_records", created_at, now, policy)


def export_expires_at(
    created_at: datetime,
    pii_due_dates: Iterable[datetime | None] = (),
    *,
    policy: Policy = DEFAULT_POLICY,
) -> datetime:
    """When an export file must be deleted: the exports rule, or earlier if PII in it is due first.

    An export is a copy: without the cap, PII exported 25 days after an Amazon delivery would
    outlive Amazon's 30-day limit. Pass `pii_due_date(...)` of every order whose PII it holds.
    """
    created_day = utc_day(created_at, "created_at")
    expiry = utc_midnight(_due_day(policy.rule("exports"), created_day))
    due = [to_utc(d, "pii_due_dates[...]") for d in pii_due_dates if d is not None]
    return min([expiry, *due])
