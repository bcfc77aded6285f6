"""A test host of the test's own: a network namespace joined to this one by a veth pair, and
a firewall inside it that can drop every packet to a port (a partition that, unlike a proxy
closing connections, sends nothing back: the peer hears only silence).

Needs root, ``ip`` (iproute2) and ``iptables``; .ci/run installs them. ``available()`` says
why not, for a test to skip on with the reason (in CI that skip is a failure:
tests/conftest.py). Traffic stays between this namespace and the one the test made.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess

__all__ = ["NetNs", "available"]


def available() -> str | None:
    """None if namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in ("ip", "iptables") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (Debian's iproute2, iptables)"
    return None


def _run(*argv: str) -> None:
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr[-500:]}")


class NetNs:
    """A namespace reached at ``host`` (``local`` is this side's address of the link)."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}{random.randrange(100)}"
        self.name, self.outer, self.inner = f"kds{tag}", f"kdso{tag}", f"kdsi{tag}"
        net = random.randrange(1, 250)
        self.local, self.host = f"10.213.{net}.1", f"10.213.{net}.2"
        _run("ip", "netns", "add", self.name)
        try:
            _run("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
            _run("ip", "link", "set", self.inner, "netns", self.name)
            _run("ip", "addr", "add", f"{self.local}/30", "dev", self.outer)
            _run("ip", "link", "set", self.outer, "up")
            self.run("ip", "addr", "add", f"{self.host}/30", "dev", self.inner)
            self.run("ip", "link", "set", self.inner, "up")
            self.run("ip", "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise

    def run(self, *argv: str) -> None:
        _run("ip", "netns", "exec", self.name, *argv)

    def drop(self, port: int) -> None:
        """Every packet to ``port`` in the namespace is dropped, nothing answered."""
        self.run("iptables", "-A", "INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP")

    def heal(self) -> None:
        self.run("iptables", "-F", "INPUT")

    def remove(self) -> None:
        """The namespace, its link and whatever still runs in it."""
        pids = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True
        ).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], capture_output=True)
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
