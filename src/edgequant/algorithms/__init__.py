"""Algorithms that refine a quantized model and its plan after (or around) calibration.

``keep_sensitive_float`` (``sensitivity``): mixed precision driven by measured per-node sensitivity;
the nodes that cost the most output SQNR stay float until ``recipe.target_sqnr_db`` is met.
"""

from edgequant.algorithms.sensitivity import Candidate, default_cap, keep_sensitive_float

__all__ = ["Candidate", "default_cap", "keep_sensitive_float"]
