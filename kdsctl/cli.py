"""kdsctl: manage Meshes, Secrets and GlobalSecrets through a control plane's HTTP API.

    kdsctl apply -f secrets.yaml
    kdsctl get secrets --mesh default
    kdsctl get secret sample-secret -o yaml
    kdsctl delete secret sample-secret --mesh default

This module assembles the command line: the root group ``cli`` with the connection options,
the ``get`` and ``delete`` groups, and the commands of ``kdsctl.apply``, ``kdsctl.resources``,
``kdsctl.status``, ``kdsctl.wait`` and ``kdsctl.tokens``, which do not import this module
(``kdsctl.wait`` borrows ``kdsctl.status``'s request helpers). A
new command lives in such a module, takes the API client with ``@pass_client``
(``kdsctl.client``) and raises ``ApiError`` / ``ApiUnreachable`` or calls ``fail``
(``kdsctl.render``); it is added to a group here, by name in the group's ``lazy`` map when
its module costs start-up time the other commands should not pay (``_LazyGroup``), and the
root group prints those errors as ``Error: ...`` on stderr and exits 1.

Tables never show secret data; ``-o json`` and ``-o yaml`` print the API's answer as is.
"""

from __future__ import annotations

import importlib
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from kdsctl import resources
from kdsctl.client import ApiClient, ApiError, ApiUnreachable, duration_param
from kdsctl.render import fail, safe_text

__all__ = ["DEFAULT_API_URL", "cli", "main"]

DEFAULT_API_URL = "http://127.0.0.1:5681"

# --------------------------------------------------------------------------- the group


