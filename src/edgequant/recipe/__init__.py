"""What the user asked for: a frozen, typed Recipe, YAML loading, and named presets."""

from edgequant.recipe.presets import PRESETS, preset
from edgequant.recipe.schema import (
    CALIB_METHODS,
    METHODS,
    Preprocess,
    Recipe,
    from_dict,
    load_recipe,
    to_dict,
)

__all__ = [
    "CALIB_METHODS",
    "METHODS",
    "PRESETS",
    "Preprocess",
    "Recipe",
    "from_dict",
    "load_recipe",
    "preset",
    "to_dict",
]
