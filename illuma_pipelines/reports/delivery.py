"""Sending reports and alerts by e-mail: Postmark in production, an outbox of `.eml` files locally.

A `Delivery` sends one `ReportMessage` and answers a `DeliveryResult`: `sent` (with the provider's
message id), `suppressed` (the address is inactive at the provider: permanent, never retried) or
`failed` (with the reason). A problem no retry can cure (a wrong Postmark server token) raises
`DeliveryError` instead, so the run fails with a message saying what to fix.

Postmark (https://postmarkapp.com/developer/api/email-api): `POST /email` (and `/email/batch`)
with the `X-Postmark-Server-Token` header; attachments base64-encoded; at most 10 MB per message
*after* encoding, so a message whose files do not fit is sent with links to them instead
(`ReportMessage.link_base`). Every answer's `ErrorCode` is checked: 0 is success, and the batch
endpoint answers HTTP 200 even when some of its messages failed. 429 and 5xx are retried with
capped exponential backoff and full jitter, honouring Retry-After. The token never appears in a
log line, an error or a repr.

The retry loop is this module's own rather than `resources/http.py`'s `ApiSession`: that one
discards the body of a 4xx answer, where Postmark puts the `ErrorCode` that tells an inactive
recipient (406) from a malformed message (300), and it lives in the Dagster resources package.

Plain domain code: no Dagster import (the resource is resources/delivery.py).
"""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import os
import random
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Any

import requests

logger = logging.getLogger(__name__)

SENT, SUPPRESSED, FAILED = "sent", "suppressed", "failed"
DELIVERY_STATUSES = (SENT, SUPPRESSED, FAILED)

POSTMARK_API_URL = "https://api.postmarkapp.com"
DEFAULT_FROM = "ILLUMA Reports <reports@illuma.local>"
# Postmark's limits: 10 MB per message including attachments, measured on the request as sent
# (base64 grows files by a third, so about 7.5 MB of files fit); 500 messages and 50 MB per batch.
POSTMARK_MAX_MESSAGE_BYTES = 10 * 1000 * 1000
POSTMARK_MAX_BATCH_MESSAGES = 500
POSTMARK_MAX_BATCH_BYTES = 50 * 1000 * 1000
# Postmark ErrorCodes this module acts on (https://postmarkapp.com/developer/api/overview#error-codes).
BAD_TOKEN = 10
MAINTENANCE = 100
INACTIVE_RECIPIENT = 406
RATE_LIMITED = 429
# Where the outbox keeps messages that belong to no merchant (alerts to the data team); merchant
# ids start with a letter, so no merchant's folder can have this name.
PLATFORM_FOLDER = "_platform"


class DeliveryError(RuntimeError):
    """A delivery that cannot succeed until someone fixes its configuration (e.g. the token)."""


@dataclass
class ReportMessage:
    """One e-mail: the recipient, the subject, a plain-text body and the files to attach.

    `link_base` is the URL of the folder where the attachments are published: a provider that
    cannot attach them (too large) sends `link_base/<file name>` for each file instead.
    `merchant_id` files the message under the merchant's folder in the outbox (so an erasure
    finds it); it is never sent to a provider.
    """

    to: str
    subject: str
    text: str
    attachments: list[Path] = field(default_factory=list)
    link_base: str | None = None
    merchant_id: str | None = None

    def links(self) -> list[str]:
        if not self.link_base:
            return []
        base = self.link_base if self.link_base.endswith("/") else self.link_base + "/"
        return [base + Path(path).name for path in self.attachments]


@dataclass(frozen=True)
class DeliveryResult:
    """What became of one message. `error_code` is the provider's (Postmark's ErrorCode);
    `linked` says the files went as links, not attachments; `already_delivered` marks the result
    of an earlier delivery returned instead of sending again (`store.deliver_report`)."""

    status: str
    message_id: str | None = None
    error: str | None = None
    error_code: int | None = None
    linked: bool = False
    already_delivered: bool = False


