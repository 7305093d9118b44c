"""The CalibrationSource protocol, and the check of batches against a model's inputs.

A source is an iterable of batches; each batch maps model input names to numpy arrays whose first
axis is the batch.  Every data format (NumPy, images, video, HDF5, CSV, synthetic) is one small
adapter to this protocol.  Sources stream: they never hold more than a batch or two in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from edgequant.errors import DataError

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class InputSpec:
    """A model input as the data layer sees it: name, dtype and shape (None = dynamic dim)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]


@dataclass
class SourceStats:
    """What a source counts while it streams; the report shows it."""

    samples: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    synthetic: bool = False
    description: str = ""
    available: int | None = None  # samples in the data before any hold-out (None: not counted)
    held_out: int = 0  # samples of the data held back for the run check


def check_finite(batch: Batch, where: str, first: int, index_of: np.ndarray | None = None) -> None:
    """Raise DataError naming the sample when a float input holds NaN or Inf.

    ``first`` is the position of the batch's first sample in the pass; ``index_of[position]`` (when
    given) is that sample's index in the dataset.
    """
    for name, arr in batch.items():
        if arr.dtype.kind != "f" or arr.ndim == 0:
            continue
        bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
        if bad.any():
            row = int(np.argmax(bad))
            pos = first + row
            index = int(index_of[pos]) if index_of is not None and pos < len(index_of) else pos
            what = "NaN" if np.isnan(arr[row]).any() else "Inf"
            raise DataError(
                f"{where}: sample {index} (input '{name}') holds {what}; a range or an SQNR computed "
                "over it is meaningless.",
                f"clean the data (drop or repair sample {index}) and run again.",
            )


@runtime_checkable
class CalibrationSource(Protocol):
    """An iterable of ``{input_name: array}`` batches, with a length when known."""

    stats: SourceStats

    def __iter__(self) -> Iterator[Batch]: ...


def check_batch(batch: Batch, inputs: list[InputSpec], where: str = "calibration data") -> None:
    """Raise DataError naming the input, the expected and the actual shape/dtype on any mismatch."""
    expected = {i.name: i for i in inputs}
    unknown = sorted(set(batch) - set(expected))
    missing = sorted(set(expected) - set(batch))
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if unknown:
            parts.append(f"unknown name(s) {unknown}")
        raise DataError(
            f"{where} does not match the model inputs: {'; '.join(parts)}; "
            f"the model expects {sorted(expected)}.",
            "name the arrays after the model inputs (npz keys), or map them with input_map.",
        )
    for name, arr in batch.items():
        spec = expected[name]
        if arr.dtype != spec.dtype:
            raise DataError(
                f"{where}: input '{name}' has dtype {arr.dtype}, the model expects {spec.dtype}.",
                f"convert the data to {spec.dtype} (preprocess.dtype in the recipe).",
            )
        if arr.ndim != len(spec.shape) or any(
            want is not None and want != got for want, got in zip(spec.shape, arr.shape, strict=False)
        ):
            want_s = "x".join("?" if d is None else str(d) for d in spec.shape)
            got_s = "x".join(str(d) for d in arr.shape)
            fixed = [
                i
                for i, (w, g) in enumerate(zip(spec.shape, arr.shape, strict=False))
                if i and w is not None and w != g
            ]
            hint = "reshape or preprocess the data to the model's input shape, batch first."
            if arr.ndim == len(spec.shape) and fixed:  # e.g. a 17-step trial, a model exported at 20 steps
                hint = (
                    f"the model fixes axis {fixed[0]} at {spec.shape[fixed[0]]}; for variable-length data export it "
                    f"with a dynamic axis (PyTorch: --dynamic-axis {name}:{fixed[0]}), or crop/pad the data."
                )
            raise DataError(
                f"{where}: input '{name}' has shape {got_s}, the model expects {want_s} (? = any).", hint
            )
