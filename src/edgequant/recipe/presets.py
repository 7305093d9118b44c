"""Named recipes: the methods that ``compare`` runs, each a plain mapping over the defaults."""

from __future__ import annotations

from typing import Any

from edgequant.errors import RecipeError
from edgequant.recipe.schema import Recipe, from_dict

PRESETS: dict[str, dict[str, Any]] = {
    "dynamic-int8": {"method": "dynamic", "weight_bits": 8, "per_channel": True},
    "fp16": {"method": "fp16"},
    "int8-static-per-tensor": {"method": "static", "per_channel": False, "tag": "int8_pt"},
    "int8-static": {"method": "static", "per_channel": True, "tag": "int8"},
    "weight-only-int8": {"method": "weight-only", "weight_bits": 8},
    "weight-only-int4": {"method": "weight-only", "weight_bits": 4, "block_size": 32},
    "w4a8": {"method": "static", "weight_bits": 4, "act_bits": 8},
    "w8a16": {"method": "static", "weight_bits": 8, "act_bits": 16},
    # cross-layer equalization where the graph has equalizable pairs, then the range search
    "accurate": {"method": "static", "calib_method": "search", "algorithms": ["cle"], "tag": "accurate"},
}


def preset(name: str, **overrides: Any) -> Recipe:
    """The recipe of a named preset, with ``overrides`` applied on top."""
    if name not in PRESETS:
        raise RecipeError(
            f"unknown preset '{name}'; allowed: {', '.join(PRESETS)}.", "pick a preset from the list."
        )
    return from_dict({**PRESETS[name], **overrides})
