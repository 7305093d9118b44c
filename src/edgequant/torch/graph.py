"""The PyTorch model as a torch.fx graph, and which of its nodes carry which tensor of the ONNX plan.

EdgeQuant plans quantization on the ONNX graph (``planner.resolve``: bits, symmetry, granularity,
power-of-two, which tensors get a Q/DQ pair and why the others do not).  The PyTorch side does not
re-implement those rules: it exports the BN-folded float model to ONNX, lets the planner decide, and
then *binds* every planned tensor to the place in the fx graph that computes it:

* a weight (Conv/Gemm/MatMul input 1) to the ``QuantLayer`` whose folded weight has the same values,
  in the same layout or transposed (``nn.Linear`` exported as ``MatMul`` holds ``W^T``);
* a bias (Conv/Gemm input 2) to the layer that owns that weight;
* a GRU/LSTM/RNN ``W``/``R`` (inputs 1, 2) to the ``nn.GRU``/``nn.LSTM``/``nn.RNN`` layer whose stacked,
  gate-reordered weights have the same values (``edgequant.torch.recurrent``); the stacked layers of a
  ``num_layers > 1`` module are not bound: the sequence between them is an ONNX tensor with no fx node;
* an activation to the fx node whose output has the same values on the example inputs: same shape
  and values first; otherwise the same multiset of values (a per-tensor quantizer commutes with the
  reshapes and transposes the exporter adds).  Of several such nodes the earliest is taken.

A Relu/Clip whose input and output are both planned on one grid (``planner.tie_activation_ranges``)
gets a single quantizer after it: ``Q_y(relu(x)) == relu-on-grid(Q_y(x))`` because 0 is on the grid.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import fx, nn

from edgequant.errors import ExportError, ModelError, UnsupportedError
from edgequant.plan import QuantPlan
from edgequant.torch.fake_quant import ActQuantizer, WeightQuantizer
from edgequant.torch.layers import BN_TYPES, LAYER_TYPES, QuantLayer
from edgequant.torch.recurrent import ONNX_OP, RNN_TYPES, QuantRecurrent, match_weight

WEIGHT_OPS = {"Conv": 1, "Gemm": 1, "MatMul": 1}


def trace_failure(exc: BaseException) -> str:
    """Why tracing failed and where: the reason, and the model's own source line that raised it
    (the last traceback frame outside torch), e.g. ``TraceError: ... at net.py:12 in forward: `if x.sum() > 0:```."""
    import linecache
    import traceback

    where = ""
    torch_dir = str(Path(torch.__file__).parent)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if not frame.filename.startswith(torch_dir) and "edgequant" not in Path(frame.filename).parts[-3:-1]:
            code = (frame.line or linecache.getline(frame.filename, frame.lineno or 0)).strip()
            where = f" at {Path(frame.filename).name}:{frame.lineno} in {frame.name}: `{code}`"
            break
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}{where}"


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with the failing line and reason as a ModelError."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:
        raise ModelError(
            f"torch.fx cannot trace {type(model).__name__}: {trace_failure(exc)}",
            "QAT inserts activation quantizers into the traced graph, so the forward must trace: move the "
            "data-dependent Python control flow into a leaf module or rewrite it. Model surgery "
            "(edgequant.torch.surgery.replace_modules) still works on such a model by module swapping "
            "(setattr on the owning module, no graph), but functional calls and channel padding need the trace.",
        ) from exc


def _parent(gm: nn.Module, target: str) -> tuple[nn.Module, str]:
    *path, leaf = target.split(".")
    mod = gm
    for p in path:
        mod = getattr(mod, p)
    return mod, leaf


def set_module(gm: nn.Module, target: str, new: nn.Module) -> None:
    parent, leaf = _parent(gm, target)
    setattr(parent, leaf, new)


def fuse_layers(gm: fx.GraphModule) -> fx.GraphModule:
    """Every Conv1d/Conv2d/Linear becomes a ``QuantLayer``; a BatchNorm that is its only user joins it."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), LAYER_TYPES):
            continue
        layer = modules[node.target]
        users = list(node.users)
        bn = None
        if len(users) == 1 and users[0].op == "call_module" and users[0].args[:1] == (node,):
            cand = modules.get(users[0].target)
            pairs = {nn.Conv2d: nn.BatchNorm2d, nn.Conv1d: nn.BatchNorm1d, nn.Linear: nn.BatchNorm1d}
            if isinstance(cand, BN_TYPES) and type(cand) is pairs[type(layer)] and cand.track_running_stats:
                bn = cand
        set_module(gm, node.target, QuantLayer(layer, bn))
        if bn is not None:
            bn_node = users[0]
            bn_node.replace_all_uses_with(node)
            gm.graph.erase_node(bn_node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


@contextlib.contextmanager
def float_mode(model: nn.Module) -> Iterator[None]:
    """Quantizers off (identity), eval mode: the BN-folded float model that the ONNX model holds."""
    quantizers = [m for m in model.modules() if isinstance(m, ActQuantizer | WeightQuantizer)]
    before = [q.enabled for q in quantizers]
    was_training = model.training
    model.eval()
    for q in quantizers:
        q.enabled = False
    try:
        yield
    finally:
        for q, e in zip(quantizers, before, strict=True):
            q.enabled = e
        model.train(was_training)


@dataclass
class Binding:
    """Plan tensor name -> where it lives in the fx graph."""

    weights: dict[str, tuple[str, bool]] = field(default_factory=dict)  # name -> (layer target, transposed)
    biases: dict[str, str] = field(default_factory=dict)  # name -> layer target
    acts: dict[str, str] = field(default_factory=dict)  # name -> fx node name
    tied: dict[str, str] = field(default_factory=dict)  # Relu/Clip input -> its output (one quantizer)
    # GRU/LSTM/RNN W or R -> (module target, quantizer key 'ih_l0' / 'hh_l0' ...): see torch.recurrent
    recurrent: dict[str, tuple[str, str]] = field(default_factory=dict)


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[str, np.ndarray] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            self.values[n.name] = out.detach().cpu().numpy()
        return out


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    tol = 1e-4 * (float(np.max(np.abs(a))) if a.size else 0.0) + 1e-6
    return bool(np.max(np.abs(a.astype(np.float64) - b), initial=0.0) <= tol)


def as_tuple(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, list | tuple) and all(isinstance(t, torch.Tensor) for t in example_inputs):
        return tuple(example_inputs)
    raise ModelError(
        f"example_inputs must be a tensor or a tuple of tensors, got {type(example_inputs).__name__}.",
        "pass e.g. torch.randn(1, 3, 32, 32), or a tuple for several inputs.",
    )


def bind(
    gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...], model: onnx.ModelProto, plan: QuantPlan
) -> Binding:
    """Bind the plan's weights, biases and activations to ``gm`` (see the module docstring)."""

    out = Binding()
    layers = {n: m for n, m in gm.named_modules() if isinstance(m, QuantLayer)}
    inits = {t.name: t for t in model.graph.initializer}
    with float_mode(gm), torch.no_grad():
        folded = {n: m.folded_weight().detach().numpy() for n, m in layers.items()}
        rec = _Recorder(gm)
        rec.run(*example_inputs)
    for node in model.graph.node:
        slot = WEIGHT_OPS.get(node.op_type)
        if slot is None or len(node.input) <= slot or node.input[slot] not in plan.tensors:
            continue
        wname = node.input[slot]
        w = numpy_helper.to_array(inits[wname])
        hit = next(((n, False) for n, f in folded.items() if _close(f, w)), None)
        if hit is None and w.ndim == 2:
            hit = next(((n, True) for n, f in folded.items() if _close(f, w.T)), None)
        if hit is None:
            raise ExportError(
                f"weight '{wname}' of {node.op_type} '{node.name}' matches no Conv/Linear of the PyTorch model.",
                "only weights held by nn.Conv1d/Conv2d/Linear can be fake-quantized; exclude the node "
                "(recipe 'exclude') or express the layer as one of those modules.",
            )
        out.weights[wname] = hit
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2]:
            out.biases[node.input[2]] = hit[0]
    _bind_recurrent(out, gm, model, plan)
    _bind_acts(out, rec, model, plan, example_inputs)
    return out


