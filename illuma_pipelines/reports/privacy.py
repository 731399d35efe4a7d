"""The quarterly privacy statement of a merchant: what the platform did with its buyers' data in a
quarter, as a one- or two-page PDF. The privacy policy is the product's promise; this is its receipt.

Everything comes from the platform's own records, never from the merchant's tables:

- PII purged per retention rule: platform.retention_ledger (rows, runs, and the latest deadline
  the purges covered, from each row's cutoff and the merchant's policy);
- data keys: the key store (versions, created, retired and destroyed times, so their ages), and
  the audit log's `pii.keys_rotated` rows (values re-encrypted);
- rights requests: platform.data_requests, each against its 30-day deadline;
- exports: platform.exports;
- accesses to PII: the audit log's reveal rows (`pii.reveal` for people, `pii.pipeline_read` for
  the pipeline's own reads), grouped by purpose; and `pii.encrypted` for the records that arrived.

No buyer PII can reach the statement: it holds counts, dates, rule names, key versions and
purposes only; no actor, order id, path or free text from a payload. Plain domain code: no Dagster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from illuma_pipelines.export import CREATED_ACTION as EXPORT_CREATED_ACTION
from illuma_pipelines.key_rotation import ROTATION_ACTION
from illuma_pipelines.merchant_ids import validate_merchant_id
from illuma_pipelines.registry import merchant_overrides
from illuma_pipelines.retention import (
    REQUEST_RESPONSE_PERIOD,
    Kind,
    Policy,
    RetentionError,
    effective_policy,
    purge_due_at,
    request_status,
)
from illuma_pipelines.sealing import DUE, HOLD
from illuma_pipelines.vault import ROTATION_DAYS, KeyStore, KeyVersion
from illuma_pipelines.warehouse import PLATFORM_SCHEMA, Connection, Warehouse

# The audit actions of PII reads (resources/vault.py writes them through its audit sink) and of PII
# arriving (assets/core.py): both writers live in Dagster modules this domain module must not import.
REVEAL_ACTION = "pii.reveal"
PIPELINE_READ_ACTION = "pii.pipeline_read"
ENCRYPTED_ACTION = "pii.encrypted"
PEOPLE, PIPELINE = "on request", "pipeline"

_QUARTER = re.compile(r"(\d{4})-Q([1-4])")
_DAY = timedelta(days=1)
# A purpose is free text given to the vault (at most 500 characters): cut for the page.
_PURPOSE_CHARS = 60
_REF_CHARS = 8
# Rows per table on a page; the totals above each table always cover every row.
_MAX_TABLE_ROWS = 10
# How the labelled keys' kinds (illuma_pipelines/sealing.py) read to a merchant.
_LABEL_KINDS = {DUE: "due day (one per day data falls due)", HOLD: "holding (due day not known yet)"}


class PrivacyStatementError(ValueError):
    """A quarter or merchant the statement cannot be built for, said with what to pass instead."""


def quarter_bounds(quarter: str) -> tuple[datetime, datetime]:
    """The quarter "YYYY-Qn" as [start, end): 00:00 UTC of its first day and of the next quarter's."""
    found = _QUARTER.fullmatch(quarter) if isinstance(quarter, str) else None
    if not found:
        raise PrivacyStatementError(f"quarter {quarter!r} is not of the form 'YYYY-Qn' (e.g. '2026-Q1')")
    year, number = int(found.group(1)), int(found.group(2))
    start = datetime(year, 3 * number - 2, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC) if number == 4 else datetime(year, 3 * number + 1, 1, tzinfo=UTC)
    return start, end


# ---------------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class RulePurge:
    """What one retention rule removed in the quarter. `latest_deadline_met` is the latest due day
    whose data the purges removed (everything due by that day was gone on `last_purged_at`); None
    for a rule without a deadline (a minimum, or an erasure step)."""

    rule_id: str
    targets: tuple[str, ...]  # tables or stores, without the merchant's schema name
    rows: int
    purges: int  # purge runs that changed something under this rule
    last_purged_at: datetime
    latest_deadline_met: date | None


