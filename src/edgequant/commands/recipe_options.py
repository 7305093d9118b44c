"""``--recipe`` for ``evaluate`` and ``compare``: the data options a quantize recipe carries.

The recipe file (or preset) given to ``quantize`` can be given to ``evaluate`` and ``compare`` too, so
one file holds the data options (``data_options``: metadata CSV, HDF5 keys, CSV windows, ...) for
every command.  ``--data-option KEY=VALUE`` flags are applied over the recipe's, key by key.  Those
commands read only the keys listed in ``used``; any other key the recipe sets (e.g. ``method`` for
``compare``, which runs every method's own preset) is named in a note, never applied silently.
"""

from __future__ import annotations

from typing import Any


def recipe_options(
    recipe: str | None, items: list[str] | None, command: str, used: tuple[str, ...] = ("data_options",)
) -> tuple[dict[str, Any] | None, dict[str, Any], list[str]]:
    """``(data options, the recipe's keys that differ from the defaults, notes)``.

    RecipeError for an unreadable or invalid recipe (as ``quantize --recipe`` raises) or a bad
    ``KEY=VALUE`` item.
    """
    from edgequant.cli import parse_options
    from edgequant.pipeline import resolve_recipe
    from edgequant.recipe import Recipe, to_dict

    flags = parse_options(items) if items else {}
    if recipe is None:
        return (flags or None), {}, []
    base = to_dict(resolve_recipe(recipe, {}))
    default = to_dict(Recipe())
    changed = {k: v for k, v in base.items() if v != default.get(k)}
    opts = {**(base.get("data_options") or {}), **flags}
    notes = []
    others = sorted(set(changed) - set(used))
    if others:
        notes.append(
            f"recipe {recipe}: {command} applies only its {', '.join(used)}; not {', '.join(others)}"
            + (" (compare runs each method with its own preset)" if command == "compare" else "")
        )
    return (opts or None), changed, notes
