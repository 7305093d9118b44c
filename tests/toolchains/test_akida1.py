"""--target akida1 end to end: a tf_keras .h5 model becomes a real Akida 1.0 program (.fbz), and it runs.

The Keras 2 model is built and saved by a script run with the akida toolchain's interpreter (this test
process has Keras 3 only).  The program is loaded back there by another script of this test, which
reads its layers' weight bits, runs it on Akida's software backend, and computes its own references:
the float Keras model, and BrainChip's cnn2snn.quantize of it called directly (not through EdgeQuant).
No Akida figure goes into the README (BrainChip's EULA); the thresholds stay in this test.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from toolchain_helpers import assert_documented, need_toolchain
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.errors import UnsupportedError
from edgequant.schemes import sqnr_db
from edgequant.toolchains import check_recipe
from edgequant.toolchains.akida1 import require_whole

BUILD = """
import sys, numpy as np, tensorflow as tf, tf_keras as k
tf.random.set_seed(0)
i = k.Input((16, 16, 3), name="x")
h = k.layers.ReLU(name="relu1")(k.layers.Conv2D(8, 3, padding="same", name="conv1")(i))
h = k.layers.Conv2D(16, 3, strides=2, padding="same", name="conv2")(h)
h = k.layers.ReLU(name="relu2")(k.layers.GlobalAveragePooling2D(name="gap")(h))  # Akida 1.0: pool, then ReLU
m = k.Model(i, k.layers.Dense(10, name="fc")(h))
rng = np.random.default_rng(0)  # the same weights every run (Keras's initialisers alone were not)
for layer in m.layers:
    layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])
w, b = m.get_layer("conv1").get_weights()
m.get_layer("conv1").set_weights([w * 3 / 255, b])  # raw 0-255 pixels in
m.save(sys.argv[1])
"""

CHECK = """
import sys, json, numpy as np, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)  # one summation order for Keras's float32 run
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.experimental.enable_op_determinism()
import akida, cnn2snn, tf_keras
model, program, xs, out = sys.argv[1:5]
x = np.load(xs)
m = tf_keras.models.load_model(model, compile=False)
with cnn2snn.set_akida_version(cnn2snn.AkidaVersion.v1):
    q = cnn2snn.quantize(m, weight_quantization=4, activ_quantization=4, input_weight_quantization=8)
a = akida.Model(program)
bits = [[l.name, str(l.parameters.layer_type).split(".")[-1], l.parameters.weights_bits] for l in a.layers]
np.savez(out, float=m.predict(x, verbose=0), quantized=q.predict(x, verbose=0),
         akida=a.predict(x.astype(np.uint8)).reshape(len(x), -1).astype(np.float32))
