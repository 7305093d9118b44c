"""``open_source``: any supported data into a validated, re-iterable CalibrationSource.

=====================  ===========================================================================
``None``               synthetic data (``stats.synthetic`` is True), ``max_samples`` (default 32) samples
``.npy`` / ndarray     one input, samples on axis 0 (memory-mapped)
``.npz`` / dict        keys = input names (one key suffices for a one-input model); labels/label/y = labels;
                       or N stacked feed dicts (``input`` Nx1x576, ``state`` Nx2x1x128; conform.stacked_feeds)
iterable of dicts      batches passed through in order, unpadded (variable lengths keep their shapes)
folder of images       jpg/png/bmp/webp, recursive; class subfolders are labels; field "image"
video / folder of them mp4/avi/mkv/mov/webm via PyAV; each frame is a sample; field "image"
``.h5`` / ``.hdf5``    ``hdf5_key`` or one key per input (``input_map``)
``.csv``               tabular rows or time-series windows
=====================  ===========================================================================

The first batch is read and checked against the model inputs before ``open_source`` returns,
so a wrong shape or dtype fails here, naming the input, not in the middle of calibration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.data.arrays import ArrayReader, from_memory, open_npy, open_npz
from edgequant.data.base import InputSpec
from edgequant.data.conform import fixed_batch
from edgequant.data.options import SourceOptions
from edgequant.data.select import (
    Part,
    Sampling,
    Split,
    StreamHoldOut,
    StreamSplitter,
    check_split_args,
    hold_out,
    sample_order,
    split_indices,
)
from edgequant.data.source import IndexedSource, Reader, StreamSource, count_stream
from edgequant.data.synthetic import synthetic
from edgequant.errors import DataError
from edgequant.recipe.schema import Preprocess

SYNTHETIC_SAMPLES = 32
_EVAL_OFFSET = 2**31  # synthetic evaluation samples use indices disjoint from calibration's
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")

Source = IndexedSource | StreamSource
Data = (
    str
    | Path
    | np.ndarray
    | Mapping[str, np.ndarray]
    | Iterable[Mapping[str, np.ndarray]]
    | Callable[[], Iterable[Mapping[str, np.ndarray]]]
    | None
)


def open_source(
    data: Data,
    inputs: list[InputSpec],
    *,
    batch_size: int = 8,
    max_samples: int | None = None,
    sampling: Sampling = "first",
    seed: int = 0,
    preprocess: Preprocess | None = None,
    input_map: dict[str, str] | None = None,
    split: Split = "all",
    eval_fraction: float = 0.2,
    options: SourceOptions | Mapping[str, Any] | None = None,
    shape_hints: Mapping[str, tuple[int, ...]] | None = None,
    held_out: int = 0,
    part: Part = "all",
) -> Source:
    """Open ``data`` as batches for ``inputs``; the first batch is validated before returning.

    ``input_map`` is ``{model input name: data field name}``.  ``split`` "calib"/"eval" take disjoint
    parts of one dataset (``eval_fraction`` of it for evaluation, seeded by ``seed``; a metadata CSV
    decides instead when given).  ``shape_hints`` (synthetic data only) give the per-sample shape of
    inputs with dynamic dims.

    ``held_out`` samples of real data (evenly spread, at most half of them; ``select.hold_out``) are
    held back for the run check: ``part="rest"`` leaves them out (calibration), ``part="held"``
    reads only them (the check).  ``stats.available`` / ``stats.held_out`` record the counts.
    Synthetic data ignores the hold-out.
    """
    check_split_args(split, eval_fraction, sampling)
    if part != "all" and split != "all":
        raise DataError(
            "a hold-out part was asked for together with a calibration/evaluation split.",
            "use one of the two.",
        )
    if max_samples is not None and max_samples < 1:
        raise DataError(
            f"max_samples must be >= 1, got {max_samples}.", "use a positive count, or None for all."
        )
    opts = SourceOptions.create(options)
    if data is None:
        source: Source = synthetic(
            inputs,
            samples=max_samples or SYNTHETIC_SAMPLES,
            batch_size=batch_size,
            seed=seed,
            shape_hints=shape_hints,
            first_index=_EVAL_OFFSET if split == "eval" else 0,
        )
    elif shape_hints:
        raise DataError(
            "shape_hints were given with real data; they only shape synthetic data.",
            "drop shape_hints; real data carry their own shapes.",
        )
    elif isinstance(data, str | Path):
        reader = _open_path(Path(data), inputs, preprocess, input_map, opts)
        source = _indexed(
            reader, inputs, batch_size, max_samples, sampling, seed, input_map, split, eval_fraction, opts,
            (held_out, part),
        )  # fmt: skip
    elif isinstance(data, np.ndarray | Mapping):
        source = _indexed(
            from_memory(data),
            inputs,
            batch_size,
            max_samples,
            sampling,
            seed,
            input_map,
            split,
            eval_fraction,
            opts,
            (held_out, part),
        )
    elif isinstance(data, Iterable) or callable(data):
        if sampling != "first":
            raise DataError(
                "sampling='random' needs data that can be read by index; "
                "an iterable of batches is read in order.",
                "use sampling='first', or pass arrays (npy/npz/dict) for random sampling.",
            )
        notes: list[str] = []
        size, _ = fixed_batch(inputs, batch_size, notes, whole_batches=True)
        splittable = all(i.shape and i.shape[0] is None for i in inputs)
        total = count_stream(data, splittable) if part != "all" else None
        hold = StreamHoldOut(total, held_out, part) if total is not None else None
        source = StreamSource(
            data,
            inputs,
            batch_size=size,
            max_samples=max_samples,
            splitter=StreamSplitter(split, eval_fraction, seed),
            input_map=input_map,
            notes=notes,
            hold=hold,
        )
        if total is not None:
            source.stats.available, source.stats.held_out = total, int(hold.held.sum()) if hold else 0
    else:
        raise DataError(
            f"calibration data of type {type(data).__name__} is not supported.",
            "pass a path, a numpy array, a dict of arrays, or an iterable of batch dicts.",
        )
    if not (part == "held" and source.stats.held_out == 0):  # nothing held back: the caller decides
        _validate_first(source)
    return source


def load_labels(data: Data, inputs: list[InputSpec], **kwargs: Any) -> np.ndarray | None:
    """Labels of the samples ``open_source(data, inputs, **kwargs)`` yields, in the same order.

    None when the format has no labels.  For formats whose unreadable files are skipped (images,
    video), this decodes a full pass; use ``source.iter_labeled()`` to get inputs and labels in one pass.
    """
    source = open_source(data, inputs, **kwargs)
    if isinstance(source, IndexedSource) and isinstance(source.reader, ArrayReader):
        return source.reader.read_labels(source.order[: source.num_samples])  # no need to read the inputs
    parts = [labels for _, labels in source.iter_labeled()]
    if any(p is None for p in parts):
        return None
    return np.concatenate([p for p in parts if p is not None])


def _validate_first(source: Source) -> None:
    it = source.iter_labeled()
    try:
        next(it)
    except StopIteration:
        raise DataError(
            f"{source.stats.description} gave no sample.", "check the data and the split."
        ) from None
    finally:
        it.close()  # type: ignore[attr-defined]


def _indexed(
    reader: Reader,
    inputs: list[InputSpec],
    batch_size: int,
    max_samples: int | None,
    sampling: Sampling,
    seed: int,
    input_map: dict[str, str] | None,
    split: Split,
    eval_fraction: float,
    opts: SourceOptions,
    holding: tuple[int, Part] = (0, "all"),
) -> IndexedSource:
    notes: list[str] = list(getattr(reader, "notes", []))
    stacked = isinstance(reader, ArrayReader) and reader.check_layout(inputs, input_map)
    if stacked:
        notes.append(f"{len(reader)} stacked feed dicts on axis 0, each fed whole")
    if opts.metadata_csv is not None:
        from edgequant.data.metadata import apply_metadata

        indices = apply_metadata(reader, Path(opts.metadata_csv), split, opts)
        notes.append(f"rows and split from '{opts.metadata_csv}'")
    else:
        indices = split_indices(len(reader), split, eval_fraction, seed, reader.description)
        if split != "all":
            notes.append(f"{split} part of a seeded split (seed {seed}, eval_fraction {eval_fraction})")
    if len(indices) == 0:
        raise DataError(
            f"{reader.description} has no sample in the '{split}' part.", "check the data and split."
        )
    if getattr(reader, "max_batch", None) == 1:  # variable-length trials without a mask: one by one
        batch_size = 1
    available = len(indices)
    size, drop_last = (1, False) if stacked else fixed_batch(inputs, batch_size, notes)
    indices = hold_out(indices, *holding, unit=size if drop_last else 1)
    held = available - len(indices) if holding[1] == "rest" else len(indices)
    order = sample_order(indices, sampling, seed)
    source = IndexedSource(
        reader,
        inputs,
        order,
        batch_size=size,
        drop_last=drop_last,
        max_samples=max_samples,
        input_map=input_map,
        prefetch=opts.prefetch,
        notes=notes,
        stacked=stacked,
    )
    if holding[1] != "all":
        source.stats.available, source.stats.held_out = available, held
    return source


def _open_path(
    path: Path,
    inputs: list[InputSpec],
    preprocess: Preprocess | None,
    input_map: dict[str, str] | None,
    opts: SourceOptions,
) -> Reader:
    if not path.exists():
        raise DataError(f"calibration data '{path}' does not exist.", "check the path given to --calib-data.")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES:
        return _open_media(path, inputs, preprocess, input_map, opts)
    if suffix == ".npy":
        return open_npy(path)
    if suffix == ".npz":
        return open_npz(path)
    if suffix in HDF5_SUFFIXES:
        from edgequant.data.hdf5 import open_hdf5

        return open_hdf5(path, inputs, input_map, opts)
    if suffix == ".csv":
        from edgequant.data.tabular import open_csv

        return open_csv(path, inputs, opts)
    supported = [".npy", ".npz", ".csv", *HDF5_SUFFIXES, *IMAGE_SUFFIXES, *VIDEO_SUFFIXES, "a folder"]
    raise DataError(
        f"calibration data '{path}' has the unsupported extension '{path.suffix}'; "
        f"supported: {', '.join(supported)}.",
        "convert the data to one of the supported formats (e.g. np.save to .npy).",
    )


def _open_media(
    path: Path,
    inputs: list[InputSpec],
    preprocess: Preprocess | None,
    input_map: dict[str, str] | None,
    opts: SourceOptions,
) -> Reader:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"folder '{path}' is empty.", "put images (jpg/png/bmp/webp) or videos in it.")
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
        if not images and not videos:
            kinds = sorted({p.suffix or p.name for p in files})[:10]
            raise DataError(
                f"folder '{path}' has no image ({', '.join(IMAGE_SUFFIXES)}) or video "
                f"({', '.join(VIDEO_SUFFIXES)}) file; found {kinds}.",
                "point --calib-data at a folder of images or videos.",
            )
        root = path
    else:
        root = path.parent
        images = [path] if path.suffix.lower() in IMAGE_SUFFIXES else []
        videos = [path] if path.suffix.lower() in VIDEO_SUFFIXES else []
    spec = _media_input(inputs, input_map)
    if images:
        from edgequant.data.images import ImageReader

        return ImageReader(images, root, spec, preprocess, where=f"images in '{path}'")
    from edgequant.data.video import VideoReader

    return VideoReader(videos, root, spec, preprocess, opts, where=f"video '{path}'")


def _media_input(inputs: list[InputSpec], input_map: dict[str, str] | None) -> InputSpec:
    """The model input that images / frames feed: the only one."""
    if len(inputs) != 1:
        raise DataError(
            f"images and video frames feed a single model input; the model has {len(inputs)}: "
            f"{[i.name for i in inputs]}.",
            "for a multi-input model, save every input (preprocessed) in one .npz keyed by input name.",
        )
    return inputs[0]


__all__ = ["ArrayReader", "load_labels", "open_source"]
