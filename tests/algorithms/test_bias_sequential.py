"""Sequential bias correction, the after-ranges pass shape, the old flags as aliases, the accurate preset.

The net (``passnets.conv3``): Conv(3->16) -> Relu -> Conv(16->16) -> Relu -> Conv(16->8), quantized with
4-bit weights, where rounding leaves each output channel a visible mean error.  Expected values come
from our own ORT sessions of the float and QDQ models with the layers' outputs exposed, and numpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper as h
from typer.testing import CliRunner

import edgequant
from edgequant.algorithms import known, phase
from edgequant.cli import app
from edgequant.errors import RecipeError
from edgequant.evaluate.compare import resolve_methods
from edgequant.pipeline import resolve_recipe
from edgequant.recipe import from_dict, preset
from edgequant.runtime import OrtRuntime
from tests.algorithms.passnets import bn_folded_net, conv3, images

RT = OrtRuntime(allow_spinning=False)
MODEL = conv3()
CALIB = images(96, seed=1)
EVAL = images(64, seed=2)
LAYERS = {"conv1": "c1", "conv2": "c2", "conv3": "y"}


def _exposed(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    out.graph.output.extend(h.make_empty_tensor_value_info(t) for t in LAYERS.values() if t not in have)
    return out


def _layers(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    got = RT.run(_exposed(model), {"x": x})
    return {node: np.asarray(got[t], np.float64) for node, t in LAYERS.items()}


def _channel_error(ref: np.ndarray, got: np.ndarray) -> float:
    """Mean over channels of |E[ref_c] - E[got_c]| (channel axis 1)."""
    return float(np.mean(np.abs((ref - got).mean(axis=(0, 2, 3)))))


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((ref**2).sum() / ((ref - got) ** 2).sum()))


def _run(**kw: object) -> edgequant.QuantResult:
    return edgequant.quantize(MODEL, CALIB, runtime=RT, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def w4() -> dict[str, edgequant.QuantResult]:
    return {
        "none": _run(weight_bits=4),
        "empirical": _run(weight_bits=4, bias_correction=True, bias_correction_variant="empirical"),
        "sequential": _run(weight_bits=4, bias_correction=True),
    }


def test_sequential_removes_the_output_mean_error(w4: dict[str, edgequant.QuantResult]) -> None:
    ref = RT.run(MODEL, {"x": EVAL})["y"].astype(np.float64)
    got = {k: RT.run(r.model, {"x": EVAL})["y"].astype(np.float64) for k, r in w4.items()}
    # measured: channel-mean error 0.0135 (none) -> 0.0011 (sequential); SQNR 19.7 -> 20.7 dB
    assert _channel_error(ref, got["sequential"]) * 5 <= _channel_error(ref, got["none"])
    assert _sqnr(ref, got["sequential"]) >= _sqnr(ref, got["none"]) + 0.3


def test_each_layer_matches_the_float_mean_with_the_layers_before_it_corrected(
    w4: dict[str, edgequant.QuantResult],
) -> None:
    """What sequential correction aims at, checked layer by layer on all calibration images: each
    corrected layer's per-channel output mean is the float layer's, whatever the layers before it did;
    the empirical variant (local shifts, measured at once) leaves more on the deepest layer."""
    ref = _layers(MODEL, CALIB)
    got = {k: _layers(r.model, CALIB) for k, r in w4.items()}
    err = {k: {n: _channel_error(ref[n], g[n]) for n in LAYERS} for k, g in got.items()}
    # measured: conv1 0.0007 (none) / 0.0008 (both: 2 of 16 channels corrected), conv2 0.028 / 0.0022
    # (empirical) / 0.0006 (sequential), conv3 0.024 / 0.0032 / 0.0004
    assert err["sequential"]["conv1"] < 0.002 and err["none"]["conv1"] < 0.002
    for node in ("conv2", "conv3"):
        assert err["sequential"][node] * 10 <= err["none"][node], node
    assert err["sequential"]["conv3"] * 3 <= err["empirical"]["conv3"]


@pytest.mark.parametrize(("bits", "per_channel"), [(8, True), (4, True), (4, False), (2, True)])
def test_sequential_is_never_worse_than_no_correction(bits: int, per_channel: bool) -> None:
    ref = RT.run(MODEL, {"x": EVAL})["y"].astype(np.float64)
    none = _run(weight_bits=bits, per_channel=per_channel)
    seq = _run(weight_bits=bits, per_channel=per_channel, bias_correction=True)
    a = RT.run(none.model, {"x": EVAL})["y"].astype(np.float64)
    b = RT.run(seq.model, {"x": EVAL})["y"].astype(np.float64)
    assert _sqnr(ref, b) >= _sqnr(ref, a) - 0.05
    assert _channel_error(ref, b) <= _channel_error(ref, a)


def test_passes_are_report_rows_with_sqnr_before_and_after(w4: dict[str, edgequant.QuantResult]) -> None:
    assert "bias_correction" in known() and phase("bias_correction") == "after_ranges"
    assert phase("mixed_precision") == "after_ranges" and phase("cle") == "before_ranges"
    for variant in ("empirical", "sequential"):
        rep = w4[variant].report
        (row,) = rep["algorithms"]
        assert row["pass"] == "bias_correction" and row["variant"] == variant
        assert {"conv2", "conv3"} <= {c.split(":")[0] for c in row["changed"]} <= set(LAYERS)
        assert row["sqnr_after_db"] > row["sqnr_before_db"] and row["seconds"] > 0
        assert "QDQ model" in row["sqnr_measured_on"]
        assert rep["bias_correction"]["variant"] == variant and rep["seconds"]["bias_correction"] >= 0
    assert "algorithms" not in w4["none"].report


def test_old_keys_and_flags_are_aliases_that_add_the_passes() -> None:
    assert from_dict({"bias_correction": True}).algorithms == ("bias_correction",)
    r = from_dict({"algorithms": ["cle"], "target_sqnr": 30, "bias-correction": True})
    assert r.algorithms == ("cle", "bias_correction", "mixed_precision")
    assert from_dict({"algorithms": ["bias_correction"]}).bias_correction_variant == "sequential"
    with pytest.raises(RecipeError, match="target_sqnr_db is not set"):
        from_dict({"algorithms": ["mixed_precision"]})
    with pytest.raises(RecipeError, match="bias correction does not run"):
        from_dict({"bias_correction_variant": "empirical"})
    with pytest.raises(RecipeError, match="allowed: sequential, empirical"):
        from_dict({"bias_correction": True, "bias_correction_variant": "layerwise"})
    # --no-bias-correction over a recipe or preset that runs the pass drops it (never ignored)
    assert resolve_recipe("accurate", {"bias_correction": False}).algorithms == ("cle",)
    assert resolve_recipe(
        {"algorithms": ["cle", "bias_correction"]}, {"bias_correction": False}
    ).algorithms == ("cle",)


def test_cli_flags_run_the_passes(tmp_path: Path) -> None:
    model, calib, out = tmp_path / "c3.onnx", tmp_path / "calib.npy", tmp_path / "out"
    onnx.save_model(MODEL, model)
    np.save(calib, CALIB)
    args = ["quantize", str(model), "-o", str(out), "--calib-data", str(calib), "--weight-bits", "4"]
    res = CliRunner().invoke(app, [*args, "--bias-correction", "--target-sqnr", "10"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "c3_w4a8_sqnr10_bc.json").read_text())
    assert [r["pass"] for r in report["algorithms"]] == ["bias_correction", "mixed_precision"]
    assert report["sensitivity"]["met"] is True and report["bias_correction"]["nodes_corrected"] >= 2
    # mixed precision starts from the bias-corrected model: its SQNR before is bias correction's after
    bc, mp = report["algorithms"]
    assert mp["sqnr_before_db"] == bc["sqnr_after_db"] and mp["nothing_to_do"].startswith("the target 10 dB")


def test_accurate_preset_runs_its_steps() -> None:
    assert preset("accurate").algorithms == ("cle", "bias_correction")
    assert preset("accurate", weight_bits=4).algorithms == ("cle", "adaround", "bias_correction")
    assert preset("accurate", weight_bits="ternary").algorithms == ("cle", "adaround", "bias_correction")
    assert preset("accurate", weight_bits=4, algorithms=["cle"]).algorithms == ("cle",)
    assert "accurate" in resolve_methods("all")
    x = images(96, seed=3)
    res = edgequant.quantize(bn_folded_net(), x, "accurate", weight_bits=4, runtime=RT)
    rows = {r["pass"]: r for r in res.report["algorithms"]}
    assert list(rows) == ["cle", "adaround", "bias_correction"]
    assert res.report["calibration"]["search"]["chosen"]
    for row in rows.values():  # what each step bought, each on the held-out samples
        assert row["sqnr_before_db"] is not None and row["sqnr_after_db"] is not None, row
    assert rows["cle"]["changed"] and rows["adaround"]["changed"]
    assert rows["adaround"]["sqnr_after_db"] > rows["adaround"]["sqnr_before_db"]
    # after AdaRound no channel's mean shift is significant here: the row says so
    bc = rows["bias_correction"]
    assert bc["changed"] or bc["nothing_to_do"].startswith("no channel's mean shift"), bc
    ref = RT.run(bn_folded_net(), {"x": images(32, seed=4)})["y"].astype(np.float64)
    plain = edgequant.quantize(bn_folded_net(), x, weight_bits=4, runtime=RT)
    a, p = (RT.run(r.model, {"x": images(32, seed=4)})["y"].astype(np.float64) for r in (res, plain))
    assert _sqnr(ref, a) >= _sqnr(ref, p) + 1.0  # measured: 16.8 dB (accurate) against 14.8 dB (w4a8)


def test_a_level_that_lowers_the_output_sqnr_is_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every level after the first judge run is made to 'lower' the output SQNR: each is undone, listed
    as rejected, and the written model is the uncorrected one."""
    from edgequant.algorithms import bias_sequential

    judged: list[float] = []

    def sqnr(self: bias_sequential._Noise) -> float:
        if not self.signal:
            return float("inf")  # an estimation run: nothing judged
        judged.append(30.0 if len(judged) < 2 else 20.0)  # the first judging run: both halves at 30 dB
        return judged[-1]

    monkeypatch.setattr(bias_sequential._Noise, "sqnr", sqnr)
    res = _run(weight_bits=4, bias_correction=True)
    section = res.report["bias_correction"]
    assert section["nodes_corrected"] == 0 and len(judged) >= 6
    assert {n for r in section["rejected"] for n in r["nodes"]} >= {"conv2", "conv3"}
    assert all(
        (r["sqnr_without_db"], r["sqnr_with_db"]) == ([30.0] * 2, [20.0] * 2) for r in section["rejected"]
    )
    (row,) = res.report["algorithms"]
    assert not row["changed"] and any("undone" in s for s in row["skipped"])
    plain = _run(weight_bits=4)
    np.testing.assert_array_equal(RT.run(res.model, {"x": EVAL})["y"], RT.run(plain.model, {"x": EVAL})["y"])
