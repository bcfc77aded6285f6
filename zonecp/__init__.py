"""zonecp: the zone control plane daemon. app.py wires the store, sync client and HTTP API;
cli.py is its command line (entry point zonecp.cli:main).
"""

import kds  # noqa: F401  # first: sets grpc's environment before grpc loads (kds.grpc_env)
