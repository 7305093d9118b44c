"""``compare``: quantize one model with every method, evaluate each, recommend one, write a report.

Every method (``"float"`` plus the presets of ``edgequant.recipe.PRESETS``) goes through
``edgequant.pipeline.quantize``; its files go to ``outdir``.  Each is scored against the float
model's outputs on the same evaluation batches (``edgequant.evaluate.tasks``: the accuracy drop is
in percentage points of top-1 accuracy with labels, of top-1 agreement x 100 without), timed on ORT
CPU and sized (``edgequant.evaluate.perf``).  A method that raises ``EdgeQuantError`` is listed as
failed with its reason and the others still run.  What the methods share (evaluation data, the
leakage check, the float model's outputs) is loaded once by ``edgequant.evaluate.prepare``.

Recommendation rule (``edgequant.evaluate.recommend``, stated in every report): filter by every
limit given (FP32 is a candidate), then optimise the preferred quantity (``prefer``: latency, size,
accuracy or energy), then break ties by accuracy, then by file size.  When none qualifies there is no recommendation;
the closest method is named and every method lists each limit it misses and by how much.

The per-layer SQNR analysis (``edgequant.evaluate.layers``) is run for one method: the
recommended one when it has Q/DQ pairs, else the first of ``int8-static`` and the other methods
(in order) that ran and has them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from edgequant import targets as target_profiles
from edgequant import toolchains
from edgequant.errors import EdgeQuantError, RecipeError
from edgequant.evaluate import compare_files, core, energy, layers, perf, target_rows
from edgequant.evaluate.method_run import MethodResult, energy_of, run_methods
from edgequant.evaluate.predict import BASIS, no_numbers, predict_latency
from edgequant.evaluate.prepare import Prepared as Prepared  # re-exported: sweep.run imports it here
from edgequant.evaluate.prepare import prepare_job
from edgequant.evaluate.recommend import Candidate, Limits, Recommendation, recommend
from edgequant.recipe import PRESETS
from edgequant.runtime import OrtRuntime

if TYPE_CHECKING:
    from edgequant.executors import Executor

MB = float(2**20)
SIZE_TIE = 0.02
Progress = Callable[[str, int, "int | None"], None]


@dataclass
class CompareResult:
    model: str
    task: str
    outdir: Path
    samples: int
    labeled: bool
    primary: str
    limits: dict[str, Any]
    settings: dict[str, Any]
    methods: list[MethodResult]
    recommended: str | None
    reason: str
    rule: str = ""
    closest: str | None = None
    per_layer_method: str | None = None
    per_layer: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)

    def method(self, name: str) -> MethodResult:
        for m in self.methods:
            if m.method == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        from edgequant.result import versions

        return {
            "kind": "compare",
            "model": self.model,
            "task": self.task,
            "outdir": str(self.outdir),
            "samples": self.samples,
            "labeled": self.labeled,
            "primary_metric": self.primary,
            "limits": self.limits,
            "settings": self.settings,
            "recommendation": {
                "method": self.recommended,
                "reason": self.reason,
                "rule": self.rule,
                "closest": self.closest,
            },
            "methods": [m.to_dict() for m in self.methods],
            "per_layer": {"method": self.per_layer_method, **(self.per_layer or {})}
            if self.per_layer
            else None,
            "versions": versions(),
            "files": self.files,
        }


def resolve_methods(methods: str | Sequence[str]) -> list[str]:
    """``"all"``, a comma-separated string, or a list -> method names in the canonical order."""
    allowed = ["float", *PRESETS]
    if isinstance(methods, str):
        names = allowed if methods.strip() == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    else:
        names = list(methods)
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        hits = sorted(
            (a for a in allowed if bad and bad[0] in a), key=lambda a: (not a.startswith(bad[0]), len(a))
        )
        close = hits or (difflib.get_close_matches(bad[0], allowed, n=1) if bad else [])
        raise RecipeError(
            f"unknown method(s) {bad or '(none)'}; allowed: all, {', '.join(allowed)}.",
            "pass --methods all or a comma-separated list"
            + (f" (did you mean '{close[0]}'?)" if close else "."),
        )
    return [n for n in allowed if n in names]


def candidate(r: MethodResult, float_score: float | None) -> Candidate:
    """The numbers of one method that the recommendation rule reads."""
    return Candidate(
        method=r.method, ok=r.ok, drop=r.drop, drop_unit=r.drop_unit, float_score=float_score,
        latency_ms=(r.latency or {}).get("median_ms"), size_bytes=r.file_bytes,
        energy_mj=(r.energy or {}).get("total_mj"), error=r.error,
    )  # fmt: skip


def apply_rule(results: list[MethodResult], limits: Limits) -> Recommendation:
    """Run ``edgequant.evaluate.recommend.recommend`` and record each method's misses on it."""
    float_score = next((r.evaluation.get("primary", {}).get("float") for r in results if r.ok), None)
    rec = recommend([candidate(r, float_score) for r in results], limits)
    for r in results:
        r.limit_failures = [m.text() for m in rec.misses.get(r.method, [])]
    return rec


