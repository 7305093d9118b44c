"""QAT vs PTQ on real data: scikit-learn's bundled 8x8 digits with a small TI-style CNN.

Data: sklearn.datasets.load_digits (1797 images, 8x8, values 0..16 scaled to 0..1), split by a seeded
permutation into 1257 training and 540 test images (the test images are never trained or calibrated on).
Model: three Conv-BN-ReLU blocks (16, 32, 64 channels; the last two stride 2), global average pooling,
Linear(64, 10): only layers a TI-style NPU runs.
Float: ``--float-epochs`` of Adam (lr 3e-3, cosine, batch 64, seed 0).
Per weight width (8, 4, 2; activations 8-bit, per-channel weights, target as given):
    PTQ  PTQModule, min-max calibration on 512 training images, exported and run in ONNX Runtime;
    QAT  QATModule from the float weights, ``--qat-epochs`` of Adam (lr 1e-3, cosine), BN frozen after
         half the epochs, LSQ scales; exported and run in ONNX Runtime.
Accuracy: top-1 on the 540 test images, of the exported QDQ model in ONNX Runtime.
Sequence model: the same digits read as sequences of 8 rows (8 features per step) by GRU(8, 32) ->
Linear(32, 10), trained, calibrated and fine-tuned the same way; QAT fake-quantizes the GRU's W/R
(one scale per gate row, as the ONNX plan quantizes them) besides the Linear and the activations.
Time (``interleaved_times``): float and W8A8 QAT epochs alternated, ``--rounds`` (default 5), on the same data, order
and batch size, one torch thread; median and minimum of each (2 cores shared with other jobs: noisy),
and the median CPU time of the training thread (``time.thread_time``, less sensitive to that load).
The rows' ``qat_seconds_per_epoch`` (json only) come from the accuracy runs, not interleaved with float.

    .venv/bin/python benchmarks/bench_qat.py     # -> benchmarks/results/bench_qat.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgequant.torch import PTQModule, QATModule
from edgequant.torch.train import Labeled, evaluate, fit

RESULTS = Path(__file__).resolve().parent / "results"


def digits() -> tuple[Labeled, Labeled]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    tr, te = order[:1257], order[1257:]
    return Labeled([x[tr]], y[tr], "digits train"), Labeled([x[te]], y[te], "digits test")


def ti_cnn() -> nn.Module:
    torch.manual_seed(0)

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, 16, 1), *block(16, 32, 2), *block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


class SeqGRU(nn.Module):
    """Rows of an 8x8 digit as an 8-step sequence: GRU(8, 32), the last step's state -> Linear(32, 10)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = nn.GRU(8, 32, batch_first=True)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])


def as_sequences(data: Labeled) -> Labeled:
    return Labeled(
        [np.ascontiguousarray(data.inputs[0][:, 0])], data.labels, data.description + " (rows as steps)"
    )


def ort_accuracy(module: QATModule, example: torch.Tensor, test: Labeled, tmp: Path, tag: str) -> float:
    result = module.export(example, tmp / f"digits_{tag}.onnx", check_data={"input": test.inputs[0][:64]})
    sess = ort.InferenceSession(str(tmp / f"digits_{tag}.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": test.inputs[0]})[0]
    assert result.report["check"]["loads_in_onnxruntime"]
    return 100.0 * float(np.mean(y.argmax(1) == test.labels))


