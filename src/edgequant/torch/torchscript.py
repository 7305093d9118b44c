"""A TorchScript module as a torch.fx graph with Conv/Linear/BatchNorm modules, so it gets an integer ``.pth``.

A ``torch.jit.ScriptModule`` has no Python forward for ``torch.fx`` to trace.  PyTorch's own converter
(``torch._export.converter.TS2EPConverter``, TorchScript -> ``torch.export`` program) gives an fx graph of
ATen calls on the archive's parameters; ``to_fx`` turns the layers EdgeQuant quantizes back into modules:

* ``aten.convolution`` (not transposed; 3-D or 4-D weight), ``aten.conv1d``/``aten.conv2d`` ->
  ``nn.Conv1d``/``nn.Conv2d``; ``aten.linear`` -> ``nn.Linear`` (weights copied, module named after the
  archive's submodule, e.g. ``c1``);
* ``aten.batch_norm`` in inference form right after such a layer -> ``nn.BatchNorm1d/2d`` (so BN folds
  as it does for a Python module).

The export's shape guards (``_guards_fn``) are dropped: the example batch is made 2 so the batch axis is
not specialised, and the ONNX export EdgeQuant verifies runs on the real inputs anyway.  Anything else
stays an ATen call in the graph (float, as the ONNX plan keeps it).  The same conversion runs when the
``.pth`` is written (``edgequant quantize net.pt``) and when it is loaded
(``edgequant.torch.load(path, torch.jit.load("net.pt"))``), so module names agree.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from torch import fx, nn

from edgequant.errors import ModelError

_CONV = {torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default}


def _attr(gm: fx.GraphModule, node: Any) -> torch.Tensor | None:
    if isinstance(node, fx.Node) and node.op == "get_attr":
        return _fetch(gm, str(node.target))
    return None


def _fetch(gm: fx.GraphModule, target: str) -> torch.Tensor | None:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, torch.Tensor) else None


def _install(gm: fx.GraphModule, weight_node: fx.Node, module: nn.Module, used: set[str]) -> str:
    """Put ``module`` where the archive's layer was (its container holds just weight/bias), else beside."""
    prefix = str(weight_node.target).rpartition(".")[0]
    name = prefix or "eq_layer"
    if prefix and name not in used:
        try:
            holder = gm.get_submodule(prefix)
        except AttributeError:
            holder = None
        own = {n for n, _ in holder.named_parameters(recurse=False)} if holder is not None else set()
        if holder is not None and not list(holder.children()) and own <= {"weight", "bias"}:
            parent_name, _, leaf = prefix.rpartition(".")
            setattr(gm.get_submodule(parent_name), leaf, module)
            used.add(name)
            return name
    i = 0
    while f"{name.replace('.', '_')}_{i}" in used or hasattr(gm, f"{name.replace('.', '_')}_{i}"):
        i += 1
    name = f"{name.replace('.', '_')}_{i}"
    gm.add_submodule(name, module)
    used.add(name)
    return name


def _layer(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The nn module an ATen conv/linear call with constant weights computes, or None."""
    a: list[Any] = list(node.args)
    w = _attr(gm, a[1]) if len(a) > 1 else None
    if w is None:
        return None
    b = _attr(gm, a[2]) if len(a) > 2 and a[2] is not None else None
    if len(a) > 2 and a[2] is not None and b is None:
        return None
    if node.target == torch.ops.aten.linear.default and w.ndim == 2:
        m: Any = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    elif node.target == torch.ops.aten.convolution.default and w.ndim in (3, 4) and not a[6]:
        stride, padding, dilation, groups = a[3], a[4], a[5], a[8]
        conv: Any = nn.Conv1d if w.ndim == 3 else nn.Conv2d
        m = conv(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(stride),
                 padding=tuple(padding), dilation=tuple(dilation), groups=groups, bias=b is not None)  # fmt: skip
    elif node.target in _CONV and w.ndim in (3, 4):
        stride, padding, dilation, groups = (list(a[3:7]) + [1, 0, 1, 1][len(a[3:7]) :])[:4]
        conv = nn.Conv1d if w.ndim == 3 else nn.Conv2d
        if isinstance(padding, str):
            return None
        m = conv(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=stride, padding=padding,
                 dilation=dilation, groups=groups, bias=b is not None)  # fmt: skip
    else:
        return None
    with torch.no_grad():
        m.weight.copy_(w)
        if b is not None:
            m.bias.copy_(b)
    return m


def _batch_norm(gm: fx.GraphModule, node: fx.Node, kind: type) -> nn.Module | None:
    a: list[Any] = list(node.args)
    if len(a) < 8 or a[5]:  # training-mode batch norm
        return None
    weight, bias, mean, var = (_attr(gm, x) if x is not None else None for x in a[1:5])
    if mean is None or var is None:
        return None
    bn = (nn.BatchNorm2d if kind is nn.Conv2d else nn.BatchNorm1d)(mean.shape[0], eps=float(a[7]),
                                                                   affine=weight is not None)  # fmt: skip
    with torch.no_grad():
        bn.running_mean.copy_(mean)  # type: ignore[union-attr]
        bn.running_var.copy_(var)  # type: ignore[union-attr]
        if weight is not None and bias is not None:
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
    return bn.eval()


def to_fx(script: torch.jit.ScriptModule, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """``script`` as an fx GraphModule with Conv/Linear/BatchNorm modules (see the module docstring).

    ``example_inputs``: one tensor per model input (any batch size; a batch of 2 is used).  Raises
    ModelError when PyTorch's converter cannot read the archive.
    """
    from torch._export.converter import TS2EPConverter

    ex = tuple(torch.cat([t[:1], t[:1]]) if t.ndim else t for t in example_inputs)
    logging.disable(logging.WARNING)  # torch.export logs each specialised dimension; the user asked for none
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm: fx.GraphModule = TS2EPConverter(script, ex).convert().module()  # type: ignore[assignment]
    except Exception as exc:
        raise ModelError(
            f"PyTorch's TorchScript converter (torch._export.converter) cannot read this archive: "
            f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
            "pass the model's Python code instead (--factory/--checkpoint) for the PyTorch file.",
        ) from exc
    finally:
        logging.disable(logging.NOTSET)
    used: set[str] = set()
    kinds: dict[fx.Node, type] = {}
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and str(node.target).startswith("_guards"):
            gm.graph.erase_node(node)
            continue
        if node.op != "call_function":
            continue
        if node.target == torch.ops.aten.batch_norm.default and node.args[0] in kinds:
            bn = _batch_norm(gm, node, kinds[node.args[0]])
            if bn is None:
                continue
            _replace(gm, node, _install(gm, node.args[3], bn, used))  # named after running_mean's owner
            continue
        layer = _layer(gm, node)
        if layer is None:
            continue
        name = _install(gm, node.args[1], layer, used)
        kinds[_replace(gm, node, name)] = type(layer) if not isinstance(layer, nn.Linear) else nn.Linear
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    out = fx.GraphModule(gm, gm.graph, class_name="TorchScriptModel")
    return out.eval()


def _replace(gm: fx.GraphModule, node: fx.Node, target: str) -> fx.Node:
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(target, (node.args[0],))
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new
