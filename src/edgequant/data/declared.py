"""The input normalisation a model declares in its ``metadata_props``, used for image/video data.

Read, in order (the first found wins):

* ``preprocess``: JSON with Preprocess fields, e.g. ``{"scale": 1, "mean": [127, 128, 128], "std": [64]}``;
* ``mean`` / ``std`` / ``scale`` / ``layout`` keys: JSON numbers or lists, or comma-separated numbers;
* ``normalization`` text of the form ``x = (pixel_0_255 - [127, 128, 128]) / 64`` (or ``... / [a, b, c]``),
  meaning scale 1 on 0..255 pixels.

``with_declared`` puts that normalisation into a recipe whose ``preprocess`` is all defaults, and refuses
(RecipeError) a recipe that would feed raw ``[0, 1]`` pixels (``scale 1/255``, no mean/std) from image or
video data to a model that declares another normalisation.  Explicit mean/std/scale always win.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import onnx

from edgequant.errors import DataError, RecipeError
from edgequant.recipe.schema import Preprocess, Recipe, to_dict

_KEYS = ("mean", "std", "scale", "layout")
_TEXT = re.compile(r"\(\s*pixel\w*\s*-\s*\[?([-\d.,\s]+)\]?\s*\)\s*/\s*\[?([-\d.,\s]+)\]?", re.IGNORECASE)
MEDIA_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".mp4", ".avi", ".mkv", ".mov", ".webm")


def _numbers(raw: str, where: str) -> Any:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        try:
            value = [float(v) for v in raw.split(",") if v.strip()]
        except ValueError as exc:
            raise DataError(
                f"model metadata '{where}' = {raw!r} is not a number or a list of numbers.",
                "fix the model's metadata, or pass --mean/--std/--scale explicitly.",
            ) from exc
    return value


def declared(model: onnx.ModelProto) -> dict[str, Any] | None:
    """The Preprocess fields the model's metadata declares, or None."""
    props = {p.key: p.value for p in model.metadata_props}
    if "preprocess" in props:
        try:
            value = json.loads(props["preprocess"])
        except json.JSONDecodeError as exc:
            raise DataError(
                f"model metadata 'preprocess' is not JSON: {props['preprocess'][:80]!r}.",
                'fix it (e.g. {"mean": [0.5], "std": [0.25]}), or pass --mean/--std/--scale.',
            ) from exc
        if not isinstance(value, dict):
            raise DataError("model metadata 'preprocess' is not a JSON object.", "write key: value pairs.")
        return value
    found = {k: props[k] for k in _KEYS if k in props}
    if found:
        out = {k: (v if k == "layout" else _numbers(v, k)) for k, v in found.items()}
        for k in ("mean", "std"):
            if k in out and not isinstance(out[k], list):
                out[k] = [out[k]]
        return out
    text = props.get("normalization") or props.get("normalisation")
    m = _TEXT.search(text or "")
    if m:
        mean = [float(v) for v in m.group(1).split(",") if v.strip()]
        std = [float(v) for v in m.group(2).split(",") if v.strip()]
        return {"scale": 1.0, "mean": mean, "std": std}
    return None


def _is_media(data: Any) -> bool:
    if not isinstance(data, str | Path):
        return False
    p = Path(data)
    return p.is_dir() or p.suffix.lower() in MEDIA_SUFFIXES


def with_declared(recipe: Recipe, model: onnx.ModelProto, data: Any) -> tuple[Recipe, list[str]]:
    """``recipe`` with the model's declared normalisation when its own preprocessing is all defaults;
    notes for the report.  RecipeError when image/video data would reach such a model as raw [0, 1]."""
    fields = declared(model)
    if not fields:
        return recipe, []
    pre = recipe.preprocess
    default = Preprocess()
    if (pre.scale, pre.mean, pre.std) == (default.scale, default.mean, default.std):
        # no normalisation asked for: the declared one, with the user's other fields (size, layout ...)
        merged = {
            **{k: v for k, v in to_dict(recipe)["preprocess"].items() if k not in ("scale", "mean", "std")}
        }
        merged.update(
            {k: v for k, v in fields.items() if not (k == "layout" and pre.layout != default.layout)}
        )
        try:
            with_decl = recipe.replace(preprocess=merged)  # validated like a recipe's preprocess mapping
        except RecipeError as exc:
            raise DataError(
                f"the model's metadata declares an invalid preprocessing: {exc.detail}", exc.hint
            ) from exc
        decl = with_decl.preprocess
        if decl == pre:
            return recipe, []
        return with_decl, [
            f"image/video preprocessing from the model's metadata: x = (pixel * {decl.scale:g} - "
            f"{list(decl.mean or [0])}) / {list(decl.std or [1])}."
        ]
    zero_mean = pre.mean is None or all(v == 0 for v in pre.mean)
    unit_std = pre.std is None or all(v == 1 for v in pre.std)
    raw01 = abs(pre.scale - 1 / 255) < 1e-9 and zero_mean and unit_std
    if raw01 and _is_media(data):
        raise RecipeError(
            f"the image data would reach the model as raw pixels / 255 in [0, 1], but the model declares "
            f"its own normalisation ({json.dumps(fields)}).",
            "drop --mean/--std/--scale to use the declared normalisation, or pass the mean and std the model "
            "was trained with.",
        )
    return recipe, []
