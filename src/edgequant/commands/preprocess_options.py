"""The ``--mean/--std/--scale/--layout/--size`` options of image/video data, shared by ``quantize`` and
``evaluate``, and the Preprocess they set.

A flag given is an explicit field: it wins over the recipe's ``preprocess`` key of the same field and
over the model's declared normalisation (``edgequant.data.declared``), which fills only the fields no
flag or key set.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from edgequant.errors import RecipeError

Mean = Annotated[
    str | None,
    typer.Option(
        help="Image/video data: per-channel mean subtracted after --scale, e.g. 0.485,0.456,0.406 "
        "[default: the model's declared normalisation, else none]."
    ),
]
Std = Annotated[
    str | None,
    typer.Option(
        help="Image/video data: per-channel std divided after the mean, e.g. 0.229,0.224,0.225 "
        "[default: the model's declared normalisation, else none]."
    ),
]
Scale = Annotated[
    float | None,
    typer.Option(
        help="Image/video data: pixel (0..255) multiplier before mean/std [default: the model's declared "
        "one, else 1/255]."
    ),
]
Layout = Annotated[
    str | None,
    typer.Option(help="Image/video data: nchw | nhwc, the model input's layout [default: nchw]."),
]
Size = Annotated[
    int | None,
    typer.Option(
        help="Image/video data: resize the shorter side to N and center-crop NxN [default: the model's H x W]."
    ),
]


def preprocess_flags(
    mean: str | None, std: str | None, scale: float | None, layout: str | None, size: int | None
) -> dict[str, Any]:
    """The preprocess fields that ``--mean/--std/--scale/--layout/--size`` set (RecipeError for a bad list)."""
    out: dict[str, Any] = {}
    for key, raw in (("mean", mean), ("std", std)):
        if raw is not None:
            try:
                out[key] = [float(v) for v in raw.split(",")]
            except ValueError as exc:
                raise RecipeError(
                    f"--{key} '{raw}' is not a comma-separated list of numbers.",
                    f"write e.g. --{key} 0.5,0.5,0.5.",
                ) from exc
    if scale is not None:
        out["scale"] = scale
    if layout is not None:
        out["layout"] = layout
    if size is not None:
        out["resize"] = out["center_crop"] = size
    return out
