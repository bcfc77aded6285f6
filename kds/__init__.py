"""The library both control planes and kdsctl share, in layers (docs/architecture.md).

The pure core (errors, resource, validation, model, kubernetes, mtls, integrity, wire,
protocol/) does no I/O; the I/O library (store/, api/, tls, ca, crypto, grpc_options) and
the process helpers (config, logging, runtime, cli_common, clock) build on it.
"""

from __future__ import annotations

from kds import grpc_env

grpc_env.apply()  # before anything loads grpc, which reads it once (kds.grpc_env says why)
