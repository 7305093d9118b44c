"""Load and run a produced model in a child process, so a native ONNX Runtime crash is caught.

A segfault or abort inside ONNX Runtime (a kernel bug hit by an unusual graph) would end the
calling process with no message.  ``run_isolated`` runs the model in a fresh Python process
(``_child.py``, which imports only onnxruntime and numpy): a crash there becomes an
``InferenceError`` naming the signal and the stage (loading or running), and the caller prints one
line.  Costs one interpreter start (about 0.3 s of CPU) per call.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgequant.errors import InferenceError

CHILD = Path(__file__).with_name("_child.py")  # run as a script: imports onnxruntime and numpy only


def run_isolated(
    model: onnx.ModelProto | Path,
    batches: list[dict[str, np.ndarray]],
    *,
    what: str,
    providers: list[str],
    intra_op_threads: int = 0,
    optimize: bool = True,
    allow_spinning: bool = False,
    optimized: list[onnx.ModelProto] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Outputs (name -> array) of ``model`` on each batch, computed in a child process.

    ``optimized``: when a list is given, the graph ONNX Runtime runs (its level-2 "extended"
    optimisation of ``model``: Q/DQ pairs fused into integer kernels such as QLinearConv) is appended
    to it, without its weights (nodes and initializer metadata only).

    Raises InferenceError when ONNX Runtime refuses the model, fails to run it, or crashes.
    """
    from edgequant.model.io import save_model

    with tempfile.TemporaryDirectory(prefix="edgequant-check-") as tmp:
        d = Path(tmp)
        if isinstance(model, onnx.ModelProto):
            path = d / "model.onnx"
            save_model(model, path, durable=False)
        else:
            path = Path(model)
        feeds = {f"{b}/{k}": v for b, batch in enumerate(batches) for k, v in batch.items()}
        np.savez(d / "feeds.npz", **feeds)  # type: ignore[arg-type]
        spec = {
            "model": str(path), "feeds": str(d / "feeds.npz"), "outputs": str(d / "outputs.npz"),
            "batches": len(batches), "providers": list(providers), "intra_op_threads": intra_op_threads,
            "optimize": optimize, "allow_spinning": allow_spinning,
            "optimized": str(d / "optimized.onnx") if optimized is not None else "",
        }  # fmt: skip
        (d / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, str(CHILD), str(d / "spec.json")],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise _failure(proc, what)
        with np.load(d / "outputs.npz") as z:
            outs: list[dict[str, np.ndarray]] = [{} for _ in batches]
            for key in z.files:
                b, name = key.split("/", 1)
                outs[int(b)][name] = z[key]
        if optimized is not None:
            optimized.append(onnx.load(str(d / "optimized.onnx"), load_external_data=False))
        return outs


def _failure(proc: subprocess.CompletedProcess[str], what: str) -> InferenceError:
    stage = "running" if "loaded" in proc.stdout else "loading"
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        return InferenceError(
            f"ONNX Runtime crashed ({sig}) while {stage} {what}; the crash was caught in a child process.",
            "please report this with the model; meanwhile --exclude the node types the new model adds, "
            "or try another --method.",
        )
    last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    kind, _, msg = last.partition(": ")
    if kind == "load":
        return InferenceError(f"ONNX Runtime cannot load {what}: {msg}", "run 'edgequant inspect MODEL'.")
    if kind == "run":
        return InferenceError(
            f"ONNX Runtime failed to run {what}: {msg}",
            "check the input shapes and dtypes against 'edgequant inspect MODEL'.",
        )
    return InferenceError(f"the check of {what} failed in its child process: {last[:400]}", "report this.")
