"""`make demo`: onboard demo merchants and materialize their recent days on the embedded default.

Everything runs for real: the project-local Dagster instance records the runs (so `make ui`
shows them), the environment's warehouse holds the data (the DuckDB file unless
ILLUMA_WAREHOUSE_URL names another: `illuma_pipelines.environment`, as for the CLI and the
assets), and the merchants' partitions come from the same registry sync the merchants sensor
performs. It sits on top, like the CLI: it runs the code location's jobs and sensors' functions.

Runs cannot wedge it (issue 11). The demo executes its runs in its own process, with no daemon,
so before it starts it fails the runs a dead process left STARTED (killed, crashed) and frees
their pool slots (`recover_dead_runs`, also `illuma runs recover` and `make ui`); before each run
it waits, saying so, while a live run of another process holds the `warehouse` pool; and SIGINT
(Ctrl-C) or SIGTERM stop it within seconds, its sandbox included (`StopSignals`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from urllib.parse import quote, urlsplit

from illuma_pipelines.environment import PRODUCTION, current_environment, environment_name
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.paths import PROJECT_ROOT, var_dir
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.reports.store import default_outbox_dir, reports_root
from illuma_pipelines.warehouse import PLATFORM_SCHEMA, Warehouse

if TYPE_CHECKING:
    import dagster as dg

DEMO_MERCHANTS = {
    "acme_auto_parts": ("Acme Auto Parts", ("amazon", "ebay", "walmart")),
    "northwoods_power": ("Northwoods Outdoor Power", ("amazon", "ebay")),
    "prairie_ag_supply": ("Prairie Ag & Industrial Supply", ("amazon", "walmart")),
}

INSTANCE_YAML = """\
# Project-local Dagster instance (SQLite storage) for the demo and `make ui`.
# Each merchant's DuckDB data is a file of its own (ADR 0001): one run per merchant at a time (the
# `illuma/merchant` tag) and, inside a run, one step at a time that opens it (the executor's
# `illuma/warehouse` limit, assets/concurrency.py); different merchants run side by side, three at
# once (1.79x three sequential runs on 2 cores, bench/isolation.py). As many `warehouse` pool
# slots as runs: a run never waits inside for a slot, where Dagster's executor busy-waits.
concurrency:
  runs:
    max_concurrent_runs: 3
    tag_concurrency_limits:
      - key: "illuma/merchant"
        value:
          applyLimitPerUniqueValue: true
        limit: 1
  pools:
    default_limit: 3
# A run whose process died must not keep the `warehouse` pool. With `make ui` the daemon fails
# runs that do not start or cancel within 3 minutes and runs still going after an hour (the
# default run launcher cannot see whether a run's process is alive: that limit is what ends a run
# whose process was killed), and frees the pool slots of runs that ended 30 s ago. Resuming is
# off: the default run launcher cannot resume a run, and a merchant-day run is simply re-run.
# `make demo` and `make ui` first fail the runs whose process is gone (`illuma runs recover`).
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_runtime_seconds: 3600
  max_resume_run_attempts: 0
  poll_interval_seconds: 30
  free_slots_after_run_end_seconds: 30
telemetry:
  enabled: false
"""
_CONCURRENCY = INSTANCE_YAML[INSTANCE_YAML.index("# Each merchant") : INSTANCE_YAML.index("# A run whose process died")]
_CONCURRENCY_2 = """\
# Each merchant's DuckDB data is a file of its own (ADR 0001): one run per merchant at a time (the
# `illuma/merchant` tag) and, inside a run, one step at a time that opens it (the executor's
# `illuma/warehouse` limit, assets/concurrency.py); different merchants run side by side, two at
# once on this 2-core default (the `warehouse` pool and the run limit).
concurrency:
  runs:
    max_concurrent_runs: 2
    tag_concurrency_limits:
      - key: "illuma/merchant"
        value:
          applyLimitPerUniqueValue: true
        limit: 1
  pools:
    default_limit: 2
