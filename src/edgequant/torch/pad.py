"""Zero-filter channel padding of a traced PyTorch model to a target's alignment (exact).

A ``nn.Conv2d`` (groups 1) whose output channels break the target's ``out_channels: {multiple: m}``
rule for its kind (``conv``, ``pointwise``, ``first_conv``: the same rules as ``edgequant check``
reads from ``targets/<name>.yaml``) gets ``pad = ceil(c/m)·m - c`` extra filters whose weights and
bias are 0, so the extra channels are exactly 0 (the float output may move in the last bit: a
convolution over more, zero, channels can sum in another order).  Every reader of them must keep its result:

* channel-wise modules and functions pass zeros through: BatchNorm2d (padded with mean 0, var 1,
  weight 1, bias 0: BN(0) = 0), ReLU, ReLU6, Hardtanh with 0 inside its range, MaxPool2d,
  AvgPool2d, AdaptiveAvgPool2d/AdaptiveMaxPool2d, ``torch.relu``/``F.relu``, and ``torch.flatten``
  after a pool to 1×1;
* the next ``nn.Conv2d`` (groups 1) gets zero weights for the new input channels, a ``nn.Linear``
  after the 1×1 pool and flatten zero columns: 0 · w = 0, so its output is unchanged.

Any other reader (an add, a concat, the model output, a depthwise conv, a flatten of a spatial map)
leaves the conv as it is, and the record says why.  This is ``edgequant.model.target_fix`` (``quantize
--fix``) on the PyTorch graph, so a padded model exports already aligned.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
PASS_FUNCTIONS = {torch.relu, F.relu}


def _multiple(target: str, kind: str) -> int | None:
    from edgequant.targets import get

    rule = get(target).op(kind)
    limit = rule.limits.get("out_channels") if rule is not None else None
    return int(limit.multiple) if limit is not None and limit.multiple else None


def _kind(conv: nn.Conv2d, first: bool) -> str:
    if first:
        return "first_conv"
    return "pointwise" if all(k == 1 for k in conv.kernel_size) else "conv"


def _pooled_to_one(mod: Any) -> bool:
    size = getattr(mod, "output_size", None)
    return isinstance(mod, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d) and size in (1, (1, 1))


def _readers(gm: fx.GraphModule, node: fx.Node) -> tuple[list[tuple[fx.Node, str]], str]:
    """The BN / conv / linear readers of ``node``'s channels, or '' + why padding would not be exact."""
    mods = dict(gm.named_modules())
    out: list[tuple[fx.Node, str]] = []
    frontier = [(node, False)]
    while frontier:
        cur, pooled = frontier.pop()
        for u in cur.users:
            mod = mods.get(u.target) if u.op == "call_module" else None  # type: ignore[arg-type]
            first_arg = u.args[:1] == (cur,)
            if u.op == "output":
                return [], "it reaches the model output (the extra channels would be visible)"
            if isinstance(mod, nn.BatchNorm2d) and first_arg:
                out.append((u, "bn"))
                frontier.append((u, pooled))
            elif isinstance(mod, nn.Hardtanh) and first_arg and mod.min_val <= 0.0 <= mod.max_val:
                frontier.append((u, pooled))
            elif isinstance(mod, PASS_MODULES) and first_arg:
                frontier.append((u, pooled or _pooled_to_one(mod)))
            elif u.op == "call_function" and u.target in PASS_FUNCTIONS and first_arg:
                frontier.append((u, pooled))
            elif (
                u.op == "call_function" and u.target is torch.flatten and first_arg and (pooled or _one(cur))
            ):
                frontier.append((u, True))
            elif isinstance(mod, nn.Conv2d) and first_arg and mod.groups == 1:
                out.append((u, "conv"))
            elif isinstance(mod, nn.Linear) and first_arg and pooled:
                out.append((u, "linear"))
            else:
                what = type(mod).__name__ if mod is not None else getattr(u.target, "__name__", str(u.target))
                return (
                    [],
                    f"{what} ('{u.name}') reads it (only convs, linear layers and channel-wise ops take zero channels)",
                )
    return out, ""


def _one(node: fx.Node) -> bool:
    """The node's output is N x C x 1 x 1 (shapes from ``ShapeProp`` on the example inputs)."""
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return shape is not None and len(shape) == 4 and tuple(shape[2:]) == (1, 1)


def _grow(t: torch.Tensor, dim: int, extra: int, fill: float) -> nn.Parameter | torch.Tensor:
    shape = list(t.shape)
    shape[dim] = extra
    grown = torch.cat([t.detach(), torch.full(shape, fill, dtype=t.dtype)], dim=dim)
    return nn.Parameter(grown) if isinstance(t, nn.Parameter) else grown


def pad_channels(
    gm: fx.GraphModule,
    target: str,
    only: set[str] | None = None,
    example_inputs: tuple[torch.Tensor, ...] | None = None,
) -> tuple[fx.GraphModule, list[tuple[str, str, str]]]:
    """A copy of ``gm`` with convs padded to ``target``'s alignment; ``(model, [(conv, old, new or why)])``.

    ``only``: pad just these convs (module names), for measuring one padding at a time.
    ``example_inputs``: shapes for recognising a flatten of a 1×1 map after a fixed-size pool.
    """
    gm = copy.deepcopy(gm)
    if example_inputs is not None:
        from torch.fx.passes.shape_prop import ShapeProp

        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    mods = dict(gm.named_modules())
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    out: list[tuple[str, str, str]] = []
    for node in list(gm.graph.nodes):
        conv = mods.get(node.target) if node.op == "call_module" else None
        if (
            not isinstance(conv, nn.Conv2d)
            or conv.groups != 1
            or (only is not None and node.target not in only)
        ):
            continue
        first = bool(node.args) and node.args[0] in placeholders
        m = _multiple(target, _kind(conv, first))
        c = conv.out_channels
        if m is None or c % m == 0:
            continue
        old = f"Conv2d({conv.in_channels}, {c})"
        readers, why = _readers(gm, node)
        if why:
            out.append((str(node.target), old, f"kept: {why}"))
            continue
        extra = -(-c // m) * m - c
        conv.weight = _grow(conv.weight, 0, extra, 0.0)  # type: ignore[assignment]
        if conv.bias is not None:
            conv.bias = _grow(conv.bias, 0, extra, 0.0)  # type: ignore[assignment]
        conv.out_channels = c + extra
        for r, kind in readers:
            mod: Any = mods[r.target]  # type: ignore[index]
            if kind == "bn":
                for name, fill in (
                    ("weight", 1.0),
                    ("bias", 0.0),
                    ("running_mean", 0.0),
                    ("running_var", 1.0),
                ):
                    t = getattr(mod, name)
                    if t is not None:
                        setattr(mod, name, _grow(t, 0, extra, fill))
                mod.num_features += extra
            else:
                mod.weight = _grow(mod.weight, 1, extra, 0.0)
                if kind == "conv":
                    mod.in_channels += extra
                else:
                    mod.in_features += extra
        out.append((str(node.target), old, f"Conv2d({conv.in_channels}, {c + extra})"))
    gm.recompile()
    return gm, out
