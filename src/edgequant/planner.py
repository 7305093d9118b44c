"""Graph + recipe + CPU -> QuantPlan: which tensors are quantized, how, and why others are not.

Static QDQ follows the shape ONNX Runtime's QDQ fusions look for: the float input and output
activations of compute ops (Conv, ConvTranspose, MatMul, Gemm) and of the ops ORT runs on integers
or passes through (Add, Concat, pooling, Relu, Reshape, ...) get a QuantizeLinear/DequantizeLinear
pair; their constant weights get a DequantizeLinear of an integer initializer, per output channel by
default.  Every node gets a decision, and every node left float gets its reason.

This module walks the graph and decides; its parts live in :mod:`edgequant.planning` (op tables and
graph lookups, specs, constant operands, the transformer placement, the recurrent-model hooks).
"""

from __future__ import annotations

import functools

import onnx

from edgequant import targets
from edgequant.errors import UnsupportedError
from edgequant.model.einsum import why_not as einsum_why_not
from edgequant.model.gru_hoist import is_selection
from edgequant.model.patterns import RECURRENT_OPS
from edgequant.plan import QuantPlan, TensorEntry
from edgequant.planning import mixed, ort_4bit, placement, recurrent, specs
from edgequant.planning.constants import (
    CONSTANT_MAX_REL_ERROR,
    CONSTANT_MIN_SQNR_DB,
    CONSTANT_OPERAND_OPS,
    add_constant_operand,
)
from edgequant.planning.graph import (
    COMPUTE_OPS,
    CONTROL_FLOW,
    DATA_INPUTS,
    FLOAT_TYPES,
    FUSED_ACTIVATIONS,
    PASS_OPS,
    GraphIndex,
    contrib_float_outputs,
    is_table,
    pre_activation_outputs,
    record_subgraphs,
)
from edgequant.planning.placement import PLACEMENT_DEFAULT, PLACEMENT_REASONS, is_transformer
from edgequant.planning.specs import UNBLOCKED, batched_weight_note
from edgequant.planning.ties import tie_activation_ranges
from edgequant.recipe import Recipe
from edgequant.recipe.exclude import match_names, no_match_error
from edgequant.runtime.cpu import CpuFeatures
from edgequant.schemes.spec import Granularity, QuantSpec

__all__ = [  # the names callers import from here (the ones defined in planning/ are re-exported)
    "COMPUTE_OPS",
    "CONSTANT_MAX_REL_ERROR",
    "CONSTANT_MIN_SQNR_DB",
    "CONSTANT_OPERAND_OPS",
    "CONTROL_FLOW",
    "DATA_INPUTS",
    "FLOAT_TYPES",
    "FUSED_ACTIVATIONS",
    "PASS_OPS",
    "PLACEMENT_DEFAULT",
    "PLACEMENT_REASONS",
    "UNBLOCKED",
    "GraphIndex",
    "Planner",
    "batched_weight_note",
    "excluded_nodes",
    "is_transformer",
    "resolve",
    "tie_activation_ranges",
    "with_default_passes",
]


