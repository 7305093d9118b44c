"""Algorithms that refine a quantized model and its plan before and after calibration.

Passes behind a registry (``base``: stat requests, then apply; one report row each), run in the
order of ``recipe.algorithms``.  Before activation ranges: ``cle`` (cross-layer equalization,
data-free), ``smoothquant`` (per-channel activation outliers moved into the following MatMul
weights, folded into LayerNorm / constant Mul producers, α chosen by error) and ``adaround``
(learned rounding, layer by layer), run by ``judge_after.run_before`` (a reshaping pass judged after the
rounding pass it feeds).  After them, on the QDQ model:
``bias_correction`` (``correct_biases``: the per-channel mean shift that quantization adds to each
Conv/Gemm/MatMul output goes into the float bias; sequential by default, ``bias_sequential``) and
``mixed_precision`` (``sensitivity.keep_sensitive_float``: the nodes that cost the most output SQNR
stay float until ``recipe.target_sqnr_db`` is met).
"""

from edgequant.algorithms import adaround, block_clip, brecq, cle, cle_bounds, gptq, smoothquant  # noqa: F401  (each registers its pass)
from edgequant.algorithms.base import (
    Context,
    Quantized,
    context,
    create,
    held_out,
    known,
    phase,
    run_after,
    run_pass,
    steps,
)
from edgequant.algorithms.bias_correction import correct_biases
from edgequant.algorithms.judge_after import run_before
from edgequant.algorithms.sensitivity import Candidate, default_cap, keep_sensitive_float

__all__ = [
    "Candidate",
    "Context",
    "Quantized",
    "context",
    "correct_biases",
    "create",
    "default_cap",
    "held_out",
    "keep_sensitive_float",
    "known",
    "phase",
    "run_after",
    "run_before",
    "run_pass",
    "steps",
]
