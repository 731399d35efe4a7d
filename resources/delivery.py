"""E-mail delivery as a Dagster resource: an outbox of `.eml` files locally, Postmark in production.

The Postmark server token is a secret *reference*, `env:NAME`, of the same form as the marketplace
credential references in the registry: the variable is read when a delivery is built, in the
process that sends, so the token never becomes resource config shown in the UI or a log.
"""

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from illuma_pipelines.registry import RegistryError, validate_credential_ref
from illuma_pipelines.reports.delivery import (
    DEFAULT_FROM,
    POSTMARK_API_URL,
    Delivery,
    DeliveryError,
    OutboxDelivery,
    PostmarkDelivery,
)
from illuma_pipelines.reports.store import default_outbox_dir

OUTBOX, POSTMARK = "outbox", "postmark"
DELIVERY_KINDS = (OUTBOX, POSTMARK)


def resolve_secret_ref(ref: str) -> str:
    """The secret an `env:NAME` reference points at, read now."""
    try:
        validate_credential_ref(ref)
    except RegistryError:
        ref_ok = False
    else:
        ref_ok = ref.startswith("env:")
    if not ref_ok:
        raise DeliveryError(
            "the Postmark server token reference is 'env:VARIABLE_NAME' (uppercase), naming the "
            "environment variable that holds the token; never put the token itself in the config"
        )
    name = ref.partition(":")[2]
    value = os.environ.get(name, "")
    if not value:
        raise DeliveryError(
            f"the Postmark server token reference {ref!r} names an environment variable that is not "
            "set: set it to the Server API token of the sending server (Postmark: Servers > API Tokens)"
        )
    return value


class DeliveryResource(dg.ConfigurableResource):
    """How reports and alerts are sent. `outbox` (the local default) writes `.eml` files under
    `outbox_dir` (empty: `<var dir>/outbox`); `postmark` sends through Postmark's API with the
    token `server_token_ref` points at."""

    kind: str = Field(default=OUTBOX, description="outbox (local) or postmark (production).")
    outbox_dir: str = Field(default="", description="The outbox folder; empty: <var dir>/outbox.")
    server_token_ref: str = Field(
        default="env:POSTMARK_SERVER_TOKEN",
        description="env:NAME of the variable holding the Postmark Server API token (never the token).",
    )
    api_url: str = Field(default=POSTMARK_API_URL, description="Postmark's API (tests: a local server).")
    from_address: str = Field(default=DEFAULT_FROM, description="The sender: a confirmed Postmark sender signature.")
    link_base: str = Field(
        default="",
        description="The URL where <data dir>/reports/ is published: reports too large to attach are "
        "sent as links under it. Empty: no links (such a report fails to send, saying so).",
    )
    alert_address: str = Field(default="", description="The data team's address for run-failure alerts.")

    def outbox_path(self) -> Path:
        return Path(self.outbox_dir) if self.outbox_dir else default_outbox_dir()

    def get(self) -> Delivery:
        """The delivery this configuration describes (Postmark's token is read now)."""
        if self.kind == OUTBOX:
            return OutboxDelivery(self.outbox_path(), from_address=self.from_address, link_base=self.link_base or None)
        if self.kind == POSTMARK:
            return PostmarkDelivery(
                resolve_secret_ref(self.server_token_ref),
                api_url=self.api_url,
                from_address=self.from_address,
                link_base=self.link_base or None,
            )
        raise DeliveryError(f"unknown delivery kind {self.kind!r}: choose one of {', '.join(DELIVERY_KINDS)}")
