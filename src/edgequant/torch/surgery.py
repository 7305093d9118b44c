"""Model surgery: swap layers an accelerator lacks for ones it has, and say what each swap costs.

``replace_modules(model, replacements=None, example_inputs=...)`` returns ``(new_model, records)``.

* ``replacements`` maps a module type, or a name pattern (a regular expression matched in full
  against the module's qualified name, e.g. ``r"blocks\\.\\d+\\.act"``), to a module (copied per use), a
  module class (called with no arguments) or a function ``old_module -> new_module``.
* ``None`` takes ``default_replacements()``: GELU / SiLU / Hardswish / Mish -> ReLU, ReLU6 -> Clip(0, 6)
  (``nn.Hardtanh``, which exports as ONNX Clip), and -- with example inputs -- adaptive average/max
  pooling whose input size divides the output size -> a fixed ``AvgPool2d``/``MaxPool2d`` (exact).
* With torch.fx (when the model traces) functional calls are replaced too (``F.gelu``, ``F.silu``,
  ``F.hardswish``, ``F.mish``, ``F.relu6`` for the default types).  A model that does not trace gets
  module swapping (``setattr`` on the owning module), and every record says which way was used and
  why (``method``, ``trace_error``).
* With ``target`` (a profile name, as ``--target``), convs whose output channels break the target's
  alignment get zero filters (exact; ``edgequant.torch.pad``); a conv whose readers would see the
  extra channels keeps its size and its record says why (``new`` starts with "kept:").  Needs fx.
* With ``example_inputs``, each record carries how much that replacement alone changes the float
  output: max |Δy| and SQNR = 10·log10(Σy² / Σ(y - y')²) dB (inf: exact), so the user sees which
  swaps need fine-tuning.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgequant.errors import ModelError

Replacement = nn.Module | type | Callable[[nn.Module], nn.Module]


@dataclass
class Record:
    """One replacement: where, what to what, how, and its float change alone."""

    name: str
    old: str
    new: str
    method: str  # "fx" or "module-swap"
    max_abs_diff: float | None = None
    sqnr_db: float | None = None
    trace_error: str = ""


def default_replacements() -> dict[Any, Replacement]:
    return {
        nn.GELU: nn.ReLU,
        nn.SiLU: nn.ReLU,
        nn.Hardswish: nn.ReLU,
        nn.Mish: nn.ReLU,
        nn.ReLU6: lambda _m: nn.Hardtanh(0.0, 6.0),
    }


_FUNCTIONAL = {
    F.gelu: nn.GELU,
    F.silu: nn.SiLU,
    F.hardswish: nn.Hardswish,
    F.mish: nn.Mish,
    F.relu6: nn.ReLU6,
}


def _build(rep: Replacement, old: nn.Module) -> nn.Module:
    if isinstance(rep, nn.Module):
        return copy.deepcopy(rep)
    if isinstance(rep, type):
        return rep()
    new = rep(old)
    if not isinstance(new, nn.Module):
        raise ModelError(
            f"a replacement function returned {type(new).__name__}, not an nn.Module.", "fix it."
        )
    return new


def _lookup(replacements: dict[Any, Replacement], name: str, mod: nn.Module) -> Replacement | None:
    for key, rep in replacements.items():
        if isinstance(key, type) and type(mod) is key:
            return rep
        if isinstance(key, str) and re.fullmatch(key, name):
            return rep
    return None


def _adaptive(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> dict[str, nn.Module]:
    """Fixed pools for adaptive pools whose observed input size is a multiple of the output size."""
    sizes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
            hooks.append(
                m.register_forward_hook(
                    lambda mod, inp, out, n=name: sizes.__setitem__(n, tuple(inp[0].shape[-2:]))
                )
            )
    try:
        with torch.no_grad():
            model.eval()(*example_inputs)
    finally:
        for handle in hooks:
            handle.remove()
    out: dict[str, nn.Module] = {}
    mods = dict(model.named_modules())
    for name, (h, w) in sizes.items():
        pool: Any = mods[name]
        size = pool.output_size
        oh, ow = (size, size) if isinstance(size, int) else size
        oh, ow = int(oh or h), int(ow or w)
        if h % oh or w % ow:
            continue
        k = (h // oh, w // ow)
        out[name] = nn.AvgPool2d(k, k) if isinstance(pool, nn.AdaptiveAvgPool2d) else nn.MaxPool2d(k, k)
    return out


def _size_hook(sizes: dict[str, tuple[int, ...]], name: str) -> Callable[..., None]:
    def hook(_mod: nn.Module, inp: tuple[torch.Tensor, ...], _out: Any) -> None:
        sizes[name] = tuple(int(d) for d in inp[0].shape[-2:])

    return hook


def _run(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        y = model.eval()(*example_inputs)
    if isinstance(y, tuple | list):
        return torch.cat([t.reshape(-1) for t in y])
    return y.reshape(-1)


def _change(ref: torch.Tensor, got: torch.Tensor) -> tuple[float, float]:
    r, g = ref.double(), got.double()
    noise = float(((r - g) ** 2).sum())
    signal = float((r**2).sum())
    db = (
        float("inf")
        if noise == 0
        else (float("-inf") if signal == 0 else 10.0 * float(torch.log10(torch.tensor(signal / noise))))
    )
    return float((r - g).abs().max()), db


def replace_modules(
    model: nn.Module,
    replacements: dict[Any, Replacement] | None = None,
    *,
    example_inputs: Any = None,
    target: str | None = None,
) -> tuple[nn.Module, list[Record]]:
    """Apply ``replacements`` (see the module docstring) to a copy of ``model``; ``(new, records)``."""
    from edgequant.torch.graph import as_tuple

    examples = as_tuple(example_inputs) if example_inputs is not None else None
    reps = default_replacements() if replacements is None else dict(replacements)
    base = copy.deepcopy(model).eval()
    fixed = _adaptive(base, examples) if replacements is None and examples is not None else {}
    try:
        traced: fx.GraphModule | None = fx.symbolic_trace(copy.deepcopy(base))
        trace_error = ""
    except Exception as exc:
        from edgequant.torch.graph import trace_failure

        traced, trace_error = None, trace_failure(exc)
    # the edits: (name, old description, new module factory)
    edits: list[tuple[str, str, Callable[[nn.Module], nn.Module]]] = []
    for name, mod in base.named_modules():
        if not name:
            continue
        if name in fixed:
            edits.append((name, type(mod).__name__, _copier(fixed[name])))
            continue
        rep = _lookup(reps, name, mod)
        if rep is not None:
            edits.append((name, type(mod).__name__, _builder(rep)))
    functional: list[tuple[str, str, Replacement]] = []
    if traced is not None:
        for node in traced.graph.nodes:
            if node.op == "call_function" and node.target in _FUNCTIONAL:
                rep = reps.get(_FUNCTIONAL[node.target])
                defaults = set(node.kwargs.items()) <= {("inplace", False), ("approximate", "none")}
                if rep is not None and defaults and len(node.args) == 1:
                    functional.append((node.name, node.target.__name__, rep))
    method = "fx" if traced is not None else "module-swap"

    def apply(selected: set[str]) -> nn.Module:
        if traced is not None:
            gm = copy.deepcopy(traced)
            for name, _old, make in edits:
                if name in selected:
                    _set(gm, name, make(gm.get_submodule(name)))
            for node in list(gm.graph.nodes):
                hit = next((f for f in functional if f[0] == node.name and node.name in selected), None)
                if hit is None:
                    continue
                sub = f"eq_surgery_{node.name}"
                gm.add_submodule(sub, _build(hit[2], nn.Identity()))
                with gm.graph.inserting_after(node):
                    new = gm.graph.call_module(sub, node.args)
                node.replace_all_uses_with(new)
                gm.graph.erase_node(node)
            gm.recompile()
            return gm
        out = copy.deepcopy(base)
        for name, _old, make in edits:
            if name in selected:
                _set(out, name, make(out.get_submodule(name)))
        return out

    names = [e[0] for e in edits] + [f[0] for f in functional]
    records = [Record(n, o, "", method, trace_error=trace_error) for n, o, _ in edits]
    records += [Record(n, f"F.{o}", "", "fx") for n, o, _ in functional]
    new_model = apply(set(names))
    for r in records:
        where = r.name if r.method == "module-swap" or not r.old.startswith("F.") else f"eq_surgery_{r.name}"
        r.new = type(new_model.get_submodule(where)).__name__
    if examples is not None:
        ref = _run(base, examples)
        for r in records:
            r.max_abs_diff, r.sqnr_db = _change(ref, _run(apply({r.name}), examples))
    if target is not None:
        new_model, pads = _pad(new_model, traced, target, trace_error, examples)
        records += pads
    return new_model, records


def _pad(
    new_model: nn.Module,
    traced: fx.GraphModule | None,
    target: str,
    trace_error: str,
    examples: tuple[torch.Tensor, ...] | None,
) -> tuple[nn.Module, list[Record]]:
    """Channel padding to ``target``'s alignment, one record per conv (its float change alone)."""
    from edgequant.torch.pad import pad_channels

    if traced is None or not isinstance(new_model, fx.GraphModule):
        why = f"kept: channel padding rewires the traced graph, and the model does not trace ({trace_error})"
        return new_model, [Record("(channel padding)", "", why, "module-swap", trace_error=trace_error)]
    padded, rows = pad_channels(new_model, target, example_inputs=examples)
    records = [Record(name, old, new, "fx-pad") for name, old, new in rows]
    if examples is not None:
        ref = _run(traced, examples)
        for r in records:
            if not r.new.startswith("kept:"):
                one, _ = pad_channels(traced, target, only={r.name}, example_inputs=examples)
                r.max_abs_diff, r.sqnr_db = _change(ref, _run(one, examples))
    return padded, records


def _copier(new: nn.Module) -> Callable[[nn.Module], nn.Module]:
    return lambda _old: copy.deepcopy(new)


def _builder(rep: Replacement) -> Callable[[nn.Module], nn.Module]:
    return lambda old: _build(rep, old)


def _set(root: nn.Module, name: str, new: nn.Module) -> None:
    *path, leaf = name.split(".")
    parent = root
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, leaf, new)
