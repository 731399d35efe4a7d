"""Resources per environment: `resources_for(name)` is the one map from environment to resources.

Which environment (and warehouse) a process runs in is decided in `illuma_pipelines.environment`.
"""


import os
import shutil
import sys
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource

from illuma_pipelines.environment import ENVIRONMENTS, LOCAL, PRODUCTION
from illuma_pipelines.paths import DBT_PROJECT_DIR
from resources.amazon import AmazonSellingPartnerHttp
from resources.delivery import DeliveryResource
from resources.ebay import EbaySellHttp
from resources.inbox import InboxResource
from resources.vault import VaultResource
from resources.walmart import WalmartMarketplaceHttp
from resources.warehouse import WarehouseResource

# The local marketplace sandbox (`illuma sandbox serve`, started by `make demo` and `make ui`).
LOCAL_SANDBOX_URL = "http://127.0.0.1:8765"


def dbt_executable() -> str:
    """The dbt installed beside this interpreter (the venv's), even when the venv is not on PATH:
    for the dbt resource and for preparing the manifest (`assets.analytics.dbt_project`)."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def sandbox_clients(base_url: str) -> dict[str, object]:
    """Marketplace clients pointed at a sandbox (local environment, tests, benches)."""
    return {
        "amazon": AmazonSellingPartnerHttp(
            endpoint=f"{base_url}/amazon",
            token_url=f"{base_url}/amazon/auth/o2/token",
            client_id="illuma-sandbox-app",
            client_secret="illuma-sandbox-app-secret",
        ),
        "ebay": EbaySellHttp(
            endpoint=f"{base_url}/ebay",
            finances_endpoint=f"{base_url}/ebay",
            token_url=f"{base_url}/ebay/identity/v1/oauth2/token",
            client_id="illuma-sandbox-app",
            client_secret="illuma-sandbox-app-secret",
        ),
        "walmart": WalmartMarketplaceHttp(endpoint=f"{base_url}/walmart"),
    }


# Staging and this machine only (`make prod-up`): the production clients call this base URL, a
# sandbox, instead of the marketplaces. Never set in a real deployment.
MARKETPLACE_BASE_URL_VAR = "ILLUMA_MARKETPLACE_BASE_URL"
# With it, how much faster than the marketplaces' documented rates the clients may call that
# sandbox (its --quota-speedup, or any figure when it enforces no quotas): a benchmark's clients
# must not pace a sandbox's throttle faults at Amazon's real rates for minutes.
MARKETPLACE_RATE_SPEEDUP_VAR = "ILLUMA_MARKETPLACE_RATE_SPEEDUP"


def _sandbox_rate_speedup(base_url: str) -> float:
    text = os.environ.get(MARKETPLACE_RATE_SPEEDUP_VAR, "")
    if not text:
        return 1.0
    if not base_url:
        raise ValueError(
            f"{MARKETPLACE_RATE_SPEEDUP_VAR} is for a sandbox only: set {MARKETPLACE_BASE_URL_VAR} too, "
            "or unset it (the real marketplaces are called at their documented rates)"
        )
    try:
        speedup = float(text)
    except ValueError:
        speedup = 0.0
    if not speedup >= 1.0:
        raise ValueError(f"{MARKETPLACE_RATE_SPEEDUP_VAR}={text!r} must be a number >= 1")
    return speedup


def production_clients() -> dict[str, object]:
    """The marketplaces' real endpoints, app credentials from the environment; with
    ILLUMA_MARKETPLACE_BASE_URL set, the same clients and credentials against that sandbox."""
    base_url = os.environ.get(MARKETPLACE_BASE_URL_VAR, "").rstrip("/")
    sandbox = sandbox_clients(base_url) if base_url else {}
    speedup = _sandbox_rate_speedup(base_url)

    def endpoints(channel: str, *names: str) -> dict[str, object]:
        if not sandbox:
            return {}
        return {"rate_speedup": speedup, **{name: getattr(sandbox[channel], name) for name in names}}

    return {
        "amazon": AmazonSellingPartnerHttp(
            client_id=dg.EnvVar("AMAZON_LWA_CLIENT_ID"),
            client_secret=dg.EnvVar("AMAZON_LWA_CLIENT_SECRET"),
            **endpoints("amazon", "endpoint", "token_url"),
        ),
        "ebay": EbaySellHttp(
            client_id=dg.EnvVar("EBAY_CLIENT_ID"),
            client_secret=dg.EnvVar("EBAY_CLIENT_SECRET"),
            **endpoints("ebay", "endpoint", "finances_endpoint", "token_url"),
        ),
        # Walmart keys are per seller: they come with each merchant's credential reference.
        "walmart": WalmartMarketplaceHttp(**endpoints("walmart", "endpoint")),
    }


def resources_for(env: str) -> dict[str, object]:
    """The resources of environment `env` (`local` or `production`).

    The warehouse is the environment's own (`WarehouseResource()` resolves it when used, through
    `illuma_pipelines.environment`, as the CLI does): ILLUMA_WAREHOUSE_URL if set, else locally the
    DuckDB file; production requires the URL.
    """
    if env not in ENVIRONMENTS:
        raise ValueError(f"environment {env!r} is not one of {ENVIRONMENTS}")
    dbt = DbtCliResource(
        project_dir=str(DBT_PROJECT_DIR),
        profiles_dir=str(DBT_PROJECT_DIR),
        dbt_executable=dbt_executable(),
    )
    by_env: dict[str, dict[str, object]] = {
        LOCAL: {
            "warehouse": WarehouseResource(),
            "vault": VaultResource(),
            "dbt": dbt,
            # <var dir>/inbox/<merchant>/<kind>/: where `make demo` drops the catalogs.
            "inbox": InboxResource(),
            # Reports and alerts as .eml files in <var dir>/outbox/ (issue 16).
            "delivery": DeliveryResource(),
            **sandbox_clients(os.environ.get("ILLUMA_SANDBOX_URL", LOCAL_SANDBOX_URL)),
        },
        PRODUCTION: {
            "warehouse": WarehouseResource(),
            # Keys apart from the data: the master key from the environment, never generated.
            "vault": VaultResource(
                key_store_path=dg.EnvVar("ILLUMA_KEY_STORE_PATH"),
                master_key=dg.EnvVar("ILLUMA_MASTER_KEY"),
                generate_master_key=False,
            ),
            "dbt": dbt,
            # The merchants' file drop: a mounted volume (or a bucket mounted as one).
            "inbox": InboxResource(root=dg.EnvVar("ILLUMA_INBOX_ROOT")),
            # Reports by Postmark; the token is read from its environment variable when sending.
            "delivery": DeliveryResource(
                kind="postmark",
                server_token_ref="env:POSTMARK_SERVER_TOKEN",
                from_address=dg.EnvVar("ILLUMA_REPORTS_FROM"),
                link_base=dg.EnvVar("ILLUMA_REPORTS_LINK_BASE"),
                alert_address=dg.EnvVar("ILLUMA_ALERTS_TO"),
            ),
            **production_clients(),
        },
    }
    return by_env[env]
