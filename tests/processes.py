"""What tests that start processes or need a service share: a free port, stopping a process group
for good, and the one rule for a missing service (fail under CI, skip loudly elsewhere)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from typing import NoReturn

import pytest

_GIVEN_PORTS: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, and never one this process was given
    before: the port is bound later, by a server or a subprocess, and until then the kernel may
    hand it out again (a topology's three servers, drawn in a row, must not share one)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 3.0) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the group `process` leads, then SIGKILL whatever of it is left after `grace`
    (children that outlive their leader: a webserver's code server, a Celery worker's pool)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)


def service_unavailable(what: str, message: str) -> NoReturn:
    """A service or tool the test needs is missing: with CI set the test fails (CI must run it);
    elsewhere it skips with a banner nobody can miss. `what` names the tests, e.g. "CELERY TESTS"."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: the {what.lower()} must run)", pytrace=False)
    banner = "\n" + "!" * 78 + f"\nSKIPPING {what.upper()}: {message}\n" + "!" * 78 + "\n"
    sys.stderr.write(banner)
    warnings.warn(banner, stacklevel=2)
    pytest.skip(message)
