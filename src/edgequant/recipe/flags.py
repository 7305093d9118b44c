"""The CLI flags' list forms, accepted as recipe values too (recipe keys equal the flag names).

``data_option: ["metadata_csv=meta.csv", "csv_columns=a,b"]`` (``--data-option KEY=VALUE``) and
``dynamic_axis: ["input:1"]`` (``--dynamic-axis INPUT:AXIS``) read as the mappings the recipe holds.
Errors: RecipeError naming the item that does not have the flag's form.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import fields
from typing import Any, ParamSpec, TypeVar

import yaml

from edgequant.errors import EdgeQuantError, RecipeError

P = ParamSpec("P")
R = TypeVar("R")


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


_REST_SPECIAL = {
    "--symmetric/--asymmetric": "act_symmetric",
    "--per-tensor": "per_channel: false",
    "--per-channel": "per_channel: true",
    "--symmetric": "act_symmetric: true",
    "--asymmetric": "act_symmetric: false",
    "--float-scales": "power_of_two: false",
    "--mean": "preprocess.mean",
    "--std": "preprocess.std",
    "--scale": "preprocess.scale",
    "--layout": "preprocess.layout",
}
# "drop " before a flag; the flag (or a pair such as --symmetric/--asymmetric); a placeholder after it
_FLAG_RE = re.compile(r"(drop )?(--[a-z][a-z0-9-]*(?:/--[a-z][a-z0-9-]*)?)( [A-Z]+\b| )?")

# CLI commands quoted in shared messages whose answer the REST service gives in its own words
_REST_PHRASES = (
    (
        re.compile(r"\('edgequant targets [^']*' (?:prints its rules|lists them[^)]*)\)"),
        "(GET /health lists the served targets)",
    ),
    (
        re.compile(r"check the names with 'edgequant inspect MODEL'"),
        "check the names against the uploaded model's (the closest are listed above)",
    ),
)
# a CLI command quoted in a message ("run edgequant quantize model.h5 --target akida1 ...; ")
_COMMAND_RE = re.compile(r"(edgequant [a-z]+(?: [^\s;,']+)*)")


def rest_words(text: str, sent: Mapping[str, str] | None = None) -> str:
    """``text`` (an error's detail or hint) with the CLI flags of recipe settings written as the REST
    service's JSON fields: ``--weight-bits 4`` -> ``weight_bits 4``, ``--keep-worse-passes`` ->
    ``keep_worse_passes: true`` (``drop --keep-worse-passes`` -> ``drop keep_worse_passes``),
    ``--no-bias-correction`` -> ``bias_correction: false``, ``--per-tensor`` -> ``per_channel: false``,
    ``--calib-data PATH`` -> ``?dataset=NAME``, ``--recipe w4a8`` -> ``method=w4a8``; a CLI command that
    a shared message quotes for what REST answers itself (``'edgequant targets ti-npu' prints its rules``:
    ``GET /health``) becomes the REST way (``_REST_PHRASES``).  Other flags that are not
    recipe settings (``--help``) and CLI commands quoted whole (``edgequant quantize m.h5 --target
    akida1``) are left as they are.  ``sent`` (Recipe field -> the key the request used, e.g.
    ``{"act_symmetric": "symmetric"}``) names a field as the client spelled it: ``--symmetric`` ->
    ``symmetric: true``."""
    from edgequant.recipe.schema import FLAG_KEYS, Recipe

    kinds = {f.name: str(f.type) for f in fields(Recipe)}

    def field(flag: str) -> str | None:
        key = flag[2:].replace("-", "_")
        key = FLAG_KEYS.get(key, key)
        return key if key in kinds else None

    def swap(m: re.Match[str]) -> str:
        word = fields_word(m)
        if not sent or word == m.group(0):
            return word
        drop = m.group(1) or ""
        key = re.split(r"[: ]", word[len(drop) :], maxsplit=1)[0]
        return drop + sent[key] + word[len(drop) + len(key) :] if key in sent else word

    def fields_word(m: re.Match[str]) -> str:
        drop, flag, after = m.group(1) or "", m.group(2), m.group(3) or ""
        space = " " if after else ""  # a placeholder (PATH, DB) or a space after the flag
        if flag == "--calib-data":
            return f"{drop}?dataset=NAME" + ("" if after.strip() else after)
        if flag == "--recipe":
            return (
                f"{drop}method="
                if after == " "
                else f"{drop}method=PRESET" + ("" if after.strip() else after)
            )
        if flag in _REST_SPECIAL:
            word = _REST_SPECIAL[flag]
            return drop + (word.split(":")[0] if drop else word) + after
        negated = flag.startswith("--no-") and field("--" + flag[5:]) is not None
        name = field("--" + flag[5:]) if negated else field(flag)
        if name is None:
            return m.group(0)
        if kinds[name] == "bool" and not drop:
            return f"{name}: {'false' if negated else 'true'}{after}"
        return f"{drop}{name}{after if after.strip() else space}"

    for phrase, words in _REST_PHRASES:
        text = phrase.sub(words, text)
    parts = _COMMAND_RE.split(text)  # a CLI command quoted in the text stays as it is typed
    return "".join(p if i % 2 else _FLAG_RE.sub(swap, p) for i, p in enumerate(parts))


def rest_error(body: dict[str, str], sent: Mapping[str, str] | None = None) -> dict[str, str]:
    """An error's ``{"error", "detail", "hint"}`` with its detail and hint in the REST service's words
    (``rest_words``)."""
    return {
        **body,
        **{k: rest_words(body[k], sent) for k in ("detail", "hint") if isinstance(body.get(k), str)},
    }


# flags whose Python API keyword is not the flag's own name, or that stand for one value of it
_API_SPECIAL = {
    "--per-tensor": "per_channel=False",
    "--per-channel": "per_channel=True",
    "--symmetric/--asymmetric": "act_symmetric=",
    "--symmetric": "act_symmetric=True",
    "--asymmetric": "act_symmetric=False",
    "--float-scales": "power_of_two=False",
    "--overwrite": "overwrite=True",
    "--calib-data": "calibration=",
    "--algorithm": "algorithms=",
    "--output-name": "output=",
    "-o": "outdir=",
}
# an API word: "drop " before it; the flag (or a pair); a value after it (not a word of the sentence)
_API_RE = re.compile(
    r"(drop )?(?<![\w-])(--[a-z][a-z0-9-]*(?:/--[a-z][a-z0-9-]*)?|-o\b)"
    r"(?: (?!(?:with|or|and|in|of|to|is|are|for|the|a|an|on|from|but|as|if|so|not|path)\b)"
    r"([\w./][\w./-]*?)(?=[\s,;:)]|\.(?:\s|$)|$))?"
)


def api_words(text: str, words: Mapping[str, str] | None = None) -> str:
    """``text`` (an error's detail or hint) with the CLI flags written as the Python API's keyword
    arguments: ``--weight-bits 4`` -> ``weight_bits=4``, ``--method static`` -> ``method='static'``,
    ``--weight-8bit first`` -> ``weight_8bit=['first']``, ``--keep-worse-passes`` ->
    ``keep_worse_passes=True``, ``--no-bias-correction`` -> ``bias_correction=False``, ``--per-tensor``
    -> ``per_channel=False``, ``--overwrite`` -> ``overwrite=True``, ``-o out/`` -> ``outdir='out/'``,
    ``drop --weight-bits`` -> ``drop weight_bits=``; flags in a row are separated by commas.  ``words``
    (flag -> keyword, e.g. ``{"--calib-data": "data="}`` for ``evaluate``) overrides ``_API_SPECIAL``.
    CLI commands quoted whole (``'edgequant inspect MODEL'``) are left as they are."""
    from edgequant.recipe.schema import FLAG_KEYS, Recipe

    kinds = {f.name: str(f.type) for f in fields(Recipe)}
    special = {**_API_SPECIAL, **(words or {})}

    def swap(m: re.Match[str]) -> str:
        drop, flag, value = m.group(1) or "", m.group(2), m.group(3)
        negated = flag.startswith("--no-")
        key = (flag[5:] if negated else flag[2:]).replace("-", "_")
        kind = kinds.get(FLAG_KEYS.get(key, key), "")
        if kind == "bool" and flag not in special:
            value_text = " " + value if value else ""
            return f"{drop}{key}={'False' if negated else 'True'}{value_text}"
        word = special.get(flag, f"{key}=")
        if value is None or not word.endswith("="):
            return drop + word + (" " + value if value else "")
        if not value.isupper() and not re.fullmatch(r"-?[\d.]+", value):
            value = repr(value)  # a placeholder (PATH, DB) or a number stays bare
        is_list = kind.startswith("tuple") or word == "algorithms="
        return drop + word + (f"[{value}]" if is_list and not value.isupper() else value)

    parts = _COMMAND_RE.split(text)  # a CLI command quoted in the text stays as it is typed
    out = "".join(p if i % 2 else _API_RE.sub(swap, p) for i, p in enumerate(parts))
    return re.sub(r"(\w=(?:'[^']*'|\[[^\]]*\]|[\w.]+)) (?=[a-z_]+=)", r"\1, ", out)


# set inside flag_words(): refusals keep the CLI's flags, because the caller words them
_KEEP_FLAGS: ContextVar[bool] = ContextVar("edgequant_keep_flags", default=False)


@contextlib.contextmanager
def flag_words() -> Iterator[None]:
    """Inside it, ``api_refusals`` leaves refusals in the CLI's flags: for callers that word them
    themselves (the CLI; ``recipe.from_dict``, whose callers are the CLI, the REST service with its field
    words, and the public API functions with theirs)."""
    token = _KEEP_FLAGS.set(True)
    try:
        yield
    finally:
        _KEEP_FLAGS.reset(token)


def api_refusals(fn: Callable[P, R], words: Mapping[str, str] | None = None) -> Callable[P, R]:
    """``fn`` (a public API function or constructor) whose EdgeQuantError names its keyword arguments,
    not the CLI's flags: the same error, its detail and hint rewritten in place by ``api_words``, unless
    it runs inside ``flag_words()``.  The CLI and the REST service call the functions underneath (or
    hold ``flag_words()``), so their words stay theirs."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except EdgeQuantError as exc:
            if _KEEP_FLAGS.get():
                raise
            exc.detail, exc.hint = api_words(exc.detail, words), api_words(exc.hint, words)
            exc.args = (str(exc),)
            raise

    return call
