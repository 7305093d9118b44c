"""Choosing a precision under limits: ``compare`` on the example, a real CNN and a real RNN, the
recommendation under three limit sets, and the energy estimate with its breakdown.

Per model (``shapes`` example CNN, ``ocr_cls`` PP-OCR mobile cls, ``vad`` Silero VAD LSTM; see
benchmarks/models/): one ``edgequant.evaluate.compare`` call with the precision candidates
(float, dynamic-int8, fp16, int8-static-per-tensor, int8-static) on 128 seeded calibration samples and
the model's separate evaluation set (labelled top-1 for shapes / cls; agreement with float for the
VAD).  The three limit sets are then applied with ``edgequant.evaluate.recommend`` to those measured
numbers (the same function compare applies to its own flags, so each row is what
``edgequant compare --max-drop ... --prefer ...`` prints):

    A  max_drop 1 pp, prefer latency
    B  max_drop 1 pp, max_size_mb = 40 % of the float file, prefer energy
    C  max_drop 0.05 pp, max_latency_ms = half the fastest method's median: nothing fits; closest named

Energy is the estimate of ``edgequant.evaluate.energy`` (Horowitz, ISSCC 2014, 45 nm); RAPL is
reported where /sys/class/powercap exposes it.  Latency: ORT CPU, 1 intra-op thread, 30 runs, measured
on a shared 2-core machine with other jobs running: noisy.

Published figure: the AlexNet convolutional layers (5 Conv, 227x227 input) are built here with random
weights (the estimate depends on shapes and precisions only) and estimated in fp32, int8 and 16-bit
(w8a16); beside it Eyeriss (Chen et al., IEEE JSSC 52(1), 2017): AlexNet CONV layers at 35 frames/s and
278 mW, batch 4, 65 nm, 16-bit fixed point: 278 / 35 = 7.9 mJ per frame for the chip, DRAM excluded.

Predicted latency: beside each measured latency, ``edgequant.evaluate.predict`` on the ``vitis-dpu``
profile (one DPUCZDX8G B4096 core, 2048 int8 MACs/cycle at 300 MHz, PG338 / UG1354): the peak compute
bound MACs / (MACs per cycle x clock), from the MACs compare counted; a method with float MACs gets
none (the DPU is int8 only).  It is a prediction, not a measurement.

    .venv/bin/python benchmarks/bench_precision_choice.py   # -> results/bench_precision_choice.{json,md}
    .venv/bin/python benchmarks/bench_precision_choice.py --from-json   # re-derive the predictions and
        # the Markdown from the stored results (counted MACs), without re-measuring
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h

sys.path.insert(0, str(Path(__file__).resolve().parent))

import models
from models.common import DataFiles

from edgequant import pipeline, targets
from edgequant.evaluate import Limits, compare, energy, opcount, recommend
from edgequant.evaluate.compare import candidate
from edgequant.evaluate.predict import predict_latency

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = "float,dynamic-int8,fp16,int8-static-per-tensor,int8-static"
MODELS = ("shapes", "ocr_cls", "vad")
EYERISS_MJ = 278.0 / 35.0  # mW / (frames/s) = mJ per frame
PREDICT_ON = "vitis-dpu"


def predicted(energy_est: dict[str, Any] | None) -> dict[str, Any]:
    """The predicted latency on ``PREDICT_ON`` from the MACs counted for the energy estimate."""
    return predict_latency((energy_est or {}).get("macs") or {}, targets.get(PREDICT_ON))


def _eval_set(name: str, m: models.BenchModel) -> tuple[Any, Any, str]:
    if name == "shapes":
        from models.shapes import _eval

        x, y = _eval()
        return {"image": x}, y, "classification"
    if name == "ocr_cls":
        from models.ocr import _eval_cls

        x, y = _eval_cls()
        return {"x": x}, y, "classification"
    tmp = Path(tempfile.mkdtemp(prefix="bpc_vad_"))
    ev = DataFiles.write(tmp / "eval", m.make_calib(256, 1), m.unbatched)
    return list(ev.batches(1)), None, "regression"


def bench(name: str) -> dict[str, Any]:
    m = models.load(name)
    tmp = Path(tempfile.mkdtemp(prefix=f"bpc_{name}_"))
    calib = DataFiles.write(tmp / "calib", m.make_calib(128, 0), m.unbatched)
    ev, labels, task = _eval_set(name, m)
    res = compare(
        m.path, lambda: calib.batches(m.calib_batch), ev, labels=labels, task=task, methods=METHODS,
        outdir=tmp / "out", measure_memory=False, latency_runs=30, max_drop=None, report=False, top_k=0,
    )  # fmt: skip
    float_r = res.method("float")
    cands = [candidate(r, float_r.score) for r in res.methods]
    ok = [c for c in cands if c.ok]
    fastest = min(c.latency_ms or 0.0 for c in ok)
    sets = {
        "A": Limits(max_drop=1.0, prefer="latency"),
        "B": Limits(max_drop=1.0, max_size_mb=0.4 * (float_r.file_bytes or 0) / 2**20, prefer="energy"),
        "C": Limits(max_drop=0.05, max_latency_ms=fastest / 2, prefer="latency"),
    }
    recs = {k: recommend(cands, lim) for k, lim in sets.items()}
    return {
        "model": m.title,
        "task": task,
        "samples": res.samples,
        "primary": res.primary,
        "methods": [
            {
                "method": r.method,
                "status": r.status,
                "error": r.error,
                "score": r.score,
                "drop": r.drop,
                "drop_unit": r.drop_unit,
                "median_ms": (r.latency or {}).get("median_ms"),
                "provider": (r.latency or {}).get("provider"),
                "threads": (r.latency or {}).get("threads"),
                "file_bytes": r.file_bytes,
                "energy": r.energy,
                "predicted": predicted(r.energy),
            }
            for r in res.methods
        ],
        "limits": {k: v.to_dict() for k, v in sets.items()},
        "recommendations": {k: v.to_dict() for k, v in recs.items()},
        "rule": recs["A"].rule,
    }


def _conv(name: str, x: str, cin: int, cout: int, k: int, stride: int, pad: int, group: int) -> list[Any]:
    rng = np.random.default_rng(len(name))
    w = onnx.numpy_helper.from_array(
        (rng.standard_normal((cout, cin // group, k, k)) * 0.05).astype(np.float32), f"{name}_w"
    )
    b = onnx.numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}_b")
    node = h.make_node(
        "Conv", [x, w.name, b.name], [f"{name}_c"], name=name, kernel_shape=[k, k], strides=[stride] * 2,
        pads=[pad] * 4, group=group,
    )  # fmt: skip
    relu = h.make_node("Relu", [f"{name}_c"], [f"{name}_r"], name=f"{name}_relu")
    return [[node, relu], [w, b], f"{name}_r"]


def alexnet_conv() -> onnx.ModelProto:
    """The five convolutional layers of AlexNet (Krizhevsky et al. 2012, grouped as in the paper)."""
    nodes: list[Any] = []
    inits: list[Any] = []
    x = "x"
    plan = [("conv1", 3, 96, 11, 4, 0, 1, True), ("conv2", 96, 256, 5, 1, 2, 2, True),
            ("conv3", 256, 384, 3, 1, 1, 1, False), ("conv4", 384, 384, 3, 1, 1, 2, False),
            ("conv5", 384, 256, 3, 1, 1, 2, True)]  # fmt: skip
    for name, cin, cout, k, s, p, g, pool in plan:
        ns, ws, x = _conv(name, x, cin, cout, k, s, p, g)
        nodes += ns
        inits += ws
        if pool:
            nodes.append(h.make_node("MaxPool", [x], [f"{name}_p"], kernel_shape=[3, 3], strides=[2, 2]))
            x = f"{name}_p"
    nodes.append(h.make_node("Identity", [x], ["y"]))
    g = h.make_graph(
        nodes, "alexnet_conv", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 227, 227])],
        [h.make_tensor_value_info("y", T.FLOAT, None)], inits,
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def published() -> dict[str, Any]:
    m = alexnet_conv()
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((8, 3, 227, 227)).astype(np.float32)
    one = {"x": calib[:1]}
    out: dict[str, Any] = {}
    variants = {"fp32": m, "int8": pipeline.quantize(m, calib, method="static").model,
                "16-bit (w8a16)": pipeline.quantize(m, calib, "w8a16").model}  # fmt: skip
    for label, model in variants.items():
        counts = opcount.count(model, opcount.tensor_shapes(model, one))
        from edgequant.evaluate.perf import model_size

        est = energy.estimate(counts, model_size(model).packed_bytes)
        out[label] = {"total_mj": est["total_mj"], "breakdown_mj": est["breakdown_mj"], "macs": est["macs"]}
    return {"alexnet_conv": out, "eyeriss_mj": EYERISS_MJ}


BASIS_NOTE = (
    "a prediction, not a measurement: one DPUCZDX8G B4096 core (2048 int8 MACs/cycle, 300 MHz; PG338, "
    "UG1354), peak compute bound MACs / (MACs per cycle x clock); memory traffic, element-wise ops and "
    "utilisation below peak are not counted, so the device's latency is at least this."
)


def _f(v: Any, d: int = 3) -> str:
    return "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# Precision choice under limits (bench_precision_choice.py)",
        "",
        str(__doc__).split("\n\n")[1],
        "",
    ]
    lines += [f"Rule: {data['models'][0]['rule']}.", ""]
    for d in data["models"]:
        lines += [
            f"## {d['model']} ({d['task']}, {d['samples']} evaluation samples, metric {d['primary']})",
            "",
        ]
        lines += ["| method | drop | median ms | DPU ms (predicted) | MB | energy mJ (estimate) | MACs by precision | compute / weights / activations mJ | RAPL |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in d["methods"]:
            if r["status"] != "ok":
                lines.append(f"| {r['method']} | failed: {r['error'][:80]} | | | | | | | |")
                continue
            e = r["energy"] or {}
            br = e.get("breakdown_mj", {})
            comp = sum(v for k, v in br.items() if k.startswith(("mac_", "op_")))
            macs = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in (e.get("macs") or {}).items())
            rapl = _f(e.get("measured_mj"), 4) if e.get("measured_mj") is not None else "n/a"
            pred = (r.get("predicted") or {}).get("ms")
            lines.append(
                f"| {r['method']} | {_f(r['drop'], 2)} {r['drop_unit']} | {_f(r['median_ms'])} | "
                f"{'n/a (float MACs)' if pred is None else f'{pred:.3g}'} | "
                f"{(r['file_bytes'] or 0) / 2**20:.3f} | {e.get('total_mj', 0):.4g} | {macs} | "
                f"{comp:.3g} / {br.get('weights', 0):.3g} / {br.get('activations', 0):.3g} | {rapl} |"
            )
        lines += ["", f"Latency on {d['methods'][0].get('provider')}, {d['methods'][0].get('threads')} thread(s). "
                  f"RAPL: {(d['methods'][0].get('energy') or {}).get('measured_note', '')}.", ""]  # fmt: skip
        lines += ["| limits | recommendation |", "|---|---|"]
        for k, lim in d["limits"].items():
            given = ", ".join(f"{n} {v:.4g}" for n, v in lim.items() if v is not None and n != "prefer")
            rec = d["recommendations"][k]
            lines.append(f"| {k}: {given}; prefer {lim['prefer']} | {rec['reason'].replace('|', '/')} |")
        lines.append("")
    lines += [f"DPU ms (predicted): {BASIS_NOTE}", ""]
    p = data["published"]
    lines += ["## Energy model vs a published per-inference figure", "",
              "| AlexNet CONV layers | estimate mJ | MACs | compute / weights / activations mJ |",
              "|---|---|---|---|"]  # fmt: skip
    for label, e in p["alexnet_conv"].items():
        br = e["breakdown_mj"]
        comp = sum(v for k, v in br.items() if k.startswith(("mac_", "op_")))
        macs = ", ".join(f"{k} {v / 1e6:.0f}M" for k, v in e["macs"].items())
        lines.append(f"| {label} | {e['total_mj']:.3g} | {macs} | {comp:.3g} / {br['weights']:.3g} / "
                     f"{br['activations']:.3g} |")  # fmt: skip
    lines += ["", f"Eyeriss (Chen et al., JSSC 2017), measured chip power: 278 mW at 35 frames/s = "
              f"{p['eyeriss_mj']:.1f} mJ per frame (65 nm, 16-bit, batch 4, DRAM excluded).", ""]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    if "--from-json" in sys.argv[1:]:
        data = json.loads((RESULTS / "bench_precision_choice.json").read_text())
        for d in data["models"]:
            for r in d["methods"]:
                r["predicted"] = predicted(r["energy"])
    else:
        data = {"models": [bench(n) for n in MODELS], "published": published()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_precision_choice.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    (RESULTS / "bench_precision_choice.md").write_text(markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
