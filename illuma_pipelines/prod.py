"""The production topology on this machine: `illuma prod up|down|status` (`make prod-up`, `make prod-down`).

`up` starts, each in a process group of its own, against the PostgreSQL service:

- the marketplace sandbox (`illuma sandbox serve`), standing in for Amazon, eBay and Walmart: the
  production clients reach it through ILLUMA_MARKETPLACE_BASE_URL (this machine and staging only);
- the code location's gRPC server (`dagster code-server start`, module `illuma_pipelines.definitions`),
  which also runs the launched runs (Dagster's default run launcher);
- the webserver (`dagster-webserver`) and the daemon (`dagster-daemon run`: schedules, sensors,
  the run queue, run monitoring and run retries), both reading a workspace that points at that
  gRPC server.

DAGSTER_HOME holds `deploy/dagster.yaml` as is (dagster-postgres storage from DAGSTER_PG_URL,
queued runs, run monitoring, run retries). The Dagster storage database and the warehouse database
are created if missing, as the PostgreSQL admin (provisioning only: the warehouse's platform schema
and the pipeline's login, as `illuma warehouse provision` does); Dagster and the pipeline run as
the non-superuser login. Every path (DAGSTER_HOME, logs, pid files, keys, the inbox, `var/`) is
under one folder, `var/prod/` by default, and every port is a setting: a test or a benchmark runs
its own topology with `ProdConfig(root=..., webserver_port=...)`.

`down` stops only what `up` started: the process groups its pid files name (a pid file whose
process is not the one started, a reused pid, is ignored), first politely, then with SIGKILL, and
waits until no process of those groups is left. A run the stop interrupts (its process is in the
code server's group) fails itself on SIGTERM; one that could not (killed after the grace period)
is marked failed afterwards, so no run stays STARTED holding its merchant's run slot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from illuma_pipelines.paths import PROJECT_ROOT, var_dir

if TYPE_CHECKING:
    import dagster as dg

# The order they start in; they stop in the reverse order (the daemon first: nothing new launches).
SANDBOX, CODE_SERVER, WEBSERVER, DAEMON = "sandbox", "code-server", "webserver", "daemon"
PROCESSES = (SANDBOX, CODE_SERVER, WEBSERVER, DAEMON)
LOCATION_NAME = "illuma_pipelines"
DEFINITIONS_MODULE = "illuma_pipelines.definitions"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# The daemon's parts that must report healthy before `up` says the topology is up.
REQUIRED_DAEMONS = ("SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING")
# Marketplace app credentials the sandbox accepts (its own, not secrets).
SANDBOX_APP_ID, SANDBOX_APP_SECRET = "illuma-sandbox-app", "illuma-sandbox-app-secret"


class ProdError(RuntimeError):
    """The topology could not be started, checked or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class ProdConfig:
    """Where the topology lives and listens. `from_env()` reads the ILLUMA_PROD_* overrides."""

    root: Path = field(default_factory=lambda: var_dir() / "prod")
    host: str = "127.0.0.1"
    webserver_port: int = 3070
    grpc_port: int = 4070
    sandbox_port: int = 8770
    # The PostgreSQL admin, for provisioning only; never given to Dagster or the pipeline.
    admin_url: str = DEFAULT_ADMIN_URL
    login: str = "illuma_app"
    dagster_db: str = "illuma_dagster"
    warehouse_db: str = "illuma_warehouse"
    # Extra `illuma sandbox serve` flags (the benchmark's quota speed-up or faults).
    sandbox_args: tuple[str, ...] = ()
    # Extra environment for every process of the topology (wins over the computed one).
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # How long `up` waits for each process to answer.
    start_timeout_seconds: float = 120.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProdConfig:
        env = os.environ if environ is None else environ
        base = cls()

        def port(name: str, default: int) -> int:
            text = env.get(name)
            if not text:
                return default
            if not text.isdigit() or not 0 < int(text) < 65536:
                raise ProdError(f"{name}={text!r} is not a TCP port (1-65535)")
            return int(text)

        return replace(
            base,
            root=Path(env["ILLUMA_PROD_DIR"]) if env.get("ILLUMA_PROD_DIR") else base.root,
            webserver_port=port("ILLUMA_PROD_WEBSERVER_PORT", base.webserver_port),
            grpc_port=port("ILLUMA_PROD_GRPC_PORT", base.grpc_port),
            sandbox_port=port("ILLUMA_PROD_SANDBOX_PORT", base.sandbox_port),
            admin_url=env.get("ILLUMA_PROD_PG_ADMIN_URL") or base.admin_url,
            login=env.get("ILLUMA_PROD_PG_LOGIN") or base.login,
            dagster_db=env.get("ILLUMA_PROD_DAGSTER_DB") or base.dagster_db,
            warehouse_db=env.get("ILLUMA_PROD_WAREHOUSE_DB") or base.warehouse_db,
        )

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def workspace_file(self) -> Path:
        return self.root / "workspace.yaml"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.webserver_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://{self.host}:{self.sandbox_port}"

    def _pg(self) -> dict[str, str]:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(self.admin_url)
        return {"host": str(info.get("host") or "127.0.0.1"), "port": str(info.get("port") or "5432")}

    def pipeline_url(self, dbname: str, driver: str = "postgresql") -> str:
        pg = self._pg()
        return f"{driver}://{self.login}@{pg['host']}:{pg['port']}/{dbname}"

    @property
    def warehouse_url(self) -> str:
        return self.pipeline_url(self.warehouse_db)

    @property
    def dagster_pg_url(self) -> str:
        # psycopg2 by name: dagster-postgres binds NOTIFY parameters the psycopg2 way (deploy/dagster.yaml).
        return self.pipeline_url(self.dagster_db, driver="postgresql+psycopg2")


