"""The normalized core, without Dagster: the core tables (`tables`), the order loader that turns a
merchant-day's raw order payloads into them (`orders`), and daily inventory snapshots
(`inventory`). The Dagster assets in `assets/core.py` call these and return metadata."""