def run_model(
    model: nn.Module, train: Labeled, test: Labeled, args: argparse.Namespace, name: str
) -> tuple[float, float, list[dict[str, Any]]]:
    """Float training, then PTQ and QAT per weight width; (float %, float s/epoch, rows)."""
    res = fit(model, train, test, task="classification", epochs=args.float_epochs, lr=3e-3, seed=0)
    float_acc = evaluate(model, test, "classification")
    print(f"{name} float: {float_acc:.2f} % ({res.seconds_per_epoch:.3f} s/epoch)", flush=True)
    example = torch.from_numpy(train.inputs[0][:4])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for wb in (int(b) for b in args.bits.split(",")):
            ptq = PTQModule(model, example, weight_bits=wb, target=args.target)
            with torch.no_grad():
                for i in range(0, 512, 64):
                    ptq(torch.from_numpy(train.inputs[0][i : i + 64]))
            ptq_acc = ort_accuracy(ptq, example, test, tmp, f"{name}_ptq_w{wb}")
            qat = QATModule(model, example, weight_bits=wb, target=args.target, total_epochs=args.qat_epochs)
            qres = fit(qat, train, test, task="classification", epochs=args.qat_epochs, lr=1e-3, seed=0)
            qat_acc = ort_accuracy(qat, example, test, tmp, f"{name}_qat_w{wb}")
            row = {
                "weights": wb, "activations": 8, "float": round(float_acc, 2), "ptq": round(ptq_acc, 2),
                "qat": round(qat_acc, 2), "qat_best_epoch": qres.best_epoch,
                "qat_seconds_per_epoch": round(qres.seconds_per_epoch, 3),
                "qat_over_float_time": round(qres.seconds_per_epoch / res.seconds_per_epoch, 2),
                "weights_not_simulated": qat.describe()["weights_not_simulated"],
            }  # fmt: skip
            rows.append(row)
            print(name, row, flush=True)
    return float_acc, res.seconds_per_epoch, rows


