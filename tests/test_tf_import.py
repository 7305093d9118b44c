"""TensorFlow / Keras -> ONNX import (the ``edgequant[tf]`` extra): tiny Keras models built here, saved as
``.keras`` and as SavedModel, converted with tf2onnx, verified against TensorFlow, and quantized end to end.

Tolerances: a conversion matches TensorFlow to > 100 dB SQNR (float32 round-off is ~130-145 dB here);
static int8 outputs match TensorFlow to > 30 dB (conv net) and > 20 dB (LSTM+GRU), where ~47 dB and
~38 dB were measured.  Under CI the extra is part of ``[test]``, so a missing tensorflow fails there
instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import edgequant
from edgequant.errors import DataError, DependencyError, ModelError
from edgequant.model import load_model
from edgequant.model.tf_import import export_tf, is_tf_model, is_tf_path, require_tf
from edgequant.runtime import OrtRuntime
from edgequant.schemes import sqnr_db

MISSING = (
    "Importing a TensorFlow model needs the Python package '{}', which is not installed. "
    "Fix: pip install 'edgequant[tf]'"
)


def _missing_tf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` raises ImportError


def test_missing_tensorflow_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _missing_tf(monkeypatch)
    with pytest.raises(DependencyError) as info:
        edgequant.quantize(tmp_path / "m.keras", np.zeros((1, 3), np.float32))
    assert str(info.value) == MISSING.format("tensorflow")
    from edgequant.cli import app

    res = CliRunner().invoke(app, ["quantize", str(tmp_path / "m.keras"), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert " ".join(res.output.split()) == "error: " + MISSING.format("tensorflow")
    assert list(tmp_path.iterdir()) == []


def test_missing_tf2onnx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", object())  # pretend tensorflow imports
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    monkeypatch.setitem(sys.modules, "tf2onnx.convert", None)
    with pytest.raises(DependencyError) as info:
        require_tf()
    assert str(info.value) == MISSING.format("tf2onnx")


def test_tf_paths_are_recognised_without_importing_tf(tmp_path: Path) -> None:
    (tmp_path / "sm").mkdir()
    assert not is_tf_path(tmp_path / "sm")
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    assert is_tf_path(tmp_path / "sm") and is_tf_path("a/m.keras") and is_tf_path("m.H5")
    assert not is_tf_path("m.onnx") and not is_tf_model(np.zeros(2))


# --------------------------------------------------------------------------- with tensorflow

try:
    require_tf()
    import keras
except DependencyError:
    keras = None
# CI installs [test], which includes [tf]: there a missing tensorflow fails instead of skipping.
needs_tf = pytest.mark.skipif(
    keras is None and not os.environ.get("CI"), reason="edgequant[tf] not installed"
)


def _conv_net() -> Any:
    """Conv2D+BN+ReLU, depthwise conv, global pool, Dense; NHWC input named 'image'."""
    keras.utils.set_random_seed(0)
    i = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same")(i)
    bn = keras.layers.BatchNormalization()
    x = keras.layers.ReLU()(bn(x))
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(i, keras.layers.Dense(10, name="logits")(x), name="convnet")
    rng = np.random.default_rng(1)  # non-trivial BN statistics, so folding BN is really checked
    bn.set_weights(
        [rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.2, 8), rng.normal(0, 0.3, 8), rng.uniform(0.5, 2, 8)]
    )
    return model


def _rnn() -> Any:
    keras.utils.set_random_seed(0)
    i = keras.Input((12, 6), name="frames")
    x = keras.layers.LSTM(16, return_sequences=True)(i)
    x = keras.layers.GRU(8)(x)
    return keras.Model(i, keras.layers.Dense(3, name="scores")(x), name="rnn")


def _nhwc(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 16, 16, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def conv(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("conv")
    model = _conv_net()
    model.save(d / "convnet.keras")
    model.export(str(d / "convnet_sm"), verbose=False)
    return {"model": model, "keras": d / "convnet.keras", "saved": d / "convnet_sm"}


@needs_tf
def test_conv_net_converts_from_memory_keras_file_and_saved_model(
    conv: dict[str, Any], tmp_path: Path
) -> None:
    x = _nhwc(4, 0)
    reports = {
        "memory": export_tf(conv["model"], tmp_path / "a.onnx", example_inputs=x),
        "keras": export_tf(conv["keras"], tmp_path / "b.onnx", example_inputs=x),
        "saved": export_tf(conv["saved"], tmp_path / "c.onnx"),  # examples drawn from the signature
    }
    assert [r.source for r in reports.values()] == ["tf:convnet", "tf:convnet", "tf:convnet_sm"]
    for rep in reports.values():
        assert rep.sqnr_db > 100 and rep.max_abs_diff < 1e-5 and rep.opset == 17
    onnx_model = load_model(tmp_path / "b.onnx")
    (inp,) = onnx_model.graph.input
    dims = [d.dim_value or None for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "image" and dims == [None, 16, 16, 3]  # NHWC kept, dynamic batch
    assert [o.name for o in onnx_model.graph.output] == ["logits"]
    groups = sorted(
        a.i for n in onnx_model.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"
    )
    assert groups == [1, 8]  # the depthwise conv is a grouped Conv; BN was folded away
    assert not any(n.op_type == "BatchNormalization" for n in onnx_model.graph.node)
    # the ONNX model computes what TF computes, at a batch size never seen during conversion
    y = OrtRuntime().run(tmp_path / "c.onnx", {"image": _nhwc(5, 7)})["output_0"]
    assert sqnr_db(conv["model"](_nhwc(5, 7), training=False).numpy(), y) > 100


@needs_tf
def test_mismatch_beyond_tolerance_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    import tensorflow as tf

    class Noisy(keras.Model):  # type: ignore[misc]
        """Adds fresh random noise on every call: TF and ONNX Runtime draw different numbers."""

        def call(self, x: Any) -> Any:
            return x + tf.random.normal(tf.shape(x))

    with pytest.raises(ModelError) as info:
        export_tf(Noisy(name="noisy"), tmp_path / "m.onnx", example_inputs=np.ones((2, 8), np.float32))
    assert re.fullmatch(
        r"conversion of 'noisy': ONNX Runtime output does not match the source model \(required SQNR >= "
        r"40\.0 dB\): 'output' on the example inputs: SQNR -?\d+\.\d dB, max abs diff [\d.]+; .*",
        info.value.detail,
    )
    assert list(tmp_path.iterdir()) == []


@needs_tf
def test_example_in_wrong_layout_is_refused(conv: dict[str, Any], tmp_path: Path) -> None:
    nchw = np.zeros((2, 3, 16, 16), np.float32)
    with pytest.raises(DataError) as info:
        export_tf(conv["keras"], tmp_path / "m.onnx", example_inputs=nchw)
    assert info.value.detail == (
        "example input 'image' has shape (2, 3, 16, 16), but the model declares (?, 16, 16, 3) (? = any size)."
    )
    (tmp_path / "notsaved").mkdir()
    with pytest.raises(ModelError, match=r"holds no saved_model\.pb"):
        export_tf(tmp_path / "notsaved", tmp_path / "m.onnx")


@needs_tf
def test_keras_file_quantizes_static_int8_against_tf(conv: dict[str, Any], tmp_path: Path) -> None:
    calib = _nhwc(64, 3)  # calibration data in the model's own NHWC layout
    r = edgequant.quantize(conv["keras"], calib, calib_samples=64)
    assert r.report["import"]["source"] == "tf:convnet" and r.report["import"]["sqnr_db"] > 100
    assert r.report["integer_weights"] == 3  # conv, depthwise conv, dense
    paths = r.save(tmp_path)
    assert (
        paths.model.name == "convnet_int8_ha8c010.onnx" and (tmp_path / "convnet_float.onnx").is_file()
    )  # the hash: calib_samples 64
    x = _nhwc(16, 11)
    ref = conv["model"](x, training=False).numpy()
    got = OrtRuntime().run(paths.model, {"image": x})["logits"]
    assert sqnr_db(ref, got) > 30


@needs_tf
def test_cli_quantizes_a_keras_file(conv: dict[str, Any], tmp_path: Path) -> None:
    from edgequant.cli import app

    np.save(tmp_path / "x.npy", _nhwc(32, 5))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["quantize", str(conv["keras"]), "-o", str(out), "--calib-data", str(tmp_path / "x.npy")]
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "convnet_int8.json").read_text())
    assert report["import"]["sqnr_db"] > 100 and report["files"]["float_model"] == "convnet_float.onnx"
    x = _nhwc(16, 12)
    got = OrtRuntime().run(out / "convnet_int8.onnx", {"image": x})["logits"]
    assert sqnr_db(conv["model"](x, training=False).numpy(), got) > 30


@needs_tf
def test_lstm_gru_model_converts_and_quantizes(tmp_path: Path) -> None:
    model = _rnn()
    model.save(tmp_path / "rnn.keras")
    x = np.random.default_rng(0).standard_normal((4, 12, 6)).astype(np.float32)
    rep = export_tf(tmp_path / "rnn.keras", tmp_path / "rnn.onnx", example_inputs=x)
    assert rep.sqnr_db > 100
    ops = {n.op_type for n in load_model(tmp_path / "rnn.onnx").graph.node}
    assert "LSTM" in ops  # the GRU becomes a Loop, which ONNX Runtime runs as well
    calib = np.random.default_rng(1).standard_normal((64, 12, 6)).astype(np.float32)
    r = edgequant.quantize(tmp_path / "rnn.onnx", calib, calib_samples=64)
    held = np.random.default_rng(2).standard_normal((16, 12, 6)).astype(np.float32)
    got = OrtRuntime().run(r.model, {"frames": held})["scores"]
    assert sqnr_db(model(held, training=False).numpy(), got) > 20


@needs_tf
def test_two_inputs_two_outputs_keep_names_and_order(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    a, b = keras.Input((4,), name="feat"), keras.Input((3,), name="aux")
    z = keras.layers.Dense(6, activation="relu")(keras.layers.Concatenate()([a, b]))
    model = keras.Model(
        [a, b], [keras.layers.Dense(2, name="zeta")(z), keras.layers.Dense(5, name="alpha")(b)]
    )
    rng = np.random.default_rng(0)
    xa, xb = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((3, 3)).astype(np.float64)
    rep = export_tf(
        model, tmp_path / "m.onnx", example_inputs={"aux": xb, "feat": xa}
    )  # float64 cast to float32
    assert rep.sqnr_db > 100
    m = load_model(tmp_path / "m.onnx")
    assert [i.name for i in m.graph.input] == ["feat", "aux"]
    assert [o.name for o in m.graph.output] == ["zeta", "alpha"]  # model order, not tf2onnx's sorted order
    model.export(str(tmp_path / "sm"), verbose=False)
    rep = export_tf(tmp_path / "sm", tmp_path / "s.onnx", example_inputs=[xb, xa])  # signature: sorted names
    assert rep.sqnr_db > 100
    s = load_model(tmp_path / "s.onnx")
    assert sorted(i.name for i in s.graph.input) == ["aux", "feat"]
    assert [o.name for o in s.graph.output] == ["output_0", "output_1"]
    with pytest.raises(DataError, match=r"example_inputs has keys \['feat', 'x'\]"):
        export_tf(model, tmp_path / "n.onnx", example_inputs={"feat": xa, "x": xb})


@needs_tf
def test_fixed_batch_subclassed_and_dynamic_length_models(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    i = keras.Input((5,), batch_size=1, name="v")
    fixed = keras.Model(i, keras.layers.Dense(3)(i))
    rep = export_tf(fixed, tmp_path / "f.onnx")  # drawn example of batch 1; no second batch size
    assert rep.sqnr_db > 100
    dims = load_model(tmp_path / "f.onnx").graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 5]

    class Sub(keras.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(name="sub")
            self.dense = keras.layers.Dense(4)

        def call(self, x: Any) -> Any:
            return self.dense(x) * 2.0

    sub = Sub()
    with pytest.raises(DataError, match="declares no inputs"):
        export_tf(sub, tmp_path / "s.onnx")
    rep = export_tf(sub, tmp_path / "s.onnx", example_inputs=np.ones((2, 7), np.float32))
    assert rep.source == "tf:sub" and rep.sqnr_db > 100

    j = keras.Input((None, 4), name="seq")  # unknown length: stays dynamic, needs a concrete example
    seq = keras.Model(j, keras.layers.Dense(2)(j))
    with pytest.raises(DataError, match=r"axes \[1\] have no fixed size"):
        export_tf(seq, tmp_path / "q.onnx")
    rep = export_tf(seq, tmp_path / "q.onnx", example_inputs=np.ones((2, 9, 4), np.float32))
    y = OrtRuntime().run(tmp_path / "q.onnx", {"seq": np.ones((1, 3, 4), np.float32)})
    assert next(iter(y.values())).shape == (1, 3, 2)
