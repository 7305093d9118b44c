"""Graph + recipe + CPU -> QuantPlan: which tensors are quantized, how, and why others are not.

Static QDQ follows the shape ONNX Runtime's QDQ fusions look for: the float input and output
activations of compute ops (Conv, ConvTranspose, MatMul, Gemm) and of the ops ORT runs on integers
or passes through (Add, Concat, pooling, Relu, Reshape, ...) get a QuantizeLinear/DequantizeLinear
pair; their constant weights get a DequantizeLinear of an integer initializer, per output channel by
default.  Every node gets a decision, and every node left float gets its reason.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgequant import targets
from edgequant.errors import RecipeError, UnsupportedError
from edgequant.model.einsum import why_not as einsum_why_not
from edgequant.model.gru_hoist import hoisted_inputs, is_selection
from edgequant.model.patterns import RECURRENT_OPS, recurrent_state_tensors
from edgequant.model.recurrent import squared_domain
from edgequant.plan import QuantPlan, TensorEntry
from edgequant.recipe import Recipe
from edgequant.recipe.exclude import match_names
from edgequant.runtime.cpu import CpuFeatures
from edgequant.schemes.qparams import dequantize, quantize_weight, sqnr_db
from edgequant.schemes.spec import Granularity, QuantSpec, ScaleRule

COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
# ops whose float data inputs/outputs get Q/DQ so ORT can fuse or pass them through in integers
PASS_OPS = {
    "Add", "Mul", "Concat", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Sigmoid",
    "LeakyRelu", "Resize", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Softmax", "Split",
    "Pad", "HardSwish", "ReduceMean", "Gather",
}  # fmt: skip
# which inputs carry data (the rest are shapes, indices, scales)
DATA_INPUTS = {"Resize": (0,), "Clip": (0,), "Pad": (0,), "Reshape": (0,), "Split": (0,), "Gather": (0,)}
FUSED_ACTIVATIONS = {"Relu", "Clip"}
CONTROL_FLOW = {"If", "Loop", "Scan"}
FLOAT_TYPES = {onnx.TensorProto.FLOAT}
CONSTANT_OPERAND_OPS = {"Add", "Mul"}  # ORT's QLinearAdd / QLinearMul take both operands quantized
# transformer placement (recipe.placement "matmul-inputs", or "auto" on a transformer): what stays float
PLACEMENT_REASONS = {
    "Softmax": "transformer placement: Softmax runs in float on the scores, whose attention-mask path "
    "(-inf / large negative values) stays out of every range; its output is quantized where a MatMul reads it.",
    "Add": "transformer placement: bias and residual Adds run in float; ORT folds the bias into "
    "MatMulIntegerToFloat and the residual into SkipLayerNormalization (an 8-bit residual stream loses its "
    "outlier channels).",
    "Mul": "transformer placement: runs in float (scaling and GELU parts between integer MatMuls).",
}
PLACEMENT_DEFAULT = (
    "transformer placement: only the inputs of MatMul/Gemm/Conv are quantized; this op passes float "
    "values between them."
)
CONSTANT_MIN_SQNR_DB = 30.0  # Add: error of the offset as a whole
CONSTANT_MAX_REL_ERROR = 0.1  # Mul: error of each factor


@dataclass(frozen=True)
class GraphIndex:
    """Lookups over one graph: initializers, float tensors, producers and consumers."""

    graph: onnx.GraphProto

    @property
    def initializers(self) -> dict[str, onnx.TensorProto]:
        return {t.name: t for t in self.graph.initializer}

    def float_tensors(self) -> set[str]:
        g = self.graph
        names = {v.name for v in list(g.value_info) + list(g.input) + list(g.output)
                 if v.type.tensor_type.elem_type in FLOAT_TYPES}  # fmt: skip
        names |= {t.name for t in g.initializer if t.data_type in FLOAT_TYPES}
        typed = {v.name for v in list(g.value_info) + list(g.input) + list(g.output)}
        # outputs whose type inference could not tell: assume float when produced by a float op
        for n in g.node:
            if n.op_type in COMPUTE_OPS | PASS_OPS:
                names |= {o for o in n.output if o and o not in typed}
        return names


def _weight_axis(node: onnx.NodeProto, w: onnx.TensorProto) -> int:
    nd = len(w.dims)
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type in RECURRENT_OPS:
        return 1
    if node.op_type == "Gather":
        return 0  # an embedding table: one scale per row (token), dequantized after the Gather
    return nd - 1  # MatMul B [.., K, N]: one scale per output column


def _reduction_axis(node: onnx.NodeProto, w: onnx.TensorProto) -> int | None:
    """The axis a block-wise scale runs along (the dot-product axis), or None when not blocked."""
    if node.op_type == "MatMul" and len(w.dims) == 2:
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 1 if trans_b else 0
    return None


UNBLOCKED = "not in blocks of"  # the start of the note on a weight that block_size could not block


class Planner:
    def __init__(self, model: onnx.ModelProto, recipe: Recipe, cpu: CpuFeatures) -> None:
        self.model = model
        self.recipe = recipe
        self.cpu = cpu
        self.target = targets.get(recipe.target)  # rules as data: specs follow the profile's scale rules
        self.index = GraphIndex(model.graph)

    # -- specs ------------------------------------------------------------------------------
    def activation_spec(self) -> QuantSpec:
        r = self.recipe
        if r.act_bits == 2:
            raise UnsupportedError(
                "2-bit activations cannot run on the CPU runtime (ONNX Runtime has no 2-bit QuantizeLinear).",
                "use --act-bits 8 (or 4 or 16).",
            )
        signed = {"signed": True, "unsigned": False}.get(r.act_signed, r.act_bits == 16)
        return QuantSpec(
            bits=r.act_bits,
            signed=signed,
            symmetric=r.act_symmetric,
            scale_rule=self._scale_rule(self.target.activations, r.act_bits),
        )

    def _scale_rule(self, rule: targets.TensorRule, bits: int) -> ScaleRule:
        return ScaleRule.POWER_OF_TWO if self.recipe.power_of_two else rule.scale_rule(bits)

    def weight_spec(self, node: onnx.NodeProto, w: onnx.TensorProto) -> QuantSpec:
        r = self.recipe
        reduce = (
            r.weight_bits == 8
            and r.method == "static"
            and node.op_type != "Gather"  # a gathered row meets no u8 x s8 product
            and (r.reduce_range == "on" or (r.reduce_range == "auto" and self.cpu.needs_reduce_range))
        )
        narrow = (
            r.weight_symmetric
            if self.target.weights.narrow_range is None
            else self.target.weights.narrow_range
        )
        common: dict[str, Any] = {
            "bits": r.weight_int_bits,
            "signed": True,
            "symmetric": r.weight_symmetric,
            "narrow_range": {1: False, "ternary": True}.get(r.weight_bits, narrow),
            "reduce_range": reduce,
            "scale_rule": self._scale_rule(self.target.weights, r.weight_int_bits),
            "ternary": r.weight_bits == "ternary",
            "centred": r.weight_centring,
        }
        if r.block_size is not None and r.method == "weight-only":
            axis = _reduction_axis(node, w)
            if axis is not None and w.dims[axis] >= r.block_size:
                return QuantSpec(
                    **common, granularity=Granularity.PER_BLOCK, axis=axis, block_size=r.block_size
                )
        if r.per_channel and len(w.dims) >= 3 and node.op_type == "MatMul":
            return QuantSpec(**common)  # see batched_weight_note: ORT's integer MatMul needs it
        if r.per_channel and len(w.dims) >= 2:
            return QuantSpec(**common, granularity=Granularity.PER_CHANNEL, axis=_weight_axis(node, w))
        return QuantSpec(**common)

    # -- plan -------------------------------------------------------------------------------
    def resolve(self) -> QuantPlan:
        r = self.recipe
        g = self.model.graph
        plan = QuantPlan(method=r.method, opset=0)
        inits = self.index.initializers
        floats = self.index.float_tensors()
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
                plan.decide(node.name, node.op_type, True)
            else:
                plan.decide(node.name, node.op_type, False, "no float tensor to quantize on this node.")
        self._record_subgraphs(g, plan)
        if self.matmul_inputs_only:
            plan.notes.append(
                "transformer placement (placement: "
                + (
                    "auto, the graph has MatMuls, Softmax and LayerNorm"
                    if r.placement == "auto"
                    else r.placement
                )
                + "): only MatMul/Gemm/Conv inputs are quantized; MatMul outputs, bias and residual Adds, "
                "LayerNorm, Softmax and GELU stay float, so ORT runs MatMulIntegerToFloat and SkipLayerNormalization."
            )
        if not plan.quantized_nodes:
            self._refuse_empty(plan)
        plan.opset = self.required_opset(plan)
        if act is not None and not act.signed:
            plan.notes.append(
                f"activations are unsigned {act.bits}-bit: ORT's x86 u8 kernels are about 2x faster than s8."
            )
        if any(e.spec.reduce_range for e in plan.tensors.values()):
            plan.notes.append(
                f"weights use a 7-bit range (reduce_range): this CPU ({self.cpu.describe()}) has no VNNI, "
                "and ORT's u8 x s8 kernels can saturate with full 8-bit weights."
            )
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
                raise RecipeError(
                    f"exclude '{pattern}' matches no node name or op type in the model.",
                    "check the names with 'edgequant inspect MODEL'; regexes are written 're:PATTERN'.",
                )
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
            return ""
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
            and not (node.op_type == "Gather" and self._is_table(node, self.index.initializers))
        ):
            return PLACEMENT_REASONS.get(node.op_type, PLACEMENT_DEFAULT)
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
        recurrent = node.op_type in RECURRENT_OPS
        table = node.op_type == "Gather" and (act is None or self._is_table(node, inits))
        if node.op_type in COMPUTE_OPS | RECURRENT_OPS or table:
            weight_slots = (1, 2) if recurrent else ((0,) if node.op_type == "Gather" else (1,))
            for slot in weight_slots:
                if slot < len(node.input) and node.input[slot] in inits:
                    w = inits[node.input[slot]]
                    if w.data_type in FLOAT_TYPES and len(w.dims) >= 1 and not is_selection(w):
                        touched |= self._add_weight(node, w, plan)
        if recurrent:
            if touched:
                plan.notes.append(
                    f"{node.op_type} '{node.name}': weights stored as integers and dequantized for ORT's float "
                    f"{node.op_type} kernel (ORT has no integer one); its gates and the recurrent state it "
                    "carries between calls run in float (quantized state would compound error across steps); "
                    "its input and output sequences get Q/DQ only where a neighbouring integer op reads them."
                )
            return touched
        if act is None or (table and touched):  # a table's rows are dequantized after the Gather
            return touched
        slots = DATA_INPUTS.get(node.op_type, range(len(node.input)))
        for i in slots:
            if i >= len(node.input) or not node.input[i]:
                continue
            name = node.input[i]
            if name in inits:
                touched |= self._add_constant_operand(node, inits[name], act, plan)
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

    @staticmethod
    def _is_table(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
        """A Gather of rows (axis 0) from a constant float table of rank 2: an embedding."""
        t = inits.get(node.input[0])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        return t is not None and t.data_type in FLOAT_TYPES and len(t.dims) == 2 and axis == 0

    def _add_constant_operand(
        self, node: onnx.NodeProto, c: onnx.TensorProto, act: QuantSpec, plan: QuantPlan
    ) -> bool:
        """A constant operand of Add/Mul on the activations' 8-bit grid, so ORT runs QLinearAdd /
        QLinearMul instead of DQ -> float op -> Q; kept float when 8 bits would cost it accuracy."""
        if node.op_type not in CONSTANT_OPERAND_OPS or act.bits != 8 or c.data_type not in FLOAT_TYPES:
            return False
        if c.name in plan.tensors:
            return True
        value = numpy_helper.to_array(c)
        spec = QuantSpec(**{**act.to_dict(), "granularity": "per_tensor", "axis": None})
        if value.size == 0 or not np.all(np.isfinite(value)):
            return False
        q, scale, zero = quantize_weight(value, spec)
        approx = dequantize(q, scale, zero, spec).astype(np.float64)
        v = value.astype(np.float64)
        if node.op_type == "Mul":  # a factor: every element must keep its size (a 0 would kill a channel)
            worst = float(np.max(np.abs(approx - v) / np.maximum(np.abs(v), 1e-30)))
            problem = (
                f"an element would move by {100 * worst:.0f} %" if worst > CONSTANT_MAX_REL_ERROR else ""
            )
        else:  # an offset: the error counts against the whole
            db = sqnr_db(v, approx)
            problem = f"its SQNR would be {db:.1f} dB" if db < CONSTANT_MIN_SQNR_DB else ""
        if problem:
            plan.notes.append(
                f"constant '{c.name}' of {node.op_type} '{node.name}' stays float: on the 8-bit grid {problem}, "
                f"so ORT runs that {node.op_type} in float."
            )
            return False
        plan.tensors[c.name] = TensorEntry(
            c.name,
            "constant",
            spec,
            note=f"constant operand of {node.op_type}, on the activations' grid so ORT runs QLinear{node.op_type}.",
        )
        return True

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
            w.name, "weight", spec, note=note or self._unblocked(node, w, spec)
        )
        if note:
            plan.notes.append(f"'{w.name}' of {node.op_type} '{node.name}': {note}")
        return True

    def _unblocked(self, node: onnx.NodeProto, w: onnx.TensorProto, spec: QuantSpec) -> str:
        """Why a weight is not blocked although ``block_size`` asked for blocks ("" when it is)."""
        bs = self.recipe.block_size
        if bs is None or spec.granularity is Granularity.PER_BLOCK:
            return ""
        axis = _reduction_axis(node, w)
        why = (
            f"{node.op_type} weights have no blocked form here (only 2-D MatMul / Gemm weights)"
            if axis is None
            else f"its reduction axis has {w.dims[axis]} < {bs} elements"
        )
        return f"{UNBLOCKED} {bs}: {spec.granularity.value}, because {why}."

    def _feeds_activation(self, name: str) -> bool:
        """True when ``name`` comes from a compute op and its only consumer is a Relu/Clip: ORT fuses
        Conv+Relu, so only the Relu output is quantized (a Q/DQ in between would cost a
        requantization and split the fusion)."""
        return name in self._pre_activation

    @functools.cached_property
    def _recurrent_state(self) -> set[str]:  # and a hoisted GRU's input: MatMulIntegerToFloat
        return recurrent_state_tensors(self.model.graph) | hoisted_inputs(self.model.graph)

    @functools.cached_property
    def _squared(self) -> dict[str, str]:
        return squared_domain(self.model.graph)

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
        from edgequant.model.fuse import layernorm_nodes

        return layernorm_nodes(self.model)

    @functools.cached_property
    def _pre_activation(self) -> set[str]:
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.model.graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        out = set()
        for n in self.model.graph.node:
            if n.op_type not in COMPUTE_OPS or not n.output:
                continue
            users = consumers.get(n.output[0], [])
            if len(users) == 1 and users[0].op_type in FUSED_ACTIVATIONS and users[0].input[0] == n.output[0]:
                out.add(n.output[0])
        return out

    @staticmethod
    def _add_activation(name: str, spec: QuantSpec, plan: QuantPlan) -> None:
        if name not in plan.tensors:
            plan.tensors[name] = TensorEntry(name, "activation", spec)

    def _record_subgraphs(self, graph: onnx.GraphProto, plan: QuantPlan) -> None:
        for node in graph.node:
            for attr in node.attribute:
                subs: Iterable[onnx.GraphProto] = (
                    [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
                )
                for sub in subs:
                    for inner in sub.node:
                        plan.decide(
                            inner.name,
                            inner.op_type,
                            False,
                            f"inside the '{attr.name}' subgraph of {node.op_type} '{node.name}', whose condition "
                            "is computed at run time; EdgeQuant quantizes the main graph only.",
                            graph=f"{node.name}/{attr.name}",
                        )

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

    def required_opset(self, plan: QuantPlan) -> int:
        need = 10
        for e in plan.tensors.values():
            if e.spec.granularity is not Granularity.PER_TENSOR:
                need = max(need, 13)
            if e.spec.granularity is Granularity.PER_BLOCK or e.spec.bits in (4, 16):
                need = max(need, 21)
        return need


def batched_weight_note(node: onnx.NodeProto, w: onnx.TensorProto, recipe: Recipe) -> str:
    """Why a rank-3+ MatMul weight is per-tensor although per-channel was asked for ('' otherwise)."""
    if (
        node.op_type != "MatMul"
        or len(w.dims) < 3
        or not recipe.per_channel
        or recipe.method == "weight-only"
    ):
        return ""
    return (
        f"rank-{len(w.dims)} weight {list(w.dims)}: per-tensor, because ORT's integer MatMul kernels take one "
        "scale for a batched weight; with per-channel scales ORT dequantizes it and runs the float MatMul "
        "(x[1,12,128,64]·W[12,64,64], 2 threads: 0.74x float speed, per-tensor 1.29x; benchmarks/README.md)."
    )


def is_transformer(model: onnx.ModelProto, layernorms: set[str] | None = None) -> bool:
    """A graph with a MatMul on a constant 2-D weight, a Softmax and a LayerNorm (the op, or written out)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    ops = {n.op_type for n in g.node}
    dense = any(
        n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2 for n in g.node
    )
    if layernorms is None:
        from edgequant.model.fuse import layernorm_nodes

        layernorms = layernorm_nodes(model)
    return dense and "Softmax" in ops and ("LayerNormalization" in ops or bool(layernorms))


