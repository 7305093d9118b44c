"""Where EdgeQuant's static INT8 stands on latency: float vs EdgeQuant vs ONNX Runtime's quantizer.

Models: hand-built ResNet-18 and ResNet-50-style bottleneck net (benchmarks/models/resnet.py, random
init, BN stats set on synthetic images, opset 17, dynamic batch), the example CNN, PP-OCR mobile cls,
PP-OCRv4 rec and Silero VAD (benchmarks/models/).
Variants per model, all from the same 64 calibration samples (read from disk batch by batch):
    float       the model as given
    eq-static   edgequant.quantize(method="static", calib_method="minmax", per_channel=True)
    ort-static  quantize_static(QDQ, per_channel=True, QUInt8 activations, QInt8 weights, MinMax)
    ort+pre     the same after ORT's quant_pre_process (retried with skip_symbolic_shape=True on failure)
    eq-dynamic  edgequant.quantize(method="dynamic", per_channel=True)  (may refuse: nothing to change)
    ort-dynamic quantize_dynamic(per_channel=True, QInt8 weights)
(quantization code shared with bench_quantize.py: benchmarks/models/harness.py ``worker``).
Latency: ORT CPU EP, ORT_ENABLE_ALL, intra-op threads 1 and 2, batch 1 and 8 (fixed-shape models:
batch 1 only; dynamic variants: batch 1 only, ConvInteger is 10x+ slower than float Conv).  Per (threads, batch) all sessions are created, warmed up (5 runs each), then run one
run per session in turn (round robin) ``--runs`` times; the median ms is reported, and the speed-up is
float median / variant median.  Op census: the graph ORT runs (``optimized_model_filepath``).
SQNR: 10 log10(sum y^2 / sum (y - y_q)^2) of the main output over each model's evaluation set.
Profile: for float / eq-static / ort-static at 1 thread and the largest batch, ORT's profiler
(``enable_profiling``), kernel time per op type, mean ms per run over ``--profile-runs`` runs.

    .venv/bin/python benchmarks/bench_latency.py                  # all models -> benchmarks/results/
    .venv/bin/python benchmarks/bench_latency.py --models shapes  # one model, prints the table only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import models
import numpy as np
import onnx
from models import resnet
from models.harness import latency_ms, optimized_census, runner, session, worker

ALL = ("shapes", "ocr_cls", "ocr_rec", "vad", "resnet18", "resnet50")
VARIANTS = ("float", "eq-static", "ort-static", "ort+pre", "eq-dynamic", "ort-dynamic")
_SPECS = {  # variant -> (harness tool, mode)
    "eq-static": ("edgequant", "static"),
    "ort-static": ("ort", "static"),
    "ort+pre": ("ort+pre", "static"),
    "eq-dynamic": ("edgequant", "dynamic"),
    "ort-dynamic": ("ort", "dynamic"),
}
CONFIGS = ((1, 1), (2, 1), (1, 8), (2, 8))  # (threads, batch)
RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str, size: int) -> models.BenchModel:
    return resnet.make(name, size) if name.startswith("resnet") else models.load(name)


def quantize_all(m: models.BenchModel, tmp: Path, samples: int) -> dict[str, dict[str, Any]]:
    """Every variant's file (or its failure), quantized in this process by the shared harness worker."""
    data = tmp / "calib"
    m_data = models.DataFiles.write(data, m.make_calib(samples, 0), m.unbatched)
    out: dict[str, dict[str, Any]] = {"float": {"status": "ok", "path": str(m.path), "seconds": 0.0}}
    for variant, (tool, mode) in _SPECS.items():
        spec = {
            "tool": tool,
            "mode": mode,
            "calib": "minmax",
            "samples": samples,
            "per_channel": True,
            "model": str(m.path),
            "data": str(data) if mode == "static" else None,
            "batch": m.calib_batch,
            "percentile": 99.99,
            "out": str(tmp / f"{variant.replace('+', '_')}.onnx"),
        }
        try:
            res = worker(spec)
            session(spec["out"], 1).run(None, next(m_data.batches(1)))  # loads and runs, or fails here
            out[variant] = {"status": "ok", "path": spec["out"], "seconds": res["seconds"]}
        except Exception as exc:  # reported in the table as this variant's status, never hidden
            first = (str(exc).replace("|", "/").strip().splitlines() or [type(exc).__name__])[0][:200]
            out[variant] = {"status": f"failed: {type(exc).__name__}: {first}"}
        print(f"  {m.name} {variant}: {out[variant]['status']}", file=sys.stderr, flush=True)
    return out


