"""Report delivery: Postmark against a Postmark-compatible server on 127.0.0.1, the `.eml` outbox,
and `deliver_report`'s once-per-period bookkeeping in platform.report_deliveries (both engines)."""

import json
import logging
import os
from email import policy
from email.parser import BytesParser

import pytest

from illuma_pipelines.cli import main
from illuma_pipelines.registry import add_merchant, get_merchant, set_report_email
from illuma_pipelines.reports.delivery import (
    FAILED,
    SENT,
    SUPPRESSED,
    DeliveryError,
    OutboxDelivery,
    PostmarkDelivery,
    PostmarkRetry,
    ReportMessage,
)
from illuma_pipelines.reports.store import (
    RESENT_ACTION,
    ReportStoreError,
    deliver_report,
    delivery_attempts,
    forget_reports,
    get_report,
    record_report,
    report_message,
    report_paths,
    reports_dir,
)
from illuma_pipelines.warehouse import PLATFORM_SCHEMA
from resources.delivery import DeliveryResource
from tests.postmark_server import PostmarkServer

TOKEN = "pm-test-6f1c2d0e-secret-token"
FAST = PostmarkRetry(max_retries=3, backoff_base=0.01, backoff_cap=0.05, max_retry_after=0.2)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture(autouse=True)
def local_dirs(tmp_path, monkeypatch):
    """The data and var folders of this test only (reports, outbox)."""
    monkeypatch.setenv("ILLUMA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ILLUMA_VAR_DIR", str(tmp_path / "var"))
    return tmp_path


@pytest.fixture
def postmark():
    with PostmarkServer(token=TOKEN) as server:
        yield server


def _postmark(server: PostmarkServer, **kwargs) -> PostmarkDelivery:
    return PostmarkDelivery(
        kwargs.pop("token", TOKEN), api_url=server.base_url, from_address="reports@illuma.example", retry=FAST, **kwargs
    )


def _files(merchant: str, period: str, *, big: int = 0) -> list:
    """A report's files in its folder: an XLSX, a PDF and its PNG preview (`big` random bytes in the PDF)."""
    folder = reports_dir(merchant, period)
    folder.mkdir(parents=True, exist_ok=True)
    contents = {
        "report.xlsx": b"PK\x03\x04" + os.urandom(2000),
        "report.pdf": b"%PDF-1.7\n" + os.urandom(big or 3000),
        "report.png": b"\x89PNG\r\n\x1a\n" + os.urandom(500),
    }
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in contents]


def _message(to: str = "reports@acme-parts.com", files=(), **kwargs) -> ReportMessage:
    return ReportMessage(to=to, subject="Acme: monthly report 2026-03", text="Hello", attachments=list(files), **kwargs)


# ------------------------------------------------------------------------------ Postmark
def test_postmark_sends_the_files_base64_with_the_server_token(postmark):
    files = _files("acme", "2026-03")
    result = _postmark(postmark).send(_message(files=files))
    assert result.status == SENT and not result.linked
    (accepted,) = postmark.accepted
    assert result.message_id == accepted.message_id
    assert accepted.to == "reports@acme-parts.com" and accepted.body["From"] == "reports@illuma.example"
    assert accepted.body["MessageStream"] == "outbound"
    assert accepted.attachments == {
        "report.xlsx": (XLSX, files[0].read_bytes()),
        "report.pdf": ("application/pdf", files[1].read_bytes()),
        "report.png": ("image/png", files[2].read_bytes()),
    }
    assert [r.token_ok for r in postmark.requests] == [True]


def test_an_inactive_recipient_is_suppressed_at_once_never_retried(postmark):
    postmark.inactive.add("gone@acme-parts.com")
    result = _postmark(postmark).send(_message("gone@acme-parts.com"))
    assert result.status == SUPPRESSED and result.error_code == 406
    assert "not retried" in result.error
    assert len(postmark.requests) == 1 and postmark.accepted == []


