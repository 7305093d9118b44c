"""``edgequant toolchain install|list|remove NAME``: vendor toolchains in environments of their own.

See :mod:`edgequant.toolchains.envs`.  ``install akida`` needs ``--accept-license`` (BrainChip's EULA).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edgequant.cli_support import print_table
from edgequant.errors import EdgeQuantError


def register(app: typer.Typer) -> None:
    group = typer.Typer(no_args_is_help=True, help="Install, list and remove vendor toolchains (TVM, Akida).")
    out, err = Console(), Console(stderr=True)

    def _fail(exc: EdgeQuantError) -> None:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)

    @group.command("install")
    def install(
        name: Annotated[str, typer.Argument(help="tvm or akida.")],
        accept_license: Annotated[
            bool,
            typer.Option("--accept-license", help="Accept the toolchain's licence (required for akida)."),
        ] = False,
        force: Annotated[
            bool, typer.Option("--force", help="Reinstall even when installed already.")
        ] = False,
    ) -> None:
        """Create the toolchain's own virtual environment with pinned, tested versions."""
        from edgequant.toolchains import envs

        try:
            chain = envs.get(name)
            if chain.license_terms and accept_license:
                err.print(f"licence: {chain.license_terms}", markup=False, highlight=False, soft_wrap=True)
            envs.install(
                name, accept_license=accept_license, force=force, log=lambda m: err.print(m, markup=False)
            )
        except EdgeQuantError as exc:
            _fail(exc)

    @group.command("list")
    def list_() -> None:
        """Show each known toolchain: installed or not, where, and which versions."""
        from edgequant.toolchains import envs

        table = Table(
            "toolchain", "installed", "where", "versions", title=f"toolchains in {envs.cache_dir()}"
        )
        for name, info in envs.installed().items():
            if info is None:
                table.add_row(name, "no", "-", f"install: {envs.install_command(name)}")
            else:
                versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
                table.add_row(name, "yes", str(envs.env_dir(name)), versions)
        print_table(out, table)

    @group.command("remove")
    def remove(name: Annotated[str, typer.Argument(help="tvm or akida.")]) -> None:
        """Delete the toolchain's environment."""
        from edgequant.toolchains import envs

        try:
            removed = envs.remove(name)
        except EdgeQuantError as exc:
            _fail(exc)
        out.print(f"removed {name}" if removed else f"{name} was not installed", markup=False)

    app.add_typer(group, name="toolchain")
