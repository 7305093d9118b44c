"""What a ``before_ranges`` pass is judged on: the QDQ model it leads to, not its weights alone.

A pass before calibration changes the float model and plan; what it buys shows only once activations
are quantized too (SmoothQuant moves error from activations into weights, so with activations left
float it always looks like a loss; CLE changes activation ranges as well as weight ranges).  So the
runner (``base.run_pass``) scores the model before and after the pass the same cheap way: activation
ranges by min-max over the first ``JUDGE_CALIB`` calibration samples (the exact ranges of
tanh/sigmoid/recurrent outputs, mask tensors left float, Relu inputs tied to their outputs, as
calibration does; on the ``cpu`` target without the activations the pipeline leaves float as ORT
round trips, ``export.round_trips``, found once), the QDQ model exported, its first output's SQNR
against the float model measured on the held-out samples (``base.quantized_sqnr``; padded positions
left out: ``real_positions``).  A plan without quantized activations (weight-only) is scored with its
weights quantized and nothing else, which is that model exactly.

Streaming models.  A model that carries state between calls (``model.recurrent.state_pairs``: Silero
VAD's ``state`` -> ``stateN``; where no LSTM/GRU/RNN carries it, as in a Tanh recurrence, a graph input
and output of one shape that the held-out frames show to be carried: ``same_shape_pairs``) runs in
deployment on the state it returned itself, so its error accumulates over a stream.  Fed the data's
state (the float model's) at every held-out frame, the judge sees one step of that error only; on Silero
VAD it reverted AdaRound (56.26 -> 54.56 dB) on a draw where AdaRound lifts the streamed result
(worst-clip agreement 0.9788 -> 0.9954).  So ``set_reference`` first finds which held-out batches
continue a stream: batch k+1 does when its state inputs are the state the float model returns for batch
k (to ``STATE_RTOL`` of their largest magnitude), as they are in data recorded streaming
(``model.stream_calib.carry_states`` writes them so, and a stacked ``.npz`` of (frame, state) pairs
holds them so).  Each run of consecutive batches is then streamed, the first batch of a run fed the
data's state and each later one the state the model under judgement returned for the one before, the
float reference streamed the same way (``held_out_outputs``).  Where no batch continues another (frames
drawn at random, states from elsewhere), every frame is fed the data's state as before, and a note says
the judge is a one-step proxy there (same-shape pairs that no frame continues are not taken for state:
no note); the report rows say which.

Cost: per judged state one min-max stream over ``JUDGE_CALIB`` samples, one export and one run over
the held-out samples; a state judged once is not judged again (the state after one pass is the state
before the next).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgequant.data.base import Batch
from edgequant.plan import QuantPlan
from edgequant.schemes.qparams import dequantize, quantize_weight

if TYPE_CHECKING:
    from edgequant.algorithms.base import Context

JUDGE_CALIB = 32  # calibration samples the judge's min-max ranges come from
STATE_RTOL = 1e-4  # a batch continues the one before when its state is that one's float state to this


def judged_sqnr(model: onnx.ModelProto, plan: QuantPlan, ctx: Context) -> float | None:
    """Output SQNR (dB) on the held-out samples of the QDQ model ``model`` + ``plan`` lead to, with
    min-max activation ranges from ``JUDGE_CALIB`` calibration samples; None without held-out samples."""
    from edgequant.algorithms.base import Stats, quantized_sqnr

    if ctx.judged is not None and ctx.judged[0] is model and ctx.judged[1] is plan:
        return ctx.judged[2]
    acts = plan.activations()
    if not acts or not ctx.held_out or ctx.reference is None:
        value = weight_quantized_sqnr(model, plan, ctx)
    else:
        from edgequant import planner
        from edgequant.export import export_qdq
        from edgequant.model.recurrent import apply_exact_ranges
        from edgequant.observe import collect

        spec = plan.tensors[acts[0]].spec
        samples = min(JUDGE_CALIB, ctx.recipe.calib_samples)
        res = collect(
            model, Stats(ctx.data, samples, ctx.runtime, ctx.recipe), acts, method="minmax",
            qbits=spec.bits, symmetric=spec.symmetric, runtime=ctx.runtime, max_samples=samples,
        )  # fmt: skip
        ranged = QuantPlan.from_dict(plan.to_dict())
        for name, count in res.sentinels.items():  # mask tensors stay float, as calibration leaves them
            if count and name in ranged.tensors:
                del ranged.tensors[name]
        ranges = dict(res.ranges)
        apply_exact_ranges(model.graph, ranges)
        ranged = planner.tie_activation_ranges(model, ranged.with_ranges(ranges))
        from edgequant.export import round_trips

        if round_trips.applies(ctx.recipe):  # as the pipeline will write it
            if ctx.trips is None:  # which ops ORT fuses depends on the graph, not on the pass's weights
                ctx.trips = round_trips.found(model, ranged, ctx.runtime.providers)
            ranged = round_trips.without(ranged, ctx.trips)
        value = quantized_sqnr(export_qdq(model, ranged)[0], ctx)
    ctx.judged = (model, plan, value)
    return value


def real_positions(batch: Batch, ref: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ref`` and ``got`` (one output, ``[B, T, ...]``) flattened, without the padded positions: those
    where the batch's padding mask is 0.  The mask is a 2-D integer/bool input named like ``*mask*``
    holding only 0 and 1 (``attention_mask``) whose shape is the output's first two dims; without one,
    every position counts.  On all-MiniLM-L6-v2 86 % of the positions are padding, and the SQNR over
    all of them said SmoothQuant cost 0.3 dB (14.12 -> 13.80) where on the real tokens it bought 5.9 dB
    (17.21 -> 23.13)."""
    for name, value in batch.items():
        v = np.asarray(value)
        if (
            "mask" in name.lower()
            and v.ndim == 2
            and (v.dtype == np.bool_ or np.issubdtype(v.dtype, np.integer))
            and ref.shape[:2] == v.shape
            and np.isin(v, (0, 1)).all()
            and v.any()
        ):
            keep = v.astype(bool)
            return ref[keep].reshape(-1), got[keep].reshape(-1)
    return ref.reshape(-1), got.reshape(-1)