@dataclass(frozen=True)
class KeyAge:
    """One version of the merchant's general data key that was live during the quarter."""

    version: int
    created_at: datetime
    retired_at: datetime | None  # replaced by a newer version (rotated out) before quarter end
    destroyed_at: datetime | None  # crypto-shredded before quarter end
    age_days: int  # when it was retired, or at the statement's date while still current
    rotated_in: bool  # created in the quarter, replacing an older version

    @property
    def status(self) -> str:
        if self.destroyed_at is not None:
            return "destroyed"
        return "retired" if self.retired_at is not None else "current"


@dataclass(frozen=True)
class LabelledKeys:
    """Keys whose lifetime is their data's (ADR 0007), of one kind ("due", "hold"): how many were
    made and crypto-shredded in the quarter, and how many were live at its end."""

    kind: str
    created: int
    destroyed: int
    live_at_end: int


@dataclass(frozen=True)
class RightsRequest:
    """A rights request open at some time during the quarter, against its 30-day deadline."""

    ref: str  # the request id's first characters
    kind: str
    received_at: datetime
    deadline: datetime
    answered_at: datetime | None  # None while unanswered at the statement's date
    outcome: str | None  # completed, withdrawn, erased, failed

    @property
    def answered_in_days(self) -> float | None:
        if self.answered_at is None:
            return None
        return (self.answered_at - self.received_at).total_seconds() / 86400

    @property
    def on_time(self) -> bool | None:
        return None if self.answered_at is None else self.answered_at <= self.deadline


@dataclass(frozen=True)
class ExportMade:
    ref: str  # the export id's first characters
    created_at: datetime
    expires_at: datetime
    deleted_at: datetime | None  # by the end of the quarter
    rows: int
    pii_values: int  # buyer PII values the archive carried (decrypted for the merchant)


@dataclass(frozen=True)
class PiiAccess:
    """Reads of the merchant's buyer PII for one purpose: events, values read, and attempts the
    vault refused (altered ciphertext, destroyed key)."""

    purpose: str
    by: str  # PEOPLE or PIPELINE
    events: int
    values: int
    refused: int


