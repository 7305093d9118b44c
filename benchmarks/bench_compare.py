"""Every method, EdgeQuant's ``compare`` vs ONNX Runtime's own tools, measured by one function.

Per model (``shapes`` example CNN, ``ocr_cls`` PP-OCR mobile cls, ``vad`` Silero VAD LSTM; see
benchmarks/models/): both tools read the same N seeded calibration samples from disk (default 128,
EdgeQuant's preset ``calib_samples``).  EdgeQuant: one ``edgequant.evaluate.compare(..., methods="all")``
call (float, dynamic-int8, fp16, int8 static per-tensor / per-channel, weight-only int8 / int4 (block 32),
w4a8, w8a16); its model files are then measured here.  ONNX Runtime, for the same methods:

    dynamic-int8            quantize_dynamic(per_channel=True, weight_type=QInt8)
    fp16                    onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)
    int8-static-per-tensor  quantize_static(QDQ, MinMax, per_channel=False, QUInt8 act, QInt8 weights)
    int8-static             the same with per_channel=True
    weight-only-int8 / -int4  MatMulNBitsQuantizer(bits=8 / 4, block_size=32, is_symmetric=True)
    w4a8                    quantize_static(QDQ, MinMax, per_channel=True, QUInt8 act, QInt4 weights)
    w8a16                   quantize_static(QDQ, MinMax, per_channel=True, QUInt16 act, QInt8 weights)

Each quantization (EdgeQuant's compare call included) runs in its own interpreter through
``models.harness.run_worker``: killed past ``--timeout`` s ("timeout") or ``--max-rss-mib`` ("OOM").
A run that raises shows as ``failed: <reason>``; a model ORT cannot load or run shows as ``invalid``.

One function (``measure``) scores every file of both tools: the model's task metric on its separate
evaluation set (top-1 accuracy for shapes / cls, speech-decision agreement with float for the VAD, each
model streaming its own LSTM state), SQNR of the main output vs the float model, file size, and the ORT
CPU latency (1 intra-op thread, the model's fixed latency feed; all variants of a model timed in
interleaved rounds after warm-up, median of ``--runs``).  Collapse = output SQNR < 5 dB or a task
metric more than 10 points below float; the table marks it.  ``(no-op)``: ORT's tool left every weight
float (e.g. MatMulNBits only handles MatMul with an initializer weight).

    .venv/bin/python benchmarks/bench_compare.py                  # all three -> results/bench_compare.md
    .venv/bin/python benchmarks/bench_compare.py --models shapes  # one model
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import models
from models import harness
from models.common import DataFiles, Feeds

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODELS = ("shapes", "ocr_cls", "vad")
METHODS = (
    "float", "dynamic-int8", "fp16", "int8-static-per-tensor", "int8-static", "weight-only-int8",
    "weight-only-int4", "w4a8", "w8a16",
)  # fmt: skip
TASK_METRIC = {"shapes": "accuracy", "ocr_cls": "accuracy", "vad": "frame_agree"}
COLLAPSE_SQNR_DB, COLLAPSE_DROP_PP = 5.0, 10.0
T = onnx.TensorProto
INDEX = (T.INT64, T.INT32, T.BOOL)  # shapes, axes, indices: not weights
LOW_PRECISION = (T.INT8, T.UINT8, T.INT4, T.UINT4, T.INT16, T.UINT16, T.FLOAT16)  # weights a tool quantized


# ---------------------------------------------------------------- child side (one quantization) --


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh interpreter by ``harness.run_worker``: one tool, one method."""
    if spec["tool"] == "edgequant-compare":
        return _edgequant_compare(spec)
    if spec["tool"] == "ort" and spec["method"] in ("dynamic-int8", "int8-static-per-tensor", "int8-static"):
        # the exact ORT calls of bench_quantize.py (harness._quantize): matched settings in both benches
        mode = "dynamic" if spec["method"] == "dynamic-int8" else "static"
        hspec = {**spec, "mode": mode, "calib": "minmax", "percentile": 99.99}
        hspec["per_channel"] = spec["method"] != "int8-static-per-tensor"
        return harness.worker(hspec)
    t0 = time.perf_counter()
    _ort_other(spec)
    return {"seconds": time.perf_counter() - t0, "peak_mib": harness._rss_mib("self", "VmHWM:")}


