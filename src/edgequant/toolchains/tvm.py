"""``--target tvm``: compile EdgeQuant's QDQ model with Apache TVM Relax and prove the library runs.

The QDQ model (the ``cpu`` plan: per-tensor activations, per-axis int8 weights, as TVM's Relax ONNX
front end imports it) is compiled by the tvm toolchain's driver for ``llvm`` with the host's ``mcpu``
(optionally after ``tune_trials`` MetaSchedule trials), exported with ``export_library`` to
``<name>_<tag>.tvm.so``, loaded back in ``relax.VirtualMachine`` and run on the check samples.  Its
outputs are compared with the float model and with the same QDQ model in ONNX Runtime (SQNR, dB), and
its latency is measured beside ORT's float and int8 sessions (same batch, same thread count).

Before TVM sees it, the model is prepared exactly (:mod:`edgequant.toolchains.tvm_prepare`): unknown
input dimensions get names of their own, and Reshape shapes computed at run time from ``Shape`` are
folded to constants (0 = "copy this dimension", so the batch stays dynamic).  The report's
``prepared`` section lists what changed; the SQNRs compare against the QDQ model as written.

TVM 0.27 lowers QuantizeLinear/DequantizeLinear to float arithmetic: the library reproduces int8
*rounding* (accuracy semantics), not int8 *kernels* (speed).  The report says so.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgequant.check import mean_output_sqnr
from edgequant.evaluate.perf import measure_latency
from edgequant.model.io import save_model
from edgequant.runtime import OrtRuntime
from edgequant.toolchains.runner import run_driver
from edgequant.toolchains.tvm_prepare import fold_reshape_shapes, name_unknown_dims

Batch = dict[str, np.ndarray]
NOTE = (
    "TVM 0.27 executes QuantizeLinear/DequantizeLinear as float arithmetic: the compiled library has int8 "
    "rounding (accuracy) semantics, not int8 kernels (speed)."
)


def build_tvm(
    quantized: onnx.ModelProto,
    float_model: onnx.ModelProto | Path,
    batches: list[Batch],
    *,
    tune_trials: int = 0,
    tune_budget_s: float | None = None,
    threads: int = 1,
    latency_runs: int = 30,
    target: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Compile ``quantized`` with TVM; the ``.so`` bytes and the report section.

    Args:
        quantized: the QDQ model (opset >= 13).
        float_model: the user's float model, the reference for SQNR.
        batches: check batches, ``{input name: array}``; at least one.
        tune_trials: MetaSchedule trials (0: no tuning); tuning fixes the input shapes to batch 0's.
        tune_budget_s: wall-time budget of tuning, seconds (None: none): MetaSchedule runs in rounds on one
            database and no round starts once it is spent; the driver's timeout grows by the budget.
        threads: threads for TVM (``TVM_NUM_THREADS``) and ORT alike during the latency run.
        latency_runs: timed runs of batch 0 for each of TVM, ORT float and ORT int8 (0: none).
        target: a TVM target dict; default ``{"kind": "llvm", "mcpu": <host cpu>}``.

    Returns:
        The exported library's bytes, and ``{"toolchain": "tvm", "sqnr_db_vs_float": {output: dB},
        "sqnr_db_vs_onnxruntime": {...}, "latency_ms": {...}, "prepared": {"named_input_dims": {input:
        dims}, "folded_reshape_shapes": [{"node", "shape_from", "shape"}]}, "note": ...}`` with versions
        and timings; when tuned, ``tune_records`` and ``tune_measured`` (MetaSchedule's database records,
        and those with a measured run time: 0 means the library has TVM's default schedules, and the note
        says so), and ``tune``: ``{"trials_asked", "trials_started", "rounds", "seconds", "budget_s",
        "stopped_by_budget"}``.

    Raises:
        TargetError: the tvm toolchain is not installed (hint: ``edgequant toolchain install tvm``).
        ExportError: TVM could not import, compile or run the model (TVM's message, in one line).
    """
    with tempfile.TemporaryDirectory(prefix="edgequant-tvm-") as tmp:
        work = Path(tmp)
        prepared = onnx.ModelProto()
        prepared.CopyFrom(quantized)
        named = name_unknown_dims(prepared)
        prepared, folded = fold_reshape_shapes(prepared)
        save_model(prepared, work / "model.onnx", durable=False)
        arrays: dict[str, Any] = {f"{i}/{k}": v for i, b in enumerate(batches) for k, v in b.items()}
        np.savez(work / "inputs.npz", **arrays)
        res = run_driver(
            "tvm", "tvm_compile",
            {
                "model": work / "model.onnx", "out": work / "model.so", "target": target,
                "threads": threads, "tune_trials": tune_trials, "tune_dir": work / "tuning",
                "shapes": {k: list(v.shape) for k, v in batches[0].items()},
                "inputs": work / "inputs.npz", "outputs": work / "outputs.npz",
                "latency_runs": latency_runs, "tune_budget_s": tune_budget_s,
            },
            work, timeout_s=3600.0 + (tune_budget_s or 0.0),
        )  # fmt: skip
        library = (work / "model.so").read_bytes()
        with np.load(work / "outputs.npz") as data:
            tvm_out = [{k.split("/", 1)[1]: data[k] for k in data.files if k.split("/")[0] == str(i)}
                       for i in range(len(batches))]  # fmt: skip
    runtime = OrtRuntime(allow_spinning=False)
    vs_float = _sqnr(runtime, float_model, batches, tvm_out)
    vs_ort = _sqnr(runtime, quantized, batches, tvm_out)
    vs_plain = _sqnr(OrtRuntime(optimize=False, allow_spinning=False), quantized, batches, tvm_out)
    info: dict[str, Any] = {
        "toolchain": "tvm",
        "tvm_version": res.get("tvm_version"),
        "tvm_target": res.get("target"),
        "samples": sum(len(next(iter(b.values()))) for b in batches),
        "sqnr_db_vs_float": vs_float,
        "sqnr_db_vs_onnxruntime": vs_ort,  # ORT's fused integer kernels (requant rounds differently)
        "sqnr_db_vs_onnxruntime_unfused": vs_plain,  # ORT with Q/DQ as float math, as TVM runs them
        "seconds": {k: res[k] for k in ("import_s", "tune_s", "compile_s") if k in res},
        "tune_trials": tune_trials,
        **(
            {
                "tune_records": res["tune_records"],
                "tune_measured": res["tune_measured"],
                "tune": {
                    "trials_asked": tune_trials,
                    "trials_started": res.get("tune_trials_started"),
                    "rounds": res.get("tune_rounds"),
                    "seconds": res.get("tune_s"),
                    "budget_s": res.get("tune_budget_s"),
                    "stopped_by_budget": res.get("tune_stopped_by_budget"),
                },
            }
            if tune_trials
            else {}
        ),
        "library_bytes": len(library),
        "prepared": {"named_input_dims": named, "folded_reshape_shapes": folded},
        "note": NOTE + _tune_note(tune_trials, res),
    }
    if latency_runs and "latency_ms" in res:
        sample = batches[0]
        batch = len(next(iter(sample.values())))
        ort = {
            name: measure_latency(m, sample, runs=latency_runs, threads=threads, batch_size=batch).median_ms
            for name, m in (("onnxruntime_float", float_model), ("onnxruntime_int8", quantized))
        }
        info["latency_ms"] = {
            "tvm": round(res["latency_ms"]["median"], 4),
            **{k: round(v, 4) for k, v in ort.items()},
            "batch": batch,
            "threads": threads,
            "runs": latency_runs,
        }
    return library, info


