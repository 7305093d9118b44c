"""EdgeQuant's TVM driver, version 1: run with the tvm toolchain's own interpreter, never imported.

    python tvm_compile.py request.json result.json

Request: ``model`` (QDQ ONNX path), ``out`` (.so path), ``target`` (TVM target dict or null for ``llvm``
with the host's ``mcpu``), ``threads``, ``tune_trials`` and ``tune_dir`` (MetaSchedule, on static shapes
``shapes``; the result counts its database's records and those measured), ``inputs`` (.npz with keys
``<batch>/<input name>``), ``outputs`` (.npz to write, keys ``<batch>/<output name>``),
``latency_runs``; ``tune_budget_s`` (optional) bounds tuning's wall time: tuning runs in rounds that
share ``tune_dir``'s database, and no round starts once the budget is spent (the result records the
trials asked and started, the rounds, the seconds and ``tune_stopped_by_budget``). The model is imported
with TVM Relax's ONNX front end, compiled with ``tvm.compile`` and exported with ``export_library``; the
exported library is loaded back and run in ``relax.VirtualMachine`` for every input batch. Q/DQ nodes
lower to float arithmetic in TVM 0.27: the outputs carry int8 rounding, not int8 speed.
"""

import os
import time

from _driver import latency, serve

DRIVER_VERSION = 1


def body(run):
    req, result = run.req, run.result
    os.environ["TVM_NUM_THREADS"] = str(int(req.get("threads") or 1))
    import numpy as np
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.target import codegen

    result["tvm_version"] = tvm.__version__
    model = onnx.load(req["model"])
    names = [o.name for o in model.graph.output]
    tuned = int(req.get("tune_trials") or 0) > 0
    t0 = time.perf_counter()
    mod = from_onnx(model, shape_dict=req.get("shapes") if tuned else None, keep_params_in_input=False)
    result["import_s"] = round(time.perf_counter() - t0, 3)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    target = req.get("target") or {
        "kind": "llvm",
        "mcpu": codegen.llvm_get_system_cpu(),
        "num-cores": int(cores or 1),
    }  # MetaSchedule needs num-cores
    result["target"] = target
    tgt = tvm.target.Target(target)
    if tuned:
        run.stage = "tune"
        _build_timeout(float(req.get("build_timeout_s") or 300.0))
        result["build_timeout_s"] = float(req.get("build_timeout_s") or 300.0)
        mod = _tune(mod, tgt, req, result)
    run.stage = "compile"
    t0 = time.perf_counter()
    exe = tvm.compile(mod, target=tgt)
    exe.export_library(req["out"])
    result["compile_s"] = round(time.perf_counter() - t0, 3)
    run.stage = "run"
    vm = relax.VirtualMachine(tvm.runtime.load_module(req["out"]), tvm.cpu())
    data = np.load(req["inputs"])
    batches = sorted({k.split("/", 1)[0] for k in data.files}, key=int)
    inits = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    outs = {}
    first = None
    for b in batches:
        args = [tvm.runtime.tensor(data[f"{b}/{n}"]) for n in inputs]
        first = first or args
        got = vm["main"](*args)
        got = list(got) if not hasattr(got, "numpy") else [got]
        for name, value in zip(names, got, strict=True):
            outs[f"{b}/{name}"] = value.numpy()
    np.savez(req["outputs"], **outs)
    runs = int(req.get("latency_runs") or 0)
    if runs and first is not None:
        run.stage = "latency"
        result["latency_ms"] = {
            **latency(lambda: vm["main"](*first), runs),
            "threads": int(os.environ["TVM_NUM_THREADS"]),
        }


def _tune(mod, tgt, req, result):
    """Relax's static-shape tuning pipeline (decompose, zero pipeline, MetaSchedule, apply the
    database), its MetaSchedule step run in rounds of trials on one database: one round of all
    ``tune_trials`` without a budget; with ``tune_budget_s``, rounds of ``max(per task, trials / 4)`` and
    no new round once the budget is spent (a round already started runs to its end)."""
    import math

    import tvm
    from tvm.relax import transform
    from tvm.relax.pipeline import zero_pipeline

    total = int(req["tune_trials"])
    per_task = max(8, total // 8)
    budget = req.get("tune_budget_s")
    size = total if budget is None else min(total, max(per_task, math.ceil(total / 4)))
    t0 = time.perf_counter()
    started = rounds = 0
    with tgt:
        base = tvm.transform.Sequential(
            [transform.DecomposeOpsForInference(), transform.CanonicalizeBindings(), zero_pipeline()]
        )(mod)
        while started < total and (budget is None or time.perf_counter() - t0 < float(budget)):
            n = min(size, total - started)
            transform.MetaScheduleTuneIRMod(
                params={}, work_dir=req["tune_dir"], max_trials_global=n, max_trials_per_task=per_task
            )(base)
            started, rounds = started + n, rounds + 1
        tuned = transform.MetaScheduleApplyDatabase(req["tune_dir"])(base)
    result["tune_s"] = round(time.perf_counter() - t0, 3)
    result["tune_trials_started"], result["tune_rounds"] = started, rounds
    result["tune_budget_s"] = None if budget is None else float(budget)
    result["tune_stopped_by_budget"] = started < total
    result["tune_records"], result["tune_measured"] = _tuning_counts(req["tune_dir"])
    return tuned


def _build_timeout(seconds):
    """MetaSchedule's LocalBuilder kills a candidate's build after 30 s by default: on a loaded 2-core
    machine every build of a real CNN's tasks hit it and nothing was measured.  The static-shape tuning
    pipeline takes no builder, so its default timeout is raised here (this driver's process only)."""
    from tvm.s_tir.meta_schedule.builder import local_builder

    init = local_builder.LocalBuilder.__init__

    def longer(self, *args, **kwargs):
        kwargs.setdefault("timeout_sec", seconds)
        init(self, *args, **kwargs)

    local_builder.LocalBuilder.__init__ = longer


def _tuning_counts(work_dir):
    """(records in MetaSchedule's database, records with a measured run time): a candidate that failed
    to build or run (e.g. LocalBuilder's 30 s timeout on a loaded machine) has no usable run time."""
    from tvm.s_tir.meta_schedule.database import JSONDatabase

    records = JSONDatabase(work_dir=work_dir).get_all_tuning_records()
    measured = [r for r in records if r.run_secs and all(float(s) < 1e9 for s in r.run_secs)]
    return len(records), len(measured)


if __name__ == "__main__":
    serve(body, DRIVER_VERSION)
