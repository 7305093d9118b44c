"""The integer PyTorch model: frozen integer weights and quantization parameters, and its ``.pth`` file.

``IntLayer`` holds a Conv/Linear weight as integers ``q`` (int8 container for 2/4/8 bits, int16 for
16) with per-channel or per-tensor ``scale`` and ``zero``, and its bias either as int32 with scale
``s_x · s_w`` (as ``export.qdq`` writes it) or float.  ``FixedQuant`` is a per-tensor
QuantizeLinear + DequantizeLinear with frozen parameters.  The forward dequantizes in float32
exactly as ONNX DequantizeLinear does (``(q - z) · s``), so it reproduces the QDQ model's Q/DQ
arithmetic; ORT's integer kernels round their requantization on their own, which the tests bound
at 1 LSB.

The ``.pth`` file is a plain dict of tensors, numbers and strings, so ``torch.load(weights_only=True)``
reads it: ``{"format": "edgequant.torch/3", "layers": {target: {...}}, "acts": {fx node: {...}},
"float": {state key: tensor}}``; ``float`` holds every parameter and buffer outside the integer layers
and quantizers (LayerNorm, embeddings, layers kept float by the plan, ...), so the module ``load`` builds
has the trained values even when the factory returns fresh weights (/1 and /2 files have no ``float``:
those tensors come from the factory's module, as before); a GRU/LSTM/RNN
layer's entry (``kind`` gru|lstm|rnn) holds its W/R codes and float biases (``torch.recurrent.IntRecurrent``), or,
for a layer the plan keeps float, its float weights under ``float`` (so ``load`` needs no checkpoint).
``load(path, factory)`` traces ``factory()`` the same way (fx + BN fusion), which gives the same
targets and node names, and puts the integer layers and quantizers in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import fx, nn

from edgequant.errors import ModelError, UnsupportedError
from edgequant.plan import QuantPlan, TensorEntry
from edgequant.schemes.qparams import quantize
from edgequant.torch.fake_quant import ActQuantizer, WeightQuantizer
from edgequant.torch.graph import Binding, fuse_layers, set_module, trace
from edgequant.torch.layers import QuantLayer
from edgequant.torch.recurrent import (
    RNN_TYPES,
    IntRecurrent,
    QuantRecurrent,
    codes_in_torch_order,
    int_info,
    kind_of,
)

FORMAT = "edgequant.torch/3"  # /3: float state; /2: GRU/LSTM/RNN entries; /1 files (Conv/Linear) still load
READS = ("edgequant.torch/1", "edgequant.torch/2", FORMAT)


class FixedQuant(nn.Module):
    """``(clamp(round(x/s) + z, qmin, qmax) - z) · s`` with frozen per-tensor ``s`` and ``z``."""

    scale: torch.Tensor
    zero: torch.Tensor

    def __init__(self, scale: float, zero: int, qmin: int, qmax: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.register_buffer("zero", torch.tensor(float(zero)))
        self.qmin, self.qmax = qmin, qmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(x / self.scale) + self.zero, self.qmin, self.qmax)
        return (q - self.zero) * self.scale


class IntLayer(nn.Module):
    """A Conv1d/Conv2d/Linear computed from integer weights (and an int32 or float bias)."""

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bias_q: torch.Tensor | None
    bias_scale: torch.Tensor | None
    bias: torch.Tensor | None

    def __init__(self, template: nn.Module, info: dict[str, Any]) -> None:
        super().__init__()
        self.kind = info["kind"]
        self.conf = {k: info[k] for k in ("stride", "padding", "dilation", "groups") if k in info}
        self.axis: int | None = info.get("axis")
        self.register_buffer("q", info["q"])
        self.register_buffer("scale", info["scale"].float())
        self.register_buffer("zero", info["zero"].float())
        self.register_buffer("bias_q", info.get("bias_q"))
        self.register_buffer("bias_scale", info.get("bias_scale"))
        self.register_buffer("bias", info.get("bias"))

    def weight(self) -> torch.Tensor:
        q = self.q.float()
        if self.axis is None:
            return (q - self.zero.reshape(())) * self.scale.reshape(())
        view = [1] * q.ndim
        view[self.axis] = -1
        return (q - self.zero.reshape(view)) * self.scale.reshape(view)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias
        if self.bias_q is not None and self.bias_scale is not None:
            b = self.bias_q.float() * self.bias_scale
        w = self.weight()
        if self.kind == "linear":
            return F.linear(x, w, b)
        conv = F.conv1d if self.kind == "conv1d" else F.conv2d
        return conv(x, w, b, **self.conf)


def _layer_conf(layer: QuantLayer) -> dict[str, Any]:
    m: Any = layer.layer
    if isinstance(m, nn.Linear):
        return {"kind": "linear"}
    kind = "conv1d" if isinstance(m, nn.Conv1d) else "conv2d"
    return {
        "kind": kind,
        "stride": tuple(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else tuple(m.padding),
        "dilation": tuple(m.dilation),
        "groups": int(m.groups),
    }


def int_parts(
    gm: fx.GraphModule, binding: Binding, float_model: onnx.ModelProto, plan: QuantPlan
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The integer layers and frozen activation quantizers of an exported plan (scales filled in)."""
    bound = set(binding.weights) | set(binding.recurrent)
    unbound = [e.name for e in plan.tensors.values() if e.role == "weight" and e.name not in bound]
    if unbound:
        raise UnsupportedError(
            f"the plan quantizes weight(s) {', '.join(unbound[:3])} that no nn.Conv1d/Conv2d/Linear/GRU/LSTM/RNN "
            "holds: the integer PyTorch module would run them in float.",
            "use the exported ONNX model (export()).",
        )
    inits = {t.name: t for t in float_model.graph.initializer}
    layers: dict[str, dict[str, Any]] = {}
    modules = dict(gm.named_modules())
    for wname, (target, transposed) in binding.weights.items():
        entry = plan.tensors[wname]
        q, scale, zero = _weight_codes(entry, inits[wname])
        axis = entry.spec.axis
        if transposed:
            q = q.T
            axis = None if axis is None else 1 - axis
        dtype = torch.int16 if entry.spec.bits == 16 else torch.int8
        info: dict[str, Any] = {
            **_layer_conf(modules[target]),  # type: ignore[arg-type]
            "axis": axis,
            "q": torch.from_numpy(np.ascontiguousarray(q)).to(dtype),
            "scale": torch.from_numpy(np.asarray(scale, np.float32).reshape(-1)),
            "zero": torch.from_numpy(np.asarray(zero, np.int64).reshape(-1)),
            "bits": entry.spec.bits,
        }
        layers[target] = info
    _recurrent_parts(layers, modules, binding, inits, plan)
    for bname, target in binding.biases.items():
        if target not in layers:
            continue
        b = numpy_helper.to_array(inits[bname]).astype(np.float64).reshape(-1)
        bias_entry = plan.tensors.get(bname)
        if bias_entry is not None and bias_entry.role == "bias" and bias_entry.scale is not None:
            s = np.asarray(bias_entry.scale, np.float64)
            layers[target]["bias_q"] = torch.from_numpy(np.round(b / s).astype(np.int32))
            layers[target]["bias_scale"] = torch.from_numpy(s.astype(np.float32))
        else:
            layers[target]["bias"] = torch.from_numpy(b.astype(np.float32))
    acts: dict[str, dict[str, Any]] = {}
    for name, node in binding.acts.items():
        if name in binding.tied or name not in plan.tensors:
            continue  # folded into the Relu/Clip output's quantizer
        e = plan.tensors[name]
        if e.scale is None or e.zero_point is None:
            raise ModelError(f"activation '{name}' has no scale in the plan.", "export the plan first.")
        acts[node] = {
            "scale": float(np.float32(e.scale[0])),
            "zero": int(e.zero_point[0]),
            "qmin": e.spec.qmin,
            "qmax": e.spec.qmax,
            "tensor": name,
        }
    return layers, acts


