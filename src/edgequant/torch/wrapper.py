"""QATModule and PTQModule: a PyTorch model with EdgeQuant's fake quantization, ``convert()`` and ``export()``.

Construction (both classes):

1. the model is copied, traced with torch.fx, and every Conv/Linear (+ the BatchNorm after it) becomes
   a ``QuantLayer``;
2. its BN-folded float form is exported to ONNX and planned by ``planner.resolve`` with the recipe
   (``weight_bits``, ``act_bits``, ``target`` override the recipe's values) -- the same plan
   ``edgequant quantize`` makes, so bits, symmetry, granularity, power-of-two scales, which tensors
   are quantized, and which stay float come from one place;
3. every planned tensor is bound to its fx node or layer (``edgequant.torch.graph``) and gets a
   fake quantizer with that tensor's QuantSpec.  Constant operands of Add/Mul stay float (noted in
   the plan).

Epochs are counted by ``train()`` calls: each ``model.train()`` (mode True) starts the next epoch,
numbered from 1, as TI's QAT wrapper does -- call it once at the start of every epoch.  BatchNorm
statistics are frozen from epoch ``num_batch_norm_update_epochs + 1`` on (default: half of
``total_epochs``; ``False``: never), the activation observers from epoch
``num_observer_update_epochs + 1`` (``False``: never; after that the activation scales are learned).
``step_epoch()`` is the explicit alternative: it advances the count without changing the mode.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from edgequant.errors import RecipeError, UnsupportedError
from edgequant.plan import QuantPlan
from edgequant.recipe import Recipe
from edgequant.recipe.flags import api_refusals
from edgequant.torch import artifact
from edgequant.torch.fake_quant import ActQuantizer, WeightQuantizer
from edgequant.torch.graph import (
    Binding,
    as_tuple,
    bind,
    float_mode,
    fuse_layers,
    insert_quantizers,
    set_module,
    trace,
)
from edgequant.torch.layers import QuantLayer
from edgequant.torch.recurrent import QuantRecurrent, to_onnx_order


def make_recipe(recipe: Recipe | dict[str, Any] | str | Path | None, **overrides: Any) -> Recipe:
    from edgequant.pipeline import resolve_recipe
    from edgequant.targets.adapt import adapt

    r, _notes = adapt(resolve_recipe(recipe, {k: v for k, v in overrides.items() if v is not None}))
    if r.method != "static":
        raise RecipeError(
            f"QAT/PTQ modules fake-quantize weights and activations (method 'static'); the recipe says "
            f"'{r.method}'.",
            "use method static; for dynamic or fp16 PyTorch models use edgequant.torch.dynamic.",
        )
    return r


def plan_float(
    gm: torch.fx.GraphModule, examples: tuple[torch.Tensor, ...], recipe: Recipe, name: str
) -> tuple[onnx.ModelProto, QuantPlan, list[str], dict[str, Any]]:
    """Export ``gm`` in float mode to ONNX, repair it and plan it exactly as ``quantize`` does."""
    from edgequant import planner
    from edgequant.export.opset import raise_for_plan
    from edgequant.model import prepare
    from edgequant.model.torch_import import export_torch
    from edgequant.runtime import detect

    with tempfile.TemporaryDirectory(prefix="edgequant-qat-") as tmp, float_mode(gm):
        path = Path(tmp) / f"{name}.onnx"
        rep = export_torch(gm, examples if len(examples) > 1 else examples[0], path)
        from edgequant.model import load_model

        onnx_model = load_model(path)
    check = {"source": f"torch:{name}", "max_abs_diff": rep.max_abs_diff, "opset": rep.opset}
    float_model, notes = prepare(onnx_model)
    plan = planner.resolve(float_model, recipe, detect())
    float_model, plan = raise_for_plan(float_model, plan, notes)
    for cname in [n for n, e in plan.tensors.items() if e.role == "constant"]:
        del plan.tensors[cname]
        plan.notes.append(
            f"constant operand '{cname}' stays float: the PyTorch side fake-quantizes module weights "
            "and activations only."
        )
    return float_model, plan, notes, check


class QATModule(nn.Module):
    """Quantization-aware training wrapper; see the module docstring for the flow and epoch counting.

    ``example_inputs``: a tensor (or tuple) with a batch axis, as the model's forward takes them.
    ``target``: a hardware profile name (as ``edgequant quantize --target``).  ``weight_bits`` and
    ``act_bits``: 8/4/2 and 8/16/4 (default 8, or the recipe's).  ``learn_scales``: LSQ step sizes
    (float scales) or TQT exponents (power-of-two scales) are parameters.
    Raises RecipeError/UnsupportedError for combinations ``quantize`` refuses (worded in keyword
    arguments, ``act_bits=8``, as ``edgequant.quantize``), ModelError when the model does not trace.
    """

    learn_default = True

    @api_refusals  # refusals name act_bits=8, target='akida1'; the CLI's qat holds flag_words() (--act-bits 8)
    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        *,
        target: str | None = None,
        weight_bits: int | None = None,
        act_bits: int | None = None,
        total_epochs: int = 1,
        num_batch_norm_update_epochs: int | bool | None = None,
        num_observer_update_epochs: int | bool = False,
        bias_calibration_factor: float = 0.0,
        recipe: Recipe | dict[str, Any] | str | Path | None = None,
        learn_scales: bool | None = None,
    ) -> None:
        super().__init__()
        if bias_calibration_factor:
            raise UnsupportedError(
                f"bias_calibration_factor={bias_calibration_factor} is not implemented by EdgeQuant's QAT.",
                "leave it at 0.0; EdgeQuant's ONNX path has --bias-correction for PTQ.",
            )
        if total_epochs < 1:
            raise RecipeError(f"total_epochs {total_epochs} must be >= 1.", "pass the planned epoch count.")
        self.recipe = make_recipe(recipe, weight_bits=weight_bits, act_bits=act_bits, target=target)
        self.examples = tuple(t.detach().clone() for t in as_tuple(example_inputs))
        self.name = type(model).__name__.lower()
        self.total_epochs = total_epochs
        self.bn_epochs: int | bool = (
            max(1, total_epochs // 2)
            if num_batch_norm_update_epochs is None
            else num_batch_norm_update_epochs
        )
        self.observer_epochs = num_observer_update_epochs
        self.epoch = 0
        gm = fuse_layers(trace(copy.deepcopy(model).eval()))
        float_model, plan, _notes, _check = plan_float(gm, self.examples, self.recipe, self.name)
        self.plan = plan
        self.binding: Binding = bind(gm, self.examples, float_model, plan)
        # planned weights that neither a Conv/Linear nor a GRU/LSTM/RNN holds (none today: bind() raises)
        bound = set(self.binding.weights) | set(self.binding.recurrent)
        self.unsimulated = [
            e.name for e in plan.tensors.values() if e.role == "weight" and e.name not in bound
        ]
        if self.unsimulated:
            plan.notes.append(
                f"weight(s) {', '.join(self.unsimulated)} are quantized at export from the trained float values: "
                "QAT simulates only Conv/Linear weights (and activations), and convert()/save() refuse the model."
            )
        learn = self.learn_default if learn_scales is None else learn_scales
        self.act_modules = insert_quantizers(gm, self.binding, plan, {"weight": learn, "activation": learn})
        self.model = gm
        self._fx_nodes = dict(self.binding.acts)

    # -- training schedule ---------------------------------------------------------------------
    def step_epoch(self) -> int:
        """Advance the epoch count and apply the BN / observer freezes due; returns the new epoch."""
        self.epoch += 1
        if self.bn_epochs is not False and self.bn_epochs is not True and self.epoch > int(self.bn_epochs):
            for m in self.model.modules():
                if isinstance(m, QuantLayer):
                    m.freeze_bn()
        obs = self.observer_epochs
        if obs is not False and obs is not True and self.epoch > int(obs):
            self.freeze_observers()
        return self.epoch

    def train(self, mode: bool = True) -> QATModule:
        if mode:
            self.step_epoch()
        super().train(mode)
        return self

    def freeze_observers(self) -> None:
        for m in self.model.modules():
            if isinstance(m, ActQuantizer):
                m.freeze_observer()

    def forward(self, *args: Any) -> Any:
        return self.model(*args)

    def describe(self) -> dict[str, Any]:
        """The training schedule as the report records it."""
        layers = [m for m in self.model.modules() if isinstance(m, QuantLayer)]
        acts = [m for m in self.model.modules() if isinstance(m, ActQuantizer)]
        return {
            "kind": type(self).__name__,
            "epochs_seen": self.epoch,
            "total_epochs": self.total_epochs,
            "bn_frozen_after_epoch": self.bn_epochs,
            "observers_frozen_after_epoch": self.observer_epochs,
            "bn_frozen": any(m.bn_frozen for m in layers if m.bn is not None),
            "observers_frozen": bool(acts) and not any(a.observing for a in acts),
            "weight_quantizers": sum(m.wq is not None for m in layers)
            + sum(len(m.wq) for m in self.model.modules() if isinstance(m, QuantRecurrent)),
            "activation_quantizers": len(acts),
            "learned_scales": any(m.wq is not None and m.wq.learn for m in layers),
            "weights_not_simulated": list(self.unsimulated),
        }

    # -- outputs -----------------------------------------------------------------------------
    def _exported(
        self,
    ) -> tuple[onnx.ModelProto, onnx.ModelProto, QuantPlan, Binding, list[str], dict[str, Any]]:
        """Float ONNX (current weights, BN folded), its QDQ model and plan with this module's scales."""
        from edgequant.errors import ExportError
        from edgequant.export import export_qdq
        from edgequant.planner import tie_activation_ranges

        was = self.training
        self.model.eval()
        try:
            float_model, plan, notes, check = plan_float(self.model, self.examples, self.recipe, self.name)
        finally:
            self.model.train(was)
        # the exporter numbers constant-folded tensors by trace order, so names move; the plan's order
        # (node order of one and the same structure) and each entry's role and spec do not
        old, cur = list(self.plan.tensors.values()), list(plan.tensors.values())
        if [(e.role, e.spec) for e in old] != [(e.role, e.spec) for e in cur]:
            raise ExportError(
                "the re-exported model plans other tensors than the one training started from.",
                "do not change the module's structure after wrapping it.",
            )
        rename = {a.name: b.name for a, b in zip(old, cur, strict=True)}
        binding = Binding(
            weights={rename[k]: v for k, v in self.binding.weights.items()},
            biases=_biases(float_model, {rename[k]: v[0] for k, v in self.binding.weights.items()}),
            acts={rename[k]: v for k, v in self.binding.acts.items()},
            tied={rename[k]: rename[v] for k, v in self.binding.tied.items()},
            recurrent={rename[k]: v for k, v in self.binding.recurrent.items()},
        )
        act_modules = {rename[k]: v for k, v in self.act_modules.items()}
        modules = dict(self.model.named_modules())
        ranges: dict[str, tuple[float, float]] = {}
        for name in plan.activations():
            src = binding.tied.get(name, name)
            q = modules[act_modules[src]]
            assert isinstance(q, ActQuantizer)
            if not q.calibrated:
                raise ExportError(
                    f"activation '{name}' was never observed, so it has no range.",
                    "run forward passes on real data (training or calibration) before convert()/export().",
                )
            ranges[name] = q.range_for_export()
        plan = tie_activation_ranges(float_model, plan.with_ranges(ranges))
        weight_params = {}  # the quantizers' own parameters, not re-derived from ranges
        for name in plan.activations():
            q = modules[act_modules[binding.tied.get(name, name)]]
            assert isinstance(q, ActQuantizer)
            weight_params[name] = q.qparams()
        for wname, (target, _t) in binding.weights.items():
            layer = modules[target]
            assert isinstance(layer, QuantLayer) and layer.wq is not None
            weight_params[wname] = layer.wq.qparams()
        for wname, (target, key) in binding.recurrent.items():
            rnn = modules[target]
            assert isinstance(rnn, QuantRecurrent)
            wq = rnn.wq[key]
            assert isinstance(wq, WeightQuantizer)
            weight_params[wname] = to_onnx_order(rnn.rnn, wq.qparams())
        quantized, plan = export_qdq(float_model, plan, weight_params=weight_params)
        return float_model, quantized, plan, binding, notes, check

    def convert(self) -> torch.fx.GraphModule:
        """A new module with frozen integer weights and quantization parameters (see ``artifact``)."""
        float_model, _q, plan, binding, _n, _c = self._exported()
        layers, acts = artifact.int_parts(self.model, binding, float_model, plan)
        return artifact.build_int_module(_stripped(self.model), layers, acts)

    def save(self, path: str | Path) -> Path:
        """Write the integer model as ``.pth`` (load with ``edgequant.torch.load(path, factory)``)."""
        float_model, _q, plan, binding, _n, _c = self._exported()
        layers, acts = artifact.int_parts(self.model, binding, float_model, plan)
        return artifact.save(path, layers, acts, artifact.float_state(self.model, layers))

    @api_refusals  # format='ti-npu-int', target='ti-npu' (the CLI's qat: --format, --target)
    def export(
        self,
        example_inputs: Any,
        path: str | Path,
        *,
        input_names: list[str] | None = None,
        output_names: list[str] | None = None,
        check_data: Any = None,
        format: str = "qdq",
    ) -> Any:
        """Write the QDQ ONNX model at ``path`` with its report (``.json``) and plan (``.plan.json``) beside.

        ``example_inputs`` (or ``check_data``, any calibration-data form) feed the check against the
        float model.  ``format="ti-npu-int"`` (target ti-npu only, else RecipeError, as ``quantize``)
        also writes TI's integer-only form ``<stem>_ti-npu-int.onnx``, compared with the QDQ model in the
        report's ``ti_npu_int``.  Returns the ``QuantResult``.
        """
        from edgequant.torch.export import export_result

        return export_result(self, example_inputs, Path(path), input_names, output_names, check_data, format)


def _biases(model: onnx.ModelProto, weights: dict[str, str]) -> dict[str, str]:
    """Bias name -> layer, from the Conv/Gemm nodes that read the bound weights."""
    return {
        n.input[2]: weights[n.input[1]]
        for n in model.graph.node
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2] and n.input[1] in weights
    }


