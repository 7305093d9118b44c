"""Recipe keys take the flags' names and forms (``data_option: [KEY=VALUE, ...]``), and --print-recipe
prints the flag-named keys in a form that loads back as the same recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from tinymodels import conv_net, images
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.errors import RecipeError
from edgequant.recipe import from_dict, load_recipe

INTERNAL = ("act_symmetric", "target_sqnr_db", "data_options", "dynamic_axes", "algorithms")


def test_flag_list_forms_in_a_recipe(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        'data_option: ["metadata_csv=meta.csv", "csv_columns=a,b", "video_frames=4"]\n'
        'dynamic_axis: ["input:0", "input:2"]\nalgorithm: [cle]\n'
    )
    r = load_recipe(path)
    assert r.data_options == {"metadata_csv": "meta.csv", "csv_columns": ["a", "b"], "video_frames": 4}
    assert r.dynamic_axes == {"input": [0, 2]}
    assert r.algorithms == ("cle",)
    # the mapping form and the old key names still read the same
    assert r == from_dict(
        {"data_options": {"metadata_csv": "meta.csv", "csv_columns": ["a", "b"], "video_frames": 4},
         "dynamic_axes": {"input": [0, 2]}, "algorithms": ["cle"]}
    )  # fmt: skip
    with pytest.raises(RecipeError, match=r"'metadata_csv' is not KEY=VALUE"):
        from_dict({"data_option": ["metadata_csv"]})
    with pytest.raises(RecipeError, match=r"'input' is not INPUT:AXIS"):
        from_dict({"dynamic_axis": ["input"]})


def _printed(args: list[str]) -> tuple[str, dict]:  # type: ignore[type-arg]
    """The YAML --print-recipe writes; the run is then refused (the output path is a file)."""
    res = CliRunner().invoke(app, [*args, "--print-recipe"])
    assert res.exit_code == 2, res.output
    text = "".join(ln + "\n" for ln in res.output.splitlines() if not ln.startswith("error:"))
    return text, yaml.safe_load(text)


def test_print_recipe_uses_flag_names_and_round_trips(tmp_path: Path) -> None:
    model = tmp_path / "net.onnx"
    onnx.save_model(conv_net(), model)
    np.savez(tmp_path / "calib.npz", x=images(8))
    out = tmp_path / "out"
    out.write_text("a file where the output folder would go")
    base = ["quantize", str(model), "-o", str(out), "--calib-data", str(tmp_path / "calib.npz")]
    text, printed = _printed(
        [
            *base,
            "--symmetric",
            "--data-option",
            "video_frames=4",
            "--algorithm",
            "cle",
            "--check-samples",
            "8",
        ]
    )
    for key in INTERNAL:
        assert key not in printed, key
    assert printed["symmetric"] is True and printed["data_option"] == {"video_frames": 4}
    assert printed["algorithm"] == ["cle"] and printed["check_samples"] == 8
    assert printed["target_sqnr"] is None and printed["dynamic_axis"] == {}
    # what it prints loads back as the same recipe, and printing that recipe gives the same text
    recipe_file = tmp_path / "printed.yaml"
    recipe_file.write_text(text)
    loaded = load_recipe(recipe_file)
    assert loaded.act_symmetric is True and loaded.data_options == {"video_frames": 4}
    assert loaded.algorithms == ("cle",) and loaded.check_samples == 8
    again, _ = _printed([*base, "--recipe", str(recipe_file)])
    assert again == text
