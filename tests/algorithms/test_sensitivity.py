"""--target-sqnr: keep the most sensitive nodes float until the output SQNR reaches the target.

The model: conv1 -> relu -> conv2 -> relu -> conv3.  Input channel 0 is 100x larger than the others
but conv1's weights on it are 100x smaller, so it barely matters to the output while it sets the
range of the quantized input ``x``: on that grid (step ~3) the other channels, which carry the
signal, are lost, and static int8 reaches only ~5 dB of output SQNR.  Keeping conv1 float (its input
then stays float) gives ~40 dB; conv2 and conv3 alone cost ~42-46 dB.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from typer.testing import CliRunner

import edgequant
from edgequant.algorithms import default_cap, sensitivity
from edgequant.cli import app
from edgequant.errors import TargetNotMetError
from edgequant.evaluate.metrics import sqnr_db
from edgequant.plan import QuantPlan
from edgequant.recipe import from_dict
from edgequant.runtime import OrtRuntime

REASON = (
    "kept float by --target-sqnr: alone it limits the output SQNR to {:.1f} dB "
    "(the output's SQNR against float when only this node is quantized)."
)
HINT = "Fix: lower --target-sqnr, raise --max-float-nodes, or use --act-bits 16 (or --method fp16)."
API_HINT = "Fix: lower target_sqnr=, raise max_float_nodes=, or use act_bits=16 (or method='fp16')."


def sensitive_net(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((8, 4, 3, 3)) * 0.3).astype(np.float32)
    w1[:, 0] *= 0.01
    w2 = (rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32)
    w3 = (rng.standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32)
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        h.make_node("Conv", ["r2", "w3"], ["y"], name="conv3"),
    ]
    g = h.make_graph(
        nodes,
        "sensitive",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 4, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 4, 8, 8])],
        [nh.from_array(w1, "w1"), nh.from_array(w2, "w2"), nh.from_array(w3, "w3")],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def inputs(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 4, 8, 8)).astype(np.float32)
    x[:, 0] *= 100.0
    return x


MODEL = sensitive_net()
CALIB = inputs(32, 1)


def ort_sqnr(quantized: onnx.ModelProto, x: np.ndarray) -> float:
    rt = OrtRuntime()
    ref = rt.session(MODEL).run({"x": x})["y"]
    got = rt.session(quantized).run({"x": x})["y"]
    return sqnr_db(ref, got)


@pytest.fixture(scope="module")
def static() -> edgequant.QuantResult:
    return edgequant.quantize(MODEL, CALIB, batch_size=8)


@pytest.fixture(scope="module")
def met() -> edgequant.QuantResult:
    return edgequant.quantize(MODEL, CALIB, batch_size=8, target_sqnr_db=25.0)


def test_static_int8_misses_the_target(static: edgequant.QuantResult) -> None:
    assert ort_sqnr(static.model, CALIB[:16]) < 10.0
    assert "sensitivity" not in static.report


def test_target_met_by_keeping_only_the_sensitive_conv_float(met: edgequant.QuantResult) -> None:
    sens = met.report["sensitivity"]
    assert [k["node"] for k in sens["kept_float"]] == ["conv1"]
    assert sens["ranked"][0]["node"] == "conv1" and sens["ranked"][0]["isolated_sqnr_db"] < 10.0
    assert all(r["isolated_sqnr_db"] > 35.0 for r in sens["ranked"][1:])
    assert sens["target_sqnr_db"] == 25.0 and sens["samples"] == 16 and sens["max_float_nodes"] == 2
    assert sens["sqnr_before_db"] < 10.0 <= 35.0 < sens["sqnr_after_db"]
    assert sens["seconds"] >= 0.0 and met.report["seconds"]["mixed_precision"] >= sens["seconds"]
    # ORT, on the calibration batches the target was measured on (the even samples: the odd ones are
    # held back for the run check), and on data it never saw
    assert ort_sqnr(met.model, CALIB[0::2]) == pytest.approx(sens["sqnr_after_db"], abs=0.01)
    assert ort_sqnr(met.model, inputs(32, 99)) >= 25.0
    assert met.report["check"]["output_sqnr_db"]["y"] >= 25.0
    skipped = {d.node: d.reason for d in met.plan.skipped_nodes}
    assert skipped == {"conv1": REASON.format(sens["kept_float"][0]["isolated_sqnr_db"])}
    assert {d.node for d in met.plan.quantized_nodes} >= {"conv2", "conv3"}
    # conv1 runs in float on the float input; conv2 keeps its int8 weights and quantized input
    consumers = {n.name: list(n.input) for n in met.model.graph.node}
    assert consumers["conv1"][:2] == ["x", "w1"] and consumers["conv2"][1] == "w2_dq"
    assert "x" not in met.plan.tensors and met.plan.tensors["w2"].role == "weight"
    assert any(n.startswith("--target-sqnr 25 dB: output SQNR") for n in met.report["notes"])


def test_ranges_are_reused_not_recalibrated(
    static: edgequant.QuantResult, met: edgequant.QuantResult
) -> None:
    for name, entry in met.plan.tensors.items():
        if entry.role == "activation":
            assert (entry.lo, entry.hi) == (static.plan.tensors[name].lo, static.plan.tensors[name].hi)


def test_target_already_met_keeps_everything_quantized(static: edgequant.QuantResult) -> None:
    res = edgequant.quantize(MODEL, CALIB, batch_size=8, target_sqnr_db=3.0)
    sens = res.report["sensitivity"]
    assert sens["kept_float"] == [] and sens["sqnr_after_db"] == sens["sqnr_before_db"] > 3.0
    assert res.plan.to_dict()["tensors"] == static.plan.to_dict()["tensors"]
    assert any("met by static quantization alone" in n for n in res.plan.notes)


def test_unreachable_target_with_cap_1_names_sqnr_nodes_and_fix(met: edgequant.QuantResult) -> None:
    sens = met.report["sensitivity"]
    kept = sens["kept_float"][0]
    with pytest.raises(TargetNotMetError) as info:
        edgequant.quantize(MODEL, CALIB, batch_size=8, target_sqnr_db=200.0, max_float_nodes=1)
    best = info.value.result  # the best model reached comes with the error
    assert best is not None and best.report["sensitivity"]["met"] is False
    assert ort_sqnr(best.model, CALIB[0::2]) == pytest.approx(sens["sqnr_after_db"], abs=0.01)
    assert str(info.value) == (
        f"target_sqnr=200 dB was not reached: the output SQNR is {sens['sqnr_after_db']:.2f} dB "
        f"(static alone: {sens['sqnr_before_db']:.2f} dB) with 1 node(s) kept float: "
        f"conv1 ({kept['isolated_sqnr_db']:.2f} dB alone); the cap of 1 float node(s) "
        f"(max_float_nodes=) is reached. {API_HINT}"
    )  # the Python API names its keyword arguments (recipe.flags.api_words)


def test_the_last_quantized_compute_node_is_never_kept_float() -> None:
    # conv1 and conv2 float give ~46 dB; conv3 float too would leave only idle Q/DQ pairs (a float copy)
    with pytest.raises(edgequant.UnsupportedError) as info:
        edgequant.quantize(MODEL, CALIB, batch_size=8, target_sqnr_db=200.0, max_float_nodes=3)
    assert re.search(
        r"with 2 node\(s\) kept float: conv1 \(\d+\.\d\d dB alone\), conv2 \(\d+\.\d\d dB alone\); "
        r"no quantized node is left to try \(2 tried\)\.",
        str(info.value),
    ), str(info.value)


def test_a_candidate_that_does_not_raise_the_sqnr_is_put_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # best order reversed: with conv1 quantized, conv3 or conv2 in float gains < 0.01 dB
    real_rank = sensitivity.rank
    monkeypatch.setattr(sensitivity, "rank", lambda *a: list(reversed(real_rank(*a))))
    res = edgequant.quantize(MODEL, CALIB, batch_size=8, target_sqnr_db=25.0, max_float_nodes=1)
    sens = res.report["sensitivity"]
    assert [k["node"] for k in sens["kept_float"]] == ["conv1"]
    assert [t["node"] for t in sens["tried_without_gain"]] == ["conv3", "conv2"]
    for t in sens["tried_without_gain"]:
        assert t["sqnr_with_it_float_db"] < sens["sqnr_before_db"] + sensitivity.MIN_GAIN_DB
    assert {d.node for d in res.plan.skipped_nodes} == {"conv1"}


def test_default_cap_is_ten_percent_of_quantized_compute_nodes() -> None:
    plan = QuantPlan("static", 13)
    for i in range(25):
        plan.decide(f"conv{i}", "Conv", True)
        plan.decide(f"add{i}", "Add", True)
    plan.decide("float_conv", "Conv", False, "excluded by the user ('float_conv').")
    assert default_cap(plan) == 3  # 10 % of 25 is 2: at least 3
    for i in range(25, 40):
        plan.decide(f"conv{i}", "Conv", True)
    assert default_cap(plan) == 4  # 10 % of 40
    small = QuantPlan("static", 13)
    for i in range(3):
        small.decide(f"conv{i}", "Conv", True)
    assert default_cap(small) == 2  # all but one
    assert default_cap(QuantPlan("static", 13)) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"target_sqnr_db": 0}, "target_sqnr_db 0.0 is not a positive, finite number of dB."),
        ({"target_sqnr_db": -5}, "target_sqnr_db -5.0 is not a positive, finite number of dB."),
        ({"target_sqnr_db": float("inf")}, "target_sqnr_db inf is not a positive, finite number of dB."),
        ({"target_sqnr_db": float("nan")}, "target_sqnr_db nan is not a positive, finite number of dB."),
        (
            {"target_sqnr_db": 20, "method": "dynamic"},
            "target_sqnr_db is set but method is 'dynamic'; the target keeps nodes of a static int model "
            "float, so it applies to method 'static' only.",
        ),
        ({"target_sqnr_db": 20, "max_float_nodes": 0}, "max_float_nodes 0 is not a positive count."),
        (
            {"max_float_nodes": 3},
            "max_float_nodes (3) is set but target_sqnr_db is not; the cap limits the nodes that "
            "--target-sqnr keeps float.",
        ),
        ({"target_sqnr_db": "high"}, "target_sqnr_db must be a number, got 'high'."),
        ({"max_float_nodes": 2.5}, "max_float_nodes must be an integer, got 2.5."),
    ],
)
def test_recipe_keys_are_validated(data: dict[str, object], message: str) -> None:
    with pytest.raises(edgequant.RecipeError) as info:
        from_dict(data)
    assert info.value.detail == message


def test_recipe_keys_mirror_yaml_and_suggest_names(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("target-sqnr-db: 22.5\nmax-float-nodes: 4\n", encoding="utf-8")
    recipe = edgequant.load_recipe(path)
    assert (recipe.target_sqnr_db, recipe.max_float_nodes) == (22.5, 4)
    assert from_dict({"target_sqnr": 20}).target_sqnr_db == 20.0  # the flag's spelling (issue 9)
    with pytest.raises(edgequant.RecipeError, match=r"did you mean 'target_sqnr_db'"):
        from_dict({"target_sqnr_dbb": 20})


def test_cli_flags(tmp_path: Path) -> None:
    model, calib, out = tmp_path / "sens.onnx", tmp_path / "calib.npy", tmp_path / "out"
    onnx.save_model(MODEL, model)
    np.save(calib, CALIB)
    args = ["quantize", str(model), "-o", str(out), "--calib-data", str(calib), "--batch-size", "8"]
    res = CliRunner().invoke(app, [*args, "--target-sqnr", "25", "--max-float-nodes", "1"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "sens_int8_sqnr25_h76d508.json").read_text())  # the hash: --max-float-nodes 1
    assert report["recipe"]["target_sqnr_db"] == 25.0 and report["recipe"]["max_float_nodes"] == 1
    assert [k["node"] for k in report["sensitivity"]["kept_float"]] == ["conv1"]
    short = tmp_path / "short"
    args = [a if a != str(out) else str(short) for a in args]
    bad = CliRunner().invoke(app, [*args, "--target-sqnr", "200", "--max-float-nodes", "1"])
    assert bad.exit_code == 1 and "error: --target-sqnr 200 dB was not reached" in bad.output
    # said once (the error), not as a note and a warning before it too
    assert " ".join(bad.output.split()).count("200 dB") == 1, bad.output
    report = json.loads((short / "sens_int8_sqnr200_h76d508.json").read_text())  # the best model reached
    assert report["sensitivity"]["met"] is False and (short / "sens_int8_sqnr200_h76d508.onnx").exists()
    bad = CliRunner().invoke(app, [*args, "--overwrite", "--target-sqnr", "-3"])
    assert bad.exit_code == 2 and "target_sqnr_db -3.0 is not a positive, finite number of dB." in bad.output