def master_key(config: ProdConfig) -> str:
    """The vault's master key of this topology: made once, 0600, outside the data folder."""
    from illuma_pipelines.vault.keys import LocalKeyring

    path = config.keys_dir / "master.key"
    if not path.exists():
        config.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(LocalKeyring.generate_master_key() + "\n")
    return path.read_text(encoding="ascii").strip()


def process_env(config: ProdConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every process of the topology: production, the warehouse and the Dagster
    storage on PostgreSQL as the pipeline's login (never the admin), the marketplaces at the sandbox."""
    env = dict(os.environ if base is None else base)
    # Provisioning credentials stay with `up` and the CLI: Dagster and the pipeline never hold them.
    env.pop("ILLUMA_WAREHOUSE_ADMIN_URL", None)
    var = config.root / "var"
    env.update(
        {
            "DAGSTER_HOME": str(config.dagster_home),
            "DAGSTER_PG_URL": config.dagster_pg_url,
            "ILLUMA_ENV": "production",
            "ILLUMA_WAREHOUSE_URL": config.warehouse_url,
            "ILLUMA_VAR_DIR": str(var),
            "ILLUMA_DATA_DIR": str(var / "data"),
            # This machine (and staging) only: the production clients call the sandbox.
            "ILLUMA_MARKETPLACE_BASE_URL": config.sandbox_url,
            "AMAZON_LWA_CLIENT_ID": SANDBOX_APP_ID,
            "AMAZON_LWA_CLIENT_SECRET": SANDBOX_APP_SECRET,
            "EBAY_CLIENT_ID": SANDBOX_APP_ID,
            "EBAY_CLIENT_SECRET": SANDBOX_APP_SECRET,
            "ILLUMA_KEY_STORE_PATH": str(config.keys_dir / "keystore.json"),
            "ILLUMA_MASTER_KEY": master_key(config),
            "ILLUMA_INBOX_ROOT": str(config.root / "inbox"),
            "ILLUMA_UI_BASE_URL": config.ui_url,
            "PYTHONUNBUFFERED": "1",
        }
    )
    # Report delivery is Postmark in production: without a token of the caller's, merchants added
    # without --report-email get rendered reports, and run-failure alerts are logged, not e-mailed.
    env.setdefault("ILLUMA_REPORTS_FROM", "reports@illuma.example")
    env.setdefault("ILLUMA_REPORTS_LINK_BASE", f"{config.ui_url}/reports")
    env.setdefault("ILLUMA_ALERTS_TO", "")
    env.update(config.extra_env)
    return env


def cli_env(config: ProdConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for `illuma` commands against this topology (`illuma merchants add`...):
    the processes' environment plus the admin URL, which onboarding a merchant needs."""
    return {**process_env(config, base), "ILLUMA_WAREHOUSE_ADMIN_URL": config.admin_url}


def _bin(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def commands(config: ProdConfig) -> dict[str, list[str]]:
    """The command line of each process."""
    return {
        SANDBOX: [
            _bin("illuma"), "sandbox", "serve", "--host", config.host, "--port", str(config.sandbox_port),
            *config.sandbox_args,
        ],
        CODE_SERVER: [
            _bin("dagster"), "code-server", "start", "-h", config.host, "-p", str(config.grpc_port),
            "-m", DEFINITIONS_MODULE, "-d", str(PROJECT_ROOT), "--location-name", LOCATION_NAME,
            "--use-python-environment-entry-point",
        ],
        WEBSERVER: [
            _bin("dagster-webserver"), "-w", str(config.workspace_file), "-h", config.host,
            "-p", str(config.webserver_port),
        ],
        DAEMON: [_bin("dagster-daemon"), "run", "-w", str(config.workspace_file)],
    }


# --- provisioning -------------------------------------------------------------------------------


def _ident(name: str) -> str:
    import re

    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ProdError(f"{name!r} is not a plain PostgreSQL name (lowercase letters, digits, _)")
    return name


def provision(config: ProdConfig) -> None:
    """Create, if missing, the warehouse database (provisioned: platform schema, the pipeline's
    login) and the Dagster storage database (owned by that login); write DAGSTER_HOME and the
    workspace. Idempotent; as the admin, for provisioning only."""
    import psycopg

    from illuma_pipelines.warehouse import PostgresWarehouse

    for name in (config.dagster_db, config.warehouse_db, config.login):
        _ident(name)
    try:
        admin = psycopg.connect(config.admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise ProdError(
            f"PostgreSQL admin at {_redact(config.admin_url)} is unreachable ({exc}); start the server "
            "or set ILLUMA_PROD_PG_ADMIN_URL"
        ) from exc
    with admin:
        def exists(db: str) -> bool:
            return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db]).fetchone() is not None

        if not exists(config.warehouse_db):
            admin.execute(f"CREATE DATABASE {config.warehouse_db}")
            print(f"created the warehouse database {config.warehouse_db}")
    # The platform schema and the pipeline's login (created if missing, never a superuser).
    PostgresWarehouse(config.warehouse_url, admin_url=config.admin_url).provision()
    with psycopg.connect(config.admin_url, autocommit=True, connect_timeout=5) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config.dagster_db]).fetchone() is None:
            admin.execute(f"CREATE DATABASE {config.dagster_db} OWNER {config.login}")
            print(f"created the Dagster storage database {config.dagster_db} (owner {config.login})")
    config.dagster_home.mkdir(parents=True, exist_ok=True)
    instance_yaml = (PROJECT_ROOT / "deploy" / "dagster.yaml").read_text()
    target = config.dagster_home / "dagster.yaml"
    if not target.exists() or target.read_text() != instance_yaml:
        target.write_text(instance_yaml)
    config.workspace_file.write_text(
        "# Written by `illuma prod up`: the webserver and the daemon reach the code location over gRPC.\n"
        "load_from:\n"
        "  - grpc_server:\n"
        f"      host: {config.host}\n"
        f"      port: {config.grpc_port}\n"
        f"      location_name: {LOCATION_NAME}\n"
    )
    for folder in (config.log_dir, config.run_dir, config.root / "inbox"):
        folder.mkdir(parents=True, exist_ok=True)


