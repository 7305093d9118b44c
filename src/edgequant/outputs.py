"""Where a run's files go, checked before the work starts.

``-o DIR`` writes ``DIR/<name>_<tag>.onnx`` with its report (``.json``) and plan (``.plan.json``);
``-o path/file.onnx`` writes that model file, its sidecars beside it (``file.json``,
``file.plan.json``).  Existing files are replaced only with ``overwrite``; a folder that cannot be
created or written is refused up front (ExportError), so a long calibration never ends in a traceback.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgequant.errors import ExportError


@dataclass(frozen=True)
class OutputPaths:
    folder: Path
    model: Path
    report: Path
    plan: Path
    float_model: Path

    def files(self, with_float: bool) -> list[Path]:
        return [self.model, self.report, self.plan, *([self.float_model] if with_float else [])]


def output_paths(out: str | Path, name: str, tag: str) -> OutputPaths:
    """The files a run named ``name`` with tag ``tag`` writes for ``-o out``."""
    out = Path(out)
    if out.suffix == ".onnx":
        folder, stem = out.parent, out.stem
    else:
        folder, stem = out, f"{name}_{tag}"
    return OutputPaths(
        folder,
        folder / f"{stem}.onnx",
        folder / f"{stem}.json",
        folder / f"{stem}.plan.json",
        folder / f"{name}_float.onnx",
    )


def check_writable(
    folder: Path,
    existing: list[Path],
    *,
    overwrite: bool,
    inputs: Sequence[Path] = (),
    clash_fix: str = "pass --overwrite to replace them, or choose another -o (or --tag).",
) -> None:
    """Refuse, before any work, an output folder that cannot be made or written, or files that exist.

    ``existing`` are the files the run would write; any that exists needs ``overwrite``.  One that is
    an ``inputs`` file (the user's model; same file also through a symlink, ``..`` or a hard link) is
    refused even with ``overwrite``.  Raises ExportError naming the path and the fix (``clash_fix`` for an
    existing file: the caller's words).
    """
    for out in existing:
        for given in inputs:
            if same_file(out, given):
                raise ExportError(
                    f"output '{out}' is the input model '{given}'; EdgeQuant never writes over its input, "
                    "not even with --overwrite.",
                    "choose another -o (a folder, or another .onnx file name).",
                )
    # resolved as the kernel will once the folder exists: 'bo/../../x' (no bo yet) is '../x', so no
    # 'bo' is made, and the files already in '../x' are seen
    real = Path(folder).resolve()
    if real.exists() and not real.is_dir():
        raise ExportError(
            f"output path '{folder}' exists and is not a directory.",
            "pass a directory to -o, or a path ending in .onnx for the model file.",
        )
    clash = [p for p in existing if Path(p).resolve().exists()]
    if clash and not overwrite:
        raise ExportError(
            f"'{clash[0]}' already exists"
            + (f" (and {len(clash) - 1} more of this run's files)" if clash[1:] else "")
            + "; EdgeQuant does not replace files unasked.",
            clash_fix,
        )
    probe = real
    while not probe.exists():  # the nearest existing ancestor must accept a new entry
        probe = probe.parent
    if not probe.is_dir():
        raise ExportError(
            f"cannot create output folder '{folder}': '{probe}' is a file, not a directory.",
            "choose an -o path under a directory.",
        )
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".edgequant-probe-"):
            pass
    except OSError as exc:
        raise ExportError(
            f"cannot write to '{probe}' (for output '{folder}'): {exc.strerror or exc}.",
            "choose a writable -o path, or fix the folder's permissions.",
        ) from exc


def same_file(a: Path, b: Path) -> bool:
    """Whether writing ``a`` would replace ``b`` (same resolved path, or the same inode)."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return Path(a).exists() and Path(b).exists() and Path(a).samefile(b)
    except OSError:
        return False
