"""Issue 9 §3/§6: an option the method (or the data) does not read is refused when given, even at its
default value; preprocessing is never accepted for array data; raw [0, 1] arrays for a model that declares
another normalisation are refused."""

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
from edgequant.pipeline import resolve_recipe
from edgequant.recipe import Preprocess
from edgequant.recipe.applies import APPLIES

EXAMPLE = Path(__file__).parents[2] / "examples"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    p = tmp_path / "net.onnx"
    onnx.save_model(conv_net(), p)
    np.save(tmp_path / "x.npy", images(16))
    return p


def _refused(args: list[str], named: str, out: Path) -> None:
    res = CliRunner().invoke(app, ["quantize", *args, "-o", str(out)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], res.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--method", "fp16", "--per-tensor"], "--per-tensor is given but method 'fp16'"),
        (["--method", "fp16", "--calib-method", "entropy"], "--calib-method entropy"),
        (["--method", "fp16", "--weight-bits", "8"], "--weight-bits 8"),  # the default value, given
        (["--method", "fp16", "--act-bits", "8"], "--act-bits 8"),
        (["--method", "dynamic", "--symmetric"], "--symmetric is given but method 'dynamic'"),
        (["--method", "dynamic", "--act-signed", "auto"], "--act-signed auto"),
        (["--method", "weight-only", "--calib-method", "minmax"], "--calib-method minmax"),
        (["--method", "fp16", "--placement", "all"], "--placement all"),
        (["--calib-data", "X", "--percentile", "99.9"], "--percentile 99.9"),  # minmax reads no percentile
    ],
)
def test_an_option_the_method_does_not_read_is_refused(model: Path, args: list[str], named: str) -> None:
    args = [a.replace("X", str(model.parent / "x.npy")) for a in args]
    _refused([str(model), *args], named, model.parent / "out")


def test_a_recipe_file_key_counts_as_given_and_a_preset_key_does_not(model: Path) -> None:
    rec = model.parent / "r.yaml"
    rec.write_text(yaml.safe_dump({"weight_bits": 8, "symmetric": False}))
    with pytest.raises(RecipeError, match="--asymmetric is given but method 'fp16'"):
        resolve_recipe(str(rec), {"method": "fp16"})
    # a preset's own keys are not given: int8-static with --method fp16 is fp16 (weight_bits unread)
    assert resolve_recipe("int8-static", {"method": "fp16"}).method == "fp16"
    # the same values as defaults, not given: accepted
    assert resolve_recipe(None, {"method": "fp16"}).weight_bits == 8


def test_the_table_names_only_recipe_fields_and_each_method_reads_calibration_data_it_accepts(
    model: Path,
) -> None:
    from edgequant.recipe import Recipe

    fields = set(Recipe.__dataclass_fields__)
    assert set(APPLIES) <= fields
    # fp16 reads --calib-data (its check runs on it): accepted, and the report says the check used it
    out = model.parent / "fp16"
    res = CliRunner().invoke(
        app,
        [
            "quantize",
            str(model),
            "-o",
            str(out),
            "--method",
            "fp16",
            "--calib-data",
            str(model.parent / "x.npy"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "x.npy" in (out / "net_fp16.json").read_text()


def test_preprocessing_flags_for_array_data_are_refused(tmp_path: Path) -> None:
    m, c = str(EXAMPLE / "shapes_cnn.onnx"), str(EXAMPLE / "shapes_calib.npz")
    _refused([m, "--calib-data", c, "--mean", "0.5", "--std", "0.2"], "--mean, --std given", tmp_path / "a")
    _refused([m, "--calib-data", c, "--size", "28"], "--size given", tmp_path / "b")
    rec = tmp_path / "r.yaml"
    rec.write_text(yaml.safe_dump({"preprocess": {"preset": "imagenet"}}))
    _refused([m, "--calib-data", c, "--recipe", str(rec)], "preprocess.preset given", tmp_path / "c")


def test_unknown_preprocess_presets_are_refused_with_the_known_names() -> None:
    from edgequant.data.preprocess import PRESETS
    from edgequant.recipe.schema import PREPROCESS_PRESETS

    assert tuple(PRESETS) == PREPROCESS_PRESETS
    with pytest.raises(RecipeError, match="unknown preprocess preset '/etc/passwd'; known: imagenet"):
        Preprocess(preset="/etc/passwd")


def test_raw_unit_arrays_for_a_model_declaring_its_normalisation_are_refused(tmp_path: Path) -> None:
    m = EXAMPLE / "shapes_cnn.onnx"
    declared = {p.key: p.value for p in onnx.load(str(m), load_external_data=False).metadata_props}
    assert "127" in str(declared)  # the example declares (pixel - 127..128) / 64: inputs in about [-2, 2]
    x = np.load(EXAMPLE / "shapes_calib.npz")["image"]
    raw = np.clip((x * 64.0 + 127.0) / 255.0, 0.0, 1.0)  # the same images as pixel / 255, in [0, 1]
    assert raw.min() >= 0.0 and raw.max() <= 1.0
    np.save(tmp_path / "raw01.npy", raw.astype(np.float32))
    _refused([str(m), "--calib-data", str(tmp_path / "raw01.npy")], "like raw [0, 1] pixels", tmp_path / "o")
    np.save(tmp_path / "raw255.npy", (raw * 255.0).astype(np.float32))
    _refused([str(m), "--calib-data", str(tmp_path / "raw255.npy")], "like raw 0..255 pixels", tmp_path / "p")
    # the normalised arrays pass, with no image-preprocessing note (nothing preprocesses arrays)
    res = CliRunner().invoke(
        app,
        ["quantize", str(m), "-o", str(tmp_path / "ok"), "--calib-data", str(EXAMPLE / "shapes_calib.npz")],
    )
    assert res.exit_code == 0, res.output
    assert "preprocessing from the model's metadata" not in res.output


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--algorithm", "gptq"], "--method weight-only"),
        (["--algorithm", "block_clip"], "--method weight-only"),
        (["--algorithm", "cle", "--algorithm", "gptq"], "drop --algorithm gptq"),
        (["--act-bits", "16", "--act16-below-db", "25"], "drop --act16-below-db"),
    ],
)
def test_static_options_that_would_do_nothing_are_refused(
    model: Path, tmp_path: Path, extra: list[str], named: str
) -> None:
    """gptq/block_clip fit block-wise weights (weight-only only); act16_below_db with all activations 16-bit."""
    _refused([str(model), "--calib-data", str(tmp_path / "x.npy"), *extra], named, tmp_path / "out")
    with pytest.raises(RecipeError):
        resolve_recipe(None, {"algorithms": ["gptq"]})
    with pytest.raises(RecipeError):
        resolve_recipe(None, {"act_bits": 16, "act16_below_db": 25.0})
