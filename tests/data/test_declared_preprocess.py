"""Preprocessing is explicit: the model's declared normalisation is used for images, --mean/--std/--scale/
--layout/--size set it, the run prints it with the input value range, and raw [0, 1] pixels are refused
for a model that declares another normalisation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from tinymodels import conv_net
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.data.declared import declared
from edgequant.recipe import Preprocess

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shapes_cnn.onnx"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgequant.cli

    monkeypatch.setattr(edgequant.cli.console, "width", 400)


def test_example_metadata_is_read() -> None:
    d = declared(onnx.load(str(EXAMPLE), load_external_data=False))
    assert d == {"scale": 1.0, "mean": [127.0, 128.0, 128.0], "std": [64.0]}


def _setup(tmp_path: Path, declare: bool) -> tuple[Path, Path, np.ndarray]:
    m = conv_net()  # input x: [N, 3, 16, 16]
    if declare:
        onnx.helper.set_model_props(m, {"normalization": "x = (pixel_0_255 - [127, 128, 128]) / 64"})
    path = tmp_path / "net.onnx"
    onnx.save(m, path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(folder / f"{i}.png")
    return path, folder, pixels


def _range(output: str) -> tuple[float, float]:
    m = re.search(r"input values in \[([-\d.e]+), ([-\d.e]+)\]", output)
    assert m, output
    return float(m.group(1)), float(m.group(2))


def test_declared_normalisation_is_used_and_printed(tmp_path: Path) -> None:
    path, folder, pixels = _setup(tmp_path, declare=True)
    out = tmp_path / "o"
    res = runner.invoke(
        app, ["quantize", str(path), "-o", str(out), "--calib-data", str(folder)], terminal_width=400
    )
    assert res.exit_code == 0, res.output
    x = (pixels.astype(np.float64) - np.array([127, 128, 128])) / 64  # independent: the declared formula
    lo, hi = _range(res.output)
    assert lo == pytest.approx(x.min(), abs=1e-3) and hi == pytest.approx(x.max(), abs=1e-3)
    assert "x = (pixel * 1 - [127 128 128]) / [64]" in res.output
    report = json.loads((out / "net_int8.json").read_text())
    assert report["recipe"]["preprocess"]["mean"] == [127.0, 128.0, 128.0]
    assert any("preprocessing from the model's metadata" in n for n in report["notes"])


def test_flags_set_the_preprocessing(tmp_path: Path) -> None:
    path, folder, pixels = _setup(tmp_path, declare=False)
    res = runner.invoke(
        app,
        ["quantize", str(path), "-o", str(tmp_path / "o"), "--calib-data", str(folder), "--mean", "0.5,0.5,0.5",
         "--std", "0.25", "--scale", "0.00392156862745098", "--size", "16", "--layout", "nchw"],
        terminal_width=400,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    x = (pixels.astype(np.float64) / 255 - 0.5) / 0.25
    lo, hi = _range(res.output)
    assert lo == pytest.approx(x.min(), abs=1e-3) and hi == pytest.approx(x.max(), abs=1e-3)
    report = json.loads((tmp_path / "o" / "net_int8_h182955.json").read_text())  # the hash: preprocessing
    pre = report["recipe"]["preprocess"]
    assert (pre["mean"], pre["std"], pre["resize"], pre["center_crop"]) == ([0.5] * 3, [0.25], 16, 16)


def test_raw_unit_pixels_into_a_declaring_model_are_refused(tmp_path: Path) -> None:
    path, folder, _ = _setup(tmp_path, declare=True)
    res = runner.invoke(
        app,
        ["quantize", str(path), "-o", str(tmp_path / "o"), "--calib-data", str(folder),
         "--scale", "0.00392156862745098", "--mean", "0", "--std", "1"],
    )  # fmt: skip
    assert res.exit_code == 2 and "raw pixels / 255" in res.output and not (tmp_path / "o").exists()


DECLARED_MEAN, DECLARED_STD = np.array([127.0, 128.0, 128.0]), 64.0
# (flags, recipe preprocess keys, expected x from 0..255 pixels, origins printed)
CASES = {
    "explicit scale equal to the default": (
        ["--scale", "0.00392156862745098"], {"scale": 0.00392156862745098},
        lambda p: (p / 255 - DECLARED_MEAN) / DECLARED_STD,
        "scale: user, mean: model metadata, std: model metadata",
    ),
    "std alone": (
        ["--std", "2"], {"std": [2.0]},
        lambda p: (p - DECLARED_MEAN) / 2,
        "scale: model metadata, mean: model metadata, std: user",
    ),
    "mean alone": (
        ["--mean", "100"], {"mean": [100.0]},
        lambda p: (p - 100) / DECLARED_STD,
        "scale: model metadata, mean: user, std: model metadata",
    ),
    "nothing explicit": (
        [], {},
        lambda p: (p - DECLARED_MEAN) / DECLARED_STD,
        "scale: model metadata, mean: model metadata, std: model metadata",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_explicit_fields_win_field_by_field_python_api(tmp_path: Path, case: str) -> None:
    """The fed tensor (what ``open_source`` yields after ``with_declared``) equals numpy's normalisation."""
    from edgequant.data import open_source
    from edgequant.data.declared import with_declared
    from edgequant.data.model_inputs import input_specs
    from edgequant.recipe import from_dict

    path, folder, pixels = _setup(tmp_path, declare=True)
    _, keys, expect, _ = CASES[case]
    model = onnx.load(str(path))
    recipe, _ = with_declared(from_dict({"preprocess": keys}), model, folder)
    assert set(recipe.preprocess.from_model) == {"scale", "mean", "std"} - set(keys)
    src = open_source(folder, input_specs(model), batch_size=6, preprocess=recipe.preprocess)
    fed = np.concatenate([b["x"] for b in src])
    want = expect(pixels.astype(np.float64)).transpose(0, 3, 1, 2)  # files 0..5 sort in order
    np.testing.assert_allclose(fed, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("via", ["flags", "recipe"])
@pytest.mark.parametrize("case", list(CASES))
def test_explicit_fields_win_field_by_field_cli(tmp_path: Path, case: str, via: str) -> None:
    """CLI flags and recipe keys: the printed input range is numpy's, and each field's origin is printed."""
    path, folder, pixels = _setup(tmp_path, declare=True)
    flags, keys, expect, origins = CASES[case]
    args = ["quantize", str(path), "-o", str(tmp_path / "o"), "--calib-data", str(folder)]
    if via == "flags":
        args += flags
    else:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(json.dumps({"preprocess": keys}))  # JSON is YAML
        args += ["--recipe", str(recipe)]
    res = runner.invoke(app, args, terminal_width=400)
    assert res.exit_code == 0, res.output
    x = expect(pixels.astype(np.float64))
    lo, hi = _range(res.output)
    assert lo == pytest.approx(x.min(), rel=1e-3, abs=1e-4) and hi == pytest.approx(
        x.max(), rel=1e-3, abs=1e-4
    )
    assert origins in res.output and "layout: default, size: default (model input 16x16)" in res.output


def test_user_mean_and_std_keep_the_declared_scale(tmp_path: Path) -> None:
    """--mean 0 --std 1 on a model declaring scale 1: the declared scale fills the unset field (raw 0..255)."""
    path, folder, pixels = _setup(tmp_path, declare=True)
    res = runner.invoke(
        app,
        ["quantize", str(path), "-o", str(tmp_path / "o"), "--calib-data", str(folder), "--mean", "0", "--std", "1"],
        terminal_width=400,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    lo, hi = _range(res.output)
    assert (lo, hi) == (pixels.min(), pixels.max())
    assert "scale: model metadata, mean: user, std: user" in res.output


def test_evaluation_images_get_the_declared_normalisation(tmp_path: Path) -> None:
    """evaluate preprocesses an image folder as calibration does: labels made by our own ORT run on the
    declared normalisation are all matched (top-1 100 %), and pixel/255 would have changed some of them."""
    import onnxruntime as ort

    from edgequant.evaluate import evaluate

    path, folder, pixels = _setup(tmp_path, declare=True)
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = pixels.astype(np.float32).transpose(0, 3, 1, 2)
    mean = np.array([127, 128, 128], np.float32)[None, :, None, None]
    labels = s.run(None, {"x": (x - mean) / 64})[0].argmax(1)
    raw = s.run(None, {"x": x / 255})[0].argmax(1)
    assert np.any(raw != labels)  # the default pixel/255 would score lower: the test can fail
    r = evaluate(path, path, str(folder), "classification", labels=labels)
    assert r.float_metrics["top1"] == 1.0
    mine = s.run(None, {"x": x / 64})[0].argmax(1)  # mean 0 set by the user, scale 1 and std 64 declared
    assert np.any(mine != labels)
    r = evaluate(path, path, str(folder), "classification", labels=mine, preprocess=Preprocess(mean=(0.0,)))
    assert r.float_metrics["top1"] == 1.0  # explicit fields win over the declared ones


@pytest.mark.parametrize("via", ["flags", "recipe"])
def test_evaluate_cli_preprocessing_flags_and_recipe_keys(tmp_path: Path, via: str) -> None:
    """evaluate --mean 0 (or the recipe key) on a declaring model: x = pixel * 1 / 64, printed with origins."""
    path, folder, pixels = _setup(tmp_path, declare=True)
    args = ["evaluate", str(path), str(path), "--data", str(folder)]
    if via == "flags":
        args += ["--mean", "0"]
    else:
        (tmp_path / "r.yaml").write_text("preprocess:\n  mean: [0]\n")
        args += ["--recipe", str(tmp_path / "r.yaml")]
    res = runner.invoke(app, args, terminal_width=400)
    assert res.exit_code == 0, res.output
    x = pixels.astype(np.float64) / 64
    lo, hi = _range(res.output)
    assert lo == pytest.approx(x.min(), rel=1e-3, abs=1e-4) and hi == pytest.approx(
        x.max(), rel=1e-3, abs=1e-4
    )
    assert "scale: model metadata, mean: user, std: model metadata" in res.output
