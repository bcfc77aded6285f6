"""How long a kdsctl call takes, start to exit: ``--version`` and ``get secrets`` against a
local global (started here on free ports, in a temporary data dir), each run ``--calls``
times in a row, and what importing ``kdsctl.cli`` costs (``python -X importtime``).

    .venv/bin/python bench/kdsctl_calls.py --calls 20

Prints a Markdown table of the median and the slowest call; figures are not asserted (a
busy machine makes them longer). Run it on a quiet machine to compare with the README's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: bench/ is sys.path[0], the repository is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIN, free_port, stop_process, wait_http


def _time_calls(argv: list[str], env: dict[str, str], calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        r = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        times.append((time.perf_counter() - start) * 1000)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr.strip()}")
    return times


def _import_ms(env: dict[str, str]) -> float:
    """Cumulative import time of kdsctl.cli, from the last line ``-X importtime`` prints."""
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import kdsctl.cli"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    for line in reversed(r.stderr.splitlines()):
        fields = [f.strip() for f in line.split("|")]
        if len(fields) == 3 and fields[2] == "kdsctl.cli":
            return int(fields[1]) / 1000
    raise RuntimeError("python -X importtime did not report kdsctl.cli")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per command (default 20)")
    args = parser.parse_args(argv)
    kdsctl = str(BIN / "kdsctl")
    with tempfile.TemporaryDirectory(prefix="kdsctl-bench-") as tmp:
        api, kds = free_port(), free_port()
        log = open(Path(tmp) / "global.log", "wb")  # noqa: SIM115  # the child owns it
        proc = subprocess.Popen(
            [str(BIN / "globalcp"), "run", "--data-dir", f"{tmp}/g",
             "--api-address", f"127.0.0.1:{api}", "--kds-address", f"127.0.0.1:{kds}"],
            stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        try:
            wait_http(f"http://127.0.0.1:{api}/readyz", 30)
            env = {
                **os.environ,
                "KDSCTL_API_URL": f"http://127.0.0.1:{api}",
                "KDSCTL_TOKEN_FILE": f"{tmp}/g/admin-token",
            }
            rows = [
                ("kdsctl --version", _time_calls([kdsctl, "--version"], env, args.calls)),
                ("kdsctl get secrets", _time_calls([kdsctl, "get", "secrets"], env, args.calls)),
            ]
            imports = _import_ms(env)
        finally:
            stop_process(proc)
    load = os.getloadavg()[0]
    print(f"{args.calls} calls each, load average {load:.2f} at the end\n")
    print("| command | median ms | slowest ms |")
    print("|---|---|---|")
    for name, times in rows:
        print(f"| {name} | {statistics.median(times):.0f} | {max(times):.0f} |")
    print(f"| import kdsctl.cli (-X importtime) | {imports:.0f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
