"""16-bit activations on the few tensors whose outliers 8 bits cannot hold (static; on by default under the
transformer placement).

Transformer encoders carry a handful of activation tensors with a few huge values (BERT's FFN
output and residual stream: |x| up to ~200 where 99.9 % of values are below ~2; Bondarenko et al.,
"Understanding and Overcoming the Challenges of Efficient Transformer Quantization", EMNLP 2021).
One 8-bit grid over such a range leaves the ordinary values a handful of steps, so the SQNR of an
ordinary token in that tensor drops far below that of the other tensors.

``promote_sensitive`` measures, for every calibrated 8-bit activation, that own SQNR per row
``10·log10(Σx² / Σ(x - DQ(Q(x)))²)`` over each vector along the last axis (a token), averaged in dB,
on one calibration batch (the float model's values on the calibrated grid), and gives 16 bits
(signed, same range; ONNX Runtime runs int16 Q/DQ) to each tensor below ``below_db``.  Every
promoted tensor is recorded with its 8- and 16-bit SQNR in the plan (the entry's note) and in the
report.  Consumers of a 16-bit tensor run their float kernel between DQ
and Q, so each promotion costs speed: the threshold trades the two.

``recipe.act16_below_db`` is a threshold in dB, ``"off"``, or ``"auto"`` (the default): ``AUTO_DB`` (25 dB)
when the plan uses the transformer placement (only MatMul/Gemm/Conv inputs quantized:
``Planner.matmul_inputs_only``) with 8-bit activations, off otherwise, so CNNs and every other graph
are untouched.  Why 25 dB on transformers: all-MiniLM-L6-v2's GELU outputs (the FFN down-projection
inputs) widen with more calibration sentences (min-max maxima 1.3-2.9 with 32, 6.8-17.7 with 128), and
their 8-bit grid then leaves ordinary tokens a few steps: the default's mean cosine against float fell
from 0.9980 (64 sentences) to 0.9925 (128); with auto it is 0.9982 at 128 (4 GELU outputs and 1
attention-context Reshape at 16 bits, 1.66x float against 2.31x all 8-bit) and the same file at 64,
where no tensor is below 25 dB (``benchmarks/results/bench_transformers_calib128.md``); their 8-bit
range chosen by error instead (MSE-optimal clipping, 8-bit speed) reached 0.9967 at 128.  Auto measures
only the tensors a MatMul/Gemm reads: a 16-bit Conv input loses ORT's QLinearConv, and on PP-OCRv4 rec
(conv backbone, attention neck: transformer placement) 25 dB over every activation promoted 5 Conv inputs,
+0.26 dB output SQNR at 0.60x the 8-bit model's speed (30.7 against 18.3 ms, interleaved, load 9); no
MatMul input there is below 25 dB.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnx

from edgequant.plan import QuantPlan
from edgequant.recipe.schema import Recipe
from edgequant.runtime import OrtRuntime
from edgequant.runtime.cpu import CpuFeatures
from edgequant.schemes.qparams import fake_quant, qparams_from_range
from edgequant.schemes.spec import QuantSpec

_CHUNK = 48  # tensors fetched per run: bounds the memory of one pass
AUTO_DB = 25.0  # act16_below_db "auto" under the transformer placement (module doc)
_AUTO = (
    ", applied automatically: act16_below_db auto under the transformer placement, MatMul/Gemm inputs; "
    "--act16-below-db off keeps 8 bits"
)


def threshold(recipe: Recipe, model: onnx.ModelProto, cpu: CpuFeatures) -> float | None:
    """The own-SQNR threshold in dB that ``recipe.act16_below_db`` means for ``model`` (the float model
    the plan was made from), or None (no tensor is measured): a number is itself; ``"off"``, a method
    other than static, or activations other than 8 bits give None; ``"auto"`` gives ``AUTO_DB`` when the
    plan uses the transformer placement, else None."""
    value = recipe.act16_below_db
    if recipe.method != "static" or recipe.act_bits != 8 or value is None or value == "off":
        return None
    if value != "auto":
        return float(value)
    from edgequant import planner

    return AUTO_DB if planner.Planner(model, recipe, cpu).matmul_inputs_only else None


def _own_sqnr(x: np.ndarray, lo: float, hi: float, spec: QuantSpec) -> float:
    """Mean over rows (vectors along the last axis: tokens in a transformer) of each row's SQNR in dB.

    A tensor-wide SQNR is dominated by the outliers' energy and hides the rows whose ordinary values
    the wide grid wipes out; rows with no signal, or no error, are left out of the mean."""
    scale, zero = qparams_from_range(lo, hi, spec)
    x = np.asarray(x, np.float32)
    rows = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    err = (rows - fake_quant(rows, scale, zero, spec)).astype(np.float64)
    signal, noise = np.sum(rows.astype(np.float64) ** 2, axis=1), np.sum(err**2, axis=1)
    ok = (signal > 0) & (noise > 0)
    return float(np.mean(10 * np.log10(signal[ok] / noise[ok]))) if ok.any() else float("inf")


def promote_sensitive(
    model: onnx.ModelProto,
    plan: QuantPlan,
    batch: dict[str, np.ndarray],
    runtime: OrtRuntime,
    below_db: float,
    auto: bool = False,
) -> tuple[QuantPlan, dict[str, Any]]:
    """Switch the 8-bit activations whose own SQNR is below ``below_db`` to 16 bits; returns the plan
    and a report section (``tensors``: name, 8-bit and 16-bit SQNR in dB; ``auto``: the threshold came
    from ``act16_below_db: auto``, see :func:`threshold`, and only tensors that a MatMul/Gemm of
    ``model`` reads are candidates)."""
    t0 = time.perf_counter()
    dense = {i for n in model.graph.node if n.op_type in ("MatMul", "Gemm") for i in n.input}
    acts = [
        e
        for e in plan.tensors.values()
        if e.role == "activation" and e.spec.bits == 8 and e.lo is not None and (not auto or e.name in dense)
    ]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    promoted: list[dict[str, Any]] = []
    for start in range(0, len(acts), _CHUNK):
        chunk = acts[start : start + _CHUNK]
        del probe.graph.output[:]
        probe.graph.output.extend(
            onnx.helper.make_tensor_value_info(e.name, onnx.TensorProto.FLOAT, None) for e in chunk
        )
        values = runtime.run(probe, batch, [e.name for e in chunk])
        for e in chunk:
            assert e.lo is not None and e.hi is not None
            x = values[e.name]
            db8 = _own_sqnr(x, e.lo, e.hi, e.spec)
            if db8 >= below_db:
                continue
            spec16 = QuantSpec(**{**e.spec.to_dict(), "bits": 16, "signed": True})
            db16 = _own_sqnr(x, e.lo, e.hi, spec16)
            e.spec = spec16
            e.note = (
                f"16-bit: its own SQNR on the calibration batch is {db8:.1f} dB at 8 bits (below "
                f"{below_db:g} dB{_AUTO if auto else ''}), {db16:.1f} dB at 16 bits."
            )
            promoted.append({"tensor": e.name, "sqnr8_db": round(db8, 2), "sqnr16_db": round(db16, 2)})
    note = ""
    if promoted:
        plan.opset = max(plan.opset, 21)
        note = (
            f"{len(promoted)} of {len(acts)} activation tensor(s) use 16 bits (own SQNR at 8 bits below "
            f"{below_db:g} dB{_AUTO if auto else ''}): "
            + ", ".join(p["tensor"] for p in promoted[:6])
            + (", ..." if len(promoted) > 6 else "")
        )
        plan.notes.append(note)
    info = {
        "below_db": below_db,
        "auto": auto,
        "note": note,
        "measured": len(acts),
        "tensors": promoted,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return plan, info
