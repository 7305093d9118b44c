"""A pass's report row, and the guard that reverts a pass which lowered the held-out SQNR.

``record`` appends the row of one pass (what it changed and skipped, its time, the SQNR before and
after on the held-out samples: ``base`` module docstring) to ``ctx.rows`` and decides the guard: a
pass whose SQNR fell by more than ``TOLERANCE_DB`` is reverted (a note on screen; a warning when the
user named the pass), or kept with a note under ``recipe.keep_worse_passes``.  A reshaping pass
judged after a later rounding pass (``judge_after``) is recorded with ``defer`` set: its row holds the
SQNR on round-to-nearest weights, and the decision is taken after that rounding pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgequant.algorithms.base import Context, PassOutcome, StatRequest

TOLERANCE_DB = 0.05  # a pass that lowers the held-out SQNR by more than this is reverted


def record(
    name: str,
    request: StatRequest,
    outcome: PassOutcome,
    seconds: float,
    sqnr: tuple[float | None, float | None],
    what: str,
    ctx: Context,
    defer: str = "",
) -> bool:
    """Append a pass's report row (and its report sections) to ``ctx``; True when the pass is to be
    reverted (its held-out SQNR fell by more than ``TOLERANCE_DB``).  With ``defer`` (the later rounding
    pass that judges this one) the row is written and nothing is reverted here."""
    row: dict[str, Any] = {
        "pass": name,
        "changed": outcome.changed,
        "skipped": outcome.skipped,
        "seconds": round(seconds, 3),
        "samples": request.samples,
        "sqnr_measured_on": f"{ctx.held_out_on}, {what}",
        "sqnr_before_db": sqnr[0],
        "sqnr_after_db": sqnr[1],
        **outcome.details,
    }
    if not outcome.changed:
        reason = outcome.nothing_to_do or "no layer changed"
        row["nothing_to_do"] = reason
        ctx.notes.append(f"{name}: nothing to do ({reason}).")  # named or not: the screen says it (#17)
    before, after = sqnr
    worse = outcome.changed and before is not None and after is not None and after < before - TOLERANCE_DB
    if defer and outcome.changed:
        row["judged_after"] = f"{defer} (round-to-nearest SQNRs above; the decision follows {defer})"
        worse = False
    revert = worse and not ctx.recipe.keep_worse_passes
    if worse:
        fell = f"SQNR {before} -> {after} dB on {ctx.held_out_on}"
        row["reverted" if revert else "kept_worse"] = ("reverted: " if revert else "kept: ") + fell
        if revert:
            msg = (
                f"{name}: reverted: SQNR {before} -> {after} dB (lower by more than {TOLERANCE_DB} dB on "
                f"{ctx.held_out_on}); the model is as before the pass (--keep-worse-passes keeps it)."
            )
            (ctx.warnings if name in ctx.requested else ctx.notes).append(msg)
        else:
            ctx.notes.append(
                f"{name}: kept (keep_worse_passes) although its SQNR fell: {before} -> {after} dB."
            )
        for section in outcome.report.values():
            if isinstance(section, dict):
                section["reverted" if revert else "kept_worse"] = row["reverted" if revert else "kept_worse"]
    ctx.rows.append(row)
    ctx.sections.update(outcome.report)
    return bool(revert)
