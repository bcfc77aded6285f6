"""migrate-store given a data dir without a store says so and makes nothing: a mistyped
--data-dir was left behind created (0700) with a LOCK file in it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from globalcp.cli import cli as globalcp_cli
from zonecp.cli import cli as zonecp_cli


@pytest.mark.parametrize(
    ("cli", "extra", "store"),
    [(globalcp_cli, [], "global.db"), (zonecp_cli, ["--zone", "zone-a"], "zone.db")],
)
def test_a_missing_store_is_named_and_nothing_is_made(
    tmp_path: Path, cli: object, extra: list[str], store: str
) -> None:
    missing = tmp_path / "nonexist"
    res = CliRunner().invoke(
        cli,  # type: ignore[arg-type]
        ["migrate-store", "--data-dir", str(missing), *extra,
         "--postgres-url", "postgresql://kds@127.0.0.1:1/kds"],
    )  # fmt: skip
    assert res.exit_code == 1, res.output
    assert f"{missing / store} does not exist" in res.stderr
    assert not missing.exists()