"""
_RUN_MONITORING_BLOCK = INSTANCE_YAML[INSTANCE_YAML.index("# A run whose process died") : INSTANCE_YAML.index("telemetry:")]
_POOL_OF_ONE = """\
# Project-local Dagster instance (SQLite storage) for the demo and `make ui`.
# DuckDB allows one writer process per file: every warehouse writer shares the `warehouse` pool.
concurrency:
  pools:
    default_limit: 1
"""
_TELEMETRY = "telemetry:\n  enabled: false\n"
# dagster.yaml files written by earlier versions of this module: replaced by INSTANCE_YAML.
_EARLIER_INSTANCE_YAMLS = (
    # The one before the pool slots were tied to the runs: 2 of each.
    INSTANCE_YAML.replace(_CONCURRENCY, _CONCURRENCY_2),
    # One pool slot, with run monitoring; and before it, without.
    _POOL_OF_ONE + _RUN_MONITORING_BLOCK + _TELEMETRY,
    _POOL_OF_ONE + _TELEMETRY,
)


class DemoError(RuntimeError):
    """The demo cannot go on; the message says what is wrong and what to do."""


class DemoStopped(KeyboardInterrupt):
    """SIGINT or SIGTERM asked the demo to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# ------------------------------------------------------------------------------ instance home
def ensure_local_instance_home() -> Path:
    """DAGSTER_HOME (default var/dagster_home) with a dagster.yaml, created if missing.

    A dagster.yaml written by an earlier version of this module is replaced by the current one; a
    hand-written one without `run_monitoring` gets ours appended (the rest is kept as written).
    """
    home = Path(os.environ.get("DAGSTER_HOME") or var_dir() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_YAML)
    else:
        text = config.read_text()
        updated = upgraded_instance_yaml(text)
        if updated != text:
            config.write_text(updated)
            print(f"{config}: run monitoring enabled (dead runs no longer hold the warehouse pool)", file=sys.stderr)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def upgraded_instance_yaml(text: str) -> str:
    """`text` (a dagster.yaml) with run monitoring: ours when we wrote it, else merged in."""
    import yaml

    if text == INSTANCE_YAML or text in _EARLIER_INSTANCE_YAMLS:
        return INSTANCE_YAML
    try:
        settings = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise DemoError(f"the Dagster instance config is not valid YAML ({exc}): fix or delete it") from exc
    if not isinstance(settings, dict) or "run_monitoring" in settings:
        return text  # the owner's own run monitoring settings stand
    return text.rstrip("\n") + "\n" + _RUN_MONITORING_BLOCK


def instance_home() -> Path:
    """The Dagster home the CLI works on: the project-local one (created if missing), or in
    production DAGSTER_HOME, which must hold the production dagster.yaml."""
    if environment_name() != PRODUCTION:
        return ensure_local_instance_home()
    home = os.environ.get("DAGSTER_HOME")
    if not home or not (Path(home) / "dagster.yaml").exists():
        raise DemoError(
            "ILLUMA_ENV=production: set DAGSTER_HOME to the folder holding the production "
            "dagster.yaml (a copy of deploy/dagster.yaml); the project-local instance is for local use only"
        )
    return Path(home)


def catalog_sensor_requests(instance: dg.DagsterInstance, definitions: dg.Definitions) -> list[dg.RunRequest]:
    """One evaluation of the catalog inbox sensor, with the code location's resources: the run
    requests it makes (none for a file it has seen or loaded). The cursor is kept on the instance,
    as the daemon keeps it."""
    import dagster as dg

    from sensors.catalog import catalog_inbox_sensor

    cursor_key = "illuma/demo/catalog_inbox_sensor_cursor"
    logging.disable(logging.INFO)  # the sensor's own info lines: the demo prints one per run
    try:
        with dg.build_sensor_context(
            instance=instance,
            cursor=instance.run_storage.get_cursor_values({cursor_key}).get(cursor_key),
            resources={"inbox": definitions.resources["inbox"]},
        ) as context:
            result = catalog_inbox_sensor(context)
    finally:
        logging.disable(logging.NOTSET)
    if isinstance(result, dg.SkipReason):
        return []
    if result.cursor is not None:
        instance.run_storage.set_cursor_values({cursor_key: result.cursor})
    return list(result.run_requests or [])


