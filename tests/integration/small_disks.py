"""Small disks for tests, without privileges: data dirs on tmpfs mounts of their own.

A holder process (``unshare -U -r -m``: a user and a mount namespace, which an unprivileged
user may make) mounts a small tmpfs on each given directory and sleeps; daemons started with
``prefix`` (``nsenter`` into that namespace) see their data dir on it, and it outlives them,
so a SIGKILLed daemon finds its store again. From outside, ``view(dir)`` is the same
directory as the namespace sees it (``/proc/HOLDER/root/...``). ``fill`` takes every free
byte of a mount (the daemon's next write that needs space fails with ENOSPC, as on a full
disk); ``free`` gives it back.
"""

from __future__ import annotations

import errno
import os
import shlex
import signal
import subprocess
from pathlib import Path

from tests.integration.conftest import wait_for

FILLER = ".disk-filler"


class SmallDisks:
    def __init__(self, dirs: list[Path], size: str = "32m"):
        self.dirs = [d.resolve() for d in dirs]
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        mounts = "; ".join(
            f"mount -t tmpfs -o size={size},mode=0700 kds-test-disk {shlex.quote(str(d))}"
            for d in self.dirs
        )
        self.proc = subprocess.Popen(
            ["unshare", "-U", "-r", "-m", "--propagation", "private", "sh", "-c",
             f"set -e; {mounts}; exec sleep 86400"]
        )  # fmt: skip
        wait_for(self._mounted, 10, "the small disks mounted")

    def _mounted(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"cannot make small disks (unshare exited {self.proc.returncode})")
        try:
            return all(os.stat(self.view(d)).st_dev != os.stat(d).st_dev for d in self.dirs)
        except OSError:
            return False

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", "-U", "-m", "--preserve-credentials", "-t", str(self.proc.pid), "--"]

    def view(self, d: Path) -> Path:
        """``d`` as the namespace sees it."""
        return Path(f"/proc/{self.proc.pid}/root") / d.resolve().relative_to("/")

    def fill(self, d: Path) -> int:
        """Take every free byte of ``d``'s disk; the bytes taken."""
        taken = 0
        with open(self.view(d) / FILLER, "ab", buffering=0) as f:
            for chunk in (1 << 20, 4096, 512):
                block = b"\0" * chunk
                while True:
                    try:
                        taken += f.write(block)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
        return taken

    def free(self, d: Path) -> None:
        (self.view(d) / FILLER).unlink(missing_ok=True)

    def is_full(self, d: Path) -> bool:
        return (self.view(d) / FILLER).exists()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
