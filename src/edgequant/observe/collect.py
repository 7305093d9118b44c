"""``collect``: stream calibration batches through ONNX Runtime and keep only running statistics.

For the requested tensors, ``collect`` builds in memory a copy of the model whose graph outputs are
exactly those tensors (never a file in the working directory), opens an ORT session on it, and for
each batch of ``source`` fetches them, feeds each array to its observer and drops it.  Requested
graph inputs are observed straight from the feed (ORT cannot fetch an input as an output).
Requested initializers (weights) and non-float tensors are a ModelError naming them.

Memory.  Observers hold constant-size statistics (see :mod:`edgequant.observe.observers`), so peak
memory does not grow with the number of samples.  What a batch costs is the fetched arrays: their
size is estimated from ONNX shape inference with the first batch's concrete input shapes (tensors
whose shape stays unknown are measured on the first batch by a probe run; when that one run
measured them all and everything fits the budget, pass 1 observes the probe's outputs instead of
fetching them again for the first batch).  If the sum exceeds
``memory_budget_bytes``, the tensors are split into groups in graph order and the source is read
once per group ("passes"); every pass sees the same data, so the ranges equal those of one pass.
A single tensor larger than the budget is a group of its own (logged).  Batches whose shapes vary
(e.g. sequence lengths) are fine: the histograms merge across shapes.  The estimate uses the first
batch; later, larger batches may exceed it proportionally.

``source`` is read once per pass (pass 1 also sizes the outputs from its first batch), so it must be
re-iterable (a list, or a CalibrationSource) when more than one pass is needed; a one-shot iterator
is then a DataError before anything runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from edgequant.data.conform import WholeFeed
from edgequant.errors import DataError, ModelError, RecipeError, first_line
from edgequant.observe.observers import Observer, create_observer
from edgequant.runtime import OrtRuntime

logger = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]
_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}


@dataclass
class CollectResult:
    """Observed ranges per tensor, with what it took to get them."""

    ranges: dict[str, tuple[float, float]]
    sentinels: dict[str, int]
    samples: int
    batches: int
    passes: int
    seconds: float
    peak_tracked_bytes: int
    observers: dict[str, Observer] = field(default_factory=dict)  # for a range search over methods


@dataclass(frozen=True)
class _TensorInfo:
    elem_type: int  # 0 = unknown
    shape: tuple[int | None, ...] | None  # None = rank unknown


def collect(
    model: onnx.ModelProto,
    source: Iterable[Batch],
    tensors: Sequence[str],
    *,
    method: str = "minmax",
    percentile: float = 99.99,
    qbits: int = 8,
    symmetric: bool = False,
    runtime: OrtRuntime | None = None,
    max_samples: int | None = None,
    memory_budget_bytes: int = 1 << 30,
    progress: Callable[[int, int | None], None] | None = None,
    full_range: Collection[str] = (),
) -> CollectResult:
    """Ranges of ``tensors`` over ``source`` (see the module docstring); the tensors in ``full_range``
    get their observed min and max whatever ``method`` says."""
    start = time.perf_counter()
    names = list(dict.fromkeys(tensors))
    observers: dict[str, Observer] = {
        n: create_observer(
            "minmax" if n in full_range else method, percentile=percentile, qbits=qbits, symmetric=symmetric
        )
        for n in names
    }
    if max_samples is not None and max_samples < 1:
        raise RecipeError(
            f"max_samples {max_samples} must be >= 1 (or None for all).", "use a positive count."
        )
    if memory_budget_bytes < 1:
        raise RecipeError(f"memory_budget_bytes {memory_budget_bytes} must be >= 1.", "use e.g. 1 << 30.")
    if not names:
        return CollectResult({}, {}, 0, 0, 0, time.perf_counter() - start, 0)
    runtime = runtime or OrtRuntime()
    feed_names, fetch_names = _classify(model, names)
    stream = _limited(source, max_samples)
    first = next(stream, None)
    if first is None:
        raise DataError(
            "the calibration source yielded no batches.", "check the calibration data path and filters."
        )
    sizes, probed = _estimate_bytes(model, fetch_names, first, runtime, memory_budget_bytes)
    groups = _group(fetch_names, sizes, memory_budget_bytes) or [[]]
    first_group = set(groups[0])
    probed = {n: a for n, a in probed.items() if n in first_group}  # observed on pass 1's first batch
    head = [first]  # pass 1 starts with the batch already read; popped so it is not kept
    del first
    if len(groups) > 1:
        logger.info(
            "collect: %d tensors in %d passes (budget %d bytes)", len(names), len(groups), memory_budget_bytes
        )
        if iter(source) is source:
            raise DataError(
                f"fetching the {len(fetch_names)} requested tensors needs {len(groups)} passes over the "
                f"calibration data under memory_budget_bytes={memory_budget_bytes}, but the source is a "
                f"one-shot iterator ({type(source).__name__}).",
                "pass a re-iterable source (a list of batches or a CalibrationSource), or raise "
                "memory_budget_bytes so one pass suffices.",
            )

    samples_per_pass: int | None = None
    batches_per_pass = 0
    done = 0
    peak = 0
    for pass_index, group in enumerate(groups):
        session = (
            runtime.session(_augment(model, group), what="the model with calibration outputs")
            if group
            else None
        )
        samples = batches = 0
        try:
            batches_in = _prepend(head, stream) if pass_index == 0 else _limited(source, max_samples)
            for batch in batches_in:
                if pass_index == 0:
                    for name in feed_names:
                        observers[name].update(batch[name])
                if session is not None:
                    todo = [n for n in group if n not in probed]  # the probe already fetched the rest
                    outs = session.run(batch, todo) if todo else {}
                    outs.update(probed)
                    probed = {}
                    for name in group:
                        _check_float(name, outs[name])
                        observers[name].update(outs[name])
                    del outs
                n = max(_batch_size(batch), 1)  # a batch that is not batch-first is one sample
                samples += n
                batches += 1
                done += n
                peak = max(peak, sum(o.tracked_bytes for o in observers.values()))
                if progress is not None:
                    total = len(groups) * (
                        samples_per_pass if samples_per_pass is not None else max_samples or 0
                    )
                    progress(done, total or None)
        finally:
            if session is not None:
                session.close()
        if samples_per_pass is None:
            samples_per_pass, batches_per_pass = samples, batches
        elif samples != samples_per_pass:
            raise DataError(
                f"the calibration source gave {samples} samples on pass {pass_index + 1} but "
                f"{samples_per_pass} on pass 1; collect reads it once per pass ({len(groups)} passes).",
                "pass a re-iterable source (a list or a CalibrationSource, not a generator), or raise "
                "memory_budget_bytes so one pass suffices.",
            )
    ranges: dict[str, tuple[float, float]] = {}
    for name in names:
        try:
            ranges[name] = observers[name].compute()
        except DataError as exc:
            raise DataError(f"tensor '{name}': {exc.detail}", exc.hint) from exc
    return CollectResult(
        ranges=ranges,
        sentinels={n: observers[n].sentinels for n in names},
        samples=samples_per_pass or 0,
        batches=batches_per_pass,
        passes=len(groups),
        seconds=time.perf_counter() - start,
        peak_tracked_bytes=peak,
        observers=observers,
    )


def _classify(model: onnx.ModelProto, names: list[str]) -> tuple[list[str], list[str]]:
    """Split requested names into graph inputs (observed from the feed) and tensors to fetch."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer} | {t.name for t in graph.sparse_initializer}
    inputs = {i.name: i for i in graph.input if i.name not in initializers}
    produced = {o for node in graph.node for o in node.output if o}
    known = _declared_types(model)
    feed: list[str] = []
    fetch: list[str] = []
    for name in names:
        if name in initializers:
            raise ModelError(
                f"'{name}' is an initializer (a weight), not an activation; collect observes activations.",
                "take weight ranges from the weight itself (schemes.weight_ranges), not from calibration.",
            )
        if name not in inputs and name not in produced:
            raise ModelError(
                f"'{name}' is not a graph input or a node output of the main graph, so it cannot be observed "
                f"(the graph has {len(inputs)} inputs and {len(produced)} node outputs).",
                "request tensors by their exact names from 'edgequant inspect MODEL'; tensors inside "
                "If/Loop subgraphs cannot be observed.",
            )
        elem = known.get(name, 0)
        if elem and elem not in _FLOAT_TYPES:
            raise _not_float(name, onnx.TensorProto.DataType.Name(elem))
        (feed if name in inputs else fetch).append(name)
    return feed, fetch


