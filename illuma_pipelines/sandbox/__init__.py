"""Local marketplace sandbox: a real HTTP server with deterministic data, quotas and faults.

Public entry points live in `illuma_pipelines.sandbox.server` (`SandboxConfig`, `SandboxClock`,
`SandboxServer`, `build_app`, `serve`), the data in `illuma_pipelines.sandbox.world`, faults in
`illuma_pipelines.sandbox.faults`. Channel modules (`amazon`, and later `ebay`, `walmart`) each
expose `routes(state)`; see the server module docstring for the plug-in contract.
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
