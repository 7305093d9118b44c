"""surgery.replace_modules: fx replacements (modules and functional calls), module-swap fallback, float change."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgequant.torch.surgery import replace_modules


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.GELU()
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.r6 = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.c1(x))
        x = F.silu(self.c2(x))
        x = self.pool(self.r6(x))
        return self.fc(torch.flatten(x, 1))


class Branchy(Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent: torch.fx cannot trace this
            x = x * 1.0
        return super().forward(x)


def _sqnr(ref: torch.Tensor, got: torch.Tensor) -> float:
    r, g = ref.double().numpy(), got.double().numpy()
    return float(10 * np.log10(np.sum(r**2) / np.sum((r - g) ** 2)))


def test_defaults_replace_and_report_float_change() -> None:
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(2, 3, 8, 8)
    new, records = replace_modules(net, example_inputs=x)
    by_name = {r.name: r for r in records}
    assert by_name["act"].old == "GELU" and by_name["act"].new == "ReLU" and by_name["act"].method == "fx"
    assert by_name["r6"].new == "Hardtanh" and by_name["r6"].sqnr_db == float("inf")  # ReLU6 == clip(0, 6)
    assert by_name["pool"].new == "AvgPool2d" and by_name["pool"].max_abs_diff < 1e-6  # 8x8 -> 1: exact
    silu = next(r for r in records if r.old == "F.silu")
    assert silu.new == "ReLU"
    # the GELU record's change, measured here on a hand-made copy
    hand = copy.deepcopy(net)
    hand.act = nn.ReLU()
    with torch.no_grad():
        ref, got = net(x), hand(x)
    assert abs(by_name["act"].sqnr_db - _sqnr(ref, got)) < 1e-3  # dB; fx vs eager float order
    # the new model computes with every replacement at once: no GELU/SiLU left
    with torch.no_grad():
        h = torch.relu(net.c1(x))
        h = torch.relu(net.c2(h)).clamp(0, 6).mean(dim=(2, 3))
        assert torch.allclose(new(x), net.fc(h), atol=1e-5)


def test_module_swap_fallback_when_fx_fails() -> None:
    torch.manual_seed(0)
    net = Branchy().eval()
    new, records = replace_modules(net, {nn.GELU: nn.ReLU, r"r\d": lambda m: nn.Hardtanh(0.0, 6.0)})
    assert {r.name for r in records} == {"act", "r6"}
    assert all(r.method == "module-swap" and "symbolically traced" in r.trace_error for r in records)
    assert all("test_surgery.py:" in r.trace_error and "if x.sum() > 0" in r.trace_error for r in records)
    assert isinstance(new.act, nn.ReLU) and isinstance(new.r6, nn.Hardtanh)
    assert isinstance(net.act, nn.GELU)  # the input model is not modified


class Odd(nn.Module):
    """Channel counts 6 and 10 (ti-npu wants multiples of 4), and a conv whose output is added to x."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 6, 3, padding=1)
        self.b1 = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 10, 3, padding=1)
        self.res = nn.Conv2d(10, 10, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = nn.functional.relu(self.c2(x))
        x = x + self.res(x)
        return self.fc(torch.flatten(self.pool(x), 1))


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 6, 3, padding=1)
        self.b1 = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 10, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.c2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def test_channels_padded_to_the_target_alignment_exactly() -> None:
    torch.manual_seed(0)
    net = Plain().eval()
    with torch.no_grad():
        net.b1.running_mean.uniform_(-1, 1)
        net.b1.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 4, 8, 8)
    new, records = replace_modules(net, example_inputs=x, target="ti-npu")
    pads = {r.name: r for r in records if r.method == "fx-pad"}
    assert pads["c1"].new == "Conv2d(4, 8)" and pads["c2"].new == "Conv2d(8, 12)"
    # exact in real arithmetic; float32 sums over more (zero) channels may round differently
    assert all(r.sqnr_db > 120 and r.max_abs_diff < 1e-5 for r in pads.values()), pads
    m = dict(new.named_modules())
    assert (m["c1"].weight.shape, m["b1"].num_features, m["c2"].weight.shape, m["fc"].weight.shape) == (
        (8, 4, 3, 3), 8, (12, 8, 3, 3), (3, 12)
    )  # fmt: skip
    with torch.no_grad():
        ref = net(x)
        assert torch.allclose(new(x), ref, atol=1e-6, rtol=0)
        assert torch.all(m["c1"].weight[6:] == 0) and torch.all(m["fc"].weight[:, 10:] == 0)
    # the cpu profile has no alignment: nothing is padded
    _new, cpu = replace_modules(net, example_inputs=x, target="cpu")
    assert not [r for r in cpu if r.method == "fx-pad"]


def test_padding_kept_where_readers_would_see_the_channels() -> None:
    torch.manual_seed(0)
    net = Odd().eval()
    x = torch.randn(2, 4, 8, 8)
    new, records = replace_modules(net, example_inputs=x, target="ti-npu")
    pads = {r.name: r for r in records if r.method == "fx-pad"}
    assert pads["c1"].new == "Conv2d(4, 8)"
    assert pads["c2"].new.startswith("kept:") and "add" in pads["c2"].new
    assert pads["res"].new.startswith("kept:")
    with torch.no_grad():
        assert torch.allclose(new(x), net(x), atol=1e-6, rtol=0)
    # a model that does not trace: padding is not applied, and the record says why
    _n, recs = replace_modules(Branchy().eval(), example_inputs=torch.randn(1, 3, 8, 8), target="ti-npu")
    assert any(r.name == "(channel padding)" and "does not trace" in r.new for r in recs)
