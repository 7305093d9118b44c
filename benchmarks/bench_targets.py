"""Hardware targets side by side: accuracy, size and the share of MACs each target's accelerator runs.

Models: the built-in example CNN (examples/shapes_cnn.onnx), two real pretrained models from
rapidocr-onnxruntime 1.4.4 (PP-OCR mobile v2.0 cls, a MobileNetV3 CNN; PP-OCRv4 rec, a CNN backbone
with an attention neck, scored by CER) and the hand-built ResNet-18 (random init, BN statistics set on
synthetic images; benchmarks/models/resnet.py, 128x128).  All variants of a model
calibrate on the same 64 seeded samples and are evaluated on the model's held-out evaluation set.

Variants (edgequant.quantize, minmax calibration):
    float        the model as given
    cpu int8     target cpu (today's default plan: per-channel weights, uint8 activations, float scales)
    ti-npu w8a8  target ti-npu (power-of-two scales at 8 bits, per-channel weights, int8 zp-0 activations)
    ti-npu w4a8  target ti-npu, --weight-bits 4 (4-bit weights with float scales: multiplier + shift)
    vitis-dpu    target vitis-dpu (per-tensor, power-of-two everywhere, 8-bit power-of-two biases)
    cmsis-nn     target cmsis-nn (TFLite int8 spec)
    pow2 cost    the ti-npu w8a8 settings with float scales instead (target cpu, symmetric signed
                 activations, per-channel symmetric weights): the accuracy cost of power-of-two scales
ORT: quantize_static(QDQ, per_channel=True, MinMax) on the same calibration data, then
``edgequant check`` against every profile: findings and MAC share per target.

Columns: the model's metric (top-1 agreement with float, or accuracy), output SQNR in dB against
float on the evaluation set, file size in KiB, packed size (4-bit weights counted at 4 bits), the
share of MACs on the target's accelerator, findings (runs on host / cannot deploy).

    .venv/bin/python benchmarks/bench_targets.py                 # all -> benchmarks/results/bench_targets.{json,md}
    .venv/bin/python benchmarks/bench_targets.py --models shapes  # one model, prints the table
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models.common import BenchModel
from models.harness import runner
from models.targets_bench import RESULTS, metric_text, source_lines, write
from models.targets_bench import bench_model as load_model

import edgequant
from edgequant.targets.check import check_model

CALIB = 64
TARGETS = ("cpu", "ti-npu", "vitis-dpu", "cmsis-nn", "akida")
VARIANTS: dict[str, dict[str, Any]] = {
    "cpu int8": {"target": "cpu"},
    "ti-npu w8a8": {"target": "ti-npu"},
    "ti-npu w4a8": {"target": "ti-npu", "weight_bits": 4},
    "vitis-dpu": {"target": "vitis-dpu"},
    "cmsis-nn": {"target": "cmsis-nn"},
    "pow2 cost (float scales)": {
        "target": "cpu",
        "act_symmetric": True,
        "act_signed": "signed",
        "reduce_range": "off",
    },
}


def bench_model(name: str, variants: list[str] | None = None) -> dict[str, Any]:
    bm = load_model(name)
    calib = bm.make_calib(CALIB, 0)
    ref = bm.predict(runner(bm.path))
    rows: list[dict[str, Any]] = [
        {
            "variant": "float",
            "metrics": bm.metrics(ref, ref),
            "sqnr_db": None,
            "kib": bm.path.stat().st_size / 1024,
        }
    ]
    with tempfile.TemporaryDirectory(prefix="eq_targets_") as tmp:
        for variant, settings in VARIANTS.items():
            if variants is not None and variant not in variants:
                continue
            row: dict[str, Any] = {"variant": variant, "settings": settings, "host": host()}
            try:
                r = edgequant.quantize(
                    bm.path, calib, batch_size=bm.calib_batch, calib_samples=CALIB, **settings
                )
                paths = r.save(Path(tmp) / variant.replace(" ", "_"))
                got = bm.predict(runner(paths.model))
                c = r.report["compliance"]
                row.update(
                    metrics=bm.metrics(ref, got), sqnr_db=round(bm.output_sqnr(ref, got), 2),
                    kib=paths.model.stat().st_size / 1024, packed_kib=r.report["sizes"]["packed_bytes"] / 1024,
                    target=c["target"], mac_share=c["mac_share_on_target"], param_share=c["param_share_on_target"],
                    findings=len(c["findings"]), by=c["findings_by_consequence"],
                )  # fmt: skip
            except edgequant.EdgeQuantError as exc:
                row["error"] = str(exc)
            rows.append(row)
        ort_rows = ort_checked(bm, calib, Path(tmp)) if variants is None else {}
    return {"model": name, "title": bm.title, "source": bm.source, "rows": rows, "ort": ort_rows}


def host() -> str:
    """The CPU the row was measured on: its model name and whether it has AVX-512 VNNI (ORT's int8 kernels
    differ with it, and ``reduce_range`` follows it)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    return f"{name}, {'VNNI' if 'avx512_vnni' in info or 'avx_vnni' in info else 'no VNNI'}"


