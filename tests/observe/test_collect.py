"""collect(): streaming through ONNX Runtime, passes under a memory budget, inputs, shapes, masks."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgequant.errors import DataError, InferenceError, ModelError, RecipeError
from edgequant.observe import collect, create_observer

ACTS = ["conv", "relu", "flat", "Y"]


def _cnn() -> onnx.ModelProto:
    """X[N,3,8,8] -> Conv(4x3x3x3) -> Relu -> Flatten -> MatMul(256x10) -> Y; also an int64 Shape."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "W")
    m = numpy_helper.from_array((rng.normal(size=(256, 10)) / 16).astype(np.float32), "M")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["X", "W"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("Flatten", ["relu"], ["flat"]),
            helper.make_node("MatMul", ["flat", "M"], ["Y"]),
            helper.make_node("Shape", ["Y"], ["y_shape"]),
        ],
        "cnn",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 10]),
            helper.make_tensor_value_info("y_shape", TensorProto.INT64, [2]),
        ],
        [w, m],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _batches(n_batches: int, batch: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"X": rng.normal(size=(batch, 3, 8, 8)).astype(np.float32)} for _ in range(n_batches)]


def _reference_acts(model: onnx.ModelProto, data: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every activation of the float model on all the data, by onnx's reference evaluator."""
    ref = ReferenceEvaluator(model)
    x = np.concatenate([b["X"] for b in data])
    outs = ref.run(ACTS, {"X": x})
    return dict(zip(ACTS, outs, strict=True))


class LazySource:
    """A re-iterable source that makes each batch when asked (holds no data between batches)."""

    def __init__(self, n_batches: int, batch: int) -> None:
        self.n_batches = n_batches
        self.batch = batch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(self.n_batches):
            rng = np.random.default_rng(i)
            yield {"X": rng.normal(size=(self.batch, 3, 8, 8)).astype(np.float32)}


def test_minmax_ranges_equal_the_reference_evaluator(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    model, data = _cnn(), _batches(5, 4)
    res = collect(model, data, ACTS, method="minmax")
    acts = _reference_acts(model, data)
    for name in ACTS:
        np.testing.assert_allclose(
            res.ranges[name], (acts[name].min(), acts[name].max()), rtol=1e-5, atol=1e-5
        )
    assert (res.samples, res.batches, res.passes) == (20, 5, 1)
    assert res.sentinels == dict.fromkeys(ACTS, 0)
    assert list(tmp_path.iterdir()) == []  # type: ignore[attr-defined]  # nothing written to the cwd
    assert len(model.graph.output) == 2  # the caller's model is untouched


def test_histogram_ranges_equal_an_observer_on_all_activations_at_once() -> None:
    model, data = _cnn(), _batches(6, 5)
    acts = _reference_acts(model, data)
    res = collect(model, data, ACTS, method="entropy")
    for name in ACTS:
        obs = create_observer("entropy")
        obs.update(acts[name])
        np.testing.assert_allclose(res.ranges[name], obs.compute(), rtol=1e-5)


def test_tiny_budget_forces_passes_with_identical_ranges() -> None:
    model, data = _cnn(), _batches(4, 3)
    for method in ("minmax", "entropy", "percentile"):
        one = collect(model, data, ["X", *ACTS], method=method)
        # conv and relu are 4*8*8*4 = 1024 bytes per sample: a 3 KiB budget per batch of 3 fits one
        many = collect(model, data, ["X", *ACTS], method=method, memory_budget_bytes=3 * 1024 + 512)
        assert one.passes == 1
        assert many.passes == 3  # [conv], [relu], [flat, Y]
        assert many.samples == one.samples == 12
        assert many.ranges == one.ranges


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_memory_does_not_grow_with_samples() -> None:
    model = _cnn()

    def run(n_batches: int) -> tuple[list[int], int]:
        rss: list[int] = []
        res = collect(
            model,
            LazySource(n_batches, 64),
            ACTS,
            method="entropy",
            progress=lambda done, total: rss.append(_rss_bytes()),
        )
        return rss, res.peak_tracked_bytes

    _, tracked_small = run(5)
    rss, tracked_large = run(80)  # 16x the samples; each batch fetches 4 x 64 KiB of activations
    assert tracked_small == tracked_large == 4 * (2 * 2048 * 8 + 64)
    # resident memory stays flat between batches: keeping the fetched arrays would add 60 x 192 KiB
    assert rss[-1] - rss[19] < 3 * 2**20, (rss[19], rss[-1])


def test_graph_inputs_are_observed_from_the_feed() -> None:
    model, data = _cnn(), _batches(3, 2)
    res = collect(model, data, ["X"], method="minmax")
    x = np.concatenate([b["X"] for b in data])
    assert res.ranges["X"] == (float(x.min()), float(x.max()))
    assert res.passes == 1


def test_initializers_unknown_and_non_float_tensors_are_model_errors() -> None:
    model, data = _cnn(), _batches(1, 1)
    with pytest.raises(ModelError, match="'W' is an initializer"):
        collect(model, data, ["W"])
    with pytest.raises(ModelError, match="'nope' is not a graph input or a node output"):
        collect(model, data, ["relu", "nope"])
    with pytest.raises(ModelError) as err:
        collect(model, data, ["y_shape"])
    assert "tensor 'y_shape' has type INT64; only float tensors are observed" in str(err.value)


def test_non_float_intermediate_found_by_inference_is_a_model_error() -> None:
    model = _cnn()
    model.graph.node.append(helper.make_node("ArgMax", ["Y"], ["cls"], axis=1))
    with pytest.raises(ModelError, match="tensor 'cls' has type INT64"):
        collect(model, _batches(1, 2), ["cls"])


def _dynamic_seq_model() -> onnx.ModelProto:
    """X[N,S,4] -> MatMul(4x6) -> Tanh -> T[N,S,6]; S is dynamic."""
    w = numpy_helper.from_array(np.random.default_rng(2).normal(size=(4, 6)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["mm"]), helper.make_node("Tanh", ["mm"], ["T"])],
        "seq",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", "S", 4])],
        [helper.make_tensor_value_info("T", TensorProto.FLOAT, ["N", "S", 6])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("method", ["percentile", "mse", "entropy"])
def test_variable_sequence_lengths_merge(method: str) -> None:
    model = _dynamic_seq_model()
    rng = np.random.default_rng(3)
    data = [{"X": (3 * rng.normal(size=(2, s, 4))).astype(np.float32)} for s in (5, 9, 1, 9)]
    res = collect(model, data, ["mm", "T"], method=method, memory_budget_bytes=1)
    assert res.passes == 2
    w = numpy_helper.to_array(model.graph.initializer[0])
    mm = np.concatenate([(b["X"] @ w).ravel() for b in data])
    obs = create_observer(method)
    obs.update(mm)
    np.testing.assert_allclose(res.ranges["mm"], obs.compute(), rtol=1e-5)


def _masked_add_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["scores", "mask"], ["masked"]),
            helper.make_node("Softmax", ["masked"], ["P"]),
        ],
        "attn",
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", "K"]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", "K"]),
        ],
        [helper.make_tensor_value_info("P", TensorProto.FLOAT, ["N", "K"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_attention_mask_sentinels_are_ignored(method: str) -> None:
    rng = np.random.default_rng(4)
    scores = [rng.normal(size=(3, 6)).astype(np.float32) for _ in range(4)]
    masks = []
    for _ in range(4):
        mask = np.zeros((3, 6), dtype=np.float32)
        mask[:, 4:] = np.finfo(np.float32).min
        masks.append(mask)
    data = [{"scores": s, "mask": m} for s, m in zip(scores, masks, strict=True)]
    res = collect(model := _masked_add_model(), data, ["masked", "mask"], method=method)
    assert res.sentinels == {"masked": 4 * 3 * 2, "mask": 4 * 3 * 2}
    unmasked = [{"scores": s[:, :4], "mask": np.zeros((3, 4), np.float32)} for s in scores]
    clean = collect(model, unmasked, ["masked"], method=method)
    assert res.ranges["masked"] == clean.ranges["masked"]
    assert res.ranges["mask"] == (0.0, 0.0)


def test_progress_and_max_samples_truncate_the_last_batch() -> None:
    calls: list[tuple[int, int | None]] = []
    seen: list[int] = []

    class Counting(LazySource):
        def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
            for b in super().__iter__():
                seen.append(b["X"].shape[0])
                yield b

    res = collect(
        _cnn(), Counting(10, 4), ["relu"], max_samples=10, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(4, 10), (8, 10), (10, 10)]
    assert (res.samples, res.batches) == (10, 3)
    assert seen == [4, 4, 4]  # read once, and not past the limit
    calls.clear()
    res = collect(
        _cnn(),
        LazySource(2, 3),
        ["relu", "Y"],
        progress=lambda d, t: calls.append((d, t)),
        memory_budget_bytes=2000,
    )
    assert res.passes == 2
    assert calls == [(3, None), (6, None), (9, 12), (12, 12)]


def test_max_samples_limits_the_data_that_is_observed() -> None:
    data = _batches(3, 4)
    limited = collect(_cnn(), data, ["X"], max_samples=6)
    x = np.concatenate([data[0]["X"], data[1]["X"][:2]])
    assert limited.ranges["X"] == (float(x.min()), float(x.max()))


def test_bad_sources_and_settings_are_clear_errors() -> None:
    model = _cnn()
    with pytest.raises(DataError, match=r"needs 2 passes .* but the source is a one-shot iterator"):
        collect(model, iter(_batches(2, 1)), ["relu", "Y"], memory_budget_bytes=300)
    one_pass = collect(model, (b for b in _batches(2, 3)), ["relu", "Y"])  # a generator is fine for one pass
    assert (one_pass.passes, one_pass.samples) == (1, 6)
    with pytest.raises(DataError, match="yielded no batches"):
        collect(model, [], ["relu"])
    with pytest.raises(RecipeError, match="unknown calibration method 'kl'"):
        collect(model, _batches(1, 1), ["relu"], method="kl")
    with pytest.raises(RecipeError, match="max_samples 0 must be >= 1"):
        collect(model, _batches(1, 1), ["relu"], max_samples=0)
    # batches that are not batch-first pass through whole (sequence-first LSTMs); a real mismatch
    # is then ONNX Runtime's to report
    with pytest.raises(InferenceError, match="ONNX Runtime failed to run the model"):
        collect(
            _masked_add_model(),
            [{"scores": np.zeros((2, 6), np.float32), "mask": np.zeros((3, 6), np.float32)}],
            ["masked"],
        )


def test_tensors_of_data_dependent_shape_are_measured_on_the_first_batch() -> None:
    zero = numpy_helper.from_array(np.zeros(1, dtype=np.float32), "zero")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["X"], ["colmax"], axes=[0], keepdims=0),
            helper.make_node("Greater", ["colmax", "zero"], ["keep"]),
            helper.make_node("Compress", ["X", "keep"], ["picked"], axis=1),  # [N, ?]: not inferable
            helper.make_node("Neg", ["picked"], ["neg"]),
        ],
        "compress",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("neg", TensorProto.FLOAT, ["N", None])],
        [zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    rng = np.random.default_rng(5)
    data = []
    for _ in range(3):
        x = rng.normal(size=(5, 8)).astype(np.float32)
        x[:, [1, 4, 5, 7]] = -np.abs(x[:, [1, 4, 5, 7]])  # these columns are dropped
        x[:, [0, 2, 3, 6]] = np.abs(x[:, [0, 2, 3, 6]]) + 0.1
        data.append({"X": x})
    picked = np.concatenate([b["X"][:, [0, 2, 3, 6]] for b in data])
    res = collect(model, data, ["picked", "neg"], memory_budget_bytes=5 * 4 * 4)  # one 5x4 float32 tensor
    assert res.passes == 2
    assert res.ranges["picked"] == (float(picked.min()), float(picked.max()))
    assert res.ranges["neg"] == (float(-picked.max()), float(-picked.min()))


def test_value_info_with_a_fixed_batch_does_not_constrain_fetching() -> None:
    model = _cnn()
    model.graph.value_info.append(helper.make_tensor_value_info("conv", TensorProto.FLOAT, [1, 4, 8, 8]))
    data = _batches(2, 4)
    res = collect(model, data, ["conv"])
    conv = _reference_acts(_cnn(), data)["conv"]
    np.testing.assert_allclose(res.ranges["conv"], (conv.min(), conv.max()), rtol=1e-5)
