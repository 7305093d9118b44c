"""Latency, peak memory and size of a model on ONNX Runtime's CPU provider.

* Latency: one batch (the first evaluation sample repeated ``batch_size`` times) is run
  ``warmup`` times untimed, then ``runs`` times timed with ``time.perf_counter``; we report the
  median, the 90th percentile (numpy's linear interpolation), the mean and the minimum in ms, and
  the throughput ``batch_size / median`` in samples/s.  ``threads`` sets ORT's intra-op threads
  (0 = ORT's default, one per core).
* Peak memory: a fresh Python subprocess imports ONNX Runtime, records its current resident set
  (``/proc/self/statm``), creates the session and runs the batch once, then reads the peak resident
  set ``ru_maxrss``; the difference is the session's peak memory (weights, arena, first-run
  buffers).  Without ``/proc`` (macOS) the baseline is ``ru_maxrss`` too, which can under-count.
  ``tracemalloc`` cannot see ORT's C++ allocations, hence the subprocess.
* Size: the file size on disk (plus external data) and the packed size
  ``sum over initializers (and Constant tensors) of numel * bits / 8``.  ``bits`` comes from the
  quantization plan beside the model (``<stem>.plan.json``) for integer tensors the plan names
  (``W`` or its quantized form ``W_q``), so int4 / 2-bit weights held in wider containers count at
  their real width; otherwise from the ONNX element type.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgequant.data import input_specs
from edgequant.data.base import Batch
from edgequant.errors import DataError, InferenceError, ModelError
from edgequant.export.sizes import all_tensors, packed_size
from edgequant.plan import QuantPlan
from edgequant.runtime import OrtRuntime


@dataclass
class Latency:
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    warmup: int
    threads: int
    batch_size: int
    throughput: float
    provider: str = "CPUExecutionProvider"
    energy_mj_measured: float | None = None
    energy_note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Size:
    file_bytes: int
    packed_bytes: int
    params_by_bits: dict[int, int]
    plan_used: bool

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "params_by_bits": {str(k): v for k, v in self.params_by_bits.items()}}


def _batch_axes(model: onnx.ModelProto | Path | None) -> dict[str, int | None]:
    """Per input, the axis that carries the batch: its first dynamic dimension (a recurrent state
    [2, N, 128] batches along axis 1); None for scalars and fully fixed shapes."""
    if model is None:
        return {}
    m = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    return {s.name: next((i for i, d in enumerate(s.shape) if d is None), None) for s in input_specs(m)}


def repeat_sample(sample: Batch, batch_size: int, model: onnx.ModelProto | Path | None = None) -> Batch:
    """The first sample of ``sample`` repeated ``batch_size`` times along each input's batch axis
    (axis 0 when ``model`` is not given); inputs without a batch axis are fed as they are."""
    if batch_size < 1:
        raise DataError(f"batch size {batch_size} must be >= 1.", "pass --batch-size 1 or more.")
    axes = _batch_axes(model)
    out: Batch = {}
    for k, v in sample.items():
        a = np.asarray(v)
        axis = axes.get(k, 0) if a.ndim else None
        out[k] = a if axis is None else np.repeat(np.take(a, [0], axis=axis), batch_size, axis=axis)
    return out


def measure_latency(
    model: onnx.ModelProto | Path,
    sample: Batch,
    *,
    runs: int = 50,
    warmup: int = 5,
    threads: int = 1,
    batch_size: int = 1,
    runtime: OrtRuntime | None = None,
    rapl: bool = False,
) -> Latency:
    """Median / p90 latency of one batch (ORT CPU unless ``runtime`` names other providers); see the
    module docstring.  ``rapl``: also read the host's RAPL counters around the timed runs
    (``edgequant.evaluate.energy``): whole-package mJ per batch, or the reason they are unavailable."""
    if runs < 1 or warmup < 0 or threads < 0:
        raise DataError(
            f"latency settings runs={runs}, warmup={warmup}, threads={threads} are invalid.",
            "use runs >= 1, warmup >= 0, threads >= 0 (0 = ORT default).",
        )
    feeds = repeat_sample(sample, batch_size, model)
    providers = runtime.providers if runtime is not None else ["CPUExecutionProvider"]
    options = runtime.provider_options if runtime is not None else None
    rt = OrtRuntime(providers=providers, intra_op_threads=threads, provider_options=options)
    session = rt.session(model, what="the model for latency measurement")
    from edgequant.evaluate import energy

    measured: float | None = None
    note = ""
    try:
        for _ in range(warmup):
            session.run(feeds)
        before = energy.rapl_read() if rapl else "not requested"
        times = np.empty(runs, dtype=np.float64)
        for i in range(runs):
            start = time.perf_counter()
            session.run(feeds)
            times[i] = time.perf_counter() - start
        after = energy.rapl_read() if isinstance(before, dict) else before
        ran = session.providers[0] if session.providers else providers[0]
    finally:
        session.close()
    if isinstance(before, dict) and isinstance(after, dict):
        total = energy.rapl_delta_mj(before, after)
        measured = None if total is None else total / runs
        note = "RAPL, whole CPU package incl. other load" if total is not None else "RAPL counter wrapped"
    else:
        note = str(before)
    ms = times * 1e3
    median = float(np.median(ms))
    return Latency(
        median_ms=median,
        p90_ms=float(np.percentile(ms, 90)),
        mean_ms=float(ms.mean()),
        min_ms=float(ms.min()),
        runs=runs,
        warmup=warmup,
        threads=threads,
        batch_size=batch_size,
        throughput=batch_size / (median / 1e3) if median > 0 else float("inf"),
        provider=ran,
        energy_mj_measured=measured,
        energy_note=note,
    )


# Peak memory of the session alone: the imports (numpy, onnxruntime, edgequant) happen first, then
# Linux's high-water mark is reset (writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS),
# so the peak read after create + run is the session's, not an import's transient.  Where that reset is
# not available the process-lifetime ru_maxrss is used, and the result says so ("peak_scope": "process").
_MEMORY_SCRIPT = """
import json, os, resource, sys
import numpy as np
from edgequant.runtime import OrtRuntime
feeds = dict(np.load(sys.argv[2]))
scale = 1 if sys.platform == "darwin" else 1024
def status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(key)
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before, scope = status("VmRSS"), "session"
except OSError:
    before, scope = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "process"
