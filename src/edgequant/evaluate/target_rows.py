"""``compare --targets cpu,tvm,akida``: one extra row per target beside the methods run for ``cpu``.

Each target other than the base one gets a row ``int8-static@<target>``: the ``int8-static`` preset
planned for that target's profile (``edgequant.targets``) and written with the tag ``int8_<target>``
so no file is shared with the ``cpu`` rows.  How the row is scored depends on what runs the model:

* a vendor toolchain target (``tvm``, ``akida``: ``edgequant.toolchains.TARGETS``): the *artifact*
  (``.tvm.so`` / ``.fbz``) is run on the evaluation batches in the toolchain's own environment, and its
  outputs are scored against ONNX Runtime's float outputs with the same task metric as every other row.
  Its size is the artifact's.  TVM's latency is measured by the TVM VM (same sample, same threads) and
  labelled so; Akida's software backend is not the device, so no latency is given, nor an energy
  estimate (TVM runs Q/DQ as float math: an int8 estimate would not describe it);
* any other profile (``ti-npu``, ``vitis-dpu``, ``cmsis-nn``): the QDQ model that obeys the profile, run
  in ONNX Runtime like the other rows, with its compliance report.

A missing toolchain fails its row (the install command in the error); the other rows still run.
:func:`score_artifact` is the one scoring of an artifact: ``method_run.run_method`` uses it too, so a
``sweep`` cell for ``tvm``/``akida`` and every quantized row of ``compare --target tvm`` are the
artifact's own outputs, never ONNX Runtime's run of the QDQ model it was built from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgequant import pipeline, targets, toolchains
from edgequant.errors import EdgeQuantError, RecipeError
from edgequant.evaluate import core, perf
from edgequant.evaluate.compare_files import saved_names
from edgequant.recipe import preset
from edgequant.runtime import OrtRuntime

BASE_PRESET = "int8-static"


def parse_targets(value: str | Sequence[str] | None, base: str) -> list[str]:
    """``"cpu,tvm,akida"`` -> the canonical target names other than ``base``, in the order given.

    Raises:
        RecipeError: an unknown name (the known ones listed, with the closest match); ``akida1``, whose
        route converts a Keras 2 ``.h5`` model at 4/2 bits (``compare`` takes ONNX/TorchScript models
        and plans its target rows as ``int8-static``).
    """
    if value is None:
        return []
    items = [t.strip() for t in value.split(",")] if isinstance(value, str) else [str(t) for t in value]
    if not [t for t in items if t]:
        raise RecipeError("--targets is empty.", "pass a comma-separated list, e.g. --targets cpu,tvm,akida.")
    out: list[str] = []
    for name in (t for t in items if t):
        canon = targets.canonical(name)  # RecipeError naming the known targets for an unknown one
        if canon == "akida1":
            raise RecipeError(
                "compare --targets akida1: the Akida 1.0 route converts a Keras 2 .h5 model at 4/2 bits; compare "
                "takes ONNX or TorchScript models and plans each target row as int8-static (8-bit).",
                "run edgequant quantize model.h5 --target akida1 --weight-bits 4 --act-bits 4, or use --targets "
                "akida (Akida 2.0, 8-bit, from ONNX).",
            )
        if canon != targets.canonical(base) and canon not in out:
            out.append(canon)
    return out


def row_name(target: str) -> str:
    return f"{BASE_PRESET}@{target}"


def target_row(
    result: Any,
    target: str,
    model: Any,
    calibration: Any,
    ev: core.EvalData,
    ref: np.ndarray,
    *,
    out: Path,
    out_name: str,
    task: str,
    layout: str,
    blank: int,
    rt: OrtRuntime,
    latency: Callable[[Path], dict[str, Any]],
    allow_synthetic: bool,
    extra: dict[str, Any],
    threads: int,
    latency_sample: core.Batch,
    runs: int = 30,
) -> Any:
    """Fill ``result`` (a ``MethodResult`` named :func:`row_name`) for ``target``; errors are recorded
    in it (status ``failed``) rather than raised, as for any method of ``compare``.  Returns the
    pipeline's result for a row run in ONNX Runtime (for its energy estimate and per-layer analysis),
    else None."""
    try:
        start = time.perf_counter()
        recipe = preset(BASE_PRESET, allow_synthetic=allow_synthetic, target=target, tag=f"int8_{target}")
        q = pipeline.quantize(model, calibration, recipe, runtime=rt, **extra)
        cal = q.report.get("calibration")
        result.calibration_data = "none" if not cal else "synthetic" if cal.get("synthetic") else "real"
        result.compliance = q.report.get("compliance")
        paths = q.save(out)
        result.files = saved_names(q.report["files"])
        result.tag, result.plan_file = q.tag, paths.plan.name
        result.quantize_seconds = time.perf_counter() - start
        if target in toolchains.TARGETS:
            score_artifact(
                result, target, q, out, ev.batches, ev.labels, ev.steps, ref, out_name=out_name, task=task,
                layout=layout, blank=blank, threads=threads, sample=latency_sample, runs=runs,
            )  # fmt: skip
            return None
        result.model_file = paths.model.name
        got = [np.asarray(o) for o in core.run_outputs(q.model, ev.batches, out_name, rt, result.method)]
        result.latency = latency(paths.model)
        size = perf.model_size(paths.model)
        result.file_bytes, result.packed_bytes = size.file_bytes, size.packed_bytes
        e = core.score_outputs(
            task,
            ref,
            core.join(got, task, layout, ev.steps),
            ev.labels,
            out_name,
            blank=blank,
            samples=ev.scored,
        )
        result.evaluation, result.score, result.drop = e.to_dict(), e.quant_score, e.drop
        result.drop_unit = e.drop_unit
        return q
    except EdgeQuantError as exc:
        result.status, result.error, result.error_type = "failed", str(exc), type(exc).__name__
        return None


def score_artifact(
    result: Any,
    target: str,
    q: Any,
    out: Path,
    batches: list[core.Batch],
    labels: Any,
    steps: list[np.ndarray] | None,
    ref: np.ndarray,
    *,
    out_name: str,
    task: str,
    layout: str,
    blank: int,
    threads: int,
    sample: core.Batch,
    runs: int,
) -> str:
    """Score the toolchain artifact ``q`` saved into ``out`` (``.tvm.so`` / ``.fbz``) on its own outputs:
    run it on ``batches`` in the toolchain's environment, score them against ``ref`` (the float
    outputs) with ``task``'s metric, and fill ``result`` (a ``MethodResult``): model file and size are
    the artifact's, latency TVM's own (``runs`` timed runs of ``sample``; None for Akida), no energy.
    The one scoring of an artifact: ``compare --targets``, ``compare --target tvm``, ``sweep``.
    Returns the primary metric's name.  Raises what the toolchain raises (ExportError, TargetError)."""
    artifact = out / q.report["files"]["toolchain_artifacts"][0]
    got, lat = _run_artifact(target, artifact, q, batches, out_name, threads, sample, runs)
    result.model_file = artifact.name
    result.file_bytes = result.packed_bytes = artifact.stat().st_size
    result.latency, result.memory, result.energy, result.predicted_latency = lat, None, None, None
    result.coverage = _note(target)
    e = core.score_outputs(task, ref, core.join(got, task, layout, steps), labels, out_name, blank=blank)
    result.evaluation, result.score, result.drop = e.to_dict(), e.quant_score, e.drop
    result.drop_unit = e.drop_unit
    return e.primary


