"""Calibration samples for a streaming model whose carried state the data gives as zeros.

A streaming recurrent model (Silero VAD: ``input`` + ``state`` -> ``output`` + ``stateN``) is called once
per chunk with the state it returned for the previous chunk.  Calibration data written as
``{"input": chunk, "state": zeros}`` per sample calibrates every tensor after the recurrence on the
first chunk of a stream only: with zero states the VAD's LSTM output reached [-0.76, 0.76] and the
conv after it [-6.4, 2.3], where streaming reaches [-1, 1] and [-5.2, 13.6] (the speech probability
was then clipped at 0.91).  When every sample's state input is all zeros, the float model is run over
the samples in order, each fed the state the previous one returned (the samples taken as consecutive
chunks of one stream), and those states replace the zeros.  A note in the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from edgequant.model.recurrent import state_pairs


def carry_states(model: onnx.ModelProto, calibration: Any, runtime: Any) -> tuple[Any, str | None]:
    """``calibration`` with the carried state in place of all-zero state inputs, and the note to report.

    Applies to a list/tuple of feed dicts (one call each) whose state inputs (``state_pairs``) are all
    zeros in every sample; anything else comes back unchanged with ``None``.  ``runtime`` is an
    ``OrtRuntime``; the float model runs on it.  Raises what the runtime raises for a failing run.
    """
    pairs = state_pairs(model.graph)
    if not pairs or not isinstance(calibration, list | tuple) or len(calibration) < 2:
        return calibration, None
    samples: Sequence[Any] = calibration
    if not all(isinstance(s, dict) and all(i in s for i, _ in pairs) for s in samples):
        return calibration, None
    if any(np.any(np.asarray(s[i])) for s in samples for i, _ in pairs):
        return calibration, None  # the data carries states already
    sess = runtime.session(model, "the float model (carrying calibration state)")
    try:
        state = {i: np.asarray(samples[0][i]) for i, _ in pairs}
        out: list[dict[str, np.ndarray]] = []
        for s in samples:
            feed = {**s, **state}
            out.append(feed)
            res = sess.run(feed, [o for _, o in pairs])
            state = {i: res[o].reshape(np.shape(s[i])).astype(np.asarray(s[i]).dtype) for i, o in pairs}
    finally:
        sess.close()
    ins = ", ".join(f"'{i}'" for i, _ in pairs)
    note = (
        f"state input(s) {ins} were all zeros in the {len(out)} calibration samples: calibration fed each "
        "sample the state the float model returned for the one before (the samples taken as consecutive "
        "chunks of one stream), so tensors after the recurrence get their streaming ranges, not those of "
        "a stream's first chunk."
    )
    return out, note
