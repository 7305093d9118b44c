"""Helpers of the ``edgequant`` command that are not commands: verbosity (``-v/-q`` before or after the
subcommand, ``VerbosityGroup``), the defaults shown in
``--help`` (read from the Recipe, so help and behaviour cannot drift apart), the one-line message for a
missing optional extra, the example input shape of a TorchScript model read from its calibration data, and
``print_table``, through which every rich table the CLI prints goes (whole when piped).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from edgequant.errors import DataError, DependencyError, ModelError
from edgequant.recipe import Recipe

# top-level import name of a module -> the extra that installs it
EXTRA_OF_MODULE: dict[str, str] = {
    "torch": "torch",
    "onnxscript": "torch",
    "tensorflow": "tf",
    "tf2onnx": "tf",
    "keras": "tf",
    "PIL": "data",
    "h5py": "data",
    "av": "data",
    "ray": "ray",
    "fastapi": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "python_multipart": "serve",
}

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Recipe) if f.default is not dataclasses.MISSING}


def default(field: str, shown: str | None = None) -> str:
    """``"[default: 8]"`` for a Recipe field (``shown`` replaces the value's text, e.g. for a bool flag)."""
    value = _DEFAULTS[field]
    if shown is None:
        shown = "none" if value is None else str(value)
    return f"[default: {shown}]"


def configure_logging(verbose: int, quiet: bool) -> Callable[[], None]:
    """The ``edgequant`` logger: warnings by default and under -q (which hides notes and progress, never
    warnings or results); -v: what each stage ran and its time (INFO); -vv: also each node's decision (DEBUG).

    Sets the ``edgequant`` logger only (an application's root logger is left alone) and returns a function
    that restores it as it was, for when the command ends.
    """
    level = logging.WARNING if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logger = logging.getLogger("edgequant")
    before = logger.level
    handler = logging.StreamHandler()  # bound to the current stderr
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(before)

    return restore


_quiet = {"on": False}
_VERBOSITY = re.compile(r"^(-v+|--verbose|-q|--quiet)$")


def is_quiet() -> bool:
    """True when -q/--quiet was given (before or after the subcommand): print no notes (warnings still print)."""
    return _quiet["on"]


def apply_verbosity(ctx: Any, verbose: int, quiet: bool) -> None:
    """Configure the ``edgequant`` logger for this invocation (restored when ``ctx`` closes)."""
    restore = configure_logging(verbose, quiet)
    _quiet["on"] = quiet
    filters = list(warnings.filters)
    if quiet:  # third-party deprecation noise (torch's FutureWarnings) is not EdgeQuant's to print under -q
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)

    def done() -> None:
        restore()
        warnings.filters[:] = filters  # type: ignore[index]
        _quiet["on"] = False

    ctx.call_on_close(done)


def hoist_verbosity(args: list[str]) -> list[str]:
    """``quantize m.onnx -q -v`` -> ``-q -v quantize m.onnx``: -v/-vv/--verbose/-q/--quiet given after the
    subcommand (or a sub-subcommand) move to the top level, which owns them; ``--`` ends the search.
    No subcommand takes a -v/-q option or a value that looks like one, so nothing else can be meant."""
    first = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if first is None:
        return list(args)
    head, tail = list(args[:first]), list(args[first:])
    end = tail.index("--") if "--" in tail else len(tail)
    moved = [a for a in tail[:end] if _VERBOSITY.match(a)]
    kept = [a for a in tail[:end] if not _VERBOSITY.match(a)] + tail[end:]
    return head + moved + kept


class VerbosityGroup(TyperGroup):
    """The top-level group: every subcommand also takes -v/-q after its name (``edgequant quantize m -q``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_verbosity(args))


def missing_extra(exc: ModuleNotFoundError) -> DependencyError | None:
    """The DependencyError naming the extra for an optional package that is not installed, else None."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None:
        return None
    return DependencyError.missing(top, extra, "This command")


def shape_from_calibration(calib_data: str | None, option: str = "--calib-data") -> str:
    """The ``--input-shape`` text (``1x3x32x32``) of the first sample of a ``.npy``/``.npz`` file
    (``option`` names the flag that gave it; an evaluation file's ``labels`` array is not an input).

    A TorchScript archive records no input shape, so the exporter needs an example input; the first
    calibration sample is one.  Other data formats get their shape from the model's inputs (which a
    TorchScript file does not declare), so they need ``--input-shape``.  Raises ModelError otherwise.
    """
    need = ModelError(
        "a PyTorch model needs the shape of its example input(s) for export, and "
        + (f"no {option} was given" if calib_data is None else f"'{calib_data}' is not a .npy/.npz file")
        + " to take it from.",
        "add --input-shape 1x3x224x224 (several inputs: comma-separated).",
    )
    if calib_data is None or Path(calib_data).suffix not in (".npy", ".npz"):
        raise need
    from edgequant.data.arrays import open_npy, open_npz

    path = Path(calib_data)
    if not path.is_file():
        raise DataError(f"data file '{path}' does not exist.", f"check the path given to {option}.")
    reader = open_npy(path) if path.suffix == ".npy" else open_npz(path)
    inputs = {k: v for k, v in reader.arrays.items() if k != "labels"}
    if len(inputs) != 1:
        raise ModelError(
            f"'{path}' holds {len(inputs)} input arrays ({', '.join(inputs)}); the order of a "
            "TorchScript model's inputs cannot be read from their names.",
            "add --input-shape with one shape per input, comma-separated, in the forward() order.",
        )
    arr: Any = next(iter(inputs.values()))
    if len(arr.shape) < 1 or arr.shape[0] < 1:
        raise DataError(f"'{path}' holds no samples.", "save the samples on axis 0.")
    return "x".join(str(d) for d in (1, *arr.shape[1:]))


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` whole: off a terminal (a file, a pipe) the console widens to the table's natural
    width instead of shortening cells to ``97.…``; on a terminal rich fits it to the window."""
    if console.is_terminal:
        console.print(table)
        return
    need = console.measure(table, options=console.options.update_width(10_000)).maximum
    width = console.width  # Console.print(width=) cannot exceed it: widen the console for this table
    console.width = max(width, need)
    try:
        console.print(table)
    finally:
        console.width = width