def _edgequant_compare(spec: dict[str, Any]) -> dict[str, Any]:
    from edgequant.evaluate import compare

    data = DataFiles(Path(spec["data"]))
    ev = DataFiles(Path(spec["eval"]))
    labels = np.load(spec["labels"]) if spec.get("labels") else None
    t0 = time.perf_counter()
    res = compare(
        spec["model"],
        lambda: data.batches(spec["batch"]),
        list(ev.batches(spec["eval_batch"])),
        labels=labels,
        task=spec["task"],
        methods="all",
        outdir=spec["out"],
        measure_memory=False,
        latency_runs=5,
        max_drop=None,
    )
    methods = {r.method: r for r in res.methods}
    fallback: dict[str, dict[str, Any]] = {}
    for name, r in methods.items():
        if not r.ok:  # the same call compare makes for a method, so its file can still be measured
            fallback[name] = _quantize_preset(spec, name, data, r.error)
    return {
        "seconds": time.perf_counter() - t0,
        "peak_mib": harness._rss_mib("self", "VmHWM:"),
        "recommended": res.recommended,
        "outside_compare": sorted(fallback),
        "methods": {
            r.method: {
                "status": r.status,
                "error": r.error,
                "path": str(Path(spec["out"]) / r.model_file) if r.model_file else "",
                "seconds": r.quantize_seconds,
                "compare_score": r.score,
                "packed_kib": (r.packed_bytes or 0) / 1024,
            }
            for r in res.methods
        }
        | fallback,
    }


def _quantize_preset(spec: dict[str, Any], name: str, data: DataFiles, compare_error: str) -> dict[str, Any]:
    """One method outside compare: ``pipeline.quantize(model, data, preset(name))``, as compare runs it."""
    from edgequant import pipeline
    from edgequant.errors import EdgeQuantError
    from edgequant.recipe import preset

    out = Path(spec["out"]) / "outside_compare"
    t0 = time.perf_counter()
    try:
        if name == "float":
            path = Path(spec["model"])
        else:
            calib: Any = lambda: data.batches(spec["batch"])  # noqa: E731  (a re-iterable source, as compare gets)
            q = pipeline.quantize(spec["model"], calib, preset(name))
            path = q.save(out).model
    except EdgeQuantError as exc:
        return {"status": "failed", "error": str(exc)}
    return {"status": "ok", "path": str(path), "seconds": time.perf_counter() - t0, "via": compare_error}


def _ort_other(spec: dict[str, Any]) -> None:
    """fp16, MatMulNBits weight-only, and the static w4a8 / w8a16 variants with ORT's tools."""
    method, src, out = spec["method"], spec["model"], spec["out"]
    if method == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(src), keep_io_types=True), out)
        return
    if method.startswith("weight-only"):
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        q = MatMulNBitsQuantizer(onnx.load(src), bits=int(method[-1]), block_size=32, is_symmetric=True)
        q.process()
        q.model.save_model_to_file(out)
        return
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    data = DataFiles(Path(spec["data"]))

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = data.batches(spec["batch"])

        def get_next(self) -> Feeds | None:
            return next(self.it, None)

    act, weight = {
        "w4a8": (QuantType.QUInt8, QuantType.QInt4),
        "w8a16": (QuantType.QUInt16, QuantType.QInt8),
    }[method]
    quantize_static(
        src,
        out,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=act,
        weight_type=weight,
        calibrate_method=CalibrationMethod.MinMax,
    )


# ------------------------------------------------------------------------- parent side -----------


def measure(
    m: models.BenchModel, path: Path, ref: dict[str, np.ndarray], float_metric: float
) -> dict[str, Any]:
    """The one scoring function for both tools: task metric, output SQNR, size, int-op census."""
    key = TASK_METRIC[m.name]
    got = m.predict(harness.runner(path, threads=1))
    metrics = m.metrics(ref, got)
    sqnr = m.output_sqnr(ref, got)
    metric = 100.0 * metrics[key]
    proto = onnx.load(str(path), load_external_data=False)
    ops = Counter(n.op_type for n in proto.graph.node)
    tensors = [*proto.graph.initializer, *(a.t for n in proto.graph.node if n.op_type == "Constant" for a in
                                           n.attribute if a.name == "value")]  # fmt: skip
    low = Counter(
        onnx.TensorProto.DataType.Name(t.data_type) for t in tensors if t.data_type in LOW_PRECISION
    )
    total = sum(int(np.prod(t.dims)) for t in tensors if t.data_type not in INDEX)
    low_elems = sum(int(np.prod(t.dims)) for t in tensors if t.data_type in LOW_PRECISION)
    collapsed = sqnr < COLLAPSE_SQNR_DB or float_metric - metric > COLLAPSE_DROP_PP
    return {
        "metric": metric,
        "metrics": metrics,
        "sqnr_db": sqnr,
        "file_kib": harness.file_kib(path),
        "quant_ops": {
            k: v for k, v in ops.items() if any(w in k for w in ("Quant", "Integer", "NBits", "QLinear"))
        },
        "low_precision_tensors": dict(low),
        "low_precision_share": low_elems / max(1, total),
        "collapsed": collapsed,
    }