def compare(
    model: str | Path | onnx.ModelProto,
    calibration: Any,
    eval_data: Any,
    *,
    methods: str | Sequence[str] = "all",
    max_drop: float | None = None,
    max_drop_rel: float | None = None,
    max_latency_ms: float | None = None,
    max_size_mb: float | None = None,
    max_energy_mj: float | None = None,
    prefer: str = "latency",
    outdir: str | Path,
    task: str = "classification",
    labels: Any | None = None,
    progress: Progress | None = None,
    latency_runs: int = 30,
    warmup: int = 3,
    threads: int = 1,
    batch_size: int = 1,
    measure_memory: bool = True,
    layer_samples: int = 8,
    top_k: int = 10,
    max_eval_samples: int | None = None,
    blank: int = 0,
    layout: str = "ntc",
    report: bool = True,
    device: str | None = "cpu",
    gpu_number: int | None = None,
    energy_profile: Mapping[str, Any] | None = None,
    data_options: Mapping[str, Any] | None = None,
    eval_split: str | None = None,
    allow_synthetic: bool = False,
    target: str = "cpu",
    targets: str | Sequence[str] | None = None,
    executor: Executor | None = None,
    overwrite: bool = True,
) -> CompareResult:
    """Run, evaluate and rank every method; write the report files into ``outdir`` (see module doc).

    ``progress("compare", done, total)`` is called before each method (``done`` = methods finished)
    and once at the end.  ``batch_size`` is the latency / memory batch (a model with a fixed batch
    dimension uses that instead); ``threads`` ORT's intra-op threads (0 = ORT's default).
    ``measure_memory`` runs one subprocess per method (about half a second each).  ``device``
    (``cpu``, ``cuda``, ``cuda:N``; ``gpu_number`` is an alias) picks ORT's provider for calibration,
    evaluation and latency, refusing a missing CUDA (``edgequant.runtime.device``).  Each method gets an
    energy *estimate* per inference (``edgequant.evaluate.energy``; ``energy_profile`` overrides the
    Horowitz 45 nm numbers; without it, the target profile's own ``performance.energy_pj`` replace
    them where it has them; FP32's is counted on the float graph after EdgeQuant's clean-up, with
    BatchNorm folded as ORT folds it) and, where the host exposes RAPL, a measured figure beside it.
    For a ``target`` whose profile gives throughput per precision, each method also gets a predicted
    latency on that target (``edgequant.evaluate.predict``, labelled a prediction; not used by the rule).
    ``data_options`` are quantize's data options (``SourceOptions``) for both data sets; with a
    ``metadata_csv`` calibration reads its ``train`` rows and evaluation the ``eval_split`` rows
    (default ``val``).  Evaluation samples that calibration also reads are refused (``leakage``).
    Without ``calibration``, the static methods are refused (DataError) unless ``allow_synthetic``;
    then they calibrate on random inputs and every row says ``calibration_data: synthetic``.
    ``targets`` (``"cpu,tvm,akida"``) adds one ``int8-static@<target>`` row per target other than
    ``target`` (``edgequant.evaluate.target_rows``: toolchain artifacts are run and scored themselves;
    these rows run here, after the methods, whatever the executor).
    ``executor`` (default: ``edgequant.executors.current()``, local) runs the methods; on Ray they
    run in parallel and their files come back into ``outdir`` (``method_run.run_methods``).
    Without ``overwrite`` (the CLI's default; ``--overwrite``), a file this run would write that exists
    in ``outdir`` is an ExportError before any work; with it (the API's default, as ``QuantResult.save``)
    the earlier compare run's files there are removed before this run writes, so none is left beside a
    report that does not list it (``edgequant.evaluate.compare_files``).
    """
    core.tasks.check_task(task)
    limits = Limits(max_drop, max_drop_rel, max_latency_ms, max_size_mb, max_energy_mj, prefer)
    names = resolve_methods(methods)
    extra_targets = target_rows.parse_targets(targets, target)
    for t in extra_targets:  # before any work: a missing toolchain is a one-line refusal
        if t in toolchains.TARGETS:
            toolchains.require(toolchains.TARGETS[t])
    out = Path(outdir)
    stem = Path(model).stem if isinstance(model, str | Path) else (model.graph.name or "model")
    planned = compare_files.planned_files(
        stem, names, extra_targets, target=target, allow_synthetic=allow_synthetic, report=report
    )
    compare_files.check_outdir(out, planned, overwrite=overwrite, model=model)  # before any work
    prep = prepare_job(
        model, calibration, eval_data, names, task=task, labels=labels, latency_runs=latency_runs,
        warmup=warmup, threads=threads, batch_size=batch_size, measure_memory=measure_memory,
        max_eval_samples=max_eval_samples, blank=blank, layout=layout, device=device, gpu_number=gpu_number,
        energy_profile=energy_profile, data_options=data_options, eval_split=eval_split,
        allow_synthetic=allow_synthetic, target=target,
    )  # fmt: skip
    job, ev, rt, profile, leak = prep.job, prep.ev, prep.rt, prep.profile, prep.leak
    tprof = target_profiles.get(target)
    out_name, batch_size, opts = job.out_name, job.batch_size, job.data_options
    if overwrite:  # only once every input was checked: the earlier run's files, none left stale
        compare_files.remove_previous(out, compare_files.previous_files(out), model)
    out.mkdir(parents=True, exist_ok=True)
    results, analysed, primary = run_methods(
        executor, job, names, out, progress, total=len(names) + len(extra_targets)
    )
    extra: dict[str, Any] = {"data_options": opts} if opts else {}
    for j, t in enumerate(extra_targets):  # toolchain rows: here, after the methods, on this machine
        if progress:
            progress("compare", len(names) + j, len(names) + len(extra_targets))
        r = MethodResult(method=target_rows.row_name(t), status="ok")
        q = target_rows.target_row(
            r, t, model, job.calibration, ev, job.ref, out=out, out_name=out_name, task=task, layout=job.layout,
            blank=blank, rt=rt, allow_synthetic=allow_synthetic, extra=extra, threads=threads, runs=latency_runs,
            latency_sample=perf.repeat_sample(ev.batches[0], batch_size, prep.float_model),
            latency=lambda p: perf.measure_latency(
                p, ev.batches[0], runs=latency_runs, warmup=warmup, threads=threads, batch_size=batch_size,
                runtime=rt, rapl=True,
            ).to_dict(),
        )  # fmt: skip
        if q is not None:
            r.energy = energy_of(
                q.model, ev.batches[0], r.packed_bytes or 0, profile, r.latency, batch_size, rt
            )
            r.predicted_latency = predict_latency(r.energy["macs"], target_profiles.get(t))
            analysed[r.method] = (q.float_model, q.model)
        results.append(r)
    if progress:
        progress("compare", len(names) + len(extra_targets), len(names) + len(extra_targets))
    rec = apply_rule(results, limits)
    recommended = rec.method
    chosen, per_layer = _per_layer(
        recommended, names, analysed, ev.batches, layer_samples, top_k, out_name, rt
    )
    result = CompareResult(
        model=str(model) if isinstance(model, str | Path) else job.stem,
        task=task,
        outdir=out,
        samples=ev.samples,
        labeled=ev.labels is not None,
        primary=primary,
        limits=limits.to_dict(),
        settings={
            "latency_runs": latency_runs,
            "warmup": warmup,
            "threads": threads,
            "batch_size": batch_size,
            "measure_memory": measure_memory,
            "layer_samples": layer_samples,
            "top_k": top_k,
            "eval_data": ev.description,
            "leakage_check": leak,
            "data_options": opts,
            "mb": "1 MB = 2**20 bytes",
            "device": device if gpu_number is None else f"cuda:{gpu_number}",
            "providers": rt.providers,
            "energy": f"estimate per inference ({profile.name}: {profile.source}); {energy.ASSUMPTIONS}",
            "energy_profile": profile.name,
            "latency_prediction": BASIS
            if tprof.performance and tprof.performance.macs_per_cycle
            else no_numbers(tprof),
            "target": tprof.name,
        },
        methods=results,
        recommended=recommended,
        reason=rec.reason,
        rule=rec.rule,
        closest=rec.closest,
        per_layer_method=chosen,
        per_layer=per_layer,
    )
    if report:
        from edgequant.report import write_compare_report

        result.files = {k: p.name for k, p in write_compare_report(out, result.to_dict()).items()}
    return result


def _per_layer(
    recommended: str | None,
    names: list[str],
    analysed: dict[str, tuple[onnx.ModelProto, onnx.ModelProto]],
    batches: list[core.Batch],
    layer_samples: int,
    top_k: int,
    out_name: str,
    rt: OrtRuntime,
) -> tuple[str | None, dict[str, Any] | None]:
    order = [m for m in (recommended, "int8-static", *names) if m is not None and m in analysed]
    samples: list[core.Batch] = []
    left = layer_samples
    for b in batches:
        if left <= 0:
            break
        n = len(next(iter(b.values())))
        samples.append({k: v[:left] for k, v in b.items()})
        left -= min(n, left)
    for name in dict.fromkeys(order):
        fm, qm = analysed[name]
        if layers.qdq_pairs(fm, qm)[0]:
            try:
                rep = layers.per_layer_error(fm, qm, samples, top_k=top_k, output=out_name, runtime=rt)
            except EdgeQuantError as exc:
                return name, {"error": str(exc), "tensors": [], "isolated": [], "unmatched": []}
            return name, rep.to_dict()
    return None, None
