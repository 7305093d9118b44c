"""--target tvm: TVM-compiled QDQ models against ONNX Runtime, float and int8, on the same inputs.

Models: the example CNN, PP-OCR mobile cls and ResNet-18 (random init, 128x128; benchmarks/models/).  Each is quantized once by
EdgeQuant (static int8, per-channel weights, 64 calibration samples), then compiled by the tvm
toolchain (``edgequant toolchain install tvm``: TVM 0.27 Relax, llvm, host mcpu) untuned and after
``--trials`` MetaSchedule trials (tuning fixes the input shape to batch 1).
Latency: batch 1, 1 thread (TVM_NUM_THREADS=1; ORT intra-op 1, spinning off), interleaved: ``ROUNDS``
rounds, each timing TVM, ORT float and ORT int8 in turn (``--runs / ROUNDS`` runs after 3 warm-up
runs each), the median of the round medians.  PP-OCR cls's run-time Reshape shape is folded before
TVM imports it (``edgequant.toolchains.tvm_prepare``); the ``prepared`` field records what changed.
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
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models.targets_bench import bench_model

import edgequant
from edgequant.errors import EdgeQuantError
from edgequant.model.io import load_model
from edgequant.runtime import OrtRuntime
from edgequant.toolchains.tvm import build_tvm, run_tvm

RESULTS = Path(__file__).resolve().parent / "results"
ROUNDS = 5
NOTE = (
    "Measured on a shared 2-core AMD EPYC while about six other engineers' jobs ran: latencies are noisy, "
    "and the host changed between runs (the `mcpu` column: znver3 = AVX2 without VNNI, znver4 = AVX-512 "
    "with VNNI); compare latencies within a row. Batch 1, 1 thread. The ResNet-18 row (znver3) timed TVM "
    "and ORT one after the other; the example and PP-OCR cls rows time them interleaved: "
    f"{ROUNDS} rounds of TVM (in its own environment's process), ORT float and ORT int8 (intra-op spinning "
    "off), the median of the round medians. TVM 0.27 runs Q/DQ as float math: int8 accuracy semantics, not "
    "int8 speed. `N (M measured)`: M of the N MetaSchedule trials got a run time (0: every candidate failed "
    "to build or run, the library has TVM's default schedules on the static shape tuning fixes). PP-OCR cls: "
    "its run-time Reshape shape (Shape->Cast->Slice->Cast->Concat) is folded to [0, 200] and its unknown "
    "input dims named before TVM imports it (the `prepared` field of the JSON)."
)


def run(name: str, trials: list[int], runs: int) -> list[dict[str, object]]:
    bm = bench_model(name)  # resnet18: hand-built, random init, 128x128 as in bench_targets.py
    calib = bm.make_calib(64, 0)
    t0 = time.perf_counter()
    q = edgequant.quantize(bm.path, calib, method="static", batch_size=8)
    eq_s = time.perf_counter() - t0
    feed = {k: v[:1] for k, v in bm.latency_feed().items()}
    held = {k: v[64:128] for k, v in bm.make_calib(128, 0).items()}  # samples 64-127: calibration saw 0-63
    evals = [{k: v[j : j + 16] for k, v in held.items()} for j in range(0, 64, 16)]
    rows: list[dict[str, object]] = []
    fmodel = load_model(bm.path)
    try:  # untuned, dynamic shapes: the SQNR library, also timed as the 0-trial row (tuning keeps the numerics)
        untuned, acc = build_tvm(q.model, fmodel, evals, tune_trials=0, latency_runs=0)
    except EdgeQuantError as exc:  # e.g. an op TVM's ONNX front end cannot import: a row saying so
        print(f"{bm.title}: {exc}", flush=True)
        return [{"model": bm.title, "trials": 0, "error": str(exc).split(" Fix:")[0][:240]}]
    for n in trials:
        lib, info = (
            (untuned, acc) if n == 0 else build_tvm(q.model, fmodel, [feed], tune_trials=n, latency_runs=0)
        )
        lat = interleaved_latency(lib, q.model, fmodel, feed, runs)
        rows.append({
            "model": bm.title, "trials": n, **lat, "compile_s": info["seconds"].get("compile_s"),
            "tune_s": info["seconds"].get("tune_s", 0.0), "tune_measured": info.get("tune_measured"),
            "samples": acc["samples"],
            "sqnr_vs_ort_int8": acc["sqnr_db_vs_onnxruntime"], "sqnr_vs_ort_unfused": acc["sqnr_db_vs_onnxruntime_unfused"],
            "sqnr_vs_float": acc["sqnr_db_vs_float"], "edgequant_s": round(eq_s, 1), "tvm_target": info["tvm_target"],
            "prepared": acc["prepared"],
        })  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def interleaved_latency(
    library: bytes, qdq: onnx.ModelProto, fmodel: onnx.ModelProto, feed: dict[str, np.ndarray], runs: int
) -> dict[str, float]:
    """Median ms of TVM, ORT float and ORT int8 on ``feed``: ROUNDS rounds, each timing the three in turn."""
    per = max(1, runs // ROUNDS)
    rt = OrtRuntime(intra_op_threads=1, allow_spinning=False)
    sessions = {
        "ort_float_ms": rt.session(fmodel, "the float model"),
        "ort_int8_ms": rt.session(qdq, "the QDQ model"),
    }
    times: dict[str, list[float]] = {"tvm_ms": [], "ort_float_ms": [], "ort_int8_ms": []}
    with tempfile.TemporaryDirectory(prefix="bench-tvm-") as tmp:
        path = Path(tmp) / "model.tvm.so"
        path.write_bytes(library)
        try:
            for _ in range(ROUNDS):
                _, lat = run_tvm(path, qdq, [feed], threads=1, latency_runs=per, latency_batch=feed)
                times["tvm_ms"].append(float(lat["median"]) if lat else float("nan"))
                for key, sess in sessions.items():
                    for _ in range(3):
                        sess.run(feed)
                    ms = []
                    for _ in range(per):
                        t0 = time.perf_counter()
                        sess.run(feed)
                        ms.append((time.perf_counter() - t0) * 1e3)
                    times[key].append(float(np.median(ms)))
        finally:
            for sess in sessions.values():
                sess.close()
    return {k: round(float(np.median(v)), 4) for k, v in times.items()}


def table(rows: list[dict[str, object]]) -> str:
    out = [
        "| model | mcpu | MetaSchedule trials | TVM ms | ORT float ms | ORT int8 ms | TVM vs ORT int8 (dB) | "
        "TVM vs ORT unfused (dB) | TVM vs float (dB) | compile + tune s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['model']} | | {r['trials']} | failed: {r['error']} | | | | | | |")
            continue
        mcpu = dict(r["tvm_target"]).get("mcpu", "")  # type: ignore[call-overload]
        out.append(
            f"| {r['model']} | {mcpu} | {_trials(r)} | {float(r['tvm_ms']):.3f} | {float(r['ort_float_ms']):.3f} | "  # type: ignore[arg-type]
            f"{float(r['ort_int8_ms']):.3f} | {_db(r['sqnr_vs_ort_int8'])} | {_db(r['sqnr_vs_ort_unfused'])} | "  # type: ignore[arg-type]
            f"{_db(r['sqnr_vs_float'])} | {float(r['compile_s'] or 0) + float(r['tune_s'] or 0):.0f} |"  # type: ignore[arg-type]
        )
    return "\n".join(out)


def _trials(r: dict[str, object]) -> str:
    m = r.get("tune_measured")
    return f"{r['trials']} ({m} measured)" if r["trials"] and m is not None else str(r["trials"])


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
        help="keep the results file's rows (model, trials) not run now (a model or budget at a time; tuning takes long)",
    )  # fmt: skip
    args = ap.parse_args()
    rows = [r for m in args.models for r in run(m, args.trials, args.runs)]
    if args.merge and (RESULTS / "bench_tvm.json").exists():
        done = {(str(r["model"]), r["trials"]) for r in rows}
        old = json.loads((RESULTS / "bench_tvm.json").read_text())
        rows = [r for r in old if (str(r["model"]), r["trials"]) not in done] + rows
        rows.sort(key=lambda r: ([str(o["model"]) for o in old + rows].index(str(r["model"])), r["trials"]))
    md = table(rows)
    print(md)
    if args.merge or args.models == ["shapes", "ocr_cls"]:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "bench_tvm.json").write_text(json.dumps(rows, indent=1))
        (RESULTS / "bench_tvm.md").write_text(NOTE + "\n\n" + md + "\n")


if __name__ == "__main__":
    main()
