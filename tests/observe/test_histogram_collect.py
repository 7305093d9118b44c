"""collect's probe run (tensors whose shape inference cannot size) doubles as pass 1's first batch:
one ORT run per batch, and the histogram ranges equal those of observers fed every batch directly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgequant.observe import collect, create_observer
from edgequant.runtime.ort import OrtSession


def _compress_model() -> Any:
    zero = numpy_helper.from_array(np.zeros(1, dtype=np.float32), "zero")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["X"], ["colmax"], axes=[0], keepdims=0),
            helper.make_node("Greater", ["colmax", "zero"], ["keep"]),
            helper.make_node("Compress", ["X", "keep"], ["picked"], axis=1),  # [N, ?]: not inferable
            helper.make_node("Neg", ["picked"], ["neg"]),
            helper.make_node("Relu", ["X"], ["relu"]),  # [N, 8]: inferable
        ],
        "compress",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("neg", TensorProto.FLOAT, ["N", None])],
        [zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_probe_outputs_are_observed_once_and_not_fetched_again(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(11)
    data = []
    for _ in range(4):
        x = rng.normal(size=(6, 8)).astype(np.float32)
        x[:, [1, 5]] = -np.abs(x[:, [1, 5]])  # dropped by Compress
        x[:, [0, 2, 3, 4, 6, 7]] = np.abs(x[:, [0, 2, 3, 4, 6, 7]]) + 0.05
        data.append({"X": x})
    fetched: list[list[str]] = []
    real_run = OrtSession.run

    def counting_run(self: OrtSession, feeds: Any, fetch: Any = None) -> Any:
        fetched.append(list(fetch or []))
        return real_run(self, feeds, fetch)

    monkeypatch.setattr(OrtSession, "run", counting_run)
    names = ["picked", "neg", "relu"]
    res = collect(_compress_model(), data, names, method=method)
    # probe (the two unknown tensors), then the first batch only for the inferable one, then 3 full
    assert fetched == [["picked", "neg"], ["relu"], names, names, names]
    assert (res.passes, res.batches, res.samples) == (1, 4, 24)
    keep = [0, 2, 3, 4, 6, 7]
    ref = {n: create_observer(method) for n in names}
    for b in data:
        ref["picked"].update(b["X"][:, keep])
        ref["neg"].update(-b["X"][:, keep])
        ref["relu"].update(np.maximum(b["X"], 0))
    assert res.ranges == {n: ref[n].compute() for n in names}


def test_probe_outputs_are_not_kept_when_the_tensors_need_several_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = [{"X": np.abs(np.random.default_rng(i).normal(size=(5, 8))).astype(np.float32)} for i in range(3)]
    fetched: list[list[str]] = []
    real_run = OrtSession.run

    def counting_run(self: OrtSession, feeds: Any, fetch: Any = None) -> Any:
        fetched.append(list(fetch or []))
        return real_run(self, feeds, fetch)

    monkeypatch.setattr(OrtSession, "run", counting_run)
    res = collect(_compress_model(), data, ["picked", "neg"], memory_budget_bytes=5 * 8 * 4)
    assert res.passes == 2
    assert fetched == [["picked"], ["neg"], ["picked"], ["picked"], ["picked"], ["neg"], ["neg"], ["neg"]]
    x = np.concatenate([b["X"] for b in data])
    assert res.ranges["picked"] == (float(x.min()), float(x.max()))
