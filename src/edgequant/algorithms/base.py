"""The pass contract and its registry: a pass asks for statistics, then applies them.

A pass (``Algorithm``) is one file in ``algorithms/``, registered by name with :func:`register`.
The pipeline runs each name of ``recipe.algorithms`` through :func:`run_pass`:

1. ``stat_requests(model, plan)`` says what the pass needs to read: a number of calibration samples
   (0 for a data-free pass such as cross-layer equalization) and why;
2. the runner hands it those samples as a re-iterable :class:`Stats` (each iteration streams the
   batches again, so a pass that reads them once per layer keeps memory flat);
3. ``apply(model, plan, stats)`` returns the new float model and plan with a :class:`PassOutcome`:
   what it changed, what it skipped and why.

The runner times the pass and measures the output SQNR (dB) against the user's float model before
and after it on held-out samples, of the QDQ model each state leads to (``judge``: min-max ranges
from a few calibration samples; a weight-only plan: its weights quantized; a model with carried state:
consecutive frames streamed, each model on its own state).  The held-out samples
(``context``) are the ``HELD_OUT`` after the calibration ones in the calibration part of the data:
no pass and no calibration reads them, and they are never the samples the pipeline holds back for
its final check (so the check stays an unbiased measure of what the passes chose).  When the data
has fewer than ``HELD_OUT // 2`` such samples, the first ``HELD_OUT`` calibration samples stand in,
and every row says "in-sample".

The guard.  A pass whose result lowers that SQNR by more than ``TOLERANCE_DB`` is reverted: the
model and plan (or the QDQ state) return to what they were before it, and its row says
"reverted: SQNR a -> b dB" beside both numbers (a note on screen; a warning when the user named the
pass).  ``recipe.keep_worse_passes`` (``--keep-worse-passes``) keeps such a pass, with a note.  A
pass whose SQNR cannot be measured (no held-out samples) is kept unjudged.  A pass's ``apply`` must
therefore leave its inputs unchanged (each returns a changed copy); the runner keeps a copy of the
plan, which ``block_clip``/``gptq`` edit in place.  A weight-reshaping pass (``cle``) that a rounding
pass (``adaround``) follows is judged after that pass instead (``judge_after.run_before`` runs the
``before_ranges`` passes; ``record`` writes the rows and applies the guard).

A pass has a ``phase``.  ``"before_ranges"`` (the default: ``cle``, ``adaround``) refines the float
model and plan before activation ranges are calibrated, as above.  ``"after_ranges"``
(``bias_correction``, ``mixed_precision``) works on the calibrated QDQ model: the runner
(:func:`run_after`) hands it a :class:`Quantized` (the float model the QDQ model is exported from,
the calibrated plan, the QDQ model and its exported plan) through ``stat_requests(state)`` and
``apply_quantized(state, stats)``, and measures the SQNR of the QDQ model itself (weights and
activations quantized) before and after.  A pass may also hand report sections to the pipeline
(``PassOutcome.report``, e.g. ``sensitivity``).

A pass that finds nothing to do is a note (``<pass>: nothing to do (<reason>).``), not an error, named
by the user or not; its row says "nothing to do" with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import onnx

from edgequant.algorithms.record import record
from edgequant.data.base import Batch
from edgequant.data.conform import feed_samples
from edgequant.errors import DataError, RecipeError
from edgequant.plan import QuantPlan
from edgequant.recipe.schema import ALGORITHMS, Recipe
from edgequant.runtime import OrtRuntime
from edgequant.schemes.qparams import sqnr_db


@dataclass(frozen=True)
class StatRequest:
    """What a pass reads: ``samples`` calibration samples (0: none, the pass is data-free)."""

    samples: int = 0
    why: str = ""


@dataclass
class PassOutcome:
    """What a pass did: ``changed`` and ``skipped`` are short human-readable lines (node: what/why)."""

    changed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    nothing_to_do: str = ""  # the reason, when the pass changed nothing
    details: dict[str, Any] = field(default_factory=dict)  # extra fields of the pass's report row
    report: dict[str, Any] = field(default_factory=dict)  # report sections by name (e.g. "sensitivity")


@dataclass
class Stats:
    """The calibration samples a pass asked for; iterate it as often as needed (it re-streams)."""

    open: Callable[[], Iterable[Batch]]
    samples: int
    runtime: OrtRuntime
    recipe: Recipe
    synthetic: bool = False  # the data is synthetic (no --calib-data): passes that learn from it refuse

    def __iter__(self) -> Iterator[Batch]:
        seen = 0
        for batch in self.open():
            if seen >= self.samples:
                return
            n = _rows(batch)
            take = min(n, self.samples - seen)
            yield batch if take == n else {k: v[:take] for k, v in batch.items()}
            seen += take

    def require_real(self, pass_name: str, why: str) -> None:
        """Raise DataError (``why``, then the fix naming ``pass_name``) unless real samples were given."""
        if self.synthetic or self.samples < 1:
            raise DataError(
                why, f"pass --calib-data with real samples, or drop {pass_name} from the algorithms."
            )


Phase = Literal["before_ranges", "after_ranges"]


class Algorithm(Protocol):
    """A ``before_ranges`` pass: refines the float model and plan before calibration."""

    name: ClassVar[str]

    def stat_requests(self, model: onnx.ModelProto, plan: QuantPlan) -> StatRequest: ...

    def apply(
        self, model: onnx.ModelProto, plan: QuantPlan, stats: Stats
    ) -> tuple[onnx.ModelProto, QuantPlan, PassOutcome]: ...


@dataclass
class Quantized:
    """What an ``after_ranges`` pass works on and returns."""

    float_model: onnx.ModelProto  # the float model ``model`` is exported from (a pass may change biases)
    calibrated: QuantPlan  # the plan with activation ranges, before export
    model: onnx.ModelProto  # the QDQ model
    plan: QuantPlan  # its exported plan
    reference: onnx.ModelProto  # the float model as calibrated: what the passes' SQNRs are against


class QuantizedPass(Protocol):
    """An ``after_ranges`` pass: refines the calibrated QDQ model (``phase = "after_ranges"``)."""

    name: ClassVar[str]
    phase: ClassVar[Phase]

    def stat_requests(self, state: Quantized) -> StatRequest: ...

    def apply_quantized(self, state: Quantized, stats: Stats) -> tuple[Quantized, PassOutcome]: ...


_REGISTRY: dict[str, Callable[[Recipe], Any]] = {}


def register(name: str) -> Callable[[Any], Any]:
    """Class decorator: make the pass available as ``name`` in recipes and ``--algorithm``."""

    def deco(cls: Any) -> Any:
        if name not in ALGORITHMS:
            raise RecipeError(f"pass '{name}' is not listed in recipe.ALGORITHMS.", "add it there.")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return deco


def known() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def phase(name: str) -> Phase:
    """When the registered pass ``name`` runs: before or after activation ranges are calibrated."""
    create_check(name)
    value: Phase = getattr(_REGISTRY[name], "phase", "before_ranges")
    return value


def steps(recipe: Recipe, when: Phase) -> list[str]:
    """The passes of ``recipe.algorithms`` that run in phase ``when``, in order."""
    return [name for name in recipe.algorithms if phase(name) == when]


def create_check(name: str) -> None:
    """RecipeError listing the known passes when ``name`` is not one of them."""
    if name not in _REGISTRY:
        raise RecipeError(
            f"unknown algorithm '{name}'; known: {', '.join(known())}.", "use one of the known names."
        )


def create(name: str, recipe: Recipe) -> Algorithm:
    """The registered ``before_ranges`` pass ``name`` configured from ``recipe``; RecipeError listing
    the known ones."""
    create_check(name)
    algo: Algorithm = _REGISTRY[name](recipe)
    return algo


@dataclass
class Context:
    """What the runner needs besides the model and plan: data, runtime, held-out samples, rows."""

    recipe: Recipe
    runtime: OrtRuntime
    data: Callable[[], Iterable[Batch]]  # opens the calibration source afresh
    held_out: list[Batch]
    synthetic: bool = False
    requested: tuple[str, ...] = ()  # passes the user named explicitly (not through a preset)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # a pass the user named was reverted
    held_out_on: str = ""  # which samples ``held_out`` are, for the rows
    # the last state judge.judged_sqnr scored
    judged: tuple[onnx.ModelProto, QuantPlan, float | None] | None = None
    reference: list[np.ndarray] | None = None  # the float model's first output on ``held_out``
    pairs: list[tuple[str, str]] = field(default_factory=list)  # carried state (input, output); judge
    carry: list[bool] = field(default_factory=list)  # per held-out batch: fed the previous one's state
    sections: dict[str, Any] = field(default_factory=dict)  # report sections the passes handed over
    trips: list[str] | None = None  # activations the pipeline leaves float as ORT round trips (judge)


def run_pass(
    name: str, model: onnx.ModelProto, plan: QuantPlan, ctx: Context, defer: str = ""
) -> tuple[onnx.ModelProto, QuantPlan]:
    """Run one ``before_ranges`` pass: requests, statistics, apply; append its report row to ``ctx.rows``.
    ``defer``: the later rounding pass that judges this one (``judge_after``); the guard waits for it."""
    algo = create(name, ctx.recipe)
    t0 = time.perf_counter()
    request = algo.stat_requests(model, plan)
    stats = Stats(ctx.data, request.samples, ctx.runtime, ctx.recipe, ctx.synthetic)
    from edgequant.algorithms.judge import judged_on, judged_sqnr, set_reference

    if ctx.reference is None and ctx.held_out:
        set_reference(model, ctx)  # the float model as the passes found it (streamed: judge.py)

    before = judged_sqnr(model, plan, ctx)
    saved = QuantPlan.from_dict(plan.to_dict())  # a pass may fix weight scales in the plan in place
    new_model, new_plan, outcome = algo.apply(model, plan, stats)
    seconds = time.perf_counter() - t0
    ctx.judged = None  # a pass may return its inputs changed in place: judge them afresh
    after = judged_sqnr(new_model, new_plan, ctx) if outcome.changed else before
    if record(name, request, outcome, seconds, (before, after), judged_on(plan), ctx, defer):
        ctx.judged = (model, saved, before)
        return model, saved  # reverted: the model and plan as the pass found them
    return new_model, new_plan


def run_after(name: str, state: Quantized, ctx: Context) -> Quantized:
    """Run one ``after_ranges`` pass on the calibrated QDQ model; append its report row to ``ctx.rows``.
    The row's SQNRs are the QDQ model's own (weights and activations quantized) on the held-out samples."""
    create_check(name)
    algo: QuantizedPass = _REGISTRY[name](ctx.recipe)
    t0 = time.perf_counter()
    request = algo.stat_requests(state)
    stats = Stats(ctx.data, request.samples, ctx.runtime, ctx.recipe, ctx.synthetic)
    if ctx.reference is None and ctx.held_out:
        from edgequant.algorithms.judge import set_reference

        set_reference(state.reference, ctx)
    before = quantized_sqnr(state.model, ctx)
    new, outcome = algo.apply_quantized(state, stats)
    seconds = time.perf_counter() - t0
    after = quantized_sqnr(new.model, ctx) if outcome.changed else before
    what = "the QDQ model (weights and activations quantized)"
    return state if record(name, request, outcome, seconds, (before, after), what, ctx) else new


HELD_OUT = 32  # samples after the calibration ones that judge each pass


def context(
    recipe: Recipe,
    runtime: OrtRuntime,
    open_source: Callable[[Recipe], Iterable[Batch]],
    synthetic: bool,
    requested: tuple[str, ...],
) -> Context:
    """What the passes read: the calibration source (``open_source(recipe)`` streams it, without the
    samples the pipeline holds back for its check), and the held-out samples that judge them: the
    ``HELD_OUT`` after the calibration ones in that source (same sampling order), or, when it has
    fewer than ``HELD_OUT // 2`` of them, its first ``HELD_OUT`` (in-sample, and the rows say so)."""
    if not recipe.algorithms and tuple(recipe.weight_8bit) != ("auto",):  # weight_8bit auto judges too
        return Context(recipe, runtime, list, [])
    extra = recipe.replace(calib_samples=recipe.calib_samples + HELD_OUT)
    held = held_out(open_source(extra), recipe.calib_samples)
    count = sum(_rows(b) for b in held)
    on = f"{count} held-out samples (after the calibration ones; not the check's)"
    if count < HELD_OUT // 2:
        held = first_samples(open_source(recipe), HELD_OUT)
        on = (
            f"{sum(_rows(b) for b in held)} calibration samples (in-sample: the data has {count} beyond the "
            "calibration ones and those the check holds back)"
        )
    masks = sorted({k for b in held for k, v in b.items() if "mask" in k.lower() and np.ndim(v) == 2})
    on += f"; positions where '{masks[0]}' is 0 (padding) left out" if masks else ""
    ctx = Context(
        recipe, runtime, lambda: open_source(recipe), held, synthetic=synthetic, requested=requested
    )
    ctx.held_out_on = on
    return ctx


