"""HDF5 with one group per trial and variable lengths: read as a stream of samples, one by one
without a mask, padded with a mask where the model takes one; metadata CSV splits select trials."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgequant.data import input_specs, open_source
from edgequant.evaluate import evaluate
from edgequant.runtime import OrtRuntime

LENGTHS = [5, 9, 12, 7, 5, 11, 8, 6, 10, 12]
SPLITS = ["train"] * 6 + ["val"] * 2 + ["test"] * 2


def _model(masked: bool) -> onnx.ModelProto:
    """mean over time (masked: sum(x*m)/sum(m)) -> MatMul [4, 3]: x [N, T, 4] -> y [N, 3]."""
    w = nh.from_array(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "w")
    ax = nh.from_array(np.array([1], np.int64), "ax")
    if masked:
        nodes = [
            h.make_node("Unsqueeze", ["mask", "m_ax"], ["m3"]),
            h.make_node("Mul", ["x", "m3"], ["xm"]),
            h.make_node("ReduceSum", ["xm", "ax"], ["s"], keepdims=0),
            h.make_node("ReduceSum", ["m3", "ax"], ["n"], keepdims=0),
            h.make_node("Div", ["s", "n"], ["mean"]),
        ]
        inits = [w, ax, nh.from_array(np.array([2], np.int64), "m_ax")]
        inputs = [
            h.make_tensor_value_info("x", T.FLOAT, ["N", "T", 4]),
            h.make_tensor_value_info("mask", T.FLOAT, ["N", "T"]),
        ]
    else:
        nodes = [h.make_node("ReduceMean", ["x", "ax"], ["mean"], keepdims=0)]
        inits, inputs = [w, ax], [h.make_tensor_value_info("x", T.FLOAT, ["N", "T", 4])]
    nodes.append(h.make_node("MatMul", ["mean", "w"], ["y"]))
    g = h.make_graph(nodes, "trials", inputs, [h.make_tensor_value_info("y", T.FLOAT, ["N", 3])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 18)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def trials(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[np.ndarray]]:
    d = tmp_path_factory.mktemp("trials")
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((n, 4)).astype(np.float32) for n in LENGTHS]
    with h5py.File(d / "t.h5", "w") as f:
        for i, x in enumerate(xs):
            g = f.create_group(f"trial_{i:03d}")
            g["x"] = x
            g.attrs["label"] = i % 3
    with open(d / "meta.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["trial", "split"])
        w.writerows([i, s] for i, s in enumerate(SPLITS))
    return d / "t.h5", d / "meta.csv", xs


def test_variable_length_trials_run_one_by_one(trials: tuple[Path, Path, list[np.ndarray]]) -> None:
    path, meta, xs = trials
    m = _model(masked=False)
    src = open_source(path, input_specs(m), batch_size=4, split="calib", options={"metadata_csv": str(meta)})
    batches = list(src)
    assert [b["x"].shape for b in batches] == [(1, n, 4) for n in LENGTHS[:6]]
    assert "lengths vary and no hdf5_mask_input: trials run one by one" in src.stats.description
    # evaluate on the test trials: the model against itself, labels from the group attributes
    res = evaluate(m, m, str(path), labels=None, options={"metadata_csv": str(meta), "eval_type": "test"})
    rt = OrtRuntime()
    ref = np.concatenate([rt.run(m, {"x": xs[i][None]})["y"] for i in (8, 9)])
    want = float(np.mean(ref.argmax(1) == np.array([8 % 3, 9 % 3])))
    assert res.samples == 2 and res.float_metrics["top1"] == pytest.approx(want)


def test_padded_batches_with_a_mask_match_one_by_one(trials: tuple[Path, Path, list[np.ndarray]]) -> None:
    path, _, xs = trials
    m = _model(masked=True)
    src = open_source(path, input_specs(m), batch_size=4, options={"hdf5_mask_input": "mask"})
    rt = OrtRuntime()
    got = np.concatenate([rt.run(m, b)["y"] for b in src])
    ref = np.concatenate(
        [rt.run(m, {"x": x[None], "mask": np.ones((1, len(x)), np.float32)})["y"] for x in xs]
    )
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    first = next(iter(src))
    assert first["x"].shape == (4, 12, 4) and first["mask"].sum(1).tolist() == [5, 9, 12, 7]


def test_variable_lengths_on_a_fixed_time_axis_name_dynamic_axis(
    trials: tuple[Path, Path, list[np.ndarray]],
) -> None:
    from edgequant.errors import DataError

    m = _model(masked=False)
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 12  # exported at 12 steps
    with pytest.raises(DataError) as e:
        list(open_source(trials[0], input_specs(m), batch_size=1))
    assert "input 'x' has shape 1x5x4, the model expects ?x12x4" in str(e.value)
    assert "the model fixes axis 1 at 12" in str(e.value) and "--dynamic-axis x:1" in str(e.value)
