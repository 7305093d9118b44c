"""Refusals of the Python API name its keyword arguments, not the CLI's flags (fresh-user review,
session 11: ``edgequant.quantize(m, x, weight_8bit=["first"])`` answered "--weight-8bit first ... add
--weight-bits 4"; ``result.save(d, overwrite=False)`` "pass --overwrite ... choose another -o").  The CLI
and the REST service call the functions underneath and keep their own words."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tinymodels import conv_net, images

import edgequant
from edgequant import pipeline
from edgequant.recipe import from_dict
from edgequant.recipe.flags import api_words

FLAG = re.compile(r"(?<![\w-])--?[a-z]")
X = images(16)


def _refusal(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(edgequant.EdgeQuantError) as exc:
        call(*args, **kwargs)  # type: ignore[operator]
    text = str(exc.value)
    assert not FLAG.search(text), text
    assert text == str(exc.value.args[0])
    return text


def test_api_words() -> None:
    assert api_words("this run has --method static --weight-bits 8: it") == (
        "this run has method='static', weight_bits=8: it"
    )
    assert (
        api_words("drop --per-tensor, or use --method static.")
        == "drop per_channel=False, or use method='static'."
    )
    assert api_words("pass --overwrite to replace them, or choose another -o (or --tag).") == (
        "pass overwrite=True to replace them, or choose another outdir= (or tag=)."
    )
    assert api_words("give --calib-data PATH, or drop --algorithm adaround.") == (
        "give calibration=PATH, or drop algorithms=['adaround']."
    )
    assert api_words("drop --no-bias-correction; check with 'edgequant inspect MODEL --json'") == (
        "drop bias_correction=False; check with 'edgequant inspect MODEL --json'"
    )  # a quoted CLI command stays as it is typed


def test_quantize_refusals_name_keyword_arguments(tmp_path: Path) -> None:
    m = conv_net()
    text = _refusal(edgequant.quantize, m, X, weight_8bit=["first"])
    assert text.startswith("weight_8bit=['first'] keeps layers 8-bit"), text
    assert "add weight_bits=4 (static), or use method='weight-only', weight_bits=4, block_size=32" in text, (
        text
    )
    text = _refusal(edgequant.quantize, m, method="fp16", per_channel=False)
    assert "Fix: drop per_channel=False, or use method='static'." in text, text
    text = _refusal(edgequant.quantize, m)
    assert "pass calibration=PATH" in text and "or allow_synthetic=True" in text, text
    text = _refusal(edgequant.quantize, m, X, keep_worse_passes=True)
    assert "add the passes with algorithms= (e.g. algorithms=['adaround']" in text, text
    # the CLI's function keeps the flags
    with pytest.raises(edgequant.RecipeError, match=r"^--weight-8bit first keeps .* add --weight-bits 4"):
        pipeline.quantize(m, X, weight_8bit=["first"])
    res = edgequant.quantize(m, X, calib_samples=8)
    res.save(tmp_path / "o")
    text = _refusal(res.save, tmp_path / "o", overwrite=False)
    assert "Fix: pass overwrite=True to replace them, or choose another outdir=" in text, text


def test_evaluate_compare_and_load_recipe_refusals(tmp_path: Path) -> None:
    m = conv_net()
    q = edgequant.quantize(m, X, calib_samples=8).model
    assert "Fix: pass task= with one of them." in _refusal(edgequant.evaluate, m, q, X, task="bogus")
    text = _refusal(edgequant.evaluate, m, q, str(tmp_path / "nope.npz"))
    assert text.endswith("check the path given to data=."), text
    text = _refusal(edgequant.compare, m, X, images(16, seed=3), methods="bogus", outdir=tmp_path / "c")
    assert "methods='all'" in text, text
    text = _refusal(edgequant.load_recipe, tmp_path / "nope.yaml")
    assert text.endswith("check the path given to load_recipe()."), text


def test_recipe_built_directly_names_its_fields() -> None:
    """``edgequant.Recipe(...)`` built directly named the CLI's flags ("Fix: use --act-bits 8 or 16",
    session 12's note); ``from_dict``, which the CLI, REST and the API functions build through, keeps them
    for its caller to word."""
    text = _refusal(edgequant.Recipe, act_bits=3)
    assert text == "activation bits 3 is impossible; allowed: 4, 8, 16. Fix: use act_bits=8 or 16.", text
    text = _refusal(edgequant.Recipe, weight_8bit=("first",))
    assert text.startswith("weight_8bit=['first'] keeps layers 8-bit"), text
    assert text.endswith("block_size=32, or drop weight_8bit=."), text
    text = _refusal(edgequant.Recipe, method="fp16", act_bits=4)
    assert text.endswith("Fix: drop act_bits=, or use method='static'."), text
    with pytest.raises(edgequant.RecipeError, match=r"Fix: use --act-bits 8 or 16\.$"):
        from_dict({"act_bits": 3})
