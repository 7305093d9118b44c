"""Image preprocessing: a decoded picture -> one model input sample.

Steps, in order (torchvision's classic evaluation transform):
  1. convert to RGB (or L for a 1-channel input);
  2. resize so the SHORTER side is ``resize`` pixels (bilinear, aspect kept);
  3. center-crop ``crop_h x crop_w`` (left/top offsets ``(size - crop) // 2``);
  4. optional RGB -> BGR;
  5. ``x = pixel * scale``, then ``x = (x - mean) / std`` per channel (float dtypes);
  6. HWC -> CHW for layout "nchw"; cast to ``dtype``.

Sizes: ``center_crop`` when given, else the model's fixed H x W.  ``resize`` when given, else the
larger crop side (so the crop always fits).  Preset "imagenet": resize 256, crop 224,
mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), scale 1/255; explicit fields win.
dtype uint8 takes raw pixels: scale 1, no mean/std; other integer dtypes are errors (int8 inputs
differ in convention: pixel - 128 or a quantized float; save those as .npy), never a guess.
A field left unset (None) takes its default: scale 1/255, no mean/std, layout nchw, RGB, and dtype
float32, or the model input's own uint8 / float16 (uint8: raw pixels, scale 1).  ``describe`` says for
each field whether the user set it, the model's metadata declared it (``Preprocess.from_model``), a
preset gave it, or it is the default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgequant.data.base import InputSpec
from edgequant.errors import DataError, RecipeError
from edgequant.recipe.schema import Preprocess

PRESETS: dict[str, dict[str, Any]] = {
    "imagenet": {
        "resize": 256,
        "center_crop": 224,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "scale": 1.0 / 255.0,
    },
}


@dataclass(frozen=True)
class ImagePlan:
    resize: int
    crop_hw: tuple[int, int]
    channels: int
    bgr: bool
    nchw: bool
    scale: float
    mean: np.ndarray | None
    std: np.ndarray | None
    dtype: np.dtype
    origin: dict[str, str] = field(default_factory=dict)  # field -> user | model metadata | preset | default

    @property
    def sample_shape(self) -> tuple[int, ...]:
        h, w = self.crop_hw
        return (self.channels, h, w) if self.nchw else (h, w, self.channels)


def _with_preset(pre: Preprocess) -> Preprocess:
    if pre.preset is None:
        return pre
    if pre.preset not in PRESETS:
        raise RecipeError(
            f"unknown preprocess preset '{pre.preset}'; allowed: {', '.join(PRESETS)}.",
            "use preset: imagenet, or set resize/center_crop/mean/std yourself.",
        )
    fill = {k: v for k, v in PRESETS[pre.preset].items() if getattr(pre, k) is None}
    return replace(pre, **fill)


def plan_image(pre: Preprocess | None, spec: InputSpec, notes: list[str]) -> ImagePlan:
    """Resolve the preprocessing of images for model input ``spec``; DataError when they cannot fit."""
    pre = pre or Preprocess()
    origin = _origins(pre)
    pre = _with_preset(pre)
    if len(spec.shape) != 4:
        raise DataError(
            f"model input '{spec.name}' has shape {spec.shape}; images feed a 4-D input (N,C,H,W or N,H,W,C).",
            "use images with an image model, or give the data as .npy/.npz.",
        )
    nchw = pre.layout != "nhwc"
    layout = "nhwc" if not nchw else "nchw"
    c, h, w = (spec.shape[1], spec.shape[2], spec.shape[3]) if nchw else (spec.shape[3], *spec.shape[1:3])
    if c not in (1, 3, None):
        other = spec.shape[3] if nchw else spec.shape[1]
        hint = (
            f"set preprocess.layout to {'nhwc' if nchw else 'nchw'}" if other in (1, 3) else "use .npy data"
        )
        raise DataError(
            f"model input '{spec.name}' has {c} channels in layout {layout} (shape {spec.shape}); "
            "images give 1 or 3.",
            f"{hint}.",
        )
    channels = c or 3
    if pre.center_crop is not None:
        crop = (pre.center_crop, pre.center_crop)
    elif h is not None and w is not None:
        crop = (h, w)
    else:
        raise DataError(
            f"model input '{spec.name}' has dynamic height/width {spec.shape}, so the image size is unknown.",
            "set preprocess.center_crop (and resize) in the recipe.",
        )
    if (h is not None and h != crop[0]) or (w is not None and w != crop[1]):
        raise DataError(
            f"preprocess.center_crop {crop[0]}x{crop[1]} does not match the model input '{spec.name}' "
            f"size {h}x{w}.",
            f"set center_crop to {h} (or drop it to use the model's size).",
        )
    resize = pre.resize if pre.resize is not None else max(crop)
    if resize < min(crop):
        raise DataError(
            f"preprocess.resize {resize} is smaller than the crop {crop[0]}x{crop[1]}.",
            "resize the shorter side to at least the crop size.",
        )
    dtype = np.dtype(pre.dtype or "float32")
    if pre.dtype is None and spec.dtype in (np.uint8, np.float16):
        dtype = spec.dtype
        origin["dtype"] = "model input"
        notes.append(
            f"image dtype {dtype} taken from the model" + (" (raw pixels)" if dtype.kind in "iu" else "")
        )
    scale = pre.scale if pre.scale is not None else (1.0 if dtype == np.uint8 else 1.0 / 255.0)
    if dtype.kind in "iu" and dtype != np.uint8:
        raise DataError(
            f"preprocess dtype {dtype}: images convert to float or to raw uint8 pixels only.",
            "use dtype uint8 or a float dtype, or save the converted images as .npy.",
        )
    if dtype == np.uint8 and (scale != 1.0 or pre.mean is not None or pre.std is not None):
        raise DataError(
            f"preprocess dtype {dtype} takes raw pixels, but scale={scale}, mean={pre.mean}, std={pre.std} are set.",
            "set preprocess.scale to 1 and drop mean/std for integer inputs, or use a float dtype.",
        )
    mean = _per_channel(pre.mean, channels, "mean")
    std = _per_channel(pre.std, channels, "std")
    if std is not None and np.any(std == 0):
        raise DataError(f"preprocess.std {pre.std} contains 0.", "use positive standard deviations.")
    if pre.center_crop is None and pre.resize is None:
        origin["size"] = f"default (model input {crop[0]}x{crop[1]})"
    return ImagePlan(
        resize, crop, channels, pre.channel_order == "bgr", nchw, scale, mean, std, dtype, origin
    )


_ORIGIN_FIELDS = {"scale": "scale", "mean": "mean", "std": "std", "layout": "layout", "resize": "size",
                  "center_crop": "size", "channel_order": "channel_order", "dtype": "dtype"}  # fmt: skip


def _origins(pre: Preprocess) -> dict[str, str]:
    """Where each printed field comes from: the user, the model's metadata, a preset or the default."""
    out: dict[str, str] = {}
    preset = PRESETS.get(pre.preset or "", {})
    for name, shown in _ORIGIN_FIELDS.items():
        if getattr(pre, name) is not None:
            how = "model metadata" if name in pre.from_model else "user"
        elif name in preset:
            how = f"preset {pre.preset}"
        else:
            how = "default"
        if out.get(shown) in (None, "default"):  # size: resize or center_crop, whichever was set
            out[shown] = how
    for quiet in ("channel_order", "dtype"):  # printed only when not the default
        if out[quiet] == "default":
            del out[quiet]
    return out


