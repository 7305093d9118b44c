"""Algorithms that refine a quantized model and its plan after (or around) calibration.

Passes behind a registry (``base``: stat requests, then apply; one report row each), run in the
order of ``recipe.algorithms``: ``cle`` (cross-layer equalization, data-free) and ``adaround``
(learned rounding, layer by layer).

``correct_biases`` (``bias_correction``): empirical bias correction; the per-channel mean shift
that quantization adds to each Conv/Gemm output is measured on calibration data and folded into
the float bias before the QDQ model is exported again.
``keep_sensitive_float`` (``sensitivity``): mixed precision driven by measured per-node sensitivity;
the nodes that cost the most output SQNR stay float until ``recipe.target_sqnr_db`` is met.
"""

from edgequant.algorithms import adaround, cle  # noqa: F401  (each registers its pass)
from edgequant.algorithms.base import Context, context, create, held_out, known, run_pass
from edgequant.algorithms.bias_correction import correct_biases
from edgequant.algorithms.sensitivity import Candidate, default_cap, keep_sensitive_float

__all__ = [
    "Candidate",
    "Context",
    "context",
    "correct_biases",
    "create",
    "default_cap",
    "held_out",
    "keep_sensitive_float",
    "known",
    "run_pass",
]
