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

from edgequant.torch.fake_quant import WeightQuantizer

CONV_TYPES = (nn.Conv1d, nn.Conv2d)
LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        simulate = self.bn is not None and self.training and not self.bn_frozen
        if not simulate:
            return self._compute(x, self.quantized_weight(), self.folded_bias())
        bn: Any = self.bn
        factor = self._bn_factor()  # once: the fold and the rescale below share it
        # conv(x, W_q) / f == conv(x, W_q / f): the rescale on the weight, not on the (larger) output
        w = self.quantized_weight(factor) / factor.reshape(-1, *([1] * (self.layer.weight.ndim - 1)))
        return bn(self._compute(x, w, self.layer.bias))  # training: batch statistics, running ones updated
