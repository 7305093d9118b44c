"""The isolated-node runs of the per-layer analysis, on the current executor.

Each candidate node's run (the float model with only that node reading quantized inputs,
``layers.isolate``) is independent of the others given the samples, so on Ray they run as tasks:
the samples go to the object store once, each isolated model as its serialized bytes, in windows
of ``WINDOW`` models so that at most that many copies of the model exist at a time.  In process
they run one after another, one model at a time, as before.  Either way the output of a run is the
same array (the same ORT build and session options run the same graph on the same samples).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import onnx

from edgequant.data.base import Batch
from edgequant.runtime import OrtRuntime

WINDOW = 8


def isolated_task(
    model: bytes | onnx.ModelProto, samples: list[Batch], out_name: str, rt: OrtRuntime
) -> list[np.ndarray]:
    """The output ``out_name`` per batch (float64) of ``model`` (a ModelProto, or its bytes)."""
    proto = onnx.load_from_string(model) if isinstance(model, bytes) else model
    session = rt.session(proto, what="an augmented copy of the model for per-layer analysis")
    try:
        return [np.asarray(session.run(b, [out_name])[out_name], np.float64) for b in samples]
    finally:
        session.close()


def isolated_outputs(
    build: Callable[[int], onnx.ModelProto | None],
    indices: list[int],
    samples: list[Batch],
    out_name: str,
    rt: OrtRuntime,
) -> Iterator[tuple[int, list[np.ndarray] | None]]:
    """``(index, outputs per batch)`` for each index (None when ``build(index)`` is None), in order."""
    from edgequant.executors import current

    ex = current()
    if ex.in_process:
        for idx in indices:
            model = build(idx)
            if model is None:
                yield idx, None
                continue
            yield idx, isolated_task(model, samples, out_name, rt)
        return
    shared: Any = ex.put(samples)
    for start in range(0, len(indices), WINDOW):
        window = indices[start : start + WINDOW]
        built = {idx: build(idx) for idx in window}
        todo = [idx for idx in window if built[idx] is not None]
        args = [(built[idx].SerializeToString(), shared, out_name, rt) for idx in todo]  # type: ignore[union-attr]
        got = dict(zip(todo, ex.map(isolated_task, args), strict=True))
        for idx in window:
            yield idx, got.get(idx)
