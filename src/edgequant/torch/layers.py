"""Layers that fake-quantize their weight: Conv (1d/2d) and Linear, with BatchNorm folded or simulated.

``QuantLayer`` wraps a ``nn.Conv1d/2d`` or ``nn.Linear`` and, optionally, the BatchNorm that follows it.
Its float form (quantizer disabled, eval mode) is the BN-folded layer that the ONNX model holds:

    W_f = W · γ / sqrt(σ² + ε),    b_f = β + (b - μ) · γ / sqrt(σ² + ε)      (per output channel)

Training with BN simulation (Krishnamoorthi, arXiv:1806.08342, §3.2; the form of torch.ao's ConvBn):
the weight is folded with the *running* statistics and fake-quantized, the convolution's output is
scaled back by ``sqrt(σ²_run + ε) / γ`` and the BatchNorm then normalises with the *batch* statistics
(updating the running ones).  The scaling back is applied to the quantized weight, per output channel,
before the convolution: ``conv(x, W_q) / f == conv(x, W_q / f)`` (the layer is linear per output
channel), so it costs a weight-sized pass instead of an output-sized one, forward and backward.
Once BN is frozen (``freeze_bn()``) -- and always in eval mode -- the layer computes exactly the
folded, quantized convolution that the exported integer model runs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgequant.torch.fake_quant import TINY_SCALE, WeightQuantizer, inside_grid

CONV_TYPES = (nn.Conv1d, nn.Conv2d)
LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


class _FoldQuant(torch.autograd.Function):
    """The BN fold, the learned-scale fake quantization and (``divide``, while BN is simulated) the rescale of
    a weight as one autograd node: ``y = Q(W · f) / f`` or ``Q(W · f)``, ``f = γ / sqrt(σ²_run + ε)`` per output
    channel (axis 0), ``Q(u) = clamp(round(u/s), lo, hi) · s`` with ``s = max(|p|, tiny)`` per channel
    (``view``) or per tensor.  Gradients are those of the composition: the straight-through estimator
    for ``W`` (and through ``f`` for ``γ``), LSQ for ``p`` (times ``g``).  It replaces about ten autograd
    nodes on weight-sized tensors, which cost more per step than the arithmetic on them."""

    @staticmethod
    def forward(
        ctx: Any, w: torch.Tensor, gamma: torch.Tensor, var: torch.Tensor, p: torch.Tensor,
        eps: float, view: tuple[int, ...], lo: Any, hi: Any, g: float, divide: bool,
    ) -> torch.Tensor:  # fmt: skip
        std = torch.sqrt(var + eps)
        f = (gamma / std).reshape(-1, *([1] * (w.ndim - 1)))
        u = w * f
        a = p.abs()
        s = a.clamp_min(TINY_SCALE).reshape(view)
        v = u / s
        r = torch.round(v)
        q = torch.clamp(r, lo, hi)
        wq = q * s
        ctx.bounds, ctx.view, ctx.g, ctx.divide = (lo, hi), view, g, divide
        ds = q - inside_grid(v, r, lo, hi)  # LSQ: round(v) - v inside the grid, lo / hi outside
        ctx.save_for_backward(w, f, std, r, ds, torch.sign(p) * (a >= TINY_SCALE), wq)
        return wq / f if divide else wq

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        w, f, std, r, ds, dp, wq = ctx.saved_tensors
        lo, hi = ctx.bounds
        g_wq = grad / f if ctx.divide else grad  # d L / d Q(W f)
        g_u = inside_grid(g_wq, r, lo, hi)  # straight through round, zero where clamped
        g_w = g_u * f if ctx.needs_input_grad[0] else None
        g_gamma = None
        if ctx.needs_input_grad[1]:
            g_f = (g_u * w).sum_to_size(f.shape)
            if ctx.divide:  # y = Q / f: d y / d f = -Q / f^2
                g_f = g_f - (grad * wq).sum_to_size(f.shape) / (f * f)
            g_gamma = g_f.reshape(-1) / std
        g_p = None
        if ctx.needs_input_grad[3]:
            g_p = (g_wq * ds).sum_to_size(ctx.view).reshape(dp.shape) * (dp * ctx.g)
        return g_w, g_gamma, None, g_p, None, None, None, None, None, None


class QuantLayer(nn.Module):
    """A Conv/Linear (+ BatchNorm) whose weight is fake-quantized once ``wq`` is set."""

    def __init__(self, layer: nn.Module, bn: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(layer, LAYER_TYPES):
            raise TypeError(f"QuantLayer wraps Conv1d/Conv2d/Linear, not {type(layer).__name__}")
        self.layer = layer
        self.bn = bn
        self.wq: WeightQuantizer | None = None
        self.bn_frozen = False

    # -- folding ---------------------------------------------------------------------------------
    def _bn_factor(self) -> torch.Tensor:
        assert self.bn is not None
        bn: Any = self.bn
        gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        return gamma / torch.sqrt(bn.running_var + bn.eps)

    def folded_weight(self, factor: torch.Tensor | None = None) -> torch.Tensor:
        """``W · γ/sqrt(σ²+ε)`` per output channel (``factor``: that vector, when the caller has it)."""
        w: torch.Tensor = self.layer.weight
        if self.bn is None:
            return w
        f = self._bn_factor() if factor is None else factor
        return w * f.reshape(-1, *([1] * (w.ndim - 1)))

    def folded_bias(self) -> torch.Tensor | None:
        b: torch.Tensor | None = self.layer.bias
        if self.bn is None:
            return b
        bn: Any = self.bn
        beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        base = b if b is not None else torch.zeros_like(bn.running_mean)
        return beta + (base - bn.running_mean) * self._bn_factor()

    def freeze_bn(self) -> None:
        self.bn_frozen = True

    # -- forward ---------------------------------------------------------------------------------
    def _compute(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        layer: Any = self.layer
        if isinstance(layer, nn.Linear):
            return F.linear(x, w, b)
        conv = F.conv1d if isinstance(layer, nn.Conv1d) else F.conv2d
        if layer.padding_mode != "zeros":
            raise NotImplementedError("only zero padding is supported in QuantLayer")
        return conv(x, w, b, layer.stride, layer.padding, layer.dilation, layer.groups)

    def quantized_weight(self, factor: torch.Tensor | None = None) -> torch.Tensor:
        w = self.folded_weight(factor)
        return self.wq(w) if self.wq is not None else w

    def _fused(self, simulate: bool) -> torch.Tensor | None:
        """The weight through ``_FoldQuant`` (training with a BN and a learned float scale), else None."""
        wq, bn = self.wq, self.bn
        if (
            bn is None or wq is None or not wq.enabled or not wq.learn or wq.pow2 or wq.spec.bits == 1
            or wq.axis not in (0, None) or not self.training or not torch.is_grad_enabled()
        ):  # fmt: skip
            return None
        b: Any = bn
        w: torch.Tensor = self.layer.weight
        gamma = b.weight if b.affine else torch.ones_like(b.running_var)
        view = (w.shape[0], *([1] * (w.ndim - 1))) if wq.axis == 0 else ()
        lo, hi = wq.bounds(w.ndim)
        g = wq.grad_factor(w.numel())
        out: torch.Tensor = _FoldQuant.apply(
            w, gamma, b.running_var, wq.param, b.eps, view, lo, hi, g, simulate
        )
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        simulate = self.bn is not None and self.training and not self.bn_frozen
        fused = self._fused(simulate)
        if fused is not None:  # one node for the fold, the quantization and the rescale
            if simulate:
                return self.bn(self._compute(x, fused, self.layer.bias))  # type: ignore[misc]
            return self._compute(x, fused, self.folded_bias())
        if not simulate:
            return self._compute(x, self.quantized_weight(), self.folded_bias())
        bn: Any = self.bn
        factor = self._bn_factor()  # once: the fold and the rescale below share it
        # conv(x, W_q) / f == conv(x, W_q / f): the rescale on the weight, not on the (larger) output
        w = self.quantized_weight(factor) / factor.reshape(-1, *([1] * (self.layer.weight.ndim - 1)))
        return bn(self._compute(x, w, self.layer.bias))  # training: batch statistics, running ones updated
