"""Names that become file names: the shared validator, the confinement check, and the library's refusal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tinymodels import conv_net, images

from edgequant import quantize
from edgequant.errors import ExportError, RecipeError
from edgequant.names import check_name, confined, is_name
from edgequant.recipe import from_dict


def test_names_are_plain_and_short() -> None:
    for ok in ("int8", "v1.2_b-3", "a" * 64, "..a", "A"):
        assert is_name(ok) and check_name(ok, "tag") == ok
    for bad in ("", ".", "..", "a/b", "../x", "a\\b", "a b", "x" * 65, "é", "a\x00", 5, None):
        assert not is_name(bad)
        with pytest.raises(RecipeError, match="invalid tag"):
            check_name(bad, "tag")


def test_recipe_refuses_a_tag_with_a_path_and_a_negative_seed() -> None:
    with pytest.raises(RecipeError, match=r"invalid tag '\.\./x'"):
        from_dict({"tag": "../x"})
    with pytest.raises(RecipeError, match="seed -1 is negative"):
        from_dict({"seed": -1})
    assert from_dict({"tag": "int8_v2"}).default_tag == "int8_v2"


def test_quantize_refuses_tag_traversal_before_writing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RecipeError, match="invalid tag"):
        quantize(conv_net(), images(8), tag="../x")
    with pytest.raises(RecipeError, match="invalid tag"):
        quantize(conv_net(), images(8), {"tag": "x/../../../../PWNED"})
    assert list(tmp_path.rglob("*")) == []
    saved = quantize(conv_net(), images(8), method="fp16", tag="ok").save(out)
    assert saved.model == out.resolve() / f"{saved.model.stem}.onnx" and saved.model.name.endswith("_ok.onnx")


def test_confined_refuses_what_resolves_outside(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    assert confined(folder, "m_int8.onnx") == folder.resolve() / "m_int8.onnx"
    for bad in ("../x.onnx", "a/b.onnx", "..", ""):
        with pytest.raises(ExportError):
            confined(folder, bad)
    os.symlink(tmp_path / "elsewhere.onnx", folder / "link.onnx")
    with pytest.raises(ExportError, match="outside the output folder"):
        confined(folder, "link.onnx")
