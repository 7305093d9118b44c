"""A time-major GRU input ([T, B, I], ONNX's default layout) with data the data layer would cut along
its time axis is refused (one line, exit 2, nothing written); the batch-first form of the same network
(a Transpose [B, T, I] -> [T, B, I] before the GRU, what PyTorch's batch_first=True exports) is batched
along its sequences.  Expected counts come from the data as built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app

H, IN, STEPS, SEQS = 8, 4, 20, 64


def _gru(batch_first: bool) -> onnx.ModelProto:
    """x -> (Transpose) -> GRU(hidden 8) -> Y_h -> Reshape [B, 8] -> MatMul [8, 3] -> y."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), n)
        for n, s in (("W", (1, 3 * H, IN)), ("R", (1, 3 * H, H)), ("B", (1, 6 * H)), ("Wo", (H, 3)))
    ]
    inits.append(nh.from_array(np.array([-1, H], np.int64), "shp"))
    seq = "xt" if batch_first else "x"
    nodes = (
        [h.make_node("Transpose", ["x"], ["xt"], name="to_time_major", perm=[1, 0, 2])] if batch_first else []
    )
    nodes += [
        h.make_node("GRU", [seq, "W", "R", "B"], ["ys", "yh"], name="gru", hidden_size=H),
        h.make_node("Reshape", ["yh", "shp"], ["hs"], name="flat"),
        h.make_node("MatMul", ["hs", "Wo"], ["y"], name="head"),
    ]
    shape = ["B", "T", IN] if batch_first else ["T", "B", IN]
    g = h.make_graph(
        nodes, "gru", [h.make_tensor_value_info("x", T.FLOAT, shape)],
        [h.make_tensor_value_info("y", T.FLOAT, ["B", 3])], inits,
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _sequences() -> np.ndarray:
    """64 sequences of 20 steps, [N, T, I]."""
    return np.random.default_rng(1).standard_normal((SEQS, STEPS, IN)).astype(np.float32)


def test_time_major_input_with_array_data_is_refused_in_one_line(tmp_path: Path) -> None:
    src, data, out = tmp_path / "gru.onnx", tmp_path / "x.npy", tmp_path / "out"
    onnx.save(_gru(batch_first=False), str(src))
    np.save(data, _sequences().transpose(1, 0, 2))  # [T, N, I]: the model's own layout
    res = CliRunner().invoke(app, ["quantize", str(src), "--calib-data", str(data), "-o", str(out)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: model input 'x' is time-major"), res.output
    assert (
        "GRU 'gru'" in lines[0] and "Fix: re-export the model with a batch-first input [B, T, I]" in lines[0]
    )
    assert not out.exists()


def test_batch_first_form_is_batched_along_sequences() -> None:
    x = _sequences()
    r = edgequant.quantize(_gru(batch_first=True), x)
    calib, check = r.report["calibration"], r.report["check"]
    # the data layer counted sequences (64), not time steps (20): half calibrate, half are the check's
    assert calib["samples"] + calib["held_out_for_check"] == SEQS, calib
    assert check["kind"] == "held_out" and check["samples"] == calib["held_out_for_check"] > 0, check


def test_whole_time_major_batches_with_a_fixed_state_axis_pass() -> None:
    """Batches the data layer cannot split (the state input's axis 0 is fixed) are fed whole."""
    m = _gru(batch_first=False)
    g = m.graph
    g.input.append(h.make_tensor_value_info("h0", T.FLOAT, [1, "B", H]))
    gru = next(n for n in g.node if n.op_type == "GRU")
    gru.input.extend(["", "h0"])
    rng = np.random.default_rng(2)
    batches = [
        {"x": rng.standard_normal((STEPS, 4, IN)).astype(np.float32), "h0": np.zeros((1, 4, H), np.float32)}
        for _ in range(16)
    ]
    r = edgequant.quantize(m, batches, method="dynamic")
    assert r.report["check"]["output_sqnr_db"]["y"] > 20.0


def _dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model quantized dynamically (no data: the data layer is not involved)."""
    return edgequant.quantize(model, method="dynamic").model


def test_evaluate_refuses_time_major_file_data_in_one_line(tmp_path: Path) -> None:
    """Before: 64 sequences of 20 steps at --batch-size 8 were scored as 192 'samples' (3 runs of
    steps x 64 sequences); now refused as quantize refuses it, nothing written."""
    fm, qm, data, js = tmp_path / "gru.onnx", tmp_path / "q.onnx", tmp_path / "x.npy", tmp_path / "e.json"
    m = _gru(batch_first=False)
    onnx.save(m, str(fm))
    onnx.save(_dynamic(m), str(qm))
    np.save(data, _sequences().transpose(1, 0, 2))  # [T, N, I]
    args = ["evaluate", str(fm), str(qm), "--data", str(data), "--task", "regression", "--batch-size", "8"]
    res = CliRunner().invoke(app, [*args, "-o", str(js)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: model input 'x' is time-major"), res.output
    assert "so evaluation would score each run of time steps as a separate sequence" in lines[0]
    assert "Fix: re-export the model with a batch-first input [B, T, I]" in lines[0]
    assert not js.exists()


def test_evaluate_feeds_whole_time_major_batches_whole() -> None:
    """Batches given whole (an iterable) are not split: 64 sequences score as 64 samples, and the SQNR
    is that of the whole sequences, computed here with our own ORT sessions on the same batches."""
    import onnxruntime as ort

    from edgequant.evaluate.core import evaluate

    m = _gru(batch_first=False)
    q = _dynamic(m)
    x = _sequences().transpose(1, 0, 2)  # [T, 64, I]
    batches = [{"x": x[:, i : i + 16]} for i in range(0, SEQS, 16)]
    r = evaluate(m, q, batches, task="regression")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    ref, got = (  # per batch of 16 whole sequences: dynamic quantization's ranges are per batch
        np.concatenate([s.run(["y"], b)[0] for b in batches])
        for s in (
            ort.InferenceSession(p.SerializeToString(), so, providers=["CPUExecutionProvider"])
            for p in (m, q)
        )
    )
    expected = 10 * np.log10(
        np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - got).astype(np.float64) ** 2)
    )
    assert r.samples == SEQS
    assert abs(r.agreement["sqnr_db"] - expected) < 0.01, (r.agreement, expected)
