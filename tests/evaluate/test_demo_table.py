"""The demo writes into a temporary directory it names, and its table states units, the rule, and
what a partial method (dynamic: only the Gemm head) quantized."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
from typer.testing import CliRunner

from edgequant.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_demo_table_units_rule_and_partial_methods(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import edgequant.cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(edgequant.cli.console, "width", 250)  # one line per row, headers unwrapped
    res = CliRunner().invoke(
        app, ["demo", "--examples", str(EXAMPLES), "--methods", "float,dynamic-int8,int8-static"],
        terminal_width=250,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    m = re.search(r"writing into (\S+)", res.output)
    assert m and Path(m.group(1)).name.startswith("edgequant-demo-") and Path(m.group(1)).is_dir()
    assert list(tmp_path.iterdir()) == []  # nothing in the working directory
    for unit in (
        "top-1 %",
        "drop (pp)",
        "median ms (batch 1, 1 thread(s))",
        "file MiB",
        "packed MiB",
        "mJ est.",
    ):
        assert unit in res.output, unit
    assert (
        "rule: filter by every limit given (FP32 is a candidate), then take the best preferred quantity"
        in res.output
    )
    # dynamic quantizes MatMul/Gemm only: the example has one Gemm among its compute nodes
    model = onnx.load(str(EXAMPLES / "shapes_cnn.onnx"))
    gemms = sum(n.op_type == "Gemm" for n in model.graph.node)
    assert gemms == 1
    # only the Gemm runs an integer kernel (ORT's census of the written model); the rest stays float
    assert re.search(
        r"dynamic-int8: 1 integer kernel \(DynamicQuantizeMatMul\);.* \d+ kept float", res.output
    ), res.output
