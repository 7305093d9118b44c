"""Bias correction on real models: none, the empirical variant, the sequential variant (the default).

Per model (``shapes`` example CNN, ``ocr_cls`` PP-OCR mobile cls, ``ocr_rec`` PP-OCRv4 rec (conv +
attention, CTC), ``vad`` Silero VAD (conv + LSTM, state in/out); see benchmarks/models/), each setting
quantizes static int8 (the default recipe: per-channel weights, 'auto' ranges) from the same 192 seeded
calibration samples written to disk (its check holds back 32, evenly spread; EdgeQuant calibrates on the
first 128 of the others; the 32 after them judge each pass, which is reverted when it lowers their output
SQNR by more than 0.05 dB: ``algorithms.base``):

    none         no bias correction
    empirical    --bias-correction with bias_correction_variant: empirical (every layer's local shift at once)
    sequential   --bias-correction (layer by layer, earlier layers corrected; the default variant)
    accurate     --recipe accurate (CLE where the graph has pairs, the range search, sequential bias
                 correction; AdaRound only at 4 bits and below, so not here)

Each quantization runs in its own interpreter (``--worker``): wall time, the pass's own time, peak
resident set (VmHWM), and the pass's report row (output SQNR of the QDQ model before and after the pass
on the 32 held-out samples that judge it; "reverted" when the guard undid it).  Every model file is then scored on the model's evaluation set (another seed):
output SQNR against float and the task metric.  The machine is shared (2 cores, other jobs): times are
noisy.

    .venv/bin/python benchmarks/bench_bias_correction.py      # -> results/bench_bias_correction.{json,md}
    .venv/bin/python benchmarks/bench_bias_correction.py --models vad --settings none,sequential
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

SETTINGS: dict[str, dict[str, Any]] = {
    "none": {},
    "empirical": {"bias_correction": True, "bias_correction_variant": "empirical"},
    "sequential": {"bias_correction": True},
    "accurate": {"preset": "accurate"},  # CLE where there are pairs, range search, sequential bias correction
}
SAMPLES = 192  # written: the check holds back 32, calibration reads 128, the next 32 judge the passes
CALIB = 128


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One quantization in this interpreter: time, peak memory and the bias-correction row."""
    from models.common import DataFiles

    import edgequant

    data = DataFiles(Path(spec["data"]))
    batch = int(spec["batch"])
    setting = dict(SETTINGS[spec["setting"]])
    preset = setting.pop("preset", None)
    t0 = time.perf_counter()
    res = edgequant.quantize(
        spec["model"], lambda: data.batches(batch), preset, calib_samples=CALIB, batch_size=batch, **setting
    )  # fmt: skip
    wall = time.perf_counter() - t0
    Path(spec["out"]).write_bytes(res.model.SerializeToString())
    out: dict[str, Any] = {"wall_s": round(wall, 2), "peak_mib": round(_peak_mib(), 1)}
    out["passes"] = [
        {k: r.get(k) for k in ("pass", "seconds", "sqnr_before_db", "sqnr_after_db", "reverted")}
        for r in res.report.get("algorithms", [])
    ]
    search = (res.report.get("calibration") or {}).get("search")
    if search:
        out["search_chose"] = search.get("chosen")
    for row in res.report.get("algorithms", []):
        if row["pass"] != "bias_correction":
            continue
        section = res.report.get("bias_correction", {})
        out["pass"] = {
            "seconds": row["seconds"],
            "sqnr_before_db": row["sqnr_before_db"],
            "sqnr_after_db": row["sqnr_after_db"],
            "nodes_measured": section.get("nodes_measured"),
            "nodes_corrected": section.get("nodes_corrected"),
            "runs": section.get("runs"),
            "rejected_levels": len(section.get("rejected", [])),
            "reverted": bool(row.get("reverted")),
        }
    return out


def bench_model(name: str, settings: list[str], tmp: Path, timeout: float) -> dict[str, Any]:
    import models
    import onnxruntime as ort
    from models.common import DataFiles

    bm = models.load(name)
    data = DataFiles.write(tmp / name, bm.make_calib(SAMPLES, 0), bm.unbatched)
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
            "setting": setting, "model": str(bm.path), "data": str(data.folder), "out": str(out),
            "batch": bm.calib_batch,
        }  # fmt: skip
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
        print(name, setting, info, flush=True)
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Bias correction: none, empirical, sequential (static int8, per-channel, default 'auto' ranges)",
        "",
        "Written by `benchmarks/bench_bias_correction.py`. Calibration: 128 seeded samples; metrics on each",
        "model's separate evaluation set. 'pass' columns: the report row of the `bias_correction` pass (QDQ",
        "output SQNR before -> after on the 32 held-out samples after the calibration ones, which are not the",
        "check's; 'reverted': the pass lowered it by more than 0.05 dB and was undone), its own time. Wall",
        "time and peak RSS per quantization in its own interpreter, on a shared 2-core machine (noisy).",
        "",
    ]
    for name, r in results.items():
        metric = [k for k in r["float"] if k != "status" and not k.startswith("float_")]
        lines += [f"## {name}: {r['model']}", ""]
        lines += [
            "| setting | output SQNR dB | " + " | ".join(metric) + " | pass: held-out SQNR before -> after "
            "| nodes corrected | pass s | wall s | peak MiB |",
            "|---|---|" + "---|" * len(metric) + "---|---|---|---|---|",
        ]
        for s, v in r["settings"].items():
            if v.get("status") != "ok":
                lines.append(f"| {s} | {v.get('status')} |" + " |" * (len(metric) + 5))
                continue
            p = v.get("pass")
            sq = f"{p['sqnr_before_db']} -> {p['sqnr_after_db']}" if p else ""
            sq += " reverted" if p and p.get("reverted") else ""
            nodes = f"{p['nodes_corrected']} of {p['nodes_measured']}" if p else ""
            if p and p.get("rejected_levels"):
                nodes += f" ({p['rejected_levels']} levels undone)"
            others = [q for q in v.get("passes", []) if q["pass"] != "bias_correction"]
            if others or v.get("search_chose"):
                nodes += "; " + ", ".join(
                    [
                        f"{q['pass']} {q['sqnr_before_db']} -> {q['sqnr_after_db']} dB"
                        + (" reverted" if q.get("reverted") else "")
                        for q in others
                    ]
                    + ([f"search chose {v['search_chose']}"] if v.get("search_chose") else [])
                )
            vals = " | ".join(f"{v.get(k, float('nan')):.4f}" for k in metric)
            lines.append(
                f"| {s} | {v['sqnr_db']} | {vals} | {sq} | {nodes} | {p['seconds'] if p else ''} "
                f"| {v['wall_s']} | {v['peak_mib']} |"
            )
        lines += ["", f"float: {r['float']}", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--models", default="shapes,ocr_cls,vad,ocr_rec")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_bias_correction"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    path = Path(args.out + ".json")
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    with tempfile.TemporaryDirectory(prefix="bench-bias-") as tmp:
        for name in args.models.split(","):
            new = bench_model(name, args.settings.split(","), Path(tmp), args.timeout)
            if name in results:  # settings run before are kept, the ones run now replace theirs
                new["settings"] = {**results[name]["settings"], **new["settings"]}
            results[name] = new
            path.write_text(json.dumps(results, indent=1))
            Path(args.out + ".md").write_text(markdown(results))


if __name__ == "__main__":
    main()
