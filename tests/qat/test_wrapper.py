"""QATModule / PTQModule: convert() against the exported QDQ model in ORT, QAT vs PTQ at 2 bits, .pth round trip."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgequant.errors import EdgeQuantError
from edgequant.torch import PTQModule, QATModule, load
from tests.qat.training import accuracy, train


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.b2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        x = nn.functional.max_pool2d(x, 2)
        return self.fc(torch.flatten(x, 1))


_TEMPLATES = torch.sign(torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(7)))


def _data(n: int, seed: int, amp: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes: one of four fixed random +-1 templates times ``amp``, under unit Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    return torch.randn(n, 1, 16, 16, generator=g) + amp * _TEMPLATES[y], y


@pytest.fixture(scope="module")
def trained() -> tuple[Net, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x, y = _data(512, 1)
    xt, yt = _data(256, 2)
    net = Net()
    train(net, x, y, 4, 3e-3)
    return net, x, y, xt, yt


def _codes_from_ort(
    path: str, feeds: dict[str, np.ndarray], fused: bool
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every QuantizeLinear output of the QDQ model (its integer codes) and the model output, from ORT:
    with ``fused`` ORT's integer kernels (QLinearConv ...), without it DQ -> float op -> Q as written."""
    m = onnx.load(path)
    q_outs = [n.output[0] for n in m.graph.node if n.op_type == "QuantizeLinear"]
    for name in q_outs:
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    if not fused:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outs = sess.run(None, feeds)
    return dict(zip(q_outs, outs[1:], strict=True)), outs[0]


def test_convert_matches_exported_onnx_within_one_lsb(trained, tmp_path) -> None:
    net, x, y, xt, _yt = trained
    q = QATModule(net, x[:4], weight_bits=4, total_epochs=2)
    train(q, x, y, 2, 1e-3)
    q.eval()
    path = tmp_path / "net_w4a8.onnx"
    result = q.export(x[:4], path)
    conv = q.convert()
    # torch codes at each FixedQuant, keyed by the ONNX tensor it stands for
    codes: dict[str, np.ndarray] = {}
    hooks = []
    for _name, mod in conv.named_modules():
        if type(mod).__name__ == "FixedQuant":

            def hook(m, inp, out, store=codes):
                store[m.tensor] = np.rint(out.detach().numpy() / float(m.scale)) + float(m.zero)

            hooks.append(mod.register_forward_hook(hook))
    plan = json.loads((tmp_path / "net_w4a8.plan.json").read_text())
    acts = {e["name"]: e for e in plan["tensors"] if e["role"] == "activation"}
    for mod in conv.modules():
        if type(mod).__name__ == "FixedQuant":
            # find its tensor by scale/zero (tests must not trust the module's own bookkeeping)
            cands = [
                n
                for n, e in acts.items()
                if np.float32(e["scale"][0]) == float(mod.scale) and e["zero_point"][0] == int(mod.zero)
            ]
            assert cands, "a torch quantizer has no activation of the same scale in the plan"
            mod.tensor = cands[0]
    xb = xt[:64]
    with torch.no_grad():
        out_t = conv(xb).numpy()
    for h in hooks:
        h.remove()
    # as written (DQ -> float op -> Q): the same arithmetic, so every code within 1 (float summation order)
    ort_codes, _ = _codes_from_ort(str(path), {"input": xb.numpy()}, fused=False)
    assert len(ort_codes) == len(codes) >= 4
    for qname, c in ort_codes.items():
        got = codes[qname[: -len("_q")]].reshape(c.shape)
        assert np.max(np.abs(got - c.astype(np.float64))) <= 1, qname
    # ORT's integer kernels (QLinearConv ...) requantize with their own fixed-point rounding: measured on
    # this model, 90-99 % of the codes are identical per tensor (fewer after each requantization), and the first integer layer is within 1
    ort_codes, out_o = _codes_from_ort(str(path), {"input": xb.numpy()}, fused=True)
    diff = {q[:-2]: np.abs(codes[q[:-2]].reshape(c.shape) - c) for q, c in ort_codes.items()}
    assert diff["/Relu_output_0"].max() <= 1
    assert all(np.mean(d == 0) >= 0.85 for d in diff.values())
    # the float output (last Gemm) differs by at most what its input codes differ by, through |W|
    s_flat = acts["/Flatten_output_0"]["scale"][0]
    wq = np.asarray(conv.fc.weight().detach().numpy(), np.float64)
    bound = float(diff["/Flatten_output_0"].max()) * s_flat * np.abs(wq).sum(axis=1).max() + 1e-4
    assert np.max(np.abs(out_t - out_o)) <= bound
    assert np.mean(out_t.argmax(1) == out_o.argmax(1)) >= 0.95
    assert [e for e in plan["tensors"] if e["role"] == "weight"][-1]["scheme"].startswith("Int4")
    # the report and plan beside the model, as quantize writes them
    report = json.loads((tmp_path / "net_w4a8.json").read_text())
    assert report["check"]["loads_in_onnxruntime"] and report["qat"]["epochs_seen"] == 2
    assert result.plan.weights()