print(json.dumps({"layers": bits, "ip_version": str(a.ip_version)}))
"""


def test_target_akida1_converts_a_keras_model_at_4_bits(tmp_path: Path) -> None:
    python = need_toolchain("akida")
    (tmp_path / "build.py").write_text(BUILD)
    model = tmp_path / "m.h5"
    subprocess.run([str(python), str(tmp_path / "build.py"), str(model)], check=True, capture_output=True)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.integers(0, 256, (64, 16, 16, 3)).astype(np.float32))
    out = tmp_path / "out"
    args = ["quantize", str(model), "--calib-data", str(tmp_path / "calib.npz"), "--target", "akida1",
            "--weight-bits", "4", "--act-bits", "4", "-o", str(out)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    programs = list(out.glob("*.fbz"))
    assert [p.name for p in programs] == ["m_w4a4_akida1.fbz"]
    report = json.loads((out / "m_w4a4_akida1.json").read_text())["toolchain"]
    assert [name for name, _, _ in report["layers"]] == ["conv1", "conv2", "fc"]
    assert_documented(report)

    x = rng.integers(0, 256, (64, 16, 16, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "check.py").write_text(CHECK)
    run = subprocess.run(
        [str(python), str(tmp_path / "check.py"), str(model), str(programs[0]), str(tmp_path / "x.npy"),
         str(tmp_path / "y.npz")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    assert facts["ip_version"] == "IpVersion.v1"
    assert [(t, b) for _, t, b in facts["layers"]] == [
        ("InputConvolutional", 8), ("Convolutional", 4), ("FullyConnected", 4)
    ]  # fmt: skip
    y = np.load(tmp_path / "y.npz")
    # the program is BrainChip's own 4-bit quantization of the model: measured 41.0 dB (Keras runs the
    # fake-quantized model in float32, the program in integers: a few activations at a 4-bit rounding tie
    # land on the other side; Keras on one thread with deterministic ops, so the figure repeats) ...
    assert sqnr_db(y["quantized"], y["akida"]) >= 39.0
    assert np.mean(y["quantized"].argmax(1) == y["akida"].argmax(1)) >= 0.95
    # ... and post-training 4-bit quantization without calibration is lossy: measured 15.3 dB vs float,
    # which the report states (its own held-out samples) rather than hides
    assert sqnr_db(y["float"], y["akida"]) >= 13.0
    assert report["sqnr_db_vs_float"]["fc"] >= 13.0  # measured 14.96 on its own held-out samples
    assert 0.0 <= report["top1_agreement"] <= 1.0


def test_akida1_refuses_non_keras_inputs_and_widths(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match=r"takes a Keras 2 model file; this input is 'm.onnx'"):
        check_recipe("akida1", 4, 4, source=tmp_path / "m.onnx")
    with pytest.raises(UnsupportedError, match=r"this run has weight bits 8 \(the default\)\. Fix"):
        check_recipe("akida1", 8, 4, source=tmp_path / "m.h5")  # 8 is the recipe's default: named as such
    with pytest.raises(UnsupportedError, match=r"this run has weight bits 1\. Fix"):
        check_recipe("akida1", 1, 4, source=tmp_path / "m.h5")
    check_recipe("akida1", 2, 4, source=tmp_path / "m.h5")


def test_akida1_cli_refuses_an_onnx_model_with_the_fix(tmp_path: Path) -> None:
    need_toolchain("akida")
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["quantize", str(onnx_file), "--target", "akida1", "--weight-bits", "4", "--act-bits", "4",
              "-o", str(out)],
    )  # fmt: skip
    assert res.exit_code == 2 and "saved by tf_keras" in res.output
    assert not out.exists()


def test_akida1_refuses_an_onnx_input_first_and_never_blames_a_default(tmp_path: Path) -> None:
    # no bit flags given: the input is the problem (Akida 1.0 takes a Keras .h5), not the default 8 bits,
    # and no toolchain is needed to say so
    from tinymodels import conv_net

    model, calib, out = tmp_path / "m.onnx", tmp_path / "c.npz", tmp_path / "out"
    onnx.save(conv_net(), model)
    np.savez(calib, x=np.zeros((8, 3, 8, 8), np.float32))
    res = CliRunner().invoke(
        app, ["quantize", str(model), "--calib-data", str(calib), "--target", "akida1", "-o", str(out)]
    )
    text = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert "takes a Keras 2 model file; this input is 'm.onnx'" in text
    assert "--weight-bits 8" not in text and "drop --weight-bits" not in text
    assert not out.exists()


def test_a_conversion_that_left_a_layer_out_is_refused() -> None:
    whole = {"layers": [["conv1", "InputConvolutional", 8], ["fc", "FullyConnected", 4]],
             "keras_weighted": ["conv1", "fc"]}  # fmt: skip
    require_whole(whole)
    stopped = {"layers": [["conv1", "InputConvolutional", 8]], "keras_weighted": ["conv1", "conv2", "fc"]}
    with pytest.raises(UnsupportedError, match=r"left Keras layer 'conv2' out \(2 weighted"):
        require_whole(stopped)
