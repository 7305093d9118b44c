"""The ``before_ranges`` passes in order, a weight-reshaping pass judged after the rounding pass it feeds.

A reshaping pass (``RESHAPING``: ``cle``, ``cle_bounds``, ``smoothquant``) rescales weights so that
round-to-nearest loses less.  A later rounding pass (``ROUNDING``: ``adaround``, ``brecq``, ``gptq``)
then learns the rounding of the rescaled weights, and what the rescaling is worth depends on it: on
the built-in example at 4 bits CLE lifted the round-to-nearest SQNR (8.23 -> 8.89 dB, kept), yet
AdaRound after it ended at 17.65 dB against 19.06 dB on the model without CLE.  So such a pass is
judged after the rounding pass, not on round-to-nearest weights:

1. the reshaping passes in a row (the *group*) run as usual, their rows holding the SQNR on
   round-to-nearest weights, with no verdict yet (``record``'s ``defer``);
2. the passes after the group up to and including the first rounding pass (the *rest*) run on the
   reshaped model, and again on the model as it was before the group: the extra run's seconds go into
   each group row (``judged_after_seconds``, included in its ``seconds``);
3. the better end state (the judge's held-out SQNR, ``judge.judged_sqnr``, of the rest's result; a tie
   keeps the group) is kept, with the rows, notes and report sections of its run of the rest; each
   changed group row says ``judged after adaround: 17.70 dB with cle vs 19.06 without: reverted``, and
   a reverted group is a note on screen (a warning when the user named the pass), as other reverts are.
   ``recipe.keep_worse_passes`` keeps the group with a note.

The group is kept or reverted as a whole (two runs of the rest, not one per subset).  Without held-out
samples (no SQNR) the group is kept unjudged and the rest runs once.  The cost is one more run of the
rest, AdaRound's time again; the rows say how much.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import onnx

from edgequant.algorithms.base import Context, run_pass
from edgequant.algorithms.judge import judged_sqnr
from edgequant.plan import QuantPlan

RESHAPING: tuple[str, ...] = ("cle", "cle_bounds", "smoothquant")  # rescale weights, exact in float
ROUNDING: tuple[str, ...] = ("adaround", "brecq", "gptq")  # choose each weight's rounding from data


def run_before(
    names: list[str], model: onnx.ModelProto, plan: QuantPlan, ctx: Context
) -> tuple[onnx.ModelProto, QuantPlan]:
    """Run the ``before_ranges`` passes ``names`` in order (``base.run_pass``), each reshaping group that a
    rounding pass follows judged after it (module docstring); their rows go to ``ctx.rows``."""
    i = 0
    while i < len(names):
        group, rest = segment(names, i)
        if not rest:
            model, plan = run_pass(names[i], model, plan, ctx)
            i += 1
            continue
        model, plan = _judged_after(group, rest, model, plan, ctx)
        i += len(group) + len(rest)
    return model, plan


def segment(names: list[str], i: int) -> tuple[list[str], list[str]]:
    """The reshaping passes from ``names[i]`` on, and the passes after them up to the first rounding pass
    (empty when ``names[i]`` does not reshape or no rounding pass follows)."""
    j = i
    while j < len(names) and names[j] in RESHAPING:
        j += 1
    k = next((k for k in range(j, len(names)) if names[k] in ROUNDING), None)
    if j == i or k is None:
        return names[i:j], []
    return names[i:j], names[j : k + 1]


@dataclass
class _Branch:
    """One run of the rest: its end state, SQNR, seconds and what it added to the context."""

    model: onnx.ModelProto
    plan: QuantPlan
    sqnr: float | None
    seconds: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)


def _run_rest(rest: list[str], model: onnx.ModelProto, plan: QuantPlan, ctx: Context) -> _Branch:
    """Run ``rest`` on ``model`` + a copy of ``plan``, taking what it adds to ``ctx`` back out."""
    rows, notes, warnings, sections = len(ctx.rows), len(ctx.notes), len(ctx.warnings), dict(ctx.sections)
    t0 = time.perf_counter()
    for name in rest:
        model, plan = run_pass(name, model, plan, ctx)
    branch = _Branch(model, plan, judged_sqnr(model, plan, ctx), time.perf_counter() - t0)
    branch.rows, ctx.rows[rows:] = ctx.rows[rows:], []
    branch.notes, ctx.notes[notes:] = ctx.notes[notes:], []
    branch.warnings, ctx.warnings[warnings:] = ctx.warnings[warnings:], []
    branch.sections, ctx.sections = ctx.sections, sections
    return branch


def _judged_after(
    group: list[str], rest: list[str], model: onnx.ModelProto, plan: QuantPlan, ctx: Context
) -> tuple[onnx.ModelProto, QuantPlan]:
    """Run ``group`` then ``rest``; keep the group only if the rest ends at least as well after it as
    without it (module docstring)."""
    start, start_plan, first = model, QuantPlan.from_dict(plan.to_dict()), len(ctx.rows)
    rounder = rest[-1]
    for name in group:
        model, plan = run_pass(name, model, plan, ctx, defer=rounder)
    rows = [r for r in ctx.rows[first:] if r["changed"]]
    with_it = _run_rest(rest, model, plan, ctx)
    if not rows or with_it.sqnr is None:  # nothing reshaped, or nothing to judge by: run once
        return _keep(with_it, ctx)
    without = _run_rest(rest, start, start_plan, ctx)
    if without.sqnr is None:
        return _keep(with_it, ctx)
    better = with_it.sqnr >= without.sqnr  # a tie keeps the group
    keep = better or ctx.recipe.keep_worse_passes
    names = ", ".join(r["pass"] for r in rows)
    verdict = "kept" if better else "kept (keep_worse_passes)" if keep else "reverted"
    said = (
        f"judged after {rounder}: {with_it.sqnr:.2f} dB with {names} vs {without.sqnr:.2f} without: {verdict}"
    )
    for row in rows:
        row["judged_after"] = said
        row["judged_after_seconds"] = round(without.seconds, 3)
        row["seconds"] = round(row["seconds"] + without.seconds, 3)
        if verdict != "kept":
            row["reverted" if not keep else "kept_worse"] = said
    if verdict != "kept":
        msg = f"{names}: {said} on {ctx.held_out_on}" + (
            "; the model is as before it (--keep-worse-passes keeps it)." if not keep else "."
        )
        named = any(r["pass"] in ctx.requested for r in rows)
        (ctx.warnings if named and not keep else ctx.notes).append(msg)
    return _keep(with_it if keep else without, ctx)


def _keep(branch: _Branch, ctx: Context) -> tuple[onnx.ModelProto, QuantPlan]:
    """Put ``branch``'s rows, notes and sections into ``ctx``; its end state is the judge's last one."""
    ctx.rows += branch.rows
    ctx.notes += branch.notes
    ctx.warnings += branch.warnings
    ctx.sections.update(branch.sections)
    ctx.judged = (branch.model, branch.plan, branch.sqnr)
    return branch.model, branch.plan
