"""Fake quantization in PyTorch, on the same grid as ONNX QuantizeLinear/DequantizeLinear.

For a QuantSpec with grid ``[qmin, qmax]``, scale ``s`` and zero point ``z``::

    q     = clamp(round(x / s) + z, qmin, qmax)        # round half to even, as ONNX QuantizeLinear
    x_hat = (q - z) * s

Training passes gradients through ``round`` unchanged (the straight-through estimator, Bengio et al.
2013) and through ``clamp`` only inside the grid.  With ``s`` a parameter this is LSQ (Esser et al.,
"Learned Step Size Quantization", ICLR 2020): ``d x_hat / d s`` is ``round(x/s) - x/s`` inside the grid
and ``qmin - z`` / ``qmax - z`` outside, and the step's gradient is scaled by ``1 / sqrt(N · qmax)``
(N = elements per scale).  A power-of-two spec learns ``log2 s`` and uses ``s = 2^round(log2 s)``
(after TQT, Jain et al., "Trained Quantization Thresholds", MLSys 2020, which uses ceil; round keeps
the starting power, chosen by least error, until the gradient moves it half an octave), so every
step the model sees is a scale the integer hardware can shift by.

``ActQuantizer`` observes ranges (running min/max; an exponential moving average while training) until
its observer is frozen, then keeps (``learn=False``) or learns (LSQ) its scale.  ``WeightQuantizer``
starts from exactly the scale the ONNX path would choose (``schemes.quantize_weight``: min-max for 8
bits, the clipped MSE range for 4 bits and fewer) and learns it when the spec allows.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from edgequant.schemes.qparams import qparams_from_range, quantize_weight
from edgequant.schemes.spec import Granularity, QuantSpec, ScaleRule


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward (half to even), identity backward."""
    return (torch.round(x) - x).detach() + x


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """``x`` forward, gradient multiplied by ``g`` backward (LSQ's step-size gradient scale)."""
    return (x - x * g).detach() + x * g


