"""kds.grpc_env: grpc's environment is set before grpc loads, in every process of ours that
uses grpc, and grpc knows the experiment it names."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kds import grpc_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("given", "want"),
    [
        (None, "-event_engine_client"),
        ("", "-event_engine_client"),
        ("some_other", "some_other,-event_engine_client"),
        ("event_engine_client", "event_engine_client"),  # the operator's choice stands
        ("a, -event_engine_client", "a, -event_engine_client"),
    ],
)
def test_apply_adds_the_setting_unless_the_operator_named_it(given: str | None, want: str) -> None:
    env = {} if given is None else {"GRPC_EXPERIMENTS": given}
    grpc_env.apply(env)
    assert env["GRPC_EXPERIMENTS"] == want


# Records GRPC_EXPERIMENTS as it is when grpc is first imported, then imports the module.
_PROBE = textwrap.dedent(
    """
    import importlib, os, sys
    seen = []
    class Probe:
        def find_spec(self, name, path=None, target=None):
            if name == "grpc" and not seen:
                seen.append(os.environ.get("GRPC_EXPERIMENTS", "<unset>"))
            return None
    sys.meta_path.insert(0, Probe())
    importlib.import_module(sys.argv[1])
    import grpc  # for a module that loads it only when used
    print(seen[0])
    """
)


def _grpc_saw(module: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout.strip()


@pytest.mark.parametrize("module", ["globalcp.cli", "zonecp.cli", "zonecp.client", "bench.fleet"])
def test_each_entry_point_sets_it_before_grpc_loads(module: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    assert _grpc_saw(module, env) == "-event_engine_client"


def test_the_benchmark_etcd_watchers_keep_grpc_defaults() -> None:
    # The harness starts them with the environment as the process was given it.
    assert "-event_engine_client" not in grpc_env.as_given().get("GRPC_EXPERIMENTS", "")
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    assert _grpc_saw("bench.etcd", env) == "<unset>"


_CHANNEL = "import grpc; grpc.insecure_channel('127.0.0.1:9').close()"


def _grpc_stderr(experiments: str) -> str:
    env = {**os.environ, "GRPC_EXPERIMENTS": experiments}
    out = subprocess.run(
        [sys.executable, "-c", _CHANNEL], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stderr


def test_the_installed_grpc_knows_the_experiment() -> None:
    # A grpc that dropped it logs this at start-up and ignores it: measure again, then
    # remove the setting or replace it.
    assert "Unknown experiment" in _grpc_stderr("-no_such_experiment_here")  # the check works
    assert "Unknown experiment" not in _grpc_stderr(",".join(grpc_env.EXPERIMENTS))