@dataclass(frozen=True)
class PrivacyStatement:
    merchant_id: str
    merchant_name: str
    quarter: str
    start: datetime
    end: datetime  # exclusive
    as_of: datetime  # the statement's date: the quarter's end, or now for the current quarter
    policy_version: str
    purges: tuple[RulePurge, ...] = ()
    keys: tuple[KeyAge, ...] = ()
    labelled_keys: tuple[LabelledKeys, ...] = ()
    values_reencrypted: int = 0
    requests: tuple[RightsRequest, ...] = ()
    exports: tuple[ExportMade, ...] = ()
    accesses: tuple[PiiAccess, ...] = ()
    pii_records_encrypted: int = 0
    notes: tuple[str, ...] = ()

    @property
    def last_day(self) -> date:
        return (self.end - _DAY).date()

    @property
    def pii_rows_purged(self) -> int:
        return sum(p.rows for p in self.purges)

    @property
    def rotations(self) -> int:
        return sum(1 for k in self.keys if k.rotated_in)

    @property
    def current_key(self) -> KeyAge | None:
        live = [k for k in self.keys if k.status == "current"]
        return max(live, key=lambda k: k.version) if live else None

    @property
    def key_changes(self) -> int:
        """Key versions created, retired or destroyed in the quarter (general and labelled)."""
        general = sum(
            1 for k in self.keys for t in (k.created_at, k.retired_at, k.destroyed_at)
            if t is not None and self.start <= t < self.end
        )
        return general + sum(lk.created + lk.destroyed for lk in self.labelled_keys)

    @property
    def empty(self) -> bool:
        """Nothing happened to the merchant's buyer data in the quarter."""
        return not (
            self.purges or self.key_changes or self.requests or self.exports or self.accesses
            or self.pii_records_encrypted or self.values_reencrypted
        )


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _details(value: Any) -> dict:
    if isinstance(value, Mapping):
        return dict(value)
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _whole(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _table_name(target: str) -> str:
    # Ledger targets name the merchant's schema ("m_<id>.core_buyer_pii"): the table is what counts.
    schema, dot, table = target.partition(".")
    return table if dot and schema.startswith("m_") else target


def _latest_deadline(policy: Policy, rule_id: str, cutoff: datetime | None) -> date | None:
    """The due day of the latest anchor day a purge with this cutoff covered: a rule's cutoff is
    00:00 UTC after the latest due anchor day (retention.rule_cutoff)."""
    if cutoff is None:
        return None
    try:
        rule = policy.rule(rule_id)
    except RetentionError:
        return None
    if rule.kind is not Kind.MAXIMUM:
        return None
    due = purge_due_at(rule, {rule.anchor: cutoff - _DAY})
    return None if due is None else due.date()


def _purges(conn: Connection, merchant_id: str, start: datetime, end: datetime, policy: Policy) -> list[RulePurge]:
    rows = conn.fetchall(
        f"SELECT rule_id, target, rows_affected, cutoff, purged_at, run_id FROM {PLATFORM_SCHEMA}.retention_ledger "
        "WHERE merchant_id = ? AND purged_at >= ? AND purged_at < ? ORDER BY rule_id, purged_at",
        [merchant_id, start, end],
    )
    grouped: dict[str, list] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row)
    out = []
    for rule_id, items in grouped.items():
        deadlines = [d for r in items if (d := _latest_deadline(policy, rule_id, _utc(r[3]))) is not None]
        out.append(
            RulePurge(
                rule_id=rule_id,
                targets=tuple(sorted({_table_name(r[1]) for r in items})),
                rows=sum(int(r[2]) for r in items),
                purges=len({r[5] for r in items}),
                last_purged_at=max(_utc(r[4]) for r in items),
                latest_deadline_met=max(deadlines, default=None),
            )
        )
    return sorted(out, key=lambda p: p.rule_id)


def _general_keys(versions: Sequence[KeyVersion], start: datetime, end: datetime, as_of: datetime) -> list[KeyAge]:
    general = sorted((v for v in versions if v.label is None), key=lambda v: v.version)
    out = []
    for index, kv in enumerate(general):
        created = _utc(kv.created_at)
        # As the quarter's end saw it: a later retirement or destruction has not happened yet.
        retired = _utc(kv.retired_at)
        retired = retired if retired is not None and retired < end else None
        destroyed = _utc(kv.destroyed_at)
        destroyed = destroyed if destroyed is not None and destroyed < end else None
        if created >= end or (destroyed is not None and destroyed < start):
            continue
        stopped = retired or destroyed
        age = ((stopped or as_of) - created).days
        out.append(
            KeyAge(
                version=kv.version,
                created_at=created,
                retired_at=retired,
                destroyed_at=destroyed,
                age_days=max(age, 0),
                rotated_in=index > 0 and start <= created < end,
            )
        )
    return out


def _labelled_keys(versions: Sequence[KeyVersion], start: datetime, end: datetime) -> list[LabelledKeys]:
    kinds: dict[str, list[int]] = {}
    for kv in versions:
        if kv.label is None:
            continue
        kind = kv.label.split(":", 1)[0]
        created, destroyed = _utc(kv.created_at), _utc(kv.destroyed_at)
        counts = kinds.setdefault(kind, [0, 0, 0])
        counts[0] += start <= created < end
        counts[1] += destroyed is not None and start <= destroyed < end
        counts[2] += created < end and (destroyed is None or destroyed >= end)
    return [
        LabelledKeys(kind, created, destroyed, live)
        for kind, (created, destroyed, live) in sorted(kinds.items())
        if created or destroyed or live
    ]


