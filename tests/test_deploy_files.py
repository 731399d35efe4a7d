"""The deployment files (Dockerfile, docker-compose.yaml, deploy/helm/values.yaml) cannot run here:
they are parsed and checked against deploy/dagster.yaml and the code (image, env vars, module,
ports, the psycopg2 driver, the run launcher, the queue), and the run tags the queue limits use
are checked against what the schedule sets."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime

import dagster as dg
import pytest
import yaml

from illuma_pipelines import prod
from illuma_pipelines.environment import ENV_VAR, WAREHOUSE_URL_VAR
from illuma_pipelines.marketplaces import CHANNELS
from illuma_pipelines.paths import PROJECT_ROOT
from illuma_pipelines.warehouse_logins import LOGIN_SECRET_VAR
from sensors.tags import MERCHANT_TAG, channel_tag, merchant_run_tags

PSYCOPG2 = "postgresql+psycopg2"
IMAGE = "ghcr.io/illuma-com/illuma-pipelines"
GRPC_PORT = 4000


def _yaml(path: str):
    return yaml.safe_load((PROJECT_ROOT / path).read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def instance_yaml() -> dict:
    return _yaml("deploy/dagster.yaml")


@pytest.fixture(scope="module")
def compose() -> dict:
    return _yaml("docker-compose.yaml")


@pytest.fixture(scope="module")
def helm() -> dict:
    return _yaml("deploy/helm/values.yaml")


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, list[str]]:
    """Dockerfile instructions: {INSTRUCTION: [arguments, ...]} (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", (PROJECT_ROOT / "Dockerfile").read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.setdefault(word.upper(), []).append(rest.strip())
    return out


def _version(pyproject: dict) -> str:
    return pyproject["project"]["version"]


def _dagster_version(pyproject: dict) -> str:
    return next(d.split("==")[1] for d in pyproject["project"]["dependencies"] if d.startswith("dagster=="))


def _cmd(dockerfile: dict) -> list[str]:
    import json

    return json.loads(dockerfile["CMD"][-1])


def production_env_vars() -> set[str]:
    """Every environment variable the production code location reads: the resources' EnvVars,
    the Postmark token reference, the environment and warehouse, the merchant logins' secret."""
    from resources import resources_for
    from resources.delivery import DeliveryResource

    names = {ENV_VAR, WAREHOUSE_URL_VAR, LOGIN_SECRET_VAR}
    for resource in resources_for("production").values():
        for field in type(resource).model_fields:
            value = getattr(resource, field, None)
            if isinstance(value, dg.EnvVar):
                names.add(value.env_var_name)
        if isinstance(resource, DeliveryResource):
            names.add(resource.server_token_ref.removeprefix("env:"))
    return names


def test_every_file_parses(dockerfile, compose, helm, instance_yaml):
    assert dockerfile["FROM"] == ["python:3.11-slim"]
    assert set(compose["services"]) == {"postgres", "provision", "code-location", "webserver", "daemon"}
    assert helm["runLauncher"]["type"] == "K8sRunLauncher"
    assert instance_yaml["run_coordinator"]["class"] == "QueuedRunCoordinator"
    secrets = list(yaml.safe_load_all((PROJECT_ROOT / "deploy/helm/secrets.example.yaml").read_text()))
    assert {s["metadata"]["name"] for s in secrets} == {"illuma-dagster-postgresql", "illuma-pipelines"}


def test_the_image_installs_the_pinned_stack_without_dev_tools_and_runs_as_non_root(dockerfile, pyproject):
    runs = " ".join(dockerfile["RUN"])
    assert "-c constraints.txt" in runs and '".[k8s]"' in runs
    assert "[dev]" not in runs and "dev]" not in runs
    assert "dagster-k8s==" in " ".join(pyproject["project"]["optional-dependencies"]["k8s"])
    assert "dbt parse" in runs and "manifest.json" in runs
    user = dockerfile["USER"][-1]
    assert user not in ("root", "0")
    assert f'org.opencontainers.image.version="{_version(pyproject)}"' in dockerfile["LABEL"][0]
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var", "tests", ".git"} <= set(ignored)


def test_module_location_and_port_agree(dockerfile, compose, helm, pyproject):
    module = pyproject["tool"]["dagster"]["module_name"]
    location = pyproject["tool"]["dagster"]["code_location_name"]
    cmd = _cmd(dockerfile)
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert cmd[cmd.index("-m") + 1] == module
    assert cmd[cmd.index("--location-name") + 1] == location == prod.LOCATION_NAME
    assert cmd[cmd.index("-p") + 1] == str(GRPC_PORT)
    assert dockerfile["EXPOSE"] == [str(GRPC_PORT)]
    assert prod.DEFINITIONS_MODULE == module
    # docker compose: the webserver and the daemon reach the location where the image serves it.
    workspace = _yaml("deploy/compose/workspace.yaml")["load_from"][0]["grpc_server"]
    assert workspace == {"host": "code-location", "port": GRPC_PORT, "location_name": location}
    assert compose["services"]["code-location"]["expose"] == [str(GRPC_PORT)]
    for service in ("webserver", "daemon"):
        command = compose["services"][service]["command"]
        assert command[command.index("-w") + 1] == "/opt/illuma/deploy/compose/workspace.yaml"
    # Helm: the user deployment runs the same module on the same port.
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"] == ["-m", module]
    assert deployment["port"] == GRPC_PORT
    assert deployment["name"] == location.replace("_", "-")


def test_image_names_and_versions_agree(compose, helm, pyproject):
    image = f"{IMAGE}:{_version(pyproject)}"
    for name in ("provision", "code-location", "webserver", "daemon"):
        assert compose["services"][name]["image"] == image, name
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    assert f"{deployment['image']['repository']}:{deployment['image']['tag']}" == image
    # Dagster's own images (webserver, daemon) at the Dagster version the code is pinned to.
    for part in ("dagsterWebserver", "dagsterDaemon"):
        assert helm[part]["image"]["tag"] == _dagster_version(pyproject)
    assert f"ghcr.io/illuma-com/illuma-pipelines:{_version(pyproject)}" in (PROJECT_ROOT / "Dockerfile").read_text()


def test_dagster_storage_uses_the_psycopg2_driver_everywhere(compose, helm, instance_yaml):
    assert instance_yaml["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}
    for name in ("provision", "code-location", "webserver", "daemon"):
        url = compose["services"][name]["environment"]["DAGSTER_PG_URL"]
        assert url.startswith(f"{PSYCOPG2}://"), name
        assert "@postgres:5432/illuma_dagster" in url
    assert helm["postgresql"]["postgresqlScheme"] == PSYCOPG2
    assert helm["global"]["postgresqlSecretName"] and helm["generatePostgresqlPasswordSecret"] is False
    assert prod.ProdConfig().dagster_pg_url.startswith(f"{PSYCOPG2}://")
    # The pipeline's login, never the admin, in the processes' storage and warehouse URLs.
    env = compose["services"]["code-location"]["environment"]
    assert env["ILLUMA_WAREHOUSE_URL"].startswith("postgresql://illuma_app:")
    assert "ILLUMA_WAREHOUSE_ADMIN_URL" not in env
    assert helm["postgresql"]["postgresqlUsername"] == "illuma_app"


def test_every_env_var_the_code_reads_is_provided(compose, helm, tmp_path):
    needed = production_env_vars()
    assert {"ILLUMA_MASTER_KEY", "AMAZON_LWA_CLIENT_ID", "POSTMARK_SERVER_TOKEN", "ILLUMA_ENV"} <= needed
    for name in ("code-location", "webserver", "daemon"):
        env = compose["services"][name]["environment"]
        assert needed <= set(env), f"{name} lacks {sorted(needed - set(env))}"
        assert env["ILLUMA_ENV"] == "production"
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    secrets = {
        s["metadata"]["name"]: set(s["stringData"])
        for s in yaml.safe_load_all((PROJECT_ROOT / "deploy/helm/secrets.example.yaml").read_text())
    }
    provided = set(deployment["env"]) | set().union(*(secrets[s["name"]] for s in deployment["envSecrets"]))
    assert needed <= provided, sorted(needed - provided)
    # Secrets only from secrets: none of them in plain values.
    for secret in ("ILLUMA_MASTER_KEY", "AMAZON_LWA_CLIENT_SECRET", "EBAY_CLIENT_SECRET", "POSTMARK_SERVER_TOKEN"):
        assert secret not in deployment["env"] and secret in secrets["illuma-pipelines"]
    # Runs are Kubernetes jobs of the same image: they get the same secrets.
    launcher = helm["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["envSecrets"] == deployment["envSecrets"]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    # The local topology provides them too (the sandbox standing in for the marketplaces), but the
    # Postmark token (nothing is e-mailed from this machine unless the caller gives one) and the
    # logins' secret (the 0600 file under the topology's own var/, as locally).
    local = set(prod.process_env(prod.ProdConfig(root=tmp_path / "prod"), base={}))
    assert needed - {"POSTMARK_SERVER_TOKEN", LOGIN_SECRET_VAR} <= local


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def test_the_queue_limits_agree_between_the_instance_and_helm(helm, instance_yaml):
    runs, pools = instance_yaml["concurrency"]["runs"], instance_yaml["concurrency"]["pools"]
    assert helm["concurrency"]["enabled"] is True
    assert helm["concurrency"]["runs"]["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert helm["concurrency"]["runs"]["tagConcurrencyLimits"] == runs["tag_concurrency_limits"]
    assert helm["concurrency"]["pools"]["defaultLimit"] == pools["default_limit"]
    assert helm["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert helm["dagsterDaemon"]["runRetries"] == {_camel(k): v for k, v in instance_yaml["run_retries"].items()}
    # Run monitoring: the keys the chart renders. max_runtime_seconds is the default launcher's
    # only way to end a run whose worker died; the K8s launcher sees the dead pod at the next poll.
    monitoring = dict(instance_yaml["run_monitoring"])
    assert monitoring.pop("max_runtime_seconds") > 0
    assert helm["dagsterDaemon"]["runMonitoring"] == {_camel(k): v for k, v in monitoring.items()}


def test_the_queue_has_a_global_merchant_and_per_marketplace_limit(instance_yaml, monkeypatch):
    runs = instance_yaml["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] >= 1
    by_key = {limit["key"]: limit for limit in runs["tag_concurrency_limits"]}
    assert by_key[MERCHANT_TAG] == {"key": MERCHANT_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    for channel in CHANNELS:
        limit = by_key[channel_tag(channel)]
        assert "value" not in limit  # every run tagged with the channel counts, whatever the value
        assert 1 <= limit["limit"] <= runs["max_concurrent_runs"]
    # No run retry for failures in our code; infrastructure failures at most a few times.
    assert instance_yaml["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}
    assert instance_yaml["run_monitoring"]["enabled"] is True
    # The instance config is valid for this Dagster version (unknown keys fail here).
    from dagster._core.instance.config import dagster_instance_config

    monkeypatch.setenv("DAGSTER_PG_URL", f"{PSYCOPG2}://illuma_app@127.0.0.1:5432/illuma_dagster")
    config, _ = dagster_instance_config(str(PROJECT_ROOT / "deploy"))
    assert config["run_retries"]["retry_on_asset_or_op_failure"] is False


def test_merchant_run_tags():
    assert merchant_run_tags("acme", ["walmart", "amazon"]) == {
        MERCHANT_TAG: "acme", "illuma/channel/amazon": "true", "illuma/channel/walmart": "true"
    }
    assert merchant_run_tags("acme") == {MERCHANT_TAG: "acme"}
    with pytest.raises(ValueError, match="unknown channel"):
        merchant_run_tags("acme", ["etsy"])


def test_the_daily_schedule_tags_each_run_with_the_merchants_channels(tmp_path):
    """What the per-marketplace limits count: the schedule's requests carry the channel tags."""
    from assets.partitions import MERCHANTS
    from illuma_pipelines.definitions import defs
    from illuma_pipelines.registry import ChannelConnection, add_merchant
    from illuma_pipelines.warehouse import Warehouse
    from resources.warehouse import WarehouseResource

    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    wh = Warehouse.from_url(url)
    wh.ensure_platform()
    add_merchant(wh, "acme_parts", channels={c: ChannelConnection(c, "sandbox:acme_parts") for c in ("amazon", "ebay")})
    add_merchant(wh, "bolt_power", channels={"walmart": ChannelConnection("walmart", "sandbox:bolt_power")})
    definitions = defs()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(MERCHANTS, ["acme_parts", "bolt_power"])
        with dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 11, 27, 6, tzinfo=UTC),
            repository_def=definitions.get_repository_def(),
            resources={"warehouse": WarehouseResource(url=url)},
        ) as context:
            requests = list(definitions.resolve_schedule_def("merchant_daily_schedule").evaluate_tick(context).run_requests)
    illuma_tags = {r.tags[MERCHANT_TAG]: {k: v for k, v in r.tags.items() if k.startswith("illuma/")} for r in requests}
    assert illuma_tags == {
        "acme_parts": merchant_run_tags("acme_parts", ["amazon", "ebay"]),
        "bolt_power": merchant_run_tags("bolt_power", ["walmart"]),
    }


def test_makefile_prod_targets_call_the_prod_module():
    text = (PROJECT_ROOT / "Makefile").read_text()
    for target, action in (("prod-up", "up"), ("prod-down", "down")):
        body = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M)
        assert body, f"no {target} target"
        assert f"illuma prod {action}" in body.group(1)
