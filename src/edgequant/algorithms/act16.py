"""16-bit activations on the few tensors whose outliers 8 bits cannot hold (static, opt-in).

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
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnx

from edgequant.plan import QuantPlan
from edgequant.runtime import OrtRuntime
from edgequant.schemes.qparams import fake_quant, qparams_from_range
from edgequant.schemes.spec import QuantSpec

_CHUNK = 48  # tensors fetched per run: bounds the memory of one pass


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
) -> tuple[QuantPlan, dict[str, Any]]:
    """Switch the 8-bit activations whose own SQNR is below ``below_db`` to 16 bits; returns the plan
    and a report section (``tensors``: name, 8-bit and 16-bit SQNR in dB)."""
    t0 = time.perf_counter()
    acts = [
        e for e in plan.tensors.values() if e.role == "activation" and e.spec.bits == 8 and e.lo is not None
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
                f"{below_db:g} dB), {db16:.1f} dB at 16 bits."
            )
            promoted.append({"tensor": e.name, "sqnr8_db": round(db8, 2), "sqnr16_db": round(db16, 2)})
    if promoted:
        plan.opset = max(plan.opset, 21)
        plan.notes.append(
            f"{len(promoted)} of {len(acts)} activation tensor(s) use 16 bits (own SQNR at 8 bits below "
            f"{below_db:g} dB): "
            + ", ".join(p["tensor"] for p in promoted[:6])
            + (", ..." if len(promoted) > 6 else "")
        )
    info = {
        "below_db": below_db,
        "measured": len(acts),
        "tensors": promoted,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return plan, info
