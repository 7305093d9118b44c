"""Silero VAD (issue #16 §4): which static per-channel recipe reaches frame agreement >= 0.99 on every
clip, for every calibration draw.

Calibration draws: vad.py's calibration protocol (the (frame, state) pairs the float model sees streaming
audio of seed s) for s = 0..3, at 160 frames (bench_recurrent.py's amount) and at 800.  Scoring:
``vad_analysis.Clips`` (vad.py's evaluation clip and seeds 778-780, 3,832 frames; each model streams its
own state): agreement of the p > 0.5 decision with float per clip, the worst clip, pooled, SQNR of p.

Recipes (``edgequant.quantize(model, frames, "int8-static", **kwargs)``, as a user would call it; a pass
the judge reverts is reverted here too and said in the table):
    default            static int8, per-channel weights
    adaround           + AdaRound on the 8-bit weights (``--algorithm adaround``)
    act16 <x> dB       + 16-bit activations where the 8-bit grid's own SQNR is below x (``--act16-below-db``)
    bias correction    + sequential bias correction (``--algorithm bias_correction``)
    accurate           the ``accurate`` preset
    w8a16 ...          ``--act-bits 16`` (every activation 16-bit), alone / + bias correction / + AdaRound
    ..., kept          the same with ``--keep-worse-passes`` (a pass the judge would revert is kept).  The judge
                       streams the 32 held-back frames (runs of consecutive frames, each model on its own
                       state: algorithms/judge.py); before it did (one step per frame, each fed the float
                       model's state), it reverted AdaRound where it helps the stream, and the recipe needed
                       the key
Speed (``speed``): float, the default and examples/recipe_streaming.yaml (w8a16 + AdaRound), ORT CPU,
spinning off, interleaved rounds, median ms at 1 and 2 threads.

    nice -n 5 .venv/bin/python benchmarks/vad_recipes.py   # -> results/vad_recipes.{md,json}
    nice -n 5 .venv/bin/python benchmarks/vad_recipes.py --speed-only   # only the speed table again
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_recurrent
import numpy as np
import onnx
import vad_analysis
from models import vad

import edgequant

RESULTS = Path(__file__).resolve().parent / "results"
DRAWS = (0, 1, 2, 3)
CHECK = 32  # samples the run check holds back (edgequant's default check_samples)
ADA = ["adaround"]
BC = ["bias_correction"]
RECIPES: dict[int, dict[str, dict[str, Any]]] = {  # calibration frames -> {label: quantize kwargs}
    160: {
        "default": {},
        "adaround": {"algorithms": ADA},
        "act16 30 dB": {"act16_below_db": 30.0},
        "act16 40 dB": {"act16_below_db": 40.0},
        "bias correction": {"algorithms": BC},
        "accurate": {"recipe": "accurate"},
        "w8a16": {"act_bits": 16},
        "w8a16 + bias correction": {"act_bits": 16, "algorithms": BC},
        "w8a16 + adaround": {"act_bits": 16, "algorithms": ADA},
        "w8a16 + adaround, kept": {"act_bits": 16, "algorithms": ADA, "keep_worse_passes": True},
    },
    800: {
        "default": {},
        "adaround": {"algorithms": ADA},
        "adaround, kept": {"algorithms": ADA, "keep_worse_passes": True},
        "w8a16 + bias correction": {"act_bits": 16, "algorithms": BC},
        "w8a16 + adaround": {"act_bits": 16, "algorithms": ADA},
        "w8a16 + adaround, kept": {"act_bits": 16, "algorithms": ADA, "keep_worse_passes": True},
    },
}
STREAMING = Path(__file__).resolve().parents[1] / "examples" / "recipe_streaming.yaml"


def run(frames: int, seed: int, label: str, kw: dict[str, Any], clips: vad_analysis.Clips,
        tmp: Path) -> dict[str, Any]:  # fmt: skip
    """One recipe on one calibration draw: scores, passes kept or reverted, 16-bit tensors, seconds."""
    c = vad._calib(frames, seed)
    feeds = [{"input": c["input"][i], "state": c["state"][i]} for i in range(frames)]
    kw = dict(kw)
    recipe = kw.pop("recipe", "int8-static")
    t0 = time.perf_counter()
    res = edgequant.quantize(str(vad.model_path()), feeds, recipe, calib_samples=frames - CHECK, **kw)
    sec = time.perf_counter() - t0
    path = tmp / f"vad_{frames}_{seed}_{label.replace(' ', '_')}.onnx"
    onnx.save(res.model, str(path))
    passes = [
        f"{a['pass']}: {a['reverted'].split(' on ')[0] if a.get('reverted') else 'kept'}"
        for a in res.report.get("algorithms", [])
    ]
    a16 = sum(e.role == "activation" and e.spec.bits == 16 for e in res.plan.tensors.values())
    return {"frames": frames, "seed": seed, "recipe": label, **clips.score(vad_analysis.runner(path)),
            "passes": passes, "act16_tensors": a16, "seconds": sec}  # fmt: skip


def markdown(res: dict[str, Any]) -> str:
    lines = ["# Silero VAD: static per-channel recipes across calibration draws (issue #16 §4)", "",
             f"`benchmarks/vad_recipes.py`; {res['machine']}", "", *([res["note"], ""] if res.get("note") else []),
             "Frame agreement with float (p > 0.5) per clip (777 / 778 / 779 / 780, 3,832 frames), each model "
             "streaming its own state; calibration draw s = the (frame, state) pairs of seed-s audio streamed by "
             "the float model (vad.py).  Goal: worst clip >= 0.99 on every draw.", "",
             "| calibration frames | recipe | draw | agreement per clip | worst | pooled | SQNR of p (dB) | passes | 16-bit activations | quantize s |",
             "|---:|---|---:|---|---:|---:|---:|---|---:|---:|"]  # fmt: skip
    for r in res["rows"]:
        clips = " / ".join(f"{a:.4f}" for a in r["clips"])
        lines.append(f"| {r['frames']} | {r['recipe']} | {r['seed']} | {clips} | {r['worst']:.4f} | {r['pooled']:.4f} | "
                     f"{r['sqnr_db']:.1f} | {', '.join(r['passes']) or '-'} | {r['act16_tensors']} | {r['seconds']:.0f} |")  # fmt: skip
    lines += ["", "Summary: worst clip per draw (0 / 1 / 2 / 3) and the lowest over the draws:", "",
              "| calibration frames | recipe | worst clip per draw | lowest | >= 0.99 on every draw |", "|---:|---|---|---:|---|"]  # fmt: skip
    for s in res["summary"]:
        per = " / ".join(f"{w:.4f}" for w in s["worst"])
        lines.append(f"| {s['frames']} | {s['recipe']} | {per} | {min(s['worst']):.4f} | {'yes' if min(s['worst']) >= 0.99 else 'no'} |")  # fmt: skip
    lat = res.get("latency", {})
    if lat:
        lines += ["", f"Speed (`speed()`: draw 0 models; ORT CPU, spinning off, {lat['runs']} interleaved rounds, median ms; "
                  f"{lat['machine']}):", "", *([lat["before"], ""] if lat.get("before") else []),
                  "| model | calibration frames | worst clip | pooled | KiB | ms 1 thr | vs float | ms 2 thr | vs float |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for k in lat["1"]:
            m = lat["models"][k]
            acc = f"{m['frames']} | {m['worst']:.4f} | {m['pooled']:.4f}" if "worst" in m else "- | 1 | 1"
            lines.append(f"| {k} | {acc} | {m['kib']:.0f} | {lat['1'][k]:.3f} | {lat['1']['float'] / lat['1'][k]:.2f}x | "
                         f"{lat['2'][k]:.3f} | {lat['2']['float'] / lat['2'][k]:.2f}x |")  # fmt: skip
    return "\n".join(lines) + "\n"


def speed(tmp: Path, runs: int, clips: vad_analysis.Clips) -> dict[str, Any]:
    """Float beside: the default (160 frames, draw 0) and examples/recipe_streaming.yaml (800 frames, draw 0),
    both with the LSTM's weights float (static int8 keeps them so: no DequantizeLinear of 2 x 64 K weights per
    call; before that change, ``--exclude LSTM`` did it); each file's size and scores, then interleaved
    latency at 1 and 2 threads."""
    feed = {"input": vad.frames(vad._eval_audio()[0])[10][None], "state": np.zeros((2, 1, 128), np.float32)}
    paths: dict[str, Path] = {"float": vad.model_path()}
    out: dict[str, Any] = {"models": {"float": {"kib": vad.model_path().stat().st_size / 1024}}, "runs": runs}
    cases = (("default", 160, "int8-static", {"calib_samples": 160 - CHECK}),
             ("--recipe examples/recipe_streaming.yaml", 800, str(STREAMING), {}))  # fmt: skip
    for label, frames, recipe, kw in cases:
        c = vad._calib(frames, 0)
        feeds = [{"input": c["input"][i], "state": c["state"][i]} for i in range(frames)]
        res = edgequant.quantize(str(vad.model_path()), feeds, recipe, **kw)
        paths[label] = tmp / f"speed_{len(paths)}.onnx"
        onnx.save(res.model, str(paths[label]))
        m = clips.score(vad_analysis.runner(paths[label]))
        out["models"][label] = {"kib": paths[label].stat().st_size / 1024, "frames": frames,
                                "worst": m["worst"], "pooled": m["pooled"]}  # fmt: skip
    for th in (1, 2):
        out[str(th)] = bench_recurrent.latency(paths, feed, th, runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--speed-only", action="store_true", help="re-measure only the latency table")
    a = ap.parse_args()
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    clips = vad_analysis.Clips(bench_recurrent.MORE_SEEDS)

    def machine() -> str:
        return (f"{os.cpu_count()} cores shared with other jobs, total {time.perf_counter() - t0:.0f} s, "
                f"load average {load0:.1f} at start / {os.getloadavg()[0]:.1f} at end")  # fmt: skip

    with tempfile.TemporaryDirectory() as d:
        if a.speed_only:
            res = json.loads((RESULTS / "vad_recipes.json").read_text())
            res["latency"] = speed(Path(d), a.runs, clips)
            res["latency"]["machine"] = machine()
        else:
            rows: list[dict[str, Any]] = []
            for frames, recipes in RECIPES.items():
                for seed in DRAWS:
                    for label, kw in recipes.items():
                        rows.append(run(frames, seed, label, kw, clips, Path(d)))
                        r = rows[-1]
                        print(f"{frames} | {label} | {seed} | worst {r['worst']:.4f} | {r['sqnr_db']:.1f} dB | "
                              f"{r['passes']} | {r['seconds']:.0f} s", flush=True)  # fmt: skip
            summary = [{"frames": f, "recipe": label, "worst": [r["worst"] for r in rows if r["frames"] == f and r["recipe"] == label]}
                       for f, recipes in RECIPES.items() for label in recipes]  # fmt: skip
            res = {"rows": rows, "summary": summary, "machine": machine()}
            res["latency"] = speed(Path(d), a.runs, clips)
            res["latency"]["machine"] = machine()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vad_recipes.json").write_text(json.dumps(res, indent=1, default=float))
    (RESULTS / "vad_recipes.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
