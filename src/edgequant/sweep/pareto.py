"""The Pareto front of a model's cells: accuracy (higher), latency (lower), file size (lower).

Cell ``a`` dominates ``b`` when it is at least as good in all three and strictly better in one;
the front is the cells no other cell dominates.  Accuracy is the row's ``score`` (the primary
metric of the quantized model: top-1 % with labels, agreement x 100 without); latency the median
ms; size the file bytes.  Rows that failed, or lack one of the three numbers, are not on it.
Latency is measured, so on a busy machine the front can change between runs by ties.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def objectives(row: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """(-score, latency ms, bytes) to minimise, or None when the row has no complete triple."""
    lat = (row.get("latency") or {}).get("median_ms")
    if row.get("status") != "ok" or row.get("score") is None or lat is None or row.get("file_bytes") is None:
        return None
    return (-float(row["score"]), float(lat), float(row["file_bytes"]))


def pareto_front(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Indices of ``rows`` on the front (module docstring), in row order."""
    obj = [objectives(r) for r in rows]
    front: list[int] = []
    for i, a in enumerate(obj):
        if a is None:
            continue
        dominated = any(
            b is not None
            and all(x <= y for x, y in zip(b, a, strict=True))
            and any(x < y for x, y in zip(b, a, strict=True))
            for j, b in enumerate(obj)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front
