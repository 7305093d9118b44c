"""The default output tag (``<name>_<tag>.onnx``): every setting that changes the model is in it.

Different settings never write the same file name.  The tag is the method's base name, then one
readable part per common setting that differs from the default (in this order), then ``_h`` and six
hex digits of a hash of any other model-changing setting that differs from the default:

======================  =========================================================================
base                    ``fp16``; ``dynamic_int8`` / ``dynamic_w4``; weight-only ``w8``, ``w4b32``
                        (block size); static ``int8`` (w8a8) or ``w4a8``, ``w8a16``, ``wta8``,
                        ``w1ca8`` (ternary ``t``, centred binary ``1c``)
``_pt``                 per-tensor weight scales
``_p2``                 power-of-two scales
``_wasym``              asymmetric weights
``_sym``                symmetric activation ranges (static)
``_s8`` / ``_u8``       activations signed / unsigned instead of auto (static)
``_entropy`` ...        calibration method other than auto (static); ``_percentile99.9`` with
                        its percentile when that is not 99.99
``_rron`` / ``_rroff``  reduce_range on / off instead of auto
``_mm`` / ``_all``      placement matmul-inputs / all instead of auto (static)
``_a16lt25``            --act16-below-db 25 instead of auto (auto's promotions depend on the model, as
                        the default smoothquant pass does: the report and the plan list them)
``_a16off``             --act16-below-db off
``_sqnr30``             --target-sqnr 30
``_cle-adaround``       the passes run (``bc`` for bias_correction, ``mp`` for mixed_precision)
``_hoist`` / ``_fix``   --hoist-gru / --fix
``_sf`` / ``_sl``       --skip-first / --skip-last
``_<target>``           a target other than cpu (``_ti-npu``)
``_h1a2b3c``            anything else that changes the model: exclude, calibration sample count,
                        sampling, seed, check_samples, preprocessing, data options, input map, ...
======================  =========================================================================

Only the settings the method reads count (``recipe.applies``): fp16's tag ignores calibration
settings, which cannot change an fp16 model.  An explicit ``tag`` (``--tag``) always wins; a preset's
own tag (``accurate``) is kept only while no override changes the preset's settings: ``accurate`` at 4
bits (AdaRound added) is ``w4a8_search_cle-adaround-bc``, as the same recipe written out, from the CLI,
the API and REST alike.  A tag longer than 64 characters keeps its base and hashes the rest.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from edgequant.recipe.applies import APPLIES

_PASS_SHORT = {"bias_correction": "bc", "mixed_precision": "mp"}
# settings in the readable parts or the base, or that do not change the model
_NOT_HASHED = {
    "method", "weight_bits", "act_bits", "per_channel", "power_of_two", "weight_symmetric", "act_symmetric",
    "act_signed", "calib_method", "percentile", "reduce_range", "placement", "act16_below_db",
    "target_sqnr_db", "algorithms", "bias_correction", "hoist_gru", "fix", "skip_first", "skip_last",
    "target", "block_size", "weight_centring", "tag", "calib_data", "allow_synthetic", "format",
    "tune_trials", "keep_io_types", "preprocess",
}  # fmt: skip
_DATA_ONLY = {  # change the model only through calibration data (never fp16's or dynamic's)
    "calib_samples", "batch_size", "sampling", "seed", "check_samples", "data_options", "input_map",
    "keep_worse_passes", "bias_correction_variant", "max_float_nodes",
}  # fmt: skip


def _reads(recipe: Any, option: str) -> bool:
    methods = APPLIES.get(option, ((recipe.method,), ""))[0]
    return recipe.method in methods


def _num(value: float) -> str:
    return f"{value:g}"


def base(recipe: Any) -> str:
    """The method's base name (``int8``, ``w4a8``, ``dynamic_int8``, ``w4b32``, ``fp16``)."""
    bits = {"ternary": "t", 1: "1c" if recipe.weight_centring else "1"}.get(
        recipe.weight_bits, str(recipe.weight_bits)
    )
    if recipe.method == "fp16":
        return "fp16"
    if recipe.method == "dynamic":
        return "dynamic_int8" if recipe.weight_bits == 8 else f"dynamic_w{bits}"
    if recipe.method == "weight-only":
        return f"w{bits}" + (f"b{recipe.block_size}" if recipe.block_size else "")
    return "int8" if recipe.weight_bits == 8 and recipe.act_bits == 8 else f"w{bits}a{recipe.act_bits}"


def parts(recipe: Any, default: Any) -> list[str]:
    """The readable parts, in the module doc's order, for settings that differ from ``default``."""
    r, out = recipe, []
    static = r.method == "static"
    if _reads(r, "per_channel") and not r.per_channel and not r.block_size:
        out.append("pt")
    if _reads(r, "power_of_two") and r.power_of_two:
        out.append("p2")
    if _reads(r, "weight_symmetric") and not r.weight_symmetric:
        out.append("wasym")
    if static and r.act_symmetric:
        out.append("sym")
    if static and r.act_signed != "auto":
        out.append("s8" if r.act_signed == "signed" else "u8")
    if static and r.calib_method != default.calib_method:
        keep_p = r.calib_method in ("percentile", "search") and r.percentile != default.percentile
        out.append(r.calib_method + (_num(r.percentile) if keep_p else ""))
    if _reads(r, "reduce_range") and r.reduce_range != "auto":
        out.append("rr" + r.reduce_range)
    if static and r.placement != "auto":
        out.append("mm" if r.placement == "matmul-inputs" else "all")
    if static and r.act16_below_db != default.act16_below_db:
        value = r.act16_below_db
        out.append("a16off" if value == "off" else f"a16lt{_num(value)}")
    if static and r.target_sqnr_db is not None:
        out.append(f"sqnr{_num(r.target_sqnr_db)}")
    passes = [
        _PASS_SHORT.get(a, a) for a in r.algorithms if a != "mixed_precision" or r.target_sqnr_db is None
    ]
    if passes:
        out.append("-".join(passes))
    out += ["hoist"] * bool(r.hoist_gru and _reads(r, "hoist_gru")) + ["fix"] * bool(r.fix)
    out += ["sf"] * bool(r.skip_first) + ["sl"] * bool(r.skip_last)
    if r.target != default.target:
        out.append(r.target)
    return out


def hashed(recipe: Any, default: Any) -> dict[str, Any]:
    """The other model-changing settings that differ from ``default`` (the ``_h`` part's input)."""
    from edgequant.recipe.schema import to_dict

    mine, theirs = to_dict(recipe), to_dict(default)
    data = recipe.method in ("static", "weight-only")
    out = {
        k: v for k, v in mine.items()
        if k not in _NOT_HASHED and v != theirs[k] and (data or k not in _DATA_ONLY)
    }  # fmt: skip
    explicit = recipe.preprocess.explicit()
    if data and explicit:
        out["preprocess"] = {k: mine["preprocess"][k] for k in explicit}
    return out


def derive(recipe: Any) -> str:
    """The default tag of ``recipe`` (see the module doc); ``recipe.tag`` when set."""
    if recipe.tag:
        return str(recipe.tag)
    from edgequant.recipe.schema import Recipe

    default = Recipe()
    head = base(recipe)
    rest = parts(recipe, default)
    other = hashed(recipe, default)
    if other:
        rest.append("h" + _digest(other))
    tag = "_".join([head, *rest])
    if len(tag) > 64:
        tag = f"{head}_h{_digest({'parts': rest})}"
    return tag


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:6]