def _bind_recurrent(out: Binding, gm: fx.GraphModule, model: onnx.ModelProto, plan: QuantPlan) -> None:
    """Each planned W/R of a GRU/LSTM/RNN node to the torch module and layer holding those values."""
    rnns = {n: m for n, m in gm.named_modules() if isinstance(m, RNN_TYPES)}
    stacked = [
        f"{n} ({type(m).__name__}, num_layers={m.num_layers})" for n, m in rnns.items() if m.num_layers > 1
    ]
    if stacked:
        raise UnsupportedError(
            f"{', '.join(stacked)}: the sequence between stacked layers is quantized in the ONNX model but is "
            "no tensor of the PyTorch graph, so its quantizer has no place.",
            "build the stack from single-layer modules (num_layers=1 each, called in turn).",
        )
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("GRU", "LSTM", "RNN"):
            continue
        for slot in (1, 2):
            if (
                slot >= len(node.input)
                or node.input[slot] not in plan.tensors
                or node.input[slot] not in inits
            ):
                continue
            wname = node.input[slot]
            w = numpy_helper.to_array(inits[wname])
            hit = next(
                (
                    (target, key)
                    for target, m in rnns.items()
                    if ONNX_OP[type(m)] == node.op_type and (key := match_weight(m, slot, w, _close))
                ),
                None,
            )
            if hit is None:
                raise ExportError(
                    f"weight '{wname}' of {node.op_type} '{node.name}' matches no nn.{node.op_type} layer of the "
                    "PyTorch model.",
                    "exclude the node (recipe 'exclude') or report the model.",
                )
            out.recurrent[wname] = hit


