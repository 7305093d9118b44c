"""``prepare_job``: what every method of one model shares before ``compare`` (and ``sweep``) run them.

The inputs are checked (task, calibration data for static methods), the evaluation data is loaded, the
calibration/evaluation leakage check is run (one dataset given for both is split, seed 0, 20 %
evaluation), and the float model's reference outputs are computed once; nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from edgequant.data.model_inputs import input_specs
from edgequant.errors import DataError
from edgequant.evaluate import core, leakage
from edgequant.evaluate.energy import EnergyProfile
from edgequant.evaluate.method_run import MethodJob, energy_profile_for
from edgequant.recipe import preset
from edgequant.runtime import OrtRuntime
from edgequant.runtime.device import runtime_for


@dataclass
class Prepared:
    """What every method of one model shares: the job, the evaluation data, runtime, energy profile and
    the leakage check's text."""

    job: MethodJob
    ev: core.EvalData
    rt: OrtRuntime
    profile: EnergyProfile
    leak: str
    float_model: onnx.ModelProto


def prepare_job(
    model: str | Path | onnx.ModelProto,
    calibration: Any,
    eval_data: Any,
    names: list[str],
    *,
    task: str = "classification",
    labels: Any | None = None,
    latency_runs: int = 30,
    warmup: int = 3,
    threads: int = 1,
    batch_size: int = 1,
    measure_memory: bool = True,
    max_eval_samples: int | None = None,
    blank: int = 0,
    layout: str = "ntc",
    device: str | None = "cpu",
    gpu_number: int | None = None,
    energy_profile: Mapping[str, Any] | None = None,
    data_options: Mapping[str, Any] | None = None,
    eval_split: str | None = None,
    allow_synthetic: bool = False,
    target: str = "cpu",
) -> Prepared:
    """Check the inputs and load what the methods ``names`` share (``compare``'s arguments; nothing is
    written).  DataError for missing calibration of static methods, leakage, or unreadable data."""
    core.tasks.check_task(task)
    float_model = core.as_model(model)
    stem = Path(model).stem if isinstance(model, str | Path) else (float_model.graph.name or "model")
    rt = runtime_for(device, gpu_number)
    static = [n for n in names if n != "float" and preset(n).method == "static"]
    if calibration is None and static and not allow_synthetic:
        raise DataError(
            f"no calibration data was given, and {', '.join(static)} calibrate activation ranges on data.",
            "pass --calib-data PATH, or --allow-synthetic to calibrate on random inputs knowingly "
            "(every row then says so).",
        )
    from edgequant.intake import require_batch_first

    require_batch_first(float_model, calibration)  # time-major recurrent input: data cut along time
    profile = energy_profile_for(energy_profile, target)
    opts = core.eval_options(data_options, eval_split)
    # the most calibration samples any chosen method reads: the leakage check covers all of them
    specs = input_specs(float_model)
    quantized = [n for n in names if n != "float"]
    cap = max(preset(n).calib_samples for n in quantized) if quantized else 1
    one = leakage.same_file(calibration, eval_data) and not (opts or {}).get("metadata_csv")
    if one:  # one dataset for both: a seeded split, calibration never sees the evaluation part
        calibration = leakage.calibration_part(calibration, specs, opts, cap)
    ev = core.load_eval_data(
        eval_data, float_model, labels=labels, max_samples=max_eval_samples, options=opts,
        split="eval" if one else None,
    )  # fmt: skip
    leak = leakage.check_no_leakage(calibration, eval_data, ev.batches, specs, opts, cap)
    if one:
        leak = f"one dataset split in two (seed 0, 20 % evaluation): {leak}"
    out_name = core.output_name(float_model, None)
    lay = core.ev_layout(task, layout)
    ref = core.join(
        core.run_outputs(float_model, ev.batches, out_name, rt, "the float model"), task, lay, ev.steps
    )
    fixed = specs[0].shape[0] if specs and specs[0].shape else None
    batch_size = fixed if isinstance(fixed, int) else batch_size  # a fixed batch dim decides
    job = MethodJob(
        model=model, calibration=calibration, stem=stem, batches=ev.batches, labels=ev.labels, ref=ref,
        out_name=out_name, task=task, layout=lay, blank=blank, device=device, gpu_number=gpu_number,
        data_options=opts, allow_synthetic=allow_synthetic, target=target, latency_runs=latency_runs,
        warmup=warmup, threads=threads, batch_size=batch_size, measure_memory=measure_memory,
        energy_profile=dict(energy_profile) if energy_profile is not None else None, steps=ev.steps,
        samples=ev.scored,
    )  # fmt: skip
    return Prepared(job, ev, rt, profile, leak, float_model)
