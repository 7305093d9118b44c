"""sweep -o: files an earlier sweep did not write are not replaced unasked (fresh-user review, session 11:
a folder holding the user's sweep.html was silently overwritten, and -o naming a file ended in a
FileExistsError traceback).  An earlier sweep's folder, with its .sweep-cache/, is resumed as before."""

from __future__ import annotations

from pathlib import Path

import ray_helpers
from typer.testing import CliRunner

from edgequant.cli import app


def _sweep(tmp_path: Path, out: Path, *more: str) -> tuple[int, str]:
    model, calib, ev = ray_helpers.write_inputs(tmp_path / "in")
    args = [
        "sweep",
        str(model),
        "--calib-data",
        str(calib),
        "--eval-data",
        str(ev),
        "--methods",
        "dynamic-int8",
    ]
    res = CliRunner().invoke(app, [*args, "--bits", "8", "--runs", "2", "-o", str(out), *more])
    return res.exit_code, " ".join(res.output.split())


def test_sweep_refuses_files_it_did_not_write_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "sweep.html").write_text("my page")
    code, text = _sweep(tmp_path, out)
    assert code == 2 and text.startswith(f"error: '{out / 'sweep.html'}' already exists"), text
    assert "Fix: pass --overwrite to replace them" in text and "Traceback" not in text, text
    assert sorted(p.name for p in out.iterdir()) == ["sweep.html"]  # nothing written, no cache
    assert (out / "sweep.html").read_text() == "my page"
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, text = _sweep(tmp_path, afile)
    assert code == 2 and text == (
        f"error: output path '{afile}' exists and is not a directory. Fix: choose another -o (e.g. -o sw/)."
    ), text
    code, text = _sweep(tmp_path, out, "--overwrite")
    assert code == 0 and "1 cells: 1 ran" in text, text
    assert (out / "sweep.html").read_text() != "my page"
    code, text = _sweep(tmp_path, out)  # the sweep's own folder: resumed without --overwrite
    assert code == 0 and "1 cells: 0 ran, 1 skipped" in text, text
