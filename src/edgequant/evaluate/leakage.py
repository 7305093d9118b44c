"""Refuse evaluation samples that calibration also saw (leakage), by content.

Every evaluation sample is hashed (BLAKE2b over each input's dtype, shape and bytes, inputs in name
order); the calibration samples that quantization reads (its split and sample cap) are hashed the
same way; any common hash is a ``DataError`` naming how many samples overlap and the first one.
``compare`` splits one file given for both (``calibration_part`` and the evaluation part of the
data layer's seeded split); ``check_no_leakage`` refuses the same file given for both unsplit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.data.base import Batch, InputSpec
from edgequant.data.conform import whole_feed
from edgequant.errors import DataError


def sample_hashes(batches: Iterable[Batch]) -> list[bytes]:
    """One digest per sample, in order."""
    out: list[bytes] = []
    for b in batches:
        keys = sorted(b)
        whole = whole_feed(b)  # a feed dict whose inputs disagree on axis 0: one sample
        n = 1 if whole else len(np.asarray(b[keys[0]]))
        for i in range(n):
            h = hashlib.blake2b(digest_size=16)
            for k in keys:
                a = np.ascontiguousarray(np.asarray(b[k]) if whole else np.asarray(b[k])[i])
                h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
                h.update(a.tobytes())
            out.append(h.digest())
    return out


def same_file(calibration: Any, eval_data: Any) -> bool:
    return (
        isinstance(calibration, str | Path)
        and isinstance(eval_data, str | Path)
        and Path(calibration).resolve() == Path(eval_data).resolve()
    )


def calibration_part(
    data: str | Path, specs: list[InputSpec], options: Mapping[str, Any] | None, cap: int
) -> Batch:
    """The calibration part (``split="calib"``, at most ``cap`` samples) of one file, in memory."""
    from edgequant.data import open_source

    source = open_source(data, specs, batch_size=32, max_samples=cap, split="calib", options=options or None)
    parts = list(source)
    join = np.stack if getattr(source, "stacked", False) else np.concatenate  # stacked feed dicts stay so
    return {k: join([np.asarray(b[k]) for b in parts]) for k in parts[0]}


def check_no_leakage(
    calibration: Any,
    eval_data: Any,
    eval_batches: list[Batch],
    specs: list[InputSpec],
    options: Mapping[str, Any] | None,
    calib_samples: int,
) -> str:
    """Raise ``DataError`` when calibration and evaluation share samples; else say what was checked."""
    if calibration is None:
        return "no calibration data given: nothing to check"
    meta = bool(options and options.get("metadata_csv"))
    if isinstance(calibration, str | Path) and isinstance(eval_data, str | Path):
        same = Path(calibration).resolve() == Path(eval_data).resolve()
        if same and not meta:
            raise DataError(
                f"calibration and evaluation data are the same file '{eval_data}': the evaluation would be "
                "in-sample.",
                "pass separate files, or split one with --data-option metadata_csv=PATH and --eval-split val.",
            )
    from edgequant.data import open_source

    source = open_source(
        calibration, specs, batch_size=32, max_samples=calib_samples, split="calib" if meta else "all",
        options=options or None,
    )  # fmt: skip
    seen = set(sample_hashes(source))
    ev = sample_hashes(eval_batches)
    hits = [i for i, d in enumerate(ev) if d in seen]
    if hits:
        raise DataError(
            f"{len(hits)} of the {len(ev)} evaluation samples also appear among the {len(seen)} calibration "
            f"samples (first: evaluation sample {hits[0]}): the comparison would be in-sample.",
            "evaluate on samples calibration never saw (a 'val' or 'test' split, or a separate file).",
        )
    return f"no overlap between {len(ev)} evaluation and {len(seen)} calibration samples (content hashes)"
