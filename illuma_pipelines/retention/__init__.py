"""Retention policy as data, and the pure rule engine purges, erasure and exports use.

No Dagster, no I/O: every function takes its clock (`now`) as an argument. Datetimes must be
timezone-aware (naive ones raise RetentionError); results are UTC. See docs/decisions/0003-retention.md.

The policy (policy.py)
    DEFAULT_POLICY                       one table of Rules, defaults from the privacy policy
    effective_policy(merchant_overrides, base=DEFAULT_POLICY) -> Policy
                                         overrides may shorten a maximum or lengthen a minimum only
    policy_markdown(policy) -> str       the table for docs

Deadlines (engine.py). "Within N days" means due from 00:00 UTC of day(anchor) + N, the deadline
day, not the day before; a minimum is purged from the day after day(anchor) + N, never earlier.
    purge_due_at(rule, anchors) -> datetime | None      None while the anchor event is unknown
    is_due(rule, anchors, now) -> bool
    cutoffs(now, policy=DEFAULT_POLICY) -> dict[rule_id, datetime]
                                         `anchor < cutoff` exactly when due: set-based purges
    pii_due_date(channel, shipped_at, delivered_at=None, *, cancelled_at=None, policy=...)
    erasure_deadline(terminated_at, immediate, *, policy=...) -> datetime
    account_erasure_due(terminated_at, now, immediate, *, policy=...) -> bool
    can_delete_security_log(created_at, now, *, policy=...) -> bool
    can_delete_financial_record(created_at, now, *, policy=...) -> bool
    export_expires_at(created_at, pii_due_dates=(), *, policy=...) -> datetime

Rights requests (requests.py), answered within 30 days (§10)
    request_deadline(received_at) -> datetime
    request_status(received_at, completed_at, now) -> RequestStatus  on_time|due_soon|overdue|done
    DataRequest
"""

from illuma_pipelines.retention.engine import (
    Anchors,
    account_erasure_due,
    anchor_time,
    can_delete_financial_record,
    can_delete_security_log,
    cutoffs,
    erasure_deadline,
    export_expires_at,
    is_due,
    pii_due_date,
    purge_due_at,
    rule_cutoff,
)
from illuma_pipelines.retention.errors import InvalidOverride, RetentionError
from illuma_pipelines.retention.periods import Period
from illuma_pipelines.retention.policy import (
    ALL_CHANNELS,
    CHANNELS,
    DEFAULT_POLICY,
    POLICY_VERSION,
    PRIVACY_POLICY_DATE,
    Action,
    Anchor,
    Category,
    Kind,
    Policy,
    Rule,
    effective_policy,
    policy_markdown,
)
from illuma_pipelines.retention.requests import (
    DUE_SOON_WINDOW,
    REQUEST_RESPONSE_PERIOD,
    DataRequest,
    Requester,
    RequestKind,
    RequestStatus,
    request_deadline,
    request_status,
)

__all__ = [
    "ALL_CHANNELS",
    "CHANNELS",
    "DEFAULT_POLICY",
    "DUE_SOON_WINDOW",
    "POLICY_VERSION",
    "PRIVACY_POLICY_DATE",
    "REQUEST_RESPONSE_PERIOD",
    "Action",
    "Anchor",
    "Anchors",
    "Category",
    "DataRequest",
    "InvalidOverride",
    "Kind",
    "Period",
    "Policy",
    "RequestKind",
    "RequestStatus",
    "Requester",
    "RetentionError",
    "Rule",
    "account_erasure_due",
    "anchor_time",
    "can_delete_financial_record",
    "can_delete_security_log",
    "cutoffs",
    "effective_policy",
    "erasure_deadline",
    "export_expires_at",
    "is_due",
    "pii_due_date",
    "policy_markdown",
    "purge_due_at",
    "request_deadline",
    "request_status",
    "rule_cutoff",
]