def judged_on(plan: QuantPlan) -> str:
    """What ``judged_sqnr`` measures, for the report row."""
    if not plan.activations():
        return "weights quantized as planned (no activation is quantized)"
    return f"the QDQ model, activation ranges by min-max over the first {JUDGE_CALIB} calibration samples (all, if fewer)"


def weight_quantized(model: onnx.ModelProto, plan: QuantPlan) -> onnx.ModelProto:
    """A copy of ``model`` whose planned weights are replaced by their quantized-dequantized values."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        entry = plan.tensors.get(t.name)
        if entry is None or entry.role != "weight":
            continue
        w = numpy_helper.to_array(t).astype(np.float32)
        q, scale, zero = fixed_or_fresh(w, entry)
        t.CopyFrom(numpy_helper.from_array(dequantize(q, scale, zero, entry.spec), t.name))
    return out


def fixed_or_fresh(w: np.ndarray, entry: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, scale, zero) of a weight: with the scale a pass fixed in the plan, or the exporter's own."""
    from edgequant.schemes.qparams import quantize_fixed

    if entry.scale is not None and entry.zero_point is not None:
        return quantize_fixed(w, entry.spec, entry.scale, entry.zero_point)
    return quantize_weight(w, entry.spec)


def weight_quantized_sqnr(model: onnx.ModelProto, plan: QuantPlan, ctx: Context) -> float | None:
    """Output SQNR (dB, first output, all held-out samples) of the weight-quantized model against the
    float model as it was before the first pass."""
    if not plan.weights() or not ctx.held_out or ctx.reference is None:
        return None
    from edgequant.algorithms.base import quantized_sqnr

    return quantized_sqnr(weight_quantized(model, plan), ctx)


def set_reference(model: onnx.ModelProto, ctx: Context) -> None:
    """Set ``ctx.reference`` (the float ``model``'s first output per held-out batch) and, for a model with
    carried state, ``ctx.pairs`` and ``ctx.carry`` (which batches continue the one before; module
    docstring), with what that means in ``ctx.held_out_on`` and, for a one-step fallback, a note."""
    from edgequant.model.recurrent import state_pairs

    pairs, found = state_pairs(model.graph), True
    if not pairs:  # state carried by other ops (a Tanh recurrence): inputs and outputs of one shape
        pairs, found = same_shape_pairs(model.graph), False
    held = ctx.held_out
    if pairs and held and all(i in b for b in held for i, _ in pairs):
        flags = pair_continues(model, held, pairs, ctx)
        if not found:  # only what the data shows to be carried state counts as state
            pairs = [p for p in pairs if any(flags[p])]
        if pairs:
            ctx.pairs = pairs
            ctx.carry = [all(flags[p][k] for p in pairs) for k in range(len(held))]
            describe_carry(ctx, [i for i, _ in pairs])
    ctx.reference = held_out_outputs(model, ctx)


