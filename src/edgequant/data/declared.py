"""The input normalisation a model declares in its ``metadata_props``, used for image/video data.

Read, in order (the first found wins):

* ``preprocess``: JSON with Preprocess fields, e.g. ``{"scale": 1, "mean": [127, 128, 128], "std": [64]}``;
* ``mean`` / ``std`` / ``scale`` / ``layout`` keys: JSON numbers or lists, or comma-separated numbers;
* ``normalization`` text of the form ``x = (pixel_0_255 - [127, 128, 128]) / 64`` (or ``... / [a, b, c]``),
  meaning scale 1 on 0..255 pixels.

``fill_declared`` (``with_declared`` for a recipe; evaluation data too) puts that normalisation into
every preprocess field the user left unset (None) and lists those fields in ``preprocess.from_model``;
a value the user set always wins, field by field, even when it equals the default.  It refuses
(RecipeError) a recipe that would still feed raw ``[0, 1]`` pixels (``scale 1/255``, no mean/std) from
image or video data to a model that declares another normalisation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import onnx

from edgequant.errors import DataError, RecipeError
from edgequant.recipe.schema import Preprocess, Recipe, from_dict, to_dict

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
    """``recipe`` with ``fill_declared`` applied to its preprocess; notes for the report."""
    pre, notes = fill_declared(recipe.preprocess, model, data)
    return (recipe if pre is recipe.preprocess else recipe.replace(preprocess=pre)), notes


def fill_declared(pre: Preprocess, model: onnx.ModelProto, data: Any) -> tuple[Preprocess, list[str]]:
    """``pre`` with the model's declared normalisation in every field the user left unset (None), listed
    in ``from_model``; notes.  A field the user set (CLI flag, recipe key, Python API) always wins, even
    when it equals the default (``--scale 1/255``).  DataError when the metadata declares an invalid
    field; RecipeError when image/video data would still reach such a model as raw [0, 1] pixels
    (scale 1/255, mean 0, std 1, all set by the user)."""
    fields = declared(model)
    if not fields:
        return pre, []
    current = to_dict(Recipe(preprocess=pre))["preprocess"]
    fill = {k: v for k, v in fields.items() if current.get(k) is None and k not in ("from_model", "preset")}
    unknown = sorted(k for k in fields if k not in current or k in ("from_model", "preset"))
    if unknown:
        raise DataError(
            f"the model's metadata declares unknown preprocess field(s) {unknown}; "
            f"allowed: {', '.join(k for k in current if k not in ('from_model', 'preset'))}.",
            "fix the model's metadata, or pass --mean/--std/--scale explicitly.",
        )
    notes = []
    if fill:
        merged = {**current, **fill, "from_model": sorted({*pre.from_model, *fill})}
        try:
            pre = from_dict({"preprocess": merged}).preprocess  # validated like a recipe's mapping
        except RecipeError as exc:
            raise DataError(
                f"the model's metadata declares an invalid preprocessing: {exc.detail}", exc.hint
            ) from exc
        kept = [k for k in fields if k not in fill]
        notes.append(
            f"image/video preprocessing from the model's metadata: {', '.join(f'{k} {fill[k]}' for k in fill)}"
            + (f" (your {', '.join(kept)} kept)" if kept else "")
            + "."
        )
    zero_mean = pre.mean is None or all(v == 0 for v in pre.mean)
    unit_std = pre.std is None or all(v == 1 for v in pre.std)
    scale = pre.scale if pre.scale is not None else 1 / 255  # unset and not declared: the default
    raw01 = abs(scale - 1 / 255) < 1e-9 and zero_mean and unit_std
    declares_raw01 = (
        abs(float(fields.get("scale", 1 / 255)) - 1 / 255) < 1e-9
        and all(v == 0 for v in fields.get("mean", [0]))
        and all(v == 1 for v in fields.get("std", [1]))
    )
    if raw01 and not declares_raw01 and _is_media(data):
        raise RecipeError(
            f"the image data would reach the model as raw pixels / 255 in [0, 1], but the model declares "
            f"its own normalisation ({json.dumps(fields)}).",
            "drop --mean/--std/--scale to use the declared normalisation, or pass the mean and std the model "
            "was trained with.",
        )
    return pre, notes
