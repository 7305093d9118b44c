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
from typing import Any

import numpy as np
import torch
from torch import nn

from edgequant.schemes.qparams import qparams_from_range, quantize_weight
from edgequant.schemes.spec import Granularity, QuantSpec, ScaleRule

TINY_SCALE = float(np.float32(1e-12))  # the least scale (schemes.qparams)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward (half to even), identity backward."""
    return (torch.round(x) - x).detach() + x


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """``x`` forward, gradient multiplied by ``g`` backward (LSQ's step-size gradient scale)."""
    return (x - x * g).detach() + x * g


def inside_grid(t: torch.Tensor, r: torch.Tensor, lo: Any, hi: Any) -> torch.Tensor:
    """``t`` where the rounded ``r`` is on the grid ``[lo, hi]``, else 0.  ``r`` holds integers, so with float
    bounds ``lo - 0.5 < r < hi + 0.5`` is exactly that test, done by one vectorized kernel (hardtanh's
    backward) instead of boolean masks, which cost several times more per element here."""
    if isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
        return torch.where((r >= lo) & (r <= hi), t, 0.0)
    return torch.ops.aten.hardtanh_backward(t, r, float(lo) - 0.5, float(hi) + 0.5)


class _FakeQuantSTE(torch.autograd.Function):
    """``clamp(round(x/s), lo, hi) · s`` as one autograd node (``lo = qmin - z``, ``hi = qmax - z``).

    Backward: ``x`` gets the straight-through gradient (1 where ``round(x/s)`` is inside ``[lo, hi]``, else
    0); ``s``, when it needs one, LSQ's ``round(x/s) - x/s`` inside and ``lo``/``hi`` outside, times ``g``
    and summed to ``s``'s shape.  The same values and gradients as the elementwise composition of
    ``round_ste`` and ``clamp``, in fewer tensor passes and one autograd node instead of about ten.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: Any, lo: Any, hi: Any, g: float) -> torch.Tensor:
        need_s = ctx.needs_input_grad[1]
        v = x / scale
        r = torch.round(v) if need_s else v.round_()
        q = torch.clamp(r, lo, hi)
        ctx.bounds = (lo, hi)
        if need_s:  # LSQ: d x_hat / d s = round(v) - v inside the grid, lo or hi (= the clamped q) outside
            ctx.g, ctx.scale_shape = g, scale.shape
            ctx.save_for_backward(r, q - inside_grid(v, r, lo, hi))
        else:
            ctx.save_for_backward(r)
        return q.mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        lo, hi = ctx.bounds
        r = ctx.saved_tensors[0]
        gx = inside_grid(grad, r, lo, hi) if ctx.needs_input_grad[0] else None
        gs = None
        if ctx.needs_input_grad[1]:
            gs = (grad * ctx.saved_tensors[1]).sum_to_size(ctx.scale_shape) * ctx.g
        return gx, gs, None, None, None


class _LSQStep(torch.autograd.Function):
    """``_FakeQuantSTE`` with the scale taken from its parameter inside the node: ``s = max(|p|, tiny)``
    viewed as ``view``; ``p`` gets ``sign(p) · g ·`` LSQ's gradient, summed per scale.  Saves the
    abs/clamp/reshape nodes (and their backward passes) a learned float scale costs per step."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, p: torch.Tensor, view: tuple[int, ...], lo: Any, hi: Any, g: float
    ) -> torch.Tensor:
        a = p.abs()
        s = a.clamp_min(TINY_SCALE).reshape(view)
        v = x / s
        r = torch.round(v)
        q = torch.clamp(r, lo, hi)
        ctx.bounds, ctx.view, ctx.g = (lo, hi), view, g
        # d s / d p: sign(p) where |p| is above the floor (clamp_min passes the gradient at equality too)
        ctx.save_for_backward(r, q - inside_grid(v, r, lo, hi), torch.sign(p) * (a >= TINY_SCALE))
        return q.mul_(s)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        lo, hi = ctx.bounds
        r, ds, dp = ctx.saved_tensors
        gx = inside_grid(grad, r, lo, hi) if ctx.needs_input_grad[0] else None
        gp = (grad * ds).sum_to_size(ctx.view).reshape(dp.shape) * (dp * ctx.g)
        return gx, gp, None, None, None, None