def merge(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results file's models with the rows just measured in place of theirs (ORT checks kept)."""
    old: list[dict[str, Any]] = json.loads((RESULTS / "bench_targets.json").read_text())
    for res in results:
        base = next(o for o in old if o["model"] == res["model"])
        for row in res["rows"]:
            i = next(k for k, r in enumerate(base["rows"]) if r["variant"] == row["variant"])
            base["rows"][i] = row
    return old


def ort_checked(bm: BenchModel, calib: dict[str, np.ndarray], tmp: Path) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    name = next(iter(calib))
    batches = [{name: calib[name][i : i + bm.calib_batch]} for i in range(0, CALIB, bm.calib_batch)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    out = tmp / "ort_static.onnx"
    quantize_static(str(bm.path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    model = onnx.load(out)
    checks = {}
    for t in TARGETS:
        c = check_model(model, t)
        checks[t] = {"mac_share": c["mac_share_on_target"], "findings": len(c["findings"]),
                     "by": c["findings_by_consequence"], "rules": sorted({f["rule"] for f in c["findings"]})}  # fmt: skip
    return checks


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "# Hardware targets: accuracy, size and accelerator share",
        "",
        f"Calibration: {CALIB} seeded samples, minmax; evaluation on each model's held-out set. "
        "MACs on target: the share of multiply-accumulates in nodes with no finding. "
        "Findings: host = runs on the host CPU, deploy = cannot deploy as quantized.",
        "",
        "| model | variant | metric | SQNR dB | file KiB | packed KiB | MACs on target | findings (host / deploy) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["rows"]:
            if "error" in r:
                lines.append(f"| {res['model']} | {r['variant']} | refused: {r['error'][:80]} | | | | | |")
                continue
            mac = f"{100 * r['mac_share']:.1f} %" if "mac_share" in r else "-"
            f = (
                f"{r['findings']} ({r['by']['runs on host CPU']} / {r['by']['cannot deploy']})"
                if "by" in r
                else "-"
            )
            lines.append(
                f"| {res['model']} | {r['variant']} | {metric_text(r['metrics'])} | {r['sqnr_db'] if r['sqnr_db'] is not None else '-'} "
                f"| {r['kib']:.0f} | {r.get('packed_kib', r['kib']):.0f} | {mac} | {f} |"
            )
    lines += [
        "",
        "ONNX Runtime's quantize_static (QDQ, per-channel, MinMax) checked against each profile:",
        "",
    ]
    lines += ["| model | " + " | ".join(TARGETS) + " |", "|---|" + "---|" * len(TARGETS)]
    for res in results:
        cells = [
            f"{100 * c['mac_share']:.1f} % on target, {c['findings']} findings" for c in res["ort"].values()
        ]
        lines.append(f"| {res['model']} | " + " | ".join(cells) + " |")
    lines += ["", *source_lines(results)]
    later = [
        f"{res['model']} {r['variant']} ({r['host']})" for res in results for r in res["rows"] if "host" in r
    ]
    if later and len(later) < sum(len(res["rows"]) for res in results):
        lines.append(
            "- re-measured later with `--merge`, on the host named: " + "; ".join(later) + ". The other rows "
            "were measured together on an earlier host (AMD EPYC, AVX2 without VNNI)."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="shapes,ocr_cls,ocr_rec,resnet18")
    ap.add_argument("--variants", help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    ap.add_argument(
        "--merge", action="store_true",
        help="re-measure --variants of --models and put them into the results files in place of their old rows",
    )  # fmt: skip
    args = ap.parse_args()
    variants = args.variants.split(",") if args.variants else None
    if variants and set(variants) - set(VARIANTS):
        ap.error(
            f"unknown variant(s) {sorted(set(variants) - set(VARIANTS))}; choose from {', '.join(VARIANTS)}"
        )
    if args.merge and not variants:
        ap.error("--merge needs --variants (without it, run every model to rewrite the results)")
    results = [bench_model(m, variants) for m in args.models.split(",")]
    if args.merge:
        results = merge(results)
    text = markdown(results)
    print(text)
    if args.merge or (args.models == ap.get_default("models") and variants is None):
        write("bench_targets", results, text)


if __name__ == "__main__":
    main()
