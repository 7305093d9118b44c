"""The pass guard: a pass that lowers the held-out SQNR is reverted (unless keep_worse_passes), one that
raises it is kept, and the samples that judge the passes are neither calibration's nor the check's.

Harm comes from test-only passes put in the registry under a real pass's name (monkeypatch), so the
harm is known; the expected values come from our own ORT sessions and numpy.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper as nh
from typer.testing import CliRunner

import edgequant
from edgequant.algorithms import base
from edgequant.algorithms.base import PassOutcome, Quantized, StatRequest, Stats
from edgequant.calibration import calib_source, held_source
from edgequant.cli import app
from edgequant.export import export_qdq
from edgequant.plan import QuantPlan
from edgequant.recipe import Recipe, from_dict
from edgequant.runtime import OrtRuntime
from tests.algorithms.passnets import bn_folded_net, conv3, images

RT = OrtRuntime(allow_spinning=False)
X = images(112)  # the check holds back 32; calibration reads 64 of the other 80; 16 after them judge
EVAL = images(64, seed=7)  # never seen by quantize


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    return float(10 * np.log10((ref64**2).sum() / ((ref64 - got64) ** 2).sum()))


def _out(model: onnx.ModelProto, x: np.ndarray = EVAL) -> np.ndarray:
    y: np.ndarray = RT.run(model, {"x": x})["y"]
    return y


class CoarseScale:
    """before_ranges, test only: w2's weight scale fixed at 6x its own, in the plan, in place (as
    block_clip and gptq fix scales): the 4-bit grid gets 6x coarser."""

    def __init__(self, recipe: Recipe) -> None:
        pass

    def stat_requests(self, model: onnx.ModelProto, plan: QuantPlan) -> StatRequest:
        return StatRequest(0, "test")

    def apply(
        self, model: onnx.ModelProto, plan: QuantPlan, stats: Stats
    ) -> tuple[onnx.ModelProto, QuantPlan, PassOutcome]:
        from edgequant.schemes.qparams import quantize_weight

        e = plan.tensors["w2"]
        w = next(nh.to_array(t) for t in model.graph.initializer if t.name == "w2")
        _, scale, zero = quantize_weight(w.astype(np.float32), e.spec)
        e.scale = [float(v) * 6 for v in np.asarray(scale).reshape(-1)]
        e.zero_point = [int(v) for v in np.asarray(zero).reshape(-1)]
        return model, plan, PassOutcome(changed=["w2: scale x6"])


class BiasOffset:
    """after_ranges, test only: 0.5 added to conv1's float bias, the QDQ model re-exported."""

    phase = "after_ranges"

    def __init__(self, recipe: Recipe) -> None:
        pass

    def stat_requests(self, state: Quantized) -> StatRequest:
        return StatRequest(0, "test")

    def apply_quantized(self, state: Quantized, stats: Stats) -> tuple[Quantized, PassOutcome]:
        model = onnx.ModelProto()
        model.CopyFrom(state.float_model)
        b = next(t for t in model.graph.initializer if t.name == "b1")
        b.CopyFrom(nh.from_array(nh.to_array(b) + np.float32(0.5), "b1"))
        quantized, plan = export_qdq(model, state.calibrated)
        return Quantized(model, state.calibrated, quantized, plan, state.reference), PassOutcome(
            changed=["conv1: bias + 0.5"], report={"bias_correction": {"nodes_corrected": 1}}
        )


def test_a_pass_that_lowers_sqnr_is_reverted(monkeypatch: pytest.MonkeyPatch) -> None:
    model = conv3()
    kw: dict[str, Any] = {"weight_bits": 4, "calib_samples": 64}
    plain = edgequant.quantize(model, X, **kw)
    monkeypatch.setitem(base._REGISTRY, "adaround", CoarseScale)
    res = edgequant.quantize(model, X, algorithms=["adaround"], **kw)
    row = res.report["algorithms"][0]
    assert row["sqnr_after_db"] < row["sqnr_before_db"] - 3  # measured 14.2 -> 2.8 dB
    assert row["reverted"] == (
        f"reverted: SQNR {row['sqnr_before_db']} -> {row['sqnr_after_db']} dB on 16 held-out samples "
        "(after the calibration ones; not the check's)"
    )
    assert row["sqnr_measured_on"].startswith("16 held-out samples (after the calibration ones")
    # named with --algorithm: a warning (it shows under -q too), carrying both numbers
    assert any(w.startswith("adaround: reverted: SQNR ") for w in res.report["warnings"])
    # the output model is the one without the pass: same outputs in our own ORT session, same plan
    np.testing.assert_array_equal(_out(res.model), _out(plain.model))
    assert res.plan.tensors["w2"].scale == plain.plan.tensors["w2"].scale
    # kept on request: the model then is worse on samples quantize never saw
    kept = edgequant.quantize(model, X, algorithms=["adaround"], keep_worse_passes=True, **kw)
    krow = kept.report["algorithms"][0]
    assert "reverted" not in krow and krow["kept_worse"].startswith("kept: SQNR ")
    ref = _out(model)
    assert _sqnr(ref, _out(kept.model)) < _sqnr(ref, _out(plain.model)) - 3  # measured 2.7 vs 14.0 dB