def _outcome(text: str | None) -> str | None:
    # Outcomes read "completed: export <id>", "withdrawn", "erased", "failed: ExportError".
    return None if not text else text.split(":", 1)[0].strip() or None


def _requests(conn: Connection, merchant_id: str, start: datetime, end: datetime) -> list[RightsRequest]:
    rows = conn.fetchall(
        f"SELECT request_id, kind, received_at, deadline, completed_at, outcome FROM {PLATFORM_SCHEMA}.data_requests "
        "WHERE merchant_id = ? AND received_at < ? AND (completed_at IS NULL OR completed_at >= ?) "
        "ORDER BY received_at, request_id",
        [merchant_id, end, start],
    )
    out = []
    for request_id, kind, received, deadline, completed, outcome in rows:
        completed = _utc(completed)
        answered = completed if completed is not None and completed < end else None
        out.append(
            RightsRequest(
                ref=str(request_id)[:_REF_CHARS],
                kind=str(kind),
                received_at=_utc(received),
                deadline=_utc(deadline) or _utc(received) + REQUEST_RESPONSE_PERIOD,
                answered_at=answered,
                outcome=_outcome(outcome) if answered is not None else None,
            )
        )
    return out


def _exports(conn: Connection, merchant_id: str, start: datetime, end: datetime) -> list[ExportMade]:
    rows = conn.fetchall(
        f"SELECT export_id, created_at, expires_at, deleted_at, row_count FROM {PLATFORM_SCHEMA}.exports "
        "WHERE merchant_id = ? AND created_at >= ? AND created_at < ? ORDER BY created_at, export_id",
        [merchant_id, start, end],
    )
    if not rows:
        return []
    # The PII values each archive carried, from its export.created audit row.
    pii: dict[str, int] = {}
    for (details,) in conn.fetchall(
        f"SELECT details FROM {PLATFORM_SCHEMA}.audit_log WHERE merchant_id = ? AND action = ? "
        "AND occurred_at >= ? AND occurred_at < ?",
        [merchant_id, EXPORT_CREATED_ACTION, start, end],
    ):
        d = _details(details)
        pii[str(d.get("export_id"))] = _whole(d.get("pii_values_revealed"))
    out = []
    for export_id, created, expires, deleted, row_count in rows:
        deleted = _utc(deleted)
        out.append(
            ExportMade(
                ref=str(export_id)[:_REF_CHARS],
                created_at=_utc(created),
                expires_at=_utc(expires),
                deleted_at=deleted if deleted is not None and deleted < end else None,
                rows=int(row_count),
                pii_values=pii.get(str(export_id), 0),
            )
        )
    return out


def _purpose(text: object) -> str:
    purpose = " ".join(str(text or "unstated").split())
    return purpose if len(purpose) <= _PURPOSE_CHARS else purpose[: _PURPOSE_CHARS - 1] + "…"


def _audit(conn: Connection, merchant_id: str, start: datetime, end: datetime) -> tuple[list[PiiAccess], int, int]:
    """(accesses by purpose, records encrypted at arrival, values re-encrypted by key rotation)."""
    actions = (REVEAL_ACTION, PIPELINE_READ_ACTION, ENCRYPTED_ACTION, ROTATION_ACTION)
    rows = conn.fetchall(
        f"SELECT action, details FROM {PLATFORM_SCHEMA}.audit_log WHERE merchant_id = ? "
        f"AND action IN ({', '.join('?' for _ in actions)}) AND occurred_at >= ? AND occurred_at < ?",
        [merchant_id, *actions, start, end],
    )
    access: dict[tuple[str, str], list[int]] = {}
    encrypted = reencrypted = 0
    for action, raw in rows:
        d = _details(raw)
        if action == ENCRYPTED_ACTION:
            encrypted += _whole(d.get("rows"))
        elif action == ROTATION_ACTION:
            reencrypted += _whole(d.get("reencrypted_values"))
        else:
            key = (_purpose(d.get("purpose")), PIPELINE if action == PIPELINE_READ_ACTION else PEOPLE)
            counts = access.setdefault(key, [0, 0, 0])
            counts[0] += 1
            if d.get("outcome") == "revealed":
                counts[1] += _whole(d.get("values")) if d.get("batch") else 1
            else:
                counts[2] += 1
    accesses = [
        PiiAccess(purpose, by, events, values, refused)
        for (purpose, by), (events, values, refused) in sorted(access.items(), key=lambda i: (i[0][1], i[0][0]))
    ]
    return accesses, encrypted, reencrypted


