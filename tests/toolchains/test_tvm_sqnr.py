"""The TVM report's SQNR: ``null`` only when every batch is identical (no toolchain needed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgequant.toolchains import tvm


class _Session:
    def __init__(self, outs: list[dict[str, np.ndarray]]) -> None:
        self.outs = iter(outs)

    def run(self, batch: Any) -> dict[str, np.ndarray]:
        return next(self.outs)

    def close(self) -> None:
        pass


class _Runtime:
    def __init__(self, outs: list[dict[str, np.ndarray]]) -> None:
        self.outs = outs

    def session(self, model: Any, what: str) -> _Session:
        return _Session(self.outs)


def test_one_identical_batch_does_not_make_the_outputs_identical() -> None:
    ref = np.ones((2, 3), np.float32)
    off = ref + np.float32(0.01)
    refs = [{"y": ref}, {"y": ref}]
    # numpy, pooled over both batches (docs/report.md's formula): 10·log10(Σ y² / Σ (y - y_q)²) = 43 dB
    y = np.concatenate([ref, ref]).astype(np.float64)
    yq = np.concatenate([ref, off]).astype(np.float64)
    expected = 10 * np.log10(np.sum(y**2) / np.sum((y - yq) ** 2))
    got = tvm._sqnr(_Runtime(refs), None, [{}, {}], [{"y": ref}, {"y": off}])  # type: ignore[arg-type]
    assert got["y"] is not None and abs(got["y"] - expected) < 0.01  # never None ("identical")
    assert tvm._sqnr(_Runtime(refs), None, [{}, {}], [{"y": ref}, {"y": ref}])["y"] is None  # type: ignore[arg-type]
