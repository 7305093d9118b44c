"""The input normalisation a model declares in its ``metadata_props``, used for image/video data.

Read, in order (the first found wins):

* ``preprocess``: JSON with Preprocess fields, e.g. ``{"scale": 1, "mean": [127, 128, 128], "std": [64]}``;
* ``mean`` / ``std`` / ``scale`` / ``layout`` keys: JSON numbers or lists, or comma-separated numbers;
* ``normalization`` text of the form ``x = (pixel_0_255 - [127, 128, 128]) / 64`` (or ``... / [a, b, c]``),
  meaning scale 1 on 0..255 pixels.

``fill_declared`` (``with_declared`` for a recipe; evaluation data too) puts that normalisation into
every preprocess field the user left unset (None) and lists those fields in ``preprocess.from_model``;
a value the user set always wins, field by field, even when it equals the default.  Array data
(npy/npz/HDF5/CSV, in-memory arrays) is fed as it is: preprocessing fields set for it are refused, and
raw-pixel arrays (all in [0, 1] or up to 255) for a model that declares another range are refused
(``check_array_range``).  It refuses
(RecipeError) a recipe that would still feed raw ``[0, 1]`` pixels (``scale 1/255``, no mean/std) from
image or video data to a model that declares another normalisation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgequant.data.arrays import open_npy, open_npz
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


def _is_arrays(data: Any) -> bool:
    """Array data (npy/npz/HDF5/CSV files, in-memory arrays): fed to the model as it is."""
    if data is None:
        return False
    return not _is_media(data)


_FLAG = {
    "mean": "--mean",
    "std": "--std",
    "scale": "--scale",
    "layout": "--layout",
    "resize": "--size",
    "center_crop": "--size",
}


def refuse_array_preprocess(pre: Preprocess, where: str) -> None:
    """RecipeError naming the preprocessing fields set (``pre.explicit()`` but dtype) for array data
    (``where``: e.g. "'calib.npz'"), which is fed as it is."""
    shown = list(dict.fromkeys(_FLAG.get(k, f"preprocess.{k}") for k in pre.explicit() if k != "dtype"))
    if shown:
        raise RecipeError(
            f"{', '.join(shown)} given, but the calibration data {where} is arrays, which are fed to the model "
            "as they are (image preprocessing applies to image folders and video only); the option would be "
            "ignored.",
            f"drop {', '.join(shown)} and save the arrays already preprocessed, or pass the images themselves.",
        )


def _first_array(data: Any, name: str) -> np.ndarray | None:
    """Up to 64 samples of input ``name`` (or the only array) from .npy/.npz or in-memory data.

    DataError (the data layer's own, e.g. "damaged or is not a .npz") for a file the data layer refuses."""
    try:
        if isinstance(data, str | Path):
            p = Path(data)
            if p.suffix.lower() not in (".npy", ".npz"):
                return None
            arrays = (open_npy(p) if p.suffix.lower() == ".npy" else open_npz(p)).arrays
            key = name if name in arrays else (next(iter(arrays)) if len(arrays) == 1 else None)
            return None if key is None else np.asarray(arrays[key][:64])
        if isinstance(data, np.ndarray):
            return data[:64]
        if isinstance(data, dict) and isinstance(data.get(name), np.ndarray):
            return np.asarray(data[name][:64])
    except (OSError, ValueError, IndexError):  # unreadable: the data layer says why, later
        return None
    return None


def check_array_range(fields: dict[str, Any], model: onnx.ModelProto, data: Any) -> None:
    """RecipeError when array data for the model's one CHW image input holds raw pixels (all in [0, 1],
    or up to 255) while the model declares a normalisation whose range is far from that (e.g. the example
    model: (pixel - 127) / 64, about [-2, 2])."""
    images = [i for i in model.graph.input if len(i.type.tensor_type.shape.dim) == 4]
    dims = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in images]
    if len(images) != 1 or dims[0][1] not in (1, 3):
        return
    scale = float(fields.get("scale", 1 / 255))
    mean = np.asarray(fields.get("mean", [0.0]), dtype=np.float64)
    std = np.asarray(fields.get("std", [1.0]), dtype=np.float64)
    lo, hi = float(np.min((0.0 - mean) / std)), float(np.max((255.0 * scale - mean) / std))
    x = _first_array(data, images[0].name)
    if x is None or x.size == 0 or not np.issubdtype(x.dtype, np.floating):
        return
    dmin, dmax = float(np.min(x)), float(np.max(x))
    raw01 = dmin >= 0.0 and dmax <= 1.0 and (lo < -0.5 or hi > 2.0)
    raw255 = dmin >= 0.0 and dmax > 10.0 and hi < 0.25 * dmax
    if raw01 or raw255:
        kind = "raw [0, 1] pixels" if raw01 else "raw 0..255 pixels"
        raise RecipeError(
            f"input '{images[0].name}' of the array data holds values in [{dmin:.3g}, {dmax:.3g}], like {kind}, "
            f"but the model declares the normalisation {json.dumps(fields)}, whose inputs span about "
            f"[{lo:.2f}, {hi:.2f}].",
            "normalise the arrays as the model declares before saving them, or pass the images (a folder) "
            "and let EdgeQuant apply the declared normalisation.",
        )


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
    if _is_arrays(data):  # arrays are fed as they are: no preprocessing applies to them
        refuse_array_preprocess(pre, f"'{data}'" if isinstance(data, str | Path) else "the in-memory arrays")
        fields = declared(model)
        if fields:
            check_array_range(fields, model, data)
        return pre, []
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
