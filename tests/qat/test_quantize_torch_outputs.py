"""`edgequant quantize` on a PyTorch input writes a PyTorch model too: the integer `.pth` (static), loaded
with `edgequant.torch.load` and run against the written ONNX model in our own ORT session; a torch.ao
dynamic-quantized TorchScript `.pt` for LSTM/GRU models (`--method dynamic|fp16`); the `.pth` of a TorchScript
input, loaded onto `torch.jit.load` of the archive."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.errors import EdgeQuantError
from edgequant.torch import load

MODEL_CODE = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, stride=2)
        self.fc = nn.Linear(8 * 4 * 4, 4)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.c2(x))
        return self.fc(torch.flatten(x, 1))

class Seq(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(6, 16, batch_first=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])

def build():
    return Net()

def lstm():
    return Seq("lstm")

def gru():
    return Seq("gru")
"""


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    (tmp_path / "eqnets.py").write_text(MODEL_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import eqnets  # type: ignore[import-not-found]

    importlib.reload(eqnets)
    (tmp_path / "ck").mkdir()
    torch.manual_seed(0)
    net = eqnets.build()
    with torch.no_grad():  # non-trivial BN statistics, so the fold matters
        net.b1.running_mean.uniform_(-0.5, 0.5)
        net.b1.running_var.uniform_(0.5, 2.0)
    torch.save(net.state_dict(), tmp_path / "ck" / "net.pth")
    for kind in ("lstm", "gru"):
        torch.save(getattr(eqnets, kind)().state_dict(), tmp_path / "ck" / f"{kind}.pth")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((96, 1, 8, 8)).astype(np.float32))
    return tmp_path, eqnets


def _quantize(tmp, *args: str) -> None:
    res = CliRunner().invoke(app, ["quantize", *args, "-o", str(tmp / "out")])
    assert res.exit_code == 0, res.output


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def test_static_pth_round_trips_within_one_lsb_of_the_onnx_model(tmp) -> None:
    tmp, eqnets = tmp
    ck = str(tmp / "ck" / "net.pth")
    _quantize(tmp, ck, "--factory", "eqnets:build", "--checkpoint", ck, "--input-shape", "1x1x8x8",
              "--calib-data", str(tmp / "x.npy"))  # fmt: skip
    pth, onnx_path = tmp / "out" / "net_int8.pth", tmp / "out" / "net_int8.onnx"
    report = json.loads((tmp / "out" / "net_int8.json").read_text())
    assert report["files"]["torch_model"] == "net_int8.pth" and pth.is_file()
    raw = torch.load(str(pth), weights_only=True)  # plain tensors and numbers
    assert {v["q"].dtype for v in raw["layers"].values()} == {torch.int8} and len(raw["layers"]) == 3
    module = load(pth, eqnets.build)
    x = np.random.default_rng(5).standard_normal((64, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    # the head's output is float: one LSB on every input of the last Gemm moves an output by at most
    # s_x * max_j sum_i |W_ji|; the weights and s_x are read from the written ONNX file
    m = onnx.load(str(onnx_path))
    gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
    dq = {n.output[0]: n for n in m.graph.node if n.op_type == "DequantizeLinear"}
    s_x = float(_init(m, dq[gemm.input[0]].input[1]))
    wq = dq[gemm.input[1]]
    col = (-1, 1)  # per output channel (axis 0 of the Gemm's W)
    w = (_init(m, wq.input[0]) - _init(m, wq.input[2]).reshape(col)) * _init(m, wq.input[1]).reshape(col)
    bound = s_x * float(np.abs(w).sum(axis=1).max())
    assert float(np.max(np.abs(got - ref))) <= bound
    # and it is the quantized model, not the float one: the float PyTorch module is further away
    float_net = eqnets.build()
    float_net.load_state_dict(torch.load(ck, weights_only=True))
    with torch.no_grad():
        float_y = float_net.eval()(torch.from_numpy(x)).numpy()
    assert float(np.max(np.abs(float_y - ref))) > 4 * float(np.max(np.abs(got - ref)))


@pytest.mark.parametrize(
    ("kind", "method", "dtype"), [("lstm", "dynamic", "qint8"), ("gru", "fp16", "float16")]
)
def test_rnn_dynamic_torch_model_loads_in_plain_pytorch(tmp, kind: str, method: str, dtype: str) -> None:
    tmp, eqnets = tmp
    ck = str(tmp / "ck" / f"{kind}.pth")
    _quantize(tmp, ck, "--factory", f"eqnets:{kind}", "--checkpoint", ck, "--input-shape", "4x10x6",
              "--method", method)  # fmt: skip
    report = next(json.loads(p.read_text()) for p in (tmp / "out").glob("*.json") if "plan" not in p.name)
    section = report["torch"]
    assert dtype in section["kind"] and report["files"]["torch_model"] == section["file"]
    loaded = torch.jit.load(str(tmp / "out" / section["file"]))  # plain PyTorch, no EdgeQuant
    code = loaded.code + "".join(c.code for c in loaded.children() if hasattr(c, "code"))
    assert "quantized" in code or "fp16" in code or "qint8" in str(loaded.graph)
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((8, 10, 6)).astype(np.float32))
    float_net = getattr(eqnets, kind)()
    float_net.load_state_dict(torch.load(ck, weights_only=True))
    with torch.no_grad():
        ref, got = float_net.eval()(x).numpy(), loaded(x).numpy()
    db = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - got).astype(np.float64) ** 2))
    # measured: LSTM qint8 ~40 dB, GRU fp16 ~80 dB; quantized, so not bit-exact
    assert (30.0 if method == "dynamic" else 60.0) < db < 200.0
    # beside the ONNX model's SQNR in the report, on the same (synthetic, said so) samples
    assert set(section["output_sqnr_db"]) == set(report["check"]["output_sqnr_db"])
    assert section["onnx_output_sqnr_db"] == report["check"]["output_sqnr_db"]


