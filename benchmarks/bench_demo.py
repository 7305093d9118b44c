"""The README's first results table and its bias-correction figures, on the built-in example.

1. ``edgequant demo`` as a function: ``edgequant.evaluate.compare`` on ``examples/shapes_cnn.onnx`` with
   every method, ``shapes_calib.npz`` for calibration and the 512 labelled ``shapes_eval.npz`` samples,
   latency at batch 1 on 1 thread (median of ``--runs``), file and packed size in MiB (2**20 bytes), the
   recommendation and its rule.  Also what runs as what where nodes run no integer kernel (ONNX Runtime's
   optimised graph of the written model: dynamic runs one integer kernel, the Gemm head; weight-only
   stores integers and runs float kernels).
2. Bias correction (``--bias-correction``) on the example, w4a8 and int8 static, top-1 % with and without,
   on the same evaluation samples.

Writes ``benchmarks/results/bench_demo.md`` and ``.json`` (atomically, temp file then rename).

    .venv/bin/python benchmarks/bench_demo.py            # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import edgequant
from edgequant.evaluate import compare
from edgequant.runtime import OrtRuntime

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
RESULTS = Path(__file__).resolve().parent / "results"
MIB = 2.0**20


def top1(model: Any, x: np.ndarray, labels: np.ndarray) -> float:
    logits = OrtRuntime().run(model, {"image": x})["logits"]
    return float(100.0 * np.mean(logits.argmax(axis=1) == labels))


def demo_table(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        t0 = time.perf_counter()
        res = compare(
            EXAMPLES / "shapes_cnn.onnx", EXAMPLES / "shapes_calib.npz", EXAMPLES / "shapes_eval.npz",
            methods="all", max_drop=1.0, outdir=tmp, batch_size=1, threads=1, latency_runs=runs,
            measure_memory=False, top_k=0,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
    rows = []
    for m in res.methods:
        lat = (m.latency or {}).get("median_ms")
        rows.append({
            "method": m.method, "ok": m.ok, "error": m.error, "top1": m.score, "drop_pp": m.drop,
            "median_ms": lat, "file_mib": (m.file_bytes or 0) / MIB, "packed_mib": (m.packed_bytes or 0) / MIB,
            "within_limit": m.meets_limits, "coverage": m.coverage,
        })  # fmt: skip
    return {
        "rows": rows, "recommended": res.recommended, "reason": res.reason, "rule": res.rule,
        "seconds": round(seconds, 1),
    }  # fmt: skip


def bias_correction() -> list[dict[str, Any]]:
    ev = np.load(EXAMPLES / "shapes_eval.npz")
    x, labels = ev["image"], ev["labels"]
    model = str(EXAMPLES / "shapes_cnn.onnx")
    calib = str(EXAMPLES / "shapes_calib.npz")
    out = []
    for preset in ("w4a8", "int8-static"):
        plain = edgequant.quantize(model, calib, preset)
        corrected = edgequant.quantize(model, calib, preset, bias_correction=True)
        out.append({
            "preset": preset, "float_top1": top1(model, x, labels), "top1": top1(plain.model, x, labels),
            "top1_bias_corrected": top1(corrected.model, x, labels),
        })  # fmt: skip
    return out


def _f(v: Any, d: int = 2) -> str:
    return "-" if v is None else f"{v:.{d}f}"


def render(data: dict[str, Any]) -> str:
    d = data["demo"]
    lines = [
        "# bench_demo: the built-in example, every method (README 'Results')",
        "",
        f"`benchmarks/bench_demo.py --runs {data['runs']}` on {data['machine']}, {data['date']}; "
        f"demo part {d['seconds']} s. Latency: ORT CPU, batch 1, 1 thread, median of {data['runs']} runs, "
        "measured while other jobs shared the machine (noisy at this model size).",
        "",
        f"CPU: {data.get('cpu', 'not recorded')}. ONNX Runtime's int8 kernels depend on these flags, so the "
        "int8 top-1 figures below hold for this CPU kind (an AVX2 host without VNNI gave different ones).",
        "",
        "| method | top-1 % | drop (pp) | median ms (batch 1, 1 thread) | file MiB | packed MiB | within 1 pp |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in d["rows"]:
        if not r["ok"]:
            lines.append(f"| {r['method']} | failed: {r['error']} | | | | | |")
            continue
        name = r["method"] + (" (recommended)" if r["method"] == d["recommended"] else "")
        if r["coverage"]:
            notes.append(f"- {r['method']}: {r['coverage']}")
        lines.append(
            f"| {name} | {_f(r['top1'])} | {_f(r['drop_pp'])} | {_f(r['median_ms'], 3)} | {_f(r['file_mib'], 3)} "
            f"| {_f(r['packed_mib'], 3)} | {'yes' if r['within_limit'] or r['method'] == 'float' else 'no'} |"
        )
    lines += [
        "",
        "Top-1 is scored in batches of 32 (the evaluation default). dynamic-int8's top-1 depends on that size: "
        "its DynamicQuantizeMatMul computes its input's scale and zero point at each call over the whole batch "
        "(ONNX DynamicQuantizeLinear); the other rows quantize activations with scales fixed in the file, or not at all.",
    ]
    lines += ["", f"Recommendation: {d['reason']}", "", f"Rule: {d['rule']}.", ""]
    lines += [
        "Methods whose nodes do not all run integer kernels (ONNX Runtime's optimised graph):",
        "",
        *notes,
        "",
    ]
    lines += [
        "## Bias correction (`--bias-correction`)",
        "",
        "| preset | float top-1 % | top-1 % | with bias correction |",
        "|---|---|---|---|",
    ]
    for b in data["bias_correction"]:
        lines.append(
            f"| {b['preset']} | {_f(b['float_top1'])} | {_f(b['top1'])} | {_f(b['top1_bias_corrected'])} |"
        )
    return "\n".join(lines) + "\n"


def cpu_int8_flags() -> str:
    """The x86 flags that pick ONNX Runtime's int8 kernels (VNNI dot products, AVX-512, AVX2): the
    int8 results on the example differ between an AVX-512 VNNI and an AVX2-without-VNNI host."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return "CPU flags unknown (no /proc/cpuinfo)"
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    flags = set(line.split(":", 1)[-1].split())
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?"
    )
    have = [name for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
                                    ("avx512f", "AVX-512F"), ("avx2", "AVX2")) if flag in flags]  # fmt: skip
    return f"{model}; int8-relevant flags: {', '.join(have) or 'none of AVX2/AVX-512/VNNI'}"


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--out", type=Path, default=RESULTS / "bench_demo.md")
    args = p.parse_args()
    data = {
        "runs": args.runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "cpu": cpu_int8_flags(),
        "date": time.strftime("%Y-%m-%d"),
        "versions": edgequant.result.versions(),
        "demo": demo_table(args.runs),
        "bias_correction": bias_correction(),
    }
    text = render(data)
    _atomic(args.out, text)
    _atomic(args.out.with_suffix(".json"), json.dumps(data, indent=1))
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