def test_throttling_and_server_errors_are_retried_with_backoff(postmark):
    postmark.fail_next(429, 2, retry_after=0.05)
    postmark.fail_next(503)
    result = _postmark(postmark).send(_message())
    assert result.status == SENT
    assert [r.answered for r in postmark.requests] == [429, 429, 503, 200]
    assert len(postmark.accepted) == 1

    # Retries run out: the message fails (the next run tries again), saying why.
    postmark.fail_next(500, 10)
    result = _postmark(postmark).send(_message())
    assert result.status == FAILED
    assert "gave up after 4 attempts" in result.error and "HTTP 500" in result.error
    assert len(postmark.accepted) == 1


def test_a_batch_answers_200_and_each_message_is_checked(postmark):
    postmark.inactive.add("gone@acme-parts.com")
    messages = [
        _message("one@acme-parts.com"),
        _message("gone@acme-parts.com"),
        ReportMessage(to="two@acme-parts.com", subject="", text="no subject"),
        _message("three@acme-parts.com"),
    ]
    results = _postmark(postmark).send_batch(messages)
    assert [r.status for r in results] == [SENT, SUPPRESSED, FAILED, SENT]
    assert results[2].error_code == 300 and "'Subject' is required" in results[2].error
    assert [(r.path, r.answered) for r in postmark.requests] == [("/email/batch", 200)]
    assert [a.to for a in postmark.accepted] == ["one@acme-parts.com", "three@acme-parts.com"]
    assert {results[0].message_id, results[3].message_id} == {a.message_id for a in postmark.accepted}


def test_files_over_10_mb_once_encoded_go_as_links(postmark):
    # 8 MB of files fit the 10 MB limit as bytes, not once base64-encoded.
    files = _files("acme", "2026-03", big=8_000_000)
    base = "https://files.illuma.example/reports/acme/2026-03/"
    result = _postmark(postmark).send(_message(files=files, link_base=base))
    assert result.status == SENT and result.linked
    (accepted,) = postmark.accepted
    assert accepted.attachments == {} and "Attachments" not in accepted.body
    for name in ("report.xlsx", "report.pdf", "report.png"):
        assert base + name in accepted.text
    assert accepted.text.startswith("Hello") and "too large to attach" in accepted.text
    assert postmark.requests[0].size < 10_000_000

    # Without a link base nothing is sent: the message fails saying what to configure.
    result = _postmark(postmark).send(_message(files=files))
    assert result.status == FAILED and "link_base" in result.error and "over Postmark's" in result.error
    assert len(postmark.requests) == 1