def _tune_note(trials: int, res: dict[str, Any]) -> str:
    """What the report must say when tuning left TVM's default schedules, and why."""
    if not trials or res.get("tune_measured"):
        return ""
    if res.get("tune_trials_started") == 0:
        return (
            f" The tuning budget ({res.get('tune_budget_s')} s) was spent before a round of the {trials} trials "
            "started: the library has TVM's default schedules."
        )
    return (
        f" No MetaSchedule candidate of the {trials} trials was measured (each failed to build or run within "
        "MetaSchedule's limits, e.g. its 30 s build timeout on a loaded machine): the library has TVM's "
        "default schedules."
    )


def _sqnr(
    runtime: OrtRuntime, model: onnx.ModelProto | Path, batches: list[Batch], got: list[Batch]
) -> dict[str, float | None]:
    session = runtime.session(model, "the reference model")
    try:
        refs = [session.run(b) for b in batches]
    finally:
        session.close()
    means = mean_output_sqnr(refs, got)  # pooled over every batch: inf only when every batch is identical
    return {k: None if v == float("inf") else round(v, 2) for k, v in means.items()}


def run_tvm(
    library: Path,
    model: onnx.ModelProto,
    batches: list[Batch],
    *,
    threads: int = 1,
    latency_runs: int = 0,
    latency_batch: Batch | None = None,
) -> tuple[list[Batch], dict[str, Any] | None]:
    """Run a ``.tvm.so`` written by :func:`build_tvm` on ``batches``, in the tvm toolchain's interpreter.

    Args:
        library: the exported library.
        model: the ONNX model it was compiled from (its input and output names, in order).
        batches: ``{input name: array}`` per batch.
        threads: ``TVM_NUM_THREADS``.
        latency_runs: timed runs of ``latency_batch`` (0: no timing).

    Returns:
        The outputs per batch (``{output name: array}``), and ``{"median": ms, "p90": ms, "runs",
        "threads"}`` or None when not timed.

    Raises:
        TargetError: the toolchain is not installed.  ExportError: TVM failed (its one line).
    """
    from edgequant.data import input_specs

    names = [s.name for s in input_specs(model)]
    outputs = [o.name for o in model.graph.output]
    with tempfile.TemporaryDirectory(prefix="edgequant-tvm-run-") as tmp:
        work = Path(tmp)
        arrays: dict[str, Any] = {f"{i}/{k}": v for i, b in enumerate(batches) for k, v in b.items()}
        if latency_runs and latency_batch is not None:
            arrays.update({f"t/{k}": v for k, v in latency_batch.items()})
        np.savez(work / "inputs.npz", **arrays)
        res = run_driver(
            "tvm", "tvm_run",
            {"library": library, "input_names": names, "inputs": work / "inputs.npz",
             "outputs": work / "outputs.npz", "threads": threads,
             "latency_runs": latency_runs if latency_batch is not None else 0, "latency_batch": "t"},
            work,
        )  # fmt: skip
        with np.load(work / "outputs.npz") as data:
            got = [{outputs[int(k)]: data[f"{i}/{k}"] for k in range(len(outputs)) if f"{i}/{k}" in data.files}
                   for i in range(len(batches))]  # fmt: skip
    return got, res.get("latency_ms")