def _weight_codes(entry: TensorEntry, init: onnx.TensorProto) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The integer codes of weight ``init`` on ``entry``'s grid, with its float32 scale and int64 zero
    point (0-d when per tensor).  ModelError when the plan has no scale for it (not exported yet)."""
    if entry.scale is None or entry.zero_point is None:
        raise ModelError(f"weight '{entry.name}' has no scale in the plan.", "export the plan first.")
    w = numpy_helper.to_array(init).astype(np.float32)
    scale = np.asarray(entry.scale, np.float32)
    zero = np.asarray(entry.zero_point, np.int64)
    if entry.spec.axis is None:
        scale, zero = scale.reshape(()), zero.reshape(())
    return quantize(w, scale, zero, entry.spec), scale, zero


def _recurrent_parts(
    layers: dict[str, dict[str, Any]],
    modules: dict[str, nn.Module],
    binding: Binding,
    inits: dict[str, onnx.TensorProto],
    plan: QuantPlan,
) -> None:
    """``layers[target]`` for each bound GRU/LSTM/RNN: its W/R codes in torch row order (``recurrent``); for
    each one the plan keeps float (static int8 on the CPU target), its float weights (key ``float``)."""
    for wname, (target, key) in binding.recurrent.items():
        m = modules[target]
        rnn = m.rnn if isinstance(m, QuantRecurrent) else m
        entry = plan.tensors[wname]
        q, s, z = codes_in_torch_order(rnn, *_weight_codes(entry, inits[wname]))
        info = layers.setdefault(target, int_info(rnn))
        info["weights"][key] = {
            "q": torch.from_numpy(np.ascontiguousarray(q)).to(
                torch.int16 if entry.spec.bits == 16 else torch.int8
            ),
            "scale": torch.from_numpy(np.asarray(s, np.float32)),
            "zero": torch.from_numpy(np.asarray(z, np.int64)),
            "axis": entry.spec.axis,
            "bits": entry.spec.bits,
        }
    for target, m in modules.items():  # a GRU/LSTM/RNN the plan keeps float: its weights go in the file too
        parent = modules.get(target.rsplit(".", 1)[0]) if "." in target else None
        if isinstance(m, RNN_TYPES) and target not in layers and not isinstance(parent, QuantRecurrent):
            floats = {n: p.detach().clone() for n, p in m.named_parameters() if n.startswith("weight")}
            layers[target] = {**int_info(m), "float": floats}


def build_int_module(
    gm: fx.GraphModule, layers: dict[str, dict[str, Any]], acts: dict[str, dict[str, Any]]
) -> fx.GraphModule:
    """Replace bound layers of a fused, quantizer-free ``gm`` by ``IntLayer``s; insert ``FixedQuant``s."""
    modules = dict(gm.named_modules())
    for target, info in layers.items():
        if info["kind"] in ("gru", "lstm", "rnn"):
            rnn = modules.get(target)
            if not isinstance(rnn, RNN_TYPES) or kind_of(rnn).lower() != info["kind"]:
                raise ModelError(
                    f"the integer model has a {info['kind'].upper()} at '{target}', which the PyTorch model does not.",
                    "load it with the factory of the architecture it was made from.",
                )
            set_module(gm, target, IntRecurrent(rnn, info))
            continue
        if not isinstance(modules.get(target), QuantLayer):
            raise ModelError(
                f"the integer model names layer '{target}', which the PyTorch model does not have.",
                "load it with the factory of the architecture it was made from.",
            )
        set_module(gm, target, IntLayer(modules[target], info))
    nodes = {n.name: n for n in gm.graph.nodes}
    for i, (node_name, a) in enumerate(sorted(acts.items())):
        if node_name not in nodes:
            raise ModelError(
                f"the integer model quantizes graph node '{node_name}', which the traced model does not have.",
                "load it with the factory of the architecture it was made from.",
            )
        sub = f"eq_q_{i}"
        gm.add_submodule(sub, FixedQuant(a["scale"], a["zero"], a["qmin"], a["qmax"]))
        node = nodes[node_name]
        with gm.graph.inserting_after(node):
            q = gm.graph.call_module(sub, (node,))
        node.replace_all_uses_with(q, delete_user_cb=lambda u, q=q: u is not q)
    gm.graph.lint()
    gm.recompile()
    return gm.eval()


def float_state(gm: nn.Module, layers: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The parameters and buffers of ``gm`` (the fused model the integer layers were taken from) outside
    the integer layers ``layers`` and the fake quantizers: every float tensor the integer module still
    computes with (LayerNorm, embeddings, layers the plan keeps float), copied."""
    quant = [n + "." for n, m in gm.named_modules() if isinstance(m, WeightQuantizer | ActQuantizer)]
    skip = tuple(f"{t}." for t in layers) + tuple(quant)
    return {k: v.detach().clone() for k, v in gm.state_dict().items() if not k.startswith(skip)}