def test_qat_recovers_two_bit_accuracy() -> None:
    # a hard task (templates at 0.2 under unit noise): 2-bit weights by PTQ lose 12 points, QAT wins
    # back 10 of them (measured: float 0.60, PTQ 0.48, QAT 0.58)
    torch.manual_seed(0)
    x, y = _data(512, 1, 0.2)
    xt, yt = _data(512, 2, 0.2)
    net = Net()
    train(net, x, y, 6, 3e-3)
    float_acc = accuracy(net, xt, yt)
    ptq = PTQModule(net, x[:4], weight_bits=2)
    with torch.no_grad():
        ptq(x[:256])
    ptq_acc = accuracy(ptq.convert(), xt, yt)
    qat = QATModule(net, x[:4], weight_bits=2, total_epochs=4)
    train(qat, x, y, 4, 2e-3)
    qat_acc = accuracy(qat.convert(), xt, yt)
    assert float_acc > 0.55
    assert qat_acc >= ptq_acc + 0.05, (float_acc, ptq_acc, qat_acc)


def test_pth_round_trip(trained, tmp_path) -> None:
    net, x, _y, xt, _yt = trained
    ptq = PTQModule(net, x[:4])
    with torch.no_grad():
        ptq(x[:128])
    conv = ptq.convert()
    path = ptq.save(tmp_path / "net_int8.pth")
    back = load(path, Net)
    with torch.no_grad():
        assert torch.equal(back(xt), conv(xt))
    # weights_only loading: the file is plain tensors and numbers
    raw = torch.load(str(path), weights_only=True)
    assert raw["format"] == "edgequant.torch/3"
    assert any(v["q"].dtype == torch.int8 for v in raw["layers"].values())


def test_epoch_counting_freezes_bn_and_observers(trained) -> None:
    net, x, y, _xt, _yt = trained
    q = QATModule(net, x[:4], total_epochs=4, num_observer_update_epochs=1)
    assert q.bn_epochs == 2
    train(q, x[:64], y[:64], 1, 1e-3)
    assert q.describe()["bn_frozen"] is False and q.describe()["observers_frozen"] is False
    train(q, x[:64], y[:64], 2, 1e-3)
    d = q.describe()
    assert d["epochs_seen"] == 3 and d["bn_frozen"] and d["observers_frozen"]


