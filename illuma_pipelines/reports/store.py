"""Where rendered reports are kept, and their delivery: each report period is sent once.

Files live under `<data dir>/reports/<merchant>/<period>/` and are listed in platform.reports
(name, sha256 and size per file, when rendered, when delivered). `deliver_report` sends a report
to the merchant's report e-mail (registry: platform.report_recipients) through a `Delivery`, and
records every attempt in platform.report_deliveries, keyed by merchant, kind and period: an
attempt is claimed (`sending`) in its own transaction before the provider is called, so a re-run
of the same period, or a second run racing it, sends nothing twice. A forced re-send
(`illuma reports resend`) is a new attempt and is audited. An address the provider reports
inactive (Postmark 406) goes to platform.report_suppressions and is not sent to again until it is
set again (`illuma merchants set-report-email`).

The reports, their rows and the merchant's outbox folder are the merchant's data: an account's
erasure removes them (`report_paths`, `forget_reports`).

Plain domain code: no Dagster import.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from illuma_pipelines.merchant_ids import validate_merchant_id
from illuma_pipelines.paths import data_dir, var_dir
from illuma_pipelines.registry import record_audit, report_email
from illuma_pipelines.reports.delivery import (
    FAILED,
    SENT,
    SUPPRESSED,
    Delivery,
    DeliveryError,
    DeliveryResult,
    ReportMessage,
)
from illuma_pipelines.warehouse import (
    PLATFORM_SCHEMA,
    PLATFORM_TABLES,
    Connection,
    TableSpec,
    Warehouse,
)

REPORT_KINDS = ("monthly", "settlement", "privacy")
# A period names a folder: "2026-03", "2026-Q1", a settlement's "amazon-1234567890". It starts with
# a letter or digit, so it is never "." or "..", and has no separator.
PERIOD_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
SENDING = "sending"
# A claim older than this belongs to a run that died before the provider answered: a new attempt
# may go (the old one may or may not have reached the recipient).
STALE_CLAIM = timedelta(minutes=30)
RESENT_ACTION = "report.resent"
_HASH_CHUNK = 1 << 20


class ReportStoreError(ValueError):
    """A report request that cannot be carried out as asked (unknown kind, missing files...)."""


class DeliveryInProgress(DeliveryError):
    """Another run is sending the same report period right now."""


def _platform_table(name: str) -> TableSpec:
    # The platform tables are provisioned (and granted, on PostgreSQL) from one list.
    for spec in PLATFORM_TABLES:
        if spec.name == name:
            return spec
    raise LookupError(f"platform table {name!r} is missing from illuma_pipelines.warehouse.PLATFORM_TABLES")


REPORTS = _platform_table("reports")
REPORT_DELIVERIES = _platform_table("report_deliveries")
REPORT_SUPPRESSIONS = _platform_table("report_suppressions")
REPORT_TABLES = ("reports", "report_deliveries", "report_suppressions", "report_recipients")


def validate_kind(kind: str) -> str:
    if kind not in REPORT_KINDS:
        raise ReportStoreError(f"unknown report kind {kind!r}: choose one of {', '.join(REPORT_KINDS)}")
    return kind


def validate_period(period: str) -> str:
    if not isinstance(period, str) or not PERIOD_PATTERN.fullmatch(period):
        raise ReportStoreError(
            f"invalid report period {period!r}: letters, digits, '-', '_' and '.', starting with a "
            "letter or digit (e.g. 2026-03, 2026-Q1, amazon-1234567890)"
        )
    return period


def reports_root() -> Path:
    """`<data dir>/reports`: every merchant's reports (a folder per merchant)."""
    return data_dir() / "reports"


def reports_dir(merchant_id: str, period: str) -> Path:
    """The folder of one merchant's reports of one period (not created here)."""
    return reports_root() / validate_merchant_id(merchant_id) / validate_period(period)


def default_outbox_dir() -> Path:
    """`<var dir>/outbox`: where the local delivery writes its `.eml` files."""
    return var_dir() / "outbox"


