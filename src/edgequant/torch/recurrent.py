"""Recurrent layers (``nn.GRU``, ``nn.LSTM``, ``nn.RNN``): fake-quantized weights for QAT, and their integer form.

ONNX form (torch's exporter, one node per layer): ``W`` is ``[directions, G·H, input]`` and ``R`` is
``[directions, G·H, H]`` -- the direction weights (``weight_ih_l{k}`` and ``weight_ih_l{k}_reverse``)
stacked on axis 0, the ``G`` gate blocks of ``H`` rows reordered: GRU torch ``(r, z, n)`` -> ONNX
``(z, r, h)``, LSTM ``(i, f, g, o)`` -> ``(i, o, f, c)``, RNN one block.  The planner quantizes ``W`` and
``R`` (weight slots 1 and 2 of a recurrent op) with the target's weight spec; per channel means axis 1,
one scale per gate row, shared by the two directions of a bidirectional layer.  The biases ``B`` stay
float (ORT runs a float GRU/LSTM kernel on dequantized weights).

``QuantRecurrent`` wraps the module and gives each stacked ``W``/``R`` a ``WeightQuantizer`` over
``[directions, G·H, in]`` in torch row order with that spec (the per-row scale of a permuted row is the
same scale, so only the export permutes the scale vector into ONNX order).  Its forward runs the
module with the fake-quantized weights (``torch.func.functional_call``), so gradients reach the float
weights through the straight-through estimator.  ``IntRecurrent`` holds the integer codes with their
scale and zero point (and the float biases) and runs the module on ``(q - z) · s``, as ONNX
DequantizeLinear feeding the GRU/LSTM does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from edgequant.schemes.spec import Granularity, QuantSpec
from edgequant.torch.fake_quant import WeightQuantizer

RNN_TYPES = (nn.GRU, nn.LSTM, nn.RNN)
ONNX_OP = {nn.GRU: "GRU", nn.LSTM: "LSTM", nn.RNN: "RNN"}
GATES = {"GRU": (1, 0, 2), "LSTM": (0, 3, 1, 2), "RNN": (0,)}  # ONNX gate block k = torch block GATES[k]
SLOTS = {1: "ih", 2: "hh"}  # ONNX input slot -> torch weight family


def onnx_rows(kind: str, hidden: int) -> np.ndarray:
    """Index array ``rows`` with ONNX row ``r`` = torch row ``rows[r]`` (gate blocks of ``hidden`` rows)."""
    return np.concatenate([np.arange(g * hidden, (g + 1) * hidden) for g in GATES[kind]])


def param_names(rnn: nn.Module, which: str, layer: int) -> list[str]:
    """The torch parameter names stacked into one ONNX ``W`` (``which`` 'ih') or ``R`` ('hh')."""
    dirs = ["", "_reverse"] if getattr(rnn, "bidirectional", False) else [""]
    return [f"weight_{which}_l{layer}{d}" for d in dirs]


def stacked(rnn: nn.Module, which: str, layer: int) -> torch.Tensor:
    """``[directions, G·H, in]`` in torch row order."""
    return torch.stack([getattr(rnn, n) for n in param_names(rnn, which, layer)])


def kind_of(rnn: nn.Module) -> str:
    return ONNX_OP[type(rnn)]  # type: ignore[index]


def match_weight(rnn: nn.Module, slot: int, w: np.ndarray, close: Any) -> str | None:
    """The quantizer key (``'ih_l0'`` ...) of ``rnn`` whose stacked, ONNX-ordered weight equals ``w``."""
    which = SLOTS.get(slot)
    if which is None:
        return None
    rows = onnx_rows(kind_of(rnn), int(getattr(rnn, "hidden_size", 0)))
    for layer in range(int(getattr(rnn, "num_layers", 1))):
        t = stacked(rnn, which, layer).detach().cpu().numpy()
        if t.shape == w.shape and close(t[:, rows], w):
            return f"{which}_l{layer}"
    return None


def _split(key: str) -> tuple[str, int]:
    which, _, layer = key.partition("_l")
    return which, int(layer)


def to_onnx_order(rnn: nn.Module, params: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A quantizer's ``(scale, zero)`` in torch row order -> the ONNX ``W``/``R`` order (per tensor: as is)."""
    scale, zero = params
    if np.size(scale) == 1:
        return scale, zero
    rows = onnx_rows(kind_of(rnn), int(getattr(rnn, "hidden_size", 0)))
    return scale.reshape(-1)[rows], zero.reshape(-1)[rows]