def restore_float_state(gm: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a file's ``float`` tensors into ``gm`` (the factory's fused model); ModelError when one is
    missing there or has another shape (another architecture)."""
    own = gm.state_dict()
    bad = [k for k, v in state.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
    if bad:
        raise ModelError(
            f"the integer model holds float tensor(s) {', '.join(bad[:3])} that the PyTorch model does not "
            "have (or with another shape).",
            "load it with the factory of the architecture it was made from.",
        )
    gm.load_state_dict(state, strict=False)


def save(
    path: str | Path,
    layers: dict[str, dict[str, Any]],
    acts: dict[str, dict[str, Any]],
    floats: dict[str, torch.Tensor],
) -> Path:
    """Write the ``.pth`` (atomically: temporary file, then rename); ``floats``: :func:`float_state`."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    torch.save({"format": FORMAT, "layers": layers, "acts": acts, "float": floats}, str(tmp))
    tmp.replace(p)
    return p


def load(path: str | Path, model_factory: Callable[[], nn.Module] | nn.Module) -> fx.GraphModule:
    """The integer module of ``path`` (written by ``QATModule.save``/``edgequant quantize``) on ``model_factory()``.

    ``model_factory`` is the float architecture: a callable building it, or a module; for a file that
    ``edgequant quantize net.pt`` wrote from a TorchScript archive, ``torch.jit.load("net.pt")`` (read
    by ``edgequant.torch.torchscript.to_fx`` with the input shapes the file records).  Only tensors,
    numbers and strings are read (``weights_only=True``).  Raises ModelError for another file or
    architecture.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"'{p}' does not exist.", "check the path.")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"'{p}' is not an EdgeQuant integer PyTorch file: {' '.join(str(exc).split())[:300]}",
            "pass the <name>_<tag>.pth that EdgeQuant wrote.",
        ) from exc
    if not isinstance(obj, dict) or obj.get("format") not in READS:
        raise ModelError(
            f"'{p}' is not an EdgeQuant integer PyTorch file (format "
            f"{obj.get('format') if isinstance(obj, dict) else None!r}, expected {FORMAT!r}).",
            "pass the <name>_<tag>.pth that EdgeQuant wrote; a plain state_dict loads with load_state_dict.",
        )
    model = model_factory if isinstance(model_factory, nn.Module) else model_factory()
    if not isinstance(model, nn.Module):
        raise ModelError(f"the factory returned {type(model).__name__}, not a torch.nn.Module.", "fix it.")
    if isinstance(model, torch.jit.ScriptModule):
        ts = obj.get("torchscript")
        if not isinstance(ts, dict):
            raise ModelError(
                f"'{p}' was written from a Python module, not from a TorchScript archive.",
                "pass that module's factory (the architecture it was made from).",
            )
        from edgequant.torch.torchscript import to_fx

        model = to_fx(model, tuple(torch.zeros(1, *s) for s in ts["input_shapes"]))
    gm = fuse_layers(trace(model.eval()))
    if isinstance(obj.get("float"), dict):
        restore_float_state(gm, obj["float"])
    return build_int_module(gm, obj["layers"], obj["acts"])
