"""The example CNN's calibration ranking, held-out set by held-out set (issue #17 §5 and its "done when").

The shipped evaluation file (``examples/shapes_eval.npz``, 512 pictures) ranks min-max 1.27 dB above the
default (entropy) ranges, while the bench_calibration_choice row ranks entropy above min-max.  Is that the
ranges or the draw?  Every method quantizes the example from the shipped calibration file as the README's
command does (``edgequant.quantize(model, "examples/shapes_calib.npz", calib_method=m)``: 32 samples held
back for the check, the next 128 calibrate; the search scores its candidates on the samples after those),
and each quantized model's logits are compared with float (output SQNR over the whole set, dB) on the
shipped file and on ``DRAWS`` new sets of 512 pictures each from the example's own generator
(``examples/make_example.py``, seeds 101..; ``models.shapes._fresh``), which share no picture with the
calibration file.  Per method: the SQNR on each set and on the new sets pooled, and per set its gap to
min-max and to the best of min-max, percentile and entropy (the goal's quantity: >= -0.5 dB).  For the
shipped set also: top-1 accuracy, the median per-sample SQNR, and the share of the error energy held by
the 5 worst samples (1 % of the set).

    .venv/bin/python benchmarks/bench_example_draws.py   # -> results/bench_example_draws.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("minmax", "percentile", "entropy", "mse", "auto", "search")
BASELINES = ("minmax", "percentile", "entropy")
DRAWS, DRAW_SIZE, FIRST_SEED, WORST = 8, 512, 101, 5


def logits(model: Any, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"image": x})[0], np.float64)


def sqnr(sig: np.ndarray, err: np.ndarray) -> float:
    return float(10 * np.log10(sig.sum() / err.sum()))


def run() -> dict[str, Any]:
    from models.shapes import _fresh

    import edgequant

    model = str(ROOT / "examples" / "shapes_cnn.onnx")
    shipped = np.load(ROOT / "examples" / "shapes_eval.npz")
    sets = {"shipped": shipped["image"]}
    sets.update({f"seed{s}": _fresh(DRAW_SIZE, s)["image"] for s in range(FIRST_SEED, FIRST_SEED + DRAWS)})
    refs = {k: logits(model, x) for k, x in sets.items()}
    out: dict[str, Any] = {"load_average": [round(os.getloadavg()[0], 1)], "methods": {}}
    for m in METHODS:
        res = edgequant.quantize(model, str(ROOT / "examples" / "shapes_calib.npz"), calib_method=m)
        blob = res.model.SerializeToString()
        row: dict[str, Any] = {"sets": {}}
        pooled_sig, pooled_err = 0.0, 0.0
        for k, x in sets.items():
            got = logits(blob, x)
            sig, err = (refs[k] ** 2).sum(1), ((refs[k] - got) ** 2).sum(1)
            row["sets"][k] = round(sqnr(sig, err), 3)
            if k == "shipped":
                row["accuracy"] = round(float((got.argmax(1) == shipped["labels"]).mean()), 4)
                row["median_sample_db"] = round(float(np.median(10 * np.log10(sig / err))), 2)
                row["worst5_share"] = round(float(np.sort(err)[-WORST:].sum() / err.sum()), 3)
            else:
                pooled_sig, pooled_err = pooled_sig + sig.sum(), pooled_err + err.sum()
        row["fresh_pooled"] = round(float(10 * np.log10(pooled_sig / pooled_err)), 3)
        if m == "search":
            row["search_chose"] = (res.report.get("calibration") or {}).get("search", {}).get("chosen")
        out["methods"][m] = row
        print(
            f"# {m}: {row['sets']['shipped']:.2f} dB shipped, {row['fresh_pooled']:.2f} fresh",
            file=sys.stderr,
        )
    out["load_average"].append(round(os.getloadavg()[0], 1))
    return out


def gaps(r: dict[str, Any], method: str, against: tuple[str, ...]) -> list[float]:
    """Per new set: ``method``'s SQNR minus the best of ``against`` (dB)."""
    ms = r["methods"]
    keys = [k for k in ms[method]["sets"] if k != "shipped"]
    return [ms[method]["sets"][k] - max(ms[b]["sets"][k] for b in against) for k in keys]


def markdown(r: dict[str, Any]) -> str:
    ms = r["methods"]
    lines = [
        "# The example CNN: calibration methods on the shipped evaluation file and on new draws",
        "",
        "Written by `benchmarks/bench_example_draws.py`. Each method quantizes `examples/shapes_cnn.onnx` "
        "from `examples/shapes_calib.npz` (the README's command, static int8, default recipe otherwise); "
        f"output SQNR of the logits against float on the shipped `shapes_eval.npz` (512) and on {DRAWS} new "
        f"sets of {DRAW_SIZE} pictures from the example's generator (seeds {FIRST_SEED}-{FIRST_SEED + DRAWS - 1}), "
        "which calibration never saw. Gaps are per new set; `within 0.5` counts the sets where the method is "
        "at most 0.5 dB below the best of min-max, percentile and entropy (issue #17 §5). Shipped set: top-1 "
        "accuracy, median per-sample SQNR, share of the error energy in the 5 worst of 512 samples. Load "
        f"{r['load_average'][0]}-{r['load_average'][-1]}.",
        "",
        "| method | shipped dB | accuracy | median per-sample dB | 5 worst samples' share | new sets pooled dB "
        "| vs min-max per new set: min / median / max dB | within 0.5 dB of the best of three |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, row in ms.items():
        g = gaps(r, m, ("minmax",))
        w = gaps(r, m, BASELINES)
        name = {"auto": "auto (default)", "search": f"search (chose {row.get('search_chose')})"}.get(m, m)
        lines.append(
            f"| {name} | {row['sets']['shipped']:.2f} | {100 * row['accuracy']:.2f} % | {row['median_sample_db']:.2f} "
            f"| {100 * row['worst5_share']:.0f} % | {row['fresh_pooled']:.2f} | {min(g):+.2f} / "
            f"{float(np.median(g)):+.2f} / {max(g):+.2f} | {sum(x >= -0.5 for x in w)} of {len(w)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(RESULTS / "bench_example_draws"))
    a = p.parse_args()
    r = run()
    Path(a.out + ".json").write_text(json.dumps(r, indent=1))
    Path(a.out + ".md").write_text(markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
