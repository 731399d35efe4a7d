"""The retention policy as data: one table of rules, versioned with the code, and overrides.

Every default comes from the privacy policy (shared/spec/privacy-policy.txt, sections 4, 6, 8 and
10) or from Amazon's Data Protection Policy where that is stricter; `source` names the section.
Change a row only with the policy text that justifies it, and bump POLICY_VERSION: purge ledger
rows record `Policy.version` and `Policy.fingerprint()` as proof of which rules were applied.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType

from illuma_pipelines.marketplaces import CHANNELS
from illuma_pipelines.retention.errors import InvalidOverride, RetentionError
from illuma_pipelines.retention.periods import Period

POLICY_VERSION = "2026-12-07.1"
# The privacy policy revision the table implements ("Last Updated" of the policy text).
PRIVACY_POLICY_DATE = "2026-03-04"

ALL_CHANNELS = "all"


class Kind(StrEnum):
    MAXIMUM = "maximum"  # the data must be gone by the end of the period
    MINIMUM = "minimum"  # the data must be kept at least the period; purged once it has passed


class Anchor(StrEnum):
    """The event a period counts from; callers pass its time in the `anchors` mapping."""

    SHIPMENT = "shipment"
    DELIVERY = "delivery"
    CANCELLATION = "cancellation"
    ACCOUNT_TERMINATION = "account_termination"
    CREATED = "created"
    EXTRACTION = "extraction"  # the day a raw record was extracted (its partition date)


class Action(StrEnum):
    REDACT_FIELDS = "redact_fields"  # null the PII columns, keep the row
    REDACT_PAYLOAD_FIELDS = "redact_payload_fields"  # strip PII keys from raw JSON payloads
    DELETE_ROWS = "delete_rows"
    DROP_SCHEMA = "drop_schema"
    DESTROY_KEYS = "destroy_keys"  # crypto-shred: every copy of the ciphertexts becomes unreadable
    DELETE_FILES = "delete_files"
    DELETE_BACKUPS = "delete_backups"


class Category(StrEnum):
    BUYER_PII = "buyer_pii"
    RAW_PAYLOAD_PII = "raw_payload_pii"
    ORDER_DATA = "order_data"
    CATALOG_DATA = "catalog_data"
    FINANCIAL_REPORTS = "financial_reports"
    MERCHANT_ACCOUNT = "merchant_account"
    MERCHANT_DATA = "merchant_data"
    ENCRYPTION_KEYS = "encryption_keys"
    SECURITY_LOGS = "security_logs"
    FINANCIAL_RECORDS = "financial_records"
    EXPORTS = "exports"
    BACKUPS = "backups"


@dataclass(frozen=True)
class Rule:
    """One row of the policy table.

    `applies_to` is a channel or "all". `fallback_anchor` is used only when the anchor event's
    time is unknown, and must be an earlier event so the fallback never lengthens the period.
    A rule that `follows` another stores the same data elsewhere (raw payloads): it always has the
    leader's timing, overrides included, and cannot be overridden on its own.
    """

    id: str
    category: Category
    covers: str
    applies_to: str
    anchor: Anchor
    period: Period
    kind: Kind
    action: Action
    source: str
    fallback_anchor: Anchor | None = None
    follows: str | None = None

    def applies_to_channel(self, channel: str | None) -> bool:
        return self.applies_to == ALL_CHANNELS or self.applies_to == channel

    def timing(self) -> tuple[object, ...]:
        return (self.applies_to, self.anchor, self.fallback_anchor, self.period, self.kind)


@dataclass(frozen=True)
class Policy:
    """The rules in force, and the overrides (rule id -> period) that made them, if any."""

    version: str
    rules: tuple[Rule, ...]
    # Not hashed: a mapping is unhashable, and the rules already carry the overridden periods.
    overrides: Mapping[str, Period] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))
        by_id: dict[str, Rule] = {}
        for rule in self.rules:
            if rule.id in by_id:
                raise RetentionError(f"retention rule id {rule.id!r} appears twice: ids are unique")
            if rule.applies_to != ALL_CHANNELS and rule.applies_to not in CHANNELS:
                raise RetentionError(
                    f"rule {rule.id!r} applies to unknown channel {rule.applies_to!r}: use "
                    f"{ALL_CHANNELS!r} or one of {', '.join(CHANNELS)}"
                )
            if rule.kind is Kind.MINIMUM and rule.fallback_anchor is not None:
                # An earlier fallback anchor shortens the period: harmless for a maximum, a breach
                # of a minimum.
                raise RetentionError(
                    f"rule {rule.id!r} is a minimum and cannot have a fallback anchor"
                )
            by_id[rule.id] = rule
        for rule in self.rules:
            if rule.follows is None:
                continue
            leader = by_id.get(rule.follows)
            if leader is None or leader.follows is not None:
                raise RetentionError(
                    f"rule {rule.id!r} follows {rule.follows!r}, which is not a rule of its own"
                )
            if rule.timing() != leader.timing():
                raise RetentionError(
                    f"rule {rule.id!r} follows {leader.id!r} but differs in channel, anchor, "
                    f"period or kind: copy them from {leader.id!r}"
                )

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise RetentionError(
            f"no retention rule {rule_id!r}; known rules: {', '.join(r.id for r in self.rules)}"
        )

    def rules_for(self, category: Category, channel: str | None = None) -> tuple[Rule, ...]:
        """The rules of a category; with a channel, only those that apply to it."""
        if channel is not None:
            check_channel(channel)
        return tuple(
            r
            for r in self.rules
            if r.category is category and (channel is None or r.applies_to_channel(channel))
        )

    def fingerprint(self) -> str:
        """A short digest of every rule's content: equal fingerprints, equal policies."""
        rows = [
            [
                r.id,
                r.category,
                r.applies_to,
                r.anchor,
                r.fallback_anchor,
                str(r.period),
                r.kind,
                r.action,
                r.follows,
            ]
            for r in self.rules
        ]
        canonical = json.dumps([self.version, rows], separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def check_channel(channel: str) -> str:
    # A typo ("Amazon") would silently skip Amazon's stricter rule, so unknown names are refused.
    if channel not in CHANNELS:
        raise RetentionError(
            f"unknown channel {channel!r}: use one of {', '.join(CHANNELS)} (lowercase); a new "
            f"channel is added in illuma_pipelines/marketplaces.py"
        )
    return channel


_PII_COLUMNS = "buyer name, shipping address, phone and email (vault-encrypted columns)"
_RAW_PII = "the buyer PII fields inside raw marketplace payloads (raw_<channel>_* tables)"
_AMAZON_DPP = "Amazon Data Protection Policy (no longer than 30 days after delivery)"
_TERMINATION = (
    "§8 (active account + 30 days; all merchant data deleted within 30 days of termination)"
)

_DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        id="buyer_pii_amazon_delivery",
        category=Category.BUYER_PII,
        covers=f"Amazon orders: {_PII_COLUMNS}",
        applies_to="amazon",
        anchor=Anchor.DELIVERY,
        fallback_anchor=Anchor.SHIPMENT,
        period=Period(30, "days"),
        kind=Kind.MAXIMUM,
        action=Action.REDACT_FIELDS,
        source=f"§4; {_AMAZON_DPP}",
    ),
    Rule(
        id="buyer_pii_shipment",
        category=Category.BUYER_PII,
        covers=f"every channel's orders: {_PII_COLUMNS}",
        applies_to=ALL_CHANNELS,
        anchor=Anchor.SHIPMENT,
        period=Period(90, "days"),
        kind=Kind.MAXIMUM,
        action=Action.REDACT_FIELDS,
        source="§4, §8 (purged within 90 days of shipment)",
    ),
    Rule(
        id="buyer_pii_cancelled",
        category=Category.BUYER_PII,
        covers=f"orders cancelled before shipment: {_PII_COLUMNS}",
        applies_to=ALL_CHANNELS,
        anchor=Anchor.CANCELLATION,
        period=Period(30, "days"),
        kind=Kind.MAXIMUM,
        action=Action.REDACT_FIELDS,
        source=(
            "§3, §4 (PII used only to fulfil the order); the policy has no row for orders that "
            "never ship, so Amazon's 30 days apply to every channel"
        ),
    ),
    Rule(
        id="raw_pii_amazon_delivery",
        category=Category.RAW_PAYLOAD_PII,
        covers=f"Amazon: {_RAW_PII}",
        applies_to="amazon",
        anchor=Anchor.DELIVERY,
        fallback_anchor=Anchor.SHIPMENT,
        period=Period(30, "days"),
        kind=Kind.MAXIMUM,
        action=Action.REDACT_PAYLOAD_FIELDS,
        source=f"§4; {_AMAZON_DPP}",
        follows="buyer_pii_amazon_delivery",
    ),
    Rule(
        id="raw_pii_shipment",
        category=Category.RAW_PAYLOAD_PII,
        covers=f"every channel: {_RAW_PII}",
        applies_to=ALL_CHANNELS,
        anchor=Anchor.SHIPMENT,
        period=Period(90, "days"),
        kind=Kind.MAXIMUM,
        action=Action.REDACT_PAYLOAD_FIELDS,
        source="§4, §8 (purged within 90 days of shipment)",
        follows="buyer_pii_shipment",
    ),
    Rule(
        id="raw_pii_cancelled",
        category=Category.RAW_PAYLOAD_PII,
        covers=f"orders cancelled before shipment: {_RAW_PII}",
        applies_to=ALL_CHANNELS,
        anchor=Anchor.CANCELLATION,
        period=Period(30, "days"),
        kind=Kind.MAXIMUM,
        action=Action.REDACT_PAYLOAD_FIELDS,
        source="§3, §4 (as buyer_pii_cancelled)",
        follows="buyer_pii_cancelled",
    ),
    Rule(
        id="raw_pii_unmatched",
        category=Category.RAW_PAYLOAD_PII,
        covers=(
            "buyer PII in raw payloads that no normalized order dates: rejected order records, "
            "finance transactions naming the buyer, and quarantine copies"
        ),
        applies_to=ALL_CHANNELS,
        anchor=Anchor.EXTRACTION,
        period=Period(30, "days"),
        kind=Kind.MAXIMUM,
        action=Action.REDACT_PAYLOAD_FIELDS,
        source=(
            "§4; with no shipment or delivery date known, the shortest PII period (Amazon's 30 "
            "days) counts from extraction, see ADR 0003"
        ),
    ),
    Rule(
        id="order_data",
        category=Category.ORDER_DATA,
        covers="orders, order lines, adjustments and their raw extracts",
        applies_to=ALL_CHANNELS,
        anchor=Anchor.ACCOUNT_TERMINATION,
        period=Period(30, "days"),
        kind=Kind.MAXIMUM,
        action=Action.DELETE_ROWS,
        source=f"§4, {_TERMINATION}",
    ),
    Rule(
        id="catalog_data",
        category=Category.CATALOG_DATA,
        covers="products, listings, inventory and pricing history",
        applies_to=ALL_CHANNELS,
        anchor=Anchor.ACCOUNT_TERMINATION,
        period=Period(30, "days"),
        kind=Kind.MAXIMUM,
        action=Action.DELETE_ROWS,
        source=f"§4, {_TERMINATION}",
    ),
    Rule(
        id="financial_reports",
        category=Category.FINANCIAL_REPORTS,
        covers="marketplace settlements, fees and finance transactions, and analytics on them",
        applies_to=ALL_CHANNELS,
        anchor=Anchor.ACCOUNT_TERMINATION,
        period=Period(30, "days"),
        kind=Kind.MAXIMUM,
        action=Action.DELETE_ROWS,
        source=f"§4, {_TERMINATION}",
    ),
    Rule(
        id="merchant_account",
        category=Category.MERCHANT_ACCOUNT,
        covers="the merchant's registry row, contacts and channel connections (platform schema)",
        applies_to=ALL_CHANNELS,
        anchor=Anchor.ACCOUNT_TERMINATION,
        period=Period(30, "days"),
        kind=Kind.MAXIMUM,
        action=Action.DELETE_ROWS,
        source=_TERMINATION,
    ),
    Rule(
        id="merchant_schema",
        category=Category.MERCHANT_DATA,
        covers="everything left in the merchant's schema m_<id>, dbt models included",
        applies_to=ALL_CHANNELS,
        anchor=Anchor.ACCOUNT_TERMINATION,
        period=Period(30, "days"),
        kind=Kind.MAXIMUM,
        action=Action.DROP_SCHEMA,
        source=_TERMINATION,
    ),
    Rule(
        id="merchant_keys",
        category=Category.ENCRYPTION_KEYS,
        covers="the merchant's vault data keys: shreds the PII in backups and exports too",
        applies_to=ALL_CHANNELS,
        anchor=Anchor.ACCOUNT_TERMINATION,
        period=Period(30, "days"),
        kind=Kind.MAXIMUM,
        action=Action.DESTROY_KEYS,
        source=f"{_TERMINATION}; §7; ADR 0002 (crypto-shredding)",
    ),
    Rule(
        id="security_logs",
        category=Category.SECURITY_LOGS,
        covers="security and access logs: platform.audit_log (vault reveals included), retention ledger",
        applies_to=ALL_CHANNELS,
        anchor=Anchor.CREATED,
        period=Period(12, "months"),
        kind=Kind.MINIMUM,
        action=Action.DELETE_ROWS,
        source="§8 (minimum 12 months); §9 (access events logged)",
    ),
    Rule(
        id="financial_records",
        category=Category.FINANCIAL_RECORDS,
        covers="ILLUMA's own billing records of the merchant (subscription invoices, payments)",
        applies_to=ALL_CHANNELS,
        anchor=Anchor.CREATED,
        period=Period(7, "years"),
        kind=Kind.MINIMUM,
        action=Action.DELETE_ROWS,
        source="§8 (as required by tax and accounting law; 7 years until counsel says otherwise)",
    ),
    Rule(
        id="exports",
        category=Category.EXPORTS,
        covers="data export files made for merchants or for rights requests",
        applies_to=ALL_CHANNELS,
        anchor=Anchor.CREATED,
        period=Period(7, "days"),
        kind=Kind.MAXIMUM,
        action=Action.DELETE_FILES,
        source="§10 (exports on demand at any time); ILLUMA choice, see ADR 0003",
    ),
    Rule(
        id="backups_daily",
        category=Category.BACKUPS,
        covers="daily warehouse and key-store backups, except each UTC ISO week's first (the weekly backup)",
        applies_to=ALL_CHANNELS,
        anchor=Anchor.CREATED,
        period=Period(7, "days"),
        kind=Kind.MAXIMUM,
        action=Action.DELETE_BACKUPS,
        source="§6 (automated daily backups; weekly snapshots retained 90 days): a daily backup is kept a week, see ADR 0013",
    ),
    Rule(
        id="backups",
        category=Category.BACKUPS,
        covers="database backups and snapshots, and key-store backups",
        applies_to=ALL_CHANNELS,
        anchor=Anchor.CREATED,
        period=Period(90, "days"),
        kind=Kind.MAXIMUM,
        action=Action.DELETE_BACKUPS,
        source="§6 (snapshots retained 90 days), §8 (backups purged within 90 days)",
    ),
)