def privacy_statement_data(
    warehouse: Warehouse,
    merchant_id: str,
    quarter: str,
    merchant_name: str,
    key_store: KeyStore,
    *,
    as_of: datetime | None = None,
) -> PrivacyStatement:
    """The merchant's privacy statement for `quarter` ("YYYY-Qn"), from the platform's records and
    `key_store` (the vault's store of wrapped data keys: only its dates and versions are read).

    `as_of` (default now) dates a statement of the current quarter: live keys' ages and open
    requests are counted to it; for a past quarter the statement stands at the quarter's end.
    Deadlines are judged under the merchant's retention policy (its overrides as they are now).
    """
    validate_merchant_id(merchant_id)
    start, end = quarter_bounds(quarter)
    now = _utc(as_of) if as_of is not None else datetime.now(UTC)
    stated = min(now, end)
    if stated < start:
        raise PrivacyStatementError(
            f"quarter {quarter} has not begun at {now.isoformat()}: ask for a quarter up to the current one"
        )
    with warehouse.connect() as conn:
        policy = effective_policy(merchant_overrides(conn, merchant_id))
        purges = _purges(conn, merchant_id, start, end, policy)
        requests = _requests(conn, merchant_id, start, end)
        exports = _exports(conn, merchant_id, start, end)
        accesses, encrypted, reencrypted = _audit(conn, merchant_id, start, end)
    versions = key_store.versions(merchant_id)
    keys = _general_keys(versions, start, end, stated)
    notes = []
    current = max((k for k in keys if k.status == "current"), key=lambda k: k.version, default=None)
    if current is not None and current.age_days > ROTATION_DAYS:
        notes.append(
            f"The current key (v{current.version}) is {current.age_days} days old, past the "
            f"{ROTATION_DAYS}-day rotation: it is rotated at the next key rotation run."
        )
    late = [r for r in requests if str(request_status(r.received_at, r.answered_at, max(stated, r.received_at))) == "overdue"]
    if late:
        notes.append(f"{len(late)} rights request(s) passed their 30-day deadline unanswered.")
    return PrivacyStatement(
        merchant_id=merchant_id,
        merchant_name=merchant_name,
        quarter=quarter,
        start=start,
        end=end,
        as_of=stated,
        policy_version=policy.version,
        purges=tuple(purges),
        keys=tuple(keys),
        labelled_keys=tuple(_labelled_keys(versions, start, end)),
        values_reencrypted=reencrypted,
        requests=tuple(requests),
        exports=tuple(exports),
        accesses=tuple(accesses),
        pii_records_encrypted=encrypted,
        notes=tuple(notes),
    )


# ---------------------------------------------------------------------------------- the text


def _count(n: int) -> str:
    return f"{n:,}"


def _day(value: datetime | date | None) -> str:
    if value is None:
        return "—"
    return (value.date() if isinstance(value, datetime) else value).isoformat()


def _request_state(r: RightsRequest, as_of: datetime) -> str:
    if r.answered_at is not None:
        return "on time" if r.on_time else "late"
    return "overdue" if as_of > r.deadline else "open"


