"""--target tvm: TVM-compiled QDQ models against ONNX Runtime, float and int8, on the same inputs.

Models: the example CNN, PP-OCR mobile cls and ResNet-18 (random init, 128x128; benchmarks/models/).  Each is quantized once by
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
from edgequant.errors import EdgeQuantError
from edgequant.model.io import load_model
from edgequant.toolchains.tvm import build_tvm

RESULTS = Path(__file__).resolve().parent / "results"
NOTE = (
    "Measured on a shared 2-core AMD EPYC (AVX2, no VNNI) while other test suites ran: latencies are noisy. "
    "TVM and ORT latencies are measured one after the other, not interleaved (TVM runs in its own "
    "environment's process). TVM 0.27 runs Q/DQ as float math: int8 accuracy semantics, not int8 speed."
)


def run(name: str, trials: list[int], runs: int) -> list[dict[str, object]]:
    if name == "resnet18":  # hand-built, random init, 128x128 as in bench_targets.py
        from models.resnet import make

        bm = make("resnet18", size=128)
    else:
        bm = load(name)
    calib = bm.make_calib(64, 0)
    t0 = time.perf_counter()
    q = edgequant.quantize(bm.path, calib, method="static", batch_size=8)
    eq_s = time.perf_counter() - t0
    feed = {k: v[:1] for k, v in bm.latency_feed().items()}
    held = {k: v[64:128] for k, v in bm.make_calib(128, 0).items()}  # samples 64-127: calibration saw 0-63
    evals = [{k: v[j : j + 16] for k, v in held.items()} for j in range(0, 64, 16)]
    rows: list[dict[str, object]] = []
    fmodel = load_model(bm.path)
    try:
        _, acc = build_tvm(q.model, fmodel, evals, tune_trials=0, latency_runs=0)  # tuning keeps the numerics
    except EdgeQuantError as exc:  # e.g. an op TVM's ONNX front end cannot import: a row saying so
        print(f"{bm.title}: {exc}", flush=True)
        return [{"model": bm.title, "trials": 0, "error": str(exc).split(" Fix:")[0][:240]}]
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
        if "error" in r:
            out.append(f"| {r['model']} | {r['trials']} | failed: {r['error']} | | | | | | |")
            continue
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
    ap.add_argument(
        "--merge", action="store_true",
        help="keep the results file's rows of the models not run now (a model at a time; tuning takes long)",
    )  # fmt: skip
    args = ap.parse_args()
    rows = [r for m in args.models for r in run(m, args.trials, args.runs)]
    if args.merge and (RESULTS / "bench_tvm.json").exists():
        done = {str(r["model"]) for r in rows}
        kept = [
            r for r in json.loads((RESULTS / "bench_tvm.json").read_text()) if str(r["model"]) not in done
        ]
        rows = kept + rows
    md = table(rows)
    print(md)
    if args.merge or args.models == ["shapes", "ocr_cls"]:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "bench_tvm.json").write_text(json.dumps(rows, indent=1))
        (RESULTS / "bench_tvm.md").write_text(NOTE + "\n\n" + md + "\n")


if __name__ == "__main__":
    main()
