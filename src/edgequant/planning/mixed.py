"""Mixed 4/8-bit weights under static low-bit quantization (``recipe.weight_8bit`` with method static).

W4A8 (or 2-bit, binary, ternary weights with 8-bit activations) plans every Conv/ConvTranspose/Gemm/MatMul
weight at the low bit width.  ``weight_8bit`` names layers whose weights are planned at 8 bits instead,
per channel as the recipe asks, so a model is "mixed 4/8", not pure W4A8.  Entries:

* ``first`` / ``last``: the first / last compute node in graph order (Conv, ConvTranspose, MatMul, Gemm;
  the nodes ``skip_first`` / ``skip_last`` keep float).  The PTQ papers' W4A8 results keep these at
  8 bits: AdaRound (Nagel et al. 2020) and BRECQ (Li et al. 2021), see README, issue 17.
* a node name, an op type, or ``re:PATTERN`` (a whole node name), as ``exclude``;
* ``auto`` alone: chosen by measured output-SQNR gain (``algorithms.weight_8bit``, before the passes).

An 8-bit weight gets the spec a plain static int8 plan would give it (same granularity and axis;
reduce_range on a CPU without VNNI; the target's 8-bit scale rule; the recipe's symmetry), and a note
naming the entry that chose it.  The plan gets one note: how many low-bit weights went to 8 bits, their
share of the planned weight values, their names.  ``algorithms.adaround`` and ``brecq`` read each entry's
own spec, so they round such a layer on its 8-bit grid.  With only 8-bit weights and 8-bit activations
that node runs as an integer kernel in ONNX Runtime (QLinearConv / QGemm), its low-bit neighbours after
DequantizeLinear in float (``specs.float_kernel_note``).

Errors: RecipeError when an entry selects no node with a low-bit weight in this plan (the one line names
the entry, what it matched, and why that node has no low-bit weight).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import onnx

from edgequant import targets
from edgequant.errors import RecipeError
from edgequant.plan import QuantPlan
from edgequant.planning.graph import COMPUTE_OPS
from edgequant.planning.specs import scale_rule
from edgequant.recipe import Recipe
from edgequant.recipe.exclude import check_patterns, entry_matches
from edgequant.runtime.cpu import CpuFeatures
from edgequant.schemes.spec import QuantSpec

KEYWORDS = ("first", "last")


def keyword_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """``{"first": name, "last": name}`` of the first / last compute node in graph order ({} when none)."""
    compute = [n.name for n in model.graph.node if n.op_type in COMPUTE_OPS]
    return {"first": compute[0], "last": compute[-1]} if compute else {}


def named(model: onnx.ModelProto, entries: tuple[str, ...]) -> tuple[str, ...]:
    """``entries`` with ``first`` / ``last`` replaced by those nodes' names (weight-only's matcher)."""
    keys = keyword_nodes(model)
    return tuple(keys.get(e, e) if e in KEYWORDS else e for e in entries)


def eight_bit_spec(spec: QuantSpec, recipe: Recipe, target: targets.Profile, cpu: CpuFeatures) -> QuantSpec:
    """``spec`` (a low-bit weight's) at 8 bits, as ``specs.weight_spec`` plans a static int8 weight."""
    narrow = recipe.weight_symmetric if target.weights.narrow_range is None else target.weights.narrow_range
    reduce = recipe.reduce_range == "on" or (recipe.reduce_range == "auto" and cpu.needs_reduce_range)
    return replace(
        spec,
        bits=8,
        narrow_range=narrow,
        reduce_range=reduce,
        scale_rule=scale_rule(recipe, target.weights, 8),
        ternary=False,
        centred=False,
    )


def to_eight(recipe: Recipe, cpu: CpuFeatures) -> Callable[[QuantSpec], QuantSpec]:
    """``eight_bit_spec`` for this recipe's target and this CPU (``algorithms.weight_8bit``'s auto choice)."""
    target = targets.get(recipe.target)
    return lambda spec: eight_bit_spec(spec, recipe, target, cpu)


def apply(
    model: onnx.ModelProto, plan: QuantPlan, recipe: Recipe, target: targets.Profile, cpu: CpuFeatures
) -> None:
    """Plan the weights of the nodes ``recipe.weight_8bit`` selects at 8 bits, in place (module doc)."""
    entries = tuple(recipe.weight_8bit)
    check_patterns([e for e in entries if e not in KEYWORDS])
    keys = keyword_nodes(model)
    decided = {d.node: d for d in plan.nodes if d.graph == "main"}
    low: dict[str, tuple[str, str]] = {}  # node -> (op type, weight) for every low-bit planned weight
    for n in model.graph.node:
        if n.op_type in COMPUTE_OPS and len(n.input) > 1 and n.input[1] in plan.tensors:
            e = plan.tensors[n.input[1]]
            if e.role == "weight" and e.spec.bits < 8:
                low[n.name] = (n.op_type, n.input[1])
    chosen: dict[str, str] = {}  # weight -> why
    for entry in entries:
        if entry in KEYWORDS:
            node = keys.get(entry, "")
            if node not in low:
                d = decided.get(node)
                why = (
                    d.reason
                    if d is not None and not d.quantized
                    else "its weight is not planned below 8 bits"
                )
                raise RecipeError(
                    f"weight_8bit '{entry}' names the {entry} compute node '{node}', which has no low-bit weight "
                    f"to keep 8-bit: {why}",
                    f"drop '{entry}' from weight_8bit (or skip_{entry}, which keeps that node float).",
                )
            hits = [node]
            why = f"the {entry} compute layer (weight_8bit '{entry}')"
        else:
            hits = [name for name, (op, _) in low.items() if entry_matches(entry, name, op)]
            if not hits:
                raise RecipeError(
                    f"weight_8bit entry '{entry}' selects no Conv/ConvTranspose/Gemm/MatMul with a weight planned "
                    f"below 8 bits ({len(low)} such nodes in this plan).",
                    "name such nodes (see 'edgequant inspect MODEL'; regexes are written 're:PATTERN'), or use "
                    "'first' / 'last'.",
                )
            why = f"selected by weight_8bit '{entry}'"
        for name in hits:
            chosen.setdefault(low[name][1], f"{why}: node '{name}'")
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    bits = {plan.tensors[w].spec.bits for _, w in low.values()}
    for w, why in chosen.items():
        e = plan.tensors[w]
        e.spec, e.scale, e.zero_point = eight_bit_spec(e.spec, recipe, target, cpu), None, None
        e.note = f"kept 8-bit, {why}; the other weights are {recipe.weight_bits}-bit (mixed {recipe.weight_bits}/8)."
    weights = {w for _, w in low.values()}
    total = sum(sizes.get(e.name, 0) for e in plan.tensors.values() if e.role == "weight")
    share = sum(sizes.get(w, 0) for w in chosen) / max(total, 1)
    plan.notes.append(
        f"mixed {'/'.join(map(str, sorted(bits)))}/8 weights (weight_8bit): {len(chosen)} of {len(weights)} low-bit "
        f"weights planned 8-bit ({share:.2%} of the planned weight values): "
        + "; ".join(why for why in chosen.values())
        + "."
    )


__all__ = ["KEYWORDS", "apply", "eight_bit_spec", "keyword_nodes", "named", "to_eight"]
