"""examples/recipe_streaming.yaml (issue #16 §4): static per-channel int8 weights for a streaming model
with a conv front end and a carried LSTM state, where the default int8 recipe loses the quiet frames.

The tiny model below has the Silero VAD's shape: an audio frame through a strided conv "STFT" and a
log magnitude, a ReLU conv, an LSTM fed the state the caller carries, a sigmoid head.  Audio level spans 50 dB, so the 8-bit
grid over the input's range wipes out quiet frames.  Expected values are our own ORT sessions of the
float model streaming the audio with its own state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant
from edgequant.intake import resolve_recipe

RECIPE = Path(__file__).resolve().parents[2] / "examples" / "recipe_streaming.yaml"
L, K, S, C, H = 256, 32, 16, 16, 16  # samples per frame, window, hop, conv channels, LSTM hidden size


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    steps = (L - K) // S + 1 - 2  # after the window conv and a k=3 conv
    b = np.zeros((1, 8 * H), np.float32)
    b[0, 2 * H : 3 * H] = 2.0  # forget gate (ONNX order i, o, f, c): the state carries over frames
    inits = [
        nh.from_array((rng.standard_normal((C, 1, K)) * 0.3).astype(np.float32), "wa"),
        nh.from_array((rng.standard_normal((C, C, 3)) * 0.1).astype(np.float32), "wb"),
        nh.from_array((rng.standard_normal(C) * 0.1).astype(np.float32), "bb"),
        nh.from_array((rng.standard_normal((1, 4 * H, C)) * 0.4).astype(np.float32), "W"),
        nh.from_array((rng.standard_normal((1, 4 * H, H)) * 0.3).astype(np.float32), "R"),
        nh.from_array(b, "B"),
        nh.from_array((rng.standard_normal((H, 1)) * 2.0).astype(np.float32), "wo"),
        nh.from_array(np.array([0], np.int64), "ax0"),
        nh.from_array(np.array(1e-4, np.float32), "eps"),
    ]
    nodes = [
        h.make_node("Conv", ["x", "wa"], ["spec"], name="window", strides=[S]),
        h.make_node("Abs", ["spec"], ["mag"], name="mag"),
        h.make_node("Add", ["mag", "eps"], ["mag_eps"], name="floor"),
        h.make_node("Log", ["mag_eps"], ["logmag"], name="log"),
        h.make_node("Conv", ["logmag", "wb", "bb"], ["cb"], name="enc"),
        h.make_node("Relu", ["cb"], ["feat"], name="relu"),
        h.make_node("Transpose", ["feat"], ["seq"], name="to_seq", perm=[2, 0, 1]),
        h.make_node("LSTM", ["seq", "W", "R", "B", "", "h0", "c0"], ["Y", "h1", "c1"], name="lstm", hidden_size=H),
        h.make_node("Squeeze", ["h1", "ax0"], ["hs"], name="sq"),
        h.make_node("MatMul", ["hs", "wo"], ["logit"], name="head"),
        h.make_node("Sigmoid", ["logit"], ["p"], name="prob"),
    ]  # fmt: skip
    st = [1, 1, H]
    g = h.make_graph(
        nodes,
        "streaming",
        [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in (("x", [1, 1, L]), ("h0", st), ("c0", st))],
        [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in (("p", [1, 1]), ("h1", st), ("c1", st))],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    assert steps > 1
    return m


def _audio(frames: int, seed: int) -> np.ndarray:
    """[frames, 1, 1, L]: tones + noise in segments whose level spans 50 dB."""
    rng = np.random.default_rng(seed)
    level = np.repeat(10 ** -rng.uniform(0, 2.5, frames // 8 + 1), 8 * L)[: frames * L]
    f = np.repeat(rng.uniform(0.02, 0.3, frames // 8 + 1), 8 * L)[: frames * L]
    x = (np.sin(2 * np.pi * np.cumsum(f)) + 0.3 * rng.standard_normal(frames * L)) * level * 0.3
    return x.astype(np.float32).reshape(frames, 1, 1, L)


def _stream(sess: ort.InferenceSession, xs: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """p per frame and the (h, c) state fed at each frame, the model carrying its own state."""
    hs = cs = np.zeros((1, 1, H), np.float32)
    ps, states = [], []
    for x in xs:
        states.append(np.stack([hs, cs]))
        p, hs, cs = sess.run(["p", "h1", "c1"], {"x": x, "h0": hs, "c0": cs})
        ps.append(p.reshape(-1))
    return np.concatenate(ps), states


def _sess(m: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))


def test_the_recipe_file_is_what_the_benchmark_measured() -> None:
    r = resolve_recipe(str(RECIPE), {}, [])
    assert (r.method, r.weight_bits, r.act_bits, r.per_channel) == ("static", 8, 16, True)
    assert r.algorithms == ("adaround",) and not r.keep_worse_passes and r.calib_samples == 1024


def test_streaming_recipe_keeps_quiet_frames_where_int8_loses_them() -> None:
    m = _model()
    float_sess = _sess(m)
    xs = _audio(480, 0)
    _, states = _stream(float_sess, xs)  # calibration: the (frame, state) pairs the float model sees
    calib = [{"x": x, "h0": s[0], "c0": s[1]} for x, s in zip(xs, states, strict=True)]
    held = _audio(400, 5)
    ref, _ = _stream(float_sess, held)
    default = edgequant.quantize(m, calib, "int8-static", calib_samples=448)
    recipe = edgequant.quantize(m, calib, str(RECIPE))
    acts = [e for e in recipe.plan.tensors.values() if e.role == "activation"]
    assert acts and all(e.spec.bits == 16 for e in acts)
    (ada,) = recipe.report["algorithms"]
    assert ada["pass"] == "adaround" and ada["changed"]
    db_default = _sqnr(ref, _stream(_sess(default.model), held)[0])
    db_recipe = _sqnr(ref, _stream(_sess(recipe.model), held)[0])
    # measured: default 42.0 dB, the recipe 60.8 dB (w8a16 without AdaRound: 63.9 dB on this tiny model,
    # where round-to-nearest's draw is good; on Silero VAD AdaRound is what lifts w8a16 from 21.4 dB to
    # 31-39 dB: benchmarks/results/vad_recipes.md); LSTM weights float in all three (int8 ones: 42.4 / 60.7 / 63.7)
    assert db_default < 44.5
    assert db_recipe > 58.5
