"""A real globalcp for the benchmarks, driven through its HTTP API with kdsctl's own client.

Writes go through ``kdsctl.client.ApiClient`` (the standard library's http.client, one
kept-alive connection), the client kdsctl itself uses. A heavier HTTP library would put its
own cost into every timed write: httpx took about 1.5 ms of CPU per PUT here, against about
0.6 ms for this client and 0.7-0.9 ms for etcd's gRPC stub on the other side of the
comparison, and moved the "from sending the write" median by about 0.8 ms.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from bench.common import BIN, free_port, sample, stop_process, wait_http
from kdsctl.client import ApiClient

VALUE_BYTES = 48  # each secret's decoded data (64 base64 characters)


def secret_value(i: int, salt: str) -> bytes:
    seed = f"{salt}-{i}-".encode()
    return (seed * (VALUE_BYTES // len(seed) + 1))[:VALUE_BYTES]


class KdsGlobal:
    """A real globalcp process on loopback ports. With ``tls`` (the default, as in
    production) the sync port serves TLS with global's own CA and zones present zone tokens;
    without it global serves plaintext without tokens (``--kds-insecure``), the extra column
    that shows what TLS costs."""

    def __init__(self, work: Path, name: str = "global", tls: bool = True):
        self.tls = tls
        self.dir = work / name
        self.token_dir = work / f"{name}-zone-tokens"
        self.api_port, self.kds_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.log = work / f"{name}.log"
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(
                [
                    str(BIN / "globalcp"),
                    "run",
                    "--data-dir",
                    str(self.dir),
                    "--api-address",
                    f"127.0.0.1:{self.api_port}",
                    "--kds-address",
                    f"127.0.0.1:{self.kds_port}",
                    "--log-format",
                    "json",
                    *([] if tls else ["--kds-insecure"]),
                ],
                stdout=f,
                stderr=f,
            )
        sample(self.proc.pid, f"{work.name}-{name}")
        wait_http(self.api + "/")
        self.admin_token = (self.dir / "admin-token").read_text().strip()
        self.client = ApiClient(self.api, timeout=600, token=self.admin_token)
        self._db = sqlite3.connect(f"file:{self.dir / 'global.db'}?mode=ro", uri=True)

    @property
    def address(self) -> str:
        return f"grpc://127.0.0.1:{self.kds_port}"

    def zone_args(self, names: list[str]) -> list[str]:
        """bench.fleet's options to reach this global: over TLS, a zone token for each name
        (issued through the API, as an operator would; written 0600), or plaintext."""
        if not self.tls:
            return ["--insecure"]
        self.token_dir.mkdir(mode=0o700, exist_ok=True)
        for zone in names:
            path = self.token_dir / f"{zone}.token"
            if not path.exists():
                token = self.client.post("/zone-tokens", {"zone": zone})["token"]
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(token)
        return ["--ca-file", str(self.dir / "ca.crt"), "--token-dir", str(self.token_dir)]

    def head(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key='head'").fetchone()[0])

    def changes(self, after: int, upto: int) -> list[bytes]:
        cur = self._db.execute(
            "SELECT change FROM changelog WHERE revision > ? AND revision <= ? ORDER BY revision",
            (after, upto),
        )
        return [bytes(c) for (c,) in cur]

    def put_secret(self, name: str, value: bytes) -> None:
        self.client.put(f"/meshes/default/secrets/{name}", _secret_doc(name, value))

    def apply_items(self, items: list[dict[str, Any]], chunk: int = 10_000) -> None:
        for i in range(0, len(items), chunk):
            self.client.post("/_apply", {"items": items[i : i + chunk]})

    def log_events(self, event: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            if e.get("event") == event:
                out.append(e)
        return out

    def stop(self) -> None:
        self.client.close()
        self._db.close()
        stop_process(self.proc)


def _secret_doc(name: str, value: bytes) -> dict[str, Any]:
    """A Secret in mesh default, as the API takes it."""
    data = base64.b64encode(value).decode()
    return {"type": "Secret", "mesh": "default", "name": name, "data": data}


def secret_items(n: int, salt: str, prefix: str = "s") -> list[dict[str, Any]]:
    return [_secret_doc(f"{prefix}{i}", secret_value(i, salt)) for i in range(n)]