def privacy_figures(statement: PrivacyStatement) -> dict[str, str]:
    """Every figure of the statement as the text the PDF shows (for tests and the UI's summary)."""
    s = statement
    figures = {
        "pii_rows_purged": _count(s.pii_rows_purged),
        "pii_records_encrypted": _count(s.pii_records_encrypted),
        "key_rotations": _count(s.rotations),
        "values_reencrypted": _count(s.values_reencrypted),
        "requests": _count(len(s.requests)),
        "requests_answered": _count(sum(1 for r in s.requests if r.answered_at is not None)),
        "requests_on_time": _count(sum(1 for r in s.requests if r.on_time)),
        "exports": _count(len(s.exports)),
        "pii_accesses": _count(sum(a.events for a in s.accesses)),
        "pii_values_read": _count(sum(a.values for a in s.accesses)),
    }
    for p in s.purges:
        figures[f"purge:{p.rule_id}"] = _count(p.rows)
        figures[f"deadline:{p.rule_id}"] = _day(p.latest_deadline_met)
    for k in s.keys:
        figures[f"key:v{k.version}:age_days"] = _count(k.age_days)
        figures[f"key:v{k.version}:status"] = k.status
    for lk in s.labelled_keys:
        figures[f"labelled:{lk.kind}:destroyed"] = _count(lk.destroyed)
    for r in s.requests:
        figures[f"request:{r.ref}:answered"] = _day(r.answered_at)
        figures[f"request:{r.ref}:state"] = _request_state(r, s.as_of)
    for e in s.exports:
        figures[f"export:{e.ref}:rows"] = _count(e.rows)
    for a in s.accesses:
        figures[f"access:{a.by}:{a.purpose}"] = _count(a.values)
    return figures


# ---------------------------------------------------------------------------------- the PDF

_PAGE = (8.27, 11.69)  # A4 portrait, inches
_LEFT, _RIGHT = 0.07, 0.93
_SMALL, _BODY, _HEAD = 7.5, 9, 11
_LINE = 0.019  # one body line, as a fraction of the page height


class _Page:
    """A page filled top down: headings, lines of text and small tables."""

    def __init__(self, figure: Any) -> None:
        self.figure = figure
        self.y = 0.86

    def heading(self, text: str) -> None:
        self.y -= 0.012
        self.figure.text(_LEFT, self.y, text, fontsize=_HEAD, weight="bold", va="top")
        self.y -= _LINE * 1.4

    def line(self, text: str, *, size: float = _BODY, style: str = "normal") -> None:
        self.figure.text(_LEFT, self.y, text, fontsize=size, style=style, va="top")
        self.y -= _LINE * (0.4 + 0.6 * size / _BODY)

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[float]) -> None:
        if not rows:
            return
        shown = list(rows[:_MAX_TABLE_ROWS])
        height = _LINE * 0.95 * (len(shown) + 1)
        ax = self.figure.add_axes([_LEFT, self.y - height, _RIGHT - _LEFT, height])
        ax.axis("off")
        table = ax.table(cellText=shown, colLabels=list(columns), colWidths=list(widths), loc="upper left",
                         cellLoc="left", colLoc="left", bbox=[0, 0, 1, 1])
        table.auto_set_font_size(False)
        table.set_fontsize(_SMALL)
        for (row, _), cell in table.get_celld().items():
            cell.PAD = 0.04  # of the cell's width: the default 0.1 indents wide columns visibly
            cell.set_linewidth(0.3)
            if row == 0:
                cell.set_text_props(weight="bold")
                cell.set_facecolor("#eef1f5")
        self.y -= height + 0.006
        if len(rows) > len(shown):
            self.line(f"… and {len(rows) - len(shown)} more (counted in the totals above)", size=_SMALL, style="italic")
        self.y -= 0.008


