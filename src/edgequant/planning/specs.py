"""Recipe + target profile + CPU -> the QuantSpec of an activation or a weight; the opset a plan needs.

Weights are per output channel by default (the channel axis follows the op: Conv 0, ConvTranspose 1,
Gemm by ``transB``, MatMul the last axis, LSTM/GRU 1, an embedding table's rows 0), block-wise along
the dot-product axis when ``block_size`` asks for it (weight-only), and per-tensor for a batched MatMul
weight (ORT's integer MatMul takes one scale there).  Scale rules come from the target profile.
"""

from __future__ import annotations

from typing import Any

import onnx

from edgequant import targets
from edgequant.errors import UnsupportedError
from edgequant.model.patterns import RECURRENT_OPS
from edgequant.plan import QuantPlan
from edgequant.planning import int_kernels
from edgequant.recipe import Recipe
from edgequant.runtime.cpu import CpuFeatures
from edgequant.schemes.spec import Granularity, QuantSpec, ScaleRule

UNBLOCKED = "not in blocks of"  # the start of the note on a weight that block_size could not block


def weight_axis(node: onnx.NodeProto, w: onnx.TensorProto) -> int:
    """The per-channel axis of weight ``w`` of ``node`` (its output channels)."""
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


def reduction_axis(node: onnx.NodeProto, w: onnx.TensorProto) -> int | None:
    """The axis a block-wise scale runs along (the dot-product axis), or None when not blocked."""
    if node.op_type == "MatMul" and len(w.dims) == 2:
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 1 if trans_b else 0
    return None


def scale_rule(recipe: Recipe, rule: targets.TensorRule, bits: int) -> ScaleRule:
    """Power-of-two when the recipe asks for it, else the profile's rule at ``bits``."""
    return ScaleRule.POWER_OF_TWO if recipe.power_of_two else rule.scale_rule(bits)


def activation_spec(recipe: Recipe, target: targets.Profile) -> QuantSpec:
    """The static activations' spec.  Raises UnsupportedError for 2-bit activations (no ORT kernel)."""
    r = recipe
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
        scale_rule=scale_rule(r, target.activations, r.act_bits),
    )


def weight_spec(
    node: onnx.NodeProto, w: onnx.TensorProto, recipe: Recipe, target: targets.Profile, cpu: CpuFeatures
) -> QuantSpec:
    """The spec of weight ``w`` of ``node`` (reduce_range on a CPU without VNNI when ``auto``)."""
    r = recipe
    reduce = (
        r.weight_bits == 8
        and r.method == "static"
        and node.op_type != "Gather"  # a gathered row meets no u8 x s8 product
        and (r.reduce_range == "on" or (r.reduce_range == "auto" and cpu.needs_reduce_range))
    )
    narrow = r.weight_symmetric if target.weights.narrow_range is None else target.weights.narrow_range
    common: dict[str, Any] = {
        "bits": r.weight_int_bits,
        "signed": True,
        "symmetric": r.weight_symmetric,
        "narrow_range": {1: False, "ternary": True}.get(r.weight_bits, narrow),
        "reduce_range": reduce,
        "scale_rule": scale_rule(r, target.weights, r.weight_int_bits),
        "ternary": r.weight_bits == "ternary",
        "centred": r.weight_centring,
    }
    if r.block_size is not None and r.method == "weight-only":
        axis = reduction_axis(node, w)
        if axis is not None and w.dims[axis] >= r.block_size:
            return QuantSpec(**common, granularity=Granularity.PER_BLOCK, axis=axis, block_size=r.block_size)
    if r.per_channel and len(w.dims) >= 3 and node.op_type == "MatMul":
        return QuantSpec(**common)  # see batched_weight_note: ORT's integer MatMul needs it
    if r.per_channel and len(w.dims) >= 2:
        return QuantSpec(**common, granularity=Granularity.PER_CHANNEL, axis=weight_axis(node, w))
    return QuantSpec(**common)


def unblocked_note(node: onnx.NodeProto, w: onnx.TensorProto, spec: QuantSpec, recipe: Recipe) -> str:
    """Why a weight is not blocked although ``block_size`` asked for blocks ("" when it is)."""
    bs = recipe.block_size
    if bs is None or spec.granularity is Granularity.PER_BLOCK:
        return ""
    axis = reduction_axis(node, w)
    why = (
        f"{node.op_type} weights have no blocked form here (only 2-D MatMul / Gemm weights)"
        if axis is None
        else f"its reduction axis has {w.dims[axis]} < {bs} elements"
    )
    return f"{UNBLOCKED} {bs}: {spec.granularity.value}, because {why}."


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
        "scale for a batched weight: with per-channel scales ONNX Runtime 1.32 keeps the float MatMul or fails at "
        "run time ('b zero point is not valid' on x[1,12,128,64]·W[12,64,64], where per-tensor ran 1.3-1.8x float; "
        "benchmarks/results/bench_rank3.md)."
    )


FLOAT_KERNEL = "float speed or slower"  # the start of the note on static forms ORT has no integer kernel for