def _declared_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    infos = [*graph.input, *graph.output, *graph.value_info]
    return {v.name: v.type.tensor_type.elem_type for v in infos if v.type.HasField("tensor_type")}


def _not_float(name: str, type_name: str) -> ModelError:
    return ModelError(
        f"tensor '{name}' has type {type_name}; only float tensors are observed for quantization ranges.",
        "request only float activations (integer tensors such as indices or shapes are not quantized).",
    )


def _check_float(name: str, arr: np.ndarray) -> None:
    if np.asarray(arr).dtype.kind != "f":
        raise _not_float(name, str(np.asarray(arr).dtype))


def _batch_size(batch: Batch) -> int:
    """Samples in a batch: the shared axis-0 size, or 1 for a batch that is not batch-first.

    A sequence-first recurrent model (``x: T x N x D`` with state ``h0: 1 x N x H``) gets its
    batches whole, as the data layer passes them; such a batch counts as one sample and is
    never cut by ``max_samples``.
    """
    if not batch:
        raise DataError("a calibration batch holds no arrays.", "map every model input name to an array.")
    if isinstance(batch, WholeFeed):  # the data layer's whole feed dict (data.conform.WholeFeed)
        return -1
    sizes = {np.shape(arr)[0] if np.ndim(arr) else None for arr in batch.values()}
    if len(sizes) == 1 and None not in sizes:
        return int(sizes.pop())  # type: ignore[arg-type]
    return -1


