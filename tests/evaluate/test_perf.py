"""Sizes (file and packed, with and without a plan), latency statistics, memory subprocess."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgequant.errors import DataError
from edgequant.evaluate import perf
from edgequant.plan import QuantPlan, TensorEntry
from edgequant.schemes.spec import QuantSpec


def _model() -> onnx.ModelProto:
    """y = x @ DQ(w_q) + b: w_q int8 [64, 16] (1024 values), b float32 [16], scale float32 scalar."""
    wq = np.arange(64 * 16, dtype=np.int64).reshape(64, 16) % 15 - 7
    inits = [
        nh.from_array(wq.astype(np.int8), "w_q"),
        nh.from_array(np.array(0.1, np.float32), "w_s"),
        nh.from_array(np.zeros(16, np.float32), "b"),
    ]
    nodes = [
        h.make_node("DequantizeLinear", ["w_q", "w_s"], ["w_dq"]),
        h.make_node("MatMul", ["x", "w_dq"], ["m"]),
        h.make_node("Add", ["m", "b"], ["y"]),
    ]
    g = h.make_graph(
        nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["n", 64])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 16])], inits,
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_packed_size_by_dtype_and_by_plan(tmp_path: Path) -> None:
    m = _model()
    # by dtype: 1024 int8 (8192 bits) + 1 float32 (32) + 16 float32 (512) = 8736 bits = 1092 bytes
    packed, by_bits = perf.packed_size(m)
    assert packed == 1092 and by_bits == {8: 1024, 32: 17}
    plan = QuantPlan(method="weight-only", opset=17)
    plan.tensors["w"] = TensorEntry("w", "weight", QuantSpec(bits=4))
    # the plan says w is 4-bit: 1024 * 4 = 4096 bits + 544 = 4640 bits = 580 bytes
    assert perf.packed_size(m, plan) == (580, {4: 1024, 32: 17})
    path = tmp_path / "m_w4.onnx"
    onnx.save_model(m, str(path))
    size = perf.model_size(path)
    assert size.file_bytes == path.stat().st_size and size.packed_bytes == 1092 and not size.plan_used
    perf.plan_path(path).write_text(plan.to_json())
    assert perf.plan_path(path).name == "m_w4.plan.json"
    size = perf.model_size(path)
    assert size.packed_bytes == 580 and size.plan_used
    assert size.to_dict()["params_by_bits"] == {"4": 1024, "32": 17}


def test_latency_statistics_and_bad_settings() -> None:
    sample = {"x": np.ones((3, 64), np.float32)}
    lat = perf.measure_latency(_model(), sample, runs=7, warmup=1, threads=1, batch_size=4)
    assert lat.runs == 7 and lat.batch_size == 4
    assert 0 < lat.min_ms <= lat.median_ms <= lat.p90_ms
    assert lat.throughput == pytest.approx(4 / (lat.median_ms / 1e3))
    assert perf.repeat_sample(sample, 4)["x"].shape == (4, 64)
    with pytest.raises(DataError, match="runs=0, warmup=1, threads=1 are invalid"):
        perf.measure_latency(_model(), sample, runs=0, warmup=1)


def test_memory_subprocess_reports_a_positive_peak() -> None:
    mem = perf.measure_memory(_model(), {"x": np.ones((1, 64), np.float32)})
    assert mem["peak_rss_mb"] >= mem["baseline_rss_mb"] > 10.0  # python + numpy + onnxruntime
    assert mem["peak_rss_delta_mb"] >= 0.0


def _stateful() -> onnx.ModelProto:
    """y = Concat(Unsqueeze(x), state) along axis 0: x [N, 4], state [2, N, 4] (batch on axis 1), sr []."""
    g = h.make_graph(
        [
            h.make_node("Unsqueeze", ["x", "ax"], ["xu"]),
            h.make_node("Concat", ["xu", "state"], ["cat"], axis=0),
            h.make_node("Cast", ["sr"], ["srf"], to=T.FLOAT),
            h.make_node("Mul", ["cat", "srf"], ["y"]),
        ],
        "stateful",
        [
            h.make_tensor_value_info("x", T.FLOAT, ["N", 4]),
            h.make_tensor_value_info("state", T.FLOAT, [2, "N", 4]),
            h.make_tensor_value_info("sr", T.INT64, []),
        ],
        [h.make_tensor_value_info("y", T.FLOAT, [3, "N", 4])],
        [nh.from_array(np.array([0], np.int64), "ax")],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_latency_batches_a_state_input_along_its_own_batch_axis() -> None:
    sample = {
        "x": np.ones((1, 4), np.float32),
        "state": np.zeros((2, 1, 4), np.float32),
        "sr": np.array(16000, np.int64),
    }
    feeds = perf.repeat_sample(sample, 3, _stateful())
    assert {k: v.shape for k, v in feeds.items()} == {"x": (3, 4), "state": (2, 3, 4), "sr": ()}
    for batch in (1, 3):  # before: state was cut to [1, 1, 4] and the model refused it
        assert perf.measure_latency(_stateful(), sample, runs=3, warmup=1, batch_size=batch).median_ms > 0
