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

Cost.  One float run over the calibration data records every target's per-sample channel means
(``[samples, C]`` each: memory grows with channels x samples, not with the feature maps), then one run of
the QDQ model per *level*: targets none of which lies upstream of another share a level and are
measured in the same run.  The shifts are fed to that one session as graph inputs: an ``Add`` after
each target's output, so no model is exported or loaded per level; the ``Add`` keeps ORT from fusing
the node into an integer kernel, so the QDQ model runs its float-kernel form (DQ -> op -> Q), which
differs from the integer kernel only by the int32 accumulator's rounding.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgequant.algorithms.bias_correction import MIN_T, Target, _Sums
from edgequant.data.base import Batch
from edgequant.errors import DataError
from edgequant.evaluate.layers import _with_outputs
from edgequant.runtime import OrtRuntime

SHIFT = "_bc_shift"


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
) -> tuple[dict[str, list[np.ndarray]], dict[str, int]]:  # fmt: skip
    """Per target, the float model's per-sample channel means of its output, one array per batch; and the
    rank of each target's output.  ``outputs`` maps a target's node to its output in the float model."""
    fetch = [outputs[t.node] for t in found]
    model = _with_outputs(float_model, fetch)
    means: dict[str, list[np.ndarray]] = {t.node: [] for t in found}
    ranks: dict[str, int] = {}
    session = runtime.session(model, "the float model for sequential bias correction")
    try:
        for batch in source:
            got = session.run(batch, fetch)
            for t in found:
                y = got[outputs[t.node]]
                ranks[t.node] = y.ndim
                means[t.node].append(channel_means(y, t.axis))
            del got
    finally:
        session.close()
    if not ranks:
        raise DataError(
            "the calibration data yielded no batches for bias correction.", "pass calibration data."
        )
    return means, ranks


def with_shift_inputs(
    quantized: onnx.ModelProto, found: list[Target], ranks: dict[str, int], channels: dict[str, int]
) -> onnx.ModelProto:
    """A copy of ``quantized`` where each target's output ``y`` becomes ``y_pre + <node>_bc_shift``, the
    shift a float graph input shaped to broadcast on the channel axis; the targets' outputs are outputs."""
    model = _with_outputs(quantized, [t.output for t in found])
    g = model.graph
    by_name = {n.name: n for n in g.node}
    for t in found:
        node = by_name[t.node]
        pre = t.output + "_bc_pre"
        node.output[0] = pre
        shape = [channels[t.node]] + ([1] * (ranks[t.node] - 2) if t.axis == 1 else [])
        g.input.append(helper.make_tensor_value_info(t.node + SHIFT, TensorProto.FLOAT, shape))
        g.node.append(helper.make_node("Add", [pre, t.node + SHIFT], [t.output], name=t.node + SHIFT))
    return _sorted(model)


def _sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph's nodes in topological order (the Adds were appended at the end)."""
    g = model.graph
    ready = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending, order = list(g.node), []
    while pending:
        left = []
        for n in pending:
            if all(i in ready for i in n.input):
                order.append(n)
                ready.update(n.output)
            else:
                left.append(n)
        if len(left) == len(pending):  # inputs from outer scopes or cycles: keep the rest as they were
            order += left
            break
        pending = left
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(order)
    return out


def measure(
    float_model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    found: list[Target],
    source: Iterable[Batch],
    runtime: OrtRuntime,
) -> tuple[dict[str, np.ndarray], int]:
    """Per target, the shift to add to its bias (0 where below ``MIN_T`` standard errors), measured level
    by level (module docstring); and the number of runs over the calibration data (1 float + levels).
    ``source`` is re-iterated once per level and must yield the same batches each time (``Stats`` does)."""
    fnodes = {n.name: n for n in float_model.graph.node}
    outputs = {t.node: fnodes[t.node].output[0] for t in found}
    ref, ranks = float_means(float_model, found, outputs, source, runtime)
    channels = {t.node: int(ref[t.node][0].shape[-1]) for t in found}
    model = with_shift_inputs(quantized, found, ranks, channels)
    shifts = {t.node: np.zeros(channels[t.node], np.float64) for t in found}

    def feed(batch: Batch) -> dict[str, np.ndarray]:
        extra = {}
        for t in found:
            shape = [channels[t.node]] + ([1] * (ranks[t.node] - 2) if t.axis == 1 else [])
            extra[t.node + SHIFT] = shifts[t.node].astype(np.float32).reshape(shape)
        return {**batch, **extra}

    grouped = levels(quantized, found)
    session = runtime.session(model, "the QDQ model with bias shifts as inputs")
    try:
        for group in grouped:
            sums = {t.node: _Sums() for t in group}
            for k, batch in enumerate(source):
                if k >= len(ref[group[0].node]):
                    raise DataError(
                        "the calibration data yielded more batches on a later read than on the first.",
                        "pass calibration data that reads the same way each time (a file or an array).",
                    )
                got = session.run(feed(batch), [t.output for t in group])
                for t in group:
                    diff = ref[t.node][k] - channel_means(got[t.output], t.axis)
                    sums[t.node].update(diff[:, None, :], np.zeros_like(diff[:, None, :]), -1)
            for t in group:
                mean, tstat = sums[t.node].shift()
                shifts[t.node] = np.where(tstat >= MIN_T, mean, 0.0)
    finally:
        session.close()
    return shifts, 1 + len(grouped)
