"""What `kdsctl apply -f` reads, against kumactl's rules and hostile inputs: -v values split
as kumactl's flag library splits them, a directory's odd entries (hidden files, symlinks,
fifos, files that are not UTF-8, names holding terminal escapes), and a template applied
without its variables. --dry-run: nothing here needs a server."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from kdsctl.cli import cli
from kdsctl.inputs import parse_vars

NOWHERE = "http://127.0.0.1:9"  # --dry-run never connects


def _apply(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--api-url", NOWHERE, "apply", *args], input=input)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (("mesh=default",), {"mesh": "default"}),
        (("a=1,b=2",), {"a": "1", "b": "2"}),
        # One '=': one pair, commas and all; outer double quotes dropped.
        (("hosts=a,b",), {"hosts": "a,b"}),
        (('"mesh=default"',), {"mesh": "default"}),
        (("a=1,b",), {"a": "1,b"}),
        # More than one '=': a CSV line of pairs, each split at its first '='.
        (("data=dGVzdAo=",), {"data": "dGVzdAo="}),
        (("data=YQ==,mesh=m",), {"data": "YQ==", "mesh": "m"}),
        (('"a=x,y",b=2',), {"a": "x,y", "b": "2"}),
        (("a=1", "a=2"), {"a": "2"}),
    ],
)
def test_variables_split_as_kumactl_splits_them(
    given: tuple[str, ...], expected: dict[str, str]
) -> None:
    """kumactl's -v is pflag's StringToString (app/kumactl/cmd/apply)."""
    assert parse_vars(given) == expected


@pytest.mark.parametrize("given", [("noequals",), ("a=1,b=2,c",), ("=x",)])
def test_a_variable_without_a_key_is_refused(given: tuple[str, ...]) -> None:
    with pytest.raises(click.BadParameter, match="expected KEY=VALUE"):
        parse_vars(given)


def test_a_templated_value_with_commas_applies(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        'type: Mesh\nname: "{{ name }}"\nskipCreatingInitialPolicies: ["{{ t }}"]\n'
    )
    code, out = _apply("-f", str(tmp_path / "s.yaml"), "-v", "name=m", "-v", "t=a,b", "--dry-run")
    assert code == 0, out
    assert yaml.safe_load(out)["skipCreatingInitialPolicies"] == ["a,b"]


def test_a_template_without_its_variables_names_them(tmp_path: Path) -> None:
    """With no -v, kumactl replaces nothing and the YAML parser fails on '{{': the error
    says which variables the input uses."""
    code, out = _apply("-f", "-", "--dry-run", input="type: Mesh\nname: {{ mesh }}\n")
    assert code == 1
    assert "invalid YAML" in out and "-v mesh=VALUE" in out


def _doc(name: str) -> str:
    return f"type: Mesh\nname: {name}\n"


def test_a_directorys_odd_entries(tmp_path: Path) -> None:
    """Hidden files are read (kumactl reads them too); a symlink to a file is read as the
    file, one to a directory or to nothing is skipped (as kumactl); a fifo is skipped, where
    kumactl would wait on it forever; subdirectories are not entered."""
    d = tmp_path / "resources"
    d.mkdir()
    (d / ".hidden.yaml").write_text(_doc("hidden"))
    (d / "a.yaml").write_text(_doc("a"))
    outside = tmp_path / "outside.yml"
    outside.write_text(_doc("linked"))
    (d / "b-link.yml").symlink_to(outside)
    (d / "c-dir.yaml").symlink_to(tmp_path)
    (d / "d-dangling.yaml").symlink_to(tmp_path / "missing.yaml")
    os.mkfifo(d / "e-fifo.yaml")
    (d / "sub").mkdir()
    (d / "sub" / "f.yaml").write_text(_doc("nested"))
    (d / "notes.txt").write_text("not: applied")
    code, out = _apply("-f", str(d), "--dry-run")
    assert code == 0, out
    assert [doc["name"] for doc in yaml.safe_load_all(out)] == ["hidden", "a", "linked"]


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    d = tmp_path / "resources"
    d.mkdir()
    (d / "a.yaml").write_text(_doc("a"))
    (d / "b.yaml").write_bytes(b"\xff\xfe name: x")
    code, out = _apply("-f", str(d), "--dry-run")
    assert code == 1
    assert f"error while reading {d / 'b.yaml'}: not UTF-8 text" in out


def test_a_file_name_holding_terminal_escapes_is_printed_escaped(tmp_path: Path) -> None:
    d = tmp_path / "resources"
    d.mkdir()
    (d / "\x1b]0;owned\x07.yaml").write_text("type: Mesh\nname: Not_Valid\n")
    code, out = _apply("-f", str(d), "--dry-run")
    assert code == 1 and "invalid resource" in out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b]0;owned\\x07.yaml" in out


def test_local_problems_are_printed_escaped(tmp_path: Path) -> None:
    """A field kdsctl names from the file (a label's key) may hold terminal escapes: they
    are printed escaped, as a server's answer is."""
    f = tmp_path / "mesh.yaml"
    f.write_text('type: Mesh\nname: m1\nlabels:\n  "bad\\e]0;owned\\a/": "x"\n')
    code, out = _apply("-f", str(f), "--dry-run")
    assert code == 1 and "invalid resource" in out
    assert "\x1b" not in out and "\x07" not in out
    assert "labels[bad\\x1b]0;owned\\x07/]" in out


def test_an_expiration_of_too_many_digits_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    f = tmp_path / "mesh.yaml"
    backend = {
        "name": "ca-1",
        "type": "builtin",
        "conf": {"caCert": {"expiration": "9" * 5000 + "y"}},
    }
    f.write_text(yaml.safe_dump({"type": "Mesh", "name": "m1", "mtls": {"backends": [backend]}}))
    code, out = _apply("-f", str(f), "--dry-run")
    assert code == 1 and "Traceback" not in out
    assert "mtls.backends[0].conf.caCert.expiration: must be a duration" in out
