"""The CLI flags' list forms, accepted as recipe values too (recipe keys equal the flag names).

``data_option: ["metadata_csv=meta.csv", "csv_columns=a,b"]`` (``--data-option KEY=VALUE``) and
``dynamic_axis: ["input:1"]`` (``--dynamic-axis INPUT:AXIS``) read as the mappings the recipe holds.
Errors: RecipeError naming the item that does not have the flag's form.
"""

from __future__ import annotations

from typing import Any

import yaml

from edgequant.errors import RecipeError


def key_values(items: list[Any] | tuple[Any, ...], where: str = "--data-option") -> dict[str, Any]:
    """``["video_frames=32", "csv_columns=a,b"]`` -> ``{"video_frames": 32, "csv_columns": ["a", "b"]}``;
    each value is read as YAML (numbers, booleans), a comma splits it into a list."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = str(item).partition("=") if isinstance(item, str) else ("", "", "")
        if not sep or not key.strip():
            raise RecipeError(
                f"{where} item {item!r} is not KEY=VALUE.", f"write e.g. {where} video_frames=32."
            )
        values = [yaml.safe_load(v) for v in raw.split(",")]
        out[key.strip()] = values if len(values) > 1 else values[0]
    return out


def input_axes(items: list[Any] | tuple[Any, ...], where: str = "--dynamic-axis") -> dict[str, list[int]]:
    """``["input:1", "input:2"]`` -> ``{"input": [1, 2]}``."""
    out: dict[str, list[int]] = {}
    for item in items:
        name, sep, axis = str(item).rpartition(":")
        if not isinstance(item, str) or not sep or not name.strip() or not axis.strip().isdigit():
            raise RecipeError(f"{where} item {item!r} is not INPUT:AXIS.", f"write e.g. {where} input:1.")
        out.setdefault(name.strip(), []).append(int(axis))
    return out
