"""The files a ``compare`` run writes into its output folder, checked before the work, and the files of
the earlier run that ``overwrite`` removes.

A run writes the report files (``REPORT_FILES``: ``report.json``, ``results.csv``, ``report.md``,
``report.html``) and, per method, ``<stem>_float.onnx`` (``float``) or ``<stem>_<tag>.onnx`` with its
report ``<stem>_<tag>.json`` and plan ``<stem>_<tag>.plan.json`` (a vendor toolchain target also its
artifact, e.g. ``<stem>_<tag>.tvm.so``).  Each row of ``report.json`` lists the files it wrote
(``files``).

Without ``overwrite``, any of these that exists refuses the run before any work (``check_outdir``:
ExportError naming the file and ``--overwrite``).  With ``overwrite``, the earlier run's files are
removed once the inputs are checked and before this run writes (``remove_previous``): exactly the files
its ``report.json`` lists (the report files and each row's files; for a report written before rows
listed their files, each row's model, plan and ``.json`` report), and only regular files directly in the
folder: a symbolic link is never followed nor removed, a listed name with a path separator or one that
resolves outside the folder is skipped, and the input model is never removed.  Other files in the folder
are left as they are.  So after a run the folder holds no file of an earlier compare run that its
report does not list.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgequant import toolchains
from edgequant.errors import ExportError
from edgequant.outputs import check_writable, same_file
from edgequant.recipe import preset

REPORT_FILES = {"json": "report.json", "csv": "results.csv", "markdown": "report.md", "html": "report.html"}


def planned_files(
    stem: str,
    names: Sequence[str],
    extra_targets: Sequence[str],
    *,
    target: str,
    allow_synthetic: bool,
    report: bool,
) -> list[str]:
    """The file names a run of methods ``names`` (then one ``int8-static@<t>`` row per ``extra_targets``)
    writes for a model named ``stem``: each method's files, then the report files (when ``report``)."""
    from edgequant.evaluate.target_rows import BASE_PRESET

    files: list[str] = []
    for name in names:
        if name == "float":
            files.append(f"{stem}_float.onnx")
            continue
        tag = preset(name, allow_synthetic=allow_synthetic, target=target).default_tag
        files += _quantized(f"{stem}_{tag}", target)
    for t in extra_targets:
        tag = preset(BASE_PRESET, allow_synthetic=allow_synthetic, target=t, tag=f"int8_{t}").default_tag
        files += _quantized(f"{stem}_{tag}", t)
    return files + (list(REPORT_FILES.values()) if report else [])


def _quantized(base: str, target: str) -> list[str]:
    suffix = toolchains.SUFFIX.get(target) if target in toolchains.TARGETS else None
    return [f"{base}.onnx", f"{base}.json", f"{base}.plan.json", *([f"{base}{suffix}"] if suffix else [])]


CLI_FIX = (
    "pass --overwrite to replace the earlier run (its listed files are removed first), or choose another -o."
)
API_FIX = (
    "pass overwrite=True to replace the earlier run (its listed files are removed first), or another outdir."
)


def check_outdir(out: Path, files: Iterable[str], *, overwrite: bool, model: Any, fix: str = API_FIX) -> None:
    """``outputs.check_writable`` for a compare run: ExportError (one line naming the first existing file
    and ``fix``: ``CLI_FIX`` or ``API_FIX``) when one of ``files`` exists in ``out`` and not ``overwrite``;
    also an ``out`` that cannot be created or written."""
    inputs = [Path(model)] if isinstance(model, str | Path) else []
    check_writable(out, [out / f for f in files], overwrite=overwrite, inputs=inputs, clash_fix=fix)


def saved_names(files: Mapping[str, Any]) -> list[str]:
    """Every file name in a quantize report's ``files`` (model, report, plan, data, artifacts)."""
    names: list[str] = []
    for value in files.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item not in names:
                names.append(item)
    return names


def previous_files(out: Path) -> list[str]:
    """The files the compare report ``out/report.json`` lists ([] without one, or when it is not a
    compare report EdgeQuant can read)."""
    path = out / REPORT_FILES["json"]
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return []
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("kind") != "compare":
        return []
    files = data.get("files")
    names = [v for v in files.values() if isinstance(v, str)] if isinstance(files, dict) else []
    names.append(REPORT_FILES["json"])
    for row in data.get("methods") or []:
        if not isinstance(row, dict):
            continue
        listed = row.get("files")
        if isinstance(listed, list):
            names += [f for f in listed if isinstance(f, str)]
            continue
        model, plan = row.get("model_file"), row.get("plan_file")  # a report from before rows listed files
        names += [f for f in (model, plan) if isinstance(f, str) and f]
        if isinstance(plan, str) and plan.endswith(".plan.json"):
            names.append(plan[: -len(".plan.json")] + ".json")
    return list(dict.fromkeys(names))


def remove_previous(out: Path, names: Iterable[str], model: Any) -> list[str]:
    """Remove the regular files ``names`` directly in ``out`` (see the module doc for what is never
    removed); returns the names removed."""
    removed: list[str] = []
    if not out.is_dir():
        return removed
    root = out.resolve()
    source = Path(model) if isinstance(model, str | Path) else None
    for name in names:
        if not name or "/" in name or "\\" in name or "\x00" in name or name in (".", ".."):
            continue
        path = root / name
        try:
            if not stat.S_ISREG(path.lstat().st_mode) or path.resolve().parent != root:
                continue
            if source is not None and same_file(path, source):
                continue
        except OSError:  # gone already
            continue
        try:
            path.unlink()
        except OSError as exc:
            raise ExportError(
                f"cannot remove '{path}', a file of the earlier compare run in '{out}': {exc.strerror or exc}.",
                "fix the folder's permissions, or choose another -o.",
            ) from exc
        removed.append(name)
    return removed
