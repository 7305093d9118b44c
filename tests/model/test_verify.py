"""model/verify.py: the importers' numeric check of an ONNX model against the source framework's outputs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as h

from edgequant.errors import ModelError
from edgequant.model.io import load_model
from edgequant.model.verify import compare_outputs, first_line, second_batch, verify_and_save, verify_onnx


def _double() -> onnx.ModelProto:
    """y = 2·x, x float32 [batch, 4]."""
    g = h.make_graph(
        [h.make_node("Add", ["x", "x"], ["y"], name="add")],
        "double",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    return [{"x": x}, {"x": second_batch(x, 0, seed=1)}]


def test_callable_reference_reports_worst_diff_and_sqnr() -> None:
    feeds = _feeds()

    def reference(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        y = 2.0 * feed["x"].astype(np.float64)
        y[0, 0] += 0.01  # one value off by 0.01 in every run
        return [y]

    diff, sqnr = verify_onnx(_double(), feeds, reference, threshold_db=40.0, what="t")
    expected = min(
        10 * np.log10(np.sum(reference(f)[0] ** 2) / np.sum((reference(f)[0] - 2.0 * f["x"]) ** 2))
        for f in feeds
    )
    assert diff == pytest.approx(0.01, abs=1e-6)
    assert sqnr == pytest.approx(expected, abs=1e-4)
    assert 40.0 < sqnr < 70.0  # a real, finite number: the 0.01 error is seen


def test_array_reference_equals_callable_reference() -> None:
    feeds = _feeds()
    arrays = [[2.0 * f["x"]] for f in feeds]
    assert verify_onnx(_double(), feeds, arrays, threshold_db=40.0, what="t") == (0.0, float("inf"))


def test_mismatch_names_output_run_and_numbers() -> None:
    feeds = _feeds()
    arrays = [[3.0 * f["x"]] for f in feeds]  # 3x vs 2x: SQNR = 10·log10(9) = 9.5 dB
    with pytest.raises(ModelError) as info:
        verify_onnx(_double(), feeds, arrays, threshold_db=40.0, what="conversion of 'm'")
    msg = str(info.value)
    assert msg.startswith(
        "conversion of 'm': ONNX Runtime output does not match the source model (required SQNR >= 40.0 dB): "
    )
    assert "'y' on the example inputs: SQNR 9.5 dB" in msg
    assert "'y' on the second batch size: SQNR 9.5 dB" in msg
    # the same mismatch passes a 5 dB requirement
    assert verify_onnx(_double(), feeds, arrays, threshold_db=5.0, what="t")[1] == pytest.approx(
        10 * np.log10(9.0), abs=1e-4
    )


def test_output_and_run_count_mismatches_are_model_errors() -> None:
    feeds = _feeds()
    with pytest.raises(
        ModelError, match=r"^t: the ONNX graph has 1 output\(s\) \['y'\] but the source model "
    ):
        verify_onnx(_double(), feeds, lambda f: [f["x"], f["x"]], threshold_db=40.0, what="t")
    with pytest.raises(ModelError, match=r"^t: 1 reference run\(s\) were given for 2 feed\(s\)\."):
        verify_onnx(_double(), feeds, [[2.0 * feeds[0]["x"]]], threshold_db=40.0, what="t")


def test_verify_and_save_writes_only_a_verified_model(tmp_path: Path) -> None:
    feeds = _feeds()
    out = tmp_path / "m.onnx"
    with pytest.raises(ModelError, match=r"SQNR 9\.5 dB"):  # 3x vs 2x: refused, nothing written
        verify_and_save(
            _double(), feeds, [[3.0 * f["x"]] for f in feeds], out,
            source="s", threshold_db=40.0, what="t", started=time.perf_counter(),
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    started = time.perf_counter()
    report = verify_and_save(
        _double(), feeds, lambda f: [2.0 * f["x"]], out,
        source="test:double", threshold_db=40.0, what="t", started=started,
    )  # fmt: skip
    assert (report.source, report.onnx_path, report.opset) == ("test:double", out, 17)
    assert (report.max_abs_diff, report.sqnr_db) == (0.0, float("inf"))
    assert 0.0 < report.seconds < time.perf_counter() - started + 1e-9
    assert [n.op_type for n in load_model(out).graph.node] == ["Add"]


def test_compare_outputs_catches_nan_and_passes_exact_zero() -> None:
    ref = np.array([[1.0, 2.0], [0.0, -1.0]], np.float32)
    bad = ref.copy()
    bad[0, 1] = np.nan
    with pytest.raises(
        ModelError, match="'y' on the example inputs: NaN/inf where the source model has none"
    ):
        compare_outputs([[ref]], [[bad]], ["y"], 40.0, "t")
    zeros = np.zeros((2, 2), np.float32)  # SQNR of an all-zero output is meaningless; exact match passes
    assert compare_outputs([[zeros]], [[zeros]], ["y"], 40.0, "t") == (0.0, float("inf"))
    nan_both = np.full((1, 2), np.nan, np.float32)
    assert compare_outputs([[nan_both]], [[nan_both]], ["y"], 40.0, "t")[0] == 0.0


def test_second_batch_repeats_and_perturbs() -> None:
    x = np.random.default_rng(3).standard_normal((5, 3, 2)).astype(np.float32)  # batch on axis 1
    grown = second_batch(x, 1, seed=0)
    assert grown.shape == (5, 5, 2) and grown.dtype == np.float32
    np.testing.assert_array_equal(grown[:, :3], x)
    noise = grown[:, 3:] - x[:, :2]
    assert 0.0 < float(np.std(noise)) < 0.02 * float(np.std(x))  # 1% of the input's std, seeded
    ints = np.arange(6, dtype=np.int64).reshape(2, 3)
    np.testing.assert_array_equal(second_batch(ints, 0), ints[[0, 1, 0, 1]])


def test_first_line() -> None:
    assert first_line(ValueError("bad thing.\nsecond line")) == "bad thing"
    assert first_line(KeyError()) == "KeyError"