def _frame(figure: Any, statement: PrivacyStatement, page: int, pages: int) -> None:
    s = statement
    figure.text(_LEFT, 0.955, f"Privacy statement — {s.merchant_name}", fontsize=15, weight="bold", va="top")
    figure.text(
        _LEFT, 0.922,
        f"{s.quarter} ({s.start.date().isoformat()} to {s.last_day.isoformat()}), as of {s.as_of.date().isoformat()}",
        fontsize=_BODY, va="top",
    )
    figure.text(_LEFT, 0.903, f"Retention policy {s.policy_version}", fontsize=_SMALL, color="#555555", va="top")
    figure.add_artist(_rule(figure, 0.893))
    figure.text(
        _LEFT, 0.03,
        "No buyer personal data appears in this statement: counts, dates, rule names, key versions and purposes only.",
        fontsize=6.5, color="#555555",
    )
    figure.text(_RIGHT, 0.03, f"{s.merchant_name} · {s.quarter} · page {page} of {pages}", fontsize=_SMALL, ha="right")


def _rule(figure: Any, y: float) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([_LEFT, _RIGHT], [y, y], transform=figure.transFigure, linewidth=0.6, color="#999999")


def _summary(page: _Page, s: PrivacyStatement, figures: Mapping[str, str]) -> None:
    page.heading("In this quarter")
    if s.empty:
        page.line(
            f"Nothing was done with your buyers' data in {s.quarter}: no purges, no key changes, no rights requests,"
        )
        page.line("no exports and no accesses to buyer personal data.")
    else:
        page.line(f"Buyer records received and encrypted: {figures['pii_records_encrypted']}")
        page.line(f"Buyer PII rows purged under the retention policy: {figures['pii_rows_purged']}")
        page.line(
            f"Data key rotations: {figures['key_rotations']}; values re-encrypted to the new key: "
            f"{figures['values_reencrypted']}"
        )
        page.line(
            f"Rights requests: {figures['requests']}, answered: {figures['requests_answered']}, "
            f"on time (within 30 days): {figures['requests_on_time']}"
        )
        page.line(f"Exports of your data: {figures['exports']}")
        page.line(
            f"Accesses to buyer PII: {figures['pii_accesses']}, values read: {figures['pii_values_read']}"
        )
    for note in s.notes:
        page.line(note, style="italic")


def _purge_section(page: _Page, s: PrivacyStatement, figures: Mapping[str, str]) -> None:
    page.heading("PII purged, per retention rule")
    if not s.purges:
        page.line("No purge removed anything this quarter.")
        return
    page.line("Latest deadline met: everything due by that day under the rule was gone at the last purge.",
              size=_SMALL)
    page.table(
        ["Rule", "Where", "Rows", "Purges", "Latest deadline met", "Last purge"],
        [
            [p.rule_id, ", ".join(p.targets), figures[f"purge:{p.rule_id}"], _count(p.purges),
             figures[f"deadline:{p.rule_id}"], _day(p.last_purged_at)]
            for p in s.purges
        ],
        [0.25, 0.23, 0.07, 0.08, 0.21, 0.16],
    )


def _key_section(page: _Page, s: PrivacyStatement, figures: Mapping[str, str]) -> None:
    page.heading("Encryption keys")
    page.line(f"Data keys rotate every {ROTATION_DAYS} days; a retired version is destroyed once no value uses it.",
              size=_SMALL)
    if not s.keys:
        page.line("No data key was in use this quarter.")
    page.table(
        ["Version", "Created", "Rotated out", "Destroyed", "Age (days)", "Status"],
        [
            [f"v{k.version}", _day(k.created_at), _day(k.retired_at), _day(k.destroyed_at),
             figures[f"key:v{k.version}:age_days"], figures[f"key:v{k.version}:status"]]
            for k in s.keys
        ],
        [0.12, 0.18, 0.18, 0.18, 0.14, 0.20],
    )
    if s.labelled_keys:
        page.line("Keys that live as long as their data (destroyed on the data's due day):", size=_SMALL)
        page.table(
            ["Kind", "Made", "Destroyed (crypto-shredded)", "Live at quarter end"],
            [
                [_LABEL_KINDS.get(lk.kind, lk.kind), _count(lk.created), figures[f"labelled:{lk.kind}:destroyed"],
                 _count(lk.live_at_end)]
                for lk in s.labelled_keys
            ],
            [0.37, 0.12, 0.29, 0.22],
        )


