"""AdaRound's rounded-so-far inputs with the activations quantized as the exported model will have them.

Plain AdaRound (``algorithms.adaround``) forms ``x~``, a layer's input in the model whose earlier layers
carry their rounded weights, with FLOAT activations: each layer's rounding then compensates the weight
error before it, but not the 8-bit activation noise that the deployed model adds at every quantized tensor.
AIMET's AdaRound computes ``x~`` in its quantization simulation (weights and activations fake-quantized),
and QDrop (Wei, Gong, Yu, Liu, Yu, "QDrop: Randomly Dropping Quantization for Extremely Low-bit
Post-Training Quantization", ICLR 2022, sec. 3-4) goes one step further: each element of the input is the
activation-quantized one or the float model's one at random (probability ``DROP_PROB`` float), which the
paper finds gives a flatter optimum than either alone.

Here, for the layers whose weights have at most ``ACT_QUANT_MAX_BITS`` bits:

* ranges: the plan's activations are calibrated on the float model before the first layer is rounded,
  with the observer the recipe's method stands for (``calibration.observer_method``: entropy for
  ``auto``, MSE for ``search``), bounded outputs (Softmax, Sigmoid, ...) at their min-max, mask tensors
  left float, exact ranges of tanh/sigmoid outputs, Relu/Clip inputs tied to their outputs' ranges, as
  calibration does; over the pass's calibration samples;
* ``model``: the pass's model (weights and own biases as graph inputs) exported by the QDQ exporter with
  only those activation entries, so every activation the exported model quantizes passes through the same
  ``QuantizeLinear -> DequantizeLinear`` pair (ORT computes it), and ``input_of`` names each layer's input
  in it (the ``X_dq`` its node reads);
* ``x~`` = that input for the current weights; with ``DROP_PROB > 0`` each element is replaced by the float
  model's input with that probability (QDrop's elementwise drop on the layer's input tensor, one seeded draw
  per batch, since the Gram matrices ``A = E[x~ x~^T]``, ``B = E[x~ x^T]`` average over it); the mean
  correction reads the undropped input (the deployed one).

Weights of the layers before stay at their rounded float values (no weight fake-quant: they already lie
on their grids); biases stay float (the exported int32 bias differs by at most half a step of ``s_x s_w``).
The ranges the pipeline later calibrates on the rounded model differ slightly from these.

Off by default (``ACT_QUANT_MAX_BITS = 0``): measured W4A8 + AdaRound, the bench's seeded 192-sample draw
(128 calibrate), session 11, load 6-10 on 2 shared cores (``benchmarks/results/bench_algorithms.md``):

    x~                              EfficientNet-Lite0 (416 crops)    PP-OCR cls    example CNN
    float activations (default)     KL 0.1289, agreement 76.2 %       22.94 dB      19.53 dB
    activations quantized (AIMET)   KL 0.1417, 70.2 %                 26.28 dB      18.67 dB
    QDrop, DROP_PROB 0.5            KL 0.1426, 75.2 %                 24.52 dB      19.35 dB

Both variants are worse on the model class they were meant for; the likely reason is that the 8-bit
activations cost EfficientNet-Lite0 nothing measurable at W4A8 (the same AdaRound weights with float
activations: KL 0.1636 against 0.164), so the noise they add to ``A`` only pulls the rounding away from
the weight error that does matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx

from edgequant.plan import QuantPlan

if TYPE_CHECKING:
    from edgequant.algorithms.base import Stats

ACT_QUANT_MAX_BITS = 0  # layers with weights of at most this many bits read x~ with activations quantized
# (0: none, the default; measured worse on EfficientNet-Lite0 W4A8, module docstring)
DROP_PROB = 0.0  # QDrop: probability that an element of x~ is the float model's (0: AIMET-style, none)
DROP_SEED = 17


@dataclass
class ActQuant:
    """The pass's model with activation Q/DQ pairs, and each layer's input tensor in it."""

    model: onnx.ModelProto
    input_of: dict[str, str]  # layer node name -> the tensor its node reads as input 0 in ``model``
    drop: float
    rng: np.random.Generator

    def mix(self, xq: np.ndarray, xf: np.ndarray) -> np.ndarray:
        """QDrop's input: each element float (``xf``) with probability ``drop``, else ``xq``."""
        if self.drop <= 0.0:
            return xq
        return np.where(self.rng.random(xq.shape) < self.drop, xf, xq).astype(np.float32)


def ranged(model: onnx.ModelProto, plan: QuantPlan, stats: Stats) -> QuantPlan | None:
    """``plan`` with activation ranges measured on the float ``model`` over ``stats`` (module docstring);
    None when the plan quantizes no activation."""
    from edgequant import planner
    from edgequant.calibration import observer_method
    from edgequant.model.patterns import bounded_outputs
    from edgequant.model.recurrent import apply_exact_ranges
    from edgequant.observe import collect

    acts = plan.activations()
    if not acts:
        return None
    spec = plan.tensors[acts[0]].spec
    recipe = stats.recipe
    method = observer_method(recipe.calib_method, spec.bits)
    res = collect(
        model, stats, acts, method=method, percentile=recipe.percentile, qbits=spec.bits,
        symmetric=spec.symmetric, runtime=stats.runtime,
        full_range=bounded_outputs(model) if method != "minmax" else (),
    )  # fmt: skip
    out = QuantPlan.from_dict(plan.to_dict())
    for name, count in res.sentinels.items():  # mask tensors stay float, as calibration leaves them
        if count and name in out.tensors:
            del out.tensors[name]
    ranges = dict(res.ranges)
    apply_exact_ranges(model.graph, ranges)
    return planner.tie_activation_ranges(model, out.with_ranges(ranges))


def build(
    as_inputs: onnx.ModelProto, float_model: onnx.ModelProto, plan: QuantPlan, stats: Stats, nodes: list[str]
) -> ActQuant | None:
    """The activation-quantized form of ``as_inputs`` (weights as graph inputs) for layers ``nodes``;
    None when the plan quantizes no activation or ``nodes`` is empty."""
    from edgequant.export import export_qdq

    if not nodes:
        return None
    with_ranges = ranged(float_model, plan, stats)
    if with_ranges is None:
        return None
    acts_only = QuantPlan.from_dict(with_ranges.to_dict())
    acts_only.tensors = {k: e for k, e in acts_only.tensors.items() if e.role == "activation"}
    qdq, _ = export_qdq(as_inputs, acts_only)
    by_name = {n.name: n for n in qdq.graph.node}
    input_of = {name: by_name[name].input[0] for name in nodes if name in by_name}
    return ActQuant(qdq, input_of, DROP_PROB, np.random.default_rng(DROP_SEED))
