"""Shared pieces: the BenchModel record, on-disk calibration data read batch by batch, SQNR.

Calibration data is written once as one ``.npy`` file per model input; readers take each batch with
``seek`` + ``np.fromfile`` so neither tool's peak memory includes the whole data set (no mmap: mapped
pages would count in the reader's resident set).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]
RunFn = Callable[[Feeds], dict[str, np.ndarray]]


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - got)^2) in dB over the whole array (inf when identical)."""
    ref = np.asarray(ref, np.float64)
    err = float(np.sum((ref - np.asarray(got, np.float64)) ** 2))
    sig = float(np.sum(ref**2))
    return float("inf") if err == 0.0 else float(10.0 * np.log10(max(sig, 1e-30) / err))


class DataFiles:
    """N samples per model input stored as ``<dir>/<i>.npy`` (+ ``names.json``); read in batches."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        meta = json.loads((self.folder / "names.json").read_text())
        self.names: list[str] = meta["names"]
        self.unbatched: bool = meta["unbatched"]
        self._meta: dict[str, tuple[int, tuple[int, ...], np.dtype[Any]]] = {}
        for i, name in enumerate(self.names):
            with open(self.folder / f"{i}.npy", "rb") as f:
                major, _ = np.lib.format.read_magic(f)
                read = (
                    np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read(f)
                self._meta[name] = (f.tell(), tuple(shape), np.dtype(dtype))

    @staticmethod
    def write(folder: Path, arrays: Feeds, unbatched: bool = False) -> DataFiles:
        """Save ``arrays`` (samples first); ``unbatched``: each sample is a whole feed, read one by one."""
        folder.mkdir(parents=True, exist_ok=True)
        names = list(arrays)
        for i, name in enumerate(names):
            np.save(folder / f"{i}.npy", np.ascontiguousarray(arrays[name]))
        (folder / "names.json").write_text(json.dumps({"names": names, "unbatched": unbatched}))
        return DataFiles(folder)

    def __len__(self) -> int:
        return next(iter(self._meta.values()))[1][0]

    def batches(self, batch_size: int) -> Iterator[Feeds]:
        """A fresh iterator of ``{input: array[batch]}``, each read from disk when asked for."""
        n = len(self)
        batch_size = 1 if self.unbatched else batch_size
        files = {name: open(self.folder / f"{i}.npy", "rb") for i, name in enumerate(self.names)}
        try:
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                out: Feeds = {}
                for name, f in files.items():
                    offset, shape, dtype = self._meta[name]
                    per = int(np.prod(shape[1:], dtype=np.int64))
                    f.seek(offset + start * per * dtype.itemsize)
                    out[name] = np.fromfile(f, dtype, (stop - start) * per).reshape(
                        (stop - start, *shape[1:])
                    )
                yield {k: v[0] for k, v in out.items()} if self.unbatched else out
        finally:
            for f in files.values():
                f.close()


@dataclass
class BenchModel:
    """One benchmark model: file, data makers, evaluation and a fixed latency feed."""

    name: str
    title: str
    path: Path
    source: str  # where the file comes from (package + version)
    make_calib: Callable[[int, int], Feeds]  # (samples, seed) -> arrays, samples first
    predict: Callable[[RunFn], dict[str, np.ndarray]]  # run the eval set -> named outputs
    metrics: Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], dict[str, float]]  # (float, quant)
    latency_feed: Callable[[], Feeds]
    calib_batch: int = 10  # divides 100 and 1,000: ORT 1.32 histogram calibrators fail on a short last batch
    unbatched: bool = False  # calibration samples are whole feeds (fixed-shape models): batches of 1
    conv_net: bool = True
    notes: list[str] = field(default_factory=list)

    def output_sqnr(self, ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
        """SQNR over the model's main output (the first key predict() returns)."""
        key = next(iter(ref))
        return sqnr_db(ref[key], got[key])
