"""Sequential bias correction: each layer's mean error, measured with the layers before it corrected.

The empirical variant (``bias_correction.measure``) measures every layer's *local* shift in one run of
the uncorrected QDQ model and applies them all.  Here layer ``k``'s shift is measured against the float
model's own output of that layer, in the QDQ model whose earlier layers already carry their
corrections (Nagel et al. 2019, sec. 4.2, applied layer by layer as AIMET's empirical bias correction
does), so a correction never re-counts an error that an earlier correction removed, and the error that
the uncorrectable nodes between two layers add (an LSTM, an attention MatMul, a Relu on noisy inputs)
is absorbed by the next corrected layer instead of compounding:

    shift_k[c] = E[ y_k(x)[c] ] - E[ y~_k(x; shift_1 .. shift_{k-1})[c] ]

``y_k`` is node ``k``'s output in the float model, ``y~_k`` in the QDQ model, both on the same
calibration sample (a paired difference, so the per-sample noise of the input cancels), means over
the sample's spatial/time positions.  A channel is corrected only when its mean difference is at least
``MIN_T`` standard errors over the samples (``bias_correction._Sums``).

Acceptance.  Matching each layer's mean is not the same as lowering the model's output error (on a
streaming model the error a corrected layer feeds into the recurrence can grow over the chunks; on
PP-OCR cls the corrections lowered the output SQNR).  So the shifts are estimated on the even
calibration batches, and a level's corrections are kept only when the model as it will be written,
with them, gives an output SQNR (the lowest over the float outputs, against the float model, streamed
as below) no lower than without them on the even batches *and* on the odd ones, which the estimate
never saw (judged on the odd ones alone, corrections that raised their SQNR lowered PP-OCR cls's
on its evaluation set from 32.7 to 24.0 dB: its output SQNR rests on a few borderline samples);
otherwise they are undone and listed as rejected with both pairs of SQNRs.  The result is never
worse than no correction on either half of the calibration data.

Streaming models.  A model that returns its own state for the next call (``model.recurrent.state_pairs``:
Silero VAD's ``state`` -> ``stateN``) runs in deployment on the states the *quantized* model returned.
Measured on the calibration data's states (the float model's), the shifts fit an open loop that never
runs: on Silero VAD they raised the per-chunk output SQNR (29.7 -> 34.6 dB) and lowered the streamed
one (23.5 -> 20.0 dB).  So both runs carry their own state: the samples are taken as consecutive
chunks of one stream (as ``model.stream_calib.carry_states`` takes them), the first one's state comes
from the data, and each later one gets the state the same model (float, or the QDQ model with the
corrections so far) returned for the one before.

Cost. One float run over the calibration data records every target's per-sample channel means
(``[samples, C]`` each: memory grows with channels x samples, not with the feature maps) and the float
outputs; then one judging run, and per *level* one estimating run (even batches; a streaming model's
read every batch, to carry its state) and, when the level has a correction, one judging run: targets
none of which lies upstream of another share a level and are measured in the same run. Each run exports
the QDQ model with the corrections so far; an estimating run exposes only its level's outputs, so every
other node runs the integer kernel ORT fuses it into, as the written model will, and a judging run
exposes nothing (exposing an output keeps ORT from fusing its node: with every layer's output exposed,
PP-OCR cls measured 78 dB where its fused model gives 48 dB, and corrections fitted there lowered the
fused model's SQNR).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
import onnx

from edgequant.algorithms.bias_correction import MIN_T, Target, _Sums
from edgequant.data.base import Batch
from edgequant.errors import DataError
from edgequant.evaluate.layers import _with_outputs
from edgequant.export import export_qdq
from edgequant.model.recurrent import state_pairs
from edgequant.plan import QuantPlan
from edgequant.runtime import OrtRuntime


def levels(quantized: onnx.ModelProto, found: list[Target]) -> list[list[Target]]:
    """``found`` grouped by depth: a target's level is one more than the deepest target upstream of it."""
    by_out = {t.output: t for t in found}
    depth: dict[str, int] = {}  # tensor -> number of targets on the deepest path that produced it
    level: dict[str, int] = {}
    for node in quantized.graph.node:
        d = max((depth.get(i, 0) for i in node.input), default=0)
        for out in node.output:
            if out in by_out:
                level[out] = d
                depth[out] = d + 1
            else:
                depth[out] = d
    groups: list[list[Target]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for t in found:
        groups[level[t.output]].append(t)
    return [group for group in groups if group]


def channel_means(y: np.ndarray, axis: int) -> np.ndarray:
    """Per-sample channel means of ``y`` (samples first): ``[samples, C]``, float64."""
    d = np.moveaxis(np.asarray(y, np.float64), axis, -1)
    return d.reshape(d.shape[0] if d.ndim > 1 else 1, -1, d.shape[-1]).mean(axis=1)


def float_means(
    float_model: onnx.ModelProto, found: list[Target], outputs: dict[str, str], source: Iterable[Batch],
    runtime: OrtRuntime,
) -> tuple[dict[str, list[np.ndarray]], dict[str, int], list[dict[str, np.ndarray]]]:  # fmt: skip
    """Per target, the float model's per-sample channel means of its output, one array per batch; the
    rank of each target's output; and the model's floating-point outputs per batch (the reference of the
    acceptance test).  ``outputs`` maps a target's node to its output in the float model."""
    fetch = [outputs[t.node] for t in found]
    model = _with_outputs(float_model, fetch)
    pairs = state_pairs(float_model.graph)
    finals = graph_outputs(float_model)
    means: dict[str, list[np.ndarray]] = {t.node: [] for t in found}
    ranks: dict[str, int] = {}
    kept: list[dict[str, np.ndarray]] = []
    session = runtime.session(model, "the float model for sequential bias correction")
    try:
        carried = Carry(pairs)
        for batch in source:
            got = session.run(carried.feed(batch), list(dict.fromkeys(fetch + carried.fetch + finals)))
            carried.keep(batch, got)
            for t in found:
                y = got[outputs[t.node]]
                ranks[t.node] = y.ndim
                means[t.node].append(channel_means(y, t.axis))
            kept.append({o: np.asarray(got[o], np.float32) for o in finals})
            del got
    finally:
        session.close()
    if not ranks:
        raise DataError(
            "the calibration data yielded no batches for bias correction.", "pass calibration data."
        )
    return means, ranks, kept


def graph_outputs(model: onnx.ModelProto) -> list[str]:
    """The model's floating-point graph outputs."""
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    return [o.name for o in model.graph.output if o.type.tensor_type.elem_type in floats]


class _Noise:
    """Per output, running sums of ``ref^2`` and ``(ref - got)^2``; ``sqnr()`` is the lowest output's dB."""

    def __init__(self) -> None:
        self.signal: dict[str, float] = {}
        self.noise: dict[str, float] = {}

    def update(self, ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
        for k, r in ref.items():
            r64, g64 = np.asarray(r, np.float64), np.asarray(got[k], np.float64).reshape(np.shape(r))
            self.signal[k] = self.signal.get(k, 0.0) + float((r64**2).sum())
            self.noise[k] = self.noise.get(k, 0.0) + float(((r64 - g64) ** 2).sum())

    def sqnr(self) -> float:
        return (
            min(
                (float(10 * np.log10(self.signal[k] / self.noise[k])) if self.noise[k] > 0 else np.inf)
                for k in self.signal
            )
            if self.signal
            else np.inf
        )


class Carry:
    """The state a streaming model returned for the previous sample, fed to the next (module docstring)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self.fetch = [o for _, o in pairs]
        self.state: dict[str, np.ndarray] = {}

    def feed(self, batch: Batch) -> Batch:
        return {**batch, **self.state}

    def keep(self, batch: Batch, got: dict[str, np.ndarray]) -> None:
        self.state = {
            i: np.asarray(got[o]).reshape(np.shape(batch[i])).astype(np.asarray(batch[i]).dtype)
            for i, o in self.pairs
            if i in batch
        }


def measure(
    float_model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    calibrated: QuantPlan,
    found: list[Target],
    source: Iterable[Batch],
    runtime: OrtRuntime,
) -> tuple[dict[str, np.ndarray], int, list[dict[str, object]]]:
    """Per target, the shift to add to its bias (0 where below ``MIN_T`` standard errors, or where its
    level was rejected), measured level by level (module docstring); the number of runs over the
    calibration data; and the rejected levels (nodes, output SQNR without and with their shifts).
    ``calibrated`` is the plan the QDQ model ``quantized`` was exported from.  ``source`` is re-iterated
    once per run and must yield the same batches each time (``Stats`` does)."""
    from edgequant.algorithms.bias_correction import corrected_model

    fnodes = {n.name: n for n in float_model.graph.node}
    outputs = {t.node: fnodes[t.node].output[0] for t in found}
    ref, _, finals = float_means(float_model, found, outputs, source, runtime)
    shifts = {t.node: np.zeros(ref[t.node][0].shape[-1], np.float64) for t in found}
    pairs = state_pairs(float_model.graph)
    names = list(finals[0]) if finals else []

    streaming = bool(pairs)  # every batch runs (states flow through all of them)

    def run(group: list[Target]) -> tuple[dict[str, _Sums], tuple[float, float]]:
        """One run of the QDQ model exported with the current shifts.  With ``group``: its outputs exposed,
        their mean differences on the even batches.  Without: the model as it will be written (every node
        fused as ORT fuses it), its output SQNR on the even and on the odd batches."""
        qdq, _ = export_qdq(corrected_model(float_model, found, shifts), copy.deepcopy(calibrated))
        sums, carried = {t.node: _Sums() for t in group}, Carry(pairs)
        noise = (_Noise(), _Noise())  # even, odd batches
        fetch = list(dict.fromkeys([t.output for t in group] + carried.fetch + ([] if group else names)))
        session = runtime.session(_with_outputs(qdq, [t.output for t in group]), "a bias-corrected QDQ model")
        try:
            for k, batch in enumerate(source):
                if k >= len(finals):
                    raise DataError(
                        "the calibration data yielded more batches on a later read than on the first.",
                        "pass calibration data that reads the same way each time (a file or an array).",
                    )
                odd = k % 2 == 1
                if group and odd and not streaming:
                    continue
                got = session.run(carried.feed(batch), fetch)
                carried.keep(batch, got)
                if not group:
                    noise[int(odd)].update(finals[k], got)
                for t in group if not odd else ():
                    diff = ref[t.node][k] - channel_means(got[t.output], t.axis)
                    sums[t.node].update(diff[:, None, :], np.zeros_like(diff[:, None, :]), -1)
        finally:
            session.close()
        return sums, (noise[0].sqnr(), noise[1].sqnr())

    rejected: list[dict[str, object]] = []
    _, before = run([])
    runs = 2
    for group in levels(quantized, found):
        sums, _ = run(group)
        runs += 1
        for t in group:
            mean, tstat = sums[t.node].shift()
            shifts[t.node] = np.where(tstat >= MIN_T, mean, 0.0)
        if not any(np.any(shifts[t.node]) for t in group):
            continue
        _, after = run([])
        runs += 1
        if after[0] < before[0] or after[1] < before[1]:  # lower on either half: undone
            for t in group:
                shifts[t.node][:] = 0.0
            rejected.append({"nodes": [t.node for t in group], "sqnr_without_db": [round(v, 2) for v in before],
                             "sqnr_with_db": [round(v, 2) for v in after]})  # fmt: skip
        else:
            before = after
    return shifts, runs, rejected
