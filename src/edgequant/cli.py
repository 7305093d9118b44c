"""The ``edgequant`` command: a thin typer app over the public API.

Every EdgeQuantError is printed as one line ``error: ...`` on stderr with exit code 2, and nothing
is written: outputs are saved only after the whole run succeeded.  Running out of memory (a
MemoryError, or any error raised while handling one) is one line ``error: out of memory (limit ...)``,
exit 2.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgequant.cli_support import VerbosityGroup, apply_verbosity, missing_extra
from edgequant.errors import EdgeQuantError, caused_by_memory, out_of_memory_error

# plain help text: rich markup would swallow "[tf]" and print "edgequant" for "edgequant[tf]"
app = typer.Typer(
    cls=VerbosityGroup,  # -v/-q also after the subcommand's name
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Quantize ONNX models for real, and prove it.",
)
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from edgequant.result import __version__

        console.print(f"edgequant {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _main_options(
    ctx: typer.Context,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
    verbose: Annotated[
        int,
        typer.Option(
            "-v",
            "--verbose",
            count=True,
            help="More log output: -v each stage run and its time (INFO), -vv also each node's decision "
            "(DEBUG); also accepted after the command.",
        ),
    ] = 0,
    quiet: Annotated[
        bool,
        typer.Option(
            "-q",
            "--quiet",
            help="No notes, progress or third-party deprecation warnings; results, warnings and errors still "
            "print. Also accepted after the command.",
        ),
    ] = False,
) -> None:
    """Quantize ONNX models for real, and prove it."""
    apply_verbosity(ctx, verbose, quiet)


def fail(exc: EdgeQuantError) -> None:
    if caused_by_memory(exc):  # an error raised while out of memory: the memory is the problem
        exc = out_of_memory_error()
    err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def run_guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except EdgeQuantError as exc:
        fail(exc)


class ProgressBar:
    """A rich progress bar fed by the pipeline's ``progress(stage, done, total)`` callback."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err_console, transient=True, disable=not err_console.is_terminal,
        )  # fmt: skip
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressBar:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=total)
        self._progress.update(self._tasks[stage], completed=done, total=total)


def parse_options(items: list[str]) -> dict[str, Any]:
    """``["video_frames=32", "csv_columns=a,b"]`` -> ``{"video_frames": 32, "csv_columns": ["a", "b"]}``."""
    from edgequant.recipe.flags import key_values

    return key_values(items)


# each module's register(app) adds its command; this order is the order of ``edgequant --help``
COMMANDS = (
    "quantize",
    "inspect_model",
    "demo",
    "evaluate",
    "compare",
    "serve",
    "targets",
    "toolchain",
    "check",
    "qat",
    "sweep",
)
for _name in COMMANDS:
    importlib.import_module(f"edgequant.commands.{_name}").register(app)


def main() -> None:
    try:
        app()
    except EdgeQuantError as exc:  # raised outside a command's own guard
        shown = out_of_memory_error() if caused_by_memory(exc) else exc
        err_console.print(f"error: {shown}", markup=False, soft_wrap=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:  # an optional extra that a command needs is not installed
        dep = missing_extra(exc)
        if dep is None:
            raise
        err_console.print(f"error: {dep}", markup=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # out of memory anywhere (or an error raised while handling it): one line
        if not caused_by_memory(exc):
            raise
        err_console.print(f"error: {out_of_memory_error()}", markup=False, soft_wrap=True)
        sys.exit(2)
