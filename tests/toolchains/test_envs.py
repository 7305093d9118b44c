"""Toolchain environments: install into a real venv, list, remove, licence, missing-toolchain errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.errors import ExportError, RecipeError, TargetError
from edgequant.toolchains import envs
from edgequant.toolchains.runner import run_driver


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEQUANT_TOOLCHAINS", str(tmp_path / "tc"))
    return tmp_path / "tc"


def test_install_list_remove_a_real_environment(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a toolchain with no requirements: a real venv is created, probed and recorded
    monkeypatch.setitem(envs.TOOLCHAINS, "tiny", envs.Toolchain("tiny", "test", (), ("pip",)))
    lines: list[str] = []
    info = envs.install("tiny", log=lines.append)
    py = Path(info["python"])
    assert py.is_file() and py.parent.parent == cache / "tiny" / "venv"
    # the recorded pip version is the one that venv really runs
    out = subprocess.run([str(py), "-m", "pip", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == info["versions"]["pip"]
    assert envs.require("tiny") == py
    assert json.loads((cache / "tiny" / "manifest.json").read_text())["toolchain"] == "tiny"
    assert any("installed tiny in" in line for line in lines)
    assert envs.install("tiny", log=lines.append) == info and "installed already" in lines[-1]
    assert envs.installed()["tiny"] is not None
    assert envs.remove("tiny") and not (cache / "tiny").exists()
    assert envs.remove("tiny") is False
    with pytest.raises(TargetError, match="edgequant toolchain install tiny"):
        envs.require("tiny")


def test_failed_install_leaves_nothing(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = envs.Toolchain("bad", "test", ("edgequant-no-such-dist==0.0.0",), ())
    monkeypatch.setitem(envs.TOOLCHAINS, "bad", bad)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no network needed to fail
    with pytest.raises(TargetError, match="failed with exit code"):
        envs.install("bad")
    assert not (cache / "bad").exists()


def test_akida_needs_the_licence_accepted(cache: Path) -> None:
    with pytest.raises(RecipeError, match="--accept-license"):
        envs.install("akida")
    assert not cache.exists()
    res = CliRunner().invoke(app, ["toolchain", "install", "akida"])
    assert res.exit_code == 2 and "--accept-license" in res.output and not cache.exists()


def test_cli_unknown_and_list(cache: Path) -> None:
    res = CliRunner().invoke(app, ["toolchain", "install", "tvmm"])
    assert res.exit_code == 2 and "unknown toolchain 'tvmm'" in res.output
    res = CliRunner().invoke(app, ["toolchain", "list"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "edgequant toolchain install tvm" in res.output and "--accept-license" in res.output


def test_driver_errors_are_one_line(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a "toolchain" whose interpreter is this one, without tvm: the driver reports the import failure
    (cache / "tvm").mkdir(parents=True)
    (cache / "tvm" / "manifest.json").write_text(json.dumps({"toolchain": "tvm", "python": sys.executable}))
    work = tmp_path / "w"
    work.mkdir()
    try:
        import tvm  # noqa: F401

        pytest.fail("tvm must not be importable in EdgeQuant's own environment")
    except ImportError:
        pass
    with pytest.raises(ExportError, match=r"tvm failed at import: No module named 'tvm'"):
        run_driver("tvm", "tvm_compile", {"model": str(work / "m.onnx")}, work)


def test_missing_toolchain_is_exit_2_with_the_install_command(cache: Path, tmp_path: Path) -> None:
    from tinymodels import conv_net

    model = tmp_path / "m.onnx"
    onnx.save(conv_net(), model)
    import numpy as np

    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        ["quantize", str(model), "--calib-data", str(tmp_path / "c.npz"), "--target", "tvm", "-o", str(out)],
    )
    assert res.exit_code == 2, res.output
    assert "edgequant toolchain install tvm" in res.output
    assert not out.exists() or not any(out.iterdir())
