"""Make a source's fields into model feeds: name mapping, the allowed dtype casts, the batch size.

Name mapping (``input_map`` is ``{model input name: source field}``):
  1. every input named in ``input_map`` reads the field it names;
  2. any other input reads the field of the same name;
  3. a single-input model fed from a single-field source needs no names at all.
A field used by no input is an error (a key that silently goes unused is usually a mistake),
except the label fields ("labels", "label", "y").

Casts: only float64 -> float32 (NumPy's default float against the usual model dtype) and
int32 <-> int64 (index tensors; int64 -> int32 is checked to be exact) are made, and each one is
recorded in the source's description.  Every other dtype mismatch is a DataError.

Batch size: axis 0 is the batch.  If the model fixes it (e.g. ``1x3x224x224``), batches have that
size whatever ``batch_size`` says, and the change is recorded.

Stacked feed dicts (``stacked_feeds``): arrays whose rank is their input's rank + 1, with the
input's fixed dims after axis 0 (Silero VAD: ``input`` ``Nx1x576``, ``state`` ``Nx2x1x128``), hold
N whole feed dicts on axis 0; each slice is fed as it is, as a list of feed dicts would be.  This is
how array files feed a model whose inputs fix different first axes (recurrent state).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from edgequant.data.base import Batch, InputSpec
from edgequant.errors import DataError

LABEL_KEYS = ("labels", "label", "y")

_CASTS = {
    (np.dtype(np.float64), np.dtype(np.float32)),
    (np.dtype(np.int32), np.dtype(np.int64)),
    (np.dtype(np.int64), np.dtype(np.int32)),
}


def map_fields(
    fields: Sequence[str], inputs: list[InputSpec], input_map: Mapping[str, str] | None, where: str
) -> dict[str, str]:
    """Return ``{input name: field name}`` or raise DataError naming what is missing or unused."""
    names = [i.name for i in inputs]
    input_map = dict(input_map or {})
    unknown_inputs = sorted(set(input_map) - set(names))
    if unknown_inputs:
        raise DataError(
            f"input_map names {unknown_inputs}, which are not model inputs; the model inputs are {names}.",
            "write input_map as {model input name: data field name}.",
        )
    data_fields = [f for f in fields if f not in LABEL_KEYS]
    if not input_map and len(inputs) == 1 and len(data_fields) == 1:
        return {names[0]: data_fields[0]}
    mapping: dict[str, str] = {}
    for name in names:
        field = input_map.get(name, name)
        if field not in fields:
            raise DataError(
                f"{where} has no field '{field}' for model input '{name}'; available: {list(data_fields)}.",
                "name the arrays after the model inputs, or map them with input_map "
                "({model input name: data field name}).",
            )
        mapping[name] = field
    unused = sorted(set(data_fields) - set(mapping.values()))
    if unused:
        raise DataError(
            f"{where} has field(s) {unused} that feed no model input (inputs: {names}).",
            "remove them, or map them with input_map; labels must be named 'labels', 'label' or 'y'.",
        )
    return mapping


class Caster:
    """Applies the allowed casts per input and records each kind once in ``notes``."""

    def __init__(self, inputs: list[InputSpec], notes: list[str]) -> None:
        self._want = {i.name: i.dtype for i in inputs}
        self._notes = notes
        self._seen: set[tuple[str, str]] = set()

    def __call__(self, batch: Batch, where: str) -> Batch:
        out: Batch = {}
        for name, arr in batch.items():
            want = self._want.get(name)
            if want is None or arr.dtype == want or (arr.dtype, want) not in _CASTS:
                out[name] = arr
                continue
            if arr.dtype == np.int64 and arr.size:
                lo, hi = int(arr.min()), int(arr.max())
                info = np.iinfo(np.int32)
                if lo < info.min or hi > info.max:
                    raise DataError(
                        f"{where}: input '{name}' is int64 with values in [{lo}, {hi}], outside int32, "
                        "which the model expects.",
                        "check the data; values for an int32 input must fit in int32.",
                    )
            out[name] = arr.astype(want)
            key = (name, str(arr.dtype))
            if key not in self._seen:
                self._seen.add(key)
                self._notes.append(f"input '{name}': {arr.dtype} data cast to {want}")
        return out


def fixed_batch(
    inputs: list[InputSpec], batch_size: int, notes: list[str], *, whole_batches: bool = False
) -> tuple[int, bool]:
    """The batch size to use, and whether the model fixes it (then a short last batch is dropped).

    ``whole_batches``: the caller passes ready-made batches through unsplit, so inputs whose first
    axis is not the batch (recurrent state such as ``[2, 1, 128]``) are fine, and a note says the
    batches are used whole when the inputs do not all fix axis 0 alike.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}.", "use a positive batch size.")
    fixed = {i.shape[0] for i in inputs if i.shape and i.shape[0] is not None}
    if not fixed:
        return batch_size, False
    if len(fixed) > 1 and whole_batches:
        notes.append(f"inputs fix different first axes {sorted(fixed)}: batches are used whole")
        return batch_size, False
    free = [i.name for i in inputs if not i.shape or i.shape[0] is None]
    if free and whole_batches:  # e.g. x [T, B, 4] beside a state [1, B, 8]: axis 0 is no shared batch
        pinned = [f"{i.name} {i.shape[0]}" for i in inputs if i.name not in free]
        notes.append(
            f"axis 0 is fixed in {', '.join(pinned)} and not in {', '.join(free)}: batches are used whole"
        )
        return batch_size, False
    if len(fixed) > 1:
        raise DataError(
            f"the model inputs fix different batch sizes {sorted(fixed)} "
            f"({[(i.name, i.shape) for i in inputs]}).",
            f"stack whole feed dicts on a new axis 0 ({_stacked_example(inputs)} in one .npz: each "
            "slice is fed whole; from Python, a list of feed dicts), or re-export the model with one "
            "batch size (or a dynamic batch axis).",
        )
    b = fixed.pop()
    if b != batch_size:
        notes.append(f"batch size {b} (fixed by the model; {batch_size} was asked)")
    return b, True