def _metadata_value(result: dg.ExecuteInProcessResult, key: str) -> object:
    for event in result.get_asset_materialization_events():
        entry = event.materialization.metadata.get(key)
        if entry is not None:
            return entry.value
    return None


# How far the demo's first day reaches back: every demo merchant then has at least two
# settlements per channel (Amazon and Walmart settle every 14 days and publish a few days later).
HISTORY_DAYS = 35


def history_config(days: int) -> dict:
    """Run config that makes a merchant-day run's windowed extracts reach back `days` days before
    their day (their `lookback_hours`): the run lands that history in its own partition, and the
    core keeps the latest version of each record, as onboarding a merchant does."""
    from assets.extracts import EXTRACT_SPECS, extract_assets

    windowed = {spec.key for spec in EXTRACT_SPECS if spec.windowed}
    return {
        "ops": {
            a.op.name: {"config": {"lookback_hours": days * 24}}
            for a in extract_assets
            if a.key in windowed
        }
    }


def demo_days(days: int, today: date | None = None) -> list[str]:
    """The `days` complete UTC days before today, oldest first."""
    today = today or datetime.now(UTC).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(days, 0, -1)]


# ------------------------------------------------------------------------------- the sandbox
@contextlib.contextmanager
def local_sandbox() -> Iterator[str]:
    """This checkout's sandbox on its usual port (ILLUMA_SANDBOX_URL, as the assets read it):
    started here and stopped on exit, or the one `make ui` already serves there once it has shown
    it is this checkout's, with the demo's seed. Anything else on the port is a DemoError."""
    from illuma_pipelines.sandbox.server import SandboxConfig, SandboxServer
    from resources import LOCAL_SANDBOX_URL

    url = os.environ.get("ILLUMA_SANDBOX_URL", LOCAL_SANDBOX_URL).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise DemoError(f"ILLUMA_SANDBOX_URL={url!r} is not http://<host>:<port>, e.g. {LOCAL_SANDBOX_URL}")
    config = SandboxConfig()
    if _port_open(parts.hostname, parts.port):
        check_sandbox_identity(url, config.seed)
        print(f"sandbox: using this checkout's sandbox already serving at {url} (seed {config.seed})")
        yield url
        return
    with SandboxServer(config, host=parts.hostname, port=parts.port) as server:
        print(f"sandbox: started this checkout's sandbox at {server.base_url} (seed {config.seed}); it stops with the demo")
        yield server.base_url


