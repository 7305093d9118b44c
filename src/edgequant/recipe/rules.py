"""The Recipe's cross-field rules: combinations of options that cannot work together, or options the
chosen method or target would ignore, are refused with one RecipeError naming the options and the fix.

``Recipe.__post_init__`` (``recipe.schema``) calls these after its per-field checks; ``check_target`` and
``alias_passes`` also canonicalise the frozen recipe (the target's profile name; the passes that
``bias_correction`` and ``target_sqnr_db`` add to ``algorithms``).
"""

from __future__ import annotations

import difflib
import math
import typing
from typing import TYPE_CHECKING

from edgequant.errors import RecipeError

if TYPE_CHECKING:
    from edgequant.recipe.schema import Recipe


def suggest(value: str, allowed: typing.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest allowed name, or ``""``."""
    close = difflib.get_close_matches(str(value), list(allowed), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_lowbit(r: Recipe) -> None:
    """Binary and ternary weights: symmetric, per channel or per tensor, static or weight-only."""
    if r.weight_centring and r.weight_bits != 1:
        raise RecipeError(
            f"weight_centring is set with weight_bits {r.weight_bits}; it centres binary weights only.",
            "use --weight-bits 1 with --weight-centring, or drop --weight-centring.",
        )
    if r.weight_bits not in (1, "ternary"):
        return
    kind = "binary" if r.weight_bits == 1 else "ternary"
    if r.method not in ("static", "weight-only"):
        raise RecipeError(
            f"{kind} weights (weight_bits {r.weight_bits}) with method '{r.method}'; they are "
            "stored as int8 codes with a DequantizeLinear, which methods static and weight-only write.",
            "use --method static or weight-only.",
        )
    if not r.weight_symmetric:
        raise RecipeError(
            f"{kind} weights are symmetric by definition (codes {{-1, +1}} or {{-1, 0, +1}}, zero "
            "point 0), and asymmetric weights were asked for.",
            "drop the asymmetric weight setting"
            + (" (--weight-centring centres binary signs)." if kind == "binary" else "."),
        )
    if r.block_size is not None:
        raise RecipeError(
            f"{kind} weights have one scale per channel or per tensor; block_size {r.block_size} "
            "would be ignored.",
            "drop --block-size.",
        )


def check_ignored(r: Recipe) -> None:
    """An option the chosen method would not read is refused, naming the option."""
    m = r.method
    if m == "fp16" and r.weight_bits != 8:
        raise RecipeError(
            f"weight_bits {r.weight_bits} is set but method 'fp16' stores weights as float16, "
            "so the option would be ignored.",
            "drop --weight-bits, or use --method weight-only / static for integer weights.",
        )
    if m != "static" and r.act_bits != 8:
        raise RecipeError(
            f"act_bits {r.act_bits} is set but method '{m}' does not quantize activations to a "
            "fixed bit width, so the option would be ignored.",
            "drop --act-bits, or use --method static.",
        )
    if m != "weight-only" and r.block_size is not None:
        raise RecipeError(
            f"block_size {r.block_size} is set but method '{m}' has no block-wise weights, so the "
            "option would be ignored.",
            "drop --block-size, or use --method weight-only.",
        )
    if isinstance(r.act16_below_db, float) and r.act_bits == 16:
        raise RecipeError(
            f"act16_below_db {r.act16_below_db} is set with act_bits 16; it moves 8-bit activations to "
            "16 bits, and every activation is 16-bit already, so the option would be ignored.",
            "drop --act16-below-db, or use --act-bits 8 with it.",
        )
    if r.keep_worse_passes and not r.algorithms:
        raise RecipeError(
            "keep_worse_passes is set but the recipe runs no pass (algorithms is empty), and it only "
            "keeps a pass whose held-out SQNR fell, so the option would be ignored.",
            "add the passes with --algorithm (e.g. --algorithm adaround; a transformer's default "
            "smoothquant counts when listed), or drop --keep-worse-passes.",
        )
    if m == "dynamic" and r.calib_data is not None:
        raise RecipeError(
            "calib_data is set but method 'dynamic' computes activation ranges at run time and "
            "calibrates nothing, so the option would be ignored.",
            "drop --calib-data (the run check then uses synthetic inputs and says so), "
            "or use --method static.",
        )


def check_act16(r: Recipe) -> None:
    """act16_below_db is a number of dB in (0, 100), "auto" or "off" (None, from old recipes, is "off")."""
    value = r.act16_below_db
    if value is None:
        object.__setattr__(r, "act16_below_db", "off")
    elif isinstance(value, str) and value not in ("auto", "off"):
        raise RecipeError(
            f"act16_below_db {value[:64]!r} is neither a number of dB nor auto/off.",
            "use --act16-below-db 25, auto (25 dB on transformers, the default) or off.",
        )
    elif not isinstance(value, str) and not 0.0 < float(value) < 100.0:
        raise RecipeError(f"act16_below_db {value} is outside (0, 100) dB.", "use a value such as 25.")
    elif not isinstance(value, str):
        object.__setattr__(r, "act16_below_db", float(value))


def check_target(r: Recipe) -> None:
    """The target is a known profile name (case and aliases resolved: 'onnx' is 'cpu'); an unknown
    one is refused with the known names and the closest match (edgequant.targets)."""
    from edgequant import targets

    object.__setattr__(r, "target", targets.canonical(r.target))
    if r.format == "ti-npu-int" and (r.target != "ti-npu" or r.method != "static"):
        raise RecipeError(
            f"--format ti-npu-int is TI's NPU integer form, but the target is '{r.target}' and the method "
            f"'{r.method}'; it is written from a static model quantized for target 'ti-npu' only.",
            "add --target ti-npu (and --method static), or drop --format (the QDQ model is the default).",
        )


def check_algorithms(r: Recipe) -> None:
    """Known pass names, each once, in ALGORITHMS order, on a method that runs them."""
    from edgequant.recipe.schema import ALGORITHMS, WEIGHT_ONLY_PASSES

    for name in r.algorithms:
        if name not in ALGORITHMS:
            raise RecipeError(
                f"unknown algorithm '{name}'; known: {', '.join(ALGORITHMS)}.",
                "use one of the known names" + suggest(name, ALGORITHMS) + ".",
            )
    if r.algorithms and r.method == "weight-only" and set(r.algorithms) <= set(WEIGHT_ONLY_PASSES):
        pass  # block_clip and gptq choose weight grids only: weight-only runs them too
    elif r.algorithms and r.method != "static":
        raise RecipeError(
            f"algorithms {list(r.algorithms)} are set but method is '{r.method}'; the passes refine "
            "the weights of a static int model, so they apply to method 'static' only "
            f"(weight-only takes {', '.join(WEIGHT_ONLY_PASSES)}).",
            "use --method static with --algorithm, or drop --algorithm.",
        )
    weight_only = [a for a in r.algorithms if a in WEIGHT_ONLY_PASSES]
    if weight_only and r.method == "static":  # static has no weight blocks, the only thing they fit
        raise RecipeError(
            f"algorithm {', '.join(weight_only)} is set with method 'static'; it fits block-wise 4-bit "
            "weights, which only method weight-only writes, so the pass would do nothing.",
            f"drop {' '.join('--algorithm ' + a for a in weight_only)}, or use --method weight-only "
            "--weight-bits 4 --block-size 32.",
        )
    if len(set(r.algorithms)) != len(r.algorithms):
        raise RecipeError(f"algorithms {list(r.algorithms)} name a pass twice.", "list each pass once.")
    order = [ALGORITHMS.index(a) for a in r.algorithms]
    if order != sorted(order):
        raise RecipeError(
            f"algorithms {list(r.algorithms)} are out of order; passes run in the order "
            f"{', '.join(ALGORITHMS)} (equalize weights before choosing their rounding).",
            f"write them as {[a for a in ALGORITHMS if a in r.algorithms]}.",
        )


def alias_passes(r: Recipe) -> None:
    """``bias_correction: true`` and ``target_sqnr_db`` add their passes (``bias_correction``,
    ``mixed_precision``) to ``algorithms``, in the passes' order; the passes need their settings."""
    extra = (("bias_correction",) if r.bias_correction else ()) + (
        ("mixed_precision",) if r.target_sqnr_db is not None else ()
    )
    from edgequant.recipe.schema import ALGORITHMS

    names = tuple(sorted({*r.algorithms, *extra}, key=ALGORITHMS.index))
    object.__setattr__(r, "algorithms", names)
    if "mixed_precision" in names and r.target_sqnr_db is None:
        raise RecipeError(
            "algorithm 'mixed_precision' keeps the most sensitive nodes float until the output SQNR "
            "reaches target_sqnr_db, and target_sqnr_db is not set.",
            "add --target-sqnr DB (which runs the pass by itself), or drop mixed_precision.",
        )
    if r.bias_correction_variant != "sequential" and "bias_correction" not in names:
        raise RecipeError(
            f"bias_correction_variant is '{r.bias_correction_variant}' but bias correction does not run.",
            "add --bias-correction (or bias_correction to algorithms), or drop bias_correction_variant.",
        )


def check_sensitivity(r: Recipe) -> None:
    """target_sqnr_db / max_float_nodes: positive, finite, static only, the cap only with a target."""
    target, cap = r.target_sqnr_db, r.max_float_nodes
    if target is not None and not (math.isfinite(target) and target > 0):
        raise RecipeError(
            f"target_sqnr_db {target} is not a positive, finite number of dB.",
            "use e.g. --target-sqnr 25 (dB of output SQNR against the float model).",
        )
    if target is not None and r.method != "static":
        raise RecipeError(
            f"target_sqnr_db is set but method is '{r.method}'; the target keeps nodes of a static "
            "int model float, so it applies to method 'static' only.",
            "use --method static with --target-sqnr, or drop --target-sqnr.",
        )
    if cap is not None and cap < 1:
        raise RecipeError(
            f"max_float_nodes {cap} is not a positive count.",
            "use e.g. --max-float-nodes 5, or leave it unset for 10 % of the quantized compute nodes.",
        )
    if cap is not None and target is None:
        raise RecipeError(
            f"max_float_nodes ({cap}) is set but target_sqnr_db is not; the cap limits the nodes "
            "that --target-sqnr keeps float.",
            "add --target-sqnr DB, or drop --max-float-nodes.",
        )


# passes that learn from real calibration inputs (random ones would fit them to noise): what each learns
DATA_PASSES = {
    "adaround": "learns each weight's rounding",
    "brecq": "learns each block's weight rounding",
    "block_clip": "weighs each weight block's error",
    "gptq": "fits each weight's rounding",
}


def check_pass_data(r: Recipe, has_data: bool, preset: str | None = None) -> None:
    """Refuse, before any work, a pass of ``DATA_PASSES`` when no real calibration data is given
    (``has_data`` False; synthetic data does not count).  ``preset``: the preset the recipe came from
    when the user did not list ``algorithms``, so a pass the preset added at low bits
    (``presets.LOW_BIT_PASSES``) is named as the preset's, not as one the user listed.  Raises DataError
    (the REST service answers it 422 at submission)."""
    from edgequant.errors import DataError
    from edgequant.recipe.presets import LOW_BIT_PASSES

    needs = [a for a in r.algorithms if a in DATA_PASSES]
    if has_data or not needs:
        return
    name = needs[0]
    added, bits = LOW_BIT_PASSES.get(preset or "", ("", 0))
    if added == name:
        raise DataError(
            f"the {preset} preset runs {name} at {bits} bits and below (weight_bits {r.weight_bits} here), "
            f"which {DATA_PASSES[name]} from real calibration inputs, and no calibration data was given.",
            f"give --calib-data PATH, or use a preset without {name} (e.g. --recipe w4a8).",
        )
    raise DataError(
        f"algorithm {name} {DATA_PASSES[name]} from real calibration inputs, and no calibration data was "
        "given (random inputs would fit it to noise).",
        f"give --calib-data PATH, or drop --algorithm {name}.",
    )
