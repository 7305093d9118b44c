"""Variable-length trials with per-time-step outputs [N, T, C] and per-step labels: evaluate and compare
score every real time step of every trial (padding masked), against an independent ORT + numpy count."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from typer.testing import CliRunner

from edgequant import quantize
from edgequant.cli import app
from edgequant.evaluate import evaluate

C, H, K = 4, 6, 3
EVAL_LENGTHS = [5, 9, 12, 7, 5, 11, 8, 6]
CALIB_LENGTHS = [10, 6, 8, 12, 7, 9]


def gru_net(masked: bool, seed: int = 0) -> onnx.ModelProto:
    """x [N, T, 4] -> GRU(6) -> per-step MatMul [6, 3] + b -> y [N, T, 3] (T dynamic); ``masked``: y * mask."""
    rng = np.random.default_rng(seed)
    inits = [
        nh.from_array((rng.standard_normal((1, 3 * H, C)) * 0.6).astype(np.float32), "W"),
        nh.from_array((rng.standard_normal((1, 3 * H, H)) * 0.4).astype(np.float32), "R"),
        nh.from_array((rng.standard_normal((1, 6 * H)) * 0.1).astype(np.float32), "B"),
        nh.from_array((rng.standard_normal((H, K)) * 0.8).astype(np.float32), "Wo"),
        nh.from_array((rng.standard_normal(K) * 0.1).astype(np.float32), "bo"),
        nh.from_array(np.array([1], np.int64), "one"),
        nh.from_array(np.array([2], np.int64), "two"),
    ]
    nodes = [
        h.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        h.make_node("GRU", ["xt", "W", "R", "B"], ["Y"], hidden_size=H, name="gru"),
        h.make_node("Squeeze", ["Y", "one"], ["y3"]),
        h.make_node("Transpose", ["y3"], ["hs"], perm=[1, 0, 2]),
        h.make_node("MatMul", ["hs", "Wo"], ["z"], name="head"),
        h.make_node("Add", ["z", "bo"], ["logits" if masked else "y"]),
    ]
    inputs = [h.make_tensor_value_info("x", T.FLOAT, ["N", "T", C])]
    if masked:
        inputs.append(h.make_tensor_value_info("mask", T.FLOAT, ["N", "T"]))
        nodes += [
            h.make_node("Unsqueeze", ["mask", "two"], ["m3"]),
            h.make_node("Mul", ["logits", "m3"], ["y"]),
        ]
    out = [h.make_tensor_value_info("y", T.FLOAT, ["N", "T", K])]
    m = h.make_model(
        h.make_graph(nodes, "gru_steps", inputs, out, inits), opset_imports=[h.make_opsetid("", 17)]
    )
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _per_trial(
    model: onnx.ModelProto | Path, xs: list[np.ndarray], masked: bool, batch: int = 1
) -> list[np.ndarray]:
    """Our own ORT session: [T_i, K] per trial.  Unmasked: one trial at a time; masked: ``batch`` trials
    zero-padded to the longest, with the mask, as the data layer batches them (dynamic quantization's
    ranges span the whole batch, so the batching matters)."""
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    s = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    outs = []
    for start in range(0, len(xs), batch if masked else 1):
        group = xs[start : start + (batch if masked else 1)]
        t = max(len(x) for x in group)
        feed = {"x": np.stack([np.pad(x, [(0, t - len(x)), (0, 0)]) for x in group])}
        if masked:
            feed["mask"] = np.stack([(np.arange(t) < len(x)).astype(np.float32) for x in group])
        y = s.run(["y"], feed)[0]
        outs += [y[i, : len(x)] for i, x in enumerate(group)]
    return outs


def _write(path: Path, xs: list[np.ndarray], labels: list[np.ndarray] | None) -> None:
    with h5py.File(path, "w") as f:
        for i, x in enumerate(xs):
            g = f.create_group(f"trial_{i:03d}")
            g["x"] = x
            if labels is not None:
                g["labels"] = labels[i]


def _expected(f_out: list[np.ndarray], q_out: list[np.ndarray], labels: list[np.ndarray]) -> dict[str, float]:
    """Frame-level numbers over every step of every trial, in numpy."""
    f, q, lab = np.concatenate(f_out), np.concatenate(q_out), np.concatenate(labels)
    noise = np.sum((f - q).astype(np.float64) ** 2)
    return {
        "float_top1": float(np.mean(f.argmax(1) == lab)),
        "quant_top1": float(np.mean(q.argmax(1) == lab)),
        "agree": float(np.mean(f.argmax(1) == q.argmax(1))),
        "sqnr": float(10 * np.log10(np.sum(f.astype(np.float64) ** 2) / noise)) if noise else float("inf"),
        "steps": float(len(lab)),
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("steps")
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((n, C)).astype(np.float32) for n in EVAL_LENGTHS]
    calib = [rng.standard_normal((n, C)).astype(np.float32) for n in CALIB_LENGTHS]
    out: dict[str, object] = {"dir": d, "xs": xs}
    for masked in (False, True):
        m = gru_net(masked)
        path = d / f"gru_{int(masked)}.onnx"
        onnx.save(m, path)
        f_out = _per_trial(m, xs, masked, batch=4)
        # per-step labels: the float model's decision, with about a third of the steps changed
        labels = []
        for o in f_out:
            lab = o.argmax(1)
            flip = rng.random(len(lab)) < 0.35
            labels.append(np.where(flip, (lab + 1) % K, lab).astype(np.int64))
        _write(d / "calib.h5", calib, None)
        opts = {"hdf5_mask_input": "mask"} if masked else {}
        q = quantize(path, str(d / "calib.h5"), method="static", data_options=opts)
        qpath = d / f"gru_{int(masked)}_int8.onnx"
        onnx.save(q.model, qpath)
        out[f"model{int(masked)}"], out[f"quant{int(masked)}"] = path, qpath
        out[f"expect{int(masked)}"] = _expected(f_out, _per_trial(q.model, xs, masked, batch=4), labels)
        out[f"labels{int(masked)}"] = labels
    return out


@pytest.mark.parametrize("masked", [False, True], ids=["one-by-one", "padded-with-mask"])
def test_api_scores_every_real_step(setup: dict, masked: bool) -> None:  # type: ignore[type-arg]
    d: Path = setup["dir"]
    _write(d / f"eval{int(masked)}.h5", setup["xs"], setup[f"labels{int(masked)}"])
    opts = {"hdf5_mask_input": "mask"} if masked else None
    exp = setup[f"expect{int(masked)}"]
    r = evaluate(setup[f"model{int(masked)}"], setup[f"quant{int(masked)}"], str(d / f"eval{int(masked)}.h5"),
                 "classification", batch_size=4, options=opts)  # fmt: skip
    assert r.samples == exp["steps"] == sum(EVAL_LENGTHS)
    assert r.float_metrics["top1"] == pytest.approx(exp["float_top1"], abs=1e-9)
    assert r.quant_metrics["top1"] == pytest.approx(exp["quant_top1"], abs=1e-9)
    assert r.agreement["top1_agreement"] == pytest.approx(exp["agree"], abs=1e-9)
    assert r.agreement["sqnr_db"] == pytest.approx(exp["sqnr"], abs=0.05)
    assert 0.4 < exp["float_top1"] < 0.9  # labels differ from the float decisions: the metric is not trivial


def test_unlabeled_trials_score_agreement_per_step(setup: dict) -> None:  # type: ignore[type-arg]
    d: Path = setup["dir"]
    _write(d / "nolab.h5", setup["xs"], None)
    r = evaluate(setup["model0"], setup["quant0"], str(d / "nolab.h5"), "classification")  # one by one
    assert r.agreement["top1_agreement"] == pytest.approx(setup["expect0"]["agree"], abs=1e-9)
    assert r.agreement["sqnr_db"] == pytest.approx(setup["expect0"]["sqnr"], abs=0.05)


@pytest.mark.parametrize("masked", [False, True], ids=["one-by-one", "padded-with-mask"])
def test_cli_evaluate(setup: dict, masked: bool, tmp_path: Path) -> None:  # type: ignore[type-arg]
    _write(tmp_path / "eval.h5", setup["xs"], setup[f"labels{int(masked)}"])
    opt = ["--data-option", "hdf5_mask_input=mask"] if masked else []
    res = CliRunner().invoke(
        app,
        ["evaluate", str(setup[f"model{int(masked)}"]), str(setup[f"quant{int(masked)}"]), "--data",
         str(tmp_path / "eval.h5"), "--batch-size", "4", *opt, "-o", str(tmp_path / "e.json")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "e.json").read_text())
    exp = setup[f"expect{int(masked)}"]
    assert rep["float"]["top1"] == pytest.approx(exp["float_top1"], abs=1e-9)
    assert rep["quantized"]["top1"] == pytest.approx(exp["quant_top1"], abs=1e-9)
    assert rep["agreement"]["sqnr_db"] == pytest.approx(exp["sqnr"], abs=0.05)
    assert f"{sum(EVAL_LENGTHS)} real steps of {len(EVAL_LENGTHS)} trials" in rep["data"]


def _check_methods(methods: list[dict], outdir: Path, setup: dict, masked: bool) -> None:  # type: ignore[type-arg]
    """Each method's frame-level numbers equal our own ORT run of the file it wrote (compare evaluates in
    batches of 32: all 8 trials in one padded batch when masked)."""
    labels, xs = setup[f"labels{int(masked)}"], setup["xs"]
    f_out = _per_trial(setup[f"model{int(masked)}"], xs, masked, batch=32)
    assert [m["method"] for m in methods] == ["float", "dynamic-int8", "int8-static"]
    for m in methods:
        assert m["status"] == "ok", m["error"]
        exp = _expected(f_out, _per_trial(outdir / m["model_file"], xs, masked, batch=32), labels)
        ev = m["evaluation"]
        assert ev["samples"] == sum(EVAL_LENGTHS)
        assert ev["float"]["top1"] == pytest.approx(exp["float_top1"], abs=1e-9)
        assert ev["quantized"]["top1"] == pytest.approx(exp["quant_top1"], abs=1e-9)
        assert ev["agreement"]["top1_agreement"] == pytest.approx(exp["agree"], abs=1e-9)
        if m["method"] == "float":
            assert ev["agreement"]["sqnr_db"] == "inf"
        else:
            assert float(ev["agreement"]["sqnr_db"]) == pytest.approx(exp["sqnr"], abs=0.05)


@pytest.mark.parametrize("masked", [False, True], ids=["one-by-one", "padded-with-mask"])
def test_cli_compare(setup: dict, masked: bool, tmp_path: Path) -> None:  # type: ignore[type-arg]
    d: Path = setup["dir"]
    _write(tmp_path / "eval.h5", setup["xs"], setup[f"labels{int(masked)}"])
    opt = ["--data-option", "hdf5_mask_input=mask"] if masked else []
    res = CliRunner().invoke(
        app,
        ["compare", str(setup[f"model{int(masked)}"]), "--calib-data", str(d / "calib.h5"), "--eval-data",
         str(tmp_path / "eval.h5"), "--methods", "float,dynamic-int8,int8-static", "--no-memory", "--runs", "2",
         "--max-drop", "100", *opt, "-o", str(tmp_path / "cmp")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert f"{sum(EVAL_LENGTHS)} real steps of {len(EVAL_LENGTHS)} trials" in rep["settings"]["eval_data"]
    _check_methods(rep["methods"], tmp_path / "cmp", setup, masked)


def test_api_compare(setup: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    from edgequant.evaluate import compare

    d: Path = setup["dir"]
    _write(tmp_path / "eval.h5", setup["xs"], setup["labels1"])
    r = compare(setup["model1"], str(d / "calib.h5"), str(tmp_path / "eval.h5"),
                methods="float,dynamic-int8,int8-static", outdir=tmp_path / "cmp", latency_runs=2,
                measure_memory=False, max_drop=100, data_options={"hdf5_mask_input": "mask"})  # fmt: skip
    rep = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert r.method("int8-static").status == "ok"
    _check_methods(rep["methods"], tmp_path / "cmp", setup, True)