DEFAULT_POLICY = Policy(version=POLICY_VERSION, rules=_DEFAULT_RULES)


def effective_policy(
    merchant_overrides: Mapping[str, Period | str] | None = None,
    base: Policy = DEFAULT_POLICY,
) -> Policy:
    """`base` with a merchant's overrides (rule id -> period) applied, after checking each one.

    An override may shorten a maximum (down to 0: act on the anchor day) or lengthen a minimum.
    Lengthening a maximum, shortening a minimum, naming an unknown rule or a rule that follows
    another, or giving days for a period in months (or the reverse) raises InvalidOverride.
    Overrides of a rule carry over to the rules that follow it.
    """
    if not merchant_overrides:
        return base
    periods: dict[str, Period] = {}
    for rule_id, value in merchant_overrides.items():
        rule = _overridable_rule(base, rule_id)
        try:
            period = Period.parse(value)
        except RetentionError as exc:
            raise InvalidOverride(f"override of rule {rule_id!r} refused: {exc}") from exc
        _check_override(rule, period)
        periods[rule_id] = period
    rules = tuple(
        replace(r, period=periods[r.follows or r.id]) if (r.follows or r.id) in periods else r
        for r in base.rules
    )
    return Policy(version=base.version, rules=rules, overrides={**base.overrides, **periods})


