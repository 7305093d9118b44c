"""Calibration data for one quantize run: the calibration part, the held-back part, and the ranges.

``recipe.check_samples`` samples are held back from calibration for the final check; calibration
streams the rest through the model (``observe.collect``), drops tensors that carry mask sentinels,
optionally searches the range method (``algorithms.calib_search``), gives tanh/sigmoid/recurrent
outputs their exact ranges (``model.recurrent``) and ties Relu/Clip inputs to their outputs' ranges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgequant import algorithms, planner
from edgequant.algorithms.calib_search import SEARCH_SAMPLES, search_ranges
from edgequant.data import CalibrationSource, input_specs, open_source
from edgequant.errors import DataError
from edgequant.export import round_trips
from edgequant.model.patterns import bounded_outputs
from edgequant.model.recurrent import apply_exact_ranges
from edgequant.plan import QuantPlan
from edgequant.planning.placement import is_transformer
from edgequant.recipe import Recipe
from edgequant.runtime import OrtRuntime

Progress = Callable[[str, int, "int | None"], None]
DataLike = str | Path | np.ndarray | dict[str, np.ndarray] | Iterable[dict[str, np.ndarray]] | None


CONV_METHOD = "percentile"  # auto, transformer placement: conv-side ranges (observer_method)
AUTO_MAX_BITS = 11  # the KL search needs 2**bits levels within the histogram's 2048 magnitude bins


def observer_method(calib_method: str, act_bits: int, transformer: bool = False) -> str:
    """The observer behind ``calib_method``: ``auto`` is entropy (KL divergence with its 99.99th-percentile
    floor, :class:`~edgequant.observe.EntropyObserver`) for activations of at most ``AUTO_MAX_BITS`` bits
    and min-max above (the KL search needs ``2**bits`` levels within the histogram's 2048 bins; a 16-bit
    grid's step is already 1/65535 of the range) and under the transformer placement (``transformer``:
    only MatMul inputs quantized; all-MiniLM-L6-v2's mean embedding cosine against float was 0.9607 with
    entropy ranges and 0.9929 with min-max, ``benchmarks/bench_transformers.py``'s data, one run; not
    reproduced since: 0.9971 against 0.9908 with 128 calibration sentences, 0.9913 against 0.9980 with 32,
    ``benchmarks/results/bench_calibration_seeds.md``, so neither is within 0.5 dB at both counts);
    ``search`` fills MSE observers, whose histograms every candidate method reads.

    Why entropy (issue #17 §5, ``benchmarks/results/bench_calibration_choice.md``, held-out output SQNR):
    it is the best of min-max, percentile and entropy on the example, Silero VAD (tied with percentile),
    PP-OCR cls and ResNet-18, where min-max is 0.2-5.4 dB below it and percentile up to 6.5 dB.
    Under the transformer placement ``calibrate`` splits ``auto`` per tensor when the graph has a Conv:
    tensors on the conv side (read by no MatMul/Gemm) get ``CONV_METHOD`` (percentile) ranges, MatMul/Gemm
    inputs their observed min-max (``conv_side_inputs``).  PP-OCRv4 rec (conv backbone, SVTR attention
    neck) counts as a transformer; with 128 calibration samples, 160 held-out lines (one-off run of this
    rule's candidates, 73 conv-side and 17 MatMul-input tensors): min-max everywhere 12.77 dB, percentile
    14.10, entropy 13.29, entropy conv side + min-max MatMul 13.25, percentile conv side + min-max
    MatMul 14.07.  A graph without Conv (all-MiniLM-L6-v2) keeps min-max everywhere, a graph outside the
    transformer placement entropy everywhere.  Choosing per tensor between the entropy and percentile
    ranges by their quantization MSE on the histogram cost PP-OCR cls 3.9 dB.
    """
    if calib_method == "auto":
        return "entropy" if act_bits <= AUTO_MAX_BITS and not transformer else "minmax"
    return "mse" if calib_method == "search" else calib_method


def conv_side_inputs(model: onnx.ModelProto, names: Iterable[str]) -> set[str]:
    """Of ``names``, the tensors that no MatMul/Gemm reads, if the graph has a Conv (else none: a pure
    transformer keeps min-max everywhere)."""
    if not any(node.op_type == "Conv" for node in model.graph.node):
        return set()
    dense = {i for node in model.graph.node if node.op_type in ("MatMul", "Gemm") for i in node.input}
    return {n for n in names if n not in dense}


def exact_ranges(observers: dict[str, Any], names: Iterable[str]) -> dict[str, tuple[float, float]]:
    """The observed (min-max) range of each of ``names``: a histogram observer keeps the exact extremes."""
    out: dict[str, tuple[float, float]] = {}
    for n in names:
        hist = getattr(observers[n], "hist", None)
        out[n] = (float(hist.lo), float(hist.hi)) if hist is not None else observers[n].compute()
    return out


def require_data(calibration: DataLike, recipe: Recipe) -> None:
    """Calibrating on random inputs needs the user's consent (``allow_synthetic``)."""
    if calibration is None and not recipe.allow_synthetic:
        raise DataError(
            f"method '{recipe.method}' calibrates activation ranges on data, and no calibration data was "
            "given; ranges from random inputs are not the ranges of real inputs.",
            "pass --calib-data PATH (npy/npz, image folder, video, HDF5, CSV), or --allow-synthetic "
            "(recipe: allow_synthetic: true) to calibrate on random inputs knowingly.",
        )


def calib_source(calibration: DataLike, model: onnx.ModelProto, recipe: Recipe) -> CalibrationSource:
    """The calibration part of the data: ``recipe.check_samples`` samples are held back for the check
    (with a metadata CSV, calibration reads its train rows and the check its evaluation rows)."""
    metadata = bool((recipe.data_options or {}).get("metadata_csv"))
    return open_source(
        calibration,
        input_specs(model),
        batch_size=recipe.batch_size,
        max_samples=recipe.calib_samples,
        sampling=recipe.sampling,
        seed=recipe.seed,
        preprocess=recipe.preprocess,
        input_map=recipe.input_map or None,
        options=recipe.data_options or None,
        split="calib" if metadata else "all",  # train rows only (the check reads the eval rows)
        held_out=recipe.check_samples if calibration is not None and not metadata else 0,
        part="rest" if calibration is not None and not metadata else "all",
    )


def held_source(calibration: DataLike, model: onnx.ModelProto, recipe: Recipe) -> CalibrationSource:
    """The samples held back from calibration for the check (``calib_source``'s complement)."""
    return open_source(
        calibration, input_specs(model), batch_size=recipe.batch_size, seed=recipe.seed,
        preprocess=recipe.preprocess, input_map=recipe.input_map or None, options=recipe.data_options or None,
        held_out=recipe.check_samples, part="held",
    )  # fmt: skip


def calibrate(
    model: onnx.ModelProto,
    plan: QuantPlan,
    source: CalibrationSource,
    recipe: Recipe,
    runtime: OrtRuntime,
    progress: Progress | None,
    calibration: DataLike = None,
    reference: onnx.ModelProto | None = None,
) -> tuple[QuantPlan, dict[str, Any]]:
    """``plan`` with the ranges of its activations measured on ``source``, and the report's calibration
    section.  The range search scores candidates against ``reference`` (the float model before the
    passes; ``model`` when None).  Raises DataError when the data yields no samples."""
    from edgequant.observe import collect

    act = next(plan.tensors[n].spec for n in plan.activations())
    placement = recipe.placement == "matmul-inputs" or (recipe.placement == "auto" and is_transformer(model))
    method = observer_method(recipe.calib_method, act.bits, transformer=placement)
    convs: set[str] = set()  # transformer placement, auto: Conv inputs get CONV_METHOD, the rest min-max
    if recipe.calib_method == "auto" and placement and act.bits <= AUTO_MAX_BITS:
        convs = conv_side_inputs(model, plan.activations())
    if convs:
        method = CONV_METHOD
    res = collect(
        model,
        source,
        plan.activations(),
        method=method,
        percentile=recipe.percentile,
        qbits=act.bits,
        symmetric=act.symmetric,
        runtime=runtime,
        max_samples=recipe.calib_samples,
        progress=(lambda done, total: progress("calibrate", done, total)) if progress else None,
        full_range=bounded_outputs(model) if method != "minmax" else (),
    )
    if res.samples == 0:
        raise DataError(
            "the calibration data yielded no samples.", "pass a non-empty dataset to --calib-data."
        )
    for name, count in res.sentinels.items():
        if count and name in plan.tensors:
            del plan.tensors[name]
            plan.notes.append(
                f"'{name}' holds {count} mask sentinel value(s) (-inf / finfo.min) on the calibration data; "
                "it stays float so the mask keeps its meaning and other values keep their resolution."
            )
    ranges, search = res.ranges, None
    if convs:  # MatMul/Gemm inputs keep their observed min-max range
        ranges = {**ranges, **exact_ranges(res.observers, [n for n in ranges if n not in convs])}
        method = f"{CONV_METHOD} (conv side), minmax (MatMul/Gemm inputs)"
    if recipe.calib_method == "search":  # the method whose ranges give the best held-out output SQNR
        extra = recipe.replace(calib_samples=recipe.calib_samples + SEARCH_SAMPLES, sampling="first")
        held = algorithms.held_out(calib_source(calibration, model, extra), recipe.calib_samples)
        default = observer_method("auto", act.bits, transformer=placement)  # kept on ties (calib_search)
        # the default's conv-side split is a candidate of its own ("auto"): the default's ranges exactly
        side = (
            conv_side_inputs(model, plan.activations()) if placement and act.bits <= AUTO_MAX_BITS else set()
        )
        ranges, search = search_ranges(
            model, plan, res, recipe, runtime, held, source, "auto" if side else default, reference,
            drop_trips=round_trips.applies(recipe), split=(side, CONV_METHOD),
        )  # fmt: skip
        if not held:  # the search scored on the first calibration batches (calib_search.search_ranges)
            plan.notes.append(
                f"the range search scored its candidates on {search['measured_on']}, not on held-out samples; "
                f"give the data more samples than calibration reads ({recipe.calib_samples}) for a held-out choice."
            )
    exact = apply_exact_ranges(model.graph, ranges := dict(ranges))  # tanh/sigmoid/recurrent outputs
    plan = plan.with_ranges(ranges)
    for name, note in exact.items():
        if name in plan.tensors:
            plan.tensors[name].note = note
    plan = planner.tie_activation_ranges(model, plan)
    info = {
        "method": recipe.calib_method,
        **({"ranges": method} if recipe.calib_method == "auto" else {}),
        "percentile": recipe.percentile if recipe.calib_method == "percentile" else None,
        "samples": res.samples,
        "batches": res.batches,
        "passes": res.passes,
        "synthetic": bool(getattr(source.stats, "synthetic", False)),
        "skipped_samples": int(getattr(source.stats, "skipped", 0)),
        "source": getattr(source.stats, "description", ""),
        **({"search": search} if search else {}),
        "held_out_for_check": int(getattr(source.stats, "held_out", 0)),
    }
    return plan, info
