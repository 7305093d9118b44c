"""One method of ``compare`` (or one cell of ``sweep``): quantize, score, time, size, estimate energy.

``run_method(job, name, out)`` is the body that ``compare`` runs once per method.  ``MethodJob``
holds everything it reads (the float model's path, the calibration data as given, the evaluation
batches and the float model's outputs on them, the measurement settings), all of it plain values,
paths, bytes or NumPy arrays, so an executor can hand it to another process or machine
(``edgequant.executors``): the result is the same there as here, bit for bit, except the measured
timings (``quantize_seconds``, ``latency``, ``memory``, the RAPL energy figure).

A method that raises ``EdgeQuantError`` is returned as a failed row with the error's text and class.
A method whose recipe target is a vendor toolchain (``tvm``, ``akida``) is scored on the artifact it
built (``target_rows.score_artifact``: outputs, size and TVM's latency are the artifact's; no energy).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from edgequant import pipeline
from edgequant import targets as target_profiles
from edgequant.errors import EdgeQuantError
from edgequant.evaluate import core, energy, opcount, perf
from edgequant.evaluate.compare_files import saved_names
from edgequant.evaluate.energy import EnergyProfile
from edgequant.evaluate.predict import predict_latency, target_energy_profile
from edgequant.model.io import external_data_path, save_model, write_text_atomic
from edgequant.model.repair import prepare
from edgequant.names import confined
from edgequant.recipe import preset
from edgequant.runtime import OrtRuntime
from edgequant.runtime.device import runtime_for

if TYPE_CHECKING:
    from edgequant.executors import Executor

Progress = Callable[[str, int, "int | None"], None]
Pair = tuple[onnx.ModelProto, onnx.ModelProto]
# the measured fields of a row: they differ from run to run (and machine to machine), nothing else does
TIMED = ("quantize_seconds", "latency", "memory")


@dataclass
class MethodResult:
    method: str
    status: str  # "ok" | "failed"
    tag: str = ""
    error: str = ""
    error_type: str = ""
    model_file: str = ""
    plan_file: str = ""
    evaluation: dict[str, Any] = field(default_factory=dict)
    score: float | None = None
    drop: float | None = None
    drop_unit: str = "pp"
    latency: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None
    file_bytes: int | None = None
    packed_bytes: int | None = None
    quantize_seconds: float | None = None
    energy: dict[str, Any] | None = None
    predicted_latency: dict[str, Any] | None = None  # on the target, from its profile (evaluate.predict)
    limit_failures: list[str] = field(default_factory=list)
    calibration_data: str = "none"  # "real" | "synthetic" (allowed by the user) | "none" (not calibrated)
    compliance: dict[str, Any] | None = None  # targets.check report of the quantized model
    coverage: str = ""  # which nodes the method changed, when it left some float (e.g. dynamic: the head)
    files: list[str] = field(default_factory=list)  # every file the row wrote into the output folder

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def meets_limits(self) -> bool:
        return self.ok and not self.limit_failures

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "meets_limits": self.meets_limits}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MethodResult:
        return cls(**{k: v for k, v in data.items() if k != "meets_limits"})


@dataclass
class MethodJob:
    """What one method's run reads.  ``model`` is the float ONNX file's path (or a ModelProto);
    ``batches`` [N, ...] per input and ``ref`` (the float model's joined output on them) come from
    ``compare``'s one evaluation load; ``overrides`` are recipe keys set on top of the preset
    (``sweep``'s bits, e.g. ``{"weight_bits": 4}``)."""

    model: Any
    calibration: Any
    stem: str
    batches: list[dict[str, np.ndarray]]
    labels: Any
    ref: np.ndarray
    out_name: str
    task: str
    layout: str
    blank: int = 0
    device: str | None = "cpu"
    gpu_number: int | None = None
    data_options: dict[str, Any] | None = None
    allow_synthetic: bool = False
    target: str = "cpu"
    latency_runs: int = 30
    warmup: int = 3
    threads: int = 1
    batch_size: int = 1
    samples: int | None = None  # evaluation samples (feeds) behind ``ref``; None: its rows
    measure_memory: bool = True
    energy_profile: dict[str, Any] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    steps: list[np.ndarray] | None = None  # per-step scoring of trials (``core.EvalData.steps``)


_KINDS = (
    ("quantized", "integer kernel{s}"),
    ("moves_integer", "moving integer data"),
    ("float16", "float16 kernel{s}"),
    ("storage_only", "integer/float16 storage only, run in float"),
    ("planned_float", "planned, run in float"),
    ("folded", "folded away"),
    ("skipped", "kept float"),
)


def node_counts(nodes: dict[str, Any]) -> str:
    """ "4 integer kernels (QLinearConv, QLinearMatMul); 1 moving integer data (Flatten); 2 integer/float16
    storage only, run in float (LSTM); 1 folded away; 3 kept float" from a report's ``nodes``
    (``export.kernels``: only ops that compute on integers count as integer kernels)."""
    parts = []
    for key, label in _KINDS:
        items = nodes.get(key) or []
        if items or key == "quantized":
            ops = sorted({str(d.get("kernel") or d["op_type"]) for d in items})
            text = f"{len(items)} {label.format(s='' if len(items) == 1 else 's')}"
            parts.append(text + (f" ({', '.join(ops)})" if ops and key != "skipped" else ""))
    if not nodes.get("kernels_measured", True):
        parts.append(f"kernels not measured ({len(nodes.get('planned', []))} planned)")
    return "; ".join(parts)


def coverage(report: dict[str, Any]) -> str:
    """What ran as what, when a run left nodes without an integer (or float16) kernel: ``node_counts``;
    for dynamic quantization also that its score depends on the evaluation batch size (its kernels
    quantize their input with a scale and zero point computed per call over the whole batch)."""
    nodes = report["nodes"]
    partial = any(nodes.get(k) for k in ("skipped", "storage_only", "planned_float"))
    parts = [node_counts(nodes)] if partial else []
    if report.get("method") == "dynamic":
        parts.append(
            "input scales computed per call over the whole batch (DynamicQuantizeLinear), so its score depends on "
            "the evaluation batch size"
        )
    return "; ".join(parts)


def run_method(
    job: MethodJob, name: str, out: Path
) -> tuple[MethodResult, tuple[onnx.ModelProto, onnx.ModelProto] | None, str]:
    """Run method ``name`` (``"float"`` or a preset) writing its files into ``out``.

    Returns the row, the (float, quantized) pair for the per-layer analysis (None for float and
    failed methods) and the primary metric's name ("" when the method failed).
    """
    rt = runtime_for(job.device, job.gpu_number)
    profile = energy_profile_for(job.energy_profile, job.target)
    extra: dict[str, Any] = {"data_options": job.data_options} if job.data_options else {}
    r = MethodResult(method=name, status="ok")
    pair: tuple[onnx.ModelProto, onnx.ModelProto] | None = None
    primary = ""
    try:
        start = time.perf_counter()
        if name == "float":
            float_model = core.as_model(job.model)
            r.tag, qmodel = "float", float_model
            path = save_model(float_model, out / f"{job.stem}_float.onnx")
            data = external_data_path(path)
            r.files = [path.name, *([data.name] if data is not None else [])]
        else:
            recipe = preset(name, allow_synthetic=job.allow_synthetic, target=job.target, **job.overrides)
            q = pipeline.quantize(job.model, job.calibration, recipe, runtime=rt, **extra)
            cal = q.report.get("calibration")
            r.calibration_data = "none" if not cal else "synthetic" if cal.get("synthetic") else "real"
            r.compliance = q.report.get("compliance")
            paths = q.save(out)
            r.files = saved_names(q.report["files"])
            r.tag, qmodel, path = q.tag, q.model, paths.model
            r.plan_file = paths.plan.name
            r.coverage = coverage(q.report)
            pair = (q.float_model, q.model)
            if q.report.get("files", {}).get("toolchain_artifacts"):  # a vendor target: score its artifact
                r.quantize_seconds = time.perf_counter() - start
                return r, pair, _artifact_row(job, r, q, out)
        r.quantize_seconds = time.perf_counter() - start
        r.model_file = path.name
        got = (
            job.ref
            if name == "float"
            else core.join(
                core.run_outputs(qmodel, job.batches, job.out_name, rt, name), job.task, job.layout, job.steps
            )
        )
        e = core.score_outputs(
            job.task, job.ref, got, job.labels, job.out_name, blank=job.blank, samples=job.samples
        )
        primary = e.primary
        r.evaluation, r.score, r.drop, r.drop_unit = e.to_dict(), e.quant_score, e.drop, e.drop_unit
        r.latency = perf.measure_latency(
            path, job.batches[0], runs=job.latency_runs, warmup=job.warmup, threads=job.threads,
            batch_size=job.batch_size, runtime=rt, rapl=True,
        ).to_dict()  # fmt: skip
        if job.measure_memory:
            r.memory = perf.measure_memory(
                path, job.batches[0], batch_size=job.batch_size, threads=job.threads
            )
        size = perf.model_size(path)
        r.file_bytes, r.packed_bytes = size.file_bytes, size.packed_bytes
        counted = prepare(qmodel)[0] if name == "float" else qmodel  # the graph as ORT fuses it
        r.energy = energy_of(
            counted, job.batches[0], size.packed_bytes, profile, r.latency, job.batch_size, rt
        )
        r.predicted_latency = predict_latency(r.energy["macs"], target_profiles.get(job.target))
    except EdgeQuantError as exc:
        r.status, r.error, r.error_type = "failed", str(exc), type(exc).__name__
        pair = None
    return r, pair, primary


def _artifact_row(job: MethodJob, r: MethodResult, q: Any, out: Path) -> str:
    """Fill ``r`` from the toolchain artifact's own outputs (``.tvm.so`` in TVM's VM, ``.fbz`` on Akida's
    software backend), as ``compare --targets`` scores it (``target_rows.score_artifact``)."""
    from edgequant.evaluate.target_rows import score_artifact

    return score_artifact(
        r, job.target, q, out, job.batches, job.labels, job.steps, job.ref, out_name=job.out_name,
        task=job.task, layout=job.layout, blank=job.blank, threads=job.threads, runs=job.latency_runs,
        sample=perf.repeat_sample(job.batches[0], job.batch_size, q.float_model),
    )  # fmt: skip


def energy_profile_for(mapping: Mapping[str, Any] | None, target: str) -> EnergyProfile:
    """The user's energy profile; else the target profile's own ``performance.energy_pj``; else Horowitz's."""
    if mapping is not None:
        return EnergyProfile.from_mapping(mapping)
    return target_energy_profile(target_profiles.get(target)) or EnergyProfile()


def energy_of(
    model: onnx.ModelProto,
    batch: core.Batch,
    weight_bytes: int,
    profile: EnergyProfile,
    latency: dict[str, Any] | None,
    batch_size: int,
    rt: OrtRuntime,
) -> dict[str, Any]:
    """The estimate for one sample, with the RAPL figure (per sample) or why there is none beside it."""
    one = perf.repeat_sample(batch, 1, model)
    est = energy.estimate(opcount.count(model, opcount.tensor_shapes(model, one, rt)), weight_bytes, profile)
    lat = latency or {}
    measured = lat.get("energy_mj_measured")
    est["measured_mj"] = None if measured is None else measured / max(batch_size, 1)
    est["measured_note"] = lat.get("energy_note", "")
    return est


def run_methods(
    executor: Executor | None,
    job: MethodJob,
    names: list[str],
    out: Path,
    progress: Progress | None,
    total: int | None = None,
) -> tuple[list[MethodResult], dict[str, Pair], str]:
    """Every method of ``names`` on ``executor`` (None: ``executors.current()``): rows in ``names``
    order, the (float, quantized) pairs by method, and the primary metric's name.

    In process, each method writes into ``out`` as it runs.  Elsewhere (Ray), the job goes to the
    object store once (``ship_job``: files as bytes), each method runs in a temporary folder on its
    worker (``method_task``) and its files come back as bytes, written here into ``out``
    atomically and confined to it.  ``progress("compare", done, total)`` as ``compare`` documents;
    ``total`` (default ``len(names)``): the caller has more rows after these, and reports the end itself.
    """
    n = total or len(names)
    from edgequant.executors import current

    ex = executor or current()
    results: list[MethodResult] = []
    analysed: dict[str, Pair] = {}
    primary = ""
    if ex.in_process:
        for i, name in enumerate(names):
            if progress:
                progress("compare", i, n)
            r, pair, p = run_method(job, name, out)
            results.append(r)
            primary = p or primary
            if pair is not None:
                analysed[name] = pair
    else:
        finished = [0]

        def done(_: int, __: Any) -> None:
            finished[0] += 1
            if progress and finished[0] < len(names):
                progress("compare", finished[0], n)

        if progress:
            progress("compare", 0, n)
        ref = ex.put(ship_job(job))
        for name, got in zip(
            names, ex.map(method_task, [(ref, n) for n in names], on_result=done), strict=True
        ):
            for fname, data in got["files"].items():
                write_text_atomic(confined(out, fname), data)
            results.append(MethodResult.from_dict(got["row"]))
            primary = got["primary"] or primary
            if got["pair"] is not None:
                analysed[name] = (
                    onnx.load_from_string(got["pair"][0]),
                    onnx.load_from_string(got["pair"][1]),
                )
    if progress and total is None:
        progress("compare", len(names), n)
    return results, analysed, primary


def ship_job(job: MethodJob, shared: Path | None = None) -> MethodJob:
    """``job`` with its model and calibration files (paths) replaced by ``executors.ship.Shipped``."""
    from edgequant.executors.ship import ship

    model = ship(job.model, shared) if isinstance(job.model, str | Path) else job.model
    calib = job.calibration
    if isinstance(calib, str | Path) and Path(calib).exists():
        calib = ship(calib, shared)
    return replace(job, model=model, calibration=calib)


def method_task(job: MethodJob, name: str, cell: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``run_method`` in a temporary folder of a worker; the row, the pair and the files as bytes.
    ``cell`` (a sweep's): ``target`` and recipe ``overrides`` replacing the job's."""
    from edgequant.executors.ship import Shipped, materialize

    with tempfile.TemporaryDirectory(prefix="edgequant-task-") as tmp:
        inputs, out = Path(tmp) / "in", Path(tmp) / "out"
        inputs.mkdir()
        out.mkdir()
        here = replace(
            job,
            model=materialize(job.model, inputs) if isinstance(job.model, Shipped) else job.model,
            calibration=materialize(job.calibration, inputs)
            if isinstance(job.calibration, Shipped)
            else job.calibration,
        )
        if cell:
            here = replace(here, target=cell["target"], overrides=dict(cell.get("overrides", {})))
        if isinstance(here.calibration, Path):
            here = replace(here, calibration=str(here.calibration))
        r, pair, primary = run_method(here, name, out)
        files = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
    return {
        "row": r.to_dict(),
        "primary": primary,
        "pair": None if pair is None else (pair[0].SerializeToString(), pair[1].SerializeToString()),
        "files": files,
    }
