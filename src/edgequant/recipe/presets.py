"""Named recipes: the methods that ``compare`` runs, each a plain mapping over the defaults."""

from __future__ import annotations

from typing import Any

from edgequant.errors import RecipeError
from edgequant.recipe.schema import ALGORITHMS, Recipe, from_dict

PRESETS: dict[str, dict[str, Any]] = {
    "dynamic-int8": {"method": "dynamic", "weight_bits": 8, "per_channel": True},
    "fp16": {"method": "fp16"},
    "int8-static-per-tensor": {"method": "static", "per_channel": False, "tag": "int8_pt"},
    "int8-static": {"method": "static", "per_channel": True, "tag": "int8"},
    "weight-only-int8": {"method": "weight-only", "weight_bits": 8},
    "weight-only-int4": {"method": "weight-only", "weight_bits": 4, "block_size": 32},
    "w4a8": {"method": "static", "weight_bits": 4, "act_bits": 8},
    "w8a16": {"method": "static", "weight_bits": 8, "act_bits": 16},
    # cross-layer equalization where the graph has equalizable pairs (a note where it has none), the
    # range search, AdaRound at 4 bits and below (LOW_BIT_PASSES), then sequential bias correction
    "accurate": {
        "method": "static",
        "calib_method": "search",
        "algorithms": ["cle", "bias_correction"],
        "bias_correction_variant": "sequential",
        "tag": "accurate",
    },
}
# passes a preset adds when the weights have at most this many bits (ternary and binary count as 2 and 1)
LOW_BIT_PASSES: dict[str, tuple[str, int]] = {"accurate": ("adaround", 4)}


def preset(name: str, **overrides: Any) -> Recipe:
    """The recipe of a named preset, with ``overrides`` applied on top.  A pass of ``LOW_BIT_PASSES`` is
    added (in the passes' order) when the resulting weight bits are low enough and ``overrides`` do
    not set ``algorithms`` themselves."""
    if name not in PRESETS:
        raise RecipeError(
            f"unknown preset '{name}'; allowed: {', '.join(PRESETS)}.", "pick a preset from the list."
        )
    recipe = from_dict(without_disabled({**PRESETS[name], **overrides}, overrides))
    if "algorithms" not in overrides:
        recipe = low_bit_passes(name, recipe)
    return recipe if "tag" in overrides else own_tag(name, recipe)


def low_bit_passes(name: str, recipe: Recipe) -> Recipe:
    """``recipe`` (preset ``name`` with changes) with the pass of ``LOW_BIT_PASSES[name]`` added, in the
    passes' order, when its weight bits are low enough (``accurate`` at 4 bits adds AdaRound); the CLI,
    the API and REST requests all resolve a preset through it."""
    if name not in LOW_BIT_PASSES:
        return recipe
    step, bits = LOW_BIT_PASSES[name]
    if (2 if recipe.weight_bits == "ternary" else int(recipe.weight_bits)) > bits:
        return recipe
    names = {*recipe.algorithms, step}
    return recipe.replace(algorithms=[a for a in ALGORITHMS if a in names])


def own_tag(name: str, recipe: Recipe) -> Recipe:
    """``recipe`` (preset ``name`` with changes) without the preset's own tag when the changes alter the
    settings that tag stands for (``accurate`` at 4 bits is not ``accurate``): the derived tag then."""
    own = PRESETS[name].get("tag")
    if not own or recipe.tag != own:
        return recipe
    mine = recipe.replace(tag=None).default_tag
    if mine != from_dict({k: v for k, v in PRESETS[name].items() if k != "tag"}).default_tag:
        return recipe.replace(tag=None)
    return recipe


def without_disabled(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the passes that ``overrides`` switch off by their alias dropped from ``algorithms``
    (``bias_correction: false`` / ``--no-bias-correction`` over a recipe or preset that runs it), unless
    ``overrides`` set ``algorithms`` themselves."""
    if overrides.get("bias_correction") is not False or "algorithms" in overrides:
        return data
    return {**data, "algorithms": [a for a in data.get("algorithms") or () if a != "bias_correction"]}