def _eval_set(name: str, m: models.BenchModel, tmp: Path) -> dict[str, Any]:
    """The model's evaluation inputs on disk for EdgeQuant's compare (its own report only)."""
    if name == "shapes":
        from models.shapes import _eval

        x, y = _eval()
        arrays, labels, task, batch = {"image": x}, y, "classification", 64
    elif name == "ocr_cls":
        from models.ocr import _eval_cls

        x, y = _eval_cls()
        arrays, labels, task, batch = {"x": x}, y, "classification", 50
    else:  # the (frame, state) pairs float streaming sees; unlabeled: agreement with float
        arrays, labels, task, batch = m.make_calib(256, 1), None, "regression", 1
    DataFiles.write(tmp / "eval", arrays, m.unbatched)
    if labels is not None:
        np.save(tmp / "labels.npy", labels)
    return {"eval": str(tmp / "eval"), "labels": str(tmp / "labels.npy") if labels is not None else None,
            "task": task, "eval_batch": batch}  # fmt: skip


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    m = models.load(name)
    tmp = Path(tempfile.mkdtemp(prefix=f"bc_{name}_"))
    t_all = time.perf_counter()
    DataFiles.write(tmp / "calib", m.make_calib(args.samples, 0), m.unbatched)
    base = {"model": str(m.path), "data": str(tmp / "calib"), "batch": m.calib_batch, "samples": args.samples}
    ref = m.predict(harness.runner(m.path, threads=1))
    float_metric = 100.0 * m.metrics(ref, ref)[TASK_METRIC[name]]

    def log(tool: str, method: str, r: dict[str, Any]) -> None:
        print(
            f"  {name} {tool} {method}: {r['status']} {r.get('error', '')[:120]}", file=sys.stderr, flush=True
        )

    spec = {**base, "tool": "edgequant-compare", "out": str(tmp / "edgequant"), **_eval_set(name, m, tmp)}
    eq = harness.run_worker(spec, args.timeout * len(METHODS), args.max_rss_mib)
    rows: dict[str, dict[str, Any]] = {meth: {} for meth in METHODS}
    for meth in METHODS:
        if eq["status"] != "ok":
            r = {"status": eq["status"], "error": eq.get("error", "")}
        else:
            r = dict(eq["methods"].get(meth, {"status": "failed", "error": "not run by compare"}))
        rows[meth]["edgequant"] = r
        log("edgequant", meth, r)
        if meth == "float":
            rows[meth]["ort"] = {"status": "ok", "path": str(m.path)}
            continue
        out = tmp / "ort" / f"{meth}.onnx"
        out.parent.mkdir(exist_ok=True)
        r = harness.run_worker({**base, "tool": "ort", "method": meth, "out": str(out)}, args.timeout,
                               args.max_rss_mib)  # fmt: skip
        r["path"] = str(out)
        rows[meth]["ort"] = r
        log("ort", meth, r)
    lat_paths: dict[str, Path] = {}
    for meth, tools in rows.items():
        for tool, r in tools.items():
            if r["status"] != "ok":
                continue
            try:
                r.update(measure(m, Path(r["path"]), ref, float_metric))
                lat_paths[f"{tool}|{meth}"] = Path(r["path"])
            except Exception as exc:  # a file ORT cannot load or run: that is the result
                r.update(status="invalid", error=f"{type(exc).__name__}: {exc}")
                log(tool, meth, r)
    lat = harness.latency_ms(lat_paths, m.latency_feed(), threads=1, runs=args.runs, rounds=10)
    for key, ms in lat.items():
        tool, meth = key.split("|")
        rows[meth][tool]["latency_ms"] = ms
    feed = ", ".join(f"{k} {list(v.shape)}" for k, v in m.latency_feed().items())
    print(f"  {name} done in {time.perf_counter() - t_all:.0f}s", file=sys.stderr, flush=True)
    return {
        "model": name,
        "title": m.title,
        "source": m.source,
        "metric": TASK_METRIC[name],
        "float_metric": float_metric,
        "latency_feed": feed,
        "edgequant_seconds": eq.get("seconds"),
        "edgequant_peak_mib": eq.get("peak_mib"),
        "recommended": eq.get("recommended"),
        "outside_compare": eq.get("outside_compare", []),
        "notes": m.notes,
        "rows": rows,
        "seconds": time.perf_counter() - t_all,
    }