def test_bad_input(trained) -> None:
    net, x, _y, _xt, _yt = trained
    with pytest.raises(EdgeQuantError, match="weight bits 3"):
        QATModule(net, x[:4], weight_bits=3)
    with pytest.raises(EdgeQuantError, match="2-bit activations"):
        QATModule(net, x[:4], act_bits=2)

    class Branchy(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return t * 2 if t.sum() > 0 else t

    with pytest.raises(EdgeQuantError, match=r"torch\.fx cannot trace Branchy") as info:
        QATModule(Branchy(), x[:4])
    msg = str(info.value)  # the reason, the model's own line, and the module-swap fallback
    assert "control flow" in msg and "test_wrapper.py:" in msg and "return t * 2 if t.sum() > 0 else t" in msg
    assert "module swapping" in msg


def test_frozen_bn_and_observers_stop_updating(trained) -> None:
    """Freezes after epoch 1: during epoch 1 BN running statistics and observer ranges move; from epoch 2
    on they stay exactly as they were (a learned activation scale may still train; the observer does not)."""
    from edgequant.torch.fake_quant import ActQuantizer

    net, x, y, _xt, _yt = trained
    q = QATModule(net, x[:4], total_epochs=3, num_batch_norm_update_epochs=1, num_observer_update_epochs=1)
    bns = [m for m in q.modules() if isinstance(m, nn.BatchNorm2d)]
    obs = [m for m in q.modules() if isinstance(m, ActQuantizer)]
    assert len(bns) == 2 and obs
    opt = torch.optim.SGD(q.parameters(), lr=1e-3)

    def steps(xs: torch.Tensor, ys: torch.Tensor) -> None:
        for i in range(0, len(xs), 32):
            loss = nn.functional.cross_entropy(q(xs[i : i + 32]), ys[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()

    def bn_state() -> list[torch.Tensor]:
        return [t.clone() for b in bns for t in (b.running_mean, b.running_var)]

    def obs_state() -> list[torch.Tensor]:
        return [torch.stack([o.lo, o.hi]).clone() for o in obs]

    q.train()  # epoch 1
    with torch.no_grad():
        q(x[:32])  # the observers' first batch sets their range
    bn0, ob0 = bn_state(), obs_state()
    steps(x[32:160], y[32:160])
    bn1, ob1 = bn_state(), obs_state()
    assert any(not torch.equal(a, b) for a, b in zip(bn0, bn1, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(ob0, ob1, strict=True))
    q.train()  # epoch 2: frozen
    steps(x[160:320], y[160:320])
    assert q.epoch == 2 and q.describe()["bn_frozen"] and q.describe()["observers_frozen"]
    assert all(torch.equal(a, b) for a, b in zip(bn1, bn_state(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(ob1, obs_state(), strict=True))


def test_bias_calibration_factor_is_refused_not_ignored(trained) -> None:
    net, x, _y, _xt, _yt = trained
    with pytest.raises(EdgeQuantError, match=r"bias_calibration_factor=0\.5 is not implemented"):
        QATModule(net, x[:4], bias_calibration_factor=0.5)


def test_ptq_forward_with_gradients_enabled(trained) -> None:
    """Training mode is refused (with or without gradients); eval mode outside torch.no_grad() calibrates
    exactly as inside it (the observers' ranges are equal) and refuses nothing."""
    from edgequant.torch.fake_quant import ActQuantizer

    net, x, _y, _xt, _yt = trained
    inside, outside = PTQModule(net, x[:4]), PTQModule(net, x[:4])
    with torch.no_grad():
        inside(x[:64])
    with torch.enable_grad():
        out = outside(x[:64])
    assert out.requires_grad  # the float weights' autograd graph; the observers recorded none

    def ranges(m: PTQModule) -> list[tuple[float, float]]:
        return [(float(a.lo), float(a.hi)) for a in m.modules() if isinstance(a, ActQuantizer)]

    assert ranges(inside) == ranges(outside) and all(np.isfinite(r).all() for r in ranges(inside))
    for grad in (True, False):
        outside.train()
        with torch.set_grad_enabled(grad), pytest.raises(EdgeQuantError, match="PTQModule calibrates"):
            outside(x[:8])
    outside.eval()
    before = ranges(outside)
    with torch.no_grad():
        outside(x[:8] * 0.0)  # inside the range: nothing widens, nothing else changed by the refusals
    assert ranges(outside) == before


def _ln_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 16), nn.LayerNorm(16), nn.Linear(16, 4)
    )


def test_pth_holds_the_float_tensors_outside_integer_layers(tmp_path) -> None:
    """A trained LayerNorm is no Conv/Linear: the .pth held no copy of it, so load(path, factory) with a
    fresh factory ran the factory's LayerNorm (max |diff| 3.1 on outputs of ~4.5). Now the file holds
    it; the loaded module equals convert() and matches the exported ONNX model in ORT, and a file
    loaded on another architecture is refused."""
    torch.manual_seed(0)
    net = _ln_net()
    with torch.no_grad():
        net[4].weight.mul_(3.0)
        net[4].bias.add_(0.5)
    x = torch.randn(64, 3, 5, 5)
    ptq = PTQModule(net, x[:4])
    with torch.no_grad():
        ptq(x)
    path = ptq.save(tmp_path / "ln_int8.pth")
    back = load(path, _ln_net)  # fresh weights: every float tensor must come from the file
    ptq.export(x[:4], tmp_path / "ln_int8.onnx")
    sess = ort.InferenceSession(str(tmp_path / "ln_int8.onnx"), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        got = back(x).numpy()
        assert torch.equal(back(x), ptq.convert()(x))
    err = got - ref
    sqnr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum(err.astype(np.float64) ** 2))
    assert sqnr > 60.0, sqnr  # measured 141.6 dB: both dequantize as ONNX does
    raw = torch.load(str(path), weights_only=True)
    assert torch.equal(raw["float"]["4.weight"], net[4].weight.detach())
    assert not any(k.startswith(("0.", "3.", "5.")) for k in raw["float"])  # integer layers: codes only

    def other() -> nn.Module:
        m = _ln_net()
        m[4] = nn.LayerNorm(16, elementwise_affine=False)
        return m

    with pytest.raises(EdgeQuantError, match="float tensor"):
        load(path, other)