def _request_section(page: _Page, s: PrivacyStatement, figures: Mapping[str, str]) -> None:
    page.heading("Rights requests (answered within 30 days)")
    if not s.requests:
        page.line("No rights request was open this quarter.")
        return
    page.table(
        ["Request", "Kind", "Received", "Deadline", "Answered", "Days", "Outcome", "State"],
        [
            [r.ref, r.kind, _day(r.received_at), _day(r.deadline), figures[f"request:{r.ref}:answered"],
             "—" if r.answered_in_days is None else f"{r.answered_in_days:.1f}", r.outcome or "—",
             figures[f"request:{r.ref}:state"]]
            for r in s.requests
        ],
        [0.11, 0.17, 0.12, 0.12, 0.12, 0.07, 0.14, 0.15],
    )


def _export_section(page: _Page, s: PrivacyStatement, figures: Mapping[str, str]) -> None:
    page.heading("Exports made")
    if not s.exports:
        page.line("No export of your data was made this quarter.")
        return
    page.table(
        ["Export", "Made", "Rows", "PII values", "Expires", "Deleted"],
        [
            [e.ref, _day(e.created_at), figures[f"export:{e.ref}:rows"], _count(e.pii_values), _day(e.expires_at),
             _day(e.deleted_at)]
            for e in s.exports
        ],
        [0.14, 0.17, 0.14, 0.15, 0.2, 0.2],
    )


def _access_section(page: _Page, s: PrivacyStatement, figures: Mapping[str, str]) -> None:
    page.heading("Accesses to buyer PII, by purpose")
    if not s.accesses:
        page.line("Nobody and nothing read your buyers' personal data this quarter.")
        return
    page.line("Every read goes through the vault and is logged; people read on a stated purpose, the pipeline",
              size=_SMALL)
    page.line("reads to normalize what the marketplaces send.", size=_SMALL)
    page.table(
        ["Purpose", "By", "Accesses", "Values read", "Refused"],
        [
            [a.purpose, a.by, _count(a.events), figures[f"access:{a.by}:{a.purpose}"], _count(a.refused)]
            for a in s.accesses
        ],
        [0.46, 0.14, 0.13, 0.15, 0.12],
    )


def render_privacy_pdf(statement: PrivacyStatement, path: Path | str) -> Path:
    """Write the statement as a PDF (two A4 pages, one when the quarter was empty) and return its
    path. Text is embedded as TrueType, so the figures can be read back from the file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = privacy_figures(statement)
    sections = [[_summary, _purge_section, _key_section]]
    if not statement.empty:
        sections.append([_request_section, _export_section, _access_section])
    else:
        sections[0] += [_request_section, _export_section, _access_section]
    metadata = {
        "Title": f"Privacy statement {statement.quarter}",
        "Subject": f"{statement.merchant_name} {statement.quarter}",
        "Creator": "ILLUMA pipelines",
    }
    with matplotlib.rc_context({"pdf.fonttype": 42, "font.family": "DejaVu Sans"}):
        with PdfPages(path, metadata=metadata) as pdf:
            for number, parts in enumerate(sections, start=1):
                figure = plt.figure(figsize=_PAGE)
                try:
                    _frame(figure, statement, number, len(sections))
                    page = _Page(figure)
                    for part in parts:
                        part(page, statement, figures)
                    pdf.savefig(figure)
                finally:
                    plt.close(figure)
    return path