def test_a_wrong_token_fails_clearly_without_showing_it(postmark, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    wrong = "pm-wrong-0000-not-the-token"
    delivery = _postmark(postmark, token=wrong)
    with pytest.raises(DeliveryError, match="Postmark refused the server token") as caught:
        delivery.send(_message())
    assert "HTTP 401, ErrorCode 10" in str(caught.value) and "Server API token" in str(caught.value)
    assert wrong not in str(caught.value) and wrong not in repr(delivery)
    assert len(postmark.requests) == 1 and not postmark.requests[0].token_ok  # not retried
    # The batch endpoint too, and through the resource with the token behind a reference.
    monkeypatch.setenv("ILLUMA_TEST_POSTMARK_TOKEN", wrong)
    resource = DeliveryResource(kind="postmark", server_token_ref="env:ILLUMA_TEST_POSTMARK_TOKEN", api_url=postmark.base_url)
    with pytest.raises(DeliveryError, match="refused the server token"):
        resource.get().send_batch([_message()])
    assert postmark.accepted == []
    assert wrong not in caplog.text


def test_the_resource_reads_the_token_reference_when_it_builds_the_delivery(postmark, monkeypatch):
    monkeypatch.delenv("ILLUMA_TEST_POSTMARK_TOKEN", raising=False)
    resource = DeliveryResource(kind="postmark", server_token_ref="env:ILLUMA_TEST_POSTMARK_TOKEN", api_url=postmark.base_url)
    with pytest.raises(DeliveryError, match="not set"):
        resource.get()
    for bad in (TOKEN, "sandbox:acme", "env:lower"):
        with pytest.raises(DeliveryError, match="never put the token itself"):
            DeliveryResource(kind="postmark", server_token_ref=bad).get()
    monkeypatch.setenv("ILLUMA_TEST_POSTMARK_TOKEN", TOKEN)
    assert resource.get().send(_message()).status == SENT
    with pytest.raises(DeliveryError, match="unknown delivery kind"):
        DeliveryResource(kind="pigeon").get()
    assert isinstance(DeliveryResource().get(), OutboxDelivery)


# ------------------------------------------------------------------------------ outbox
def test_the_outbox_writes_eml_files_that_parse_back_with_their_attachments(local_dirs):
    files = _files("acme", "2026-03")
    outbox = OutboxDelivery(local_dirs / "outbox")
    result = outbox.send(_message(files=files, merchant_id="acme"))
    alert = outbox.send(ReportMessage(to="data-team@illuma.example", subject="run failed", text="job x"))
    assert result.status == alert.status == SENT
    (path,) = (local_dirs / "outbox" / "acme").glob("*.eml")
    assert len(list((local_dirs / "outbox" / "_platform").glob("*.eml"))) == 1
    mail = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert mail["To"] == "reports@acme-parts.com" and mail["Subject"] == "Acme: monthly report 2026-03"
    assert mail["Message-ID"].strip("<>") == result.message_id
    assert mail.get_body(preferencelist=("plain",)).get_content().strip() == "Hello"
    attached = {part.get_filename(): (part.get_content_type(), part.get_content()) for part in mail.iter_attachments()}
    assert attached == {
        "report.xlsx": (XLSX, files[0].read_bytes()),
        "report.pdf": ("application/pdf", files[1].read_bytes()),
        "report.png": ("image/png", files[2].read_bytes()),
    }
    assert list((local_dirs / "outbox").rglob("*.tmp")) == []


# ------------------------------------------------------------------------------ the store
def _merchant(warehouse, merchant_id, email="reports@acme-parts.com"):
    mid = merchant_id()
    add_merchant(warehouse, mid, display_name="Acme Auto Parts", report_email=email)
    return mid


def _audits(warehouse, mid, action):
    with warehouse.connect() as conn:
        rows = conn.fetchall(
            f"SELECT actor, details FROM {PLATFORM_SCHEMA}.audit_log WHERE merchant_id = ? AND action = ? ORDER BY occurred_at",
            [mid, action],
        )
    return [(actor, json.loads(d) if isinstance(d, str) else d) for actor, d in rows]


def test_a_report_period_is_delivered_once_and_a_forced_resend_is_audited(warehouse, merchant_id, local_dirs):
    mid = _merchant(warehouse, merchant_id)
    files = _files(mid, "2026-03")
    record_report(warehouse, mid, "monthly", "2026-03", files)
    stored = get_report(warehouse, mid, "monthly", "2026-03")
    assert [f.name for f in stored.files] == ["report.xlsx", "report.pdf", "report.png"]
    assert stored.files[1].bytes == files[1].stat().st_size and len(stored.files[1].sha256) == 64
    assert stored.delivered_at is None

    outbox = OutboxDelivery(local_dirs / "outbox")
    subject, text = report_message("Acme Auto Parts", "monthly", "2026-03", files)
    first = deliver_report(warehouse, outbox, mid, "monthly", "2026-03", files, subject=subject, text=text, actor="run:1")
    assert first.status == SENT and not first.already_delivered
    again = deliver_report(warehouse, outbox, mid, "monthly", "2026-03", files, subject=subject, text=text, actor="run:2")
    assert again.already_delivered and again.message_id == first.message_id
    assert len(list((local_dirs / "outbox" / mid).glob("*.eml"))) == 1
    (attempt,) = delivery_attempts(warehouse, mid)
    assert (attempt.status, attempt.provider, attempt.recipient, attempt.forced) == (SENT, "outbox", "reports@acme-parts.com", False)
    assert attempt.message_id == first.message_id and attempt.sent_at is not None
    assert get_report(warehouse, mid, "monthly", "2026-03").delivered_at == attempt.sent_at
    assert _audits(warehouse, mid, RESENT_ACTION) == []

    resent = deliver_report(
        warehouse, outbox, mid, "monthly", "2026-03", files, subject=subject, text=text, force=True, actor="cli:ops"
    )
    assert resent.status == SENT and resent.message_id != first.message_id
    assert len(list((local_dirs / "outbox" / mid).glob("*.eml"))) == 2
    assert [(a.attempt, a.forced) for a in delivery_attempts(warehouse, mid)] == [(1, False), (2, True)]
    ((actor, details),) = _audits(warehouse, mid, RESENT_ACTION)
    assert actor == "cli:ops"
    assert details == {
        "kind": "monthly", "period": "2026-03", "attempt": 2, "provider": "outbox", "status": SENT,
        "message_id": resent.message_id, "recipient_domain": "acme-parts.com",
    }
    # Re-rendering keeps the delivery time; a merchant without a report e-mail gets nothing sent.
    record_report(warehouse, mid, "monthly", "2026-03", files)
    assert get_report(warehouse, mid, "monthly", "2026-03").delivered_at is not None
    set_report_email(warehouse, mid, None)
    assert deliver_report(warehouse, outbox, mid, "monthly", "2026-04", [], subject="s", text="t", actor="run:3") is None


def test_an_inactive_address_is_suppressed_until_it_is_set_again(warehouse, merchant_id, postmark):
    mid = _merchant(warehouse, merchant_id, email="gone@acme-parts.com")
    postmark.inactive.add("gone@acme-parts.com")
    files = _files(mid, "2026-03")
    send = dict(subject="s", text="t", actor="run:1")
    result = deliver_report(warehouse, _postmark(postmark), mid, "monthly", "2026-03", files, **send)
    assert result.status == SUPPRESSED
    with warehouse.connect() as conn:
        assert conn.fetchall(
            f"SELECT recipient, merchant_id, provider, error_code FROM {PLATFORM_SCHEMA}.report_suppressions"
            " WHERE merchant_id = ?", [mid]
        ) == [("gone@acme-parts.com", mid, "postmark", 406)]
    # Neither a re-run, nor another period, nor a forced re-send calls Postmark for it again.
    assert deliver_report(warehouse, _postmark(postmark), mid, "monthly", "2026-03", files, **send).status == SUPPRESSED
    files_04 = _files(mid, "2026-04")
    assert deliver_report(warehouse, _postmark(postmark), mid, "monthly", "2026-04", files_04, **send).status == SUPPRESSED
    forced = deliver_report(warehouse, _postmark(postmark), mid, "monthly", "2026-03", files, **{**send, "force": True})
    assert forced.status == SUPPRESSED
    assert len(postmark.requests) == 1
    assert [a.status for a in delivery_attempts(warehouse, mid, "monthly", "2026-03")] == [SUPPRESSED, SUPPRESSED]

    # The merchant fixed its mailbox; the data team sets the address again: the suppression lifts.
    postmark.inactive.clear()
    set_report_email(warehouse, mid, "gone@acme-parts.com", actor="cli:ops")
    assert _audits(warehouse, mid, "merchant.report_email_set")[-1][1]["suppression_lifted"] is True
    assert deliver_report(warehouse, _postmark(postmark), mid, "monthly", "2026-03", files, **send).status == SENT
    assert len(postmark.accepted) == 1


def test_a_large_report_is_linked_under_its_merchant_and_period(warehouse, merchant_id, postmark):
    mid = _merchant(warehouse, merchant_id)
    files = _files(mid, "2026-03", big=8_000_000)
    delivery = _postmark(postmark, link_base="https://files.illuma.example/reports")
    result = deliver_report(warehouse, delivery, mid, "monthly", "2026-03", files, subject="s", text="t", actor="run:1")
    assert result.status == SENT and result.linked
    assert f"https://files.illuma.example/reports/{mid}/2026-03/report.pdf" in postmark.accepted[0].text


def test_a_wrong_token_is_recorded_and_raised_and_the_next_run_sends(warehouse, merchant_id, postmark):
    mid = _merchant(warehouse, merchant_id)
    files = _files(mid, "2026-03")
    send = dict(subject="s", text="t", actor="run:1")
    with pytest.raises(DeliveryError, match="refused the server token"):
        deliver_report(warehouse, _postmark(postmark, token="pm-wrong"), mid, "monthly", "2026-03", files, **send)
    (attempt,) = delivery_attempts(warehouse, mid)
    assert attempt.status == FAILED and "refused the server token" in attempt.error and "pm-wrong" not in attempt.error
    result = deliver_report(warehouse, _postmark(postmark), mid, "monthly", "2026-03", files, **send)
    assert result.status == SENT
    assert [a.status for a in delivery_attempts(warehouse, mid)] == [FAILED, SENT]


def test_report_files_belong_in_their_period_folder(warehouse, merchant_id, local_dirs):
    mid = _merchant(warehouse, merchant_id)
    stray = local_dirs / "stray.pdf"
    stray.write_bytes(b"%PDF")
    with pytest.raises(ReportStoreError, match="is not in"):
        record_report(warehouse, mid, "monthly", "2026-03", [stray])
    for bad in ("../x", "..", "2026/03", "", ".hidden"):
        with pytest.raises(ReportStoreError, match="invalid report period"):
            reports_dir(mid, bad)
    with pytest.raises(ReportStoreError, match="unknown report kind"):
        record_report(warehouse, mid, "weekly", "2026-03", [])


def test_erasure_helpers_find_the_files_and_rows_of_a_merchant(warehouse, merchant_id, local_dirs):
    mid = _merchant(warehouse, merchant_id)
    files = _files(mid, "2026-03")
    record_report(warehouse, mid, "monthly", "2026-03", files)
    deliver_report(warehouse, OutboxDelivery(local_dirs / "var" / "outbox"), mid, "monthly", "2026-03", files,
                   subject="s", text="t", actor="run:1")
    assert report_paths(mid) == [local_dirs / "data" / "reports" / mid, local_dirs / "var" / "outbox" / mid]
    with warehouse.connect() as conn:
        assert forget_reports(conn, mid) == 3  # the report, its delivery, the report e-mail
    assert get_report(warehouse, mid, "monthly", "2026-03") is None and delivery_attempts(warehouse, mid) == []
    assert get_merchant(warehouse, mid).report_email is None


def test_cli_resend_sends_the_recorded_files_again_through_the_environment_delivery(
    warehouse, warehouse_url, merchant_id, local_dirs, capsys, monkeypatch
):
    monkeypatch.setenv("ILLUMA_ENV", "local")
    mid = _merchant(warehouse, merchant_id)
    files = _files(mid, "2026-03")
    cli = ["--warehouse-url", warehouse_url, "reports", "resend", mid, "monthly", "2026-03"]
    assert main(cli) == 2
    assert "no monthly report 2026-03 is recorded" in capsys.readouterr().err
    record_report(warehouse, mid, "monthly", "2026-03", files)
    assert main([*cli, "--requested-by", "ops@illuma"]) == 0
    out = capsys.readouterr().out
    assert "via outbox: sent" in out and "reports@acme-parts.com" in out
    (eml,) = (local_dirs / "var" / "outbox" / mid).glob("*.eml")
    mail = BytesParser(policy=policy.default).parsebytes(eml.read_bytes())
    assert mail["Subject"] == "Acme Auto Parts: monthly report 2026-03"
    assert sorted(p.get_filename() for p in mail.iter_attachments()) == ["report.pdf", "report.png", "report.xlsx"]
    assert [actor for actor, _ in _audits(warehouse, mid, RESENT_ACTION)] == ["ops@illuma"]
    # A file changed since it was recorded is not sent.
    files[1].write_bytes(b"%PDF-1.7 tampered")
    assert main(cli) == 2
    assert "changed since it was recorded" in capsys.readouterr().err