def test_torchscript_input_writes_a_pth_that_round_trips(tmp) -> None:
    """`quantize net.pt` (TorchScript) writes net_int8.pth; load(path, torch.jit.load(net.pt)) runs it, within
    1 LSB at the head's input of the written ONNX model in our own ORT session."""
    tmp, eqnets = tmp
    net = eqnets.build().eval()
    with torch.no_grad():  # non-trivial BN statistics, so the fold matters
        net.b1.running_mean.uniform_(-0.5, 0.5)
        net.b1.running_var.uniform_(0.5, 2.0)
    ts = tmp / "ck" / "ts.pt"
    torch.jit.save(torch.jit.trace(net, torch.randn(1, 1, 8, 8)), str(ts))
    res = CliRunner().invoke(
        app,
        [
            "quantize",
            str(ts),
            "--input-shape",
            "1x1x8x8",
            "--calib-data",
            str(tmp / "x.npy"),
            "-o",
            str(tmp / "out"),
        ],
    )
    assert res.exit_code == 0, res.output
    pth, onnx_path = tmp / "out" / "ts_int8.pth", tmp / "out" / "ts_int8.onnx"
    report = json.loads((tmp / "out" / "ts_int8.json").read_text())
    assert report["files"]["torch_model"] == "ts_int8.pth" and "torch.jit.load" in report["torch"]["kind"]
    raw = torch.load(str(pth), weights_only=True)
    assert raw["torchscript"]["input_shapes"] == [[1, 8, 8]] and len(raw["layers"]) == 3
    module = load(pth, torch.jit.load(str(ts)))
    x = np.random.default_rng(5).standard_normal((64, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    m = onnx.load(str(onnx_path))
    gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
    dq = {n.output[0]: n for n in m.graph.node if n.op_type == "DequantizeLinear"}
    s_x = float(_init(m, dq[gemm.input[0]].input[1]))
    wq = dq[gemm.input[1]]
    w = (_init(m, wq.input[0]) - _init(m, wq.input[2]).reshape(-1, 1)) * _init(m, wq.input[1]).reshape(-1, 1)
    assert float(np.max(np.abs(got - ref))) <= s_x * float(np.abs(w).sum(axis=1).max())
    with torch.no_grad():  # the quantized model, not the float one
        float_y = net(torch.from_numpy(x)).numpy()
    assert float(np.max(np.abs(float_y - ref))) > 4 * float(np.max(np.abs(got - ref)))
    # a file written from a Python module is not loaded onto a TorchScript archive (and vice versa names it)
    ck = str(tmp / "ck" / "net.pth")
    _quantize(tmp, ck, "--factory", "eqnets:build", "--checkpoint", ck, "--input-shape", "1x1x8x8",
              "--calib-data", str(tmp / "x.npy"))  # fmt: skip
    with pytest.raises(EdgeQuantError, match="written from a Python module"):
        load(tmp / "out" / "net_int8.pth", torch.jit.load(str(ts)))
