"""``QATModule.export(..., format="ti-npu-int")``: TI's integer-only NPU form beside the QDQ model, the QDQ
model compliant under ``edgequant check --target ti-npu``, and the integer model run in our own ORT session."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.errors import RecipeError
from edgequant.torch import QATModule
from tests.qat.test_wrapper import Net, _data
from tests.qat.training import train


def _run(path: str, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_qat_export_ti_npu_int_passes_the_check(tmp_path) -> None:
    torch.manual_seed(0)
    x, y = _data(256, 1)
    xt, _yt = _data(128, 2)
    net = Net()
    train(net, x, y, 2, 3e-3)
    qat = QATModule(net, x[:4], target="ti-npu", weight_bits=8, total_epochs=2)
    train(qat, x, y, 2, 1e-3)
    path = tmp_path / "net_int8.onnx"
    result = qat.export(x[:4], path, check_data={"input": xt[:64].numpy()}, format="ti-npu-int")
    int_path = tmp_path / "net_int8_ti-npu-int.onnx"
    report = json.loads((tmp_path / "net_int8.json").read_text())
    assert report["files"]["ti_npu_int"] == int_path.name and report["recipe"]["format"] == "ti-npu-int"
    assert report["ti_npu_int"]["per_layer_max_lsb"] <= 1 and result.plan.weights()
    integer = onnx.load(str(int_path))
    assert not any(n.op_type == "DequantizeLinear" for n in integer.graph.node)
    # the QDQ model the integer form is made from passes the target check (exit 0: compliant)
    res = CliRunner().invoke(app, ["check", str(path), "--target", "ti-npu", "--json"])
    assert res.exit_code == 0, res.output
    check = json.loads(res.output)
    assert check["compliant"] and check["findings"] == [] and check["nodes_on_target"] == check["nodes"]
    # our own sessions: the integer model against the QDQ model on held-out inputs
    xb = xt[64:].numpy()
    q, i = _run(str(path), xb), _run(str(int_path), xb)
    db = 10 * np.log10(
        np.sum(q.astype(np.float64) ** 2) / max(np.sum((q - i).astype(np.float64) ** 2), 1e-30)
    )
    # measured: 52.0 dB, top-1 agreement 1.0 (per layer: at most 1 LSB, the NPU's half-up rounding)
    assert db > 40.0 and np.mean(q.argmax(1) == i.argmax(1)) >= 0.95


def test_ti_npu_int_needs_the_ti_npu_target(tmp_path) -> None:
    torch.manual_seed(0)
    x, _y = _data(64, 1)
    qat = QATModule(Net(), x[:4], total_epochs=1)
    qat.train()
    qat(x)
    with pytest.raises(RecipeError, match="target 'ti-npu' only"):
        qat.export(x[:4], tmp_path / "net_int8.onnx", format="ti-npu-int")
    assert not list(tmp_path.iterdir())