def held_out(batches: Iterable[Batch], skip: int) -> list[Batch]:
    """The batches after the first ``skip`` samples (split inside a batch where needed)."""
    out: list[Batch] = []
    seen = 0
    for batch in batches:
        n = _rows(batch)
        if seen + n > skip:
            start = max(skip - seen, 0)
            out.append(batch if start == 0 else {k: v[start:] for k, v in batch.items()})
        seen += n
    return out


def first_samples(batches: Iterable[Batch], n: int) -> list[Batch]:
    """The batches holding the first ``n`` samples (the last one cut to fit)."""
    out: list[Batch] = []
    for batch in batches:
        left = n - sum(_rows(b) for b in out)
        if left <= 0:
            break
        out.append(batch if _rows(batch) <= left else {k: v[:left] for k, v in batch.items()})
    return out


def _rows(batch: Batch) -> int:
    """Samples in one batch (``data.conform.feed_samples``): a whole feed dict (inputs that disagree on
    axis 0, e.g. ``x [1, 16]`` with a state ``[2, 1, 8]``) is one, and is never split."""
    return feed_samples(batch)


def sample_count(batches: Iterable[Batch]) -> int:
    """Samples in ``batches``: each batch's common axis-0 length, 1 for a whole feed dict (as the data
    layer, the check and evaluate count them)."""
    return sum(_rows(b) for b in batches)


def _outputs(model: onnx.ModelProto, ctx: Context) -> list[np.ndarray]:
    """``model``'s first output per held-out batch; streamed where ``ctx.carry`` says (judge.py)."""
    from edgequant.algorithms.judge import held_out_outputs

    return held_out_outputs(model, ctx)


def quantized_sqnr(model: onnx.ModelProto, ctx: Context) -> float | None:
    """Output SQNR (dB, first output, all held-out samples; padded positions left out:
    ``judge.real_positions``; a streaming model's runs of consecutive frames streamed with its own state:
    ``judge.set_reference``) of ``model`` against the float model as it was before the first pass;
    None without held-out samples."""
    if not ctx.held_out or ctx.reference is None:
        return None
    from edgequant.algorithms.judge import real_positions

    pairs = [
        real_positions(b, r, g)
        for b, r, g in zip(ctx.held_out, ctx.reference, _outputs(model, ctx), strict=True)
    ]
    value = sqnr_db(np.concatenate([r for r, _ in pairs]), np.concatenate([g for _, g in pairs]))
    return round(value, 2) if np.isfinite(value) else None