class Planner:
    def __init__(self, model: onnx.ModelProto, recipe: Recipe, cpu: CpuFeatures) -> None:
        self.model = model
        self.recipe = recipe
        self.cpu = cpu
        self.target = targets.get(recipe.target)  # rules as data: specs follow the profile's scale rules
        self.index = GraphIndex(model.graph)

    # -- specs (planning/specs.py) ------------------------------------------------------------
    def activation_spec(self) -> QuantSpec:
        return specs.activation_spec(self.recipe, self.target)

    def weight_spec(self, node: onnx.NodeProto, w: onnx.TensorProto) -> QuantSpec:
        return specs.weight_spec(node, w, self.recipe, self.target, self.cpu)

    def required_opset(self, plan: QuantPlan) -> int:
        return specs.required_opset(plan)

    # -- plan -------------------------------------------------------------------------------
    def resolve(self) -> QuantPlan:
        r = self.recipe
        g = self.model.graph
        plan = QuantPlan(method=r.method, opset=0)
        inits = self.index.initializers
        floats = self.index.float_tensors() | contrib_float_outputs(self.model)
        excluded = self._excluded()
        first_last = self._first_last()
        act = self.activation_spec() if r.method == "static" else None
        for node in g.node:
            reason = self._skip_reason(node, excluded, first_last)
            if reason:
                plan.decide(node.name, node.op_type, False, reason)
                continue
            touched = self._plan_node(node, plan, inits, floats, act)
            if touched:
                plan.decide(node.name, node.op_type, True, self._unranged_input(node, plan, inits))
            else:
                plan.decide(node.name, node.op_type, False, "no float tensor to quantize on this node.")
        record_subgraphs(g, plan)
        plan.notes.extend(recurrent.float_weights_notes(plan))
        if self.matmul_inputs_only:
            plan.notes.append(placement.plan_note(r))
        if not plan.quantized_nodes:
            self._refuse_empty(plan)
        if r.weight_8bit and r.method == "static" and tuple(r.weight_8bit) != ("auto",):  # mixed 4/8, named
            mixed.apply(self.model, plan, r, self.target, self.cpu)
        # 4-bit activations ORT 1.32 cannot load or computes wrongly: refused before any work
        if r.method == "static":
            ort_4bit.refuse(self.model, plan, r.target)
        plan.opset = self.required_opset(plan)
        if act is not None and not act.signed and act.bits == 8:  # no 4/16-bit integer kernels to speed up
            plan.notes.append(
                f"activations are unsigned {act.bits}-bit: ORT's x86 u8 kernels are about 2x faster than s8."
            )
        if any(e.spec.reduce_range for e in plan.tensors.values()):
            plan.notes.append(
                f"weights use a 7-bit range (reduce_range): this CPU ({self.cpu.describe()}) has no VNNI, "
                "and ORT's u8 x s8 kernels can saturate with full 8-bit weights."
            )
        slow = specs.float_kernel_note(self.model, plan, r)  # W4A8 / W8A16 convs: no integer kernel in ORT
        if slow:
            plan.notes.append(slow)
        centring = specs.centring_note(self.model, plan)  # centred binary signs: what they cost here
        if centring:
            plan.notes.append(centring)
        if r.weight_int_bits <= 2:
            kind = {1: "binary {-1, +1}", "ternary": "ternary {-1, 0, +1}"}.get(r.weight_bits, "2-bit")
            plan.notes.append(
                f"{kind} weights are stored in int8 containers (ONNX Runtime's int2 needs opset 25); the "
                f"packed size counts {r.weight_int_bits} bit(s) per weight (theoretical: the file holds a byte each)."
            )
        return plan

    def _excluded(self) -> dict[str, str]:
        out: dict[str, str] = {}
        nodes = [(n.name, n.op_type) for n in self.model.graph.node]
        for pattern, hits in match_names(self.recipe.exclude, nodes).items():
            if not hits:
                raise no_match_error(pattern, nodes)
            for name in hits:
                out.setdefault(name, f"excluded by the user ('{pattern}').")
        return out

    def _first_last(self) -> dict[str, str]:
        compute = [n for n in self.model.graph.node if n.op_type in COMPUTE_OPS]
        out: dict[str, str] = {}
        if compute and self.recipe.skip_first:
            out[compute[0].name] = "first compute layer kept float (skip_first)."
        if compute and self.recipe.skip_last:
            out[compute[-1].name] = "last compute layer kept float (skip_last)."
        return out

    def _skip_reason(self, node: onnx.NodeProto, excluded: dict[str, str], first_last: dict[str, str]) -> str:
        method = self.recipe.method
        if node.name in excluded:
            return excluded[node.name]
        if node.name in first_last:
            return first_last[node.name]
        if node.op_type in CONTROL_FLOW:
            return f"{node.op_type}: control flow; the nodes of its subgraphs stay float (listed separately)."
        if node.domain not in ("", "ai.onnx"):
            return f"custom-domain op '{node.domain}.{node.op_type}' is left as it is."
        if method == "weight-only":
            if node.op_type in COMPUTE_OPS | RECURRENT_OPS or node.op_type == "Gather":
                return ""
            return "weight-only: only the weights of Conv/MatMul/Gemm/LSTM/GRU/Gather are quantized."
        if node.op_type in RECURRENT_OPS:
            return recurrent.float_weights_reason(node, self.recipe)  # static int8 on the CPU: float weights
        if node.name in self._layernorms:
            return (
                "part of a written-out layer normalization: kept float as one unit, which ORT fuses into a "
                "LayerNormalization kernel (8-bit grids on its mean and variance would cost accuracy)."
            )
        if node.op_type == "Einsum":
            return einsum_why_not(node, self.index.initializers)
        if node.name in self._squared:  # a power spectrum on its way to Sqrt/Log (model/recurrent.py)
            return self._squared[node.name]
        if (
            self.matmul_inputs_only
            and node.op_type in PASS_OPS
            and not (node.op_type == "Gather" and is_table(node, self.index.initializers))
        ):
            return placement.skip_reason(node.op_type)
        if node.op_type not in COMPUTE_OPS | PASS_OPS:
            return (
                f"ONNX Runtime has no quantized kernel for {node.op_type}; it runs in float between DQ and Q."
            )
        return ""

    def _plan_node(
        self,
        node: onnx.NodeProto,
        plan: QuantPlan,
        inits: dict[str, onnx.TensorProto],
        floats: set[str],
        act: QuantSpec | None,
    ) -> bool:
        touched = False
        recurrent_op = node.op_type in RECURRENT_OPS
        table = node.op_type == "Gather" and (act is None or is_table(node, inits))
        if node.op_type in COMPUTE_OPS | RECURRENT_OPS or table:
            weight_slots = (1, 2) if recurrent_op else ((0,) if node.op_type == "Gather" else (1,))
            for slot in weight_slots:
                if slot < len(node.input) and node.input[slot] in inits:
                    w = inits[node.input[slot]]
                    if w.data_type in FLOAT_TYPES and len(w.dims) >= 1 and not is_selection(w):
                        touched |= self._add_weight(node, w, plan)
        if recurrent_op:
            if touched:
                plan.notes.append(recurrent.weights_note(node))
            return touched
        if act is None or (table and touched):  # a table's rows are dequantized after the Gather
            return touched
        slots = DATA_INPUTS.get(node.op_type, range(len(node.input)))
        for i in slots:
            if i >= len(node.input) or not node.input[i]:
                continue
            name = node.input[i]
            if name in inits:
                touched |= add_constant_operand(node, inits[name], act, plan)
                continue
            if node.op_type in ("Conv", "ConvTranspose", "Gemm") and i != 0:
                continue
            if name in floats and not self._feeds_activation(name) and name not in self._recurrent_state:
                self._add_activation(name, act, plan)
                touched = True
        if self.matmul_inputs_only and node.op_type in ("MatMul", "Gemm"):
            return touched  # a float output: ORT runs MatMulIntegerToFloat (bias and residual stay float)
        graph_outputs = {o.name for o in self.model.graph.output}
        for name in node.output:  # a graph output keeps full precision: its Q/DQ would feed nothing
            if (
                name
                and name in floats
                and name not in graph_outputs
                and not self._feeds_activation(name)
                and name not in self._recurrent_state
            ):
                self._add_activation(name, act, plan)
                touched = True
        return touched

    def _unranged_input(
        self, node: onnx.NodeProto, plan: QuantPlan, inits: dict[str, onnx.TensorProto]
    ) -> str:
        """Under static, a MatMul/Gemm/Conv whose data input gets no activation range (its type is unknown:
        made by an op ONNX cannot type) runs with int8 weights on a float input: say so, not W8A8."""
        if self.recipe.method != "static" or node.op_type not in COMPUTE_OPS or not node.input:
            return ""
        slots = (0, 1) if node.op_type == "MatMul" else (0,)
        names = [node.input[i] for i in slots if i < len(node.input) and node.input[i]]
        left = [
            n for n in names if n not in inits and n not in plan.tensors and n not in self._recurrent_state
        ]
        if not left:
            return ""
        producers = {o: p for p in self.model.graph.node for o in p.output}
        src = producers.get(left[0])
        origin = f"from {src.op_type} ({src.domain or 'ai.onnx'})" if src is not None else "(a graph input)"
        why = (
            f"input '{left[0]}' {origin} has no activation range: weights int8 only (weight-only, not W8A8)."
        )
        plan.notes.append(f"{node.op_type} '{node.name}': {why}")
        return why

    def _add_weight(self, node: onnx.NodeProto, w: onnx.TensorProto, plan: QuantPlan) -> bool:
        spec = self.weight_spec(node, w)
        prev = plan.tensors.get(w.name)
        if prev is not None and prev.spec.reduce_range != spec.reduce_range:  # a table tied to a head
            spec = QuantSpec(**{**spec.to_dict(), "reduce_range": True})
            prev.spec = QuantSpec(**{**prev.spec.to_dict(), "reduce_range": True})
        if prev is not None and prev.spec != spec:
            per_tensor = QuantSpec(
                **{**spec.to_dict(), "granularity": "per_tensor", "axis": None, "block_size": None}
            )
            plan.tensors[w.name] = TensorEntry(
                w.name, "weight", per_tensor, note="shared by nodes with different channel axes: per-tensor."
            )
            return True
        note = batched_weight_note(node, w, self.recipe) if spec.granularity is Granularity.PER_TENSOR else ""
        plan.tensors[w.name] = TensorEntry(
            w.name, "weight", spec, note=note or specs.unblocked_note(node, w, spec, self.recipe)
        )
        if note:
            plan.notes.append(f"'{w.name}' of {node.op_type} '{node.name}': {note}")
        return True

    def _feeds_activation(self, name: str) -> bool:
        """True when ``name`` comes from a compute op and its only consumer is a Relu/Clip: ORT fuses
        Conv+Relu, so only the Relu output is quantized (a Q/DQ in between would cost a
        requantization and split the fusion)."""
        return name in self._pre_activation

    @functools.cached_property
    def _recurrent_state(self) -> set[str]:  # and a hoisted GRU's input: MatMulIntegerToFloat
        return recurrent.float_state(self.model.graph)

    @functools.cached_property
    def _squared(self) -> dict[str, str]:
        return recurrent.squared_nodes(self.model.graph)

    @functools.cached_property
    def matmul_inputs_only(self) -> bool:
        """Static activations only where MatMul/Gemm/Conv read them (recipe.placement; "auto": on a
        transformer, see :func:`is_transformer`)."""
        r = self.recipe
        if r.method != "static" or r.placement == "all":
            return False
        return r.placement == "matmul-inputs" or is_transformer(self.model, self._layernorms)

    @functools.cached_property
    def _layernorms(self) -> set[str]:
        return placement.layernorm_nodes(self.model)

    @functools.cached_property
    def _pre_activation(self) -> set[str]:
        return pre_activation_outputs(self.model.graph)

    @staticmethod
    def _add_activation(name: str, spec: QuantSpec, plan: QuantPlan) -> None:
        if name not in plan.tensors:
            plan.tensors[name] = TensorEntry(name, "activation", spec)

    def _refuse_empty(self, plan: QuantPlan) -> None:
        inner = [d for d in plan.nodes if d.graph != "main" and d.op_type in COMPUTE_OPS | RECURRENT_OPS]
        if inner:
            holder = inner[0].graph.split("/")[0]
            raise UnsupportedError(
                f"the network's {len(inner)} compute node(s) are all inside the subgraphs of control-flow node "
                f"'{holder}', whose condition is computed at run time; quantizing only the main graph would "
                "change nothing.",
                "re-export the model with the branch selected (a constant condition is inlined automatically).",
            )
        reasons = sorted({d.reason for d in plan.skipped_nodes})[:3]
        raise UnsupportedError(
            "no node of this model can be quantized with the chosen settings; reasons: "
            + " | ".join(reasons),
            "check --exclude and --method; 'edgequant inspect MODEL' lists the quantizable nodes.",
        )


