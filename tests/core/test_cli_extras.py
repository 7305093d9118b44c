"""A missing optional extra is one line naming ``pip install 'edgequant[<extra>]'``, never a traceback
(issue 9, section 8), for each extra and the command that needs it.  ``torch``: test_cli_basics."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest
from tinymodels import conv_net
from typer.testing import CliRunner

from edgequant.cli import app


@pytest.mark.parametrize(
    ("module", "extra", "args"),
    [
        ("tensorflow", "tf", ["quantize", "{d}/m.keras", "-o", "{d}/o"]),
        ("h5py", "data", ["quantize", "{d}/net.onnx", "--calib-data", "{d}/c.h5", "-o", "{d}/o"]),
        ("PIL", "data", ["quantize", "{d}/net.onnx", "--calib-data", "{d}/imgs", "-o", "{d}/o"]),
        ("av", "data", ["quantize", "{d}/net.onnx", "--calib-data", "{d}/v.mp4", "-o", "{d}/o"]),
        ("fastapi", "serve", ["serve", "--port", "0", "--store", "{d}/store"]),
    ],
)
def test_a_missing_extra_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, extra: str, args: list[str]
) -> None:
    onnx.save(conv_net(), tmp_path / "net.onnx")
    for name in ("m.keras", "c.h5", "v.mp4"):
        (tmp_path / name).write_bytes(b"not read")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"not read")
    for name in [k for k in sys.modules if k == module or k.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import MODULE -> ModuleNotFoundError
    res = CliRunner().invoke(app, [a.format(d=tmp_path) for a in args])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert f"pip install 'edgequant[{extra}]'" in lines[0] and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()
