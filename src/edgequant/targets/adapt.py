"""Recipe + target profile -> the recipe the planner runs, with a note for every change.

The user's explicit settings win only where the profile allows them.  A setting left at the
recipe's default is replaced by the profile's choice (and the plan says so); a setting the user
changed that the profile forbids is refused, naming the rule and its source.  Examples: weights
``--per-tensor`` on a per-channel-only target, ``--act-bits 16`` on an 8-bit-only target.
"""

from __future__ import annotations

from typing import Any

from edgequant.errors import RecipeError
from edgequant.recipe import Recipe
from edgequant.targets import DEFAULT_TARGET, Profile, get


def _conflict(p: Profile, setting: str, allowed: str, source: str, default: bool = False) -> RecipeError:
    """``setting`` is ``"--flag value"``; ``default``: the value is the recipe's default, which the user
    may never have typed, so the error names it as the default and the fix is to pass an allowed value."""
    flag, _, value = setting.partition(" ")
    if default:
        return RecipeError(
            f"the default {flag.lstrip('-').replace('-', ' ')} {value} conflicts with target '{p.name}': its rule "
            f"allows {allowed} (source: {p.cite(source)}).",
            f"pass {flag} with an allowed value, or choose another target ('edgequant targets {p.name}' prints "
            "its rules).",
        )
    return RecipeError(
        f"{setting} conflicts with target '{p.name}': its rule allows {allowed} (source: {p.cite(source)}).",
        f"drop {flag} or choose another target ('edgequant targets {p.name}' prints its rules).",
    )


def adapt(recipe: Recipe) -> tuple[Recipe, list[str]]:
    """The recipe with the target's rules applied, and one note per setting the target changed.

    RecipeError when an explicit setting conflicts with a rule; settings at their defaults adapt.
    """
    p = get(recipe.target)
    if p.name == DEFAULT_TARGET:
        return recipe, []
    d = Recipe()
    w, a = p.weights, p.activations
    changes: dict[str, Any] = {}
    notes: list[str] = []
    if recipe.method not in p.methods:
        raise _conflict(
            p,
            f"--method {recipe.method}",
            "method " + ", ".join(p.methods),
            w.source,
            recipe.method == d.method,
        )
    if recipe.weight_int_bits not in w.bits:
        raise _conflict(
            p,
            f"--weight-bits {recipe.weight_bits}",
            f"{'/'.join(map(str, w.bits))}-bit weights",
            w.source,
            recipe.weight_bits == d.weight_bits,
        )
    if recipe.weight_bits == "ternary" and w.narrow_range is False:
        raise _conflict(
            p, "--weight-bits ternary", "full-range weights (no narrow {-1, 0, +1} grid)", w.source
        )
    if recipe.act_bits not in a.bits:
        raise _conflict(
            p,
            f"--act-bits {recipe.act_bits}",
            f"{'/'.join(map(str, a.bits))}-bit activations",
            a.source,
            recipe.act_bits == d.act_bits,
        )
    if recipe.block_size is not None and "per_block" not in w.granularity:
        raise _conflict(
            p, f"--block-size {recipe.block_size}", " or ".join(w.granularity) + " weights", w.source
        )
    if recipe.per_channel and "per_channel" not in w.granularity:
        changes["per_channel"] = False
        notes.append(f"target '{p.name}': weights per-tensor (its rule; source: {p.cite(w.source)}).")
    elif not recipe.per_channel and "per_tensor" not in w.granularity:
        raise _conflict(p, "--per-tensor (weights)", "per-channel weights only", w.source)
    if recipe.weight_symmetric not in w.symmetric:
        raise _conflict(p, "asymmetric weights", "symmetric weights only", w.source)
    if recipe.act_symmetric not in a.symmetric:
        if recipe.act_symmetric == d.act_symmetric:
            changes["act_symmetric"] = a.symmetric[0]
            kind = "symmetric (zero point 0)" if a.symmetric[0] else "asymmetric"
            notes.append(f"target '{p.name}': activations {kind} (its rule; source: {p.cite(a.source)}).")
        else:
            raise _conflict(p, "--symmetric (activations)", "asymmetric activations only", a.source)
    signed = {"signed": (True,), "unsigned": (False,), "auto": a.signed}[recipe.act_signed]
    if not set(signed) & set(a.signed):
        raise _conflict(
            p, f"--act-signed {recipe.act_signed}", "signed" if a.signed[0] else "unsigned", a.source
        )
    if recipe.act_signed == "auto" and len(a.signed) == 1:
        changes["act_signed"] = "signed" if a.signed[0] else "unsigned"
        notes.append(
            f"target '{p.name}': activations {changes['act_signed']} (its rule; source: {p.cite(a.source)})."
        )
    for role, rule, bits in (("weight", w, recipe.weight_int_bits), ("activation", a, recipe.act_bits)):
        kind = rule.scale.get(bits, "float")
        if kind == "power_of_two":
            notes.append(
                f"target '{p.name}': {bits}-bit {role} scales are powers of two, each chosen to minimise the "
                f"squared error (source: {p.cite(rule.source)})."
            )
        elif kind == "multiplier_shift":
            notes.append(
                f"target '{p.name}': {bits}-bit {role} scales are float in the QDQ model; the device "
                f"requantizes with a {p.multiplier_bits}-bit multiplier and a shift (source: {p.cite(rule.source)})."
            )
    if recipe.reduce_range == "auto":
        changes["reduce_range"] = "off"  # the device runs full-range weights; 7 bits is an x86 ORT workaround
        # (the pipeline warns when this CPU's ORT kernels can saturate them)
    return (recipe.replace(**changes) if changes else recipe), notes