def describe(plan: ImagePlan) -> str:
    """One line: ``resize 36, crop 32x32, RGB, x = (pixel * 1 - [127 128 128]) / [64 64 64], NCHW float32
    (scale: model metadata, mean: model metadata, std: user, layout: default, size: default (...))``."""
    mean = "0" if plan.mean is None else "[" + " ".join(f"{v:.6g}" for v in plan.mean) + "]"
    std = "1" if plan.std is None else "[" + " ".join(f"{v:.6g}" for v in plan.std) + "]"
    scale = f"{plan.scale:.6g}"
    h, w = plan.crop_hw
    formula = f"x = (pixel * {scale} - {mean}) / {std}" if plan.dtype.kind == "f" else "raw pixels"
    return (
        f"preprocessing: resize {plan.resize}, crop {h}x{w}, {'BGR' if plan.bgr else 'RGB'}, {formula}, "
        f"{'NCHW' if plan.nchw else 'NHWC'} {plan.dtype}"
        + (" (" + ", ".join(f"{k}: {v}" for k, v in plan.origin.items()) + ")" if plan.origin else "")
    )


def _per_channel(values: tuple[float, ...] | None, channels: int, what: str) -> np.ndarray | None:
    if values is None:
        return None
    if len(values) not in (1, channels):
        raise DataError(
            f"preprocess.{what} has {len(values)} values; the model input has {channels} channel(s).",
            f"give one value or {channels}.",
        )
    return np.asarray(values, np.float32)


def to_sample(image: Any, plan: ImagePlan) -> np.ndarray:
    """A PIL image -> one sample (no batch axis) following ``plan``."""
    from PIL import Image

    img = image.convert("L" if plan.channels == 1 else "RGB")
    w, h = img.size
    s = plan.resize / min(w, h)
    nw, nh = max(round(w * s), plan.crop_hw[1]), max(round(h * s), plan.crop_hw[0])
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    ch, cw = plan.crop_hw
    left, top = (nw - cw) // 2, (nh - ch) // 2
    img = img.crop((left, top, left + cw, top + ch))
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if plan.bgr:
        arr = arr[:, :, ::-1]
    if plan.dtype.kind == "f":
        x = arr.astype(np.float32) * np.float32(plan.scale)
        if plan.mean is not None:
            x = x - plan.mean
        if plan.std is not None:
            x = x / plan.std
    else:
        x = arr
    if plan.nchw:
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=plan.dtype)