def float_kernel_note(model: onnx.ModelProto, plan: QuantPlan, recipe: Recipe) -> str:
    """Static on the CPU target: the planned Conv/ConvTranspose/Gemm/MatMul nodes that ONNX Runtime runs in
    float after DequantizeLinear, grouped by why ('' when none).  Which ones is decided by the rules of
    ``planning.int_kernels`` (ORT 1.32's QDQ fusions, validated against its optimized graphs in
    tests/core/test_int_kernel_rules.py): 4-bit weights, 4-bit or 16-bit inputs (but a MatMul with an 8-bit weight,
    which runs MatMulNBits), 16-bit outputs, a ConvTranspose, a Conv whose output is not quantized (a
    model's last Conv), and a Gemm with a float bias (overflowing int32) and no quantized output.  1-bit,
    ternary and 2-bit weights sit in int8 containers and fuse like int8.
    Measured (1 thread, batch 1): the demo conv net W4A8 0.28 ms, W8A16 0.23 ms, float 0.097 ms; an MLP
    512-1024-512 W4A8 5.6 ms, W8A16 0.037 ms, int8 0.029 ms, float 0.20 ms (load 7)."""
    if recipe.method != "static" or recipe.target != "cpu":
        return ""
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node, why in int_kernels.static_float_nodes(model, plan):
        groups.setdefault(why, []).append(node)
    if not groups:
        return ""
    parts = [
        f"{len(nodes)} {_kinds(nodes)} node(s) ({', '.join(n.name for n in nodes[:3])}"
        f"{', ...' if len(nodes) > 3 else ''}) with {why}"
        for why, nodes in groups.items()
    ]
    bits = any(why.endswith("-bit weights") or why == "4-bit inputs" for why in groups)
    fix = [("--act-bits 8 --weight-bits 8" if recipe.act_bits == 4 else "--weight-bits 8")] if bits else []
    if any("16-bit" in why for why in groups):  # 16 bits asked for all activations, or chosen per tensor
        fix.append("--act-bits 8" if recipe.act_bits == 16 else "--act16-below-db off")
    # no flag fuses a ConvTranspose, a last Conv or a bias overflowing int32
    other = any(
        not why.endswith("-bit weights") and why != "4-bit inputs" and "16-bit" not in why for why in groups
    )
    runs = f"  {' '.join(fix)} runs {'the others' if other else 'them'} as integer kernels." if fix else ""
    return (
        f"{FLOAT_KERNEL}: {' and '.join(parts)}: ONNX Runtime fuses no integer kernel for them (its QLinearConv, "
        "QGemm and QLinearMatMul take 8-bit weights, 8-bit inputs and outputs, and an int32 bias; QLinearConv "
        "writes no float output, and it has no integer ConvTranspose) and runs them in float after "
        f"DequantizeLinear, so expect float speed or slower.{runs}"
    )


def refresh_float_kernel_note(model: onnx.ModelProto, plan: QuantPlan, recipe: Recipe) -> None:
    """Replace ``plan``'s float-kernel note after its specs changed (16-bit activations chosen by
    ``act16_below_db`` after calibration): the note must name the nodes the final plan runs in float."""
    plan.notes[:] = [n for n in plan.notes if not n.startswith(FLOAT_KERNEL)]
    note = float_kernel_note(model, plan, recipe)
    if note:
        plan.notes.append(note)


def centring_note(model: onnx.ModelProto, plan: QuantPlan) -> str:
    """With centred binary weights: their SQNR centred against plain signs, summed over the planned weights
    ('' when none is centred).  Post-training, centring never lowers a weight's squared error
    (``schemes.lowbit``), so the note says what it costs on this model and how to drop it."""
    import numpy as np
    from onnx import numpy_helper

    from edgequant.schemes.lowbit import centring_cost

    inits = {t.name: t for t in model.graph.initializer}
    costs = [
        centring_cost(numpy_helper.to_array(inits[name]), e.spec)
        for name, e in plan.tensors.items()
        if e.role == "weight" and e.spec.bits == 1 and e.spec.centred and name in inits
    ]
    if not costs:
        return ""
    centred, plain, energy = (sum(c[i] for c in costs) for i in range(3))
    db = [f"{10 * np.log10(energy / max(e, 1e-30)):.2f}" for e in (centred, plain)]
    return (
        f"weight_centring: the {len(costs)} binary weight tensor(s) get {db[0]} dB SQNR centred against {db[1]} "
        "dB with plain signs: the channel means are not stored, and alpha * sign(w) with alpha = mean |w| is "
        "already the least-squares binary weight of every channel, so centring never lowers the weight error "
        "after training (IR-Net balances the signs while training, where the network adapts to them).  "
        "--no-weight-centring keeps the plain signs."
    )


def _kinds(nodes: list[onnx.NodeProto]) -> str:
    """``Conv/Gemm``: the op types among ``nodes``, in a fixed order."""
    return "/".join(
        k for k in ("Conv", "ConvTranspose", "Gemm", "MatMul") if any(n.op_type == k for n in nodes)
    )


def required_opset(plan: QuantPlan) -> int:
    """The lowest opset whose QuantizeLinear/DequantizeLinear carry every spec of ``plan``: 10 for
    per-tensor, 13 for per-channel axes, 21 for blocks and 4/16-bit types."""
    need = 10
    for e in plan.tensors.values():
        if e.spec.granularity is not Granularity.PER_TENSOR:
            need = max(need, 13)
        if e.spec.granularity is Granularity.PER_BLOCK or e.spec.bits in (4, 16):
            need = max(need, 21)
    return need
