"""Local marketplace sandbox: a real HTTP server with deterministic data, quotas and faults.

Public entry points live in `illuma_pipelines.sandbox.server` (`SandboxConfig`, `SandboxClock`,
`SandboxServer`, `build_app`, `serve`), faults in `illuma_pipelines.sandbox.faults`, and what every
channel shares (catalog, buyers, deterministic randomness, window helpers) in
`illuma_pipelines.sandbox.world`. Each channel module (`amazon`, `ebay`, `walmart`: one per
marketplace in `illuma_pipelines.marketplaces`) builds its own plans from the world, renders them
and exposes `routes(state)`; see the server module docstring for the plug-in contract.
"""

from illuma_pipelines.sandbox.faults import FaultConfig
from illuma_pipelines.sandbox.server import (
    SandboxClock,
    SandboxConfig,
    SandboxServer,
    SandboxState,
    build_app,
    serve,
)

__all__ = [
    "FaultConfig",
    "SandboxClock",
    "SandboxConfig",
    "SandboxServer",
    "SandboxState",
    "build_app",
    "serve",
]