class _LazyGroup(click.Group):
    """A group some of whose commands are imported only when used: ``lazy`` maps a command's
    name to ``module:attribute``. A command loads its own module, not every command's (the
    modules for apply, inspect and tokens load most of kds.model's validation, about a third
    of a ``kdsctl get``'s start-up); --help lists them all, and so loads them."""

    def __init__(self, *args: Any, lazy: Mapping[str, str] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attribute = self.lazy[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


class _RootGroup(_LazyGroup):
    """Prints API and connection errors of any subcommand as ``Error: ...``, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as e:
            fail(str(e), e.causes)
        except ApiUnreachable as e:
            # It may quote what a server or proxy sent (a reason phrase): made safe to print.
            fail(safe_text(str(e), 4096))
        except (
            KeyError,
            TypeError,
            AttributeError,
            IndexError,
            ValueError,
            ArithmeticError,
            RecursionError,
        ) as e:
            # An answer without the fields or types kdsctl reads (a broken or hostile server,
            # or not a kds-sync API at all): said so, never a traceback. Raised before any
            # answer, it is kdsctl's own bug and shown as such.
            client = ctx.find_object(ApiClient)
            if client is None or not client.last_request:
                raise
            what = f"no field {e.args[0]!r}" if isinstance(e, KeyError) and e.args else str(e)
            fail(
                f"the answer to {client.last_request} is not what kdsctl expects "
                f"({safe_text(what, 200)}): is --api-url a kds-sync control plane of this "
                "version?"
            )


class _AliasGroup(_LazyGroup):
    """A group whose commands also answer to a singular/plural alias."""

    def __init__(self, *args: Any, aliases: Mapping[str, str] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.aliases = dict(aliases or {})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        _, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd else None), cmd, rest


def read_token(token: str, token_file: Path | None) -> str:
    """The bearer token: ``token`` if given, else the content of ``token_file``, stripped."""
    if not token and token_file is not None:
        try:
            token = token_file.read_text()
        except OSError as e:
            raise click.BadParameter(
                f"cannot read {token_file}: {e.strerror}", param_hint="'--token-file'"
            ) from None
        if not token.strip():
            raise click.BadParameter(f"{token_file} is empty", param_hint="'--token-file'")
        given = "'--token-file'"
    else:
        given = "'--token' (or KDSCTL_TOKEN)"
    token = token.strip()
    # A header cannot carry a control character: http.client refused it with a traceback
    # that quoted the token (a token file of two lines printed both on stderr).
    if not all(" " <= c <= "~" or "\xa0" <= c <= "\xff" for c in token):
        raise click.BadParameter(
            "the token holds a line break, a control character or a character outside "
            "Latin-1, which no HTTP header can carry (the token is not shown)",
            param_hint=given,
        )
    return token


def tls_verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    """What to verify the API's certificate with: the system's CAs (True) or ``ca_file``'s."""
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (ssl.SSLError, ValueError):
        raise click.BadParameter(
            f"{ca_file} holds no PEM certificate", param_hint="'--ca-file'"
        ) from None


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # kds.version asks importlib.metadata, which costs more to import than the rest of a
    # simple command: only --version pays for it.
    if not value or ctx.resilient_parsing:
        return
    from kds.version import __version__

    click.echo(f"kdsctl, version {__version__}")
    ctx.exit()


def _timeout(ctx: click.Context, param: click.Parameter, value: str) -> float:
    if (seconds := duration_param(ctx, param, value)) <= 0:
        raise click.BadParameter("must be more than 0")
    return seconds


@click.group(
    "kdsctl",
    cls=_RootGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    lazy={
        "apply": "kdsctl.apply:apply",
        "inspect": "kdsctl.status:inspect",
        "wait": "kdsctl.wait:wait",
        "generate": "kdsctl.tokens:generate",
        "revoke": "kdsctl.tokens:revoke",
        "rotate": "kdsctl.tokens:rotate",
    },
)
@click.option(
    "--api-url",
    envvar="KDSCTL_API_URL",
    default=DEFAULT_API_URL,
    show_default=True,
    metavar="URL",
    help="Base URL of the control plane's HTTP API (global or zone). Environment: KDSCTL_API_URL.",
)
@click.option(
    "--timeout",
    envvar="KDSCTL_TIMEOUT",
    default="10s",
    show_default=True,
    callback=_timeout,
    metavar="DURATION",
    help="How long to wait for connecting and for each API answer (10s, 500ms, 2m; a bare "
    "number is seconds). Environment: KDSCTL_TIMEOUT.",
)
@click.option(
    "--token",
    envvar="KDSCTL_TOKEN",
    default="",
    metavar="TOKEN",
    help="Bearer token for the API: the daemon's admin token (DATA_DIR/admin-token) or its "
    "read-only token, which sees no secret data. Environment: KDSCTL_TOKEN.",
)
@click.option(
    "--token-file",
    envvar="KDSCTL_TOKEN_FILE",
    default=None,
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the bearer token from FILE (e.g. the daemon's DATA_DIR/admin-token), which keeps "
    "it out of the process list. When both are given the same way, --token wins; a flag "
    "on the command line wins over the environment (--token-file over KDSCTL_TOKEN). "
    "Environment: KDSCTL_TOKEN_FILE.",
)
@click.option(
    "--ca-file",
    envvar="KDSCTL_CA_FILE",
    default=None,
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA certificate (PEM) to verify an https:// API with (one started with "
    "--api-tls-cert-file); default: the system's trusted CAs. Environment: KDSCTL_CA_FILE.",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    api_url: str,
    timeout: float,
    token: str,
    token_file: Path | None,
    ca_file: Path | None,
) -> None:
    """Manage Meshes, Secrets and GlobalSecrets of a kds-sync control plane.

    Write on the global control plane: resources created there are synced to every zone.
    On a zone, synced resources are read-only; zone-local ones can be managed there.
    """
    # A flag on the command line beats the environment: with KDSCTL_TOKEN exported for
    # global, --token-file of a zone's admin-token is what the user means.
    given = click.core.ParameterSource.COMMANDLINE
    if (
        ctx.get_parameter_source("token_file") is given
        and ctx.get_parameter_source("token") is not given
    ):
        token = ""
    token = read_token(token, token_file)
    client = ApiClient(api_url, timeout, token, tls_verify(ca_file))
    ctx.obj = client
    ctx.call_on_close(client.close)


@cli.group(
    cls=_AliasGroup,
    lazy={
        "zone-tokens": "kdsctl.tokens:get_zone_tokens",
        "zone-token-signing-keys": "kdsctl.tokens:get_signing_keys",
    },
    aliases={
        "mesh": "meshes",
        "secret": "secrets",
        "global-secret": "global-secrets",
        "globalsecret": "global-secrets",  # kumactl's names
        "globalsecrets": "global-secrets",
    },
)
def get() -> None:
    """Show resources: meshes, secrets or global-secrets (singular forms and kumactl's
    globalsecret(s) work too)."""


@cli.group(
    cls=_AliasGroup,
    lazy={"zone-token-signing-key": "kdsctl.tokens:delete_signing_key"},
    aliases={
        "meshes": "mesh",
        "secrets": "secret",
        "global-secrets": "global-secret",
        "globalsecret": "global-secret",  # kumactl's names
        "globalsecrets": "global-secret",
    },
)
def delete() -> None:
    """Delete a mesh, secret or global-secret (kumactl's globalsecret works too)."""


for command in (resources.get_meshes, resources.get_secrets, resources.get_global_secrets):
    get.add_command(command)
for command in (resources.delete_mesh, resources.delete_secret, resources.delete_global_secret):
    delete.add_command(command)


def main() -> None:
    cli(prog_name="kdsctl")


if __name__ == "__main__":  # pragma: no cover
    main()
