"""globalcp: the global control plane daemon. app.py wires the store, hub, sync servicer and
HTTP API; cli.py is its command line (entry point globalcp.cli:main).
"""

import kds  # noqa: F401  # first: sets grpc's environment before grpc loads (kds.grpc_env)