def describe_carry(ctx: Context, inputs: list[str]) -> None:
    """``ctx.held_out_on``'s words for ``ctx.carry``, and the note for a one-step fallback."""
    runs = ctx.carry.count(False)
    ins = ", ".join(f"'{i}'" for i in inputs)
    if runs < len(ctx.carry):
        ctx.held_out_on += (
            f"; streamed as {runs} run(s) of consecutive frames, each model carrying its own state "
            f"{ins} within a run (a run starts from the data's state)"
        )
        return
    ctx.held_out_on += f"; one step per frame (each fed the data's state {ins}): not a stream"
    ctx.notes.append(
        f"pass judge: no held-out sample's state input ({ins}) is the state the float model "
        "returned for the one before, so the samples are not consecutive frames of a stream; "
        "each was fed the data's state, a one-step proxy that does not see the error a quantized "
        "model accumulates over a stream (give frames in stream order, each with the float "
        "model's state, as a list of feed dicts or a stacked .npz)."
    )


def pair_continues(
    model: onnx.ModelProto, held: list[Batch], pairs: list[tuple[str, str]], ctx: Context
) -> dict[tuple[str, str], list[bool]]:
    """Per pair, per batch of ``held``: True when the batch's state input is, to ``STATE_RTOL`` of its
    largest magnitude, the state output of the float ``model`` fed the batch before (first batch: False)."""
    sess = ctx.runtime.session(model, "the float model (finding the held-out frames' streams)")
    try:
        outs = [sess.run(b, list(dict.fromkeys(o for _, o in pairs))) for b in held[:-1]]
    finally:
        sess.close()
    flags: dict[tuple[str, str], list[bool]] = {p: [False] for p in pairs}
    for got, nxt in zip(outs, held[1:], strict=True):
        for i, o in pairs:
            want = np.asarray(nxt[i], np.float64)
            have = np.asarray(got[o], np.float64)
            tol = STATE_RTOL * max(float(np.abs(want).max(initial=0.0)), 1e-6)
            same = have.size == want.size and float(np.abs(have.reshape(want.shape) - want).max()) <= tol
            flags[(i, o)].append(bool(same))
    return flags


def same_shape_pairs(graph: onnx.GraphProto) -> list[tuple[str, str]]:
    """Candidate (graph input, graph output) pairs of carried state where no LSTM/GRU/RNN carries it:
    each float input with the declared shape of a float output, paired in graph order among those of one
    shape (``s [1, 16]`` -> ``s_new [1, 16]``).  ``set_reference`` keeps a pair only where the data shows
    it (a held-out frame's input equals the float model's output for the frame before)."""
    inits = {t.name for t in graph.initializer}

    def key(v: onnx.ValueInfoProto) -> tuple[object, ...]:
        t = v.type.tensor_type
        return (t.elem_type, *(d.dim_value or d.dim_param for d in t.shape.dim))

    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    outs: dict[tuple[object, ...], list[str]] = {}
    for o in graph.output:
        if o.type.tensor_type.elem_type in floats:
            outs.setdefault(key(o), []).append(o.name)
    pairs: list[tuple[str, str]] = []
    for i in graph.input:
        left = outs.get(key(i), [])
        if i.name not in inits and i.type.tensor_type.elem_type in floats and left:
            pairs.append((i.name, left.pop(0)))
    return pairs


def held_out_outputs(model: onnx.ModelProto, ctx: Context) -> list[np.ndarray]:
    """``model``'s first output on each held-out batch, in order; a batch that continues the one before
    (``ctx.carry``) is fed the state outputs ``model`` returned for that one in place of the data's."""
    out = model.graph.output[0].name
    fetch = list(dict.fromkeys([out] + [o for _, o in ctx.pairs])) if any(ctx.carry) else [out]
    sess = ctx.runtime.session(model, "the model during an algorithm pass")
    result: list[np.ndarray] = []
    try:
        got: dict[str, np.ndarray] = {}
        for k, batch in enumerate(ctx.held_out):
            feed = batch
            if k < len(ctx.carry) and ctx.carry[k]:
                feed = dict(batch)
                for i, o in ctx.pairs:
                    ref = np.asarray(batch[i])
                    feed[i] = np.asarray(got[o]).reshape(ref.shape).astype(ref.dtype)
            got = sess.run(feed, fetch)
            result.append(got[out])
    finally:
        sess.close()
    return result
