"""The seed-001 four-method study in one command: a GRU run directory (checkpoint + args.json), per-trial
HDF5 with variable lengths and a metadata CSV, calibration on train, evaluation on test, a CSV row per
method (dynamic int8, fp16, static per-tensor, static per-channel, and FP32 as the reference)."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import typer
from tinymodels import optional
from typer.testing import CliRunner

torch = optional("torch")  # skips locally without the extra, fails in CI

from edgequant.commands import compare as compare_cmd  # noqa: E402
from edgequant.commands import evaluate as evaluate_cmd  # noqa: E402

LENGTHS = [14, 20, 17, 23, 15, 19, 21, 16, 18, 22, 17, 20]
SPLITS = ["train"] * 8 + ["val"] * 2 + ["test"] * 2
METHODS = "float,dynamic-int8,fp16,int8-static-per-tensor,int8-static"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    d = tmp_path_factory.mktemp("seed")
    pkg = d / "pkgroot" / "eqseed"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            class GruDecoder(nn.Module):
                def __init__(self, n_channels=8, hidden=16, n_classes=4):
                    super().__init__()
                    self.gru = nn.GRU(n_channels, hidden, batch_first=True)
                    self.head = nn.Linear(hidden, n_classes)

                def forward(self, x):
                    y, _ = self.gru(x)
                    return self.head(y[:, -1])
            """
        )
    )
    sys.path.insert(0, str(d / "pkgroot"))
    from eqseed.nets import GruDecoder  # type: ignore[import-not-found]

    torch.manual_seed(0)
    net = GruDecoder(8, 16, 4)
    run = d / "run"
    run.mkdir()
    torch.save({"epoch": 12, "model_state_dict": net.state_dict()}, run / "checkpoint.pt")
    (run / "args.json").write_text(json.dumps({"n_channels": 8, "hidden": 16, "n_classes": 4, "lr": 1e-3}))
    rng = np.random.default_rng(2)
    with h5py.File(d / "trials.h5", "w") as f:
        for i, n in enumerate(LENGTHS):
            x = rng.standard_normal((n, 8)).astype(np.float32)
            g = f.create_group(f"trial_{i:03d}")
            g["x"] = x
            with torch.no_grad():
                g.attrs["label"] = int(net(torch.from_numpy(x[None])).argmax())
    with open(d / "meta.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["trial", "split"])
        w.writerows([i, s] for i, s in enumerate(SPLITS))
    yield {"dir": d, "run": run, "h5": d / "trials.h5", "meta": d / "meta.csv"}
    sys.path.remove(str(d / "pkgroot"))
    for name in [m for m in sys.modules if m == "eqseed" or m.startswith("eqseed.")]:
        del sys.modules[name]


def _app() -> typer.Typer:
    app = typer.Typer()
    compare_cmd.register(app)
    evaluate_cmd.register(app)
    return app


def test_four_method_study_in_one_command(study: dict[str, Path], tmp_path: Path) -> None:
    res = CliRunner().invoke(
        _app(),
        ["compare", "gru_decoder", "--factory", "eqseed.nets:GruDecoder", "--checkpoint", str(study["run"]),
         "--input-shape", "1x20x8", "--dynamic-axis", "input:1", "--calib-data", str(study["h5"]),
         "--eval-data", str(study["h5"]), "--data-option", f"metadata_csv={study['meta']}", "--eval-split", "test",
         "--methods", METHODS, "--no-memory", "--runs", "3", "--max-drop", "50", "-o", str(tmp_path)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "weights from the 'model_state_dict' entry of 'checkpoint.pt' (other entries: epoch)" in res.stderr
    assert "not used: lr" in res.stderr and "exported to ONNX and verified against PyTorch" in res.stderr
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["method"] for r in rows] == METHODS.split(",")
    assert all(r["status"] == "ok" for r in rows), [(r["method"], r["error"]) for r in rows]
    assert rows[0]["score"] == "100.0"  # the labels are the float GRU's own decisions on the 2 test trials
    assert all(float(r["energy_mj_estimate"]) > 0 for r in rows)
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["samples"] == 2 and "split = test" in rep["settings"]["eval_data"]
    assert rep["settings"]["leakage_check"].startswith("no overlap between 2 evaluation and 8 calibration")


def test_quantize_and_evaluate_take_the_same_checkpoint_forms(study: dict[str, Path], tmp_path: Path) -> None:
    from edgequant.cli import app

    state = torch.load(study["run"] / "checkpoint.pt")["model_state_dict"]
    ckpt = tmp_path / "sd.pt"
    torch.save({"state_dict": state, "step": 3}, ckpt)
    data = ["--data-option", f"metadata_csv={study['meta']}"]
    res = CliRunner().invoke(
        app,
        ["quantize", "gru_decoder", "--factory", "eqseed.nets:GruDecoder", "--checkpoint", str(ckpt),
         "--input-shape", "1x20x8", "--dynamic-axis", "input:1", "--calib-data", str(study["h5"]), *data,
         "-o", str(tmp_path / "q")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "the 'state_dict' entry of 'sd.pt' (other entries: step)" in " ".join(res.stderr.split())
    quant = next((tmp_path / "q").glob("*.onnx"))
    out = tmp_path / "e.json"
    res = CliRunner().invoke(
        _app(),
        ["evaluate", "gru_decoder", str(quant), "--factory", "eqseed.nets:GruDecoder", "--checkpoint",
         str(study["run"]), "--input-shape", "1x20x8", "--dynamic-axis", "input:1", "--data", str(study["h5"]),
         *data, "--eval-split", "test", "-o", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "weights from the 'model_state_dict' entry of 'checkpoint.pt'" in " ".join(res.stderr.split())
    rep = json.loads(out.read_text())
    assert rep["samples"] == 2 and rep["float"]["top1"] == 1.0  # labels are the float GRU's own decisions


def test_compare_and_evaluate_take_a_torchscript_file(study: dict[str, Path], tmp_path: Path) -> None:
    """A TorchScript file goes through compare and evaluate as through quantize; scores recomputed here
    with this test's own ORT session against labels that are the TorchScript model's own decisions."""
    from eqseed.nets import GruDecoder

    from edgequant.runtime import OrtRuntime

    torch.manual_seed(1)
    net = GruDecoder(8, 16, 4).eval()
    rng = np.random.default_rng(5)
    x_cal, x_ev = (rng.standard_normal((n, 20, 8)).astype(np.float32) for n in (32, 24))
    with torch.no_grad():
        labels = net(torch.from_numpy(x_ev)).argmax(1).numpy()
    scripted = tmp_path / "gru.pt"
    torch.jit.save(torch.jit.trace(net, torch.from_numpy(x_cal[:1])), str(scripted))
    np.savez(tmp_path / "cal.npz", x=x_cal)
    np.savez(tmp_path / "ev.npz", x=x_ev, labels=labels)
    res = CliRunner().invoke(
        _app(),
        ["compare", str(scripted), "--calib-data", str(tmp_path / "cal.npz"), "--eval-data",
         str(tmp_path / "ev.npz"), "--methods", "float,int8-static", "--no-memory", "--runs", "3",
         "--max-drop", "50", "-o", str(tmp_path / "cmp")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "cmp" / "results.csv").open())}
    assert rows["float"]["score"] == "100.0"  # the labels are the scripted model's own decisions
    quant = tmp_path / "cmp" / rows["int8-static"]["model_file"]
    import onnx

    qmodel = onnx.load(str(quant))
    got = OrtRuntime().run(qmodel, {qmodel.graph.input[0].name: x_ev})
    expected = 100.0 * float(np.mean(next(iter(got.values())).argmax(1) == labels))
    assert float(rows["int8-static"]["score"]) == pytest.approx(expected, abs=1e-6)
    out = tmp_path / "e.json"
    res = CliRunner().invoke(
        _app(), ["evaluate", str(scripted), str(quant), "--data", str(tmp_path / "ev.npz"), "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert rep["float"]["top1"] == 1.0
    assert rep["quantized"]["top1"] == pytest.approx(expected / 100.0, abs=1e-6)