def check_sandbox_identity(url: str, seed: int) -> None:
    """Raise DemoError unless `url` is this checkout's sandbox with world seed `seed`."""
    import requests

    from illuma_pipelines.sandbox.server import IDENTITY_HEADERS, SANDBOX_SERVICE

    move = (
        "stop it, or give the sandbox a free port with ILLUMA_SANDBOX_URL=http://127.0.0.1:<port> "
        "(the demo and the assets both read it)"
    )
    try:
        response = requests.get(f"{url}/health", timeout=3)
        answer = f"HTTP {response.status_code}"
    except requests.RequestException as exc:
        raise DemoError(
            f"{url} is taken by something that is not the ILLUMA sandbox (GET /health failed: "
            f"{type(exc).__name__}): {move}"
        ) from exc
    service, served_seed, checkout = (response.headers.get(h) for h in IDENTITY_HEADERS)
    if response.status_code != 200 or service != SANDBOX_SERVICE:
        raise DemoError(
            f"{url} is taken by something that is not the ILLUMA sandbox (GET /health: {answer}, "
            f"service {service or 'unnamed'}): {move}"
        )
    if checkout != quote(str(PROJECT_ROOT)):
        raise DemoError(
            f"the ILLUMA sandbox at {url} runs from another checkout ({checkout}), whose data may "
            f"differ from this one's: {move}"
        )
    if served_seed != str(seed):
        raise DemoError(
            f"the ILLUMA sandbox at {url} serves world seed {served_seed}, not the demo's {seed}: "
            f"restart it with `illuma sandbox serve --seed {seed}`, or {move}"
        )


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# -------------------------------------------------------------------------- stopping cleanly
@dataclass
class StopSignals:
    """SIGINT and SIGTERM stop the demo within seconds.

    Outside a run they raise DemoStopped in the main thread at once. During a run Dagster holds
    them back (`execute_in_process` replaces the handlers) until the running step's next Python
    instruction, where they fail the run, which frees its pool slots; the demo then stops. A
    watcher thread sees every signal through a wakeup fd, whoever's handler is installed: if the
    demo has not stopped `grace` seconds after the signal (a step stuck in native code, a wait
    Dagster does not interrupt), or at a second signal, it marks this process's runs failed,
    frees their pool slots and exits the process (the in-process sandbox goes with it).
    """

    instance: dg.DagsterInstance | None = None
    grace: float = 6.0
    requested: int = 0  # the first stop signal's number
    current: str = ""  # what the demo is doing, for the stop message
    _done: threading.Event = field(default_factory=threading.Event)
    _claims: threading.Lock = field(default_factory=threading.Lock)
    _exiting: bool = False
    _out: TextIO = sys.stdout

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        # The console as it is now: Dagster's log capture redirects fd 1 during runs.
        try:
            self._out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
        except (AttributeError, OSError, ValueError):
            self._out = sys.stdout
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._previous = {s: signal.signal(s, self._raise) for s in (signal.SIGINT, signal.SIGTERM)}
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        threading.Thread(target=self._watch, name="demo-stop-watcher", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        if not hasattr(self, "_previous"):
            return
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._writer.close()
        if self._out is not sys.stdout:
            self._out.close()

    def _raise(self, signum: int, _frame: object) -> None:
        self.requested = self.requested or signum
        raise DemoStopped(signum)

    def check(self) -> None:
        """Raise DemoStopped if a signal came while Dagster held it back."""
        if self.requested:
            raise DemoStopped(self.requested)

    def _watch(self) -> None:
        try:
            self._watch_signals()
        finally:
            self._reader.close()

    def _watch_signals(self) -> None:
        deadline = None
        while not self._done.is_set():
            timeout = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._reader], [], [], timeout)
            if self._done.is_set():
                return
            if ready:
                data = self._reader.recv(16)
                signums = [b for b in data if b in (signal.SIGINT, signal.SIGTERM)]
                if not signums:
                    continue
                if self.requested and deadline is not None:
                    self._hard_stop("a second signal")
                self.requested = self.requested or signums[0]
                self._say(f"\n{signal.Signals(self.requested).name}: stopping the demo")
                deadline = time.monotonic() + self.grace
            elif deadline is not None and time.monotonic() >= deadline:
                self._hard_stop(f"no stop within {self.grace:.0f} s")

    def guard_pool_claims(self, instance: dg.DagsterInstance) -> None:
        """Route this process's pool claims through a lock the hard stop takes: Dagster's executor
        goes on running steps in the main thread while the watcher fails the runs, and a slot it
        claimed after their slots were freed stayed claimed by a failed run (seen in CI). Once the
        hard stop holds the lock, every claim answers "blocked" until the process exits."""
        from dagster._utils.concurrency import ConcurrencyClaimStatus, ConcurrencySlotStatus

        self.instance = instance
        storage = instance.event_log_storage
        claim = storage.claim_concurrency_slot

        def guarded(concurrency_key: str, run_id: str, step_key: str, priority: int | None = None):
            with self._claims:
                if self._exiting:
                    return ConcurrencyClaimStatus(concurrency_key, ConcurrencySlotStatus.BLOCKED)
                return claim(concurrency_key, run_id, step_key, priority)

        storage.claim_concurrency_slot = guarded

    def _hard_stop(self, why: str) -> None:
        name = signal.Signals(self.requested).name
        with self._claims:  # a claim under way ends first; none starts after
            self._exiting = True
        try:
            from sensors.runs import abandon_own_runs

            _terminate_children()  # dbt, worker processes: they would outlive us and hold the warehouse
            for line in abandon_own_runs(self.instance, f"{name}, then {why}") if self.instance else []:
                self._say(line)
        finally:
            self._say(f"demo stopped by {name} ({why}): exiting now")
            os._exit(128 + self.requested)

    def _say(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # the console closed as the demo ends
            print(line, file=self._out, flush=True)


def _terminate_children() -> None:
    """SIGTERM this process's child processes (Linux /proc; elsewhere nothing to find)."""
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == me:
                os.kill(int(stat.parent.name), signal.SIGTERM)
        except (OSError, IndexError, ValueError):
            continue


# ------------------------------------------------------------------------------------ the demo
def run_demo(days: int = 3) -> int:
    import dagster as dg

    home = ensure_local_instance_home()
    with StopSignals() as stop:
        try:
            instance = dg.DagsterInstance.get()
            stop.guard_pool_claims(instance)
            from sensors.runs import recover_dead_runs

            checks = recover_dead_runs(instance, by="make demo")
            for check in checks:
                print(check.line())
            if not any(c.cleaned for c in checks):
                print("runs left behind by a dead process: none")
            with local_sandbox() as sandbox_url:
                return _run_demo(instance, home, days, stop, sandbox_url)
        except DemoStopped as exc:
            during = f" during {stop.current}" if stop.current else ""
            print(
                f"demo stopped by {exc.name}{during}; no run of it is left running and the sandbox it "
                "started is stopped. `make demo` starts over (re-runs replace their partitions).",
                file=sys.stderr,
            )
            return exc.exit_code


# The demo merchants' repricing rules, as a merchant writes its pricing_rules file: match the buy
# box with a 10% margin over landed cost after Amazon's 12% Automotive referral fee; spark plugs
# and filters, which sell on price, beat the lowest offer by 1%.
DEMO_PRICING_RULES = (
    "part_type,strategy,beat_by,min_margin_percent,referral_fee_percent,fulfillment_fee\r\n"
    "*,match_buy_box,,10,12,0\r\n"
    "Spark Plug,beat_lowest_by,1%,8,12,0\r\n"
    "Oil Filter,beat_lowest_by,1%,8,12,0\r\n"
)


def drop_files_in_inbox(sandbox_url: str, merchant_ids: list[str], inbox_root: Path) -> list[Path]:
    """Each merchant's catalog file, as its ERP exports it (served by the sandbox), dropped in its
    catalog inbox folder, and its pricing rules in its pricing_rules folder: what a merchant does,
    so the catalog inbox sensor and the recommendations asset find them there."""
    import requests

    from sensors.catalog import SETTLE_SECONDS

    dropped = []
    for merchant_id in merchant_ids:
        rules = inbox_root / merchant_id / "pricing_rules"
        rules.mkdir(parents=True, exist_ok=True)
        (rules / "pricing_rules.csv").write_text(DEMO_PRICING_RULES)
        response = requests.get(f"{sandbox_url}/files/{merchant_id}/catalog.csv", timeout=30)
        if not response.ok:
            raise DemoError(f"the sandbox served no catalog for {merchant_id}: HTTP {response.status_code}")
        folder = inbox_root / merchant_id / "catalog"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{merchant_id}-catalog.csv"
        partial = path.with_suffix(".part")  # not a catalog suffix: the sensor ignores it
        partial.write_bytes(response.content)
        # Complete when renamed into place: dated as settled, so this tick of the sensor takes it.
        settled = time.time() - SETTLE_SECONDS - 1
        os.utime(partial, (settled, settled))
        partial.replace(path)
        dropped.append(path)
    return dropped


# The tables the demo's closing lines count, per merchant: the core, the money and the analytics
# a merchant's reports come from.
SUMMARY_TABLES = (
    "core_orders", "core_order_lines", "core_inventory_snapshots", "catalog_parts", "core_settlements",
    "core_settlement_lines", "core_financial_events", "settlement_reconciliation", "sku_profit_monthly",
)


def report_periods(warehouse: Warehouse, merchant_id: str) -> list[str]:
    """The periods of the merchant's rendered reports (platform.reports)."""
    with warehouse.connect() as conn:
        return [p for (p,) in conn.fetchall(
            f"SELECT period FROM {PLATFORM_SCHEMA}.reports WHERE merchant_id = ? ORDER BY period", [merchant_id]
        )]


def _money(amount: object, currency: str) -> str:
    return f"{currency} {amount:,.2f}"


def money_summary(warehouse: Warehouse, merchant_id: str) -> list[str]:
    """A few lines on a merchant's money, read from its analytics models: settlements per channel
    and how many do not add up (each with its difference), net proceeds, and fees by category."""
    schema = merchant_schema(merchant_id)
    with warehouse.merchant_scope(merchant_id) as conn:
        if not conn.table_exists(schema, "settlement_reconciliation"):
            return [f"{merchant_id}: no analytics built"]
        settlements = conn.fetchall(
            f"SELECT channel, settlement_id, currency, adds_up, difference, net_proceeds "
            f"FROM {schema}.settlement_reconciliation ORDER BY channel, settlement_id"
        )
        fees = conn.fetchall(
            f"SELECT currency, fee_category, SUM(amount) FROM {schema}.fees_by_category_daily "
            "WHERE category_group = 'fee' GROUP BY currency, fee_category ORDER BY currency, SUM(amount)"
        )
    per_channel: dict[str, int] = {}
    net: dict[str, object] = {}
    for channel, _, currency, _, _, proceeds in settlements:
        per_channel[channel] = per_channel.get(channel, 0) + 1
        net[currency] = net.get(currency, 0) + (proceeds or 0)  # type: ignore[operator]
    flagged = [(c, i, cur, d) for c, i, cur, ok, d, _ in settlements if not ok]
    channels = ", ".join(f"{c} {n}" for c, n in sorted(per_channel.items()))
    lines = [
        f"{merchant_id}: {len(settlements)} settlements ({channels or 'none'}), {len(flagged)} flagged; "
        f"net proceeds {', '.join(_money(v, c) for c, v in sorted(net.items())) or 'none'}"
    ]
    if fees:
        lines.append("    fees: " + ", ".join(f"{category} {_money(amount, currency)}" for currency, category, amount in fees))
    lines += [
        f"    flagged: {channel} {sid} does not add up by {_money(diff, currency)}"
        for channel, sid, currency, diff in flagged
    ]
    return lines


def _run_demo(
    instance: dg.DagsterInstance, home: Path, days: int, stop: StopSignals, sandbox_url: str
) -> int:
    import dagster as dg

    from assets.partitions import MERCHANT_DIM, MONTH_DIM, merchant_date_key
    from illuma_pipelines.definitions import defs
    from sensors.analytics import analytics_run_requests
    from sensors.audit import audit_run_materializations
    from sensors.merchants import sync_merchant_partitions
    from sensors.reports import previous_month
    from sensors.runs import (
        HOST_TAG,
        PID_TAG,
        WAREHOUSE_POOL,
        free_slots_of_finished_runs,
        wait_for_pool,
    )
    from sensors.tags import merchant_run_tags

    # The same warehouse the code location's resources resolve (`defs()` below).
    url = current_environment().warehouse_url
    warehouse = Warehouse.from_url(url)
    for merchant_id, (name, channels) in DEMO_MERCHANTS.items():
        add_merchant(
            warehouse,
            merchant_id,
            display_name=name,
            channels={c: ChannelConnection(c, f"sandbox:{merchant_id}") for c in channels},
            # Where its reports go: the local delivery writes them to var/outbox/<merchant>/.
            report_email=f"reports@{merchant_id.replace('_', '-')}.example",
            actor="demo",
        )
    changes = sync_merchant_partitions(instance, warehouse)
    print(f"merchants registered: {len(DEMO_MERCHANTS)}; new partitions: {', '.join(changes.to_add) or 'none'}")

    definitions = defs()
    inbox = definitions.resources["inbox"]
    dropped = drop_files_in_inbox(sandbox_url, list(DEMO_MERCHANTS), inbox.root_path())
    print(f"catalog and pricing rule files dropped in the inbox: {inbox.root_path()}/<merchant>/ ({len(dropped)} catalogs)")
    # What the steps print (dbt's own log lines) goes to one file per merchant, as the UI's compute
    # logs keep it (and as an erasure deletes it): the console shows one line per run.
    log_dir = var_dir() / "logs" / "demo"
    log_dir.mkdir(parents=True, exist_ok=True)
    step_output = {m: (log_dir / f"{m}.log").open("w") for m in DEMO_MERCHANTS}
    print(f"step output (dbt and the like): {log_dir}/<merchant>.log")
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}

    def quiet(level: str) -> dict:
        return {"loggers": {"console": {"config": {"log_level": level}}}}

    def execute(
        job_name: str,
        merchant_id: str,
        day: str | None,
        request: dg.RunRequest | None = None,
        console: str = "WARNING",
        run_config: dict | None = None,
        partition_key: str | dg.MultiPartitionKey | None = None,
    ) -> dg.ExecuteInProcessResult:
        """Run a merchant-day partition of `job_name` (or, for a per-merchant job, what a sensor's
        `request` asks) in this process, once the warehouse pool has a slot."""
        stop.check()
        wait_for_pool(instance, WAREHOUSE_POOL)
        stop.current = f"{job_name} {day or ''} {merchant_id}"
        # A merchant-day calls the merchant's marketplaces: its run is tagged with them (ADR 0006).
        channels_called = DEMO_MERCHANTS[merchant_id][1] if job_name == "merchant_daily_job" else ()
        try:
            with contextlib.redirect_stdout(step_output[merchant_id]):
                result = definitions.resolve_job_def(job_name).execute_in_process(
                    instance=instance,
                    partition_key=partition_key or (merchant_date_key(merchant_id, day) if day else merchant_id),
                    tags={**merchant_run_tags(merchant_id, channels_called), **(request.tags if request else {}), **tags},
                    raise_on_error=False,
                    run_config={**quiet(console), **(request.run_config if request else {}), **(run_config or {})},
                )
        finally:
            # A stop signal that lands while a step is claiming its slot fails the run with the
            # claim recorded but never released (seen in CI): an ended run's slots go with it.
            free_slots_of_finished_runs(instance)
        stop.current += f" (run {result.run_id[:8]}, {result.dagster_run.status.value})"
        # No daemon runs the audit sensor here: audit each run as it ends.
        audit_run_materializations(instance, result.run_id, warehouse)
        stop.check()  # a signal Dagster held back during the run
        stop.current = ""
        return result

    try:
        started, failed = time.monotonic(), []
        # No daemon runs the catalog inbox sensor here: evaluate it, and run what it requests.
        for request in catalog_sensor_requests(instance, definitions):
            merchant_id = request.partition_key
            # The line below says what was rejected: the console shows the run's errors only.
            result = execute("catalog_import_job", merchant_id, None, request, console="ERROR")
            read, rejected = _metadata_value(result, "rows_read"), _metadata_value(result, "rows_rejected")
            print(
                f"  catalog {merchant_id:<20} {'ok' if result.success else 'FAILED'}  run {result.run_id[:8]}  "
                f"rows read: {read}, rejected: {rejected} (reasons in catalog_rejects)"
            )
            if not result.success:
                failed.append(("catalog", merchant_id, result.run_id))
        dates = demo_days(days)
        for day in dates:
            for merchant_id in DEMO_MERCHANTS:
                # The first day reaches back HISTORY_DAYS, as a merchant's onboarding does.
                history = history_config(HISTORY_DAYS) if day == dates[0] else {}
                result = execute("merchant_daily_job", merchant_id, day, run_config=history)
                status = "ok" if result.success else "FAILED"
                print(f"  {day} {merchant_id:<20} {status}  run {result.run_id[:8]}")
                if not result.success:
                    failed.append((day, merchant_id, result.run_id))

        print(f"\n{len(dates) * len(DEMO_MERCHANTS) - len(failed)} of {len(dates) * len(DEMO_MERCHANTS)} "
              f"merchant-day partitions materialized in {time.monotonic() - started:.0f} s")
        # No daemon runs the analytics sensor here: one dbt build per merchant, over all its days.
        for request in analytics_run_requests(list(DEMO_MERCHANTS)):
            merchant_id = request.partition_key
            result = execute("merchant_analytics_job", merchant_id, None, request)
            warned = sum(1 for c in result.get_asset_check_evaluations() if not c.passed)
            print(
                f"  analytics {merchant_id:<20} {'ok' if result.success else 'FAILED'}  run {result.run_id[:8]}  "
                f"dbt checks warning: {warned}"
            )
            if not result.success:
                failed.append(("analytics", merchant_id, result.run_id))
        # The reports the schedules and the settlement sensor would ask for: the last complete
        # month's, and one per closed settlement, delivered to the outbox.
        month = previous_month(datetime.now(UTC))
        for merchant_id in DEMO_MERCHANTS:
            key = dg.MultiPartitionKey({MONTH_DIM: month, MERCHANT_DIM: merchant_id})
            ok = True
            for job_name, partition in (("monthly_report_job", key), ("settlement_report_job", merchant_id)):
                result = execute(job_name, merchant_id, None, partition_key=partition)
                if not result.success:
                    ok = False
                    failed.append((job_name, merchant_id, result.run_id))
            periods = report_periods(warehouse, merchant_id)
            print(f"  reports {merchant_id:<20} {'ok' if ok else 'FAILED'}  {len(periods)} rendered and sent: {', '.join(periods)}")
        # The daily PII purge, as pii_purge_schedule runs it after extraction.
        for merchant_id in DEMO_MERCHANTS:
            result = execute("pii_purge_job", merchant_id, dates[-1])
            removed = next(
                (e.materialization.metadata["rows_affected"].value for e in result.get_asset_materialization_events()),
                None,
            )
            print(f"  PII purge {merchant_id:<20} {'ok' if result.success else 'FAILED'}  values removed: {removed}")
            if not result.success:
                failed.append((dates[-1], merchant_id, result.run_id))
    finally:
        for handle in step_output.values():
            handle.close()
    print("money (from the analytics models; accrual basis, amounts signed for the merchant):")
    for merchant_id in DEMO_MERCHANTS:
        for line in money_summary(warehouse, merchant_id):
            print(f"  {line}")
    print("rows in the main tables (every table: `make ui` or the warehouse):")
    # Each merchant through its own scope: the platform's connection cannot see merchant tables.
    for merchant_id in warehouse.merchant_ids():
        schema = merchant_schema(merchant_id)
        with warehouse.merchant_scope(merchant_id) as conn:
            tables = conn.base_tables(schema)
            counts = [f"{t} {conn.row_count(schema, t)}" for t in SUMMARY_TABLES if t in tables]
        print(f"  {schema} ({len(tables)} tables): {', '.join(counts)}")
    with warehouse.connect() as conn:
        tables = {t for (t,) in conn.fetchall(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [PLATFORM_SCHEMA]
        )}
        counts = [f"{t} {conn.row_count(PLATFORM_SCHEMA, t)}" for t in sorted(tables)]
    print(f"  {PLATFORM_SCHEMA}: {', '.join(counts)}")
    print(f"reports: {reports_root()}/<merchant>/<period>/ (XLSX and PDF); e-mails: {default_outbox_dir()}/<merchant>/")
    print(f"\nwarehouse: {url}")
    print(f"Dagster instance: {home}")
    print("UI: run `make ui`, then open http://127.0.0.1:3000")
    if failed:
        for day, merchant_id, run_id in failed:
            print(f"failed: {day} {merchant_id}: see run {run_id} in the UI")
        return 1
    return 0