def fake_quant_ste(x: torch.Tensor, scale: Any, lo: Any, hi: Any, g: float = 1.0) -> torch.Tensor:
    """``clamp(round(x/s), lo, hi) · s``, the grid shifted by the zero point (``lo = qmin - z``,
    ``hi = qmax - z``: integers, so this equals ``(clamp(round(x/s) + z, qmin, qmax) - z) · s`` exactly).
    ``scale``: a float, or a tensor broadcasting to ``x`` (LSQ gradient times ``g`` when it requires one);
    ``lo``/``hi``: floats, or tensors broadcasting to ``x``.  Without autograd: three in-place passes."""
    if not torch.is_grad_enabled() or not (
        x.requires_grad or (isinstance(scale, torch.Tensor) and scale.requires_grad)
    ):
        return torch.clamp(torch.round(x / scale), lo, hi).mul_(scale)
    out: torch.Tensor = _FakeQuantSTE.apply(x, scale, lo, hi, g)
    return out


def fake_quant(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """``(clamp(round(x/s) + z, qmin, qmax) - z) · s`` with STE; ``scale``/``zero`` broadcast to ``x``."""
    return fake_quant_ste(x, scale, qmin - zero, qmax - zero)


def _view(t: torch.Tensor, ndim: int, axis: int | None) -> torch.Tensor:
    if axis is None or t.ndim == 0:
        return t.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


def range_qparams(lo: float, hi: float, spec: QuantSpec) -> tuple[float, int]:
    """``schemes.qparams_from_range`` for float scales on Python floats: (scale, the float32 value, as a
    float; zero point).  Computed in float64 and rounded to float32 as the numpy function does, so both
    give the same values (a test holds this) at a few microseconds per call instead of a numpy round trip.
    Power-of-two specs and non-finite ranges go to the numpy function itself (the same values)."""
    if spec.scale_rule is ScaleRule.POWER_OF_TWO or not (math.isfinite(lo) and math.isfinite(hi)):
        scale_a, zero_a = qparams_from_range(lo, hi, spec)
        return float(np.asarray(scale_a).reshape(())), int(np.asarray(zero_a).reshape(()))
    lo_a, hi_a = min(lo, 0.0), max(hi, 0.0)
    qmin, qmax = spec.qmin, spec.qmax
    if spec.symmetric:
        scale = max(abs(lo_a), abs(hi_a)) / ((qmax - qmin) / 2.0)
        zero = 0 if spec.signed else (qmax + qmin + 1) // 2
    else:
        scale = (hi_a - lo_a) / float(qmax - qmin)
    scale = max(1.0 if scale <= 0 else scale, TINY_SCALE)
    if not spec.symmetric:
        zero = int(min(max(round(qmin - lo_a / scale), qmin), qmax))
    return float(np.float32(scale)), zero


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

    def _fake_quant(self, x: torch.Tensor, axis: int | None, lo: Any, hi: Any, g: float) -> torch.Tensor:
        """``x`` on this quantizer's grid (``lo``/``hi``: ``qmin - z``, ``qmax - z``); a learned float
        scale in training goes through ``_LSQStep`` (one node), anything else through ``fake_quant_ste``."""
        view = tuple(_view(self.param.detach(), x.ndim, axis).shape)
        if self.learn and self.training and not self.pow2 and torch.is_grad_enabled():
            out: torch.Tensor = _LSQStep.apply(x, self.param, view, lo, hi, g)
            return out
        return fake_quant_ste(x, self.scale().reshape(view), lo, hi, g)

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

    def grad_factor(self, numel: int) -> float:
        """LSQ's step-size gradient scale ``1 / sqrt(N · qmax)``, N = weight elements per scale."""
        return 1.0 / math.sqrt(numel / max(1, self.param.numel()) * max(1, self.spec.qmax))

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
        g = self.grad_factor(w.numel())
        if self.spec.bits == 1:  # binary (schemes.lowbit): s · sign(w - c), STE inside |w - c| <= s
            s = _view(self.scale(g), w.ndim, self.axis)
            dims = [i for i in range(w.ndim) if i != self.axis]
            d = (w - w.mean(dim=dims, keepdim=True)) if self.spec.centred else w
            inside = (d.abs() <= s).to(w.dtype)
            return (torch.where(d >= 0, 1.0, -1.0) + (d / s - (d / s).detach()) * inside) * s
        lo, hi = self.bounds(w.ndim)
        return self._fake_quant(w, self.axis, lo, hi, g)  # LSQ's gradient factor g goes to the fused node

    def bounds(self, ndim: int) -> tuple[Any, Any]:
        """``qmin - z``, ``qmax - z``: floats for a signed symmetric spec (z = 0), else viewed tensors."""
        spec = self.spec
        if spec.symmetric and spec.signed:
            return float(spec.qmin), float(spec.qmax)
        z = _view(self.zero, ndim, self.axis)
        return spec.qmin - z, spec.qmax - z


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
        self._seen = False  # a batch was observed: ``_range`` holds the buffers' values
        self._range = (float("inf"), float("-inf"))

    @property
    def calibrated(self) -> bool:
        return bool(torch.isfinite(self.lo)) and bool(torch.isfinite(self.hi))

    def freeze_observer(self) -> None:
        self.observing = False

    def _observe(self, x: torch.Tensor) -> tuple[float, int]:
        """Update the range with ``x``'s min/max and set scale and zero from it; returns them (floats).
        The range is also kept as Python floats (``_range``), so a batch reads nothing back from the buffers."""
        b_min, b_max = torch.aminmax(x.detach())
        b_lo, b_hi = b_min.item(), b_max.item()
        prev = self._range if self._seen else (float(self.lo), float(self.hi)) if self.calibrated else None
        if prev is None:
            lo, hi = float(np.float32(b_lo)), float(np.float32(b_hi))
        elif self.training:  # exponential moving average, in float32 as the buffers hold it
            lo = float(np.float32(prev[0] + self.momentum * (b_lo - prev[0])))
            hi = float(np.float32(prev[1] + self.momentum * (b_hi - prev[1])))
        else:
            lo, hi = float(np.float32(min(prev[0], b_lo))), float(np.float32(max(prev[1], b_hi)))
        self._seen, self._range = True, (lo, hi)
        # the same values as schemes.qparams_from_range (power of two: its least-error search)
        scale, zero = range_qparams(lo, hi, self.spec)
        with torch.no_grad():
            self.lo.fill_(lo)
            self.hi.fill_(hi)
            self.param.fill_(math.log2(scale) if self.pow2 else scale)
            self.zero.fill_(zero)
        return scale, zero

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._seen = False  # the loaded buffers hold the range from now on
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        spec = self.spec
        if self.observing and (self.training or self.calibrate_in_eval):
            scale, zero = self._observe(x)  # this batch's scale: no gradient reaches it
            return fake_quant_ste(x, scale, float(spec.qmin - zero), float(spec.qmax - zero))
        zero = round(float(self.zero))
        lo, hi = float(spec.qmin - zero), float(spec.qmax - zero)
        if self.learn and self.training:  # LSQ (float scale) or TQT (power-of-two exponent)
            n = x.numel() / max(1, x.shape[0]) if x.ndim else 1.0
            g = 1.0 / math.sqrt(n * max(1, spec.qmax))
            return self._fake_quant(x, None, lo, hi, g)
        p = float(self.param.detach())
        scale = 2.0 ** round(p) if self.pow2 else max(abs(p), TINY_SCALE)
        return fake_quant_ste(x, scale, lo, hi)

    def range_for_export(self) -> tuple[float, float]:
        """A ``[lo, hi]`` that ``qparams_from_range`` turns back into exactly this scale and zero point."""
        s, z = self.qparams()
        s64, z0 = float(s.reshape(-1)[0]), int(z.reshape(-1)[0])
        spec = self.spec
        if spec.symmetric:
            amax = s64 * (spec.qmax - spec.qmin) / 2.0
            return -amax, amax
        return (spec.qmin - z0) * s64, (spec.qmax - z0) * s64