def _stripped(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of the fused graph without activation quantizers (their fx nodes removed)."""
    out = copy.deepcopy(gm)
    for node in list(out.graph.nodes):
        if node.op == "call_module" and isinstance(out.get_submodule(node.target), ActQuantizer):
            node.replace_all_uses_with(node.args[0])
            out.graph.erase_node(node)
    for m in out.modules():
        if isinstance(m, QuantLayer):
            m.wq = None
    for name, m in list(out.named_modules()):
        if isinstance(m, QuantRecurrent):
            set_module(out, name, m.rnn)
    out.delete_all_unused_submodules()
    out.recompile()
    return out


class PTQModule(QATModule):
    """Post-training quantization: run calibration batches through it under ``torch.no_grad()`` (eval
    mode); the observers keep the global min/max, as ``--calib-method minmax``.  Scales are not learned.

    Training mode is refused (UnsupportedError), with or without gradients: its BatchNorm would
    normalise with batch statistics and the observers would average ranges instead of widening them.
    In eval mode, gradients enabled are harmless: the observers record no autograd history, so a
    forward outside ``torch.no_grad()`` calibrates exactly as one inside it (it only costs memory)."""

    learn_default = False

    def __init__(self, model: nn.Module, example_inputs: Any, **kwargs: Any) -> None:
        super().__init__(model, example_inputs, **kwargs)
        for m in self.model.modules():
            if isinstance(m, ActQuantizer):
                m.calibrate_in_eval = True
        self.eval()

    def forward(self, *args: Any) -> Any:
        if self.training:
            raise UnsupportedError(
                "PTQModule calibrates; it is not trained (training mode would calibrate on batch statistics).",
                "call .eval() and run it under torch.no_grad(); fine-tune with QATModule.",
            )
        return self.model(*args)
