"""Per-merchant PostgreSQL logins: role names, passwords and their references (ADR 0001).

Each merchant's work on PostgreSQL runs under a login role of its own, so the session user *is*
the merchant: nothing reached from its scope (SET ROLE, RESET ROLE, a trigger, a view) can act with
another role's rights. The role name carries the placement tag of its database
(`platform.placement`), so one merchant id in two databases of one server (staging and
production) gets two roles, and erasing it in one leaves the other alone.

The password is never stored: it is HMAC-SHA256 of the role name under the warehouse login secret
(ILLUMA_WAREHOUSE_LOGIN_SECRET, else the 0600 file `var/keys/warehouse-login.secret`, made on first
use). The registry keeps only a reference, `warehouse-login:<role>`, like the marketplace
credential references; the server is given a SCRAM verifier, so the password is not in its
statement log either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from illuma_pipelines.merchant_ids import validate_merchant_id
from illuma_pipelines.paths import var_dir

LOGIN_SECRET_VAR = "ILLUMA_WAREHOUSE_LOGIN_SECRET"
REF_PREFIX = "warehouse-login:"
PLACEMENT_TAG = re.compile(r"[0-9a-f]{8}")
_ROLE = re.compile(r"m_[a-z][a-z0-9_]{1,39}_[0-9a-f]{8}")
_SCRAM_ITERATIONS = 4096


class LoginError(RuntimeError):
    """A merchant login could not be named or its secret not resolved."""


def merchant_login_role(merchant_id: str, placement_tag: str) -> str:
    """`m_<merchant_id>_<placement tag>`: unique on the server, at most 51 bytes."""
    validate_merchant_id(merchant_id)
    if not PLACEMENT_TAG.fullmatch(placement_tag):
        raise LoginError(f"invalid placement tag {placement_tag!r}")
    return f"m_{merchant_id}_{placement_tag}"


def login_ref(role: str) -> str:
    if not _ROLE.fullmatch(role):
        raise LoginError(f"invalid merchant login role {role!r}")
    return REF_PREFIX + role


def secret_file() -> Path:
    return var_dir() / "keys" / "warehouse-login.secret"


def _login_secret() -> bytes:
    value = os.environ.get(LOGIN_SECRET_VAR)
    if value:
        return value.encode()
    path = secret_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def resolve_login_password(ref: str) -> str:
    """The password a `warehouse-login:<role>` reference stands for."""
    if not ref.startswith(REF_PREFIX) or not _ROLE.fullmatch(ref[len(REF_PREFIX):]):
        raise LoginError(f"not a merchant login reference: {ref!r} (expected {REF_PREFIX}m_<id>_<tag>)")
    role = ref[len(REF_PREFIX):]
    return hmac.new(_login_secret(), role.encode(), hashlib.sha256).hexdigest()


def scram_verifier(password: str, *, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677), so CREATE and
    ALTER ROLE never carry the password itself."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