def _overridable_rule(base: Policy, rule_id: str) -> Rule:
    for rule in base.rules:
        if rule.id == rule_id:
            if rule.follows is not None:
                raise InvalidOverride(
                    f"rule {rule_id!r} follows {rule.follows!r} and cannot be overridden on its "
                    f"own: override {rule.follows!r} instead"
                )
            return rule
    raise InvalidOverride(
        f"override names no retention rule: {rule_id!r}; overridable rules: "
        f"{', '.join(r.id for r in base.rules if r.follows is None)}"
    )


def _check_override(rule: Rule, period: Period) -> None:
    limit = rule.period
    if period.family != limit.family:
        raise InvalidOverride(
            f"override of rule {rule.id!r} to {period} refused: its period is {limit}; give the "
            f"override in {'days' if limit.family == 'days' else 'months or years'}, as "
            f"'{'days' if period.family == 'days' else 'months'}' do not compare for every date"
        )
    if rule.kind is Kind.MAXIMUM and period.magnitude > limit.magnitude:
        raise InvalidOverride(
            f"override of rule {rule.id!r} to {period} refused: the rule is a maximum of {limit} "
            f"({rule.source}); an override may only shorten it: use at most {limit}"
        )
    if rule.kind is Kind.MINIMUM and period.magnitude < limit.magnitude:
        raise InvalidOverride(
            f"override of rule {rule.id!r} to {period} refused: the rule is a legal minimum of "
            f"{limit} ({rule.source}); an override may only lengthen it: use at least {limit}"
        )


def policy_markdown(policy: Policy = DEFAULT_POLICY) -> str:
    """The policy as a markdown table (ADR 0003 embeds the default one; a test keeps them equal)."""
    lines = [
        "| id | category | applies to | anchor | period | kind | action | covers | source |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in policy.rules:
        anchor = str(r.anchor) + (f" (else {r.fallback_anchor})" if r.fallback_anchor else "")
        rule_id = r.id + (f" (follows {r.follows})" if r.follows else "")
        cells = [
            rule_id,
            r.category,
            r.applies_to,
            anchor,
            r.period,
            r.kind,
            r.action,
            r.covers,
            r.source,
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
