"""The run check (report["check"]): recomputed with our own ORT sessions, on samples calibration never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from tinymodels import conv_net, images, mlp
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    return float(
        10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - got).astype(np.float64) ** 2))
    )


def _session(m: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def test_check_sqnr_is_recomputed_with_own_sessions_on_the_held_out_samples() -> None:
    x = images(96)
    m = conv_net()
    r = edgequant.quantize(m, {"x": x}, batch_size=8)
    check = r.report["check"]
    assert check["kind"] == "held_out" and check["samples"] == 32
    # the held-out samples: 32 of 96, evenly spread (every third, starting at 1)
    held = np.arange(1, 96, 3)
    f, q = _session(m), _session(r.model)
    pooled = _sqnr(f.run(None, {"x": x[held]})[0], q.run(None, {"x": x[held]})[0])  # docs/report.md's formula
    assert check["output_sqnr_db"]["y"] == pytest.approx(pooled, abs=0.01)
    assert r.report["calibration"]["samples"] == 64  # calibration read the other 64


def test_calibration_never_reads_the_held_out_samples() -> None:
    x = images(64)
    x[np.arange(1, 64, 2)] *= 50.0  # the 32 held-out samples (every second) are far out of range
    r = edgequant.quantize(conv_net(), {"x": x}, calib_method="minmax")
    hi = r.plan.tensors["x"].hi
    assert hi is not None and hi <= float(x[np.arange(0, 64, 2)].max()) + 1e-6
    # so the check on those samples shows what calibration could not know: a clipped input
    assert r.report["check"]["output_sqnr_db"]["y"] < 10


def test_small_data_says_how_many_samples_were_held_back() -> None:
    r = edgequant.quantize(conv_net(), {"x": images(10)})
    assert r.report["check"]["samples"] == 5 and r.report["calibration"]["samples"] == 5
    assert any("the data has 10 samples: 5 held back for the check" in w for w in r.report["warnings"])


def test_a_single_sample_is_checked_in_sample_and_says_so() -> None:
    r = edgequant.quantize(conv_net(), {"x": images(1)})
    assert r.report["check"]["kind"] == "in_sample" and r.report["check"]["samples"] == 1
    assert any("reads what calibration read" in w for w in r.report["warnings"])


def test_static_without_data_is_refused_unless_synthetic_is_allowed() -> None:
    with pytest.raises(edgequant.DataError, match="allow_synthetic=True"):
        edgequant.quantize(conv_net())
    r = edgequant.quantize(conv_net(), allow_synthetic=True)
    assert r.report["calibration"]["synthetic"] is True
    assert r.report["check"]["kind"] == "synthetic"
    assert sum("SYNTHETIC" in w for w in r.report["warnings"]) == 2  # calibration and check


@pytest.mark.parametrize("method", ["dynamic", "fp16", "weight-only"])
def test_data_free_methods_check_on_synthetic_inputs_and_say_so(method: str) -> None:
    r = edgequant.quantize(mlp(), method=method)
    assert r.report["check"]["kind"] == "synthetic"
    assert any("SYNTHETIC" in w for w in r.report["warnings"])


def test_nan_and_inf_in_calibration_data_are_refused_with_the_sample_index() -> None:
    x = images(40)
    x[13, 1, 2, 3] = np.nan
    with pytest.raises(edgequant.DataError, match=r"sample 13 \(input 'x'\) holds NaN"):
        edgequant.quantize(conv_net(), {"x": x})
    rng = np.random.default_rng(0)
    batches = [{"x": rng.standard_normal((4, 32)).astype(np.float32)} for _ in range(4)]
    batches[2]["x"][1, 0] = np.inf  # the stream's sample 9
    with pytest.raises(edgequant.DataError, match=r"sample 9 \(input 'x'\) holds Inf"):
        edgequant.quantize(mlp(), batches)


def _transpose_matmul() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2], name="tr"),
        h.make_node("MatMul", ["t", "w"], ["m"], name="mm"),
        h.make_node("Add", ["m", "b"], ["y"], name="add"),
    ]
    g = h.make_graph(
        nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["T", "N", 32])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", "T", 16])],
        [nh.from_array(rng.standard_normal((32, 16)).astype(np.float32), "w"),
         nh.from_array(rng.standard_normal(16).astype(np.float32), "b")],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_fp16_transpose_of_the_batch_axis_into_matmul_runs() -> None:
    m = _transpose_matmul()
    x = np.random.default_rng(1).standard_normal((64, 4, 32)).astype(np.float32)
    r = edgequant.quantize(m, {"x": x}, method="fp16")
    tr = next(n for n in r.model.graph.node if n.op_type == "Transpose")
    assert tr.input[0] == "x"  # float32 in, a Cast after it
    ev = x[:8]
    assert _sqnr(_session(m).run(None, {"x": ev})[0], _session(r.model).run(None, {"x": ev})[0]) > 60


def test_a_native_crash_of_onnx_runtime_becomes_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from edgequant.cli import app
    from edgequant.runtime import isolated

    crash = tmp_path / "crash.py"
    crash.write_text(  # the input model's load probe (no batches) passes; running the quantized model aborts
        "import json, os, sys\nimport numpy as np\nspec = json.load(open(sys.argv[1]))\n"
        "if spec['batches'] == 0:\n    np.savez(spec['outputs'])\n    sys.exit(0)\n"
        "print('loaded', flush=True)\nos.abort()\n"
    )
    monkeypatch.setattr(isolated, "CHILD", crash)
    model = tmp_path / "m.onnx"
    onnx.save_model(mlp(), model)
    res = CliRunner().invoke(app, ["quantize", str(model), "-o", str(tmp_path / "out"), "--method", "fp16"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "ONNX Runtime crashed (SIGABRT) while running the quantized model" in lines[0]
    assert not (tmp_path / "out").exists()


def _fp16_transpose_matmul() -> onnx.ModelProto:
    """x[T,N,32] -> Cast fp16 -> Transpose(1,0,2) -> MatMul + b in fp16 -> Cast: a model whose load
    segfaults ONNX Runtime 1.32's CPU provider (found by a reviewer, 2026-11-30)."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    w = nh.from_array(rng.standard_normal((32, 16)).astype(np.float16), "W")
    b = nh.from_array(rng.standard_normal((16,)).astype(np.float16), "b")
    nodes = [
        h.make_node("Cast", ["x"], ["x16"], to=T.FLOAT16),
        h.make_node("Transpose", ["x16"], ["t"], perm=[1, 0, 2]),
        h.make_node("MatMul", ["t", "W"], ["m"]),
        h.make_node("Add", ["m", "b"], ["y16"]),
        h.make_node("Cast", ["y16"], ["y"], to=T.FLOAT),
    ]
    g = h.make_graph(
        nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["T", "N", 32])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", "T", 16])], [w, b],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_a_crash_on_the_users_model_is_one_line_in_quantize_and_evaluate(tmp_path: Path) -> None:
    import subprocess
    import sys

    from typer.testing import CliRunner

    from edgequant.cli import app

    model = tmp_path / "crash16.onnx"
    onnx.save_model(_fp16_transpose_matmul(), model)
    probe = (
        "import onnxruntime as o, sys; o.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])"
    )
    assert subprocess.run([sys.executable, "-c", probe, str(model)]).returncode < 0  # ORT itself crashes
    res = CliRunner().invoke(app, ["quantize", str(model), "--method", "dynamic", "-o", str(tmp_path / "q")])
    assert res.exit_code == 2 and "ONNX Runtime crashed" in res.output and "the input model" in res.output
    assert not (tmp_path / "q").exists()
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2, 32), np.float32))
    res = CliRunner().invoke(app, ["evaluate", str(model), str(model), "--data", str(tmp_path / "d.npz")])
    assert res.exit_code == 2 and "ONNX Runtime crashed" in res.output, res.output


