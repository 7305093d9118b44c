"""Target profiles: strict loading, the typed API, refusals, and plans that obey the profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tinymodels import conv_net, images
from typer.testing import CliRunner

import edgequant
from edgequant import targets
from edgequant.errors import RecipeError, TargetError
from edgequant.recipe import Recipe
from edgequant.schemes.qparams import quantize_weight
from edgequant.schemes.spec import Granularity, QuantSpec, ScaleRule
from edgequant.targets.profile import load_profile

PROFILE_DIR = Path(targets.__file__).parent


def test_every_shipped_profile_loads_and_cites_its_sources() -> None:
    assert targets.names() == ["akida", "akida1", "cmsis-nn", "cpu", "ti-npu", "tvm", "vitis-dpu"]
    for p in targets.all_profiles():
        assert p.sources and all(s.url.startswith("https://") for s in p.sources.values())
        cited = {p.weights.source, p.activations.source, p.bias_source} | {r.source for r in p.ops.values()}
        assert cited <= set(p.sources), p.name
    assert targets.get("ONNX") is targets.get("cpu")


def test_ti_npu_api_for_other_packages() -> None:
    t = targets.get("ti-npu")
    w8 = t.weight_spec(8, axis=0)
    assert (w8.bits, w8.signed, w8.symmetric, w8.granularity, w8.scale_rule) == (
        8, True, True, Granularity.PER_CHANNEL, ScaleRule.POWER_OF_TWO,
    )  # fmt: skip
    assert t.weight_spec(4).scale_rule is ScaleRule.FLOAT  # 8-bit multiplier + shift below 8 bits
    a = t.activation_spec()
    assert (a.bits, a.granularity, a.scale_rule) == (8, Granularity.PER_TENSOR, ScaleRule.POWER_OF_TWO)
    assert (t.bias_width(8), t.bias_width(4), t.bias_width(2)) == (24, 16, 16)
    assert t.runs("depthwise") and not t.runs("gelu") and t.unsupported == "host"
    fc = t.op("fc").limits["in_features"]  # type: ignore[union-attr]
    assert fc.violations(14, weight_bits=8) == ["a multiple of 4", "at least 16 at 8-bit weights"]
    assert fc.violation(14, weight_bits=8) == "a multiple of 4 and at least 16 at 8-bit weights"
    assert (
        fc.violation(12, weight_bits=4) == ""
        and fc.violation(6, weight_bits=4) == "a multiple of 4 and at least 8 at 4-bit weights"
    )
    assert (fc.smallest_compliant(10, 8), fc.smallest_compliant(10, 4), fc.smallest_compliant(20, 8)) == (
        16,
        12,
        20,
    )
    assert t.op("fc").limits["in_features"].violation(8, weight_bits=8) == "at least 16 at 8-bit weights"  # type: ignore[union-attr]
    with pytest.raises(TargetError, match="does not allow activation bits 16"):
        t.activation_spec(16)
    cm = targets.get("cmsis-nn").weight_spec(8)
    assert cm.narrow_range and (cm.qmin, cm.qmax) == (-127, 127)
    assert targets.get("vitis-dpu").weight_spec(8).granularity is Granularity.PER_TENSOR


def test_unknown_target_is_refused_with_known_names_and_closest_match() -> None:
    with pytest.raises(TargetError) as err:
        Recipe(target="ti-npuu")
    assert "known targets: akida" in str(err.value) and "did you mean 'ti-npu'" in str(err.value)
    with pytest.raises(TargetError, match="unknown target 'tidl'"):
        edgequant.quantize(conv_net(), {"x": images(8)}, target="tidl")
    assert Recipe(target="F28P55").target == "ti-npu"


def test_unknown_target_on_the_cli(tmp_path: Path) -> None:
    from edgequant.cli import app

    m = tmp_path / "m.onnx"
    onnx.save(conv_net(), m)
    res = CliRunner().invoke(app, ["quantize", str(m), "-o", str(tmp_path / "o"), "--target", "vitis"])
    assert res.exit_code == 2 and "did you mean 'vitis-dpu'" in res.output
    assert not (tmp_path / "o").exists()
    listing = CliRunner().invoke(app, ["targets"])
    assert listing.exit_code == 0 and len(listing.output.strip().splitlines()) == 7
    rules = CliRunner().invoke(app, ["targets", "ti-npu"])
    assert rules.exit_code == 0 and "24-bit with 8-bit weights" in rules.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour: red\n", "'colour' is not a known key; allowed: name, title"),
        ("weights: {bits: [8, 3]}\n", "'weights.bits' holds 3; allowed: 1, 2, 4, 8, 16"),
        ("ops: {conv: {kernel_hh: {max: 7}}}\n", "'ops.conv.kernel_hh' is not a known key"),
        ("ops: {convolution: {}}\n", "'ops.convolution' is not a known op kind"),
        ("unsupported: maybe\n", "'unsupported' = 'maybe' is not allowed; allowed: host, error"),
    ],
)
def test_bad_profile_names_file_key_and_allowed_values(tmp_path: Path, text: str, message: str) -> None:
    base = (PROFILE_DIR / "ti-npu.yaml").read_text()
    path = tmp_path / "ti-npu.yaml"
    key = text.split(":")[0]
    kept = [ln for ln in base.splitlines() if not ln.startswith(f"{key}:")]
    if key == "weights":  # replace the whole block
        start = base.index("weights:")
        end = base.index("activations:")
        base = base[:start] + base[end:]
        kept = base.splitlines()
    if key == "ops":
        kept = base[: base.index("ops:")].splitlines()
    path.write_text("\n".join(kept) + "\n" + text)
    with pytest.raises(TargetError) as err:
        load_profile(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_explicit_settings_that_break_a_rule_are_refused() -> None:
    with pytest.raises(RecipeError, match=r"per_channel=False \(weights\) conflicts with target 'cmsis-nn'"):
        edgequant.quantize(conv_net(), {"x": images(8)}, target="cmsis-nn", per_channel=False)
    with pytest.raises(RecipeError, match="act_bits=16 conflicts with target 'ti-npu'"):
        edgequant.quantize(conv_net(), {"x": images(8)}, target="ti-npu", act_bits=16)
    with pytest.raises(RecipeError, match="method='dynamic' conflicts with target 'vitis-dpu'"):
        edgequant.quantize(conv_net(), None, target="vitis-dpu", method="dynamic")


def test_a_default_that_breaks_a_rule_is_named_as_the_default() -> None:
    # akida1 takes 4/2-bit weights; the recipe's default is 8: the user typed no --weight-bits, so the
    # error names the default and the fix is to pass a value, not to drop a flag never given
    from edgequant.recipe import Recipe
    from edgequant.targets.adapt import adapt

    with pytest.raises(RecipeError) as err:
        adapt(Recipe(target="akida1"))
    text = str(err.value)
    assert text.startswith("the default weight bits 8 conflicts with target 'akida1'")
    assert "pass --weight-bits with an allowed value" in text and "drop --weight-bits" not in text
    with pytest.raises(RecipeError, match=r"^the default act bits 8 conflicts with target 'akida1'"):
        adapt(Recipe(target="akida1", weight_bits=4))
    with pytest.raises(
        RecipeError, match=r"^--act-bits 16 conflicts with target 'ti-npu'.*Fix: drop --act-bits"
    ):
        adapt(Recipe(target="ti-npu", act_bits=16))


def _dq_params(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Independent read of the written model: DQ input -> (scale, zero point)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {
        n.input[0]: (inits[n.input[1]], inits[n.input[2]])
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[1] in inits
    }


@pytest.mark.parametrize("name", ["ti-npu", "vitis-dpu"])
def test_every_scale_is_a_power_of_two(name: str) -> None:
    r = edgequant.quantize(conv_net(), {"x": images(32)}, target=name)
    params = _dq_params(r.model)
    assert len(params) >= 8
    for tensor, (scale, zero) in params.items():
        assert np.all(np.log2(scale.astype(np.float64)) == np.round(np.log2(scale))), tensor
        assert np.all(zero == 0), tensor  # symmetric on both targets
    int8_inits = {t.name for t in r.model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    weights = {k: v for k, v in params.items() if k in int8_inits}
    assert len(weights) == 4
    per_channel = {k: v[0].size > 1 for k, v in weights.items()}
    assert all(per_channel.values()) if name == "ti-npu" else not any(per_channel.values())
    assert any("powers of two" in n for n in r.report["notes"])


def test_power_of_two_weight_scales_minimise_the_error() -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    w[:, 0, 0, 0] *= 4  # one large weight per channel: rounding the scale up wastes levels on it
    spec = QuantSpec(bits=8, granularity=Granularity.PER_CHANNEL, axis=0, scale_rule=ScaleRule.POWER_OF_TWO)
    q, scale, _ = quantize_weight(w, spec)
    err = ((q * scale.reshape(-1, 1, 1, 1) - w) ** 2).sum(axis=(1, 2, 3))
    amax = np.abs(w).reshape(32, -1).max(axis=1)
    up = np.exp2(np.ceil(np.log2(amax / 127.0))).reshape(-1, 1, 1, 1)  # the rounded-up power, by hand
    err_up = ((np.clip(np.rint(w / up), -127, 127) * up - w) ** 2).sum(axis=(1, 2, 3))
    assert np.all(err <= err_up * (1 + 1e-6)) and np.mean(err < err_up) > 0.3


def test_full_range_target_weights_warn_where_ort_can_saturate_them() -> None:
    from edgequant.runtime import detect

    r = edgequant.quantize(conv_net(), {"x": images(16)}, target="cmsis-nn")
    assert r.recipe.reduce_range == "off"  # the device's full 8-bit weights, not the x86 7-bit workaround
    warned = any("can saturate their int8 products" in w for w in r.report["warnings"])
    assert warned == detect().needs_reduce_range


def test_akida_profile_states_its_conversion() -> None:
    from pathlib import Path

    from typer.testing import CliRunner

    from edgequant import toolchains
    from edgequant.cli import app
    from edgequant.targets import get

    p = get("akida")
    text = Path(p.path).read_text(encoding="utf-8").lower()
    assert not p.compliance_only and "compliance only" not in text  # --target akida converts (toolchains/)
    assert toolchains.TARGETS["akida"] == "akida" and toolchains.SUFFIX["akida"] == ".fbz"
    res = CliRunner().invoke(app, ["targets", "akida"])
    assert res.exit_code == 0 and "compliance only" not in res.output
    assert "builds <name>_<tag>.fbz with the akida toolchain" in " ".join(res.output.split())
