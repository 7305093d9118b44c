"""The two source shapes every format reduces to.

``IndexedSource``: a ``Reader`` that can read samples by index (npy, npz, HDF5, CSV, image files,
video frames).  A pass reads the indices chosen by the split and sampling (``select``), in chunks
of the batch size, and stops after ``max_samples`` good samples.  Readers of encoded files may skip
an unreadable sample (counted in ``stats.skipped``); the source then tops the batch up from the
following samples, so batches stay full.

``StreamSource``: an iterable of batch dicts (or a callable returning a fresh one), passed through
in order and unpadded, so variable-length batches keep their shapes; a batch larger than
``batch_size`` is split, never merged with another.  A batch is split only when axis 0 is
plainly its batch axis: every model input has a dynamic axis 0 and the arrays agree on its size.
Otherwise (a sequence-first LSTM with ``x: TxNxD`` and ``h0: 1xNxH``, a model with a fixed batch)
the batch is one unit, passed whole; ``max_samples`` and the split then count it as its axis-0
size when the arrays agree, else as one sample.

Both re-iterate identically (calibration may do several passes), validate every batch with
``check_batch`` and hold at most a couple of batches in memory.  ``iter_labeled()`` yields
``(batch, labels or None)`` for evaluation; ``iter()`` yields batches only.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from edgequant.data.base import Batch, InputSpec, SourceStats, check_batch, check_finite
from edgequant.data.conform import LABEL_KEYS, Caster, WholeFeed, map_fields
from edgequant.data.prefetch import prefetch
from edgequant.data.select import StreamHoldOut, StreamSplitter
from edgequant.errors import DataError

log = logging.getLogger(__name__)

Labeled = tuple[Batch, np.ndarray | None]
_MAX_EXAMPLES = 10


@dataclass
class Chunk:
    """Samples read together: fields (axis 0 = sample), labels when the format has them, what was skipped."""

    fields: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(next(iter(self.fields.values()))) if self.fields else 0


class Reader(ABC):
    """Random access to the samples of one dataset."""

    description: str = "data"
    fields: tuple[str, ...] = ()
    may_skip: bool = False  # encoded files: an unreadable sample is skipped, not fatal
    background: bool = False  # decoding is heavy: read in a prefetch thread

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def read(self, indices: np.ndarray) -> Chunk:
        """The samples at ``indices``, in that order (skipped ones left out)."""

    def read_labels(self, indices: np.ndarray) -> np.ndarray | None:
        """Labels at ``indices`` without reading the inputs; None when unknown or absent."""
        return None

    def stream(self, indices: np.ndarray, chunk: int) -> Iterator[Chunk]:
        for start in range(0, len(indices), chunk):
            yield self.read(indices[start : start + chunk])


def _reset(stats: SourceStats) -> None:
    stats.samples = 0
    stats.skipped = 0
    stats.skipped_examples = []


def _record_skips(stats: SourceStats, skipped: list[str]) -> None:
    for what in skipped:
        stats.skipped += 1
        if len(stats.skipped_examples) < _MAX_EXAMPLES:
            stats.skipped_examples.append(what)


class IndexedSource:
    def __init__(
        self,
        reader: Reader,
        inputs: list[InputSpec],
        order: np.ndarray,
        *,
        batch_size: int,
        drop_last: bool,
        max_samples: int | None,
        input_map: Mapping[str, str] | None,
        prefetch: bool,
        notes: list[str],
        stacked: bool = False,
    ) -> None:
        """``stacked``: the reader's axis 0 indexes whole feed dicts (``conform.stacked_feeds``);
        ``batch_size`` is then 1 and each one is fed without its axis 0, counted as one sample."""
        self.reader = reader
        self.stacked = stacked
        self.inputs = inputs
        self.where = reader.description
        self.mapping = map_fields(reader.fields, inputs, input_map, self.where)
        self.order = order if max_samples is None or reader.may_skip else order[:max_samples]
        self.max_samples = max_samples
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.prefetch = prefetch and reader.background
        planned = len(self.order) if max_samples is None else min(max_samples, len(self.order))
        if drop_last:
            planned -= planned % batch_size
        self.num_samples = planned  # an upper bound when unreadable samples may be skipped
        self._caster = Caster(inputs, notes)
        self._notes = notes
        self.stats = SourceStats(description=reader.description)
        self._range: tuple[float, float] | None = None
        self._refresh_description()

    def _refresh_description(self) -> None:
        notes = [*self._notes]
        if self._range is not None:  # the input values actually fed, so a wrong preprocessing shows
            notes.append(f"input values in [{self._range[0]:.4g}, {self._range[1]:.4g}]")
        extra = f" ({'; '.join(notes)})" if notes else ""
        self.stats.description = f"{self.where}{extra}"

    def __iter__(self) -> Iterator[Batch]:
        for batch, _ in self.iter_labeled():
            yield batch

    def _emit(self, fields: dict[str, np.ndarray], labels: np.ndarray | None) -> Labeled:
        if self.stacked:  # one feed dict: drop the stacking axis; it counts as a unit (StreamSource)
            fields = {f: fields[f][0] for f in self.mapping.values()}
        batch = {name: np.ascontiguousarray(fields[f]) for name, f in self.mapping.items()}
        batch = self._caster(batch, self.where)
        check_batch(batch, self.inputs, self.where)
        rows = {k: v[None] for k, v in batch.items()} if self.stacked else batch  # a feed dict is one row
        check_finite(rows, self.where, self.stats.samples, None if self.reader.may_skip else self.order)
        self.stats.samples += 1 if self.stacked else len(next(iter(batch.values())))
        for arr in batch.values():
            if arr.dtype.kind in "fiu" and arr.size:
                lo, hi = float(arr.min()), float(arr.max())
                self._range = (
                    (lo, hi) if self._range is None else (min(lo, self._range[0]), max(hi, self._range[1]))
                )
        self._refresh_description()
        return (WholeFeed(batch) if self.stacked else batch), labels

    def iter_labeled(self) -> Iterator[Labeled]:
        _reset(self.stats)
        limit = len(self.order) if self.max_samples is None else self.max_samples
        order, size = self.order, self.batch_size
        if self.prefetch:
            chunks = prefetch(lambda: self.reader.stream(order, size))
        else:
            chunks = self.reader.stream(order, size)
        buf: Chunk | None = None
        done = 0
        try:
            for chunk in chunks:
                _record_skips(self.stats, chunk.skipped)
                if chunk.skipped:
                    log.warning("%s: skipped %s", self.where, "; ".join(chunk.skipped))
                if len(chunk) == 0:
                    continue
                buf = chunk if buf is None else _concat(buf, chunk)
                while buf is not None and len(buf) >= size and done < limit:
                    take = min(size, limit - done)
                    head, buf = _cut(buf, take)
                    done += take
                    if take == size or not self.drop_last:
                        yield self._emit(head.fields, head.labels)
                if done >= limit:
                    break
            if buf is not None and len(buf) and done < limit:
                take = min(len(buf), limit - done)
                head, _ = _cut(buf, take)
                if take == size or not self.drop_last:
                    yield self._emit(head.fields, head.labels)
                else:
                    log.info(
                        "%s: dropped a last batch of %d (the model fixes batch %d)", self.where, take, size
                    )
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if self.stats.samples == 0:
            raise DataError(
                f"{self.where} gave no usable sample ({self.stats.skipped} skipped: "
                f"{'; '.join(self.stats.skipped_examples[:3])}).",
                "check that the files are in a supported format; re-create or re-download damaged ones.",
            )


def _concat(a: Chunk, b: Chunk) -> Chunk:
    fields = {k: np.concatenate([a.fields[k], b.fields[k]]) for k in a.fields}
    labels = None if a.labels is None or b.labels is None else np.concatenate([a.labels, b.labels])
    return Chunk(fields, labels)


def _cut(c: Chunk, n: int) -> tuple[Chunk, Chunk | None]:
    head = Chunk({k: v[:n] for k, v in c.fields.items()}, None if c.labels is None else c.labels[:n])
    if n >= len(c):
        return head, None
    return head, Chunk({k: v[n:] for k, v in c.fields.items()}, None if c.labels is None else c.labels[n:])


class StreamSource:
    def __init__(
        self,
        data: Iterable[Mapping[str, np.ndarray]] | Callable[[], Iterable[Mapping[str, np.ndarray]]],
        inputs: list[InputSpec],
        *,
        batch_size: int,
        max_samples: int | None,
        splitter: StreamSplitter,
        input_map: Mapping[str, str] | None,
        notes: list[str],
        hold: StreamHoldOut | None = None,
    ) -> None:
        self.data = data
        self.hold = hold
        self.inputs = inputs
        self.batch_size = batch_size
        self.max_samples = max_samples
        self.splitter = splitter
        self.input_map = input_map
        self.splittable = all(i.shape and i.shape[0] is None for i in inputs)
        self.where = "calibration data (iterable of batches)"
        self.num_samples: int | None = None
        self._caster = Caster(inputs, notes)
        self._notes = notes
        self._passes = 0
        self.stats = SourceStats(description=self.where)

    def __iter__(self) -> Iterator[Batch]:
        for batch, _ in self.iter_labeled():
            yield batch

    def _batches(self) -> Iterable[Mapping[str, np.ndarray]]:
        if callable(self.data) and not isinstance(self.data, Iterable):
            return self.data()
        if iter(self.data) is self.data and self._passes > 0:  # type: ignore[arg-type]
            raise DataError(
                "the calibration data is a one-shot iterator (e.g. a generator), "
                "and a second pass was asked for.",
                "pass a list of batches, or a function that returns a fresh iterator of batches.",
            )
        return self.data  # type: ignore[return-value]

    def _update_stats(self, done: int) -> None:
        self.stats.samples = done
        extra = f" ({'; '.join(self._notes)})" if self._notes else ""
        self.stats.description = f"{self.where}{extra}"

    def iter_labeled(self) -> Iterator[Labeled]:
        _reset(self.stats)
        self.splitter.reset()
        if self.hold is not None:
            self.hold.reset()
        batches = self._batches()
        self._passes += 1
        mapping: dict[str, str] | None = None
        done = seen = 0
        for k, raw in enumerate(batches):
            where = f"{self.where}, batch {k}"
            if not isinstance(raw, Mapping):
                raise DataError(
                    f"{where} is a {type(raw).__name__}; each batch must be a dict {{input name: array}}.",
                    "yield dicts of numpy arrays, batch first.",
                )
            arrays = {str(n): np.asarray(v) for n, v in raw.items()}
            if mapping is None:
                mapping = map_fields(list(arrays), self.inputs, self.input_map, self.where)
            label_key = next((key for key in LABEL_KEYS if key in arrays), None)
            labels = arrays[label_key] if label_key else None
            try:
                batch = {name: arrays[f] for name, f in mapping.items()}
            except KeyError as exc:
                raise DataError(
                    f"{where} lacks the field {exc}; it has {list(arrays)}.", "keep fields fixed."
                ) from exc
            n = _batch_len(batch, labels, where)
            check_finite(batch, self.where, seen)  # sample positions counted over the whole stream
            seen += 1 if n is None or not self.splittable else n
            if n is None or not self.splittable:  # a unit: passed whole, never split
                keep1 = self.splitter.mask(1)
                held1 = self.hold.mask(1) if self.hold is not None else None
                if (keep1 is not None and not keep1[0]) or (held1 is not None and not held1[0]):
                    continue
                if self.max_samples is not None and done >= self.max_samples:
                    return
                piece = self._caster(batch, where)
                check_batch(piece, self.inputs, where)
                # inputs that agree on axis 0 by chance (x [2, B, 4] beside a state [2, B, 8]) are one feed
                whole = n is None or any(i.shape[:1] != (n,) for i in self.inputs)
                done += 1 if whole else n or 0
                self._update_stats(done)
                yield (WholeFeed(piece) if whole else piece), labels
                continue
            keep = self.splitter.mask(n)
            if keep is not None:
                batch = {name: a[keep] for name, a in batch.items()}
                labels = labels[keep] if labels is not None else None
                n = int(keep.sum())
            held = self.hold.mask(n) if self.hold is not None else None
            if held is not None:
                batch = {name: a[held] for name, a in batch.items()}
                labels = labels[held] if labels is not None else None
                n = int(held.sum())
            for start in range(0, n, self.batch_size):
                if self.max_samples is not None and done >= self.max_samples:
                    return
                stop = min(start + self.batch_size, n)
                if self.max_samples is not None:
                    stop = min(stop, start + self.max_samples - done)
                piece = batch if (start, stop) == (0, n) else {m: a[start:stop] for m, a in batch.items()}
                piece = self._caster(piece, where)
                check_batch(piece, self.inputs, where)
                done += stop - start
                self._update_stats(done)
                yield piece, None if labels is None else labels[start:stop]
        if done == 0:
            raise DataError(f"{self.where} gave no sample.", "give at least one non-empty batch.")


def _batch_len(batch: Batch, labels: np.ndarray | None, where: str) -> int | None:
    """The common axis-0 size of the inputs, or None when they disagree (e.g. a sequence-first model)."""
    sizes = {a.shape[0] if a.ndim else None for a in batch.values()}
    if None in sizes or len(sizes) != 1:
        return None
    n = int(next(iter(sizes)) or 0)
    if labels is not None and (labels.ndim == 0 or labels.shape[0] != n):
        raise DataError(
            f"{where}: the labels have shape {labels.shape}, the inputs {n} samples on axis 0.",
            "give one label per sample, batch first.",
        )
    return n


def count_stream(
    data: Iterable[Mapping[str, np.ndarray]] | Callable[[], Iterable[Mapping[str, np.ndarray]]],
    splittable: bool,
) -> int | None:
    """Sample positions in a re-iterable stream (a unit batch counts as one); None for a one-shot iterator."""
    if callable(data) and not isinstance(data, Iterable):
        batches: Iterable[Mapping[str, np.ndarray]] = data()
    elif iter(data) is data:  # type: ignore[arg-type]
        return None
    else:
        batches = data  # type: ignore[assignment]
    total = 0
    for raw in batches:
        if not isinstance(raw, Mapping):
            return None  # the pass itself reports it
        arrays = {k: np.asarray(v) for k, v in raw.items() if k not in LABEL_KEYS}
        sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
        total += int(next(iter(sizes)) or 0) if splittable and len(sizes) == 1 and None not in sizes else 1
    return total
