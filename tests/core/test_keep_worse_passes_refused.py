"""``keep_worse_passes`` keeps a pass whose held-out SQNR fell; with no pass to keep it was silently
ignored (fresh-user review, session 9, defect 6: the file byte-identical, only the tag changed).  Now
refused in one line, exit 2, nothing written, in the CLI, a YAML recipe, the Python API and REST (the
REST service builds its recipe with ``build_recipe``: a 422 at submission)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from tinymodels import conv_net, images
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app
from edgequant.errors import RecipeError
from edgequant.pipeline import resolve_recipe


@pytest.fixture
def model(tmp_path: Path) -> Path:
    p = tmp_path / "net.onnx"
    onnx.save_model(conv_net(), p)
    np.save(tmp_path / "x.npy", images(16))
    return p


def _one_line_refusal(args: list[str], out: Path) -> str:
    res = CliRunner().invoke(app, ["quantize", *args, "-o", str(out)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    # from a recipe file the line names the file and the key first (fd01a93)
    assert len(lines) == 1 and "keep_worse_passes is set but" in lines[0], res.output
    assert lines[0].startswith(("error: keep_worse_passes", "error: recipe file ")), res.output
    assert not out.exists()
    return lines[0]


@pytest.mark.parametrize("extra", [[], ["--recipe", "w4a8"], ["--method", "weight-only"]])
def test_the_flag_without_a_pass_is_refused(model: Path, extra: list[str]) -> None:
    data = str(model.parent / "x.npy")
    line = _one_line_refusal(
        [str(model), "--calib-data", data, "--keep-worse-passes", *extra], model.parent / "o"
    )
    assert "runs no pass" in line and "Fix: add the passes with --algorithm" in line, line


def test_a_yaml_key_without_a_pass_is_refused(model: Path) -> None:
    rec = model.parent / "r.yaml"
    rec.write_text(yaml.safe_dump({"keep_worse_passes": True, "calib_data": str(model.parent / "x.npy")}))
    _one_line_refusal([str(model), "--recipe", str(rec)], model.parent / "o")
    with pytest.raises(RecipeError, match="keep_worse_passes is set but the recipe runs no pass"):
        edgequant.quantize(str(model), images(16), keep_worse_passes=True)


def test_with_a_pass_or_a_preset_that_runs_passes_it_is_accepted(model: Path) -> None:
    assert resolve_recipe(None, {"keep_worse_passes": True, "algorithms": ["cle"]}).keep_worse_passes
    assert resolve_recipe("accurate", {"keep_worse_passes": True}).algorithms == ("cle", "bias_correction")
    assert resolve_recipe(None, {"keep_worse_passes": True, "bias_correction": True}).algorithms == (
        "bias_correction",
    )
    rec = model.parent / "r.yaml"
    rec.write_text(yaml.safe_dump({"keep_worse_passes": True, "algorithms": ["adaround"], "weight_bits": 4}))
    assert resolve_recipe(str(rec), {}).keep_worse_passes


def test_a_rest_body_without_a_pass_is_refused() -> None:
    from edgequant.service.routes_jobs import build_recipe

    with pytest.raises(RecipeError, match="keep_worse_passes is set but the recipe runs no pass"):
        build_recipe({"keep_worse_passes": True}, "w4a8", None)
    assert build_recipe({"keep_worse_passes": True}, "accurate", None)["keep_worse_passes"] is True
