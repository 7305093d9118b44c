"""TI-NPU integer-only form (``--format ti-npu-int``) against its QDQ model and float, in ONNX Runtime.

For each model: ``edgequant.quantize(target="ti-npu", format="ti-npu-int")`` at 8-bit and 4-bit
weights (64 seeded calibration samples, minmax), then on the model's held-out evaluation set:
the float model, the QDQ model and the integer form (``<name>_<tag>_ti-npu-int.onnx``), each with
the model's metric and output SQNR against float; and from the run's report (``ti_npu_int``, on the
32 held-back check samples) the largest per-layer code difference in LSB with each layer fed the
QDQ model's own input codes.  A model with an op that has no integer form (e.g. HardSwish on the
host) is listed as refused, with the reason.

    .venv/bin/python benchmarks/bench_ti_int.py      # -> benchmarks/results/bench_ti_int.{json,md}
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models.harness import runner
from models.targets_bench import bench_model as load_model
from models.targets_bench import metric_text, source_lines, write

import edgequant

CALIB = 64


def bench_model(name: str) -> dict[str, Any]:
    bm = load_model(name)
    calib = bm.make_calib(CALIB, 0)
    ref = bm.predict(runner(bm.path))
    rows: list[dict[str, Any]] = [{"variant": "float", "metrics": bm.metrics(ref, ref), "sqnr_db": None}]
    with tempfile.TemporaryDirectory(prefix="eq_ti_int_") as tmp:
        for bits in (8, 4):
            try:
                r = edgequant.quantize(
                    bm.path, calib, batch_size=bm.calib_batch, calib_samples=CALIB, target="ti-npu",
                    weight_bits=bits, format="ti-npu-int",
                )  # fmt: skip
            except edgequant.EdgeQuantError as exc:
                rows.append({"variant": f"w{bits}a8", "error": str(exc)})
                continue
            paths = r.save(Path(tmp) / f"w{bits}")
            integer = paths.model.with_name(f"{paths.model.stem}_ti-npu-int.onnx")
            section = r.report["ti_npu_int"]
            for form, path in (("QDQ", paths.model), ("integer form", integer)):
                got = bm.predict(runner(path))
                rows.append({
                    "variant": f"w{bits}a8 {form}", "metrics": bm.metrics(ref, got),
                    "sqnr_db": round(bm.output_sqnr(ref, got), 2), "kib": path.stat().st_size / 1024,
                    "per_layer_max_lsb": section["per_layer_max_lsb"] if form != "QDQ" else None,
                    "top1_vs_qdq": section.get("end_to_end_top1_agreement") if form != "QDQ" else None,
                })  # fmt: skip
    return {"model": name, "title": bm.title, "source": bm.source, "rows": rows}


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "# TI-NPU integer-only form against its QDQ model",
        "",
        f"Calibration: {CALIB} seeded samples, minmax, target ti-npu; metrics on each model's held-out set. "
        "Max LSB: the largest per-layer code difference from the QDQ model, each layer fed the QDQ model's "
        "own input codes (on the 32 check samples of the run).",
        "",
        "| model | variant | metric | SQNR dB vs float | KiB | per-layer max LSB | top-1 vs QDQ (check samples) |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["rows"]:
            if "error" in r:
                lines.append(f"| {res['model']} | {r['variant']} | refused: {r['error'][:160]} | | | | |")
                continue
            metric = metric_text(r["metrics"])
            lsb = "-" if r.get("per_layer_max_lsb") is None else f"{r['per_layer_max_lsb']:.0f}"
            top1 = "-" if r.get("top1_vs_qdq") is None else f"{100 * r['top1_vs_qdq']:.1f} %"
            sq = "-" if r["sqnr_db"] is None else r["sqnr_db"]
            kib = f"{r['kib']:.0f}" if "kib" in r else "-"
            lines.append(f"| {res['model']} | {r['variant']} | {metric} | {sq} | {kib} | {lsb} | {top1} |")
    lines += ["", *source_lines(results)]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="shapes,ocr_cls,resnet18")
    args = ap.parse_args()
    results = [bench_model(m) for m in args.models.split(",")]
    text = markdown(results)
    print(text)
    if args.models == ap.get_default("models"):
        write("bench_ti_int", results, text)


if __name__ == "__main__":
    main()
