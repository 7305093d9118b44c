"""PyTorch modules quantize end to end through the Python API (torch is the optional extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tinymodels import optional

import edgequant
from edgequant.runtime import OrtRuntime

torch = optional("torch")  # skips locally without the extra, fails in CI


class SmallNet(torch.nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        h = h + torch.relu(self.dw(h))
        return self.fc(h.mean(dim=(2, 3)))


def test_module_with_array_calibration_quantizes_and_saves_float(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = SmallNet().eval()
    calib = np.random.default_rng(0).standard_normal((64, 3, 16, 16)).astype(np.float32)
    r = edgequant.quantize(net, calib, example_inputs=torch.randn(1, 3, 16, 16), calib_samples=64)
    assert r.report["import"]["max_abs_diff"] < 1e-4
    assert r.report["integer_weights"] == 3
    paths = r.save(tmp_path)
    assert (tmp_path / "smallnet_float.onnx").is_file() and paths.model.name == "smallnet_int8_ha8c010.onnx"
    x = calib[:8]
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    got = OrtRuntime().run(paths.model, {r.float_model.graph.input[0].name: x})
    out = next(iter(got.values()))
    assert 10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2)) > 25


def test_module_without_example_inputs_is_refused() -> None:
    with pytest.raises(edgequant.ModelError, match="needs example inputs"):
        edgequant.quantize(SmallNet(), None)