def _bn_folded_depthwise() -> onnx.ModelProto:
    """Depthwise conv whose channel 0 carries a 1000x folded BN scale (its input channel is 1000x smaller).

    Per-tensor weights then round channels 1-3 of the depthwise kernel to zero: a collapse on every CPU
    (at 100x it read 1.7 dB on AVX2 without VNNI, where ORT's U8S8 kernel saturates, but 3.6 dB on
    AVX-512 VNNI)."""
    rng = np.random.default_rng(3)
    wd = (rng.standard_normal((4, 1, 3, 3)) * 0.3).astype(np.float32)
    wd[0] *= 1000.0
    wp = (rng.standard_normal((4, 4, 1, 1)) * 0.3).astype(np.float32)
    wp[:, 0] *= 0.01
    nodes = [
        h.make_node("Conv", ["x", "wd"], ["d"], name="dw", group=4, pads=[1, 1, 1, 1]),
        h.make_node("Conv", ["d", "wp"], ["y"], name="pw"),
    ]
    g = h.make_graph(
        nodes, "bn", [h.make_tensor_value_info("x", T.FLOAT, ["N", 4, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 4, 8, 8])],
        [nh.from_array(wd, "wd"), nh.from_array(wp, "wp")],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_a_per_tensor_collapse_is_a_warning_naming_the_worst_layers() -> None:
    m = _bn_folded_depthwise()
    x = np.random.default_rng(4).standard_normal((64, 4, 8, 8)).astype(np.float32)
    x[:, 0] *= 0.001
    r = edgequant.quantize(m, {"x": x}, per_channel=False)
    ev = x[1::2][:8]  # held-out samples
    assert (
        _sqnr(_session(m).run(None, {"x": ev})[0], _session(r.model).run(None, {"x": ev})[0]) < 3.0
    )  # 0.0 dB measured (AVX-512 VNNI)
    collapse = r.report["check"]["collapse"]
    assert collapse["worst_tensors"] and {t["tensor"] for t in collapse["worst_tensors"]} <= {
        "x",
        "wd",
        "d",
        "wp",
    }
    warning = next(w for w in r.report["warnings"] if "collapsed" in w)
    assert (
        "use per-channel weights (--per-channel)" in warning
        and collapse["worst_tensors"][0]["tensor"] in warning
    )
    ok = edgequant.quantize(m, {"x": x})  # per channel: no collapse, no warning
    assert "collapse" not in ok.report["check"] and not any("collapsed" in w for w in ok.report["warnings"])


def test_a_fixed_batch_model_holds_back_whole_batches() -> None:
    m = conv_net()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4  # the model fixes batch 4
    r = edgequant.quantize(m, {"x": images(24)})
    # 6 batches of 4: 3 whole ones held back for the check, 3 for calibration
    assert r.report["check"]["samples"] == 12 and r.report["calibration"]["samples"] == 12


# -- on screen (issue 9, section 3: the collapse is printed, not only in the report) ----------------


def _screen_text(res: object) -> str:
    return " ".join(str(getattr(res, "output", "")).split())


def test_a_collapse_is_a_warning_on_screen(tmp_path: Path) -> None:
    onnx.save(_bn_folded_depthwise(), tmp_path / "dw.onnx")
    x = np.random.default_rng(4).standard_normal((64, 4, 8, 8)).astype(np.float32)
    x[:, 0] *= 0.001
    np.save(tmp_path / "x.npy", x)
    args = ["quantize", str(tmp_path / "dw.onnx"), "--calib-data", str(tmp_path / "x.npy"), "-o"]
    res = CliRunner().invoke(app, [*args, str(tmp_path / "pt"), "--per-tensor"])
    assert res.exit_code == 0, res.output
    out = _screen_text(res)
    assert (
        "warning: the quantized model has collapsed" in out
        and "use per-channel weights (--per-channel)" in out
    )
    res = CliRunner().invoke(app, [*args, str(tmp_path / "pc")])
    assert res.exit_code == 0 and "collapsed" not in res.output
    res = CliRunner().invoke(app, [*args, str(tmp_path / "q"), "--per-tensor", "-q"])  # -q keeps warnings
    assert res.exit_code == 0 and "warning: the quantized model has collapsed" in _screen_text(res)