@dataclass(frozen=True)
class ReportFile:
    name: str
    sha256: str
    bytes: int

    @classmethod
    def of(cls, path: Path) -> ReportFile:
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return cls(path.name, digest.hexdigest(), size)

    def as_dict(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class StoredReport:
    """A row of platform.reports."""

    merchant_id: str
    kind: str
    period: str
    files: tuple[ReportFile, ...]
    rendered_at: datetime
    delivered_at: datetime | None

    def paths(self) -> list[Path]:
        folder = reports_dir(self.merchant_id, self.period)
        return [folder / f.name for f in self.files]


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _json(value: object) -> object:
    # DuckDB hands JSON back as text, psycopg decodes JSONB.
    return json.loads(value) if isinstance(value, str) else value


def _own_files(merchant_id: str, period: str, files: Iterable[Path | str]) -> list[Path]:
    folder = reports_dir(merchant_id, period).resolve()
    paths = [Path(f) for f in files]
    for path in paths:
        if path.resolve().parent != folder:
            raise ReportStoreError(
                f"{path} is not in {folder}: a report's files are written to its period's folder "
                "(store.reports_dir) so that they are listed, linked and erased with the merchant"
            )
        if not path.is_file():
            raise ReportStoreError(f"report file {path} does not exist: render the report first")
    return paths


def record_report(
    warehouse: Warehouse,
    merchant_id: str,
    kind: str,
    period: str,
    files: Iterable[Path | str],
    *,
    at: datetime | None = None,
) -> None:
    """List a rendered report in platform.reports: each file's name, sha256 and size, and when it
    was rendered. Rendering the same period again replaces the list; when it was last delivered
    is kept (platform.report_deliveries says what was sent when)."""
    validate_kind(kind)
    entries = [ReportFile.of(p).as_dict() for p in _own_files(merchant_id, period, files)]
    with warehouse.connect() as conn:
        row = conn.fetchone(
            f"SELECT delivered_at FROM {PLATFORM_SCHEMA}.reports WHERE merchant_id = ? AND kind = ? AND period = ?",
            [merchant_id, kind, period],
        )
        conn.execute(
            f"DELETE FROM {PLATFORM_SCHEMA}.reports WHERE merchant_id = ? AND kind = ? AND period = ?",
            [merchant_id, kind, period],
        )
        conn.execute(
            f"INSERT INTO {PLATFORM_SCHEMA}.reports (merchant_id, kind, period, files, rendered_at, delivered_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [merchant_id, kind, period, json.dumps(entries), at or datetime.now(UTC), row[0] if row else None],
        )


def get_report(warehouse: Warehouse, merchant_id: str, kind: str, period: str) -> StoredReport | None:
    """The merchant's recorded report of `kind` and `period`, if any."""
    validate_merchant_id(merchant_id)
    validate_kind(kind)
    validate_period(period)
    with warehouse.connect() as conn:
        row = conn.fetchone(
            f"SELECT files, rendered_at, delivered_at FROM {PLATFORM_SCHEMA}.reports "
            "WHERE merchant_id = ? AND kind = ? AND period = ?",
            [merchant_id, kind, period],
        )
    if row is None:
        return None
    files = tuple(ReportFile(f["name"], f["sha256"], int(f["bytes"])) for f in _json(row[0]))
    return StoredReport(merchant_id, kind, period, files, _utc(row[1]), _utc(row[2]))


@dataclass(frozen=True)
class DeliveryAttempt:
    """A row of platform.report_deliveries."""

    merchant_id: str
    kind: str
    period: str
    attempt: int
    recipient: str
    provider: str
    message_id: str | None
    status: str
    error: str | None
    started_at: datetime
    sent_at: datetime | None
    forced: bool

    def result(self, *, already_delivered: bool = False) -> DeliveryResult:
        return DeliveryResult(
            self.status, message_id=self.message_id, error=self.error, already_delivered=already_delivered
        )


_ATTEMPT_COLUMNS = (
    "merchant_id, kind, period, attempt, recipient, provider, message_id, status, error, started_at, sent_at, forced"
)


def _attempt(row: tuple) -> DeliveryAttempt:
    values = list(row)
    values[9], values[10], values[11] = _utc(values[9]), _utc(values[10]), bool(values[11])
    return DeliveryAttempt(*values)


def delivery_attempts(warehouse: Warehouse, merchant_id: str, kind: str | None = None, period: str | None = None) -> list[DeliveryAttempt]:
    """The merchant's delivery attempts (optionally of one kind and period), oldest first."""
    validate_merchant_id(merchant_id)
    where, params = "merchant_id = ?", [merchant_id]
    for column, value in (("kind", kind), ("period", period)):
        if value is not None:
            where += f" AND {column} = ?"
            params.append(value)
    with warehouse.connect() as conn:
        rows = conn.fetchall(
            f"SELECT {_ATTEMPT_COLUMNS} FROM {PLATFORM_SCHEMA}.report_deliveries WHERE {where} "
            "ORDER BY kind, period, attempt",
            params,
        )
    return [_attempt(r) for r in rows]


def is_suppressed(conn: Connection, recipient: str) -> bool:
    return conn.fetchone(
        f"SELECT 1 FROM {PLATFORM_SCHEMA}.report_suppressions WHERE recipient = ?", [recipient]
    ) is not None


def _insert_attempt(conn: Connection, attempt: DeliveryAttempt) -> bool:
    """Insert the attempt unless its number is taken (another run claimed it first)."""
    rows = conn.fetchall(
        f"INSERT INTO {PLATFORM_SCHEMA}.report_deliveries ({_ATTEMPT_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING attempt",
        [
            attempt.merchant_id, attempt.kind, attempt.period, attempt.attempt, attempt.recipient,
            attempt.provider, attempt.message_id, attempt.status, attempt.error, attempt.started_at,
            attempt.sent_at, attempt.forced,
        ],
    )
    return bool(rows)


def _audit_forced(conn: Connection, attempt: DeliveryAttempt, actor: str, at: datetime) -> None:
    record_audit(
        conn,
        actor=actor,
        action=RESENT_ACTION,
        merchant_id=attempt.merchant_id,
        details={
            "kind": attempt.kind,
            "period": attempt.period,
            "attempt": attempt.attempt,
            "provider": attempt.provider,
            "status": attempt.status,
            "message_id": attempt.message_id,
            "recipient_domain": attempt.recipient.partition("@")[2],
        },
        at=at,
    )


def deliver_report(
    warehouse: Warehouse,
    delivery: Delivery | Callable[[], Delivery],
    merchant_id: str,
    kind: str,
    period: str,
    files: Iterable[Path | str],
    *,
    subject: str,
    text: str,
    force: bool = False,
    actor: str,
    at: datetime | None = None,
) -> DeliveryResult | None:
    """Send the report's `files` to the merchant's report e-mail, once per (merchant, kind, period).

    `delivery` may be a function that makes it: it is called only when there is someone to send
    to, so a merchant without a report e-mail needs no mail provider (nor its token) at all.

    None when the merchant has no report e-mail (the report stays rendered, unsent). When the
    period was sent before, the earlier result comes back (`already_delivered`) and nothing is
    sent, unless `force`: then it is sent again and the re-send is audited (`actor`). A suppressed
    address is not sent to, forced or not. A `failed` result is recorded and returned (the next
    run tries again); a DeliveryError (e.g. a wrong token) is recorded and raised.
    """
    validate_merchant_id(merchant_id)
    validate_kind(kind)
    validate_period(period)
    paths = _own_files(merchant_id, period, files)
    now = at or datetime.now(UTC)
    with warehouse.connect() as conn:
        recipient = report_email(conn, merchant_id)
        if recipient is None:
            return None
        if not isinstance(delivery, Delivery):
            delivery = delivery()
        rows = [
            _attempt(r)
            for r in conn.fetchall(
                f"SELECT {_ATTEMPT_COLUMNS} FROM {PLATFORM_SCHEMA}.report_deliveries "
                "WHERE merchant_id = ? AND kind = ? AND period = ? ORDER BY attempt",
                [merchant_id, kind, period],
            )
        ]
        latest = rows[-1] if rows else None
        sent = [r for r in rows if r.status == SENT]
        if sent and not force:
            return sent[-1].result(already_delivered=True)
        if latest is not None and latest.status == SENDING:
            if now - latest.started_at < STALE_CLAIM:
                raise DeliveryInProgress(
                    f"the {kind} report {period} of {merchant_id!r} is being sent by another run since "
                    f"{latest.started_at:%Y-%m-%d %H:%M:%S} UTC (attempt {latest.attempt}); wait for it"
                )
            conn.execute(
                f"UPDATE {PLATFORM_SCHEMA}.report_deliveries SET status = ?, error = ? "
                "WHERE merchant_id = ? AND kind = ? AND period = ? AND attempt = ? AND status = ?",
                [
                    FAILED,
                    "abandoned: the run sending it stopped before the provider answered (it may have arrived)",
                    merchant_id, kind, period, latest.attempt, SENDING,
                ],
            )
        attempt = DeliveryAttempt(
            merchant_id, kind, period, (latest.attempt if latest else 0) + 1, recipient,
            delivery.provider, None, SENDING, None, now, None, force,
        )
        if is_suppressed(conn, recipient):
            if not force and latest is not None and latest.status == SUPPRESSED and latest.recipient == recipient:
                return latest.result()
            attempt = replace(
                attempt,
                status=SUPPRESSED,
                error="not sent: the provider reported this address inactive; set the report e-mail "
                "again (illuma merchants set-report-email) once the merchant has fixed it",
            )
            _insert_attempt(conn, attempt)
            if force:
                _audit_forced(conn, attempt, actor, now)
            return attempt.result()
        if not _insert_attempt(conn, attempt):
            raise DeliveryInProgress(
                f"another run claimed attempt {attempt.attempt} of the {kind} report {period} of "
                f"{merchant_id!r} first; it is sending it"
            )

    base = delivery.link_base
    message = ReportMessage(
        to=recipient,
        subject=subject,
        text=text,
        attachments=paths,
        link_base=f"{base.rstrip('/')}/{merchant_id}/{period}/" if base else None,
        merchant_id=merchant_id,
    )
    try:
        result = delivery.send(message)
    except Exception as exc:
        _finish(warehouse, replace(attempt, status=FAILED, error=f"{type(exc).__name__}: {exc}"[:1000]), actor)
        raise
    finished = replace(
        attempt,
        status=result.status,
        message_id=result.message_id,
        error=result.error,
        sent_at=datetime.now(UTC) if result.status == SENT else None,
    )
    _finish(warehouse, finished, actor, error_code=result.error_code)
    return result


def _finish(warehouse: Warehouse, attempt: DeliveryAttempt, actor: str, *, error_code: int | None = None) -> None:
    """Record an attempt's outcome: the row, the report's delivery time, a suppression, the audit."""
    with warehouse.connect() as conn:
        conn.execute(
            f"UPDATE {PLATFORM_SCHEMA}.report_deliveries SET status = ?, message_id = ?, error = ?, sent_at = ? "
            "WHERE merchant_id = ? AND kind = ? AND period = ? AND attempt = ?",
            [
                attempt.status, attempt.message_id, attempt.error, attempt.sent_at,
                attempt.merchant_id, attempt.kind, attempt.period, attempt.attempt,
            ],
        )
        if attempt.status == SENT:
            conn.execute(
                f"UPDATE {PLATFORM_SCHEMA}.reports SET delivered_at = ? WHERE merchant_id = ? AND kind = ? AND period = ?",
                [attempt.sent_at, attempt.merchant_id, attempt.kind, attempt.period],
            )
        elif attempt.status == SUPPRESSED:
            conn.execute(f"DELETE FROM {PLATFORM_SCHEMA}.report_suppressions WHERE recipient = ?", [attempt.recipient])
            conn.execute(
                f"INSERT INTO {PLATFORM_SCHEMA}.report_suppressions "
                "(recipient, merchant_id, provider, error_code, suppressed_at) VALUES (?, ?, ?, ?, ?)",
                [attempt.recipient, attempt.merchant_id, attempt.provider, error_code, datetime.now(UTC)],
            )
        if attempt.forced:
            _audit_forced(conn, attempt, actor, datetime.now(UTC))


_TITLES = {"monthly": "monthly report", "settlement": "settlement report", "privacy": "privacy statement"}


def report_message(merchant_name: str, kind: str, period: str, files: Iterable[Path | str]) -> tuple[str, str]:
    """A plain subject and text for a report's e-mail: the merchant's name, the period and the
    file names (nothing else leaves the platform with it)."""
    title = _TITLES[validate_kind(kind)]
    names = [Path(f).name for f in files]
    subject = f"{merchant_name}: {title} {period}"
    text = (
        f"Hello,\n\nhere is the {title} of {merchant_name} for {period}.\n\n"
        + "".join(f"- {name}\n" for name in names)
        + "\nILLUMA\n"
    )
    return subject, text


def resend_report(
    warehouse: Warehouse,
    delivery: Delivery,
    merchant_id: str,
    kind: str,
    period: str,
    *,
    actor: str,
    merchant_name: str | None = None,
) -> DeliveryResult | None:
    """Send a recorded report again (forced, audited), from its files as recorded: a file that is
    missing or changed since it was recorded stops the re-send (render the report again)."""
    report = get_report(warehouse, merchant_id, kind, period)
    if report is None:
        raise ReportStoreError(f"no {kind} report {period} is recorded for {merchant_id!r}: render it first")
    for recorded, path in zip(report.files, report.paths(), strict=True):
        if not path.is_file():
            raise ReportStoreError(f"{path} of the {kind} report {period} is gone: render the report again")
        if ReportFile.of(path) != recorded:
            raise ReportStoreError(
                f"{path} changed since it was recorded (sha256 or size differs): render the report again "
                "rather than send a file nobody checked"
            )
    subject, text = report_message(merchant_name or merchant_id, kind, period, report.paths())
    return deliver_report(
        warehouse, delivery, merchant_id, kind, period, report.paths(),
        subject=subject, text=text, force=True, actor=actor,
    )


def report_paths(merchant_id: str, outbox_dir: Path | None = None) -> list[Path]:
    """The merchant's report files outside the warehouse that exist: its reports folder and its
    folder in the (local) outbox, for the account's erasure."""
    validate_merchant_id(merchant_id)
    candidates = (reports_root() / merchant_id, (outbox_dir or default_outbox_dir()) / merchant_id)
    return [path for path in candidates if path.exists()]


def forget_reports(conn: Connection, merchant_id: str) -> int:
    """Delete the merchant's rows of the report tables (reports, deliveries, its report e-mail and
    the suppressions of its addresses), for the account's erasure; returns how many."""
    validate_merchant_id(merchant_id)
    return sum(
        conn.execute_count(f"DELETE FROM {PLATFORM_SCHEMA}.{table} WHERE merchant_id = ?", [merchant_id])
        for table in REPORT_TABLES
    )