def _bind_acts(
    out: Binding,
    rec: _Recorder,
    model: onnx.ModelProto,
    plan: QuantPlan,
    example_inputs: tuple[torch.Tensor, ...],
) -> None:
    from edgequant.runtime import OrtRuntime

    acts = plan.activations()
    consumers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    for n in model.graph.node:
        if n.op_type in ("Relu", "Clip") and n.input[0] in acts and n.output[0] in acts:
            if plan.tensors[n.input[0]].spec == plan.tensors[n.output[0]].spec:
                out.tied[n.input[0]] = n.output[0]
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    have = {o.name for o in aug.graph.output}
    for name in acts:
        if name not in have:
            aug.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    init_names = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in init_names]
    feeds = {n: t.detach().cpu().numpy() for n, t in zip(names, example_inputs, strict=True)}
    values = OrtRuntime(allow_spinning=False).run(aug, feeds, [a for a in acts if a not in out.tied])
    order = list(rec.values)
    for name, v in values.items():
        v64 = v.astype(np.float64)
        node = next((k for k in order if _close(rec.values[k], v64)), None)
        if node is None:
            flat = np.sort(v64.reshape(-1))
            node = next(
                (
                    k
                    for k in order
                    if rec.values[k].size == v.size and _close(np.sort(rec.values[k].reshape(-1)), flat)
                ),
                None,
            )
        if node is None:
            raise ExportError(
                f"activation '{name}' of the ONNX model has no counterpart in the traced PyTorch graph, so its "
                "quantizer cannot be placed.",
                "exclude the node that produces it (recipe 'exclude'), or report the model.",
            )
        out.acts[name] = node


def insert_quantizers(
    gm: fx.GraphModule, binding: Binding, plan: QuantPlan, learn: dict[str, bool]
) -> dict[str, str]:
    """Weight quantizers into the bound layers, an ``ActQuantizer`` after each bound fx node.

    ``learn`` says per role ("weight", "activation") whether scales are parameters.  Returns the
    activation name -> quantizer submodule name map.
    """
    layers = dict(gm.named_modules())
    for wname, (target, transposed) in binding.weights.items():
        spec = plan.tensors[wname].spec
        layer = layers[target]
        assert isinstance(layer, QuantLayer)
        axis = spec.axis
        if axis is not None and transposed:
            axis = 1 - axis
        layer.wq = WeightQuantizer(spec, layer.folded_weight(), axis, learn["weight"])
    for wname, (target, key) in binding.recurrent.items():
        rnn = gm.get_submodule(target)
        if not isinstance(rnn, QuantRecurrent):
            rnn = QuantRecurrent(rnn)
            set_module(gm, target, rnn)
        rnn.add(key, plan.tensors[wname].spec, learn["weight"])
    nodes = {n.name: n for n in gm.graph.nodes}
    placed: dict[str, str] = {}  # fx node -> quantizer submodule
    result: dict[str, str] = {}
    for i, (name, node_name) in enumerate(sorted(binding.acts.items(), key=lambda kv: kv[0])):
        if node_name in placed:
            result[name] = placed[node_name]
            continue
        sub = f"eq_act_{i}"
        gm.add_submodule(sub, ActQuantizer(plan.tensors[name].spec, learn["activation"]))
        node = nodes[node_name]
        with gm.graph.inserting_after(node):
            q = gm.graph.call_module(sub, (node,))
        node.replace_all_uses_with(q, delete_user_cb=lambda u, q=q: u is not q)
        placed[node_name] = sub
        result[name] = sub
    gm.graph.lint()
    gm.recompile()
    return result