def _short(err: str, width: int = 110) -> str:
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", " ".join(str(err).split()))
    return text[:width] + ("…" if len(text) > width else "")


def _cells(r: dict[str, Any], is_float: bool) -> list[str]:
    if r.get("status") != "ok":
        why = (
            r["status"] if r.get("status") in ("OOM", "timeout") else f"failed: {_short(r.get('error', ''))}"
        )
        if r.get("status") == "invalid":
            why = f"invalid model: {_short(r.get('error', ''))}"
        return [why, "-", "-", "-"]
    metric = f"{r['metric']:.1f}"
    if r.get("collapsed"):
        metric = f"**{metric} collapsed**"
    if not is_float and not r.get("low_precision_tensors") and not r.get("quant_ops"):
        metric += " (no-op)"
    elif not is_float and r.get("low_precision_share", 1.0) < 0.01:
        metric += " (weights float)"
    if r.get("via"):
        metric += " †"
    sq = "inf" if math.isinf(r["sqnr_db"]) else f"{r['sqnr_db']:.1f}"
    return [metric, sq, f"{r['file_kib']:.0f}", f"{r['latency_ms']:.3f}" if "latency_ms" in r else "-"]


def table(res: dict[str, Any]) -> str:
    unit = {"accuracy": "acc %", "frame_agree": "agree %"}[res["metric"]]
    heads = ["method", f"EQ {unit}", "EQ SQNR dB", "EQ KiB", "EQ ms", f"ORT {unit}", "ORT SQNR dB", "ORT KiB",
             "ORT ms"]  # fmt: skip
    lines = ["| " + " | ".join(heads) + " |", "|---" + "|---:" * (len(heads) - 1) + "|"]
    for meth, tools in res["rows"].items():
        lines.append(
            "| "
            + " | ".join(
                [meth, *_cells(tools["edgequant"], meth == "float"), *_cells(tools["ort"], meth == "float")]
            )
            + " |"
        )
    return "\n".join(lines)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    import onnxruntime

    import edgequant

    out = [
        f"# Every method: EdgeQuant {edgequant.__version__} `compare` vs onnxruntime {onnxruntime.__version__}"
        " tools\n",
        f"`{' '.join(['benchmarks/bench_compare.py', *sys.argv[1:]])}` on {_cpu()}; {args.samples} calibration "
        f"samples (the same files for both tools); latency: ORT CPU, 1 thread, median of {args.runs} runs, "
        f"interleaved; collapse: SQNR < {COLLAPSE_SQNR_DB:g} dB or > {COLLAPSE_DROP_PP:g} points below float; "
        "`(no-op)`: the tool quantized no tensor (the file holds the float weights). SQNR of the main output "
        "vs float over the whole evaluation set. See the script's docstring for each ORT call.\n",
    ]
    for res in results:
        out.append(f"## {res['title']}\n")
        out.append(
            f"source `{res['source']}`; task metric: {res['metric']} (float {res['float_metric']:.1f} %); "
            f"latency feed {res['latency_feed']}; EdgeQuant compare (all methods, one process): "
            f"{res['edgequant_seconds'] or 0:.0f} s, peak {res['edgequant_peak_mib'] or 0:.0f} MiB"
            + (f"; {'; '.join(res['notes'])}" if res["notes"] else "")
            + f"; total {res['seconds']:.0f} s.\n"
        )
        out.append(table(res) + "\n")
        via = {r["edgequant"].get("via") for r in res["rows"].values()} - {None}
        if via:
            out.append(
                "† EdgeQuant's `compare` failed on every method of this model with "
                f"`{_short(next(iter(via)))}`; these EdgeQuant files come from "
                "`pipeline.quantize(model, data, preset(method))`, the call compare makes per method.\n"
            )
    return "\n".join(out)


def _cpu() -> str:
    import os
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=models.NAMES)
    p.add_argument("--samples", type=int, default=128, help="calibration samples (both tools)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per ORT run (x9 for compare)")
    p.add_argument("--max-rss-mib", type=float, default=6144.0, help="kill a run above this RSS (OOM)")
    p.add_argument("--runs", type=int, default=60, help="timed latency runs per variant")
    p.add_argument("--out", type=Path, default=RESULTS / "bench_compare.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(_child(json.loads(args.worker)), default=str))
        return
    results = [bench_model(n, args) for n in args.models]
    text = report(results, args)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for target, body in (
        (args.out, text),
        (args.out.with_suffix(".json"), json.dumps(results, indent=1, default=str)),
    ):
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(body)
        tmp.replace(target)


harness.SCRIPT = Path(__file__).resolve()  # run_worker starts this script's --worker, not bench_quantize's

if __name__ == "__main__":
    main()
