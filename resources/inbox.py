"""The merchants' inbox: folders where merchants drop files for us (catalogs, pricing rules).

`<root>/<merchant_id>/<kind>/`, e.g. `var/inbox/acme_parts/catalog/`. Locally the root is
`var/inbox` under the project's var dir; production points it at a mounted volume.
"""

from pathlib import Path

import dagster as dg
from pydantic import Field

from illuma_pipelines.merchant_ids import validate_merchant_id
from illuma_pipelines.paths import var_dir

# The kinds of file a merchant can drop, each in a folder of its own.
INBOX_KINDS = ("catalog", "pricing_rules")


def default_inbox_root() -> Path:
    return var_dir() / "inbox"


class InboxResource(dg.ConfigurableResource):
    """Where merchants' files arrive. Leave `root` empty for `<var dir>/inbox` (ILLUMA_VAR_DIR,
    read when used, not at import)."""

    root: str = Field(default="", description="The inbox root folder; empty: <var dir>/inbox.")

    def root_path(self) -> Path:
        return Path(self.root) if self.root else default_inbox_root()

    def merchant_dir(self, merchant_id: str, kind: str) -> Path:
        """The folder of one merchant's files of one kind (not created here)."""
        if kind not in INBOX_KINDS:
            raise ValueError(f"unknown inbox kind {kind!r}; known: {', '.join(INBOX_KINDS)}")
        # The id becomes a path segment: validated, so no `..` or separators get through.
        return self.root_path() / validate_merchant_id(merchant_id) / kind

    def file(self, merchant_id: str, kind: str, name: str) -> Path:
        """A file named `name` in the merchant's folder of `kind`: a bare file name only."""
        if not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"{name!r} is not a file name: give the name of a file in the inbox folder")
        return self.merchant_dir(merchant_id, kind) / name
