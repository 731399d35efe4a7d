"""`make demo`: onboard demo merchants and materialize their recent days on the embedded default.

Everything runs for real: the project-local Dagster instance records the runs (so `make ui`
shows them), the environment's warehouse holds the data (the DuckDB file unless
ILLUMA_WAREHOUSE_URL names another: `illuma_pipelines.environment`, as for the CLI and the
assets), and the merchants' partitions come from the same registry sync the merchants sensor
performs. It sits on top, like the CLI: it runs the code location's jobs and sensors' functions.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from illuma_pipelines.environment import current_environment
from illuma_pipelines.paths import var_dir
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.warehouse import Warehouse

DEMO_MERCHANTS = {
    "acme_auto_parts": ("Acme Auto Parts", ("amazon", "ebay", "walmart")),
    "northwoods_power": ("Northwoods Outdoor Power", ("amazon", "ebay")),
    "prairie_ag_supply": ("Prairie Ag & Industrial Supply", ("amazon", "walmart")),
}

INSTANCE_YAML = """\
# Project-local Dagster instance (SQLite storage) for the demo and `make ui`.
# DuckDB allows one writer process per file: every warehouse writer shares the `warehouse` pool.
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


def ensure_local_instance_home() -> Path:
    """DAGSTER_HOME (default var/dagster_home) with a dagster.yaml, created if missing."""
    home = Path(os.environ.get("DAGSTER_HOME") or var_dir() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def demo_days(days: int, today: date | None = None) -> list[str]:
    """The `days` complete UTC days before today, oldest first."""
    today = today or datetime.now(UTC).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(days, 0, -1)]


@contextlib.contextmanager
def local_sandbox() -> Iterator[str]:
    """The local sandbox on its usual port, or the one already serving there (`make ui`)."""
    from illuma_pipelines.sandbox.server import SandboxConfig, SandboxServer
    from resources import LOCAL_SANDBOX_URL

    url = os.environ.get("ILLUMA_SANDBOX_URL", LOCAL_SANDBOX_URL)
    port = int(url.rsplit(":", 1)[1])
    if _port_open(port):
        print(f"using the sandbox already serving at {url}")
        yield url
        return
    with SandboxServer(SandboxConfig(), port=port) as server:
        print(f"sandbox serving at {server.base_url}")
        yield server.base_url


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_demo(days: int = 3) -> int:
    with local_sandbox():
        return _run_demo(days)


def _run_demo(days: int) -> int:
    import dagster as dg

    home = ensure_local_instance_home()
    from assets.partitions import merchant_date_key
    from illuma_pipelines.definitions import defs
    from sensors.audit import audit_run_materializations
    from sensors.merchants import sync_merchant_partitions
    from sensors.tags import MERCHANT_TAG

    # The same warehouse the code location's resources resolve (`defs()` below).
    url = current_environment().warehouse_url
    warehouse = Warehouse.from_url(url)
    for merchant_id, (name, channels) in DEMO_MERCHANTS.items():
        add_merchant(
            warehouse,
            merchant_id,
            display_name=name,
            channels={c: ChannelConnection(c, f"sandbox:{merchant_id}") for c in channels},
            actor="demo",
        )
    instance = dg.DagsterInstance.get()
    changes = sync_merchant_partitions(instance, warehouse)
    print(f"merchants registered: {len(DEMO_MERCHANTS)}; new partitions: {', '.join(changes.to_add) or 'none'}")

    definitions = defs()
    job = definitions.resolve_job_def("merchant_daily_job")
    # What the steps print (dbt's own log lines) goes to a file, as the UI's compute logs keep it:
    # the console shows one line per run.
    log_path = var_dir() / "logs" / "demo.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    step_output = log_path.open("w")
    print(f"step output (dbt and the like): {log_path}")
    started, failed = time.monotonic(), []
    dates = demo_days(days)
    for day in dates:
        for merchant_id in DEMO_MERCHANTS:
            with contextlib.redirect_stdout(step_output):
                result = job.execute_in_process(
                    instance=instance,
                    partition_key=merchant_date_key(merchant_id, day),
                    tags={MERCHANT_TAG: merchant_id},
                    raise_on_error=False,
                    run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                )
            # No daemon runs the audit sensor here: audit each run as it ends.
            audit_run_materializations(instance, result.run_id, warehouse)
            status = "ok" if result.success else "FAILED"
            print(f"  {day} {merchant_id:<20} {status}  run {result.run_id[:8]}")
            if not result.success:
                failed.append((day, merchant_id, result.run_id))

    print(f"\n{len(dates) * len(DEMO_MERCHANTS) - len(failed)} of {len(dates) * len(DEMO_MERCHANTS)} "
          f"merchant-day partitions materialized in {time.monotonic() - started:.0f} s")
    # The daily PII purge, as pii_purge_schedule runs it after extraction.
    purge_job = definitions.resolve_job_def("pii_purge_job")
    for merchant_id in DEMO_MERCHANTS:
        with contextlib.redirect_stdout(step_output):
            result = purge_job.execute_in_process(
                instance=instance,
                partition_key=merchant_date_key(merchant_id, dates[-1]),
                tags={MERCHANT_TAG: merchant_id},
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
        audit_run_materializations(instance, result.run_id, warehouse)
        removed = next(
            (e.materialization.metadata["rows_affected"].value for e in result.get_asset_materialization_events()),
            None,
        )
        print(f"  PII purge {merchant_id:<20} {'ok' if result.success else 'FAILED'}  values removed: {removed}")
        if not result.success:
            failed.append((dates[-1], merchant_id, result.run_id))
    step_output.close()
    print("rows per table:")
    with warehouse.connect() as conn:
        rows = conn.fetchall(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema LIKE 'm\\_%' ESCAPE '\\' OR table_schema = 'platform' "
            "ORDER BY table_schema, table_name"
        )
        for schema, table in rows:
            print(f"  {schema}.{table:<36} {conn.row_count(schema, table):>8}")
    print(f"\nwarehouse: {url}")
    print(f"Dagster instance: {home}")
    print("UI: run `make ui`, then open http://127.0.0.1:3000")
    if failed:
        for day, merchant_id, run_id in failed:
            print(f"failed: {day} {merchant_id}: see run {run_id} in the UI")
        return 1
    return 0
