"""Helpers for the UI test: the venv's dagster-webserver on a free port, and Debian's Chromium
driven by Playwright (never a browser build downloaded by Playwright: `playwright install` is not
used; `make browser` / `.ci/run` install the `chromium` package).

Not a conftest: import what you need (`from tests.ui_helpers import ...`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from illuma_pipelines.paths import var_dir
from tests.processes import free_port, service_unavailable, stop_process_group

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM_CANDIDATES = ("/usr/bin/chromium",)
# Headless in a container, and nothing reaching out to the internet on its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The webserver's "Join the Dagster community" dialog (shown on localhost until dismissed; it
# keeps the dismissal in localStorage) would cover the page in screenshots.
DISMISS_COMMUNITY_DIALOG = "window.localStorage.setItem('communityNux', JSON.stringify('1'))"
WORKSPACE_QUERY = """
{ workspaceOrError {
    __typename
    ... on PythonError { message }
    ... on Workspace { locationEntries {
        name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
    } }
} }
"""


def find_chromium() -> str | None:
    """Debian's chromium: on PATH, or at /usr/bin/chromium."""
    found = shutil.which("chromium")
    if found:
        return found
    return next((c for c in CHROMIUM_CANDIDATES if os.access(c, os.X_OK)), None)


def require_chromium() -> str:
    """The chromium executable. With CI set a missing browser fails the test; elsewhere the test
    skips loudly (as the Postgres tests do without the service)."""
    path = find_chromium()
    if path:
        return path
    message = (
        "Debian's chromium is not installed (no `chromium` on PATH nor at /usr/bin/chromium): "
        "run `make browser` (apt-get install chromium)"
    )
    service_unavailable("UI browser test", message)


def workspace_location_name(workspace: Path) -> str:
    """The name the UI gives the (single) python_module location of `workspace`."""
    entries = (yaml.safe_load(workspace.read_text()) or {}).get("load_from") or []
    if len(entries) != 1 or "python_module" not in entries[0]:
        raise ValueError(f"{workspace}: expected one python_module location, found {entries!r}")
    spec = entries[0]["python_module"]
    if isinstance(spec, str):
        return spec
    if spec.get("location_name"):
        return spec["location_name"]
    return f"{spec['module_name']}:{spec['attribute']}" if spec.get("attribute") else spec["module_name"]


def graphql(base_url: str, query: str, timeout: float = 10.0) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base_url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def location_entries(base_url: str) -> list[dict[str, Any]]:
    """The workspace's location entries as the webserver reports them (GraphQL)."""
    workspace = graphql(base_url, WORKSPACE_QUERY)["data"]["workspaceOrError"]
    if workspace["__typename"] != "Workspace":
        raise AssertionError(f"the webserver could not load the workspace: {workspace.get('message')}")
    return workspace["locationEntries"]


def location_errors(base_url: str) -> dict[str, str]:
    """{location name: its load error} for every location that failed to load (GraphQL)."""
    return {
        entry["name"]: (entry["locationOrLoadError"] or {}).get("message", "")
        for entry in location_entries(base_url)
        if (entry["locationOrLoadError"] or {}).get("__typename") == "PythonError"
    }


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class Webserver:
    base_url: str
    log_path: Path
    pid: int


@contextlib.contextmanager
def dagster_webserver(
    workspace: Path, *, env: dict[str, str], cwd: Path, log_path: Path, startup_timeout: float = 120.0
) -> Iterator[Webserver]:
    """The venv's `dagster-webserver` for `workspace` on a free port, in a process group of its
    own (the code server it starts included), killed on exit. Yields once the server answers and
    no location is still loading; the log is at `log_path`."""
    executable = Path(sys.executable).parent / "dagster-webserver"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [str(executable), "-h", "127.0.0.1", "-p", str(port), "-w", str(workspace)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"dagster-webserver exited with {process.returncode} before serving; "
                    f"log {log_path}:\n{_tail(log_path)}"
                )
            try:
                entries = location_entries(base_url)
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"dagster-webserver did not serve a loaded workspace within {startup_timeout:.0f} s; "
                    f"log {log_path}:\n{_tail(log_path)}"
                )
            time.sleep(0.5)
        yield Webserver(base_url=base_url, log_path=log_path, pid=process.pid)
    finally:
        stop_process_group(process)


@contextlib.contextmanager
def chromium_page(executable: str, *, default_timeout_ms: float = 30_000) -> Iterator[Page]:
    """A page of headless Chromium (`executable`, Debian's) on a fresh user data dir."""
    from playwright.sync_api import expect, sync_playwright

    # Assertions wait as long as actions: a loaded machine renders slowly.
    expect.set_options(timeout=default_timeout_ms)
    with tempfile.TemporaryDirectory(prefix="illuma-chromium-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )
        try:
            context.add_init_script(DISMISS_COMMUNITY_DIALOG)
            context.set_default_timeout(default_timeout_ms)
            yield context.new_page()
        finally:
            context.close()


def screenshot_dir() -> Path:
    return var_dir() / "ui-test"


@contextlib.contextmanager
def screenshot_on_failure(page: Page, name: str) -> Iterator[None]:
    """On any failure inside, a full-page screenshot at var/ui-test/<name>.png, named in the
    re-raised AssertionError's message."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        yield
    except (AssertionError, PlaywrightError) as exc:
        path = screenshot_dir() / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(path), full_page=True)
            where = f"screenshot: {path}"
        except PlaywrightError as shot_error:
            where = f"(no screenshot: {shot_error})"
        raise AssertionError(f"{exc}\n{where} (page {page.url})") from exc
