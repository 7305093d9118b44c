"""AdaRound's optional per-layer mean correction (``adaround.CORRECT_MEAN``): the layer's bias absorbs
E[W x] - E[W~ x~].  Expected values from our own ORT sessions on the weights the pass wrote."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import edgequant
from edgequant.algorithms import adaround
from edgequant.runtime import OrtRuntime
from tests.algorithms.passnets import conv3, images

RT = OrtRuntime(allow_spinning=False)
X = images(80) + 1.0  # inputs with a non-zero mean, as after a ReLU


def _conv1_mean_error(float_model: onnx.ModelProto, rounded: onnx.ModelProto) -> float:
    """Largest per-channel |E[conv1 output] (rounded) - E[conv1 output] (float)| over the samples."""
    outs = []
    for m in (float_model, rounded):
        probe = onnx.ModelProto()
        probe.CopyFrom(m)
        probe.graph.output.append(onnx.ValueInfoProto(name="c1"))
        outs.append(RT.run(probe, {"x": X[:64]})["c1"].mean(axis=(0, 2, 3)))
    return float(np.abs(outs[1] - outs[0]).max())


def test_adaround_mean_correction_removes_the_first_layers_mean_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """conv1 reads the input itself (x~ = x), so its mean error after rounding is (W - W~) E[x], which the
    corrected bias cancels (up to the rows the statistics streamed)."""
    model = conv3()
    errors = []
    for on in (False, True):
        monkeypatch.setattr(adaround, "CORRECT_MEAN", on)
        res = edgequant.quantize(
            model, X, algorithms=["adaround"], weight_bits=4, calib_samples=64, keep_worse_passes=True
        )
        errors.append(_conv1_mean_error(model, _rounded(res)))
    # measured 0.071 -> 0.0020 (the largest channel mean error of conv1 on the calibration samples)
    assert errors[1] < 0.1 * errors[0]


def _rounded(res: edgequant.QuantResult) -> onnx.ModelProto:
    """The float graph with the weights and biases the pass wrote (dequantized from the QDQ model)."""
    from onnx import numpy_helper as nh

    q = {t.name: nh.to_array(t) for t in res.model.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(conv3())
    for t in out.graph.initializer:
        if f"{t.name}_q" in q:
            shape = (-1, *[1] * (q[f"{t.name}_q"].ndim - 1))
            scale, zero = q[f"{t.name}_scale"].reshape(shape), q[f"{t.name}_zp"].reshape(shape)
            w = (q[f"{t.name}_q"].astype(np.float32) - zero) * scale
            t.CopyFrom(nh.from_array(w.astype(np.float32), t.name))
        elif t.name in q:  # a bias the pass may have shifted
            t.CopyFrom(nh.from_array(q[t.name].astype(np.float32), t.name))
    return out
