"""A Conv/Gemm/MatMul layer as a matrix product, for the passes that fit weights to layer inputs.

``to_groups`` views the weight as ``[groups, C_out / groups, K]`` (``K`` = input channels per group x
kernel size; a Gemm with ``transB`` or a MatMul as ``[1, C_out, K]``), ``from_groups`` undoes it, and
``patches`` turns the layer's input into the matching ``[groups, M, K]`` rows (im2col for Conv with its
pads, strides and dilations), so that the layer's output is ``patches @ to_groups(W)^T`` per group.
Used by AdaRound (``algorithms.adaround``); numpy only.
"""

from __future__ import annotations

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view


def node_attr(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    """The node's attribute ``name``, or None."""
    return next((a for a in node.attribute if a.name == name), None)


def int_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    """An INT attribute, or ``default`` when the node does not set it."""
    a = node_attr(node, name)
    return int(a.i) if a is not None else default


def ints_attr(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    """An INTS attribute, or ``default``."""
    a = node_attr(node, name)
    return [int(v) for v in a.ints] if a is not None else default


def str_attr(node: onnx.NodeProto, name: str, default: str) -> str:
    """A STRING attribute (decoded), or ``default``."""
    a = node_attr(node, name)
    return a.s.decode() if a is not None else default


def to_groups(node: onnx.NodeProto, w: np.ndarray) -> np.ndarray:
    """The weight as [groups, C_out / groups, K] (the matrix each group multiplies its patches by)."""
    if node.op_type == "Conv":
        g = int_attr(node, "group", 1)
        return w.reshape(g, w.shape[0] // g, -1)
    if node.op_type == "Gemm" and int_attr(node, "transB", 0):
        return w[None]
    return w.T[None]


def from_groups(node: onnx.NodeProto, m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``to_groups`` undone: [groups, C_out / groups, K] back to the initializer's ``shape``."""
    if node.op_type == "Conv" or (node.op_type == "Gemm" and int_attr(node, "transB", 0)):
        return m.reshape(shape)
    return m[0].T.reshape(shape)


def patches(node: onnx.NodeProto, x: np.ndarray, groups: int, kernel: list[int]) -> np.ndarray:
    """Layer input -> [groups, M, K]: im2col for Conv (pads, strides, dilations), rows for Gemm/MatMul."""
    if node.op_type != "Conv":
        return x.reshape(-1, x.shape[-1])[None].astype(np.float32)
    nd = x.ndim - 2
    strides = ints_attr(node, "strides", [1] * nd)
    dil = ints_attr(node, "dilations", [1] * nd)
    pads = ints_attr(node, "pads", [0] * (2 * nd))
    x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)])
    eff = [d * (k - 1) + 1 for k, d in zip(kernel, dil, strict=True)]
    win = sliding_window_view(x, eff, axis=tuple(range(2, 2 + nd)))  # [N, C, *O_full, *eff]
    sl = (
        slice(None),
        slice(None),
        *(slice(None, None, s) for s in strides),
        *(slice(None, None, d) for d in dil),
    )
    win = win[sl]  # [N, C, *O, *k]
    n, c = win.shape[:2]
    out_sp = win.shape[2 : 2 + nd]
    win = win.reshape(n, groups, c // groups, *out_sp, *kernel)
    order = (1, 0, *range(3, 3 + nd), 2, *range(3 + nd, 3 + 2 * nd))
    return np.ascontiguousarray(win.transpose(order), dtype=np.float32).reshape(
        groups, -1, c // groups * int(np.prod(kernel))
    )
