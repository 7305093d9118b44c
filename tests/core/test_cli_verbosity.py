"""-v/-q work before and after the subcommand (``edgequant quantize ... -q``), for every subcommand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from tinymodels import conv_net, images
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.cli_support import hoist_verbosity

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples"
COMMANDS = ["quantize", "inspect", "demo", "evaluate", "compare", "serve", "targets", "check", "qat", "sweep"]


def _note_model(tmp_path: Path) -> Path:
    """A model whose clean-up prints a note (a Constant weight) and logs it at INFO."""
    m = conv_net()
    w1 = next(t for t in m.graph.initializer if t.name == "w1")
    m.graph.initializer.remove(w1)
    m.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["w1"], name="w1_const", value=w1))
    path = tmp_path / "cnet.onnx"
    onnx.save_model(m, path)
    np.savez(tmp_path / "calib.npz", x=images(24))
    return path


def _quantize(tmp_path: Path, out: str, *extra: str) -> str:
    args = ["quantize", str(tmp_path / "cnet.onnx"), "-o", str(tmp_path / out)]
    res = runner.invoke(app, [*args, "--calib-data", str(tmp_path / "calib.npz"), *extra])
    assert res.exit_code == 0, res.output
    return res.output


def test_quiet_and_verbose_after_the_subcommand(tmp_path: Path) -> None:
    _note_model(tmp_path)
    normal = _quantize(tmp_path, "n")
    quiet = _quantize(tmp_path, "q", "-q")
    verbose = _quantize(tmp_path, "v", "-v")
    debug = _quantize(tmp_path, "d", "--verbose", "--verbose")
    quiet_long = _quantize(tmp_path, "ql", "--quiet")
    note = "note: 1 Constant node(s) converted to initializers"
    info = "INFO edgequant.model.repair: 1 Constant node(s) converted to initializers"
    assert note in normal and info not in normal
    for q in (quiet, quiet_long):
        assert "note:" not in q and "INFO" not in q
        assert q.count("warning:") == normal.count("warning:")  # -q hides notes, never a warning
    assert info in verbose and info in debug and "DEBUG" not in verbose
    assert len(quiet.splitlines()) < len(normal.splitlines()) < len(verbose.splitlines())


def test_before_and_after_add_up(tmp_path: Path) -> None:
    """-v before and -v after the command: -vv (the same as --verbose twice); -q on either side wins."""
    _note_model(tmp_path)
    args = ["quantize", str(tmp_path / "cnet.onnx"), "--calib-data", str(tmp_path / "calib.npz")]
    res = runner.invoke(app, ["-v", *args, "-o", str(tmp_path / "a"), "-q"])
    assert res.exit_code == 0 and "note:" not in res.output and "INFO" not in res.output, res.output
    res = runner.invoke(app, ["-q", *args, "-o", str(tmp_path / "b"), "-v"])
    assert res.exit_code == 0 and "note:" not in res.output and "INFO" not in res.output, res.output


@pytest.mark.parametrize("flag", ["-q", "-v", "-vv", "--quiet", "--verbose"])
@pytest.mark.parametrize("command", [*COMMANDS, "toolchain list"])
def test_every_subcommand_takes_them_after_its_name(command: str, flag: str) -> None:
    res = runner.invoke(app, [*command.split(), "--help", flag])
    assert res.exit_code == 0 and "No such option" not in res.output, res.output


def test_evaluate_quiet_after_hides_notes(tmp_path: Path) -> None:
    """evaluate prints the recipe's notes (here: keys it does not read) unless -q follows the command."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: static\nper_channel: false\n")
    base = ["evaluate", str(EXAMPLE / "shapes_cnn.onnx"), str(EXAMPLE / "shapes_cnn.onnx"),
            "--data", str(EXAMPLE / "shapes_eval.npz"), "--recipe", str(recipe)]  # fmt: skip
    loud = runner.invoke(app, base)
    quiet = runner.invoke(app, [*base, "-q"])
    assert loud.exit_code == 0 and quiet.exit_code == 0, loud.output + quiet.output
    assert "note:" in loud.output and "note:" not in quiet.output


def test_hoist_keeps_everything_else_in_order() -> None:
    assert hoist_verbosity(["quantize", "m.onnx", "-q", "-o", "x"]) == ["-q", "quantize", "m.onnx", "-o", "x"]
    assert hoist_verbosity(["-v", "toolchain", "list", "-vv"]) == ["-v", "-vv", "toolchain", "list"]
    assert hoist_verbosity(["quantize", "--", "-q"]) == ["quantize", "--", "-q"]
    assert hoist_verbosity(["--version"]) == ["--version"]
