"""PII key rotation as a Dagster op: every merchant whose newest data key is 90 days old gets a new
one and its buyer PII is re-encrypted (`illuma_pipelines.key_rotation`)."""

from datetime import UTC, datetime

import dagster as dg

from assets.concurrency import MERCHANT_STEP_TAGS, WAREHOUSE_POOL
from illuma_pipelines.key_rotation import rotate_all_merchants
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource


@dg.op(pool=WAREHOUSE_POOL, tags={"kind": "vault", **MERCHANT_STEP_TAGS})
def rotated_pii_keys(
    context: dg.OpExecutionContext, warehouse: WarehouseResource, vault: VaultResource
) -> dict:
    """Rotate the PII data keys of every registered merchant that is due (90 days)."""
    wh = warehouse.get()
    actor = f"dagster:key_rotation_job:{context.run.run_id}"
    totals, rotated = rotate_all_merchants(vault.get(wh), wh, datetime.now(UTC), actor)
    context.log.info(f"key rotation: {totals}")
    context.add_output_metadata({**totals, "rotated": ", ".join(rotated) or "none"})
    return totals
