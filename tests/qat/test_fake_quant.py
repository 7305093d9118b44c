"""Fake quantization: the ONNX grid forward, straight-through gradients, LSQ step gradients, power-of-two steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgequant.schemes.spec import Granularity, QuantSpec, ScaleRule
from edgequant.torch.fake_quant import ActQuantizer, WeightQuantizer, fake_quant


def test_forward_is_the_onnx_grid_and_gradients_pass_straight_through_inside_it() -> None:
    x = torch.tensor([-3.0, -0.26, 0.25, 0.74, 1.0, 5.0], requires_grad=True)
    s, z = torch.tensor(0.5), torch.tensor(0.0)
    y = fake_quant(x, s, z, -4, 3)  # grid [-2.0, 1.5]
    # numpy, half to even as ONNX QuantizeLinear: 0.25/0.5 = 0.5 -> 0, 0.74/0.5 = 1.48 -> 1
    ref = (np.clip(np.round(x.detach().numpy() / 0.5), -4, 3)) * 0.5
    assert np.array_equal(y.detach().numpy(), ref)
    y.sum().backward()
    assert x.grad is not None
    # inside the grid: d y / d x = 1 (STE through round); outside (clamped): 0
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_lsq_step_gets_the_gradient_of_the_rounding_error() -> None:
    spec = QuantSpec(bits=8, signed=True, symmetric=True)
    q = ActQuantizer(spec, learn=True)
    q.train()
    x = torch.tensor([[0.3, -0.7, 1.1, 2.0]])  # one sample of 4 features
    q(x)  # the observer sets s from the range
    q.freeze_observer()
    s = float(q.qparams()[0].reshape(-1)[0])
    q.param.grad = None
    q(x).sum().backward()
    assert q.param.grad is not None
    # LSQ: d x_hat / d s = round(x/s) - x/s inside the grid, scaled by 1/sqrt(N * qmax), N features per sample
    v = x.double().numpy() / s
    expected = float(np.sum(np.round(v) - v)) / np.sqrt(x.numel() * spec.qmax)
    assert abs(float(q.param.grad) - expected) < 1e-4 * max(1.0, abs(expected))


def test_power_of_two_weights_learn_the_exponent_and_stay_powers_of_two() -> None:
    spec = QuantSpec(
        bits=4, signed=True, symmetric=True, granularity=Granularity.PER_CHANNEL, axis=0,
        scale_rule=ScaleRule.POWER_OF_TWO,
    )  # fmt: skip
    w = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    q = WeightQuantizer(spec, w, 0, learn=True)
    q.train()
    opt = torch.optim.Adam(q.parameters(), lr=0.2)
    target = 3.0 * w  # a much wider weight: the exponents must move up
    for _ in range(40):
        loss = ((q(target) - target) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    scale = q.qparams()[0]
    assert np.all(np.log2(scale) == np.round(np.log2(scale)))  # exported scales are powers of two
    start = WeightQuantizer(spec, w, 0, learn=False).qparams()[0]
    assert np.any(scale > start)  # the exponent was learned, not kept


def test_observer_qparams_on_tensors_equal_the_numpy_rule() -> None:
    """The observers' per-batch scale/zero (Python floats) are exactly schemes.qparams_from_range's (numpy)."""
    from edgequant.schemes.qparams import qparams_from_range
    from edgequant.torch.fake_quant import range_qparams

    rng = np.random.default_rng(0)
    ranges = [(0.0, 0.0), (0.5, 3.0), (-2.0, -0.1), (-1e-9, 2e-9)]
    ranges += [tuple(sorted(rng.normal(0, 10 ** rng.uniform(-4, 3), 2).tolist())) for _ in range(200)]
    specs = [
        QuantSpec(bits=b, signed=sg, symmetric=sy)
        for b in (4, 8, 16)
        for sg in (True, False)
        for sy in (True, False)
        if not (b == 16 and not sg)
    ]
    for spec in specs:
        for lo, hi in ranges:
            lo32, hi32 = float(np.float32(lo)), float(np.float32(hi))  # the observer holds float32 ranges
            s, z = range_qparams(lo32, hi32, spec)
            s_ref, z_ref = qparams_from_range(lo32, hi32, spec)
            assert s == float(np.asarray(s_ref).reshape(())), (spec, lo, hi)
            assert z == int(np.asarray(z_ref).reshape(())), (spec, lo, hi)


def test_fused_node_gives_the_grid_the_ste_mask_and_lsq_gradients_per_channel() -> None:
    """fake_quant_ste (one autograd node) against numpy: values, d/dx, and d/ds per channel with a zero point."""
    from edgequant.torch.fake_quant import fake_quant_ste

    g = torch.Generator().manual_seed(3)
    x = (3.0 * torch.randn(5, 4, 6, generator=g)).requires_grad_()
    s = torch.tensor([0.05, 0.2, 0.5, 1.0]).reshape(1, 4, 1).requires_grad_()
    z = np.array([0.0, 3.0, -2.0, 7.0]).reshape(1, 4, 1)
    qmin, qmax, gf = -8, 7, 0.25
    y = fake_quant_ste(x, s, torch.from_numpy(qmin - z).float(), torch.from_numpy(qmax - z).float(), gf)
    w = torch.randn(5, 4, 6, generator=g)  # upstream gradient
    (y * w).sum().backward()
    xn, sn, wn = x.detach().double().numpy(), s.detach().double().numpy(), w.double().numpy()
    v = xn / sn
    r = np.round(v) + z
    q = np.clip(r, qmin, qmax)
    assert np.allclose(y.detach().numpy(), (q - z) * sn, rtol=0, atol=1e-6)
    inside = (r >= qmin) & (r <= qmax)
    assert x.grad is not None and np.array_equal(x.grad.numpy(), np.where(inside, wn, 0.0).astype(np.float32))
    ds = np.where(inside, np.round(v) - v, q - z)  # LSQ: rounding error inside, qmin - z / qmax - z outside
    assert s.grad is not None
    assert np.allclose(s.grad.numpy().reshape(-1), gf * (wn * ds).sum(axis=(0, 2)), rtol=1e-5, atol=1e-5)
    assert 0 < inside.mean() < 1  # both regions were exercised


def test_bn_simulation_equals_rescaling_the_convolution_output() -> None:
    """Training with BN simulation: conv(x, Q(W f)) / f, then BatchNorm on batch statistics (torch.ao's form),
    computed here with plain functional calls; the layer applies 1/f to the weight instead."""
    from edgequant.schemes.spec import QuantSpec
    from edgequant.torch.layers import QuantLayer

    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 6, 3, padding=1, bias=True), nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.running_var.uniform_(0.5, 2.0)
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.weight.uniform_(0.5, 1.5)
    layer = QuantLayer(conv, bn)
    spec = QuantSpec(bits=4, signed=True, symmetric=True, granularity=Granularity.PER_CHANNEL, axis=0)
    layer.wq = WeightQuantizer(spec, layer.folded_weight().detach(), 0, learn=True)
    layer.train()
    x = torch.randn(8, 3, 5, 5)
    rv, rm = bn.running_var.clone(), bn.running_mean.clone()
    out = layer(x)
    with torch.no_grad():
        f = bn.weight / torch.sqrt(rv + bn.eps)
        scale, zero = (torch.from_numpy(a) for a in layer.wq.qparams())
        wf = conv.weight * f.reshape(-1, 1, 1, 1)
        wq = (torch.clamp(torch.round(wf / scale.reshape(-1, 1, 1, 1)), -8, 7)) * scale.reshape(-1, 1, 1, 1)
        y = nn.functional.conv2d(x, wq, None, padding=1) / f.reshape(1, -1, 1, 1) + conv.bias.reshape(
            1, -1, 1, 1
        )
        ref = nn.functional.batch_norm(
            y, rm.clone(), rv.clone(), bn.weight, bn.bias, True, bn.momentum, bn.eps
        )
    assert torch.all(zero == 0)
    assert torch.allclose(out, ref, atol=1e-5, rtol=0), float((out - ref).abs().max())


def test_learned_weight_scales_get_lsq_gradients_per_channel() -> None:
    """A WeightQuantizer with learned scales (one node from the parameter): its values and d/dp against numpy,
    LSQ's gradient times 1/sqrt(N · qmax) per channel, N = elements per channel."""
    spec = QuantSpec(bits=4, signed=True, symmetric=True, granularity=Granularity.PER_CHANNEL, axis=0)
    g = torch.Generator().manual_seed(5)
    w0 = torch.randn(6, 3, 2, 2, generator=g)
    q = WeightQuantizer(spec, w0, 0, learn=True)
    q.train()
    with torch.no_grad():
        q.param.mul_(0.6)  # narrower than the weights' range: some clamping
        q.param[1].neg_()  # a negative parameter: the scale is |p|
    w = w0.clone().requires_grad_()
    up = torch.randn(6, 3, 2, 2, generator=g)
    (q(w) * up).sum().backward()
    p = q.param.detach().double().numpy().reshape(-1, 1, 1, 1)
    s, wn, un = np.abs(p), w0.double().numpy(), up.double().numpy()
    v = wn / s
    r = np.round(v)
    qv = np.clip(r, -8, 7)
    assert np.allclose(q(w0).detach().numpy(), qv * s, rtol=0, atol=1e-6)
    inside = (r >= -8) & (r <= 7)
    assert 0 < inside.mean() < 1
    assert w.grad is not None and np.array_equal(w.grad.numpy(), np.where(inside, un, 0.0).astype(np.float32))
    gf = 1.0 / np.sqrt(12 * 7)
    ds = np.where(inside, r - v, qv)
    expected = gf * (un * ds).sum(axis=(1, 2, 3)) * np.sign(p.reshape(-1))
    assert q.param.grad is not None
    assert np.allclose(q.param.grad.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("simulate", [True, False])
@pytest.mark.parametrize("per_channel", [True, False])
def test_fused_fold_quant_node_has_the_gradients_of_the_composition(
    simulate: bool, per_channel: bool
) -> None:
    """QuantLayer's one-node weight path (BN fold, learned-scale fake quantization, BN-simulation rescale)
    against autograd through the plain composition: output and d/dW, d/dγ, d/dp, in float64."""
    from edgequant.torch.layers import QuantLayer

    torch.manual_seed(1)
    conv, bn = nn.Conv2d(3, 5, 3, bias=False).double(), nn.BatchNorm2d(5).double()
    with torch.no_grad():
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
    layer = QuantLayer(conv, bn)
    gran = Granularity.PER_CHANNEL if per_channel else Granularity.PER_TENSOR
    spec = QuantSpec(bits=4, signed=True, symmetric=True, granularity=gran, axis=0 if per_channel else None)
    layer.wq = WeightQuantizer(spec, layer.folded_weight().detach(), 0, learn=True).double()
    with torch.no_grad():
        layer.wq.param.mul_(0.7)  # some weights clamped
    layer.train()
    out = layer._fused(simulate)
    assert out is not None
    up = torch.randn(out.shape, dtype=torch.float64)
    (out * up).sum().backward()
    got = [t.grad.clone() for t in (conv.weight, bn.weight, layer.wq.param)]  # type: ignore[union-attr]
    # the reference: every step an ordinary autograd op
    w, gamma, p = (t.detach().clone().requires_grad_() for t in (conv.weight, bn.weight, layer.wq.param))
    f = (gamma / torch.sqrt(bn.running_var + bn.eps)).reshape(-1, 1, 1, 1)
    u = w * f
    gf = layer.wq.grad_factor(w.numel())
    pg = (p - p * gf).detach() + p * gf  # LSQ's gradient scale
    s = pg.abs().clamp_min(1e-12).reshape((-1, 1, 1, 1) if per_channel else ())
    v = u / s
    y = torch.clamp(v + (torch.round(v) - v).detach(), -8, 7) * s
    ref = y / f if simulate else y
    (ref * up).sum().backward()
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    for a, b in zip(got, (w.grad, gamma.grad, p.grad), strict=True):
        assert b is not None and torch.allclose(a, b, rtol=1e-9, atol=1e-12), (a, b)
    inside = (torch.round(v) >= -8) & (torch.round(v) <= 7)
    assert 0 < float(inside.double().mean()) < 1