session = OrtRuntime(intra_op_threads=int(sys.argv[3])).session(sys.argv[1])
session.run(feeds)
try:
    after = status("VmHWM") if scope == "session" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
except OSError:
    after, scope = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "process"
print(json.dumps({"before": before, "after": after, "scope": scope}))
"""


def measure_memory(
    model: onnx.ModelProto | Path,
    sample: Batch,
    *,
    batch_size: int = 1,
    threads: int = 1,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Peak RSS growth (MB, 1 MB = 2**20 bytes) of creating and running one session, in a subprocess.

    The baseline is taken after the imports, and on Linux the peak is reset there too, so the figure is
    the session's (weights, prepacked kernels, arena, one run) and differs between float and int8.
    ``peak_scope`` is "session", or "process" where the OS cannot reset the peak (then an import's
    transient peak can hide the session's).  Raises InferenceError when the subprocess fails.
    """
    import edgequant

    root = str(Path(edgequant.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory(prefix="edgequant-mem-") as tmp:
        path = Path(model) if isinstance(model, Path) else Path(tmp) / "model.onnx"
        if isinstance(model, onnx.ModelProto):
            onnx.save_model(model, str(path))
        feeds = Path(tmp) / "feeds.npz"
        np.savez(feeds, **repeat_sample(sample, batch_size, model))  # type: ignore[arg-type]
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _MEMORY_SCRIPT, str(path), str(feeds), str(threads)],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise InferenceError(
                f"the memory measurement did not finish within {timeout:.0f} s.",
                "skip it (--no-memory) or raise the timeout.",
            ) from exc
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
        raise InferenceError(f"the memory measurement subprocess failed: {tail}", "skip it with --no-memory.")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    mib = 2.0**20
    return {
        "peak_rss_delta_mb": (data["after"] - data["before"]) / mib,
        "baseline_rss_mb": data["before"] / mib,
        "peak_rss_mb": data["after"] / mib,
        "peak_scope": data["scope"],
    }


def plan_path(model_path: Path) -> Path:
    """``<stem>.plan.json`` beside the model."""
    return model_path.with_name(model_path.stem + ".plan.json")


def load_plan_beside(model_path: Path) -> QuantPlan | None:
    p = plan_path(model_path)
    if not p.is_file():
        return None
    try:
        return QuantPlan.from_json(p.read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(
            f"the plan '{p}' is not a valid EdgeQuant plan: {exc}.", "re-create it or remove it."
        ) from exc


def model_size(model: onnx.ModelProto | Path, plan: QuantPlan | None = None) -> Size:
    """File size (path: on disk incl. external ``.data`` files; proto: serialized) and packed size."""
    if isinstance(model, Path):
        if not model.is_file():
            raise ModelError(f"model file '{model}' does not exist.", "check the path.")
        file_bytes = model.stat().st_size
        try:  # sizes need dims and types only, not the (external) data
            proto = onnx.load(str(model), load_external_data=False)
        except Exception as exc:
            raise ModelError(f"'{model}' is not an ONNX model: {exc}", "pass an .onnx file.") from exc
        locations = {e.value for t in all_tensors(proto) for e in t.external_data if e.key == "location"}
        file_bytes += sum(
            (model.parent / loc).stat().st_size for loc in locations if (model.parent / loc).is_file()
        )
        if plan is None:
            plan = load_plan_beside(model)
    else:
        proto, file_bytes = model, model.ByteSize()
    packed, by_bits = packed_size(proto, plan)
    return Size(file_bytes, packed, by_bits, plan is not None)
