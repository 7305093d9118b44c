"""Prove an imported ONNX model numerically: run it in ONNX Runtime and compare with the source framework.

Shared by every importer (``torch_import``, ``tf_import``).  :func:`verify_onnx` takes the ONNX
model, one feed dict per run, and the source framework's outputs (arrays, or a callable that
computes them from a feed), and returns the agreement or raises; :func:`verify_and_save` then
writes the model atomically and returns the :class:`ImportReport` (the importers' last step).

Per run and per output, with ``y`` the source output and ``ŷ`` ONNX Runtime's:

* ``max|y - ŷ|`` and SQNR = 10·log10(Σy² / Σ(y - ŷ)²), both in float64;
* NaN/inf must sit at the same places with the same values; the numbers are compared on the rest;
* an output fails when SQNR < ``threshold_db`` *and* its max abs diff exceeds
  ``1e-6·max(1, max|y|)`` (an all-zero or exactly-matched output has no meaningful SQNR);
* a shape difference is a failure on its own (usually a wrong dynamic axis).

Any failure is one ModelError naming the output, the run and both numbers; the caller writes
nothing.  Otherwise the result is the worst max abs diff and the lowest SQNR over all runs and
outputs.  :func:`second_batch` builds the second run's inputs (batch ``B + 2``, repeated rows with
seeded 1% noise) that checks a dynamic batch axis; :func:`quiet` captures converter noise (prints,
warnings, log records) and re-logs it at DEBUG level.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgequant.errors import ModelError
from edgequant.model.io import opset_of, save_model
from edgequant.runtime import OrtRuntime
from edgequant.schemes import sqnr_db

log = logging.getLogger(__name__)

_QUIET_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch._export", "onnxscript", "onnx_ir")
RUN_LABELS = ("example inputs", "second batch size")

Feed = Mapping[str, np.ndarray]
Reference = Callable[[Feed], Sequence[np.ndarray]] | Sequence[Sequence[np.ndarray]]


@dataclass(frozen=True)
class ImportReport:
    """What an import produced and how closely the ONNX model matches the source framework."""

    source: str
    onnx_path: Path
    max_abs_diff: float
    sqnr_db: float
    opset: int
    seconds: float


def verify_onnx(
    model: onnx.ModelProto,
    feeds: Sequence[Feed],
    reference: Reference,
    *,
    threshold_db: float,
    what: str,
    run_labels: Sequence[str] = RUN_LABELS,
) -> tuple[float, float]:
    """(worst max abs diff, lowest SQNR dB) of ``model`` in ONNX Runtime against ``reference``.

    ``feeds`` holds one dict (ONNX input name -> array) per run.  ``reference`` is either the source
    framework's outputs per run (in ``model.graph.output`` order) or a callable computing them from
    a feed dict.  ``what`` names the import in error messages (e.g. "export of ConvNet").
    """
    refs = [list(reference(f)) for f in feeds] if callable(reference) else [list(r) for r in reference]
    if len(refs) != len(feeds):
        raise ModelError(
            f"{what}: {len(refs)} reference run(s) were given for {len(feeds)} feed(s).",
            "give one list of source-framework outputs per feed dict.",
        )
    graph_out = [o.name for o in model.graph.output]
    for label, ref in zip(_labels(run_labels, len(refs)), refs, strict=True):
        if len(ref) != len(graph_out):
            raise ModelError(
                f"{what}: the ONNX graph has {len(graph_out)} output(s) {graph_out} but the source model "
                f"returned {len(ref)} on the {label}.",
                "return a flat tuple of tensors from the source model (no None, no constants).",
            )
    got = run_onnx(model, feeds)
    return compare_outputs(refs, got, graph_out, threshold_db, what, run_labels)


def verify_and_save(
    model: onnx.ModelProto,
    feeds: Sequence[Feed],
    reference: Reference,
    out_path: Path,
    *,
    source: str,
    threshold_db: float,
    what: str,
    started: float,
) -> ImportReport:
    """:func:`verify_onnx`, then write ``model`` atomically to ``out_path``, then the ImportReport.

    Nothing is written when the check fails.  ``source`` labels the report (e.g. "torch:ConvNet");
    ``started`` is the ``time.perf_counter()`` reading taken when the import began.
    """
    diff, sqnr = verify_onnx(model, feeds, reference, threshold_db=threshold_db, what=what)
    save_model(model, out_path)
    return ImportReport(
        source=source,
        onnx_path=Path(out_path),
        max_abs_diff=diff,
        sqnr_db=sqnr,
        opset=opset_of(model),
        seconds=time.perf_counter() - started,
    )


def _labels(run_labels: Sequence[str], n: int) -> list[str]:
    return [run_labels[i] if i < len(run_labels) else f"run {i}" for i in range(n)]


def compare_outputs(
    reference: Sequence[Sequence[np.ndarray]],
    candidate: Sequence[Sequence[np.ndarray]],
    output_names: Sequence[str],
    threshold_db: float,
    what: str,
    run_labels: Sequence[str] = RUN_LABELS,
) -> tuple[float, float]:
    """(worst max abs diff, lowest SQNR) over runs x outputs; ModelError on a mismatch (see module doc)."""
    worst_diff, worst_sqnr = 0.0, float("inf")
    failures: list[str] = []
    labels = _labels(run_labels, len(reference))
    for label, refs, cands in zip(labels, reference, candidate, strict=True):
        for name, ref, got in zip(output_names, refs, cands, strict=True):
            if tuple(ref.shape) != tuple(got.shape):
                raise ModelError(
                    f"{what}: output '{name}' has shape {tuple(got.shape)} in ONNX Runtime but "
                    f"{tuple(ref.shape)} in the source model (on the {label}).",
                    "the export is wrong; check dynamic axes, or export with dynamic_batch=False.",
                )
            r64, g64 = ref.astype(np.float64), got.astype(np.float64)
            odd = ~np.isfinite(r64) | ~np.isfinite(g64)
            if odd.any():  # NaN/inf must match exactly; the numbers are compared on the finite rest
                if not np.array_equal(r64[odd], g64[odd], equal_nan=True):
                    failures.append(f"'{name}' on the {label}: NaN/inf where the source model has none")
                r64, g64 = np.where(odd, 0.0, r64), np.where(odd, 0.0, g64)
            diff = float(np.max(np.abs(r64 - g64))) if r64.size else 0.0
            sqnr = sqnr_db(r64, g64)
            tiny = 1e-6 * max(1.0, float(np.max(np.abs(r64))) if r64.size else 1.0)
            worst_diff = max(worst_diff, diff)
            worst_sqnr = min(worst_sqnr, sqnr)
            if sqnr < threshold_db and diff > tiny:
                failures.append(f"'{name}' on the {label}: SQNR {sqnr:.1f} dB, max abs diff {diff:.3g}")
    if failures:
        raise ModelError(
            f"{what}: ONNX Runtime output does not match the source model (required SQNR >= "
            f"{threshold_db:.1f} dB): {'; '.join(failures[:4])}. Nothing was written.",
            "the graph traced differently from how it runs (data-dependent control flow, randomness, "
            "or an op the exporter translates wrongly); make forward() deterministic and trace-friendly.",
        )
    return worst_diff, worst_sqnr


def run_onnx(model: onnx.ModelProto, feeds: Sequence[Feed]) -> list[list[np.ndarray]]:
    """Run ``model`` in ONNX Runtime once per feed dict; outputs in graph order."""
    session = OrtRuntime().session(model, what="the exported model")
    try:
        results = []
        for feed in feeds:
            missing = [n for n in session.input_names if n not in feed]
            if missing:
                raise ModelError(
                    f"the exported model expects input(s) {missing}, which the source model was not given "
                    f"(given: {sorted(feed)}).",
                    "pass input_names matching the model's forward() arguments.",
                )
            out = session.run({n: feed[n] for n in session.input_names})
            results.append([out[n] for n in session.output_names])
        return results
    finally:
        session.close()


def second_batch(x: np.ndarray, axis: int, seed: int = 0) -> np.ndarray:
    """``x`` grown from B to B + 2 along ``axis`` by repetition; extra float rows get 1% noise."""
    b = x.shape[axis]
    idx = np.arange(b + 2) % b
    out = np.take(x, idx, axis=axis)
    if np.issubdtype(out.dtype, np.floating):
        rng = np.random.default_rng(seed)
        std = float(np.std(x)) or 1.0
        extra = [slice(None)] * out.ndim
        extra[axis] = slice(b, None)
        noise = rng.standard_normal(out[tuple(extra)].shape) * 0.01 * std
        out[tuple(extra)] = out[tuple(extra)] + noise.astype(out.dtype)
    return out


@contextlib.contextmanager
def quiet(what: str) -> Iterator[None]:
    """Silence converter prints, warnings and log records; re-log them at DEBUG."""
    buf = io.StringIO()
    saved = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(buf):
            warnings.simplefilter("always")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        for w in caught:
            log.debug("%s warning: %s", what, w.message)
        if buf.getvalue().strip():
            log.debug("%s printed: %s", what, buf.getvalue().strip()[:2000])


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 400 characters), for one-line errors."""
    text = str(exc).strip()
    return (text.splitlines()[0][:400] if text else type(exc).__name__).rstrip(".")