def _redact(url: str) -> str:
    from illuma_pipelines.warehouse import _redact as redact

    return redact(url)


# --- processes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """A process `up` started: its pid (also its process group) and its start time, so a pid
    reused by another process is never taken for it."""

    name: str
    pid: int
    start_ticks: int

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks

    def ours(self) -> bool:
        """Whether the process group `up` started is still there. Started in a session of its own,
        the process leads group `pid`. The leader itself, if it is still that process; or, the
        leader gone, the group's other members (runs, the gRPC server's child): the kernel does
        not reuse a pid while a group of that id has members. A pid now held by another process
        (a new start time) means the group is gone and the pid is someone else's."""
        ticks = _start_ticks(self.pid)
        if ticks is not None:
            return ticks == self.start_ticks
        return bool(group_members(self.pid))


# Popen objects of processes this interpreter started (a test, a benchmark): reaped when they end,
# so a zombie never counts as a process left behind.
_CHILDREN: dict[int, subprocess.Popen] = {}


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    for child in list(_CHILDREN.values()):
        child.poll()
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _pid_file(config: ProdConfig, name: str) -> Path:
    return config.run_dir / f"{name}.pid"


def recorded(config: ProdConfig) -> dict[str, Started]:
    """The processes the pid files name (alive or not)."""
    out = {}
    for name in PROCESSES:
        path = _pid_file(config, name)
        if path.exists():
            try:
                data = json.loads(path.read_text())
                out[name] = Started(name, int(data["pid"]), int(data["start_ticks"]))
            except (ValueError, KeyError, TypeError):
                path.unlink()
    return out


