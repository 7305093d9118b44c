"""W4A8 + AdaRound on EfficientNet-Lite0 over several calibration draws (issue 17 §3, "aim for KL <= 0.1").

One draw is not evidence here: which calibration rows are used moves the mean KL by 0.02-0.03 on this model
(README, W4A8 section).  This script quantizes the same model with the same settings from several draws of
the same data maker and reports each draw and the mean +- sample standard deviation.

A draw is ``effnet.make_calib(192, seed)``: 192 seeded random crops cycling through the 11 calibration
photos (benchmarks/models/effnet.py); seed 0 is the draw of ``bench_algorithms.py``.  As there, EdgeQuant's
check holds back 32 samples (evenly spread), it calibrates on the first 128 of the others, and the 32 after
those judge its passes.  Every draw is scored on the same evaluation set (416 crops of 13 other photos,
seed 4321), which calibration never sees: mean KL(float || quantized) of the softmax, top-1 agreement with
float, output SQNR of the logits.  Each quantization runs in its own interpreter through
``bench_algorithms.py --worker`` (same settings table, ``SETTINGS``); its wall and CPU seconds (the
interpreter's threads and its ORT children) and the 1-minute load average before and after are recorded:
the machine has 2 cores shared with other jobs, so times are noisy.

    nice -n 5 .venv/bin/python benchmarks/bench_w4a8_draws.py             # -> results/bench_w4a8_draws.*
    nice -n 5 .venv/bin/python benchmarks/bench_w4a8_draws.py --seeds 1 --merge   # add one draw's rows
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_algorithms as ba

MODEL = "effnet_lite0"
DEFAULT_SETTINGS = "w4a8+adaround,w4a8+adaround+w8-sensitive"
METRICS = ("kl_mean", "top1_agree", "sqnr_db", "cpu_s", "wall_s")
OUT = Path(__file__).resolve().parent / "results" / "bench_w4a8_draws"


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def head() -> str:
    """The worktree's commit: the code a worker started now imports (editable install)."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def run_one(
    bm: Any, ref: dict[str, np.ndarray], setting: str, data: Path, tmp: Path, timeout: float
) -> dict[str, Any]:
    """One quantization of ``bm`` from the draw in ``data`` in a fresh interpreter, scored against ``ref``."""
    import onnxruntime as ort

    out = tmp / f"{setting}.onnx"
    spec = {"setting": setting, "model": str(bm.path), "data": str(data), "out": str(out), "input": "image"}
    row: dict[str, Any] = {
        "load_before": load1(),
        "started_utc": time.strftime("%H:%M", time.gmtime()),
        "commit": head(),
    }
    try:
        proc = subprocess.run(
            [sys.executable, ba.__file__, "--worker", json.dumps(spec)],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return row | {"status": f"timeout after {timeout:.0f} s", "load_after": load1()}
    row["load_after"] = load1()
    if proc.returncode != 0:
        return row | {"status": "failed: " + proc.stderr.strip().splitlines()[-1][:300]}
    row |= json.loads(proc.stdout.strip().splitlines()[-1])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = bm.predict(lambda f: dict(zip(names, sess.run(None, f), strict=True)))
    return row | {"status": "ok", "sqnr_db": round(bm.output_sqnr(ref, got), 2), **bm.metrics(ref, got)}


def summary(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean, sample standard deviation (n - 1), min and max of each metric over the draws that ran."""
    ok = [r for r in rows.values() if r.get("status") == "ok"]
    out: dict[str, Any] = {"n": len(ok)}
    for k in METRICS:
        v = np.array([r[k] for r in ok], np.float64)
        if len(v):
            sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
            out[k] = {"mean": float(v.mean()), "sd": sd, "min": float(v.min()), "max": float(v.max())}
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# W4A8 + AdaRound on EfficientNet-Lite0 over calibration draws (issue 17 §3)",
        "",
        "Written by `benchmarks/bench_w4a8_draws.py`. Each draw: `effnet.make_calib(192, seed)` (seeded crops",
        "of the 11 calibration photos; seed 0 is `bench_algorithms.py`'s draw)"
        + (
            " -- here `effnet_lite0_wide`'s: crops cycling through 42 photos, the 11 and 31 more (models/effnet_wide.py)"
            if res.get("model") == "effnet_lite0_wide"
            else ""
        )
        + "; EdgeQuant's check holds back 32,",
        "it calibrates on 128, the next 32 judge its passes. Scored on the same 416 evaluation crops of 13 other",
        "photos (never seen by calibration) against float: mean KL(float || quantized) of the softmax (nats),",
        "top-1 agreement, output SQNR. One quantization at a time, `nice -n 5`, on 2 cores shared with other",
        "jobs (1-minute load before -> after each run); `code`: the commit the run's worker imported.",
        "",
    ]
    for setting, block in res["settings"].items():
        cfg = ba.SETTINGS[setting]
        lines += [f"## {setting}", "", f"Setting: `{json.dumps(cfg)}`", ""]
        lines += [
            "| seed | KL | top-1 agreement | SQNR dB | wall s (CPU s) | peak MiB | AdaRound pass s | load | started UTC | code |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for seed, r in sorted(block["draws"].items(), key=lambda kv: int(kv[0])):
            if r.get("status") != "ok":
                lines.append(f"| {seed} | {r.get('status')} | | | | | | | | |")
                continue
            pass_s = "; ".join(f"{p['seconds']}" for p in r.get("passes", []))
            lines.append(
                f"| {seed} | {r['kl_mean']:.4f} | {100 * r['top1_agree']:.1f} % | {r['sqnr_db']:.2f} | "
                f"{r['wall_s']:.0f} ({r['cpu_s']:.0f}) | {r['peak_mib']:.0f} | {pass_s} | "
                f"{r['load_before']:.1f} -> {r['load_after']:.1f} | {r['started_utc']} | {r.get('commit', '')} |"
            )
        s = block["summary"]
        if s["n"]:
            f = {"kl_mean": ".4f", "top1_agree": ".3f", "sqnr_db": ".2f", "cpu_s": ".0f", "wall_s": ".0f"}
            cells = [
                f"{k} {s[k]['mean']:{f[k]}} ± {s[k]['sd']:{f[k]}} ({s[k]['min']:{f[k]}}–{s[k]['max']:{f[k]}})"
                for k in METRICS
            ]
            lines += ["", f"Mean ± sample sd (min–max) over {s['n']} draws: " + "; ".join(cells) + ".", ""]
        if block.get("note"):
            lines += [block["note"], ""]
    return "\n".join(lines + paired(res))


def paired(res: dict[str, Any]) -> list[str]:
    """KL of each later setting minus the first setting's, draw by draw (same draws), mean +- sample sd."""
    blocks = list(res["settings"].items())
    if len(blocks) < 2:
        return []
    base, b0 = blocks[0]
    out = ["## Paired by draw: KL minus " + base, ""]
    for setting, block in blocks[1:]:
        seeds = sorted(
            (
                k
                for k, r in block["draws"].items()
                if r.get("status") == "ok" and b0["draws"].get(k, {}).get("status") == "ok"
            ),
            key=int,
        )
        d = np.array([block["draws"][k]["kl_mean"] - b0["draws"][k]["kl_mean"] for k in seeds])
        if len(d) > 1:
            per = ", ".join(f"seed {k} {v:+.4f}" for k, v in zip(seeds, d, strict=True))
            out += [
                f"- {setting}: {per}; mean {d.mean():+.4f} ± {d.std(ddof=1):.4f} over {len(d)} draws.",
                "",
            ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2,3,4", help="calibration draws (effnet.make_calib seeds)")
    ap.add_argument(
        "--settings", default=DEFAULT_SETTINGS, help="comma-separated names of bench_algorithms.SETTINGS"
    )
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument(
        "--model", default=MODEL, choices=(MODEL, "effnet_lite0_wide"), help="whose make_calib draws"
    )
    ap.add_argument("--out", default=str(OUT), help="results path without suffix (.json and .md are written)")
    ap.add_argument("--merge", action="store_true", help="keep the other rows of the existing results file")
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from the existing .json")
    args = ap.parse_args()
    out = Path(args.out)
    if args.render:
        out.with_suffix(".md").write_text(markdown(json.loads(out.with_suffix(".json").read_text())))
        return
    settings = args.settings.split(",")
    unknown = [s for s in settings if s not in ba.SETTINGS]
    if unknown:
        ap.error(f"unknown setting(s) {', '.join(unknown)}; fix: choose from {', '.join(ba.SETTINGS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    import models
    import onnxruntime as ort

    res: dict[str, Any] = {"model": args.model, "settings": {}}
    if args.merge and out.with_suffix(".json").exists():
        res = json.loads(out.with_suffix(".json").read_text())
    bm = models.load(args.model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(bm.path), so, providers=["CPUExecutionProvider"])
    ref = bm.predict(lambda f: dict(zip(["logits"], sess.run(None, f), strict=True)))
    with tempfile.TemporaryDirectory(prefix="bench-w4a8-draws-") as tmp:
        for setting in settings:
            block = res["settings"].setdefault(setting, {"draws": {}})
            for seed in seeds:
                data = Path(tmp) / f"{args.model}_seed{seed}.npy"
                if not data.exists():
                    np.save(data, bm.make_calib(ba.CALIB + ba.HELD + ba.CHECK, seed)["image"])
                row = run_one(bm, ref, setting, data, Path(tmp), args.timeout)
                block["draws"][str(seed)] = row
                block["summary"] = summary(block["draws"])
                print(setting, seed, {k: row.get(k) for k in ("status", *METRICS)}, flush=True)
                out.with_suffix(".json").write_text(json.dumps(res, indent=1))
                out.with_suffix(".md").write_text(markdown(res))


if __name__ == "__main__":
    main()