def _limited(source: Iterable[Batch], max_samples: int | None) -> Iterator[Batch]:
    """Batches of ``source``, the last one truncated so that at most ``max_samples`` are seen."""
    seen = 0
    if max_samples is not None and max_samples < 1:
        return
    for batch in source:
        n = _batch_size(batch)
        if n < 0:  # not batch-first: one whole sample
            n = 1
        elif max_samples is not None and seen + n > max_samples:
            keep = max_samples - seen
            batch = {k: v[:keep] for k, v in batch.items()}
            n = keep
        seen += n
        yield batch
        if max_samples is not None and seen >= max_samples:
            return  # without reading another batch from the source


def _prepend(head: list[Batch], rest: Iterator[Batch]) -> Iterator[Batch]:
    while head:
        yield head.pop()
    yield from rest


def _augment(model: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are exactly ``outputs`` (in memory).

    Original outputs keep their declaration; added ones declare only the element type when it is
    known (a stale or batch-fixed ``value_info`` shape must not constrain the fetched tensor).
    """
    declared = {v.name: v for v in model.graph.output}
    types = _declared_types(model)
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    del aug.graph.output[:]
    for name in outputs:
        value = onnx.ValueInfoProto()
        if name in declared:
            value.CopyFrom(declared[name])
        elif types.get(name):
            value = onnx.helper.make_tensor_value_info(name, types[name], None)
        else:
            value.name = name
        aug.graph.output.append(value)
    return aug


def _estimate_bytes(
    model: onnx.ModelProto, names: list[str], first: Batch, runtime: OrtRuntime, budget: int
) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """Bytes of each tensor for the first batch: from shape inference, else measured by a probe run.

    When one probe run measured every unknown tensor, its outputs are returned too, so that pass 1
    observes them instead of running the first batch for them again.
    """
    if not names:
        return {}, {}
    infos = _inferred(model, first)
    sizes: dict[str, int] = {}
    unknown: list[str] = []
    for name in names:
        info = infos.get(name)
        if info is not None and info.elem_type and info.elem_type not in _FLOAT_TYPES:
            raise _not_float(name, onnx.TensorProto.DataType.Name(info.elem_type))
        if info is None or info.shape is None or any(d is None for d in info.shape) or not info.elem_type:
            unknown.append(name)
            continue
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(info.elem_type).itemsize
        sizes[name] = int(np.prod(info.shape, dtype=np.int64)) * itemsize  # type: ignore[arg-type]
    probed: dict[str, np.ndarray] = {}
    if unknown:
        logger.info("collect: measuring %d tensor sizes on the first batch", len(unknown))
        guess = max([*sizes.values(), sum(int(a.nbytes) for a in first.values())])
        probe_groups = _group(unknown, dict.fromkeys(unknown, guess), budget)
        for group in probe_groups:
            session = runtime.session(_augment(model, group), what="the model with calibration outputs")
            try:
                outs = session.run(first, group)
            finally:
                session.close()
            for name in group:
                _check_float(name, outs[name])
                sizes[name] = int(outs[name].nbytes)
            if len(probe_groups) == 1 and sum(sizes.values()) <= budget:  # what pass 1 fetches anyway
                probed = outs
            del outs
    return sizes, probed


def _inferred(model: onnx.ModelProto, first: Batch) -> dict[str, _TensorInfo]:
    """Types and shapes from ONNX shape inference with the first batch's input shapes."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    for value in work.graph.input:
        arr = first.get(value.name)
        if arr is None or not value.type.HasField("tensor_type"):
            continue
        shape = value.type.tensor_type.shape
        shape.ClearField("dim")
        for d in np.shape(arr):
            shape.dim.add().dim_value = int(d)
    try:
        work = onnx.shape_inference.infer_shapes(work, data_prop=True)
    except Exception as exc:  # inference is only an estimate here; sizes are then measured instead
        logger.info("collect: shape inference failed (%s); measuring sizes instead", first_line(exc))
    out: dict[str, _TensorInfo] = {}
    for v in [*work.graph.input, *work.graph.output, *work.graph.value_info]:
        if not v.type.HasField("tensor_type"):
            continue
        tt = v.type.tensor_type
        shape = (
            tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
            if tt.HasField("shape")
            else None
        )
        out[v.name] = _TensorInfo(tt.elem_type, shape)
    return out


def _group(names: list[str], sizes: dict[str, int], budget: int) -> list[list[str]]:
    """Greedy split of ``names`` (in order) into groups whose estimated bytes fit ``budget``."""
    groups: list[list[str]] = []
    current: list[str] = []
    used = 0
    for name in names:
        size = sizes[name]
        if current and used + size > budget:
            groups.append(current)
            current, used = [], 0
        if size > budget:
            logger.warning(
                "collect: tensor '%s' alone needs %d bytes per batch, over the budget %d", name, size, budget
            )
        current.append(name)
        used += size
    if current:
        groups.append(current)
    return groups
