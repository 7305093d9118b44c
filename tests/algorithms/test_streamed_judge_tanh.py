"""The streamed pass judge on state carried by plain ops (no LSTM/GRU/RNN): ``s_new = Tanh(x Wx + s Ws + b)``,
``y = s_new Wo``.  Held-out frames in stream order are judged streaming, each model fed the state it
returned itself; before, the state was not recognised and each frame was fed the data's (float) state.
A model without carried state (frames in random order) is judged one step per frame as before.
Expected values are our own ORT sessions streaming the frames and numpy's SQNR."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant
from edgequant.algorithms import base
from edgequant.algorithms.judge import set_reference
from edgequant.recipe import Recipe
from edgequant.runtime import OrtRuntime

RT = OrtRuntime(allow_spinning=False)
F, H = 8, 16  # frame size, state size


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    ws = rng.standard_normal((H, H))
    ws *= 0.95 / np.max(np.abs(np.linalg.eigvals(ws)))  # spectral radius 0.95: the state remembers ~20 frames
    inits = [
        nh.from_array((rng.standard_normal((F, H)) * 0.4).astype(np.float32), "wx"),
        nh.from_array(ws.astype(np.float32), "ws"),
        nh.from_array((rng.standard_normal(H) * 0.1).astype(np.float32), "b"),
        nh.from_array((rng.standard_normal((H, 1))).astype(np.float32), "wo"),
    ]
    nodes = [
        h.make_node("MatMul", ["x", "wx"], ["xp"], name="in_proj"),
        h.make_node("MatMul", ["s", "ws"], ["sp"], name="rec"),
        h.make_node("Add", ["xp", "sp"], ["a0"], name="add"),
        h.make_node("Add", ["a0", "b"], ["a"], name="bias"),
        h.make_node("Tanh", ["a"], ["s_new"], name="tanh"),
        h.make_node("MatMul", ["s_new", "wo"], ["y"], name="head"),
    ]
    g = h.make_graph(
        nodes, "tanh_rnn",
        [h.make_tensor_value_info("x", T.FLOAT, [1, F]), h.make_tensor_value_info("s", T.FLOAT, [1, H])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 1]), h.make_tensor_value_info("s_new", T.FLOAT, [1, H])],
        inits,
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _sess(m: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def _feeds(m: onnx.ModelProto, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """One feed dict per frame, each with the state the float model carries into it (from zeros)."""
    xs = np.random.default_rng(seed).standard_normal((n, 1, F)).astype(np.float32)
    sess, out, s = _sess(m), [], np.zeros((1, H), np.float32)
    for x in xs:
        out.append({"x": x, "s": s})
        s = sess.run(["s_new"], out[-1])[0]
    return out


def _stream(m: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    sess, ys, s = _sess(m), [], feeds[0]["s"]
    for f in feeds:
        y, s = sess.run(["y", "s_new"], {"x": f["x"], "s": s})
        ys.append(y.reshape(-1))
    return np.concatenate(ys)


def _one_step(m: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    sess = _sess(m)
    return np.concatenate([sess.run(["y"], f)[0].reshape(-1) for f in feeds])


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))


def _ctx(held: list[dict[str, np.ndarray]]) -> base.Context:
    return base.Context(Recipe(), RT, list, held, held_out_on="32 held-out samples")


M = _model()
Q = edgequant.quantize(M, _feeds(M, 200, 0), "int8-static", weight_bits=4).model


def test_a_tanh_recurrence_is_judged_streaming() -> None:
    held = _feeds(M, 64, 5)[24:56]  # 32 consecutive frames, mid-stream
    ctx = _ctx(held)
    set_reference(M, ctx)
    assert ctx.pairs == [("s", "s_new")] and ctx.carry == [False] + [True] * 31
    assert "streamed as 1 run(s) of consecutive frames" in ctx.held_out_on and not ctx.notes
    got = base.quantized_sqnr(Q, ctx)
    streamed = _sqnr(_stream(M, held), _stream(Q, held))
    one_step = _sqnr(_one_step(M, held), _one_step(Q, held))
    assert got is not None and abs(got - streamed) < 0.05, (got, streamed, one_step)
    # measured: streamed 20.77 dB, one step 19.70 dB (what the judge saw before: the Tanh contracts the
    # error here rather than accumulating it, but the judge's number was not the deployed model's)
    assert abs(one_step - streamed) > 0.5, (one_step, streamed)


def test_frames_in_random_order_are_not_taken_for_state() -> None:
    frames = _feeds(M, 64, 5)
    held = [frames[i] for i in np.random.default_rng(1).permutation(64)[:32]]
    ctx = _ctx(held)
    set_reference(M, ctx)
    assert ctx.pairs == [] and ctx.carry == [] and not ctx.notes
    got = base.quantized_sqnr(Q, ctx)
    assert got is not None and abs(got - _sqnr(_one_step(M, held), _one_step(Q, held))) < 0.05


def test_quantize_judges_its_passes_streaming() -> None:
    r = edgequant.quantize(M, _feeds(M, 200, 0), "int8-static", algorithms=["adaround"], weight_bits=4)
    (row,) = r.report["algorithms"]
    # the judge reads the 32 frames after the 128 calibration ones among those the check leaves
    rest = np.setdiff1d(np.arange(200), np.floor((np.arange(32) + 0.5) * 200 / 32).astype(int))[128:160]
    runs = 1 + int(np.sum(np.diff(rest) > 1))
    assert (
        f"streamed as {runs} run(s) of consecutive frames, each model carrying its own state 's'"
        in row["sqnr_measured_on"]
    )
    # float_effect reads the first 16 of those frames, streamed on the passes' runs
    on = r.report["float_effect"]["measured_on"]
    first = 1 + int(np.sum(np.diff(rest[:16]) > 1))
    assert on.count("streamed as") == 1 and f"streamed as {first} run(s)" in on, on


def test_float_effect_streams_its_held_out_frames() -> None:
    """float_effect's baseline is the exported model streamed over its 16 held-out frames, run by run
    (measured 33.90 dB; one step per frame, as before, 32.54 dB)."""
    feeds = _feeds(M, 200, 0)
    r = edgequant.quantize(M, feeds, "int8-static", calib_samples=64)
    fe = r.report["float_effect"]
    rest = np.setdiff1d(np.arange(200), np.floor((np.arange(32) + 0.5) * 200 / 32).astype(int))[64:80]
    runs = np.split(rest, np.flatnonzero(np.diff(rest) > 1) + 1)
    assert f"streamed as {len(runs)} run(s) of consecutive frames" in fe["measured_on"], fe
    ref, got = (np.concatenate([_stream(m, [feeds[i] for i in run]) for run in runs]) for m in (M, r.model))
    one_step = _sqnr(_one_step(M, [feeds[i] for i in rest]), _one_step(r.model, [feeds[i] for i in rest]))
    assert abs(fe["baseline_sqnr_db"] - _sqnr(ref, got)) < 0.02 and abs(_sqnr(ref, got) - one_step) > 0.5
