"""TI Tensorlab-style configs as recipes: mode 2 on an NPU device selects ti-npu; refusals for the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tinymodels import conv_net, images

import edgequant
from edgequant.errors import RecipeError
from edgequant.recipe import load_recipe


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_mode_two_on_an_npu_device_selects_ti_npu(tmp_path: Path) -> None:
    p = _write(tmp_path, "common: {target_device: F28P55}\ntraining: {quantization: 2, quantization_method: PTQ,\n"
               "  quantization_weight_bitwidth: 4, quantization_activation_bitwidth: 8}\n")  # fmt: skip
    r = load_recipe(p)
    assert (r.target, r.method, r.weight_bits, r.act_bits) == ("ti-npu", "static", 4, 8)
    q = edgequant.quantize(conv_net(), {"x": images(16)}, p)
    assert q.report["compliance"]["target"] == "ti-npu"
    w = next(e for e in q.plan.tensors.values() if e.role == "weight")
    assert w.spec.bits == 4 and w.spec.granularity.value == "per_channel"
    acts = [e for e in q.plan.tensors.values() if e.role == "activation"]
    assert all(np.log2(e.scale[0]).is_integer() for e in acts if e.scale)


def test_a_device_without_npu_runs_generic_with_a_note(tmp_path: Path) -> None:
    p = _write(tmp_path, "common: {target_device: F28P65}\ntraining: {quantization: 2}\n")
    notes: list[str] = []
    assert load_recipe(p, notes).target == "cpu"
    assert notes and "F28P65 has no NPU" in notes[0]
    q = edgequant.quantize(conv_net(), {"x": images(16)}, p)
    assert any("F28P65 has no NPU" in n for n in q.report["notes"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("common: {target_device: F28P55}\ntraining: {quantization: 0}\n", "nothing to quantize"),
        ("common: {target_device: F28P55}\ntraining: {quantization: 2, quantization_method: QAT}\n", "QAT"),
        ("common: {target_device: F28P55}\ntraining: {quantization: 2, quantisation_method: PTQ}\n",
         "unknown key 'training.quantisation_method'"),
        ("common: {target_device: F99}\ntraining: {quantization: 2}\n", "not a known device"),
        ("common: {target_device: F28P55}\ntraining: {quantization: 2, quantization_activation_bitwidth: 4}\n",
         "act_bits=4 conflicts with target 'ti-npu'"),
    ],
)  # fmt: skip
def test_refusals(tmp_path: Path, text: str, message: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(RecipeError, match=message):
        edgequant.quantize(conv_net(), {"x": images(8)}, p)