def batch_feed(m: models.BenchModel, batch: int) -> dict[str, np.ndarray] | None:
    """A feed of ``batch`` samples, or None when the model's inputs have a fixed batch other than that."""
    inputs = onnx.load(str(m.path), load_external_data=False).graph.input
    fixed = [i.type.tensor_type.shape.dim[0].dim_value for i in inputs if i.type.tensor_type.shape.dim]
    if any(d > 0 for d in fixed) or m.unbatched:
        return m.latency_feed() if batch == 1 else None
    return {k: np.ascontiguousarray(v) for k, v in m.make_calib(batch, 7).items()}


def profile_ops(path: Path, feed: dict[str, np.ndarray], runs: int, tmp: Path) -> dict[str, float]:
    """Mean kernel ms per run, by op type, from ORT's profiler (1 thread, after 3 warm-up runs)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp / f"prof_{path.stem}")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    warmup = 3
    for _ in range(warmup + runs):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    model_runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    after = model_runs[warmup - 1]["ts"] + model_runs[warmup - 1]["dur"]  # end of the last warm-up run
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > after:
            per_op[e["args"]["op_name"]] += e["dur"] / 1e3 / runs  # us -> ms per run
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    m = load(name, args.size)
    tmp = Path(tempfile.mkdtemp(prefix=f"blat_{name}_"))
    variants = quantize_all(m, tmp, args.samples)
    ok = {v: Path(r["path"]) for v, r in variants.items() if r["status"] == "ok"}
    ref = m.predict(runner(m.path))
    for v, path in ok.items():
        variants[v]["sqnr_db"] = m.output_sqnr(ref, m.predict(runner(path))) if v != "float" else math.inf
        census = optimized_census(path, tmp)
        variants[v]["census"] = {k: c for k, c in census.items() if k != "_ops"}
        variants[v]["ops"] = census["_ops"]
    latency: dict[str, dict[str, float]] = {}
    for threads, batch in CONFIGS:
        feed = batch_feed(m, batch)
        if feed is None:
            continue
        key = f"t{threads}_b{batch}"
        timed = {v: p for v, p in ok.items() if batch == 1 or not v.endswith("dynamic")}
        latency[key] = latency_ms(timed, feed, threads, runs=args.runs, rounds=args.runs, warmup=5)
        print(
            f"  {name} {key}: " + ", ".join(f"{v} {ms:.2f}" for v, ms in latency[key].items()),
            file=sys.stderr,
        )
    big = max((b for _, b in CONFIGS if batch_feed(m, b) is not None), default=1)
    feed = batch_feed(m, big)
    assert feed is not None
    profiles = {
        v: profile_ops(ok[v], feed, args.profile_runs, tmp)
        for v in ("float", "eq-static", "ort-static")
        if v in ok
    }
    return {
        "name": name,
        "title": m.title,
        "source": m.source,
        "variants": variants,
        "latency_ms": latency,
        "profile_batch": big,
        "profile_ms_per_run": profiles,
        "seconds": time.perf_counter() - t0,
    }


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def render(results: list[dict[str, Any]], header: str) -> str:
    cols = [f"t{t}_b{b}" for t, b in CONFIGS]
    lines = [header, "", "### Latency (median ms; x = float / variant) and the graph ORT runs", ""]
    lines.append(
        "| model | variant | "
        + " | ".join(f"{t} thr b{b} ms (x)" for t, b in CONFIGS)
        + " | SQNR dB | QLinearConv | float Conv | Q | DQ |"
    )
    lines.append("|---|---|" + "---:|" * (len(cols) + 5))
    for r in results:
        for v, info in r["variants"].items():
            if info["status"] != "ok":
                lines.append(f"| {r['name']} | {v} | {info['status']} |" + " |" * (len(cols) + 4))
                continue
            cells = []
            for c in cols:
                lat = r["latency_ms"].get(c)
                if lat is None or v not in lat:
                    cells.append("n/a")
                else:
                    cells.append(f"{_ms(lat[v])} ({lat['float'] / lat[v]:.2f})")
            cen = info["census"]
            sq = info["sqnr_db"]
            lines.append(
                f"| {r['name']} | {v} | "
                + " | ".join(cells)
                + f" | {'-' if math.isinf(sq) else f'{sq:.1f}'} | {cen['QLinearConv']} | "
                f"{cen['float Conv (incl. FusedConv)']} | {cen['QuantizeLinear']} | {cen['DequantizeLinear']} |"
            )
    lines += ["", "### Kernel time per op type (ORT profiler, 1 thread, ms per run, top 6)", ""]
    lines.append("| model | batch | variant | total kernel ms | top ops |")
    lines.append("|---|---:|---|---:|---|")
    for r in results:
        for v, prof in r["profile_ms_per_run"].items():
            top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(prof.items())[:6])
            lines.append(f"| {r['name']} | {r['profile_batch']} | {v} | {sum(prof.values()):.2f} | {top} |")
    lines += ["", "### Summary: static INT8 speed-up over float (1 thread)", ""]
    lines.append(
        "| model | batch | float ms | EdgeQuant int8 ms (x) | ORT int8 ms (x) | EdgeQuant / ORT time |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|")
    for r in results:
        for b in (1, 8):
            lat = r["latency_ms"].get(f"t1_b{b}")
            if lat is None or "eq-static" not in lat or "ort-static" not in lat:
                continue
            f, e, o = lat["float"], lat["eq-static"], lat["ort-static"]
            lines.append(
                f"| {r['name']} | {b} | {_ms(f)} | {_ms(e)} ({f / e:.2f}) | {_ms(o)} ({f / o:.2f}) | {e / o:.2f} |"
            )
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(ALL), choices=ALL)
    ap.add_argument("--size", type=int, default=160, help="ResNet input size (square)")
    ap.add_argument("--samples", type=int, default=64, help="calibration samples")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per variant and configuration")
    ap.add_argument("--profile-runs", type=int, default=10)
    ap.add_argument("--no-write", action="store_true", help="print only; do not write benchmarks/results/")
    args = ap.parse_args()
    import onnxruntime as ort

    t0 = time.perf_counter()
    results = []
    for name in args.models:  # results are rewritten after every model: a long run leaves partial tables
        print(f"{name} ...", file=sys.stderr, flush=True)
        results.append(bench_model(name, args))
        seconds = time.perf_counter() - t0
        text = _report(results, args, seconds, ort.__version__)
    print(text)


def _report(results: list[dict[str, Any]], args: argparse.Namespace, seconds: float, version: str) -> str:
    header = (
        f"## Latency: float vs EdgeQuant vs ORT quantization (onnxruntime {version}, CPU EP, "
        f"{os.cpu_count()} cores, shared machine)\n\n"
        f"`benchmarks/bench_latency.py --models {' '.join(args.models)} --size {args.size} --samples "
        f"{args.samples} --runs {args.runs}`: {seconds / 60:.1f} min.  ResNets at {args.size}x{args.size}; "
        f"{args.samples} calibration samples (minmax, per-channel); median of {args.runs} round-robin runs "
        "after 5 warm-up runs per session; fixed-shape models (vad) have batch 1 only; "
        "dynamic variants are timed at batch 1 only (ORT's ConvInteger is 10x+ slower than float at batch 8)."
    )
    text = render(results, header)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        _write(RESULTS / "bench_latency.md", text)
        meta = {"args": vars(args), "seconds": seconds, "onnxruntime": version, "results": results}
        _write(RESULTS / "bench_latency.json", json.dumps(meta, indent=1, default=str))
    return text


if __name__ == "__main__":
    main()