def content_type(path: Path) -> str:
    guessed, _ = mimetypes.guess_type(path.name)
    if guessed is None and path.suffix.lower() == ".xlsx":
        guessed = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return guessed or "application/octet-stream"


class Delivery(ABC):
    """Sends messages. `link_base` is the URL where `<data dir>/reports/` is published, if it is:
    `store.deliver_report` builds each message's own link folder from it."""

    provider: str = ""
    link_base: str | None = None

    @abstractmethod
    def send(self, message: ReportMessage) -> DeliveryResult:
        """Send one message; raise DeliveryError only for what a retry cannot cure."""

    def send_batch(self, messages: Sequence[ReportMessage]) -> list[DeliveryResult]:
        """Send several messages; one result per message, in order."""
        return [self.send(message) for message in messages]


def email_message(message: ReportMessage, from_address: str) -> EmailMessage:
    """The message as a MIME e-mail (RFC 5322): a text part and each file as an attachment."""
    mail = EmailMessage()
    mail["From"] = from_address
    mail["To"] = message.to
    mail["Subject"] = message.subject
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail["Message-ID"] = make_msgid(domain=parseaddr(from_address)[1].rpartition("@")[2] or "illuma.local")
    mail.set_content(message.text)
    for path in message.attachments:
        path = Path(path)
        maintype, _, subtype = content_type(path).partition("/")
        mail.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name)
    return mail


class OutboxDelivery(Delivery):
    """Writes each message as an `.eml` file (it opens in any mail client) under
    `<outbox>/<merchant id>/`, or `<outbox>/_platform/` for a message of no merchant."""

    provider = "outbox"

    def __init__(self, outbox_dir: Path | str, *, from_address: str = DEFAULT_FROM, link_base: str | None = None) -> None:
        self.outbox_dir = Path(outbox_dir)
        self.from_address = from_address
        self.link_base = link_base or None

    def folder(self, merchant_id: str | None) -> Path:
        if merchant_id is None:
            return self.outbox_dir / PLATFORM_FOLDER
        from illuma_pipelines.merchant_ids import validate_merchant_id

        return self.outbox_dir / validate_merchant_id(merchant_id)

    def send(self, message: ReportMessage) -> DeliveryResult:
        mail = email_message(message, self.from_address)
        folder = self.folder(message.merchant_id)
        folder.mkdir(parents=True, exist_ok=True)
        message_id = mail["Message-ID"].strip("<>")
        path = folder / f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}.eml"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        # Written aside, then renamed: a mail client (or a test) never sees half a message.
        tmp.write_bytes(mail.as_bytes())
        tmp.replace(path)
        return DeliveryResult(SENT, message_id=message_id)

    def __repr__(self) -> str:
        return f"OutboxDelivery({str(self.outbox_dir)!r})"


@dataclass(frozen=True)
class PostmarkRetry:
    """How hard one request tries: 429, 5xx, ErrorCode 100 (maintenance), timeouts and broken
    connections are retried up to `max_retries` times; the wait before retry n is
    uniform(0, min(cap, base * 2**n)), at least the server's Retry-After (itself capped)."""

    max_retries: int = 6
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    max_retry_after: float = 120.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.backoff_cap, self.backoff_base * (2**attempt)))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0  # the HTTP-date form: a short wait is safe


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


