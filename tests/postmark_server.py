"""A Postmark-compatible HTTP server for tests: `POST /email` and `POST /email/batch` on 127.0.0.1.

It answers as Postmark documents (https://postmarkapp.com/developer/api/email-api and the error
codes of https://postmarkapp.com/developer/api/overview): 401 with ErrorCode 10 for a wrong
`X-Postmark-Server-Token`; 422 with ErrorCode 406 for an inactive recipient, 300 for an invalid
message (missing fields, an attachment that is not base64, a message over 10 MB); 200 with
ErrorCode 0 and a MessageID for an accepted one; the batch endpoint answers 200 with one result
per message, failed ones included. Tests queue faults (`fail_next`: 429 with Retry-After, 5xx)
and read what was accepted (`accepted`, with the attachments decoded) and every request's size.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_MESSAGE_BYTES = 10 * 1000 * 1000
MAX_BATCH_MESSAGES = 500


@dataclass
class Accepted:
    """A message the server accepted."""

    message_id: str
    to: str
    subject: str
    text: str
    attachments: dict[str, tuple[str, bytes]]  # name -> (content type, decoded bytes)
    body: dict[str, Any]


@dataclass
class RequestSeen:
    path: str
    size: int
    token_ok: bool
    answered: int = 0


@dataclass
class PostmarkServer:
    token: str = "test-server-token"
    inactive: set[str] = field(default_factory=set)
    accepted: list[Accepted] = field(default_factory=list)
    requests: list[RequestSeen] = field(default_factory=list)
    _faults: deque = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control from tests
    def fail_next(self, status: int, times: int = 1, *, retry_after: float | None = None) -> None:
        """Answer the next `times` requests with `status` (429, 500, 503...) before anything else."""
        with self._lock:
            self._faults.extend([(status, retry_after)] * times)

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> PostmarkServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="postmark-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> PostmarkServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ Postmark's behaviour
    def _fault(self) -> tuple[int, float | None] | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _one(self, message: Any) -> tuple[int, dict[str, Any]]:
        """One message: (HTTP status it would get alone, its result object)."""
        if not isinstance(message, dict):
            return 422, {"ErrorCode": 300, "Message": "Invalid email request: a message is a JSON object."}
        for required in ("From", "To", "Subject"):
            if not message.get(required):
                return 422, {"ErrorCode": 300, "Message": f"Invalid email request: '{required}' is required."}
        if not (message.get("TextBody") or message.get("HtmlBody")):
            return 422, {"ErrorCode": 300, "Message": "Invalid email request: provide either HtmlBody or TextBody."}
        if len(json.dumps(message).encode("utf-8")) > MAX_MESSAGE_BYTES:
            return 422, {"ErrorCode": 300, "Message": "Invalid email request: the message exceeds 10 MB."}
        attachments: dict[str, tuple[str, bytes]] = {}
        for item in message.get("Attachments") or []:
            name, content, kind = item.get("Name"), item.get("Content"), item.get("ContentType")
            if not (name and content is not None and kind):
                return 422, {"ErrorCode": 300, "Message": "Invalid email request: attachments need Name, Content and ContentType."}
            try:
                attachments[name] = (kind, base64.b64decode(content, validate=True))
            except (binascii.Error, ValueError):
                return 422, {"ErrorCode": 300, "Message": f"Invalid email request: attachment {name} is not base64."}
        to = message["To"]
        if to.lower() in {a.lower() for a in self.inactive}:
            return 422, {
                "ErrorCode": 406,
                "Message": f"You tried to send to recipient(s) that have been marked as inactive. Found "
                f"inactive addresses: {to}. Inactive recipients are ones that have generated a hard "
                "bounce, a spam complaint, or a manual suppression.",
            }
        message_id = str(uuid.uuid4())
        with self._lock:
            self.accepted.append(
                Accepted(message_id, to, message["Subject"], message.get("TextBody", ""), attachments, message)
            )
        return 200, {
            "To": to,
            "SubmittedAt": datetime.now(UTC).isoformat(),
            "MessageID": message_id,
            "ErrorCode": 0,
            "Message": "OK",
        }

    def handle(self, path: str, headers: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        seen = RequestSeen(path, len(body), headers.get("X-Postmark-Server-Token") == self.token)
        with self._lock:
            self.requests.append(seen)
        status, answer, extra = self._answer(path, headers, body, seen.token_ok)
        seen.answered = status
        return status, answer, extra

    def _answer(self, path: str, headers: Any, body: bytes, token_ok: bool) -> tuple[int, Any, dict[str, str]]:
        if path not in ("/email", "/email/batch"):
            return 404, {"ErrorCode": 404, "Message": "Not found."}, {}
        fault = self._fault()
        if fault is not None:
            status, retry_after = fault
            extra = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            code = 429 if status == 429 else 500
            return status, {"ErrorCode": code, "Message": f"Injected fault {status}."}, extra
        if not token_ok:
            return 401, {
                "ErrorCode": 10,
                "Message": "The Server Token you provided in the X-Postmark-Server-Token request header was invalid. "
                "Please verify that you are using a valid token.",
            }, {}
        if "application/json" not in (headers.get("Content-Type") or ""):
            return 422, {"ErrorCode": 409, "Message": "JSON required."}, {}
        try:
            payload = json.loads(body)
        except ValueError:
            return 422, {"ErrorCode": 402, "Message": "Invalid JSON."}, {}
        if path == "/email":
            status, result = self._one(payload)
            return status, result, {}
        if not isinstance(payload, list):
            return 422, {"ErrorCode": 403, "Message": "Incompatible JSON: the batch is a JSON array."}, {}
        if len(payload) > MAX_BATCH_MESSAGES:
            return 422, {"ErrorCode": 410, "Message": "Too many batch messages."}, {}
        return 200, [self._one(message)[1] for message in payload], {}


def _handler(server: PostmarkServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status, answer, extra = server.handle(self.path, self.headers, body)
            data = json.dumps(answer).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
            return

    return Handler
