"""Recipe <-> mappings: ``from_dict`` (YAML, JSON bodies, CLI flags; every value checked against the
field's type hint, unknown keys refused with a suggestion), ``to_dict`` / ``to_flag_dict`` (what
``--print-recipe`` prints) and ``load_recipe`` / ``read_recipe`` (YAML files, TI Tensorlab configs).

The Recipe itself and its validation live in ``recipe.schema``, which re-exports these names.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

import yaml

from edgequant.errors import RecipeError
from edgequant.recipe.rules import suggest

if TYPE_CHECKING:
    from edgequant.recipe.schema import Recipe


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint; return it in canonical form or raise RecipeError."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors: list[RecipeError] = []
        kinds = [o for o in options if o is not type(None)]
        for opt in kinds:
            try:
                out = _coerce(value, opt, where)
            except RecipeError as exc:
                errors.append(exc)
                continue
            errors.clear()  # a kept exception's traceback holds this frame and its callers': no cycle
            return out
        if len(errors) == 1:  # X | None: X's own message
            raise errors.pop()
        errors.clear()
        named = [_kind(o) for o in kinds]
        close = next(
            (suggest(str(value), map(str, get_args(o))) for o in kinds if get_origin(o) is Literal), ""
        )
        raise RecipeError(
            f"{where} is {value!r}, which is neither {' nor '.join(named)}.",
            f"write {' or '.join(named)}{close}.",
        )
    if origin is Literal:
        allowed = get_args(hint)
        if (
            isinstance(value, bool) and ("on" if value else "off") in allowed
        ):  # YAML 1.1 reads on/off as bools
            return "on" if value else "off"
        if value not in allowed:
            raise RecipeError(
                f"{where} = {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}.",
                f"use one of {', '.join(map(str, allowed))}" + suggest(str(value), map(str, allowed)),
            )
        return value
    if origin in (tuple, list):  # list: e.g. dynamic_axes {input: [1]}
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise RecipeError(f"{where} must be a list, got {type(value).__name__}.", "write a YAML list.")
        item = get_args(hint)[0]
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(
                f"{where} must be a mapping, got {type(value).__name__}.", "write a YAML mapping."
            )
        item_hint = get_args(hint)[1]
        if item_hint is Any:  # option values are checked by their owner (e.g. data.SourceOptions)
            return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
        return {str(k): _coerce(v, item_hint, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):  # type: ignore[arg-type]
            return value
        if not isinstance(value, dict):
            raise RecipeError(
                f"{where} must be a mapping, got {type(value).__name__}.", "write a YAML mapping."
            )
        return _build(hint, value, where)  # type: ignore[arg-type]
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where} must be true or false, got {value!r}.", "write true or false.")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where} must be an integer, got {value!r}.", "write a whole number.")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecipeError(f"{where} must be a number, got {value!r}.", "write a number.")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where} must be a string, got {value!r}.", "quote the value.")
        return value
    raise RecipeError(f"{where}: unsupported type {hint}.", "report this as a bug.")


def _kind(hint: Any) -> str:
    """What a value of type ``hint`` is, in words (``a number``, ``one of auto, off``)."""
    origin = get_origin(hint)
    if origin is Literal:
        allowed = get_args(hint)
        return f"'{allowed[0]}'" if len(allowed) == 1 else "one of " + ", ".join(map(str, allowed))
    if origin in (tuple, list):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "a mapping"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return words.get(hint, str(hint))


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str | int | float | bool) for v in value):
        return list(value)
    raise RecipeError(
        f"{where} must be a number, string, boolean or list of them, got {value!r}.", "simplify it."
    )


# recipe keys spelled as the CLI flags (``--symmetric``, ``--target-sqnr``, ``--data-option``) -> field
FLAG_KEYS: dict[str, str] = {
    "symmetric": "act_symmetric",
    "target_sqnr": "target_sqnr_db",
    "data_option": "data_options",
    "dynamic_axis": "dynamic_axes",
    "algorithm": "algorithms",
}
# fields whose flag takes a list of strings (KEY=VALUE, INPUT:AXIS): a recipe may give that list too
_FLAG_LISTS = ("data_options", "dynamic_axes")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    from edgequant.recipe.schema import Recipe

    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if cls is Recipe and key in FLAG_KEYS:  # the flag's spelling; the field's name stays accepted
            key = FLAG_KEYS[key]
            if key in kwargs or key in data:
                raise RecipeError(
                    f"{where} sets both '{raw_key}' and '{key}', two spellings of one setting.",
                    f"keep one of them ('{raw_key}' is the CLI flag's name).",
                )
        if key not in names:
            allowed = names | (set(FLAG_KEYS) if cls is Recipe else set())
            raise RecipeError(
                f"unknown key '{raw_key}' in {where}; allowed: {', '.join(sorted(allowed))}.",
                "remove or rename the key" + suggest(key, names) + ".",
            )
        if cls is Recipe and key in _FLAG_LISTS and isinstance(value, list | tuple):
            from edgequant.recipe import flags

            parse = flags.key_values if key == "data_options" else flags.input_axes
            value = parse(value, f"recipe key '{raw_key}'")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where != "recipe" else key)
    from edgequant.recipe.flags import flag_words

    with flag_words():  # the callers word the refusals (CLI flags, REST fields, API keywords)
        return cls(**kwargs)


def from_dict(data: dict[str, Any]) -> Recipe:
    """Build a Recipe from a mapping (YAML, JSON body, CLI flags); unknown keys are errors."""
    if not isinstance(data, dict):
        raise RecipeError(
            f"a recipe must be a mapping, got {type(data).__name__}.", "write key: value pairs."
        )
    from edgequant.recipe.schema import Recipe

    recipe: Recipe = _build(Recipe, data, "recipe")
    return recipe


def to_dict(recipe: Recipe) -> dict[str, Any]:
    out = dataclasses.asdict(recipe)
    out["exclude"] = list(recipe.exclude)
    out["weight_8bit"] = list(recipe.weight_8bit)
    out["algorithms"] = list(recipe.algorithms)
    pre = out["preprocess"]
    for k in ("mean", "std"):
        if pre[k] is not None:
            pre[k] = list(pre[k])
    pre["from_model"] = list(pre["from_model"])
    return out


def to_flag_dict(recipe: Recipe) -> dict[str, Any]:
    """``to_dict`` with the keys spelled as the CLI flags (``symmetric``, ``target_sqnr``, ``data_option``,
    ``dynamic_axis``, ``algorithm``), without the options the method does not read (``recipe.applies``):
    what ``--print-recipe`` prints; ``from_dict`` reads it back."""
    from edgequant.recipe.applies import reads

    to_flag = {field_name: flag for flag, field_name in FLAG_KEYS.items()}
    # only the options the method reads: the printed recipe given back as --recipe is accepted as it is
    return {to_flag.get(k, k): v for k, v in to_dict(recipe).items() if reads(recipe, k)}


def load_recipe(path: str | Path, notes: list[str] | None = None, flow: str = "ptq") -> Recipe:
    """Read a YAML recipe file: EdgeQuant keys, or a TI Tensorlab-style config (``recipe.ti_config``),
    whose notes (e.g. a device without an NPU) are appended to ``notes``; ``flow`` "qat" reads a TI
    config for ``edgequant qat`` (``quantization_method: QAT``)."""
    return from_file_data(read_recipe(path, notes, flow), path)


def from_file_data(data: dict[str, Any], path: str | Path) -> Recipe:
    """``from_dict(data)`` for the mapping of recipe file ``path``: a RecipeError names the file and
    the key it is about (``recipe file 'r.yaml', key algorithms: unknown algorithm 'nope'; ...``)."""
    try:
        return from_dict(data)
    except RecipeError as exc:
        keys = [k for k in data if re.search(rf"(?<![\w-]){re.escape(str(k))}(?![\w-])", exc.detail)]
        if not keys and exc.detail.startswith("unknown algorithm"):
            keys = [k for k in data if str(k) in ("algorithms", "algorithm")]
        where = f"recipe file '{path}'" + (f", key {keys[0]}" if keys else "")
        exc.detail = f"{where}: {exc.detail}"
        raise


def read_recipe(path: str | Path, notes: list[str] | None = None, flow: str = "ptq") -> dict[str, Any]:
    """The mapping of a YAML recipe file (``load_recipe`` without building the Recipe): its keys are
    the options the file gives."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe file '{p}' does not exist.", "check the path given to --recipe.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe file '{p}' is not valid YAML: {exc}.", "fix the YAML syntax.") from exc
    if data is None:
        data = {}
    from edgequant.recipe.ti_config import from_tensorlab, is_tensorlab

    if is_tensorlab(data):
        data, ti_notes = from_tensorlab(data, flow)
        if notes is not None:
            notes.extend(ti_notes)
    if not isinstance(data, dict):
        raise RecipeError(f"recipe file '{p}' is not a mapping of keys.", "write key: value pairs.")
    return data
