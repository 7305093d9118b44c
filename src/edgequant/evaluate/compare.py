"""``compare``: quantize one model with every method, evaluate each, recommend one, write a report.

Every method (``"float"`` plus the presets of ``edgequant.recipe.PRESETS``) goes through
``edgequant.pipeline.quantize``; its files go to ``outdir``.  Each is scored against the float
model's outputs on the same evaluation batches (``edgequant.evaluate.tasks``: the accuracy drop is
in percentage points of top-1 accuracy with labels, of top-1 agreement x 100 without), timed on ORT
CPU and sized (``edgequant.evaluate.perf``).  A method that raises ``EdgeQuantError`` is listed as
failed with its reason and the others still run.

Recommendation rule: among the quantized methods that ran and meet every limit given
(``drop <= max_drop``, median latency ``<= max_latency_ms``, file size ``<= max_size_mb``, with
1 MB = 2**20 bytes), take the smallest file; sizes within 2 % of the smallest count as a tie, broken
by the smaller accuracy drop, then the lower median latency.  When none qualifies there is no
recommendation, and every method lists which limit failed and by how much.

The per-layer SQNR analysis (``edgequant.evaluate.layers``) is run for one method: the
recommended one when it has Q/DQ pairs, else the first of ``int8-static`` and the other methods
(in order) that ran and has them.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from edgequant import pipeline
from edgequant.data.model_inputs import input_specs
from edgequant.errors import EdgeQuantError, RecipeError
from edgequant.evaluate import core, layers, perf
from edgequant.model.io import save_model
from edgequant.recipe import PRESETS, preset
from edgequant.runtime import OrtRuntime

MB = float(2**20)
SIZE_TIE = 0.02
Progress = Callable[[str, int, "int | None"], None]


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
    memory: dict[str, float] | None = None
    file_bytes: int | None = None
    packed_bytes: int | None = None
    quantize_seconds: float | None = None
    limit_failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def meets_limits(self) -> bool:
        return self.ok and not self.limit_failures

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "meets_limits": self.meets_limits}


@dataclass
class CompareResult:
    model: str
    task: str
    outdir: Path
    samples: int
    labeled: bool
    primary: str
    limits: dict[str, float | None]
    settings: dict[str, Any]
    methods: list[MethodResult]
    recommended: str | None
    reason: str
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
            "recommendation": {"method": self.recommended, "reason": self.reason},
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


def limit_failures(
    r: MethodResult, max_drop: float | None, max_latency_ms: float | None, max_size_mb: float | None
) -> list[str]:
    out: list[str] = []
    if max_drop is not None and r.drop is not None and r.drop > max_drop:
        out.append(f"accuracy drop {r.drop:.2f} {r.drop_unit} > {max_drop:g} (by {r.drop - max_drop:.2f})")
    if max_latency_ms is not None and r.latency is not None and r.latency["median_ms"] > max_latency_ms:
        lat = r.latency["median_ms"]
        out.append(f"latency {lat:.3f} ms > {max_latency_ms:g} ms (by {lat - max_latency_ms:.3f} ms)")
    if max_size_mb is not None and r.file_bytes is not None and r.file_bytes / MB > max_size_mb:
        size = r.file_bytes / MB
        out.append(f"size {size:.3f} MB > {max_size_mb:g} MB (by {size - max_size_mb:.3f} MB)")
    return out


def recommend(results: list[MethodResult], limits: dict[str, float | None]) -> tuple[str | None, str]:
    """The method chosen by the rule in the module docstring, and why (or why none)."""
    stated = ", ".join(f"{k} {v:g}" for k, v in limits.items() if v is not None) or "no limits"
    candidates = [r for r in results if r.method != "float" and r.meets_limits and r.file_bytes is not None]
    if not candidates:
        lines = []
        for r in results:
            if r.method == "float":
                continue
            why = f"failed: {r.error}" if not r.ok else "; ".join(r.limit_failures)
            lines.append(f"{r.method}: {why}")
        return None, f"no quantized method meets the limits ({stated}). " + " | ".join(lines)
    smallest = min(r.file_bytes or 0 for r in candidates)
    tied = [r for r in candidates if (r.file_bytes or 0) <= smallest * (1 + SIZE_TIE)]
    best = min(tied, key=lambda r: (r.drop or 0.0, (r.latency or {}).get("median_ms", 0.0)))
    lat = (best.latency or {}).get("median_ms")
    reason = (
        f"{best.method}: smallest model ({(best.file_bytes or 0) / MB:.3f} MB) among {len(candidates)} "
        f"method(s) within the limits ({stated})"
    )
    if len(tied) > 1:
        reason += f"; {len(tied)} within {SIZE_TIE:.0%} in size, tie broken by accuracy drop then latency"
    reason += f"; accuracy drop {best.drop:.2f} {best.drop_unit}" + (
        f", median latency {lat:.3f} ms." if lat else "."
    )
    return best.method, reason


def compare(
    model: str | Path | onnx.ModelProto,
    calibration: Any,
    eval_data: Any,
    *,
    methods: str | Sequence[str] = "all",
    max_drop: float | None = None,
    max_latency_ms: float | None = None,
    max_size_mb: float | None = None,
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
) -> CompareResult:
    """Run, evaluate and rank every method; write the report files into ``outdir`` (see module doc).

    ``progress("compare", done, total)`` is called before each method (``done`` = methods finished)
    and once at the end.  ``batch_size`` is the latency / memory batch (a model with a fixed batch
    dimension uses that instead); ``threads`` ORT's intra-op threads (0 = ORT's default).
    ``measure_memory`` runs one subprocess per method (about half a second each).
    """
    core.tasks.check_task(task)
    names = resolve_methods(methods)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    float_model = core.as_model(model)
    stem = Path(model).stem if isinstance(model, str | Path) else (float_model.graph.name or "model")
    rt = OrtRuntime()
    ev = core.load_eval_data(eval_data, float_model, labels=labels, max_samples=max_eval_samples)
    out_name = core.output_name(float_model, None)
    lay = core.ev_layout(task, layout)
    ref = core.join(core.run_outputs(float_model, ev.batches, out_name, rt, "the float model"), task, lay)
    specs = input_specs(float_model)
    fixed = specs[0].shape[0] if specs and specs[0].shape else None
    batch_size = fixed if isinstance(fixed, int) else batch_size  # a fixed batch dim decides
    limits = {"max_drop": max_drop, "max_latency_ms": max_latency_ms, "max_size_mb": max_size_mb}
    results: list[MethodResult] = []
    analysed: dict[str, tuple[onnx.ModelProto, onnx.ModelProto]] = {}
    primary = ""
    for i, name in enumerate(names):
        if progress:
            progress("compare", i, len(names))
        r = MethodResult(method=name, status="ok")
        try:
            start = time.perf_counter()
            if name == "float":
                r.tag, qmodel, ffloat = "float", float_model, float_model
                path = save_model(float_model, out / f"{stem}_float.onnx")
            else:
                q = pipeline.quantize(model, calibration, preset(name), runtime=rt)
                paths = q.save(out)
                r.tag, qmodel, ffloat, path = q.tag, q.model, q.float_model, paths.model
                r.plan_file = paths.plan.name
            r.quantize_seconds = time.perf_counter() - start
            r.model_file = path.name
            got = (
                ref
                if name == "float"
                else core.join(core.run_outputs(qmodel, ev.batches, out_name, rt, name), task, lay)
            )
            e = core.score_outputs(task, ref, got, ev.labels, out_name, blank=blank)
            primary = e.primary
            r.evaluation, r.score, r.drop, r.drop_unit = e.to_dict(), e.quant_score, e.drop, e.drop_unit
            r.latency = perf.measure_latency(
                path, ev.batches[0], runs=latency_runs, warmup=warmup, threads=threads, batch_size=batch_size
            ).to_dict()
            if measure_memory:
                r.memory = perf.measure_memory(path, ev.batches[0], batch_size=batch_size, threads=threads)
            size = perf.model_size(path)
            r.file_bytes, r.packed_bytes = size.file_bytes, size.packed_bytes
            r.limit_failures = limit_failures(r, max_drop, max_latency_ms, max_size_mb)
            if name != "float":
                analysed[name] = (ffloat, qmodel)
        except EdgeQuantError as exc:
            r.status, r.error, r.error_type = "failed", str(exc), type(exc).__name__
        results.append(r)
    if progress:
        progress("compare", len(names), len(names))
    recommended, reason = recommend(results, limits)
    chosen, per_layer = _per_layer(
        recommended, names, analysed, ev.batches, layer_samples, top_k, out_name, rt
    )
    result = CompareResult(
        model=str(model) if isinstance(model, str | Path) else stem,
        task=task,
        outdir=out,
        samples=ev.samples,
        labeled=ev.labels is not None,
        primary=primary,
        limits=limits,
        settings={
            "latency_runs": latency_runs,
            "warmup": warmup,
            "threads": threads,
            "batch_size": batch_size,
            "measure_memory": measure_memory,
            "layer_samples": layer_samples,
            "top_k": top_k,
            "eval_data": ev.description,
            "mb": "1 MB = 2**20 bytes",
        },
        methods=results,
        recommended=recommended,
        reason=reason,
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
