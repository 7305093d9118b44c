"""Accuracy-recovery passes (CLE, AdaRound) and the calibration search on real models, beside ORT's tool.

Per model (``shapes`` example CNN, ``ocr_cls`` PP-OCR mobile cls: depthwise convs, ``ocr_rec`` PP-OCRv4
rec, ``resnet18`` hand-built random-init ResNet-18 at 112x112, ``effnet_lite0`` ImageNet-pretrained
EfficientNet-Lite0 on real photos, metric top-1 agreement and mean KL(float || quantized) of the
softmax; see benchmarks/models/), every setting
below quantizes from the same 192 seeded calibration samples written to one ``.npy`` file (EdgeQuant's
check holds back 32 of them, evenly spread; it calibrates on the first 128 of the others, and the 32
after those judge its passes (a pass that lowers their output SQNR by more than 0.05 dB is reverted)
and score its range search; ORT's tool reads the first 128 of the file):

    default            edgequant static int8, per channel, 'auto' ranges (the default recipe)
    accurate           the 'accurate' preset: CLE where the graph has pairs, then the range search
    per-tensor         static int8, per tensor
    per-tensor+cle     the same after cross-layer equalization
    w4a8               4-bit per-channel weights, int8 activations
    w4a8+adaround      the same with AdaRound (numpy, layer by layer; each layer's statistics stream
                       until they hold 64 rows per input dimension)
    ort-static         onnxruntime.quantization.quantize_static(QDQ, MinMax, per_channel=True,
                       QUInt8 activations, QInt8 weights): ORT's default static setting
    (on request, --settings)  weight-only-int4 (the preset), default+adaround (AdaRound at 8 bits),
                       w4a8+brecq (AdaRound, then each block's roundings jointly: algorithms/brecq.py),
                       ort-static-entropy, ort-static-percentile, w4a8+cle+adaround (CLE judged after
                       AdaRound), accurate-w4 (the preset at 4 bits: AdaRound added)

``--latency RUNS,ROUNDS`` then times float and every model written at batch 1 on one intra-op thread
with ORT's thread spinning off, interleaved (every session warmed up, then each round runs each model
RUNS times in turn; the median), with the load average recorded: the machine is shared.  CPU seconds
(``cpu_s``) count this interpreter's threads and its finished child processes (EdgeQuant's ORT runs).

Each quantization runs in its own interpreter (``--worker``): wall time of the call and the peak
resident set (VmHWM) of that interpreter; EdgeQuant's time is split into calibration and each pass.
Then every model file is scored on the model's evaluation set (a different seed from calibration):
output SQNR against float and the model's task metric.  The machine is shared with other jobs, so
times are noisy (stated in the results file).

    .venv/bin/python benchmarks/bench_algorithms.py            # -> results/bench_algorithms.{json,md}
    .venv/bin/python benchmarks/bench_algorithms.py --models shapes
    .venv/bin/python benchmarks/bench_algorithms.py --models effnet_lite0 --merge --latency 10,5 \
        --settings default,accurate,per-tensor,per-tensor+cle,w4a8,w4a8+adaround,weight-only-int4,\
ort-static,ort-static-entropy,ort-static-percentile --timeout 2400
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _ada(act_bits: int, drop: float, budget: float = 1.0, w8: list[str] | None = None) -> dict[str, Any]:
    """W4A8 + AdaRound with its x~ variant set by module constants (algorithms/adaround_acts.py): activations
    quantized in x~ for weights of at most ``act_bits`` bits (0: float activations), QDrop's ``drop``;
    ``budget``: MAC_BUDGET and ITERATIONS times this (adaround_opt; 2e10, 1,000); ``w8``: weight_8bit."""
    acts, opt = "edgequant.algorithms.adaround_acts.", "edgequant.algorithms.adaround_opt."
    constants: dict[str, float] = {acts + "ACT_QUANT_MAX_BITS": act_bits, acts + "DROP_PROB": drop}
    constants |= {opt + "MAC_BUDGET": 2e10 * budget, opt + "ITERATIONS": round(1000 * budget)}
    return {"weight_bits": 4, "algorithms": ["adaround"], "constants": constants} | (
        {"weight_8bit": w8} if w8 else {}
    )


def _post(on: bool, fit_bias: bool, only: tuple[str, ...] = (), batches: int = 1) -> dict[str, Any]:
    """Module constants of algorithms/adaround_post.py: POST_ACT, FIT_BIAS, ONLY and BATCHES."""
    post = "edgequant.algorithms.adaround_post."
    return {
        post + "POST_ACT": on,
        post + "FIT_BIAS": fit_bias,
        post + "ONLY": only,
        post + "BATCHES": batches,
    }


SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "accurate": {"preset": "accurate"},
    "per-tensor": {"per_channel": False},
    "per-tensor+cle": {"per_channel": False, "algorithms": ["cle"]},
    "w4a8": {"weight_bits": 4},
    "w4a8+adaround": {"weight_bits": 4, "algorithms": ["adaround"]},
    "ort-static": {"ort": "minmax"},
    # on request: CLE before AdaRound at 4 bits, judged after AdaRound (algorithms/judge_after.py)
    "w4a8+cle+adaround": {"weight_bits": 4, "algorithms": ["cle", "adaround"]},
    "accurate-w4": {"preset": "accurate", "weight_bits": 4},  # CLE, search, AdaRound, bias correction
    # not in the default --settings (run on effnet_lite0): weight-only int4, ORT's other calibrations
    "weight-only-int4": {"preset": "weight-only-int4"},
    "default+adaround": {"algorithms": ["adaround"]},  # AdaRound at 8 bits
    "w4a8+brecq": {"weight_bits": 4, "algorithms": ["brecq"]},  # AdaRound, then block reconstruction
    # mixed 4/8, not pure W4A8 (weight_8bit under static, planning/mixed.py): the first and last compute
    # layers' weights 8-bit, as the PTQ papers' W4A8 results keep them; then also blocks.0's depthwise conv
    "w4a8+adaround+w8-first-last": {
        "weight_bits": 4,
        "algorithms": ["adaround"],
        "weight_8bit": ["first", "last"],
    },
    "w4a8+adaround+w8-first-last-dw0": {
        "weight_bits": 4,
        "algorithms": ["adaround"],
        "weight_8bit": ["first", "last", "re:/_blocks\\.0/_depthwise_conv/.*"],
    },
    # mixed 4/8 by hand from the README's per-layer numbers (each layer alone rounded to nearest at 4 bits):
    # the stem, the depthwise convs of blocks 0-2, the project convs that end a stage without a residual
    "w4a8+adaround+w8-sensitive": {
        "weight_bits": 4,
        "algorithms": ["adaround"],
        "weight_8bit": [
            "first",
            "re:/_blocks\\.[0-2]/_depthwise_conv/.*",
            "re:/_blocks\\.(0|1|3|5|8|11)/_project_conv/.*",
        ],
    },
    # mixed 4/8 chosen by EdgeQuant (weight_8bit auto: at most 5 of the 50 layers, by measured output-SQNR gain)
    "w4a8+adaround+w8-auto": {"weight_bits": 4, "algorithms": ["adaround"], "weight_8bit": ["auto"]},
    # AdaRound's x~ (issue 17 §3, session 11; algorithms/adaround_acts.py): "constants" sets module constants
    # in the worker before quantizing. float-acts: x~ with float activations (before session 11); act-quant:
    # x~ with the plan's activations fake-quantized (AIMET-style); qdrop: each element of x~ float with
    # probability 0.5 (QDrop); x4 / x0.5: MAC_BUDGET and ITERATIONS x4 / x0.5
    "w4a8+adaround-float-acts": _ada(0, 0.0),
    "w4a8+adaround-act-quant": _ada(4, 0.0),
    "w4a8+adaround-qdrop": _ada(4, 0.5),
    "w4a8+adaround-float-acts-x4": _ada(0, 0.0, budget=4),
    "w4a8+adaround-float-acts-x0.5": _ada(0, 0.0, budget=0.5),
    "w4a8+adaround-act-quant-x4": _ada(4, 0.0, budget=4),
    "w4a8+adaround-qdrop-x4": _ada(4, 0.5, budget=4),
    "w4a8+adaround-act-quant+w8-first-last": _ada(4, 0.0, w8=["first", "last"]),
    "w4a8+adaround-qdrop+w8-first-last": _ada(4, 0.5, w8=["first", "last"]),
    # AdaRound's error after the activation for layers read only by a Relu/Clip (issue 17 §3, session 12;
    # algorithms/adaround_post.py): the bias then fitted to that error, or (-mean) the pre-activation mean shift
    "w4a8+adaround-post": {"weight_bits": 4, "algorithms": ["adaround"], "constants": _post(True, True)},
    "w4a8+adaround-post-mean": {
        "weight_bits": 4,
        "algorithms": ["adaround"],
        "constants": _post(True, False),
    },
    "w4a8+adaround-post-early": {  # only the stem and blocks 0-2 (EfficientNet-Lite0's names)
        "weight_bits": 4,
        "algorithms": ["adaround"],
        "constants": _post(True, True, ("/_conv_stem/", "/_blocks.0/", "/_blocks.1/", "/_blocks.2/")),
    },
    # rows from all 16 calibration batches (128 photos' crops), not only the batches the Gram form streams
    "w4a8+adaround-post-all": {
        "weight_bits": 4,
        "algorithms": ["adaround"],
        "constants": _post(True, True, batches=16),
    },
    # the Gram form (no post) with every layer's statistics from all 16 calibration batches (no row cap)
    "w4a8+adaround-all-rows": {
        "weight_bits": 4,
        "algorithms": ["adaround"],
        "constants": {"edgequant.algorithms.adaround.ROWS_PER_INPUT": 10**9},
    },
    "ort-static-entropy": {"ort": "entropy"},
    "ort-static-percentile": {"ort": "percentile"},
    # per-tensor weights with the recovery passes (issue 17 §2, run on effnet_lite0)
    "per-tensor+cle+bc": {
        "per_channel": False,
        "algorithms": ["cle", "bias_correction"],
        "bias_correction_variant": "sequential",
    },
    "per-tensor+adaround": {"per_channel": False, "algorithms": ["adaround"]},  # AdaRound at 8 bits
    "per-tensor+cle_bounds": {"per_channel": False, "algorithms": ["cle_bounds"]},
    "per-tensor+cle_bounds+adaround": {"per_channel": False, "algorithms": ["cle_bounds", "adaround"]},
    "per-tensor+cle_bounds+bc": {
        "per_channel": False,
        "algorithms": ["cle_bounds", "bias_correction"],
        "bias_correction_variant": "sequential",
    },
}
DEFAULT_SETTINGS = list(SETTINGS)[:7]
CALIB, HELD, CHECK = 128, 32, 32  # calibration, the samples that judge the passes, the check's
LATENCY_RUNS: tuple[int, int] | None = None  # (runs per round, rounds) when --latency is given


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _cpu_s() -> float:
    """CPU seconds of every thread of this interpreter and of its finished children (ORT sessions run
    in child processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One quantization in this interpreter; returns time, peak memory and EdgeQuant's report parts."""
    setting = dict(SETTINGS[spec["setting"]])
    t0 = time.perf_counter()
    cpu0 = _cpu_s()
    out: dict[str, Any] = {}
    for key, value in setting.pop("constants", {}).items():  # module constants of a measured variant
        module, attr = key.rsplit(".", 1)
        setattr(importlib.import_module(module), attr, value)
    calib = setting.pop("ort", "")
    if calib:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        x = np.load(spec["data"])[:CALIB]

        class Reader(CalibrationDataReader):  # type: ignore[misc]
            def __init__(self) -> None:
                self.it = iter(range(0, len(x), 8))

            def get_next(self) -> dict[str, np.ndarray] | None:
                i = next(self.it, None)
                return None if i is None else {spec["input"]: x[i : i + 8]}

        quantize_static(
            spec["model"], spec["out"], Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method={
                "minmax": CalibrationMethod.MinMax,
                "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile,
            }[calib],
        )  # fmt: skip
    else:
        import edgequant

        preset = setting.pop("preset", None)
        if not str(preset).startswith("weight-only"):  # weight-only reads no calibration: refused there
            setting["calib_samples"] = CALIB
        res = edgequant.quantize(spec["model"], spec["data"], preset, **setting)
        Path(spec["out"]).write_bytes(res.model.SerializeToString())
        out["seconds"] = {k: round(v, 2) for k, v in res.report["seconds"].items()}
        out["passes"] = [
            {
                k: r.get(k)
                for k in ("pass", "seconds", "sqnr_before_db", "sqnr_after_db", "reverted", "judged_after")
            }
            for r in res.report.get("algorithms", [])
        ]
        out["file_kib"] = round(Path(spec["out"]).stat().st_size / 1024, 1)
        mixed = [n for n in res.plan.notes if n.startswith("mixed ")]
        if "weight_8bit" in res.report:  # the automatic choice: every candidate's gain, bits and why
            out["weight_8bit"] = res.report["weight_8bit"]
        if mixed:  # which weights are 8-bit, their share, and the file size (weights dominate it)
            out["note"] = f"{mixed[0]} File {Path(spec['out']).stat().st_size / 1024:.0f} KiB"
        search = (res.report.get("calibration") or {}).get("search")
        if search:
            out["search"] = search
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    out["cpu_s"] = round(_cpu_s() - cpu0, 1)
    out["peak_mib"] = round(_peak_mib(), 1)
    return out


def latency(files: dict[str, Path], feed: dict[str, np.ndarray], runs: int, rounds: int) -> dict[str, float]:
    """Median ms per run at batch 1 on 1 intra-op thread with spinning off, sessions timed interleaved:
    every session is created and warmed up first, then each round times ``runs`` runs of each in turn."""
    from models.harness import latency_ms

    ms = latency_ms(files, feed, threads=1, runs=runs * rounds, rounds=rounds, warmup=3, spinning=False)
    return {k: round(v, 3) for k, v in ms.items()}


def bench_model(name: str, settings: list[str], tmp: Path, timeout: float) -> dict[str, Any]:
    import models
    import onnxruntime as ort
    from models import resnet

    bm = resnet.make(name, 112) if name.startswith("resnet") else models.load(name)
    feeds = bm.make_calib(CALIB + HELD + CHECK, 0)
    (input_name, x), *rest = feeds.items()
    if rest:
        raise SystemExit(f"{name}: one model input expected")
    data = tmp / f"{name}.npy"
    np.save(data, x)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1

    def runner(path: str) -> Any:
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        return lambda f: dict(zip([o.name for o in sess.get_outputs()], sess.run(None, f), strict=True))

    ref = bm.predict(runner(str(bm.path)))
    rows: dict[str, Any] = {
        "model": bm.title,
        "source": bm.source,
        "float": bm.metrics(ref, ref),
        "settings": {},
    }
    for setting in settings:
        out = tmp / f"{name}_{setting}.onnx"
        spec = {
            "setting": setting,
            "model": str(bm.path),
            "data": str(data),
            "out": str(out),
            "input": input_name,
        }
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(spec)],
                capture_output=True, text=True, timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            rows["settings"][setting] = {"status": f"timeout after {timeout:.0f} s"}
            continue
        if proc.returncode != 0:
            rows["settings"][setting] = {"status": "failed: " + proc.stderr.strip().splitlines()[-1][:300]}
            continue
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        got = bm.predict(runner(str(out)))
        info.update(status="ok", sqnr_db=round(bm.output_sqnr(ref, got), 2), **bm.metrics(ref, got))
        rows["settings"][setting] = info
        print(name, setting, {k: v for k, v in info.items() if k not in ("passes", "search")}, flush=True)
    if LATENCY_RUNS:
        files = {"float": bm.path} | {
            s: tmp / f"{name}_{s}.onnx" for s, v in rows["settings"].items() if v["status"] == "ok"
        }
        ms = latency(files, bm.latency_feed(), *LATENCY_RUNS)
        rows["latency"] = {
            "float_ms": ms["float"],
            "load": Path("/proc/loadavg").read_text().split()[:3],
            "how": f"batch 1, 1 intra-op thread, spinning off, {LATENCY_RUNS[1]} interleaved rounds x "
            f"{LATENCY_RUNS[0]} runs, median",
        }
        for s in files:
            if s != "float":
                rows["settings"][s].update(ms=ms[s], speed_vs_float=round(ms["float"] / ms[s], 2))
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Accuracy-recovery passes vs ONNX Runtime's quantize_static",
        "",
        "Written by `benchmarks/bench_algorithms.py`. 192 seeded samples: EdgeQuant's check holds back 32,",
        "it calibrates on 128 of the others, and the 32 after those judge its passes (SQNR before -> after;",
        "'reverted': lower by more than 0.05 dB, undone) and score its search; ORT's tool reads the first 128.",
        "Metrics on each model's separate evaluation set. Wall time and peak RSS per quantization in its own",
        "interpreter, on a shared 2-core machine with other jobs running (noisy).",
        "",
    ]
    for name, r in results.items():
        metric = [k for k in r["float"] if k != "status"]
        lines += [f"## {name}: {r['model']}", "", f"float: {r['float']}", ""]
        lat = r.get("latency")
        if lat:
            lines += [f"Latency: float {lat['float_ms']} ms; {lat['how']}; load average {lat['load']}.", ""]
        if r.get("not_run"):
            lines += [
                f"Not run here (AdaRound's time on this model's large layers): {', '.join(r['not_run'])}",
                "",
            ]
        lines += [
            "| setting | output SQNR dB | "
            + " | ".join(metric)
            + " | wall s (CPU s) | peak MiB |"
            + (" ms (x float) |" if lat else "")
            + " passes (s, SQNR before -> after) |",
            "|---|---|" + "---|" * len(metric) + "---|---|" + ("---|" if lat else "") + "---|",
        ]
        for s, v in r["settings"].items():
            if v.get("status") != "ok":
                lines.append(f"| {s} | {v.get('status')} |" + " |" * (len(metric) + 3 + bool(lat)))
                continue
            passes = "; ".join(
                f"{p['pass']} {p['seconds']} s, {p['sqnr_before_db']} -> {p['sqnr_after_db']}"
                + (
                    f" ({p['judged_after']})"
                    if p.get("judged_after")
                    else " reverted"
                    if p.get("reverted")
                    else ""
                )
                for p in v.get("passes", [])
            )
            if "search" in v:
                passes += ("; " if passes else "") + f"search chose {v['search']['chosen']}"
            if v.get("note"):  # e.g. a row kept from an earlier run
                passes += ("; " if passes else "") + v["note"]
            vals = " | ".join(f"{v.get(k, float('nan')):.{4 if k.startswith('kl') else 3}f}" for k in metric)
            speed = (f" {v['ms']} ({v['speed_vs_float']}x) |" if "ms" in v else " not timed |") if lat else ""
            cpu = f" ({v['cpu_s']})" if "cpu_s" in v else ""
            lines.append(
                f"| {s} | {v['sqnr_db']} | {vals} | {v['wall_s']}{cpu} | {v['peak_mib']} |{speed} {passes} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--models", default="shapes,ocr_cls,resnet18,ocr_rec")
    ap.add_argument("--settings", default=",".join(DEFAULT_SETTINGS), help=f"of {', '.join(SETTINGS)}")
    ap.add_argument("--latency", help="RUNS,ROUNDS: time float and every model written, interleaved")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--skip", default="ocr_rec:w4a8+adaround", help="MODEL:SETTING pairs not run")
    ap.add_argument("--merge", action="store_true", help="replace only the rows run in the existing results")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_algorithms"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    global LATENCY_RUNS
    if args.latency:
        runs, rounds = (int(v) for v in args.latency.split(","))
        LATENCY_RUNS = (runs, rounds)
    results: dict[str, Any] = {}
    if args.merge and Path(args.out + ".json").exists():
        results = json.loads(Path(args.out + ".json").read_text())
    with tempfile.TemporaryDirectory(prefix="bench-algorithms-") as tmp:
        for name in args.models.split(","):
            skip = {p.split(":")[1] for p in args.skip.split(",") if p.startswith(name + ":")}
            settings = [s for s in args.settings.split(",") if s not in skip]
            rows = bench_model(name, settings, Path(tmp), args.timeout)
            if args.merge and name in results:
                results[name]["settings"].update(rows["settings"])
                if "latency" in rows:
                    results[name]["latency"] = rows["latency"]
                results[name]["not_run"] = sorted(set(results[name].get("not_run", [])) & skip)
            else:
                results[name] = {**rows, "not_run": sorted(skip)}
            Path(args.out + ".json").write_text(json.dumps(results, indent=1))
            Path(args.out + ".md").write_text(markdown(results))


if __name__ == "__main__":
    main()
