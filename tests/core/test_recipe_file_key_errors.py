"""A bad value in a recipe file names the file and the key (fresh-user review, session 11:
``algorithms: [cle, nope]`` answered "unknown algorithm 'nope'..." without saying where it was)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from typer.testing import CliRunner

from edgequant import load_recipe
from edgequant.cli import app
from edgequant.errors import RecipeError


def _model(path: Path) -> Path:
    graph = h.make_graph(
        [h.make_node("Relu", ["x"], ["y"])],
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 4])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 4])],
    )
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("algorithms: [cle, nope]\n", "key algorithms: unknown algorithm 'nope'; known: cle,"),
        ("method: static\nalgorithm: [nope]\n", "key algorithm: unknown algorithm 'nope'"),
        ("weight_bits: abc\n", "key weight_bits: weight_bits is 'abc'"),
    ],
)
def test_recipe_file_errors_name_the_file_and_key(tmp_path: Path, text: str, start: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["quantize", str(_model(tmp_path / "m.onnx")), "--recipe", str(recipe), "--allow-synthetic",
              "-o", str(out)],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    assert f"error: recipe file '{recipe}', {start}" in " ".join(res.output.split()), res.output
    assert not out.exists()  # nothing written
    with pytest.raises(RecipeError) as err:  # the library's loader says the same
        load_recipe(recipe)
    assert err.value.detail.startswith(f"recipe file '{recipe}', {start}"), err.value.detail
