"""QuantPlan JSON round trip, QuantSpec validation, and recipes (YAML mirrors flags; unknown keys)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tinymodels import conv_net, images

import edgequant
from edgequant.plan import QuantPlan
from edgequant.recipe import from_dict, load_recipe, preset
from edgequant.schemes import QuantSpec, qparams_from_range, quantize_weight


def test_plan_json_round_trips_and_records_everything() -> None:
    r = edgequant.quantize(conv_net(), {"x": images(16)})
    again = QuantPlan.from_json(r.plan.to_json())
    assert again == r.plan
    w = again.tensors["wd"]
    assert (w.spec.bits, w.spec.signed, w.spec.symmetric, w.spec.granularity.value, w.spec.axis) == (
        8,
        True,
        True,
        "per_channel",
        0,
    )
    assert w.spec.scale_rule.value == "float" and len(w.zero_point or []) == 8
    act = again.tensors["r1"]
    assert act.lo is not None and act.scale and act.zero_point is not None


def test_plan_records_skip_reasons() -> None:
    r = edgequant.quantize(conv_net(), {"x": images(16)}, exclude=["gap"])
    (gap,) = [d for d in r.plan.nodes if d.node == "gap"]
    assert not gap.quantized and gap.reason == "excluded by the user ('gap')."


def test_spec_validates_itself() -> None:
    with pytest.raises(edgequant.RecipeError, match="bit width 3 is not supported"):
        QuantSpec(bits=3)
    with pytest.raises(edgequant.RecipeError, match="needs an axis"):
        QuantSpec(granularity="per_channel")
    assert QuantSpec(bits=4, narrow_range=True).qmin == -7
    assert QuantSpec(bits=8, reduce_range=True).qmax == 63
    assert QuantSpec(bits=8, signed=False, symmetric=False, granularity="per_channel", axis=0).name == (
        "UInt8AsymmetricPerChannel"
    )


def test_qparams_math() -> None:
    spec = QuantSpec(bits=8, signed=False, symmetric=False)
    s, z = qparams_from_range(-1.0, 3.0, spec)
    assert float(s) == pytest.approx(4.0 / 255) and int(z) == 64
    w = np.array([[1.0, -2.0], [0.5, 0.25]], np.float32)
    q, s2, _z2 = quantize_weight(w, QuantSpec(bits=8, narrow_range=True, granularity="per_channel", axis=0))
    assert s2.tolist() == pytest.approx([2 / 127, 0.5 / 127]) and q.tolist() == [[64, -127], [127, 64]]


def test_yaml_recipe_mirrors_flags(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("method: static\nweight-bits: 4\nper_channel: false\nexclude: [fc]\ncalib-method: entropy\n")
    r = load_recipe(p)
    assert (r.weight_bits, r.per_channel, r.exclude, r.calib_method) == (4, False, ("fc",), "entropy")
    res = edgequant.quantize(conv_net(), {"x": images(16)}, p)
    assert (
        res.tag == "w4a8_pt_entropy_h218292"
        and not next(d for d in res.plan.nodes if d.node == "fc").quantized
    )


def test_unknown_recipe_key_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("method: static\nweight_bit: 4\n")
    with pytest.raises(
        edgequant.RecipeError, match=r"unknown key 'weight_bit' in recipe.*did you mean 'weight_bits'"
    ):
        load_recipe(p)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"method": "int3"}, "method = 'int3' is not allowed; allowed: static, dynamic, fp16, weight-only."),
        ({"weight_bits": 3}, "weight bits 3 is impossible; allowed: 8, 4, 2, 1 (binary), ternary."),
        ({"act_bits": 12}, "activation bits 12 is impossible; allowed: 4, 8, 16."),
        ({"per_channel": "yes"}, "per_channel must be true or false, got 'yes'."),
    ],
)
def test_impossible_settings(data: dict[str, object], message: str) -> None:
    with pytest.raises(edgequant.RecipeError) as info:
        from_dict(data)
    assert info.value.detail == message


def test_presets() -> None:
    assert preset("w4a8").default_tag == "w4a8"
    assert preset("weight-only-int4").block_size == 32


def test_a_preset_name_is_accepted_where_a_recipe_goes() -> None:
    from tinymodels import mlp

    import edgequant

    r = edgequant.quantize(mlp(), None, "weight-only-int4")
    assert r.recipe.method == "weight-only" and r.recipe.weight_bits == 4 and r.tag == "w4b32"
    with pytest.raises(
        edgequant.RecipeError,
        match="'int9-static' is neither a recipe file nor a preset; presets: dynamic-int8, fp16,",
    ):
        edgequant.quantize(mlp(), None, "int9-static")