def _run_artifact(
    target: str,
    artifact: Path,
    q: Any,
    batches: list[core.Batch],
    out_name: str,
    threads: int,
    sample: core.Batch,
    runs: int = 30,
) -> tuple[list[np.ndarray], dict[str, Any] | None]:
    if target == "tvm":
        from edgequant.toolchains.tvm import run_tvm

        outs, lat = run_tvm(
            artifact, q.model, batches, threads=threads, latency_runs=runs, latency_batch=sample
        )
        timing = None
        if lat:
            timing = {
                "median_ms": round(float(lat["median"]), 4), "p90_ms": round(float(lat["p90"]), 4),
                "runs": lat["runs"], "threads": lat["threads"], "runtime": "TVM relax.VirtualMachine (llvm)",
                "batch_size": len(next(iter(sample.values()))),
            }  # fmt: skip
        return [o[out_name] for o in outs], timing
    from edgequant.toolchains.akida import run_akida

    outs_ak = run_akida(artifact, q.float_model, batches)  # [N, 1, 1, C] for a classifier
    return [o.reshape(len(o), -1) for o in outs_ak], None


def _note(target: str) -> str:
    if target == "tvm":
        return (
            "the TVM library run in TVM's VM; TVM executes Q/DQ as float math (int8 accuracy, not int8 "
            "kernels); latency measured by TVM on the same sample and threads; no energy estimate"
        )
    return (
        "the Akida program run on Akida's software backend (BrainChip QuantizeML 8-bit, Akida 2.0); "
        "no latency or energy: the software backend is not the device"
    )