class PostmarkDelivery(Delivery):
    """Sends through Postmark's API (or a server that speaks it, such as the tests')."""

    provider = "postmark"

    def __init__(
        self,
        server_token: str,
        api_url: str = POSTMARK_API_URL,
        from_address: str = DEFAULT_FROM,
        link_base: str | None = None,
        *,
        message_stream: str = "outbound",
        retry: PostmarkRetry | None = None,
        max_message_bytes: int = POSTMARK_MAX_MESSAGE_BYTES,
        seed: int | None = None,
    ) -> None:
        if not server_token:
            raise DeliveryError(
                "no Postmark server token: the delivery resource's server_token_ref must name a set "
                "environment variable holding the Server API token (Postmark: Servers > API Tokens)"
            )
        self._token = server_token
        self.api_url = api_url.rstrip("/")
        self.from_address = from_address
        self.link_base = link_base or None
        self.message_stream = message_stream
        self.retry = retry or PostmarkRetry()
        self.max_message_bytes = max_message_bytes
        self._rng = random.Random(seed)
        self._http = requests.Session()
        self._http.headers["User-Agent"] = "illuma-pipelines/0.1"

    def __repr__(self) -> str:
        return f"PostmarkDelivery(api_url={self.api_url!r}, from_address={self.from_address!r}, server_token=<hidden>)"

    # --------------------------------------------------------------------------- the request
    def _body(self, message: ReportMessage) -> tuple[dict[str, Any] | None, bool, str | None]:
        """The JSON body of `message` and whether its files went as links; or (None, False,
        reason) when it cannot be sent within Postmark's size limit."""
        body: dict[str, Any] = {
            "From": self.from_address,
            "To": message.to,
            "Subject": message.subject,
            "TextBody": message.text,
            "MessageStream": self.message_stream,
        }
        if not message.attachments:
            return body, False, None
        attached = dict(body)
        attached["Attachments"] = [
            {
                "Name": Path(path).name,
                "Content": base64.b64encode(Path(path).read_bytes()).decode("ascii"),
                "ContentType": content_type(Path(path)),
            }
            for path in message.attachments
        ]
        size = len(json.dumps(attached).encode("utf-8"))
        if size <= self.max_message_bytes:
            return attached, False, None
        links = message.links()
        if not links:
            return None, False, (
                f"the message with its files is {_megabytes(size)} once encoded, over Postmark's "
                f"{_megabytes(self.max_message_bytes)} limit, and no link base is configured to send "
                "links instead: set the delivery resource's link_base to the URL where "
                "<data dir>/reports/ is published"
            )
        body["TextBody"] = (
            f"{message.text.rstrip()}\n\nThe files are too large to attach ({_megabytes(size)} once encoded); "
            "download them here:\n" + "\n".join(links) + "\n"
        )
        return body, True, None

    def _post(self, path: str, body: Any) -> tuple[int, Any, str | None]:
        """POST `body`, retrying what may pass: the final status and decoded JSON answer, or
        (0, None, what went wrong) once the retries are spent."""
        url = f"{self.api_url}{path}"
        data = json.dumps(body).encode("utf-8")
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "X-Postmark-Server-Token": self._token,
        }
        policy = self.retry
        attempt = 0
        while True:
            wait_at_least: float | None = None
            try:
                response = self._http.post(
                    url, data=data, headers=headers, timeout=(policy.connect_timeout, policy.read_timeout)
                )
                content = response.content
            except requests.Timeout:
                problem = "timed out"
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                problem = f"connection failed ({type(exc).__name__})"
            else:
                status = response.status_code
                try:
                    answer = json.loads(content) if content else None
                except ValueError:
                    answer = None
                code = answer.get("ErrorCode") if isinstance(answer, dict) else None
                if status == 401 or code == BAD_TOKEN:
                    raise DeliveryError(
                        f"Postmark refused the server token (HTTP {status}, ErrorCode {code}) at {url}: "
                        "the environment variable the delivery resource's server_token_ref names must hold "
                        "the Server API token of the sending server (Postmark: Servers > API Tokens), not "
                        "the account token; nothing was sent"
                    )
                if status == 429 or status >= 500 or code in (RATE_LIMITED, MAINTENANCE):
                    problem = f"HTTP {status}" + (f" ErrorCode {code}" if code is not None else "")
                    wait_at_least = _retry_after(response.headers.get("Retry-After"))
                elif answer is None and status != 413:
                    problem = f"HTTP {status} with a body that is not JSON"
                else:
                    return status, answer, None
            if attempt >= policy.max_retries:
                return 0, None, (
                    f"Postmark did not take the message: gave up after {attempt + 1} attempts, the last "
                    f"{problem}; it is sent again on the next run"
                )
            delay = policy.backoff(attempt, self._rng)
            if wait_at_least is not None:
                delay = max(delay, min(wait_at_least, policy.max_retry_after))
            logger.info("postmark %s: attempt %d failed (%s); retrying in %.2fs", path, attempt + 1, problem, delay)
            time.sleep(delay)
            attempt += 1

    @staticmethod
    def _result(status: int, answer: Any, linked: bool, gave_up: str | None = None) -> DeliveryResult:
        """One message's result from its answer (a single send's body or a batch item)."""
        if gave_up is not None:
            return DeliveryResult(FAILED, error=gave_up)
        if not isinstance(answer, dict):
            return DeliveryResult(FAILED, error=f"Postmark answered HTTP {status} without a result for the message")
        code = answer.get("ErrorCode")
        if code == 0 and status == 200 and answer.get("MessageID"):
            return DeliveryResult(SENT, message_id=str(answer["MessageID"]), linked=linked)
        if code == INACTIVE_RECIPIENT:
            return DeliveryResult(
                SUPPRESSED,
                error="Postmark ErrorCode 406: the recipient is inactive (a hard bounce, a spam complaint "
                "or a manual suppression); not retried, the address is suppressed",
                error_code=code,
            )
        if status == 413:
            return DeliveryResult(FAILED, error="Postmark answered 413: the request is larger than it accepts")
        # Postmark's Message names what was wrong with the request; cut short, it is kept.
        text = str(answer.get("Message") or "no message")[:300]
        return DeliveryResult(
            FAILED, error=f"Postmark refused the message (HTTP {status}, ErrorCode {code}): {text}", error_code=code
        )

    # --------------------------------------------------------------------------- sending
    def send(self, message: ReportMessage) -> DeliveryResult:
        body, linked, problem = self._body(message)
        if body is None:
            return DeliveryResult(FAILED, error=problem)
        status, answer, gave_up = self._post("/email", body)
        return self._result(status, answer, linked, gave_up)

    def send_batch(self, messages: Sequence[ReportMessage]) -> list[DeliveryResult]:
        """Send through `/email/batch`, in chunks within Postmark's batch limits. The endpoint
        answers 200 with one result per message, each of which is checked."""
        results: list[DeliveryResult | None] = [None] * len(messages)
        chunk: list[tuple[int, dict[str, Any], bool]] = []
        chunk_bytes = 0

        def flush() -> None:
            nonlocal chunk, chunk_bytes
            if not chunk:
                return
            status, answer, gave_up = self._post("/email/batch", [body for _, body, _ in chunk])
            if gave_up is None and isinstance(answer, list) and len(answer) == len(chunk):
                for (index, _, linked), item in zip(chunk, answer, strict=True):
                    results[index] = self._result(status, item, linked)
            else:
                # The whole request was refused (e.g. ErrorCode 410, too many messages) or lost.
                failed = self._result(status, answer if isinstance(answer, dict) else None, False, gave_up)
                if gave_up is None and isinstance(answer, list):
                    failed = DeliveryResult(
                        FAILED, error=f"Postmark answered {len(answer)} results for a batch of {len(chunk)}"
                    )
                for index, _, _ in chunk:
                    results[index] = failed
            chunk, chunk_bytes = [], 0

        for index, message in enumerate(messages):
            body, linked, problem = self._body(message)
            if body is None:
                results[index] = DeliveryResult(FAILED, error=problem)
                continue
            size = len(json.dumps(body).encode("utf-8")) + 1
            if len(chunk) >= POSTMARK_MAX_BATCH_MESSAGES or chunk_bytes + size > POSTMARK_MAX_BATCH_BYTES:
                flush()
            chunk.append((index, body, linked))
            chunk_bytes += size
        flush()
        return [r for r in results if r is not None]
