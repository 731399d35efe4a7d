"""The retention policy table and its rule engine: boundaries per rule, overrides, rights requests."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from illuma_pipelines.retention import (
    CHANNELS,
    DEFAULT_POLICY,
    Anchor,
    Category,
    DataRequest,
    InvalidOverride,
    Kind,
    Period,
    Policy,
    RequestStatus,
    RetentionError,
    account_erasure_due,
    can_delete_financial_record,
    can_delete_security_log,
    cutoffs,
    effective_policy,
    erasure_deadline,
    export_expires_at,
    is_due,
    pii_due_date,
    policy_markdown,
    purge_due_at,
    request_deadline,
    request_status,
    rule_cutoff,
)
from illuma_pipelines.retention.periods import add_months

ADR = Path(__file__).resolve().parents[1] / "docs" / "decisions" / "0003-retention.md"
SECOND = timedelta(seconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# The policy table written out by hand, from the privacy policy, for an anchor at 13:45 UTC on
# 31 January 2026 (a month end, so calendar months clamp): rule -> (kind, the day it falls due).
# A maximum is due on day(anchor) + N; a minimum on the day after day(anchor) + N.
ANCHOR = utc(2026, 1, 31, 13, 45)
EXPECTED_DUE_DAY = {
    "buyer_pii_amazon_delivery": (Kind.MAXIMUM, date(2026, 3, 2)),  # 30 days
    "buyer_pii_shipment": (Kind.MAXIMUM, date(2026, 5, 1)),  # 90 days
    "buyer_pii_cancelled": (Kind.MAXIMUM, date(2026, 3, 2)),  # 30 days
    "raw_pii_amazon_delivery": (Kind.MAXIMUM, date(2026, 3, 2)),
    "raw_pii_shipment": (Kind.MAXIMUM, date(2026, 5, 1)),
    "raw_pii_cancelled": (Kind.MAXIMUM, date(2026, 3, 2)),
    "raw_pii_unmatched": (Kind.MAXIMUM, date(2026, 3, 2)),  # extraction + 30 days
    "order_data": (Kind.MAXIMUM, date(2026, 3, 2)),  # termination + 30 days
    "catalog_data": (Kind.MAXIMUM, date(2026, 3, 2)),
    "financial_reports": (Kind.MAXIMUM, date(2026, 3, 2)),
    "merchant_account": (Kind.MAXIMUM, date(2026, 3, 2)),
    "merchant_schema": (Kind.MAXIMUM, date(2026, 3, 2)),
    "merchant_keys": (Kind.MAXIMUM, date(2026, 3, 2)),
    "security_logs": (Kind.MINIMUM, date(2027, 2, 1)),  # kept through 31 Jan 2027
    "financial_records": (Kind.MINIMUM, date(2033, 2, 1)),  # kept through 31 Jan 2033
    "exports": (Kind.MAXIMUM, date(2026, 2, 7)),  # 7 days
    "backups_daily": (Kind.MAXIMUM, date(2026, 2, 7)),  # 7 days (ADR 0013)
    "backups": (Kind.MAXIMUM, date(2026, 5, 1)),  # 90 days
}


def test_every_rule_has_a_boundary_row() -> None:
    assert [r.id for r in DEFAULT_POLICY] == list(EXPECTED_DUE_DAY)


@pytest.mark.parametrize("rule", DEFAULT_POLICY.rules, ids=lambda r: r.id)
def test_rule_boundary(rule) -> None:
    kind, due_day = EXPECTED_DUE_DAY[rule.id]
    assert rule.kind is kind
    anchors = {rule.anchor: ANCHOR}
    due_at = datetime.combine(due_day, time.min, tzinfo=UTC)
    assert purge_due_at(rule, anchors) == due_at
    day_before_last_second = due_at - SECOND
    assert not is_due(rule, anchors, due_at - timedelta(days=1))
    assert not is_due(rule, anchors, day_before_last_second)
    assert is_due(rule, anchors, due_at)
    assert is_due(rule, anchors, due_at + timedelta(hours=23, minutes=59))
    # The SQL cutoff agrees with the per-row answer on both sides of the boundary.
    assert not ANCHOR < rule_cutoff(rule, day_before_last_second)
    assert ANCHOR < rule_cutoff(rule, due_at)


@pytest.mark.parametrize("rule", DEFAULT_POLICY.rules, ids=lambda r: r.id)
def test_nothing_is_due_before_its_anchor_event(rule) -> None:
    assert purge_due_at(rule, {}) is None
    assert not is_due(rule, {rule.anchor: None}, utc(2100, 1, 1))


def test_maximum_due_day_never_exceeds_the_exact_period() -> None:
    # An anchor at 00:00 is the tightest case: due at exactly anchor + 90 days, not a moment later.
    rule = DEFAULT_POLICY.rule("buyer_pii_shipment")
    midnight = utc(2026, 6, 1)
    assert purge_due_at(rule, {Anchor.SHIPMENT: midnight}) == midnight + timedelta(days=90)


def test_anchor_days_are_utc_days() -> None:
    # 20:00 in UTC-8 on 1 March is 04:00 UTC on 2 March: the period counts from 2 March.
    pacific = timezone(timedelta(hours=-8))
    rule = DEFAULT_POLICY.rule("buyer_pii_shipment")
    due = purge_due_at(rule, {Anchor.SHIPMENT: datetime(2026, 3, 1, 20, tzinfo=pacific)})
    assert due == utc(2026, 5, 31)


def test_naive_datetimes_are_refused() -> None:
    rule = DEFAULT_POLICY.rule("buyer_pii_shipment")
    with pytest.raises(RetentionError, match="naive datetime"):
        purge_due_at(rule, {Anchor.SHIPMENT: datetime(2026, 3, 1)})
    with pytest.raises(RetentionError, match="now is a naive"):
        is_due(rule, {Anchor.SHIPMENT: utc(2026, 3, 1)}, datetime(2026, 9, 1))


# --- buyer PII: Amazon's stricter rule ------------------------------------------------------


def test_amazon_pii_is_due_30_days_after_delivery() -> None:
    shipped, delivered = utc(2026, 3, 1, 10), utc(2026, 3, 5, 18)
    assert pii_due_date("amazon", shipped, delivered) == utc(2026, 4, 4)


@pytest.mark.parametrize("channel", ["ebay", "walmart"])
def test_other_channels_pii_is_due_90_days_after_shipment(channel: str) -> None:
    shipped, delivered = utc(2026, 3, 1, 10), utc(2026, 3, 5, 18)
    assert pii_due_date(channel, shipped, delivered) == utc(2026, 5, 30)
    assert pii_due_date(channel, shipped, None) == utc(2026, 5, 30)


def test_amazon_pii_without_delivery_is_due_30_days_after_shipment() -> None:
    assert pii_due_date("amazon", utc(2026, 3, 1, 10), None) == utc(2026, 3, 31)


def test_amazon_pii_never_outlives_90_days_after_shipment() -> None:
    # Delivered 73 days after shipment: shipment + 90 days comes before delivery + 30 days.
    assert pii_due_date("amazon", utc(2026, 1, 1), utc(2026, 3, 15)) == utc(2026, 4, 1)


def test_pii_of_an_order_that_never_shipped() -> None:
    assert pii_due_date("ebay", None, cancelled_at=utc(2026, 2, 1, 9)) == utc(2026, 3, 3)
    assert pii_due_date("amazon", None, None) is None  # still open: needed to fulfil it


def test_pii_channel_names_are_checked() -> None:
    with pytest.raises(RetentionError, match="unknown channel 'Amazon'"):
        pii_due_date("Amazon", utc(2026, 3, 1), None)


def test_channels_match_the_registry() -> None:
    from illuma_pipelines.registry import CHANNELS as REGISTRY_CHANNELS

    assert CHANNELS == REGISTRY_CHANNELS


def test_raw_payload_rules_follow_the_buyer_pii_rules() -> None:
    pii = DEFAULT_POLICY.rules_for(Category.BUYER_PII)
    raw = [r for r in DEFAULT_POLICY.rules_for(Category.RAW_PAYLOAD_PII) if r.follows]
    assert sorted(r.follows for r in raw) == sorted(r.id for r in pii)
    for rule in raw:
        assert rule.timing() == DEFAULT_POLICY.rule(rule.follows).timing()


def test_raw_pii_no_order_dates_gets_the_shortest_pii_period() -> None:
    # A raw record no order dates (a reject, a finance row) has no shipment to count from: it
    # gets the shortest PII period of any channel, counted from its extraction.
    unmatched = DEFAULT_POLICY.rule("raw_pii_unmatched")
    shortest = min(r.period.magnitude for r in DEFAULT_POLICY.rules_for(Category.BUYER_PII))
    assert unmatched.follows is None and unmatched.kind is Kind.MAXIMUM
    assert unmatched.anchor == "extraction" and unmatched.period.magnitude == shortest


# --- account termination and erasure -------------------------------------------------------


def test_account_erasure_within_30_days_of_termination() -> None:
    terminated = utc(2026, 5, 10, 16)
    assert erasure_deadline(terminated, immediate=False) == utc(2026, 6, 9)
    assert not account_erasure_due(terminated, utc(2026, 6, 8, 23, 59, 59), immediate=False)
    assert account_erasure_due(terminated, utc(2026, 6, 9), immediate=False)


def test_immediate_erasure_is_due_at_once() -> None:
    requested = utc(2026, 5, 10, 16)
    assert erasure_deadline(requested, immediate=True) == requested
    assert not account_erasure_due(requested, requested - SECOND, immediate=True)
    assert account_erasure_due(requested, requested, immediate=True)


def test_erasure_waits_for_the_latest_termination_rule() -> None:
    terminated = utc(2026, 5, 10, 16)
    one_shortened = effective_policy({"order_data": "10d"})
    assert erasure_deadline(terminated, False, policy=one_shortened) == utc(2026, 6, 9)
    all_shortened = effective_policy(
        {
            r.id: "10d"
            for r in DEFAULT_POLICY
            if r.anchor is Anchor.ACCOUNT_TERMINATION and r.follows is None
        }
    )
    assert erasure_deadline(terminated, False, policy=all_shortened) == utc(2026, 5, 20)


# --- legal minima ---------------------------------------------------------------------------


def test_security_logs_younger_than_12_months_are_never_deletable() -> None:
    created = utc(2026, 3, 4, 10)
    for age_days in (0, 1, 180, 364):
        assert not can_delete_security_log(created, created + timedelta(days=age_days))
    assert not can_delete_security_log(created, utc(2027, 3, 4, 23, 59, 59))
    assert can_delete_security_log(created, utc(2027, 3, 5))


def test_security_log_minimum_across_a_leap_day() -> None:
    created = utc(2024, 2, 29, 10)
    assert not can_delete_security_log(created, utc(2025, 2, 28, 23, 59, 59))
    assert can_delete_security_log(created, utc(2025, 3, 1))


def test_financial_records_survive_7_years() -> None:
    created = utc(2026, 1, 15, 12)
    assert not can_delete_financial_record(created, utc(2032, 12, 31))
    assert not can_delete_financial_record(created, utc(2033, 1, 15, 23, 59, 59))
    assert can_delete_financial_record(created, utc(2033, 1, 16))


def test_financial_records_period_is_configurable_upwards() -> None:
    longer = effective_policy({"financial_records": "10y"})
    created = utc(2026, 1, 15, 12)
    assert not can_delete_financial_record(created, utc(2036, 1, 15), policy=longer)
    assert can_delete_financial_record(created, utc(2036, 1, 16), policy=longer)


# --- exports --------------------------------------------------------------------------------


def test_exports_expire_after_7_days_or_with_their_pii() -> None:
    created = utc(2026, 3, 1, 9)
    assert export_expires_at(created) == utc(2026, 3, 8)
    amazon_pii = pii_due_date("amazon", utc(2026, 2, 1), utc(2026, 2, 3))  # 5 March
    assert export_expires_at(created, [amazon_pii, None]) == utc(2026, 3, 5)


# --- overrides ------------------------------------------------------------------------------


def test_override_may_shorten_a_maximum_and_carries_to_followers() -> None:
    policy = effective_policy({"buyer_pii_shipment": "60d"})
    assert policy.rule("buyer_pii_shipment").period == Period(60, "days")
    assert policy.rule("raw_pii_shipment").period == Period(60, "days")
    assert policy.overrides == {"buyer_pii_shipment": Period(60, "days")}
    assert policy.fingerprint() != DEFAULT_POLICY.fingerprint()
    assert hash(policy) != hash(DEFAULT_POLICY)
    assert pii_due_date("ebay", utc(2026, 3, 1, 10), policy=policy) == utc(2026, 4, 30)


def test_override_to_zero_acts_on_the_anchor_day() -> None:
    policy = effective_policy({"exports": Period(0, "days")})
    assert export_expires_at(utc(2026, 3, 1, 9), policy=policy) == utc(2026, 3, 1)


def test_override_may_not_lengthen_a_maximum() -> None:
    with pytest.raises(InvalidOverride) as refused:
        effective_policy({"buyer_pii_amazon_delivery": "45d"})
    message = str(refused.value)
    assert "'buyer_pii_amazon_delivery'" in message
    assert "maximum of 30 days" in message and "at most 30 days" in message


def test_override_may_not_shorten_a_legal_minimum() -> None:
    with pytest.raises(InvalidOverride) as refused:
        effective_policy({"security_logs": "6mo"})
    message = str(refused.value)
    assert "'security_logs'" in message
    assert "legal minimum of 12 months" in message and "at least 12 months" in message


def test_override_may_lengthen_a_minimum() -> None:
    policy = effective_policy({"security_logs": "2y"})
    assert policy.rule("security_logs").period == Period(2, "years")


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"buyer_pii": "10d"}, "no retention rule: 'buyer_pii'"),
        ({"raw_pii_shipment": "10d"}, "override 'buyer_pii_shipment' instead"),
        ({"security_logs": "400d"}, "give the override in months or years"),
        ({"backups": "2mo"}, "give the override in days"),
        ({"backups": "ninety days"}, "unreadable retention period"),
        ({"backups": 30}, "must be a Period or a string"),
    ],
)
def test_invalid_overrides_are_refused(overrides: dict, match: str) -> None:
    with pytest.raises(InvalidOverride, match=match):
        effective_policy(overrides)


def test_policy_table_is_checked() -> None:
    rules = DEFAULT_POLICY.rules
    with pytest.raises(RetentionError, match="appears twice"):
        Policy("test", rules + rules[:1])
    bent = replace(DEFAULT_POLICY.rule("raw_pii_shipment"), period=Period(120, "days"))
    with pytest.raises(RetentionError, match="follows 'buyer_pii_shipment' but differs"):
        Policy("test", tuple(bent if r.id == bent.id else r for r in rules))
    with pytest.raises(RetentionError, match="cannot have a fallback anchor"):
        Policy("test", (replace(DEFAULT_POLICY.rule("financial_records"), fallback_anchor=Anchor.SHIPMENT),))


# --- properties -----------------------------------------------------------------------------

instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2200, 12, 31), timezones=st.just(UTC)
)
rules = st.sampled_from(DEFAULT_POLICY.rules)


def _exact_end(anchor: datetime, period: Period) -> datetime:
    if period.family == "days":
        return anchor + timedelta(days=period.magnitude)
    return datetime.combine(add_months(anchor.date(), period.magnitude), anchor.timetz())


@st.composite
def rules_with_any_period(draw: st.DrawFn):
    rule = draw(rules)
    unit = draw(st.sampled_from(["days", "months", "years"]))
    return replace(rule, period=Period(draw(st.integers(0, 400 if unit == "days" else 120)), unit))


@settings(max_examples=400)
@given(rule=rules_with_any_period(), anchor=instants, now=instants)
def test_cutoff_agrees_with_is_due(rule, anchor: datetime, now: datetime) -> None:
    anchors = {rule.anchor: anchor}
    due = purge_due_at(rule, anchors)
    # A random clock rarely lands on the boundary, so check its two sides as well.
    for clock in (now, due - SECOND, due):
        assert is_due(rule, anchors, clock) == (anchor < rule_cutoff(rule, clock))


@given(rule=rules_with_any_period(), anchor=instants)
def test_maxima_never_late_and_minima_never_early(rule, anchor: datetime) -> None:
    due = purge_due_at(rule, {rule.anchor: anchor})
    exact = _exact_end(anchor, rule.period)
    if rule.kind is Kind.MAXIMUM:
        assert exact - timedelta(days=1) < due <= exact
    else:
        assert exact <= due <= exact + timedelta(days=1)


@given(data=st.data(), anchor=instants)
def test_shorter_override_never_later_deadline(data: st.DataObject, anchor: datetime) -> None:
    rule = data.draw(st.sampled_from([r for r in DEFAULT_POLICY if r.follows is None]))
    limit = rule.period
    if rule.kind is Kind.MAXIMUM:
        count = data.draw(st.integers(0, limit.magnitude))
    else:
        count = data.draw(st.integers(limit.magnitude, limit.magnitude * 3))
    unit = "days" if limit.family == "days" else "months"
    policy = effective_policy({rule.id: Period(count, unit)})
    default_due = purge_due_at(rule, {rule.anchor: anchor})
    override_due = purge_due_at(policy.rule(rule.id), {rule.anchor: anchor})
    if rule.kind is Kind.MAXIMUM:
        assert override_due <= default_due
    else:
        assert override_due >= default_due


@given(
    shipped=instants,
    transit=st.none() | st.timedeltas(timedelta(0), timedelta(days=200)),
    channel=st.sampled_from(CHANNELS),
)
def test_pii_deadline_bounds(shipped: datetime, transit: timedelta | None, channel: str) -> None:
    delivered = None if transit is None else shipped + transit
    due = pii_due_date(channel, shipped, delivered)
    assert due <= shipped + timedelta(days=90)
    assert due <= pii_due_date("ebay", shipped, delivered)
    if channel == "amazon":
        assert due <= (delivered or shipped) + timedelta(days=30)


@given(now=instants)
def test_cutoffs_cover_every_rule(now: datetime) -> None:
    found = cutoffs(now)
    assert list(found) == [r.id for r in DEFAULT_POLICY]
    assert all(c.tzinfo is UTC and c.time() == time.min for c in found.values())


# --- rights requests ------------------------------------------------------------------------


def test_request_deadline_is_30_days() -> None:
    assert request_deadline(utc(2026, 1, 1, 12)) == utc(2026, 1, 31, 12)


@pytest.mark.parametrize(
    ("now", "status"),
    [
        (utc(2026, 1, 1, 12), RequestStatus.ON_TIME),
        (utc(2026, 1, 24, 11, 59, 59), RequestStatus.ON_TIME),
        (utc(2026, 1, 24, 12), RequestStatus.DUE_SOON),  # exactly 7 days left
        (utc(2026, 1, 31, 12), RequestStatus.DUE_SOON),  # the deadline itself is still in time
        (utc(2026, 1, 31, 12, 0, 1), RequestStatus.OVERDUE),
    ],
)
def test_open_request_status(now: datetime, status: RequestStatus) -> None:
    assert request_status(utc(2026, 1, 1, 12), None, now) is status


def test_completed_request_status() -> None:
    received, completed = utc(2026, 1, 1, 12), utc(2026, 1, 20)
    assert request_status(received, completed, utc(2026, 2, 15)) is RequestStatus.DONE
    # Seen from before its completion, the request was still open.
    assert request_status(received, completed, utc(2026, 1, 10)) is RequestStatus.ON_TIME
    with pytest.raises(RetentionError, match="before the request was received"):
        request_status(received, None, utc(2025, 12, 31))


def test_data_request_model() -> None:
    request = DataRequest(
        request_id="r1",
        kind="deletion",
        requester="buyer",
        merchant_id="acme_parts",
        subject_ref="amazon:111-2222222-3333333",
        received_at=utc(2026, 1, 1, 12),
        completed_at=utc(2026, 2, 3),
    )
    assert request.deadline == utc(2026, 1, 31, 12)
    assert request.status(utc(2026, 2, 4)) is RequestStatus.DONE
    assert request.completed_on_time() is False
    with pytest.raises(RetentionError, match="unknown kind 'erase'; use one of access"):
        replace(request, kind="erase")
    with pytest.raises(ValueError, match="invalid merchant id"):
        replace(request, merchant_id="Acme Parts")
    with pytest.raises(RetentionError, match="completed_at .* is before received_at"):
        replace(request, completed_at=utc(2025, 12, 1))


def test_retention_imports_no_dagster_or_pandas() -> None:
    code = "import sys, illuma_pipelines.retention; print(sorted({'dagster', 'pandas'} & set(sys.modules)))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


# --- the decision record ----------------------------------------------------------------------


def test_adr_shows_the_policy_table_in_force() -> None:
    assert policy_markdown(DEFAULT_POLICY) in ADR.read_text(encoding="utf-8")
