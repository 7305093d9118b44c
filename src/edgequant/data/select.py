"""Which samples a pass reads, and in what order: the calibration/evaluation split and sampling.

Split (indexable sources, ``n`` samples): a permutation drawn from ``default_rng([seed, 1])`` puts
its first ``round(n * eval_fraction)`` indices (at least 1, at most n - 1) in the evaluation part
and the rest in the calibration part.  Both parts are returned in ascending index order, so
``calib`` and ``eval`` never overlap and together cover every sample, for any ``seed``; the same
seed must be given when opening both.

Streams (iterables of batches, length unknown): sample k goes to evaluation when the k-th draw of
``default_rng([seed, 1]).random()`` is below ``eval_fraction``.  Same guarantees, approximate
fraction.

Hold-out (the run check): ``held_out_positions(n, count)`` picks ``h = min(count, n // 2)`` of the
``n`` samples, evenly spread: positions ``floor((j + 0.5) * n / h)`` for ``j < h``.  Calibration reads
the other samples only, the check reads these only, so the check measures data calibration never saw.
An even spread (not the last ``h``) keeps a class-sorted folder's check from holding one class.

Sampling: "first" keeps index order; "random" is a permutation from ``default_rng([seed, 2])``.
Both are identical on every pass, so calibration may iterate a source several times.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from edgequant.errors import DataError

Split = Literal["all", "calib", "eval"]
Part = Literal["all", "rest", "held"]
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


def held_out_positions(n: int, count: int) -> np.ndarray:
    """Ascending positions (into ``n`` samples) held back for the run check; see the module docstring."""
    h = min(count, n // 2)
    if h <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.floor((np.arange(h) + 0.5) * n / h).astype(np.int64)


def hold_out(indices: np.ndarray, count: int, part: Part, unit: int = 1) -> np.ndarray:
    """The ``part`` of ``indices``: all of them, the held-out ones, or the rest (for calibration).

    ``unit`` > 1 (a model that fixes its batch size) holds back whole runs of ``unit`` consecutive
    samples, chosen as above among the ``len(indices) // unit`` runs, so both parts fill whole batches.
    """
    if part == "all" or count <= 0:
        return indices
    runs = len(indices) // unit
    held = np.zeros(len(indices), dtype=bool)
    for r in held_out_positions(runs, -(-count // unit)):
        held[r * unit : (r + 1) * unit] = True
    return indices[held] if part == "held" else indices[~held]


class StreamHoldOut:
    """``hold_out`` for streams: sample positions counted across a pass; ``reset()`` every pass."""

    def __init__(self, total: int, count: int, part: Part) -> None:
        self.part = part
        self.held = np.zeros(total, dtype=bool)
        self.held[held_out_positions(total, count)] = True
        self.reset()

    def reset(self) -> None:
        self._pos = 0

    def mask(self, n: int) -> np.ndarray | None:
        """Boolean keep-mask for the next ``n`` samples, or None when every sample is kept."""
        if self.part == "all":
            return None
        window = self.held[self._pos : self._pos + n]
        window = np.concatenate([window, np.zeros(n - len(window), dtype=bool)])
        self._pos += n
        return window if self.part == "held" else ~window
