"""Platform tables that the asset graph reads but does not materialize (the registry)."""


import dagster as dg

channel_connections = dg.AssetSpec(
    key=["platform", "channel_connections"],
    description=(
        "Each merchant's connected marketplace channels with credential references (never "
        "secrets), maintained by 'illuma merchants add|offboard' in the platform schema."
    ),
    group_name="platform",
    kinds={"duckdb", "postgres"},
    owners=["team:data"],
)

platform_assets = [channel_connections]
