"""Where a run's files go, checked before the work starts.

``-o DIR`` writes ``DIR/<name>_<tag>.onnx`` with its report (``.json``) and plan (``.plan.json``);
``-o path/file.onnx`` writes that model file, its sidecars beside it (``file.json``,
``file.plan.json``).  Existing files are replaced only with ``overwrite``; a folder that cannot be
created or written is refused up front (ExportError), so a long calibration never ends in a traceback.
"""

from __future__ import annotations

import errno
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
    option: str = "-o",
    example: str = "",
) -> None:
    """Refuse, before any work, an output folder that cannot be made or written, or files that exist.

    ``existing`` are the files the run would write; any that exists needs ``overwrite``.  One that is
    an ``inputs`` file (the user's model; same file also through a symlink, ``..`` or a hard link) is
    refused even with ``overwrite``; so is one that is a symbolic link.  Raises ExportError naming the path
    and the fix (``clash_fix`` for an existing file: the caller's words).  ``option`` is the flag that
    named the path and ``example`` a path it takes (``--output-csv``, ``out/result.csv``); without an
    example the fix texts are quantize's (a folder, or a path ending in .onnx).
    """
    another = f"choose another {option} (e.g. {option} {example})." if example else ""
    for out in existing:
        for given in inputs:
            if same_file(out, given):
                raise ExportError(
                    f"output '{out}' is the input model '{given}'; EdgeQuant never writes over its input, "
                    "not even with --overwrite.",
                    another or "choose another -o (a folder, or another .onnx file name).",
                )
    for out in existing:  # its parent resolved: 'bo/../x/f' is 'x/f'
        if (Path(out).parent.resolve() / Path(out).name).is_symlink():
            raise ExportError(
                f"output '{out}' is a symbolic link; EdgeQuant never writes through a link (its target is "
                "someone's file), not even with --overwrite.",
                f"remove it or choose another {option}.",
            )
    # resolved as the kernel will once the folder exists: 'bo/../../x' (no bo yet) is '../x', so no
    # 'bo' is made, and the files already in '../x' are seen
    real = Path(folder).resolve()
    if real.exists() and not real.is_dir():
        raise ExportError(
            f"output path '{folder}' exists and is not a directory.",
            another or "pass a directory to -o, or a path ending in .onnx for the model file.",
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
            another or "choose an -o path under a directory.",
        )
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".edgequant-probe-"):
            pass
    except OSError as exc:
        what = "write to the output folder" if probe == real else "create the output folder"
        why, fixable = _why_not(probe, exc)
        raise ExportError(
            f"cannot {what} '{folder}': {why}.",
            f"choose an {option} path in a folder you can write, e.g. {option} {example or 'out/'}"
            + (", or fix the folder's permissions." if fixable else "."),
        ) from exc


def _why_not(folder: Path, exc: OSError) -> tuple[str, bool]:
    """Why ``folder`` takes no new file, in words: its file system when that is a virtual one (proc,
    sysfs: ENOENT/EACCES on create), else the OS error's text; and whether permissions could fix it."""
    fs = _fs_type(folder)
    if fs in _VIRTUAL:
        return f"'{folder}' is on {fs}, a virtual file system of the kernel that holds no user files", False
    words = {
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EROFS: f"'{folder}' is on a read-only file system",
        errno.ENOSPC: "no space left on the device",
    }
    why = words.get(exc.errno or 0, f"'{folder}': {exc.strerror or exc}")
    return why, exc.errno in (errno.EACCES, errno.EPERM)


_VIRTUAL = ("proc", "sysfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs", "tracefs", "configfs")


def _fs_type(path: Path) -> str | None:
    """The file system type of ``path`` from /proc/self/mounts (the longest mount point above it);
    None where that file is not readable (not Linux)."""
    try:
        lines = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    best, kind = "", None
    text = str(path)
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = text == point or text.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def same_file(a: Path, b: Path) -> bool:
    """Whether writing ``a`` would replace ``b`` (same resolved path, or the same inode)."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return Path(a).exists() and Path(b).exists() and Path(a).samefile(b)
    except OSError:
        return False