def test_a_reverted_pass_from_a_preset_is_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    model = conv3()
    plain = edgequant.quantize(model, X, calib_samples=64, calib_method="search", algorithms=["cle"])
    monkeypatch.setitem(base._REGISTRY, "bias_correction", BiasOffset)
    res = edgequant.quantize(model, X, "accurate", calib_samples=64)
    rows = {r["pass"]: r for r in res.report["algorithms"]}
    bc = rows["bias_correction"]
    assert bc["sqnr_after_db"] < bc["sqnr_before_db"] - 3  # measured 34.9 -> 4.1 dB
    assert bc["reverted"].startswith("reverted: SQNR ")
    assert res.report["bias_correction"]["reverted"] == bc["reverted"]
    assert any(n.startswith("bias_correction: reverted: SQNR ") for n in res.report["notes"])
    assert not any("reverted" in w for w in res.report["warnings"])
    np.testing.assert_array_equal(_out(res.model), _out(plain.model))


def test_a_pass_that_raises_sqnr_is_kept() -> None:
    model = bn_folded_net()
    plain = edgequant.quantize(model, X, per_channel=False, calib_samples=64)
    cle = edgequant.quantize(model, X, per_channel=False, calib_samples=64, algorithms=["cle"])
    row = cle.report["algorithms"][0]
    assert row["sqnr_after_db"] > row["sqnr_before_db"] + 10 and "reverted" not in row
    ref = _out(model)
    assert _sqnr(ref, _out(cle.model)) > _sqnr(ref, _out(plain.model)) + 10  # measured 18.7 -> 32.2 dB


def test_passes_are_judged_on_samples_neither_calibration_nor_the_check_reads() -> None:
    model = conv3()
    recipe = from_dict({"algorithms": ["cle"], "calib_samples": 64})
    ctx = base.context(recipe, RT, lambda r: calib_source(X, model, r), False, ())
    judged = {x.tobytes() for b in ctx.held_out for x in b["x"]}
    calib = {x.tobytes() for b in calib_source(X, model, recipe) for x in b["x"]}
    check = {x.tobytes() for b in held_source(X, model, recipe) for x in b["x"]}
    assert (len(judged), len(calib), len(check)) == (16, 64, 32)
    assert not judged & calib and not judged & check and len(judged | calib | check) == 112
    # too few samples beyond calibration: its first 32 judge, and the rows say in-sample
    small = base.context(recipe, RT, lambda r: calib_source(X[:80], model, r), False, ())
    first = list(itertools.islice(iter(calib_source(X[:80], model, recipe)), 4))  # batches of 8
    np.testing.assert_array_equal(
        np.concatenate([b["x"] for b in small.held_out]), np.concatenate([b["x"] for b in first])
    )
    assert small.held_out_on.startswith("32 calibration samples (in-sample: the data has 0 beyond")


def test_cli_keep_worse_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model, data = tmp_path / "m.onnx", tmp_path / "x.npy"
    onnx.save(conv3(), model)
    np.save(data, X)
    monkeypatch.setitem(base._REGISTRY, "adaround", CoarseScale)
    args = ["quantize", str(model), "--calib-data", str(data), "--calib-samples", "64", "--weight-bits", "4"]
    args += ["--algorithm", "adaround"]
    res = CliRunner().invoke(app, ["-q", *args, "-o", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "warning: adaround: reverted: SQNR" in res.output
    kept = CliRunner().invoke(app, [*args, "--keep-worse-passes", "-o", str(tmp_path / "b")])
    assert kept.exit_code == 0, kept.output
    assert "note: adaround: kept (keep_worse_passes)" in kept.output


def test_padded_positions_do_not_judge() -> None:
    from edgequant.algorithms.judge import real_positions

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 5, 3)).astype(np.float32)
    got = ref + 0.01
    got[:, 3:] += 5.0  # large errors on the padding only
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]], np.int64)
    r, g = real_positions({"input_ids": mask * 7, "attention_mask": mask}, ref, got)
    np.testing.assert_array_equal(r, ref[:, :3].reshape(-1))
    np.testing.assert_array_equal(g, got[:, :3].reshape(-1))
    assert _sqnr(r, g) > 35 > 0 > _sqnr(ref, got)  # the padding alone would sink the SQNR
    r, g = real_positions({"x": ref}, ref, got)  # no mask input: every position counts
    assert r.size == ref.size
