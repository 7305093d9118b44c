"""Run a versioned driver script inside a toolchain's environment: JSON request in, JSON result out.

The contract, shared by every script in ``edgequant/toolchains/drivers/``::

    <venv>/bin/python <driver>.py request.json result.json

``request.json`` holds file paths and settings.  Paths are given as :class:`~pathlib.Path` values and
:func:`run_driver` writes them absolute (the driver runs in its own working directory: a path relative
to the caller's would name another file there); a plain string is a setting, never resolved.  The
driver writes ``result.json`` as ``{"driver_version": N, "ok": true, ...}`` or ``{"ok": false,
"error": "<one line>", "stage": "..."}`` and exits 0 either way (a non-zero exit without a result is a
crash of the toolchain itself).
Arrays travel as ``.npz`` files named in the request and the result.  The scripts share that protocol
(reading the request, the one-line error, writing the result) and their timing loop through
``drivers/_driver.py``, which imports the standard library only (never ``edgequant``).
"""

from __future__ import annotations

import json
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

from edgequant.errors import ExportError, TargetError
from edgequant.toolchains.envs import require

DRIVER_VERSION = 1


def absolute_paths(value: Any) -> Any:
    """``value`` with every :class:`~pathlib.Path` in it (in dicts, lists, tuples) made an absolute string."""
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, dict):
        return {k: absolute_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [absolute_paths(v) for v in value]
    return value


def run_driver(
    toolchain: str, driver: str, request: dict[str, Any], workdir: Path, *, timeout_s: float = 3600.0
) -> dict[str, Any]:
    """Run ``drivers/<driver>.py`` with ``toolchain``'s interpreter; its JSON result.

    ``request``: settings, and file paths as ``Path`` values (sent absolute: ``absolute_paths``).

    Raises:
        TargetError: the toolchain is not installed (hint: the install command).
        ExportError: the driver reported an error (its one line, and the stage), crashed, or timed out.
    """
    python = require(toolchain)
    workdir = workdir.resolve()
    req_path, res_path = workdir / f"{driver}.request.json", workdir / f"{driver}.result.json"
    req_path.write_text(json.dumps({"driver_version": DRIVER_VERSION, **absolute_paths(request)}))
    script = resources.files("edgequant.toolchains") / "drivers" / f"{driver}.py"
    try:
        proc = subprocess.run(
            [str(python), str(script), str(req_path), str(res_path)],
            capture_output=True, text=True, timeout=timeout_s, cwd=workdir,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise ExportError(
            f"the {toolchain} driver did not finish within {timeout_s:.0f} s.",
            "use a smaller model, fewer --tune-trials, or a --tune-budget-s.",
        ) from exc
    if not res_path.is_file():
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise ExportError(
            f"the {toolchain} toolchain crashed (exit code {proc.returncode}) before writing its result: {tail}",
            f"reinstall it with: edgequant toolchain install {toolchain}; report the model if it persists.",
        )
    result: dict[str, Any] = json.loads(res_path.read_text())
    if result.get("driver_version") != DRIVER_VERSION:
        raise TargetError(
            f"the {driver} driver answered version {result.get('driver_version')}, expected {DRIVER_VERSION}.",
            "reinstall EdgeQuant; the driver scripts ship with it.",
        )
    if not result.get("ok"):
        stage = str(result.get("stage", "?"))
        raise ExportError(
            f"{toolchain} failed at {stage}: {result.get('error', 'no message')}",
            result.get("hint") or stage_hint(toolchain, stage),
        )
    return result


def stage_hint(toolchain: str, stage: str) -> str:
    """The fix for a driver that failed at ``stage``: the model's ops only where the model was being
    imported, quantized, converted, tuned or compiled; a load failure is about the artifact file."""
    if stage == "load":
        return (
            f"check that the artifact file exists and was written by this EdgeQuant's {toolchain} toolchain; "
            "rebuild it with edgequant quantize ... --target "
            + ("tvm" if toolchain == "tvm" else "akida")
            + "."
        )
    if stage in ("run", "latency"):
        return (
            f"check that the samples match the model's inputs (names, shapes, dtype); reinstall with "
            f"edgequant toolchain install {toolchain} if it persists."
        )
    return f"check that the model uses ops the {toolchain} front end supports."