class WholeFeed(dict[str, np.ndarray]):
    """A feed dict the data layer passes whole (a stacked feed dict; a list item for a model whose inputs
    share no batch axis 0, e.g. ``x [T, B, 4]`` with a state ``[2, B, 8]``, even where ``T`` happens to be
    2): one sample wherever samples are counted (``feed_samples``), never cut."""


def whole_feed(batch: Mapping[str, Any]) -> bool:
    """True when ``batch`` is one whole feed dict rather than rows on axis 0: its inputs disagree on the
    length of axis 0 (``x [1, 16]`` with a state ``[2, 1, 8]``), or one of them is a scalar.  Such a batch
    counts as one sample wherever samples are counted (evaluation, the leakage check)."""
    sizes = {np.shape(v)[:1] for v in batch.values()}
    return len(sizes) != 1 or () in sizes


def feed_samples(batch: Mapping[str, Any], *, whole: bool = False, timed: Collection[str] = ()) -> int:
    """Samples in one batch, as every command counts them (calibration passes, the check, evaluate):
    1 for a whole feed dict (``whole``: a stacked feed dict; a ``WholeFeed``; or ``whole_feed``, e.g. ``x [1, 16]`` with a
    state ``[2, 1, 8]``), else the inputs' common axis-0 length.  ``timed`` names time-major recurrent
    inputs (``[T, B, I]``, ``model.patterns.time_major_inputs``), whose axis 1 is their batch axis."""
    rows = {k: np.moveaxis(v, 1, 0) if k in timed and np.ndim(v) > 1 else v for k, v in batch.items()}
    if not rows:
        return 0
    whole = whole or isinstance(batch, WholeFeed)
    return 1 if whole or whole_feed(rows) else len(next(iter(rows.values())))


def _fmt(shape: Sequence[Any]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def _stacked_example(inputs: list[InputSpec]) -> str:
    return ", ".join(f"{i.name} Nx{_fmt(i.shape)}" for i in inputs)


def stacked_feeds(
    shapes: Mapping[str, tuple[int, ...]],
    fields: Sequence[str],
    inputs: list[InputSpec],
    input_map: Mapping[str, str] | None,
    counts_agree: bool,
    where: str,
) -> bool:
    """Whether array fields hold N stacked feed dicts (module doc) rather than batch-first samples.

    ``shapes``: every array's shape (labels included); ``counts_agree``: their axis-0 sizes agree.
    Stacked when every array feeding an input has rank = input rank + 1 and, after axis 0, the
    input's fixed dims (None = any).  Raises DataError when some arrays are stacked and others not,
    or when the arrays disagree on the count along axis 0 (naming each array's shape and the fix).
    """
    try:
        mapping = map_fields(fields, inputs, input_map, where)
    except DataError:
        if counts_agree:
            raise
        mapping = {}  # the count error below is the first thing to fix
    specs = {i.name: i for i in inputs}

    def fits(shape: tuple[int, ...], spec: InputSpec) -> bool:
        return len(shape) == len(spec.shape) + 1 and all(
            want is None or want == got for want, got in zip(spec.shape, shape[1:], strict=True)
        )

    stacked = {name: fits(shapes[f], specs[name]) for name, f in mapping.items()}
    listed = ", ".join(f"'{k}' {_fmt(s)}" for k, s in shapes.items())
    expect = f"model inputs {', '.join(f'{i.name} {_fmt(i.shape)}' for i in inputs)}"
    if any(stacked.values()) and not all(stacked.values()):
        raise DataError(
            f"{where} mixes stacked feed dicts ({[mapping[n] for n, s in stacked.items() if s]}: the "
            f"model's shape after axis 0) with other arrays ({[mapping[n] for n, s in stacked.items() if not s]}): "
            f"{listed}; {expect}.",
            f"save every input stacked ({_stacked_example(inputs)}) or every input batch-first along "
            "the model's own first axis.",
        )
    if not counts_agree:
        layout = "stacked feed dicts" if stacked and all(stacked.values()) else "arrays"
        fix = "save every array (labels too) with the same number of samples / feed dicts on axis 0."
        if len({i.shape[0] for i in inputs if i.shape and i.shape[0] is not None}) > 1:
            fix = (
                f"the {expect} fix different first axes: stack whole feed dicts on a new axis 0 "
                f"({_stacked_example(inputs)}), labels with N rows."
            )
        raise DataError(f"{where}: the {layout} disagree on the count along axis 0: {listed}.", fix)
    return bool(stacked) and all(stacked.values())
