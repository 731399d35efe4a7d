"""The Dagster UI in a real browser: the webserver on a temporary instance holding materialized
date × merchant partitions, opened in headless Chromium (Debian's, driven by Playwright).

Checks what the data team relies on: the code location loads without error, the global asset
graph shows every asset group of the Definitions, and a date × merchant asset's partitions page
shows its materialized partitions, each with the run that materialized it. On failure a
screenshot is written to var/ui-test/<test>.png and named in the message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from assets.extracts import extract_assets
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines.paths import PROJECT_ROOT
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.warehouse import Warehouse
from resources import sandbox_clients
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource
from tests.sandbox_helpers import amazon_sandbox, sandbox_now
from tests.ui_helpers import (
    Webserver,
    chromium_page,
    dagster_webserver,
    location_errors,
    require_chromium,
    screenshot_on_failure,
    workspace_location_name,
)

# Setting up (a few in-process runs, the webserver and its code server) takes about 20 s here;
# each check a few seconds. The bound leaves room for a loaded 2-core machine.
pytestmark = pytest.mark.timeout(180)

WORKSPACE = PROJECT_ROOT / "workspace.yaml"  # what `make ui` serves
# The cheapest real date × merchant asset: one request per merchant-day to the sandbox.
PARTITIONED_ASSET = next(a for a in extract_assets if a.key.path[-1] == "amazon_orders")
UI_MERCHANTS = ("ui_alpha", "ui_beta")
LOCATION_STATUS = re.compile("Loaded|Loading|Updating|Failed")


@dataclass(frozen=True)
class MaterializedInstance:
    home: Path
    warehouse_url: str
    var_dir: Path
    # (merchant, day) -> the id of the run that materialized that partition
    runs: dict[tuple[str, str], str]


@dataclass(frozen=True)
class UI:
    server: Webserver
    instance: MaterializedInstance
    location: str
    groups: list[str]
    # what the code locations page counts for the location, from the Definitions
    counts: dict[str, int]


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_chromium()


@pytest.fixture(scope="module")
def materialized(tmp_path_factory: pytest.TempPathFactory) -> MaterializedInstance:
    """A temporary DAGSTER_HOME whose instance holds 2 merchants × 2 days of `amazon_orders`,
    materialized through the sandbox into a DuckDB warehouse of the test's own."""
    root = tmp_path_factory.mktemp("ui")
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    url = f"duckdb:///{root / 'warehouse.duckdb'}"
    warehouse = Warehouse.from_url(url)
    warehouse.ensure_platform()
    for mid in UI_MERCHANTS:
        add_merchant(warehouse, mid, channels={"amazon": ChannelConnection("amazon", f"sandbox:{mid}")})
    keys = root / "keys"
    vault = VaultResource(key_store_path=str(keys / "keystore.json"), master_key_file=str(keys / "master.key"))
    now = sandbox_now()
    days = [(now - timedelta(days=n)).date().isoformat() for n in (3, 2)]
    runs: dict[tuple[str, str], str] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance, amazon_sandbox(now=now) as sandbox:
        instance.add_dynamic_partitions(MERCHANTS, list(UI_MERCHANTS))
        resources = {"warehouse": WarehouseResource(url=url), "vault": vault, **sandbox_clients(sandbox.base_url)}
        for mid in UI_MERCHANTS:
            for day in days:
                result = dg.materialize(
                    [PARTITIONED_ASSET],
                    partition_key=merchant_date_key(mid, day),
                    resources=resources,
                    instance=instance,
                )
                assert result.success
                runs[(mid, day)] = result.run_id
    return MaterializedInstance(home=home, warehouse_url=url, var_dir=root / "var", runs=runs)


