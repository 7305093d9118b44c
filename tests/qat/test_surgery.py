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
    assert isinstance(new.act, nn.ReLU) and isinstance(new.r6, nn.Hardtanh)
    assert isinstance(net.act, nn.GELU)  # the input model is not modified
