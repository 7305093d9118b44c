"""Which recipe options each method reads, and the refusal of an option given for a method that does not.

``APPLIES`` maps an option (a Recipe field) to the methods that read it; an option missing from the
table is read by every method (e.g. ``exclude``, ``seed``, ``check_samples``, ``target``).  An option
the user *gave* (a CLI flag, a key of a YAML recipe or REST body, a keyword override of the Python API),
even at its default value (``--method fp16 --weight-bits 8``), is refused when the method would not
read it: the run would silently do something other than what was asked.  Preset keys are not "given":
a preset is a bundle whose unused keys are its own business.

Errors: RecipeError naming the option as its flag and the methods that read it (exit 2 on the CLI).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edgequant.errors import RecipeError

_ALL_INT = ("static", "dynamic", "weight-only")
_DATA = ("static", "weight-only")  # calibration or a pass reads the data (fp16 and weight-only check on it)

# option -> (methods that read it, what it is for)
APPLIES: dict[str, tuple[tuple[str, ...], str]] = {
    "weight_bits": (_ALL_INT, "the integer weights' bit width"),
    "per_channel": (_ALL_INT, "the integer weights' scale granularity"),
    "reduce_range": (_ALL_INT, "the integer weights' 7-bit range"),
    "weight_symmetric": (_DATA, "the QDQ weights' zero point"),
    "power_of_two": (_DATA, "the QDQ scales' rounding"),
    "weight_centring": (_DATA, "binary QDQ weights"),
    "block_size": (("weight-only",), "block-wise weight scales"),
    "act_bits": (("static",), "the static activations' bit width"),
    "act_symmetric": (("static",), "the static activation ranges' zero point"),
    "act_signed": (("static",), "the static activations' type"),
    "calib_method": (("static",), "how static activation ranges are chosen"),
    "percentile": (("static",), "the percentile calibration's cut"),
    "calib_data": (("static", "weight-only", "fp16"), "calibration data (dynamic computes ranges per run)"),
    "calib_samples": (_DATA, "how many samples calibration and the passes read"),
    "sampling": (_DATA, "which samples calibration reads"),
    "allow_synthetic": (_DATA, "calibrating on random inputs"),
    "act16_below_db": (("static",), "16-bit static activations"),
    "placement": (("static",), "where static activation Q/DQ pairs go"),
    "target_sqnr_db": (("static",), "keeping nodes of a static model float"),
    "max_float_nodes": (("static",), "the --target-sqnr search's cap"),
    "bias_correction": (("static",), "correcting a static model's biases"),
    "bias_correction_variant": (("static",), "the bias correction variant"),
    "keep_worse_passes": (_DATA, "keeping a pass that lowered the SQNR"),
    "hoist_gru": (("static", "dynamic"), "int8 GRU input projections"),
    "nbits_accuracy_level": (("weight-only",), "the MatMulNBits kernels' accuracy level"),
    "gptq_act_order": (("weight-only",), "the gptq pass's row order"),
    "token_mask": (("weight-only",), "the tokens block_clip/gptq fit"),
    "weight_8bit": (("static", "weight-only"), "layers kept 8-bit among low-bit weights (mixed 4/8)"),
}

# the flag that sets each field, when it differs from --field-name
_FLAGS = {"act_symmetric": "--symmetric/--asymmetric", "target_sqnr_db": "--target-sqnr"}
_BOOL_FLAGS = {
    "per_channel": ("--per-channel", "--per-tensor"),
    "act_symmetric": ("--symmetric", "--asymmetric"),
    "power_of_two": ("--power-of-two", "--float-scales"),
}


def flag(option: str, value: Any = None) -> str:
    """The CLI spelling of ``option`` set to ``value`` (``per_channel=False`` -> ``--per-tensor``)."""
    if option in _BOOL_FLAGS and isinstance(value, bool):
        return _BOOL_FLAGS[option][0 if value else 1]
    name = _FLAGS.get(option, "--" + option.replace("_", "-"))
    if isinstance(value, bool):
        return name if value else f"--no-{name[2:]}"
    return name if value is None else f"{name} {value}"


def refuse_ignored(recipe: Any, given: Iterable[str], where: str = "") -> None:
    """Raise RecipeError for the first option in ``given`` (Recipe field names) that ``recipe.method``
    does not read (``APPLIES``), or ``percentile`` given without ``calib_method`` percentile/search."""
    method = recipe.method
    keys = sorted(set(given))
    for option in keys:
        if option not in APPLIES:
            continue
        methods, what = APPLIES[option]
        if method in methods:
            continue
        shown = flag(option, getattr(recipe, option))
        raise RecipeError(
            f"{where}{shown} is given but method '{method}' does not read it (it sets {what}, which "
            f"only {', '.join(methods)} read), so the option would be ignored.",
            f"drop {shown.split(' ')[0]}, or use --method {methods[0]}.",
        )
    if "percentile" in keys and recipe.calib_method not in ("percentile", "search"):
        raise RecipeError(
            f"{where}--percentile {recipe.percentile} is given but the calibration method is "
            f"'{recipe.calib_method}', which does not read it, so the option would be ignored.",
            "add --calib-method percentile, or drop --percentile.",
        )


def normalized_keys(data: dict[str, Any]) -> set[str]:
    """The Recipe field names of a mapping's keys (dashes, CLI spellings such as ``symmetric``) whose
    value is not null (null is unset)."""
    from edgequant.recipe.schema import FLAG_KEYS

    out = set()
    for raw, value in data.items():
        if value is None:  # null: unset, the default
            continue
        key = str(raw).replace("-", "_")
        out.add(FLAG_KEYS.get(key, key))
    return out


def reads(recipe: Any, option: str) -> bool:
    """True when ``recipe``'s method (and calibration method, for ``percentile``) reads ``option``."""
    if option == "percentile" and recipe.calib_method not in ("percentile", "search"):
        return False
    return option not in APPLIES or recipe.method in APPLIES[option][0]
