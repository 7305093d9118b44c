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
Time: seconds per training epoch, float vs QAT, same data and batch size, on this machine (2 cores,
shared with other jobs while it ran: the ratio is noisy).

    .venv/bin/python benchmarks/bench_qat.py     # -> benchmarks/results/bench_qat.{json,md}
"""

from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--float-epochs", type=int, default=30)
    ap.add_argument("--qat-epochs", type=int, default=15)
    ap.add_argument("--target", default="cpu")
    ap.add_argument("--bits", default="8,4,2")
    ap.add_argument(
        "--models", default="cnn,gru", help="re-run these; the others' rows are kept from the json"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    train, test = digits()
    models = set(args.models.split(","))
    old = json.loads((RESULTS / "bench_qat.json").read_text()) if models != {"cnn", "gru"} else {}
    if "cnn" in models:
        float_acc, float_s, rows = run_model(ti_cnn(), train, test, args, "cnn")
    else:
        float_acc, float_s, rows = old["float_accuracy"], old["float_seconds_per_epoch"], old["rows"]
    if "gru" in models:
        seq_acc, seq_s, seq_rows = run_model(SeqGRU(), as_sequences(train), as_sequences(test), args, "gru")
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
        "note": "accuracy of the exported QDQ models in ONNX Runtime; epoch times on a shared 2-core machine",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_qat.json").write_text(json.dumps(out, indent=1))
    lines = [
        f"# QAT vs PTQ on digits ({out['dataset']}), target {args.target}",
        "",
        "| weights/acts | float top-1 % | PTQ top-1 % | QAT top-1 % | QAT s/epoch (float: "
        f"{out['float_seconds_per_epoch']}) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| W{r['weights']}A8 | {r['float']} | {r['ptq']} | {r['qat']} | {r['qat_seconds_per_epoch']} |"
        )
    lines += [
        "",
        f"Sequence classifier: {out['sequence']['model']} (GRU W/R fake-quantized per gate row during QAT)",
        "",
        f"| weights/acts | float top-1 % | PTQ top-1 % | QAT top-1 % | QAT s/epoch (float: {round(seq_s, 3)}) |",
        "|---|---|---|---|---|",
    ]
    for r in seq_rows:
        lines.append(
            f"| W{r['weights']}A8 | {r['float']} | {r['ptq']} | {r['qat']} | {r['qat_seconds_per_epoch']} |"
        )
    (RESULTS / "bench_qat.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