class QuantRecurrent(nn.Module):
    """``rnn`` with fake-quantized ``W``/``R`` weights (a ``WeightQuantizer`` per key ``ih_l0``, ``hh_l0`` ...)."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        if not isinstance(rnn, RNN_TYPES):
            raise TypeError(f"QuantRecurrent wraps GRU/LSTM/RNN, not {type(rnn).__name__}")
        self.rnn = rnn
        self.wq = nn.ModuleDict()

    def add(self, key: str, spec: QuantSpec, learn: bool) -> None:
        which, layer = _split(key)
        axis = 1 if spec.granularity is Granularity.PER_CHANNEL else None
        self.wq[key] = WeightQuantizer(spec, stacked(self.rnn, which, layer), axis, learn)

    def quantized_weights(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key, q in self.wq.items():
            which, layer = _split(key)
            w = q(stacked(self.rnn, which, layer))
            for d, name in enumerate(param_names(self.rnn, which, layer)):
                out[name] = w[d]
        return out

    def forward(self, *args: Any) -> Any:
        if not any(q.enabled for q in self.wq.values()):
            return self.rnn(*args)
        return functional_call(self.rnn, self.quantized_weights(), args)


class IntRecurrent(nn.Module):
    """``rnn`` run on integer weights: ``info = {"kind", "weights": {key: {q, scale, zero, axis, bits}},
    "biases": {name: tensor}, "float": {name: tensor}}`` (codes ``[directions, G·H, in]`` in torch row order,
    int8/int16; ``float``, optional: weights the plan kept float, copied in as the biases are)."""

    def __init__(self, rnn: nn.Module, info: dict[str, Any]) -> None:
        super().__init__()
        self.rnn = rnn
        self.kind = info["kind"]
        self.axes: dict[str, int | None] = {}
        for key, w in info["weights"].items():
            self.register_buffer(f"{key}_q", w["q"])
            self.register_buffer(f"{key}_scale", w["scale"].float())
            self.register_buffer(f"{key}_zero", w["zero"].float())
            self.axes[key] = w.get("axis")
        for name, b in {**info["biases"], **info.get("float", {})}.items():  # float: W/R the plan kept float
            getattr(self.rnn, name).data.copy_(b)

    def weights(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key, axis in self.axes.items():
            q = getattr(self, f"{key}_q").float()
            s, z = getattr(self, f"{key}_scale"), getattr(self, f"{key}_zero")
            view = [1] * q.ndim
            if axis is not None:
                view[axis] = -1
            w = (q - z.reshape(view)) * s.reshape(view)
            which, layer = _split(key)
            for d, name in enumerate(param_names(self.rnn, which, layer)):
                out[name] = w[d]
        return out

    def forward(self, *args: Any) -> Any:
        return functional_call(self.rnn, self.weights(), args)


def int_info(rnn: nn.Module) -> dict[str, Any]:
    """The start of an ``IntRecurrent`` info dict: kind and float biases (weights filled by the caller)."""
    return {
        "kind": kind_of(rnn).lower(),
        "weights": {},
        "biases": {n: p.detach().clone() for n, p in rnn.named_parameters() if n.startswith("bias")},
    }


def codes_in_torch_order(
    rnn: nn.Module, q_onnx: np.ndarray, scale: np.ndarray, zero: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONNX-ordered codes ``[dirs, G·H, in]`` and per-row (or per-tensor) params -> torch row order."""
    rows = onnx_rows(kind_of(rnn), int(getattr(rnn, "hidden_size", 0)))
    q = np.empty_like(q_onnx)
    q[:, rows] = q_onnx
    if np.size(scale) == 1:
        return q, scale.reshape(-1), zero.reshape(-1)
    s, z = np.empty_like(scale.reshape(-1)), np.empty_like(zero.reshape(-1))
    s[rows], z[rows] = scale.reshape(-1), zero.reshape(-1)
    return q, s, z