def fake_quant(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """``(clamp(round(x/s) + z, qmin, qmax) - z) · s`` with STE; ``scale``/``zero`` broadcast to ``x``."""
    q = torch.clamp(round_ste(x / scale) + zero, qmin, qmax)
    return (q - zero) * scale


def _view(t: torch.Tensor, ndim: int, axis: int | None) -> torch.Tensor:
    if axis is None or t.ndim == 0:
        return t.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


def range_qparams(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``schemes.qparams_from_range`` for float scales, on tensors: (scale float32, zero float32 holding an
    integer).  Computed in float64 and rounded to float32 as the numpy function does, so both give the same
    values (a test holds this); power-of-two specs use the numpy function (its least-error search)."""
    lo_a = torch.clamp(lo.double(), max=0.0)
    hi_a = torch.clamp(hi.double(), min=0.0)
    qmin, qmax = spec.qmin, spec.qmax
    if spec.symmetric:
        scale = torch.maximum(lo_a.abs(), hi_a.abs()) / ((qmax - qmin) / 2.0)
        zero = torch.full_like(scale, 0 if spec.signed else (qmax + qmin + 1) // 2)
    else:
        scale = (hi_a - lo_a) / float(qmax - qmin)
    scale = torch.where(scale <= 0, torch.ones_like(scale), scale).clamp_min(float(np.float32(1e-12)))
    if not spec.symmetric:
        zero = torch.clamp(torch.round(qmin - lo_a / scale), qmin, qmax)
    return scale.float(), zero.float()


class _Quantizer(nn.Module):
    """Shared state: the spec, a scale parameter (or its log2 for power-of-two), a fixed zero point."""

    zero: torch.Tensor

    def __init__(self, spec: QuantSpec, channels: int, learn: bool) -> None:
        super().__init__()
        if spec.granularity is Granularity.PER_BLOCK:
            from edgequant.errors import UnsupportedError

            raise UnsupportedError(
                "block-wise quantization (weight-only int4 blocks) has no fake-quantized training form here.",
                "use per-channel or per-tensor weights for QAT (drop block_size).",
            )
        self.spec = spec
        self.pow2 = spec.scale_rule is ScaleRule.POWER_OF_TWO
        self.learn = learn
        self.enabled = True  # False: identity (the float model, for export and matching)
        # the stored value: s, or log2 s for power-of-two scales
        self.param = nn.Parameter(torch.ones(channels), requires_grad=learn)
        self.register_buffer("zero", torch.zeros(channels))

    def set_params(self, scale: np.ndarray, zero: np.ndarray) -> None:
        s = torch.as_tensor(np.asarray(scale, dtype=np.float64).reshape(-1), dtype=torch.float32)
        with torch.no_grad():
            self.param.copy_(torch.log2(s) if self.pow2 else s)
            self.zero.copy_(torch.as_tensor(np.asarray(zero).reshape(-1), dtype=torch.float32))

    def scale(self, grad_factor: float = 1.0) -> torch.Tensor:
        p = self.param if self.learn and self.training else self.param.detach()
        if self.learn and self.training and grad_factor != 1.0:
            p = grad_scale(p, grad_factor)
        if self.pow2:
            return torch.exp2(round_ste(p))
        return p.abs().clamp_min(1e-12)

    def qparams(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale float32, zero int64) as numpy, exactly the values the forward uses."""
        with torch.no_grad():
            p = self.param.detach().double()
            s = torch.exp2(torch.round(p)) if self.pow2 else p.abs().clamp_min(1e-12)
        return s.float().numpy().copy(), self.zero.detach().round().long().numpy().copy()


class WeightQuantizer(_Quantizer):
    """Fake quantization of a weight along ``axis`` (per channel) or per tensor."""

    def __init__(self, spec: QuantSpec, weight: torch.Tensor, axis: int | None, learn: bool) -> None:
        channels = (
            weight.shape[axis] if spec.granularity is Granularity.PER_CHANNEL and axis is not None else 1
        )
        super().__init__(spec, channels, learn)
        self.axis = axis if spec.granularity is Granularity.PER_CHANNEL else None
        self.reset(weight)

    def reset(self, weight: torch.Tensor) -> None:
        """Scales the ONNX path would pick for ``weight`` (min-max at 8 bits, clipped MSE at <= 4)."""
        w = weight.detach().cpu().numpy().astype(np.float32)
        spec = self.spec
        if self.axis is not None:  # the numpy helpers take the spec's axis; use the torch layout's
            spec = QuantSpec(**{**spec.to_dict(), "axis": self.axis})
        _q, scale, zero = quantize_weight(w, spec)
        self.set_params(scale, zero)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        per_scale = w.numel() / max(1, self.param.numel())
        g = 1.0 / math.sqrt(per_scale * max(1, self.spec.qmax))
        s = _view(self.scale(g), w.ndim, self.axis)
        z = _view(self.zero, w.ndim, self.axis)
        if self.spec.bits == 1:  # binary (schemes.lowbit): s · sign(w - c), STE inside |w - c| <= s
            dims = [i for i in range(w.ndim) if i != self.axis]
            d = (w - w.mean(dim=dims, keepdim=True)) if self.spec.centred else w
            inside = (d.abs() <= s).to(w.dtype)
            return (torch.where(d >= 0, 1.0, -1.0) + (d / s - (d / s).detach()) * inside) * s
        return fake_quant(w, s, z, self.spec.qmin, self.spec.qmax)


class ActQuantizer(_Quantizer):
    """Per-tensor fake quantization of an activation, with a min/max observer.

    While ``observing``: training batches update an exponential moving average of the batch min/max
    (``momentum``); with ``calibrate_in_eval`` (PTQ) eval-mode batches widen a global min/max, as
    the ONNX path's min-max calibration does.  Eval-mode batches of a QAT model observe nothing.
    The scale and zero point follow the observed range through ``schemes.qparams_from_range``.
    ``freeze_observer()`` stops that; from then on the scale is a parameter (learned when ``learn``), the zero point stays.
    """

    lo: torch.Tensor
    hi: torch.Tensor

    def __init__(self, spec: QuantSpec, learn: bool, momentum: float = 0.1) -> None:
        super().__init__(spec, 1, learn)
        self.momentum = momentum
        self.observing = True
        self.calibrate_in_eval = False  # PTQ: eval-mode batches widen a global min/max
        self.register_buffer("lo", torch.tensor(float("inf")))
        self.register_buffer("hi", torch.tensor(float("-inf")))
        self._seen = False  # a batch was observed (saves reading lo/hi back per batch)

    @property
    def calibrated(self) -> bool:
        return bool(torch.isfinite(self.lo)) and bool(torch.isfinite(self.hi))

    def freeze_observer(self) -> None:
        self.observing = False

    def _observe(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            lo, hi = (t.float() for t in torch.aminmax(x.detach()))
            if not self._seen and not self.calibrated:
                self.lo.copy_(lo)
                self.hi.copy_(hi)
            elif self.training:
                self.lo.lerp_(lo, self.momentum)
                self.hi.lerp_(hi, self.momentum)
            else:
                torch.minimum(self.lo, lo, out=self.lo)
                torch.maximum(self.hi, hi, out=self.hi)
            self._seen = True
            if self.spec.scale_rule is ScaleRule.POWER_OF_TWO:  # least-error power: schemes' numpy search
                scale, zero = qparams_from_range(float(self.lo), float(self.hi), self.spec)
                self.set_params(scale, zero)
            else:  # the same formula as qparams_from_range, on tensors (no host round trip per batch)
                s, z = range_qparams(self.lo, self.hi, self.spec)
                self.param.copy_(s)
                self.zero.copy_(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.observing and (self.training or self.calibrate_in_eval):
            self._observe(x)
        n = x.numel() / max(1, x.shape[0]) if x.ndim else 1.0
        g = 1.0 / math.sqrt(n * max(1, self.spec.qmax))
        return fake_quant(x, self.scale(g).reshape(()), self.zero.reshape(()), self.spec.qmin, self.spec.qmax)

    def range_for_export(self) -> tuple[float, float]:
        """A ``[lo, hi]`` that ``qparams_from_range`` turns back into exactly this scale and zero point."""
        s, z = self.qparams()
        s64, z0 = float(s.reshape(-1)[0]), int(z.reshape(-1)[0])
        spec = self.spec
        if spec.symmetric:
            amax = s64 * (spec.qmax - spec.qmin) / 2.0
            return -amax, amax
        return (spec.qmin - z0) * s64, (spec.qmax - z0) * s64