def with_default_passes(model: onnx.ModelProto, recipe: Recipe, cpu: CpuFeatures) -> Recipe:
    """The recipe with ``smoothquant`` first among its passes when the transformer placement is on by
    default (placement "auto" on a transformer) and the user listed no pass that runs before the ranges
    (``cle``, ``cle_bounds``, ``smoothquant``, ``adaround``, ``brecq``: listing one of them, e.g. ``cle``
    alone, opts out)."""
    before = {"cle", "cle_bounds", "smoothquant", "adaround", "brecq"}
    if before & set(recipe.algorithms) or recipe.placement != "auto":
        return recipe
    if not Planner(model, recipe, cpu).matmul_inputs_only:
        return recipe
    return recipe.replace(algorithms=("smoothquant", *recipe.algorithms))


def resolve(model: onnx.ModelProto, recipe: Recipe, cpu: CpuFeatures) -> QuantPlan:
    return Planner(model, recipe, cpu).resolve()


def excluded_nodes(model: onnx.ModelProto, recipe: Recipe) -> set[str]:
    """Names of the nodes that ``recipe.exclude`` and ``skip_first``/``skip_last`` keep float."""
    p = Planner(model, recipe, CpuFeatures(arch="", vnni=True, avx2=True))
    return set(p._excluded()) | set(p._first_last())
