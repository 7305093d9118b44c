"""Synthetic calibration data, for when no data is given.

``stats.synthetic`` is True, and reports must say so: ranges calibrated on random data are not
the ranges of real inputs.

Sample ``i`` of input ``k`` is drawn from ``default_rng([seed, i, k])``, so the data do not depend
on the batch size and are identical on every pass.  Values: float inputs N(0, 1) ("normal") or
U[0, 1) ("uniform"); integer inputs uniform integers in [0, 16) (safe as indices for any
vocabulary of 16 or more); bool inputs fair coin flips.

Shapes: axis 0 is the batch.  The other dynamic dims come from ``shape_hints[name]`` (the shape
of ONE sample, without the batch axis, e.g. ``{"input_ids": (128,)}``); without a hint a dynamic
dim is 1, and the description records it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from edgequant.data.base import InputSpec
from edgequant.data.conform import fixed_batch
from edgequant.data.source import Chunk, IndexedSource, Reader
from edgequant.errors import DataError

Distribution = Literal["normal", "uniform"]
INT_HIGH = 16
DEFAULT_DIM = 1


def sample_shapes(
    inputs: list[InputSpec], shape_hints: Mapping[str, tuple[int, ...]] | None, notes: list[str]
) -> dict[str, tuple[int, ...]]:
    """Per-sample shape (no batch axis) of every input."""
    hints = dict(shape_hints or {})
    unknown = sorted(set(hints) - {i.name for i in inputs})
    if unknown:
        raise DataError(
            f"shape_hints name {unknown}, which are not model inputs {[i.name for i in inputs]}.",
            "key shape_hints by model input name.",
        )
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in inputs:
        if not spec.shape:
            raise DataError(
                f"model input '{spec.name}' is a scalar (rank 0); it has no batch axis to fill.",
                "re-export the model with a batched input, or feed it real data.",
            )
        dims = spec.shape[1:]
        if spec.name in hints:
            hint = tuple(int(d) for d in hints[spec.name])
            bad = len(hint) != len(dims) or any(
                h < 1 or (d is not None and d != h) for h, d in zip(hint, dims, strict=False)
            )
            if bad:
                want = "x".join("?" if d is None else str(d) for d in dims)
                raise DataError(
                    f"shape hint {hint} for input '{spec.name}' does not fit its per-sample shape {want} "
                    "(? = any; the batch axis is not part of the hint).",
                    f"give {len(dims)} positive dims that agree with the fixed ones.",
                )
            shapes[spec.name] = hint
            continue
        if any(d is None for d in dims):
            notes.append(f"dynamic dims of '{spec.name}' set to {DEFAULT_DIM} (use shape_hints)")
        shapes[spec.name] = tuple(DEFAULT_DIM if d is None else d for d in dims)
    return shapes


class SyntheticReader(Reader):
    def __init__(
        self,
        inputs: list[InputSpec],
        shapes: dict[str, tuple[int, ...]],
        samples: int,
        seed: int,
        distribution: Distribution,
    ) -> None:
        if distribution not in ("normal", "uniform"):
            raise DataError(
                f"synthetic distribution '{distribution}' is not allowed; allowed: normal, uniform.",
                "use normal or uniform.",
            )
        if samples < 1:
            raise DataError(f"synthetic samples must be >= 1, got {samples}.", "ask for at least one sample.")
        self.inputs = inputs
        self.shapes = shapes
        self.samples = samples
        self.seed = seed
        self.distribution = distribution
        self.fields = tuple(i.name for i in inputs)
        self.description = f"synthetic data ({distribution}, seed {seed}, {samples} samples)"

    def __len__(self) -> int:
        return self.samples

    def _one(self, spec: InputSpec, k: int, i: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, i, k])
        shape = self.shapes[spec.name]
        if spec.dtype == np.bool_:
            return rng.random(shape) < 0.5
        if spec.dtype.kind in "iu":
            return rng.integers(0, INT_HIGH, size=shape).astype(spec.dtype)
        if spec.dtype.kind != "f":
            raise DataError(
                f"model input '{spec.name}' has dtype {spec.dtype}; "
                "synthetic data covers float, int and bool.",
                "give real calibration data for this input.",
            )
        x = rng.standard_normal(shape) if self.distribution == "normal" else rng.random(shape)
        return x.astype(spec.dtype)

    def read(self, indices: np.ndarray) -> Chunk:
        fields = {
            spec.name: np.stack([self._one(spec, k, int(i)) for i in indices])
            for k, spec in enumerate(self.inputs)
        }
        return Chunk(fields)


def synthetic(
    inputs: list[InputSpec],
    *,
    samples: int,
    batch_size: int,
    seed: int,
    distribution: Distribution = "normal",
    shape_hints: Mapping[str, tuple[int, ...]] | None = None,
    first_index: int = 0,
) -> IndexedSource:
    """Random data matching ``inputs``; ``stats.synthetic`` is True.

    ``first_index`` offsets the sample indices, so two sources (calibration, evaluation) can draw
    disjoint samples from one seed.
    """
    notes: list[str] = []
    firsts = {i.shape[0] for i in inputs if i.shape and i.shape[0] is not None}
    stacked = len(firsts) > 1  # e.g. input [1, 576] and state [2, 1, 128]: no common batch axis
    if stacked:  # each sample is one whole feed dict (as stacked feed dicts in an .npz)
        shapes = {i.name: tuple(DEFAULT_DIM if d is None else d for d in i.shape) for i in inputs}
        notes.append(f"inputs fix different first axes {sorted(firsts)}: each sample is one whole feed dict")
        size, drop_last = 1, False
    else:
        shapes = sample_shapes(inputs, shape_hints, notes)
        size, drop_last = fixed_batch(inputs, batch_size, notes)
    if drop_last and samples < size:
        notes.append(f"{size} samples (one batch of the model's fixed size; {samples} were asked)")
        samples = size
    reader = SyntheticReader(inputs, shapes, samples, seed, distribution)
    source = IndexedSource(
        reader,
        inputs,
        np.arange(first_index, first_index + samples, dtype=np.int64),
        batch_size=size,
        drop_last=drop_last,
        max_samples=None,
        input_map=None,
        prefetch=False,
        notes=notes,
        stacked=stacked,
    )
    source.stats.synthetic = True
    return source
