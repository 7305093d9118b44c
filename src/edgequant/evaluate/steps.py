"""Per-time-step scoring of variable-length trials (``edgequant.evaluate.core``).

A model with per-step outputs ``[B, T, C]`` on trials of different lengths is scored over its real
steps: ``real_steps`` gives each batch's ``[B, T]`` bool mask (the padding mask the batch feeds to the
model's ``hdf5_mask_input``, else every step: trials of one length, or run one by one) and
``real_rows`` stacks the real steps of every batch into ``[F, C]`` rows (F = real steps in all).
"""

from __future__ import annotations

import numpy as np

from edgequant.data.base import Batch
from edgequant.errors import DataError


def real_steps(batch: Batch, mask_input: str | None) -> np.ndarray:
    """``[B, T]`` bool: the padding mask the batch feeds to ``mask_input``, else every step of the
    first input's axis 1 (trials of one length, or run one by one)."""
    if mask_input and mask_input in batch:
        return np.asarray(batch[mask_input]) > 0.5
    first = np.asarray(next(iter(batch.values())))
    if first.ndim < 2:
        raise DataError(
            f"per-step labels need inputs with a time axis [N, T, ...]; the input has shape {first.shape}.",
            "store one label per trial, or feed [N, T, C] inputs.",
        )
    return np.ones(first.shape[:2], bool)


def real_rows(parts: list[np.ndarray], steps: list[np.ndarray]) -> np.ndarray:
    """``[F, ...]``: the rows of ``parts`` (``[B, T, ...]`` per batch) where ``steps`` is True.
    DataError when an output does not keep the batch and time axes of its input."""
    rows = []
    for p, real in zip(parts, steps, strict=True):
        if p.ndim < 3 or p.shape[:2] != real.shape:
            raise DataError(
                f"per-step scoring needs the output as [batch, time, ...] with one step per input step; the "
                f"output has shape {list(p.shape)}, the data {list(real.shape)} (batch, time).",
                "evaluate a model whose output keeps the batch and time axes of its input, or store one "
                "label per trial.",
            )
        rows.append(p[real])
    return np.concatenate(rows, axis=0)
