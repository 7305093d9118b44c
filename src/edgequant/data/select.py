"""Which samples a pass reads, and in what order: the calibration/evaluation split and sampling.

Split (indexable sources, ``n`` samples): a permutation drawn from ``default_rng([seed, 1])`` puts
its first ``round(n * eval_fraction)`` indices (at least 1, at most n - 1) in the evaluation part
and the rest in the calibration part.  Both parts are returned in ascending index order, so
``calib`` and ``eval`` never overlap and together cover every sample, for any ``seed``; the same
seed must be given when opening both.

Streams (iterables of batches, length unknown): sample k goes to evaluation when the k-th draw of
``default_rng([seed, 1]).random()`` is below ``eval_fraction``.  Same guarantees, approximate
fraction.

Sampling: "first" keeps index order; "random" is a permutation from ``default_rng([seed, 2])``.
Both are identical on every pass, so calibration may iterate a source several times.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from edgequant.errors import DataError

Split = Literal["all", "calib", "eval"]
Sampling = Literal["first", "random"]


def check_split_args(split: str, eval_fraction: float, sampling: str) -> None:
    if split not in ("all", "calib", "eval"):
        raise DataError(
            f"split '{split}' is not allowed; allowed: all, calib, eval.", "use all, calib or eval."
        )
    if sampling not in ("first", "random"):
        raise DataError(
            f"sampling '{sampling}' is not allowed; allowed: first, random.", "use first or random."
        )
    if not 0.0 < eval_fraction < 1.0:
        raise DataError(
            f"eval_fraction {eval_fraction} is outside (0, 1).",
            "use a fraction such as 0.2 (20% for evaluation).",
        )


def split_indices(n: int, split: Split, eval_fraction: float, seed: int, where: str) -> np.ndarray:
    """Ascending indices of the ``split`` part of ``n`` samples."""
    if split == "all":
        return np.arange(n, dtype=np.int64)
    if n < 2:
        raise DataError(
            f"{where} has {n} sample(s); a calibration/evaluation split needs at least 2.",
            "give more data, or use split='all' with separate calibration and evaluation files.",
        )
    n_eval = min(max(round(n * eval_fraction), 1), n - 1)
    perm = np.random.default_rng([seed, 1]).permutation(n)
    part = perm[:n_eval] if split == "eval" else perm[n_eval:]
    return np.sort(part).astype(np.int64)


def sample_order(indices: np.ndarray, sampling: Sampling, seed: int) -> np.ndarray:
    if sampling == "first":
        return indices
    return indices[np.random.default_rng([seed, 2]).permutation(len(indices))]


class StreamSplitter:
    """Per-sample seeded assignment for streams; call ``reset()`` at the start of every pass."""

    def __init__(self, split: Split, eval_fraction: float, seed: int) -> None:
        self.split = split
        self.eval_fraction = eval_fraction
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self._rng = np.random.default_rng([self.seed, 1])

    def mask(self, n: int) -> np.ndarray | None:
        """Boolean keep-mask for the next ``n`` samples, or None when every sample is kept."""
        if self.split == "all":
            return None
        is_eval = self._rng.random(n) < self.eval_fraction
        return is_eval if self.split == "eval" else ~is_eval
