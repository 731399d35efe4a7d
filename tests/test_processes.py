"""The missing-service rule every service test follows: fail under CI, skip loudly elsewhere."""

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.processes import free_port, port_open

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MESSAGE = "RabbitMQ at 127.0.0.1:5672 unreachable"


def _session_with_a_missing_service(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess:
    """A pytest session of its own whose one test finds its service missing: its outcome is what
    pytest reports, not what a wrapper around the call saw."""
    test_file = tmp_path / "test_needs_rabbitmq.py"
    test_file.write_text(
        "from tests.processes import service_unavailable\n\n\n"
        "def test_needs_rabbitmq():\n"
        f"    service_unavailable('Celery tests', {MESSAGE!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PYTHONPATH": str(PROJECT_ROOT)}
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        # -s: the banner goes to the real stderr; -rs lists skips with their reasons.
        [sys.executable, "-m", "pytest", "-q", "-s", "-rs", "-p", "no:cacheprovider", "-p", "no:xdist",
         "--rootdir", str(tmp_path), str(test_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


def test_a_missing_service_fails_under_ci(tmp_path):
    done = _session_with_a_missing_service(tmp_path, ci=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed" in done.stdout
    assert f"{MESSAGE} (CI is set: the celery tests must run)" in done.stdout


def test_a_missing_service_skips_loudly_elsewhere(tmp_path):
    done = _session_with_a_missing_service(tmp_path, ci=False)
    # Skipped (not failed, not passed) with the reason, a warning in pytest's summary, and the
    # banner on stderr.
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout and "passed" not in done.stdout
    assert re.search(r"SKIPPED \[1\] \S+: " + re.escape(MESSAGE), done.stdout), done.stdout
    assert "UserWarning" in done.stdout and f"SKIPPING CELERY TESTS: {MESSAGE}" in done.stdout
    assert f"SKIPPING CELERY TESTS: {MESSAGE}" in done.stderr


def test_a_free_port_is_free():
    assert not port_open(free_port(), timeout=0.5)


def test_free_ports_drawn_in_a_row_are_distinct():
    """None is bound until later: the same port twice would put two servers on it."""
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