@pytest.fixture(scope="module")
def ui(chromium: str, materialized: MaterializedInstance) -> Iterator[UI]:
    """The venv's dagster-webserver serving the project's workspace on the temporary instance,
    with the environment pointing at the same warehouse; its process group killed afterwards."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(materialized.home),
        "ILLUMA_ENV": "local",
        "ILLUMA_WAREHOUSE_URL": materialized.warehouse_url,
        "ILLUMA_VAR_DIR": str(materialized.var_dir),
        "ILLUMA_DATA_DIR": str(materialized.var_dir / "data"),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name in ("ILLUMA_ENV", "ILLUMA_WAREHOUSE_URL", "ILLUMA_VAR_DIR", "ILLUMA_DATA_DIR"):
            patch.setenv(name, env[name])
        from illuma_pipelines.definitions import defs

        definitions = defs()
    groups = sorted({node.group_name for node in definitions.resolve_asset_graph().asset_nodes})
    assert groups, "the Definitions have no asset groups"
    counts = {
        "assets": len(groups),  # the page counts asset groups
        "jobs": len(list(definitions.jobs or [])),
        "schedules": len(list(definitions.schedules or [])),
        "sensors": len(list(definitions.sensors or [])),
    }
    log_path = materialized.home / "webserver.log"
    with dagster_webserver(WORKSPACE, env=env, cwd=PROJECT_ROOT, log_path=log_path) as server:
        yield UI(server=server, instance=materialized, location=workspace_location_name(WORKSPACE), groups=groups, counts=counts)


@pytest.fixture
def page(chromium: str):
    with chromium_page(chromium) as page:
        yield page


def test_code_location_loads_without_error(ui: UI, page) -> None:
    from playwright.sync_api import expect

    with screenshot_on_failure(page, "code_location"):
        page.goto(f"{ui.server.base_url}/locations")
        # The link's accessible name holds the name twice (a truncating label): not exact.
        link = page.get_by_role("link", name=ui.location)
        expect(link, f"the code location {ui.location!r} is not listed").to_be_visible()
        # The location's row: the innermost block holding its link and its status.
        row = page.locator("div", has=link).filter(has_text=LOCATION_STATUS).last
        errors = location_errors(ui.server.base_url)
        expect(row, f"{ui.location} is not loaded; its load error (GraphQL): {errors}").to_contain_text("Loaded")
        expect(row, f"{ui.location} shows an error: {errors}").not_to_contain_text(re.compile("Failed|View error"))
        assert not errors, f"the webserver reports load errors: {errors}"
        # Everything the Definitions hold was loaded: asset groups, jobs, schedules, sensors.
        for section, count in ui.counts.items():
            expect(row.locator(f'a[href$="/{section}"]'), f"{section} of {ui.location}").to_have_text(str(count))


def test_asset_graph_shows_every_group(ui: UI, page) -> None:
    from playwright.sync_api import expect

    with screenshot_on_failure(page, "asset_graph_groups"):
        page.goto(f"{ui.server.base_url}/asset-groups")
        # Group nodes are drawn inside the graph's SVG canvas (the sidebar lists them too: not that).
        canvas = page.locator("svg")
        # Each waited for: the graph draws in stages (layout, then nodes), so a count taken once
        # the first group shows may miss the rest.
        for group in ui.groups:
            node = canvas.get_by_text(group, exact=True).filter(visible=True).first
            expect(node, f"asset group {group!r} missing from the global asset graph (expected {ui.groups})").to_be_visible()


def test_partitions_page_shows_the_materialized_partitions(ui: UI, page) -> None:
    from playwright.sync_api import expect

    runs = ui.instance.runs
    asset_path = "/".join(PARTITIONED_ASSET.key.path)
    with screenshot_on_failure(page, "asset_partitions"):
        page.goto(f"{ui.server.base_url}/assets/{asset_path}?view=partitions")
        counted = f"the partitions page does not count {len(runs)} materialized partitions and none failed"
        expect(page.get_by_text(f"Materialized ({len(runs)})", exact=True), counted).to_be_visible()
        expect(page.get_by_text("Failed (0)", exact=True), counted).to_be_visible()
        # Missing = every partition of the selection but the materialized ones.
        selected = page.get_by_text(re.compile(r"^[\d,]+ Partitions Selected$"))
        expect(selected, "the partitions page shows no partition count").to_be_visible()
        total = int(selected.inner_text().split()[0].replace(",", ""))
        assert total > len(runs)
        missing = f"the partitions page does not count {total - len(runs)} of {total} partitions missing"
        expect(page.get_by_text(f"Missing ({total - len(runs)})", exact=True), missing).to_be_visible()
        for mid in UI_MERCHANTS:
            merchant = page.get_by_text(mid, exact=True).filter(visible=True).first
            expect(merchant, f"merchant partition {mid} is not listed").to_be_visible()
        # Each materialized partition, picked by date then merchant, shows the run that made it.
        for (mid, day), run_id in sorted(runs.items()):
            page.get_by_placeholder(re.compile("Filter by date")).fill(day)
            page.get_by_text(day, exact=True).filter(visible=True).first.click()
            page.get_by_text(mid, exact=True).filter(visible=True).first.click()
            key = str(merchant_date_key(mid, day))
            expect(page.get_by_text(key, exact=True).filter(visible=True).first, f"partition {key} not shown").to_be_visible()
            run_link = page.get_by_role("link", name=run_id[:8], exact=True)
            expect(run_link, f"partition {key} does not show run {run_id[:8]} materializing it").to_be_visible()
