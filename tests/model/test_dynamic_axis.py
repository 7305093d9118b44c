"""--dynamic-axis input:1 exports a dynamic time axis, verified at two lengths; a 17-step trial then
runs on a model exported at 20 steps (checked against PyTorch itself)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tinymodels import optional

torch = optional("torch")  # skips locally without the extra, fails in CI
from torch import nn  # noqa: E402

from edgequant.commands.torch_input import parse_dynamic_axes  # noqa: E402
from edgequant.errors import RecipeError  # noqa: E402
from edgequant.model.io import load_model  # noqa: E402
from edgequant.model.torch_import import export_torch  # noqa: E402
from edgequant.runtime import OrtRuntime  # noqa: E402


class Gru(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(6, 10, batch_first=True)
        self.head = nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(x)[0])


def test_dynamic_time_axis_runs_other_lengths(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = Gru().eval()
    rep = export_torch(
        m, torch.randn(2, 20, 6), tmp_path / "g.onnx", dynamic_axes=parse_dynamic_axes(["input:1"])
    )
    assert rep.sqnr_db > 60
    onnx_model = load_model(tmp_path / "g.onnx")
    dims = onnx_model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", "input_dim1", 6]
    for steps in (17, 33):
        x = np.random.default_rng(steps).standard_normal((3, steps, 6)).astype(np.float32)
        got = OrtRuntime().run(onnx_model, {"input": x})
        ref = m(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(next(iter(got.values())), ref, atol=1e-5)


def test_fixed_axis_without_the_flag_and_bad_axes(tmp_path: Path) -> None:
    m = Gru().eval()
    export_torch(m, torch.randn(2, 20, 6), tmp_path / "f.onnx")
    dims = load_model(tmp_path / "f.onnx").graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 20  # without --dynamic-axis the time axis is fixed at export
    with pytest.raises(RecipeError, match=r"names input\(s\) \['x'\]; the model's inputs are \['input'\]"):
        export_torch(m, torch.randn(2, 20, 6), tmp_path / "b.onnx", dynamic_axes={"x": [1]})
    with pytest.raises(RecipeError, match="axis 0 is the batch"):
        export_torch(m, torch.randn(2, 20, 6), tmp_path / "b.onnx", dynamic_axes={"input": [0]})
    with pytest.raises(RecipeError, match="is not INPUT:AXIS"):
        parse_dynamic_axes(["input"])
