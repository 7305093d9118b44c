"""Every rich table the CLI prints is whole off a terminal: a piped command (CliRunner's output is not a
terminal; rich's width there is 80 columns) shows full paths and node names, never ``/root/.cache/…``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app
from edgequant.toolchains import envs

LONG = "a_folder_name_long_enough_that_the_path_does_not_fit_in_eighty_columns"


def six_channel_conv(conv_name: str, input_name: str = "x") -> onnx.ModelProto:
    """x[N,1,8,8] -> Conv 1->6 (3x3) -> Relu -> GAP -> Flatten: 6 output channels, which ti-npu's rule
    (a multiple of 4) flags on the Conv."""
    w = nh.from_array((np.random.default_rng(0).standard_normal((6, 1, 3, 3)) * 0.3).astype(np.float32), "w")
    nodes = [
        h.make_node("Conv", [input_name, "w"], ["c"], name=conv_name, pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c"], ["r"], name="relu"),
        h.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        h.make_node("Flatten", ["g"], ["y"], name="flatten"),
    ]
    g = h.make_graph(
        nodes, "six", [h.make_tensor_value_info(input_name, T.FLOAT, ["N", 1, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 6])], [w],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_toolchain_list_shows_the_whole_path_when_piped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / LONG / "toolchains"
    monkeypatch.setenv("EDGEQUANT_TOOLCHAINS", str(cache))
    (cache / "tvm").mkdir(parents=True)  # an installed toolchain, as its manifest records it
    manifest = {"toolchain": "tvm", "python": sys.executable, "versions": {"apache-tvm": "0.27.0.post1"}}
    (cache / "tvm" / "manifest.json").write_text(json.dumps(manifest))
    res = CliRunner().invoke(app, ["toolchain", "list"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    where = str(envs.env_dir("tvm"))
    assert len(where) > 80 and where in res.output  # the whole path on one line, not cut to '…'
    assert "…" not in res.output
    assert "apache-tvm 0.27.0.post1" in res.output


def test_check_findings_show_whole_node_names_when_piped(tmp_path: Path) -> None:
    long_name = "/classifier/features/block_0/" + LONG + "/Conv"
    x = np.random.default_rng(1).standard_normal((16, 1, 8, 8)).astype(np.float32)
    r = edgequant.quantize(six_channel_conv(long_name), {"x": x}, target="ti-npu")
    assert any(f["node"] == long_name for f in r.report["compliance"]["findings"])
    q = tmp_path / "q.onnx"
    onnx.save(r.model, q)
    res = CliRunner().invoke(app, ["check", str(q), "--target", "ti-npu"], env={"COLUMNS": "80"})
    assert res.exit_code == 1, res.output
    assert long_name in res.output and "…" not in res.output


def test_inspect_shows_whole_input_names_when_piped(tmp_path: Path) -> None:
    name = "input_" + LONG
    path = tmp_path / "m.onnx"
    onnx.save(six_channel_conv("conv", name), path)
    res = CliRunner().invoke(app, ["inspect", str(path)], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert name in res.output and "…" not in res.output
