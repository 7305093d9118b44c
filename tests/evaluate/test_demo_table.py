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
    flat = " ".join(res.output.split())  # the caption wraps at the table's width
    for unit in (
        "top-1 %",
        "drop pp",
        "top-1 % = top-1 accuracy in percent",
        "drop pp = top-1 drop vs float in percentage points",
        "ms = median latency at batch 1 on 1 thread(s)",
        "MiB = file size (2^20 bytes)",
        "packed = MiB with sub-byte weights packed",
        "mJ = energy estimate per inference",
    ):
        assert unit in flat, unit
    assert (
        "rule: filter by every limit given (FP32 is a candidate), then take the best preferred quantity"
        in flat
    )
    # dynamic quantizes MatMul/Gemm only: the example has one Gemm among its compute nodes
    model = onnx.load(str(EXAMPLES / "shapes_cnn.onnx"))
    gemms = sum(n.op_type == "Gemm" for n in model.graph.node)
    assert gemms == 1
    # only the Gemm runs an integer kernel (ORT's census of the written model); the rest stays float
    assert re.search(r"dynamic-int8: 1 integer kernel \(DynamicQuantizeMatMul\);.* \d+ kept float", flat), (
        res.output
    )
    # and that its score depends on the evaluation batch (per-call input scales; measured: 97.46 % at batch 1,
    # 97.66 % at 32 on this example)
    assert "so its score depends on the evaluation batch size" in flat, res.output


def test_demo_table_off_a_terminal_at_80_columns_shows_every_number_whole(
    tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """`edgequant demo > demo.out` used to print `top… %` and `97.…`: off a terminal (CliRunner output is
    not a tty) the table is printed at its natural width, so every header and every number is whole."""
    import csv
    import os

    import edgequant.cli

    monkeypatch.setattr(edgequant.cli.console, "width", 80)
    out = tmp_path / "demo"
    res = CliRunner().invoke(
        app, ["demo", "--examples", str(EXAMPLES), "-o", str(out), "--methods", "float,int8-static,w4a8"]
    )
    assert res.exit_code == 0, res.output
    assert "…" not in res.output, res.output
    rows = {r["method"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {"float", "int8-static", "w4a8"}
    lines = res.output.splitlines()
    for method, r in rows.items():
        line = next(ln for ln in lines if re.match(rf"[│|] {re.escape(method)}\b", ln))
        cells = line.split()
        mib = os.path.getsize(out / r["model_file"]) / 2**20  # the file on disk, not the report's number
        for want in (
            f"{float(r['score']):.2f}",
            f"{float(r['drop']):.2f}",
            f"{float(r['median_ms']):.3f}",
            f"{mib:.3f}",
            f"{int(r['packed_bytes']) / 2**20:.3f}",
            f"{float(r['energy_mj_estimate']):.3g}",
        ):
            assert want in cells, (method, want, line)
    for header in ("method", "top-1 %", "drop pp", "ms", "MiB", "packed", "mJ", "limits"):
        assert header in next(ln for ln in lines if re.match(r"[┃|] method ", ln)), header


def test_demo_refuses_an_existing_file_in_o_without_overwrite(tmp_path: Path) -> None:
    """'demo -o DIR' replaced the user's DIR/report.html (it called compare with the API's default
    overwrite=True); now refused before any work, as 'compare -o' is (fresh-user review, session 11)."""
    out = tmp_path / "demo"
    out.mkdir()
    (out / "report.html").write_text("my page")
    res = CliRunner().invoke(app, ["demo", "--examples", str(EXAMPLES), "-o", str(out), "--methods", "float"])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and text.startswith(f"error: '{out / 'report.html'}' already exists"), (
        res.output
    )
    assert "Fix: pass --overwrite to replace the earlier run" in text, res.output
    assert [p.name for p in out.iterdir()] == ["report.html"] and (
        out / "report.html"
    ).read_text() == "my page"
    res = CliRunner().invoke(
        app, ["demo", "--examples", str(EXAMPLES), "-o", str(out), "--methods", "float", "--overwrite"]
    )
    assert res.exit_code == 0, res.output
    assert (out / "report.html").read_text() != "my page"
