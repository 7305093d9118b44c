"""--target tvm: TVM-compiled QDQ models against ONNX Runtime, float and int8, on the same inputs.

Models: the example CNN and PP-OCR mobile cls (benchmarks/models/).  Each is quantized once by
EdgeQuant (static int8, per-channel weights, 64 calibration samples), then compiled by the tvm
toolchain (``edgequant toolchain install tvm``: TVM 0.27 Relax, llvm, host mcpu) untuned and after
``--trials`` MetaSchedule trials (tuning fixes the input shape to batch 1).
Latency: batch 1, 1 thread (TVM_NUM_THREADS=1; ORT intra-op 1, spinning off), median of ``--runs``
runs after 3 warm-up runs, measured one model after the other (not interleaved).
SQNR: the main output over 64 held-out samples (64-127 of the calibration generator; calibration used 0-63), against ORT's run of the same
QDQ model (fused integer kernels), against ORT with graph optimisations off (Q/DQ as float math, as
TVM runs them) and against the float model.

    .venv/bin/python benchmarks/bench_tvm.py                 # -> benchmarks/results/bench_tvm.{json,md}
    .venv/bin/python benchmarks/bench_tvm.py --models shapes --trials 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import load

import edgequant
from edgequant.model.io import load_model
from edgequant.toolchains.tvm import build_tvm

RESULTS = Path(__file__).resolve().parent / "results"


def run(name: str, trials: list[int], runs: int) -> list[dict[str, object]]:
    bm = load(name)
    calib = bm.make_calib(64, 0)
    t0 = time.perf_counter()
    q = edgequant.quantize(bm.path, calib, method="static", batch_size=8)
    eq_s = time.perf_counter() - t0
    feed = {k: v[:1] for k, v in bm.latency_feed().items()}
    held = {k: v[64:128] for k, v in bm.make_calib(128, 0).items()}  # samples 64-127: calibration saw 0-63
    evals = [{k: v[j : j + 16] for k, v in held.items()} for j in range(0, 64, 16)]
    rows = []
    fmodel = load_model(bm.path)
    _, acc = build_tvm(q.model, fmodel, evals, tune_trials=0, latency_runs=0)  # tuning keeps the numerics
    for n in trials:
        _, info = build_tvm(q.model, fmodel, [feed], tune_trials=n, latency_runs=runs)
        lat = info["latency_ms"]
        rows.append({
            "model": bm.title, "trials": n, "tvm_ms": lat["tvm"], "ort_float_ms": lat["onnxruntime_float"],
            "ort_int8_ms": lat["onnxruntime_int8"], "compile_s": info["seconds"].get("compile_s"),
            "tune_s": info["seconds"].get("tune_s", 0.0), "samples": acc["samples"],
            "sqnr_vs_ort_int8": acc["sqnr_db_vs_onnxruntime"], "sqnr_vs_ort_unfused": acc["sqnr_db_vs_onnxruntime_unfused"],
            "sqnr_vs_float": acc["sqnr_db_vs_float"], "edgequant_s": round(eq_s, 1), "tvm_target": info["tvm_target"],
        })  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict[str, object]]) -> str:
    out = [
        "| model | MetaSchedule trials | TVM ms | ORT float ms | ORT int8 ms | TVM vs ORT int8 (dB) | "
        "TVM vs ORT unfused (dB) | TVM vs float (dB) | compile + tune s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['trials']} | {float(r['tvm_ms']):.3f} | {float(r['ort_float_ms']):.3f} | "  # type: ignore[arg-type]
            f"{float(r['ort_int8_ms']):.3f} | {_db(r['sqnr_vs_ort_int8'])} | {_db(r['sqnr_vs_ort_unfused'])} | "  # type: ignore[arg-type]
            f"{_db(r['sqnr_vs_float'])} | {float(r['compile_s'] or 0) + float(r['tune_s'] or 0):.0f} |"  # type: ignore[arg-type]
        )
    return "\n".join(out)


def _db(d: object) -> str:
    v = next(iter(d.values())) if isinstance(d, dict) and d else None
    return "identical" if v is None else f"{v:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["shapes", "ocr_cls"])
    ap.add_argument("--trials", nargs="+", type=int, default=[0, 64])
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    rows = [r for m in args.models for r in run(m, args.trials, args.runs)]
    md = table(rows)
    print(md)
    if args.models == ["shapes", "ocr_cls"]:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "bench_tvm.json").write_text(json.dumps(rows, indent=1))
        (RESULTS / "bench_tvm.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
