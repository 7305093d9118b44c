"""The sweep command's table off a terminal (a file, a pipe): every cell whole, never cut to 'int8-…'."""

from __future__ import annotations

from pathlib import Path

import ray_helpers
from typer.testing import CliRunner

from edgequant.cli import app


def test_sweep_table_is_whole_when_piped(tmp_path: Path) -> None:
    model, calib, ev = ray_helpers.write_inputs(tmp_path)
    args = ["sweep", str(model), "--calib-data", str(calib), "--eval-data", str(ev)]
    opts = [
        "--methods",
        "int8-static,dynamic-int8",
        "--bits",
        "8",
        "--runs",
        "2",
        "-o",
        str(tmp_path / "s"),
    ]
    res = CliRunner().invoke(app, [*args, *opts], terminal_width=80)
    assert res.exit_code == 0, res.output
    assert "…" not in res.output
    assert "int8-static" in res.output and "dynamic-int8" in res.output and "cache" in res.output
    again = CliRunner().invoke(app, [*args, *opts], terminal_width=80)  # every cell from the cache now
    assert again.exit_code == 0 and again.output.count("cached") >= 2 and "…" not in again.output