def interleaved_times(
    model: nn.Module, train: Labeled, args: argparse.Namespace, rounds: int = 5
) -> dict[str, Any]:
    """Seconds per training epoch of the float model and of its W8A8 QAT wrapper, measured alternately
    (float epoch, QAT epoch, float, ...) on the same data, order and batch size: each gets the same
    share of whatever else runs on the machine.  Median and minimum of ``rounds`` each."""
    import time

    qat = QATModule(model, torch.from_numpy(train.inputs[0][:4]), weight_bits=8, target=args.target,
                    total_epochs=rounds)  # fmt: skip
    x, y = torch.from_numpy(train.inputs[0]), torch.from_numpy(train.labels)

    def epoch(m: nn.Module) -> tuple[float, float]:
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)
        m.train()
        t0, c0 = time.perf_counter(), time.thread_time()
        for i in range(0, len(y), 64):
            loss = nn.functional.cross_entropy(m(x[i : i + 64]), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t0, time.thread_time() - c0

    times: dict[str, list[float]] = {"float": [], "qat": []}
    cpu: dict[str, list[float]] = {"float": [], "qat": []}
    for _ in range(rounds):
        for k, m in (("float", model), ("qat", qat)):
            wall, c = epoch(m)
            times[k].append(wall)
            cpu[k].append(c)
    med = {k: float(np.median(v)) for k, v in times.items()}
    cpu_med = {k: float(np.median(v)) for k, v in cpu.items()}
    return {
        "rounds": rounds,
        "float_median_s": round(med["float"], 3), "qat_median_s": round(med["qat"], 3),
        "float_min_s": round(min(times["float"]), 3), "qat_min_s": round(min(times["qat"]), 3),
        "qat_over_float_median": round(med["qat"] / med["float"], 2),
        "qat_over_float_min": round(min(times["qat"]) / min(times["float"]), 2),
        "float_cpu_median_s": round(cpu_med["float"], 3), "qat_cpu_median_s": round(cpu_med["qat"], 3),
        "qat_over_float_cpu_median": round(cpu_med["qat"] / cpu_med["float"], 2),
        "load_average_1min": round(os.getloadavg()[0], 1),
    }  # fmt: skip


def render(out: dict[str, Any]) -> str:
    """The markdown tables of a results dict (``--render`` re-renders them from the json)."""
    lines = [
        f"# QAT vs PTQ on digits ({out['dataset']}), target {out['target']}",
        "",
        f"{out['float_epochs']} float epochs, {out['qat_epochs']} QAT epochs; top-1 of the exported QDQ models "
        "in ONNX Runtime on the 540 test images.",
        "",
        "| model | weights/acts | float top-1 % | PTQ top-1 % | QAT top-1 % |",
        "|---|---|---|---|---|",
    ]
    for model, rows in (("CNN", out["rows"]), ("GRU", out["sequence"]["rows"])):
        for r in rows:
            lines.append(f"| {model} | W{r['weights']}A8 | {r['float']} | {r['ptq']} | {r['qat']} |")
    lines += [
        "",
        f"CNN: {out['model']}. GRU: {out['sequence']['model']} (W/R fake-quantized per gate row during QAT).",
        "",
        "Training time per epoch, float and QAT (W8A8) epochs alternated on the same data (one torch thread; "
        "a 2-core machine shared with other jobs: noisy). Wall time, and the CPU time of the training thread "
        "(time.thread_time: not counting the time other jobs hold the core); the 1-minute load average at the end.",
        "",
        "| model | rounds | float s/epoch (median, min) | QAT s/epoch (median, min) | QAT/float (median, min) "
        "| QAT/float CPU time (median) | load average |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, t in out.get("timing", {}).items():
        lines.append(
            f"| {k} | {t['rounds']} | {t['float_median_s']}, {t['float_min_s']} | {t['qat_median_s']}, "
            f"{t['qat_min_s']} | {t['qat_over_float_median']}, {t['qat_over_float_min']} "
            f"| {t.get('qat_over_float_cpu_median', '-')} | {t.get('load_average_1min', '-')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--float-epochs", type=int, default=30)
    ap.add_argument("--qat-epochs", type=int, default=15)
    ap.add_argument("--target", default="cpu")
    ap.add_argument("--bits", default="8,4,2")
    ap.add_argument(
        "--models", default="cnn,gru", help="re-run these; the others' rows are kept from the json"
    )
    ap.add_argument("--timing-only", action="store_true", help="re-measure only the interleaved epoch times")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--render", action="store_true", help="re-render bench_qat.md from bench_qat.json only")
    args = ap.parse_args(argv)
    if args.render:
        (RESULTS / "bench_qat.md").write_text(render(json.loads((RESULTS / "bench_qat.json").read_text())))
        return 0
    torch.set_num_threads(1)
    if args.timing_only:  # untrained models: an epoch costs the same; accuracy rows kept from the json
        train, _test = digits()
        out = json.loads((RESULTS / "bench_qat.json").read_text())
        out["timing"] = {
            "cnn": interleaved_times(ti_cnn(), train, args, args.rounds),
            "gru": interleaved_times(SeqGRU(), as_sequences(train), args, args.rounds),
        }
        (RESULTS / "bench_qat.json").write_text(json.dumps(out, indent=1))
        (RESULTS / "bench_qat.md").write_text(render(out))
        print(render(out))
        return 0
    train, test = digits()
    models = set(args.models.split(","))
    old = json.loads((RESULTS / "bench_qat.json").read_text()) if models != {"cnn", "gru"} else {}
    timing = old.get("timing", {})
    if "cnn" in models:
        cnn = ti_cnn()
        float_acc, float_s, rows = run_model(cnn, train, test, args, "cnn")
        timing["cnn"] = interleaved_times(cnn, train, args, args.rounds)
    else:
        float_acc, float_s, rows = old["float_accuracy"], old["float_seconds_per_epoch"], old["rows"]
    if "gru" in models:
        gru = SeqGRU()
        seq_acc, seq_s, seq_rows = run_model(gru, as_sequences(train), as_sequences(test), args, "gru")
        timing["gru"] = interleaved_times(gru, as_sequences(train), args, args.rounds)
    else:
        seq = old["sequence"]
        seq_acc, seq_s, seq_rows = seq["float_accuracy"], seq["float_seconds_per_epoch"], seq["rows"]
    out = {
        "dataset": "sklearn load_digits: 1257 train / 540 test (seeded split)",
        "model": "TI-style CNN: 3x Conv-BN-ReLU (16/32/64), GAP, Linear(64, 10)",
        "target": args.target,
        "float_epochs": args.float_epochs,
        "qat_epochs": args.qat_epochs,
        "float_accuracy": round(float_acc, 2),
        "float_seconds_per_epoch": round(float_s, 3),
        "rows": rows,
        "sequence": {
            "model": "GRU(8, 32) over the 8 rows of each digit, last step -> Linear(32, 10)",
            "float_accuracy": round(seq_acc, 2),
            "float_seconds_per_epoch": round(seq_s, 3),
            "rows": seq_rows,
        },
        "timing": timing,
        "note": "accuracy of the exported QDQ models in ONNX Runtime; epoch times on a shared 2-core machine, "
        "one torch thread; 'timing' alternates float and QAT (W8A8) epochs on the same data",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_qat.json").write_text(json.dumps(out, indent=1))
    (RESULTS / "bench_qat.md").write_text(render(out))
    print(render(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