def _spawn(config: ProdConfig, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Started:
    log = (config.log_dir / f"{name}.log").open("ab")
    log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
    log.flush()
    proc = subprocess.Popen(
        list(argv), cwd=PROJECT_ROOT, env=dict(env), stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()
    _CHILDREN[proc.pid] = proc
    ticks = _start_ticks(proc.pid)
    if ticks is None:
        raise ProdError(f"{name} exited at once; see {config.log_dir / f'{name}.log'}")
    started = Started(name, proc.pid, ticks)
    _pid_file(config, name).write_text(json.dumps({"pid": proc.pid, "start_ticks": ticks, "argv": list(argv)}))
    return started


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ports(config: ProdConfig) -> dict[str, int]:
    return {SANDBOX: config.sandbox_port, CODE_SERVER: config.grpc_port, WEBSERVER: config.webserver_port}


def _http_json(url: str, payload: dict | None = None, timeout: float = 5.0) -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def graphql(config: ProdConfig, query: str, variables: dict | None = None, timeout: float = 10.0) -> dict:
    """A query to the webserver's GraphQL API; its `data`, or an error naming what failed."""
    body = _http_json(f"{config.ui_url}/graphql", {"query": query, "variables": variables or {}}, timeout)
    if body.get("errors"):
        raise ProdError(f"GraphQL error: {body['errors']}")
    return body["data"]


_LOCATION_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
_DAEMON_QUERY = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"


def location_state(config: ProdConfig) -> str:
    """`loaded`, `loading`, or the code location's load error."""
    data = graphql(config, _LOCATION_QUERY)
    entries = [e for e in data["workspaceOrError"].get("locationEntries", []) if e["name"] == LOCATION_NAME]
    if not entries:
        return "loading"
    entry = entries[0]
    loaded = entry.get("locationOrLoadError") or {}
    if loaded.get("__typename") == "PythonError":
        return f"load error: {loaded.get('message', '').strip()}"
    return "loaded" if entry["loadStatus"] == "LOADED" and loaded.get("__typename") == "RepositoryLocation" else "loading"


def _loaded(config: ProdConfig) -> bool | str:
    state = location_state(config)
    return True if state == "loaded" else state


def _grpc_ping(config: ProdConfig) -> bool | str:
    from dagster._grpc.client import DagsterGrpcClient

    try:
        DagsterGrpcClient(port=config.grpc_port, host=config.host).ping("illuma")
    except Exception as exc:  # any failure to answer means "not yet"; _wait reports the last one
        return f"gRPC not answering: {type(exc).__name__}"
    return True


def unhealthy_daemons(config: ProdConfig) -> list[str]:
    statuses = graphql(config, _DAEMON_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
    healthy = {s["daemonType"] for s in statuses if s["healthy"]}
    return [d for d in REQUIRED_DAEMONS if d not in healthy]


def _wait(what: str, config: ProdConfig, check, started: Started, deadline: float) -> None:
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not started.alive():
            raise ProdError(f"{what}: {started.name} exited; see {_log_tail(config, started.name)}")
        try:
            outcome = check()
        except (OSError, urllib.error.URLError, ValueError, ProdError, KeyError) as exc:
            outcome = str(exc)
        if outcome is True:
            return
        last = str(outcome)
        if last.startswith("load error"):
            raise ProdError(f"{what}: the code location failed to load: {last}")
        time.sleep(0.5)
    raise ProdError(f"{what}: not ready after {config.start_timeout_seconds:.0f} s ({last}); see {_log_tail(config, started.name)}")


def _log_tail(config: ProdConfig, name: str, lines: int = 15) -> str:
    path = config.log_dir / f"{name}.log"
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return str(path)
    return f"{path}:\n    " + "\n    ".join(tail)


def status(config: ProdConfig) -> dict[str, bool]:
    """Which of the topology's processes are running (by their pid files)."""
    found = recorded(config)
    return {name: (name in found and found[name].alive()) for name in PROCESSES}


def up(config: ProdConfig, base_env: Mapping[str, str] | None = None) -> bool:
    """Start the topology; False (and nothing started) when it is already up. Raises ProdError,
    having stopped what it started, when a process does not come up."""
    running = status(config)
    if all(running.values()):
        print(f"already up: the UI is at {config.ui_url} (logs: {config.log_dir})")
        return False
    if any(running.values()):
        alive = ", ".join(n for n, ok in running.items() if ok)
        raise ProdError(f"partly up ({alive} running, the rest not): run `make prod-down` first")
    busy = [f"{name} port {port}" for name, port in ports(config).items() if not port_free(config.host, port)]
    if busy:
        raise ProdError(
            f"in use: {', '.join(busy)}; stop what holds it, or choose other ports "
            "(ILLUMA_PROD_WEBSERVER_PORT, ILLUMA_PROD_GRPC_PORT, ILLUMA_PROD_SANDBOX_PORT)"
        )
    provision(config)
    env = process_env(config, base_env)
    argv = commands(config)
    deadline = time.monotonic() + config.start_timeout_seconds
    try:
        sandbox = _spawn(config, SANDBOX, argv[SANDBOX], env)
        code = _spawn(config, CODE_SERVER, argv[CODE_SERVER], env)
        # The webserver reads the location once at start: it starts when the gRPC server answers.
        _wait("the code server", config, lambda: _grpc_ping(config), code, deadline)
        _wait("the sandbox", config, lambda: _http_json(f"{config.sandbox_url}/health").get("status") == "ok",
              sandbox, deadline)
        web = _spawn(config, WEBSERVER, argv[WEBSERVER], env)
        _wait("the webserver", config, lambda: bool(_http_json(f"{config.ui_url}/server_info")), web, deadline)
        _wait("the code location", config, lambda: _loaded(config), code, deadline)
        daemon = _spawn(config, DAEMON, argv[DAEMON], env)
        _wait("the daemon", config, lambda: _daemon_healthy(config), daemon, deadline)
    except BaseException:
        down(config, quiet=True)
        raise
    print(f"up: the UI is at {config.ui_url}; code location {LOCATION_NAME} on gRPC {config.host}:{config.grpc_port}; "
          f"sandbox at {config.sandbox_url}; logs in {config.log_dir}")
    return True


def down(config: ProdConfig, timeout: float = 30.0, quiet: bool = False) -> list[str]:
    """Stop what `up` started (its process groups), wait until none of their processes is left,
    and mark failed the runs that the stop interrupted. The names of the processes stopped."""
    found = recorded(config)
    stopped: list[str] = []
    took: dict[str, float] = {}
    for name in reversed(PROCESSES):
        started = found.get(name)
        if started is None:
            continue
        if started.ours():
            began = time.monotonic()
            _stop_group(started, timeout)
            stopped.append(name)
            took[name] = time.monotonic() - began
        _pid_file(config, name).unlink(missing_ok=True)
        _CHILDREN.pop(started.pid, None)
    if stopped:
        _fail_interrupted_runs(config)
    if not quiet:
        print(
            f"stopped: {', '.join(f'{n} ({took[n]:.1f} s)' for n in stopped)}"
            if stopped else "nothing to stop: the topology is not running"
        )
    return stopped


def _stop_group(started: Started, timeout: float) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(started.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_members(started.pid):
                return
            time.sleep(0.2)
    left = group_members(started.pid)
    if left:
        raise ProdError(f"{started.name}: processes {left} of group {started.pid} survived SIGKILL")


def _fail_interrupted_runs(config: ProdConfig) -> None:
    """Runs left in flight by the stop (their process was in the code server's group) are marked
    failed here, in a process with the topology's environment: run monitoring cannot tell, with
    the default launcher, that their process is gone, and they would hold their merchant's slot."""
    if not (config.dagster_home / "dagster.yaml").exists():
        return
    out = subprocess.run(
        [sys.executable, "-m", "illuma_pipelines.prod", "fail-interrupted-runs"],
        cwd=PROJECT_ROOT, env=process_env(config), capture_output=True, text=True, timeout=120,
    )
    if out.returncode != 0:
        print(f"warning: could not mark interrupted runs failed: {out.stderr.strip()[-500:]}", file=sys.stderr)
    elif out.stdout.strip():
        print(out.stdout.strip())


def fail_interrupted_runs() -> int:
    """In the topology's environment, after `down`: fail every run still in flight (none of them
    can be alive: `down` stopped the process group that ran them) and free its pool slots."""
    import dagster as dg

    from illuma_pipelines.run_slots import free_run_slots

    with dg.DagsterInstance.get() as instance:
        in_flight = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
        records = instance.get_run_records(dg.RunsFilter(statuses=in_flight))
        for record in records:
            run = record.dagster_run
            instance.report_run_failed(
                run, "Interrupted by `illuma prod down` (its process group was stopped); re-run the partition."
            )
            free_run_slots(instance, run.run_id)
        if records:
            print(f"marked failed: {len(records)} run(s) interrupted by the stop")
    return 0


def _daemon_healthy(config: ProdConfig) -> bool | str:
    missing = unhealthy_daemons(config)
    return True if not missing else f"not healthy yet: {', '.join(missing)}"


@contextlib.contextmanager
def open_instance(config: ProdConfig) -> Iterator[dg.DagsterInstance]:
    """The topology's Dagster instance (PostgreSQL storage), opened in this process: for a test or a
    benchmark reading runs. DAGSTER_PG_URL is set only while the instance is built."""
    import dagster as dg

    previous = os.environ.get("DAGSTER_PG_URL")
    os.environ["DAGSTER_PG_URL"] = config.dagster_pg_url
    try:
        instance = dg.DagsterInstance.from_config(str(config.dagster_home))
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_PG_URL", None)
        else:
            os.environ["DAGSTER_PG_URL"] = previous
    with instance:
        yield instance


def schedule_state(config: ProdConfig, schedule_name: str, cron_schedule: str, since: float = 0.0) -> Any:
    """Schedule `schedule_name`'s instigator state as the daemon records it for this topology's
    code location (on by default in code), running since timestamp `since`."""
    from dagster._core.definitions.repository_definition.valid_definitions import (
        SINGLETON_REPOSITORY_NAME,
    )
    from dagster._core.remote_origin import (
        GrpcServerCodeLocationOrigin,
        RemoteInstigatorOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        InstigatorType,
        ScheduleInstigatorData,
    )

    location = GrpcServerCodeLocationOrigin(host=config.host, port=config.grpc_port, location_name=LOCATION_NAME)
    origin = RemoteInstigatorOrigin(RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME), schedule_name)
    return InstigatorState(
        origin, InstigatorType.SCHEDULE, InstigatorStatus.DECLARED_IN_CODE, ScheduleInstigatorData(cron_schedule, since)
    )


def running_since(config: ProdConfig, schedule_name: str, cron_schedule: str, since: float) -> None:
    """Record schedule `schedule_name` (on by default in code) as running since timestamp `since`,
    before the daemon first sees it. The daemon then evaluates the ticks the schedule missed since
    then (at most `max_catchup_runs`, 5), as it does after a deployment was down: how a test or the
    benchmark has the daemon evaluate a real tick of the real cron now instead of at 06:00 UTC.
    Call after `provision` and before `up`; refused once the daemon has recorded the schedule."""
    state = schedule_state(config, schedule_name, cron_schedule, since)
    with open_instance(config) as instance:
        if instance.get_instigator_state(state.instigator_origin_id, state.selector_id) is not None:
            raise ProdError(f"the daemon has already recorded {schedule_name}: use a fresh Dagster storage database")
        instance.add_instigator_state(state)


def print_status(config: ProdConfig) -> int:
    running = status(config)
    for name, ok in running.items():
        print(f"{name:12} {'running' if ok else 'stopped'}")
    if all(running.values()):
        print(f"UI: {config.ui_url}; logs: {config.log_dir}")
        return 0
    return 1 if any(running.values()) else 3


def print_env(config: ProdConfig) -> int:
    """Shell exports for `illuma` commands against this topology (onboarding needs the admin URL)."""
    import shlex

    env = cli_env(config)
    for key in sorted(env):
        if key != "ILLUMA_MASTER_KEY" and env[key] != os.environ.get(key):
            print(f"export {key}={shlex.quote(env[key])}")
    print(f"export ILLUMA_MASTER_KEY=\"$(cat {shlex.quote(str(config.keys_dir / 'master.key'))})\"")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m illuma_pipelines.prod")
    parser.add_argument("action", choices=["up", "down", "status", "env", "fail-interrupted-runs"])
    args = parser.parse_args(argv)
    if args.action == "fail-interrupted-runs":
        return fail_interrupted_runs()
    return run_action(args.action)


def run_action(action: str) -> int:
    """`illuma prod <action>`: up, down, status or env, with the ILLUMA_PROD_* settings."""
    try:
        config = ProdConfig.from_env()
        if action == "up":
            up(config)
            return 0
        if action == "down":
            down(config)
            return 0
        if action == "env":
            return print_env(config)
        return print_status(config)
    except ProdError as exc:
        print(f"illuma prod: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