def with_default_passes(model: onnx.ModelProto, recipe: Recipe, cpu: CpuFeatures) -> Recipe:
    """The recipe with ``smoothquant`` first among its passes when the transformer placement is on by
    default (placement "auto" on a transformer) and the user listed no pass that runs before the ranges
    (``cle``, ``smoothquant``, ``adaround``: listing one of them, e.g. ``cle`` alone, opts out)."""
    before = {"cle", "smoothquant", "adaround"}
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


def tie_activation_ranges(model: onnx.ModelProto, plan: QuantPlan) -> QuantPlan:
    """Give the input of a Relu/Clip the range of its output when both are quantized.

    ``Add -> X -> Relu -> Y``: with X and Y on one grid, ORT drops the Relu (its zero point is the
    grid's minimum) and the DQ->Q pair between them, and runs QLinearAdd straight into the next
    integer op.  Values of X below Y's range are the ones the Relu removes anyway.
    """
    for node in model.graph.node:
        if node.op_type not in FUSED_ACTIVATIONS or not node.input or not node.output:
            continue
        x, y = plan.tensors.get(node.input[0]), plan.tensors.get(node.output[0])
        if x is None or y is None or x.role != "activation" or y.role != "activation" or x.spec != y.spec:
            continue
        if y.lo is None or y.hi is None:
            continue
        x.lo, x.hi = y.lo, y.hi
        x.note = f"shares the range of '{y.name}' (after {node.op_type}) so ORT fuses the activation."
    return plan
