"""Weight-only 4-bit MatMul -> ONNX Runtime's blocked 4-bit kernel ``com.microsoft.MatMulNBits``.

The QDQ form ``DequantizeLinear(W_q int4 [K, N], scale [K/B, N], axis=0, block_size=B) -> MatMul``
says the math; ``MatMulNBits`` runs it without dequantizing ``W`` on every call.  The same codes,
scales and zero points are repacked (ORT contrib op spec, ``MatMulNBits``):

* ``B``: uint8 ``[N, K/B, B/2]``, column ``n``'s codes along ``K``, two per byte, the even element in
  the low nibble; stored unsigned, ``u = q + 8`` (int4 [-8, 7] -> uint4 [0, 15]);
* ``scales``: float ``[N · K/B]``, column-major over blocks;
* ``zero_points``: omitted for a symmetric grid (the kernel's default is 8, i.e. signed 0), else
  uint8 ``[N · ceil(K/B / 2)]``, ``z + 8`` packed two per byte;
* 8-bit blocks (``recipe.weight_8bit``: named MatMuls of a 4-bit model kept 8-bit, mixed 4/8):
  ``bits=8``, ``B`` uint8 ``[N, K/B, B]`` with ``u = q + 128``, zero points ``z + 128`` one per byte
  (default 128).  One 128x384x1536 MatMul at level 4: 8-bit blocks of 32 / 128 ran 1.24x / 1.55x
  float, 4-bit 1.15x / 1.44x (5 rounds of 30, load 8);
* ``accuracy_level`` 4 by default (``recipe.nbits_accuracy_level``): ORT quantizes each activation row
  to int8 per block of ``B`` at run time and multiplies int8 x int4 (MLAS's CompInt8 path, AVX-512
  VNNI here); 0 dequantizes the blocks to float and runs a float GEMM.  all-MiniLM-L6-v2 (M = 128,
  batch 1, 2 threads, spinning off, ORT 1.32, AMD EPYC AVX-512 VNNI, load average 8-12 on 2 cores;
  interleaved, median of 5 round medians): level 4 1.59x float and level 0 1.10x (the same GPTQ
  model); ORT's own blocks of 16/32/64/128 at level 4: 1.54/1.67/1.63/2.07x, at level 0 (32/128):
  1.22/1.31x.  Level 4's activation rounding cost 0.0002 mean cosine there (0.9898 -> 0.9896).

A ``K`` that is not a multiple of ``B`` is padded with zero codes at the grid's zero point.
https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md#com.microsoft.MatMulNBits
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgequant.plan import QuantPlan
from edgequant.planning import int_kernels
from edgequant.schemes.spec import Granularity

MS_DOMAIN = "com.microsoft"
ACCURACY_LEVEL = 4  # int8 compute (VNNI); measured faster than 0 (module docstring)


def _pack(u: np.ndarray) -> np.ndarray:
    """Two 4-bit values per byte along the last axis (even -> low nibble); the axis must be even."""
    u = u.astype(np.uint8)
    return (u[..., 0::2] | (u[..., 1::2] << 4)).astype(np.uint8)


def pack_weight(
    q: np.ndarray, zero: np.ndarray, block: int, bits: int = 4
) -> tuple[np.ndarray, np.ndarray | None]:
    """(B [N, K/B, B·bits/8], zero_points or None) from signed codes ``q`` [K, N] and zero points
    [K/B, N]; ``bits`` 4 (two codes per byte) or 8 (one code per byte, ``u = q + 128``)."""
    k, n = q.shape
    blocks = -(-k // block)
    z = zero.astype(np.int16).reshape(blocks, n)
    padded = np.repeat(z, block, axis=0)[: blocks * block].copy()  # pad rows sit at the zero point
    padded[:k] = q
    offset = 1 << (bits - 1)
    u = (padded + offset).T.reshape(n, blocks, block)
    packed = _pack(u) if bits == 4 else u.astype(np.uint8)
    if not np.any(z):
        return packed, None
    zu = (z + offset).T  # [N, blocks]
    if bits == 8:
        return packed, zu.astype(np.uint8).reshape(-1)
    if blocks % 2:
        zu = np.concatenate([zu, np.full((n, 1), 8, zu.dtype)], axis=1)
    return packed, _pack(zu).reshape(-1)


def to_matmul_nbits(
    model: onnx.ModelProto, plan: QuantPlan, accuracy_level: int = ACCURACY_LEVEL
) -> tuple[onnx.ModelProto, int]:
    """Replace each ``DQ(int4 or int8 blocked weight) -> MatMul`` with MatMulNBits in place; returns the count.
    ``accuracy_level`` (0-4) is written on every MatMulNBits (module docstring)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    dq_of = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
    readers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    weight_of = {f"{e.name}_dq": e for e in plan.tensors.values() if e.role == "weight"}
    replaced, drop = 0, set()
    for node in g.node:
        if node.op_type != "MatMul" or node.input[1] not in dq_of or readers.get(node.input[1]) != 1:
            continue
        dq = dq_of[node.input[1]]
        entry = weight_of.get(dq.output[0])
        q_t = inits.get(dq.input[0])
        bits = {TensorProto.INT4: 4, TensorProto.INT8: 8}.get(q_t.data_type, 0) if q_t is not None else 0
        if entry is None or q_t is None or len(q_t.dims) != 2 or not bits:
            continue
        spec = entry.spec
        if spec.granularity is not Granularity.PER_BLOCK or spec.axis != 0 or spec.block_size is None:
            continue
        q = numpy_helper.to_array(q_t).astype(np.int16)
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
        zero = (
            numpy_helper.to_array(inits[dq.input[2]]).astype(np.int16)
            if len(dq.input) > 2 and dq.input[2]
            else np.zeros_like(scale, np.int16)
        )
        k, n = q.shape
        packed, zp = pack_weight(q, zero, spec.block_size, bits)
        base = entry.name
        b_name, s_name = f"{base}_nbits", f"{base}_nbits_scale"
        new = [numpy_helper.from_array(packed, b_name), numpy_helper.from_array(scale.T.reshape(-1), s_name)]
        ins = [node.input[0], b_name, s_name]
        if zp is not None:
            ins.append(f"{base}_nbits_zp")
            new.append(numpy_helper.from_array(zp, ins[-1]))
        g.initializer.extend(new)
        mm = helper.make_node(
            "MatMulNBits", ins, list(node.output), name=node.name, domain=MS_DOMAIN,
            K=k, N=n, bits=bits, block_size=spec.block_size, accuracy_level=accuracy_level,
        )  # fmt: skip
        node.CopyFrom(mm)
        drop.add(dq.name)
        entry.note = (entry.note + " " if entry.note else "") + (
            f"MatMulNBits: {bits}-bit blocks of {spec.block_size} along K, "
            + ("symmetric" if zp is None else "with zero points")
            + (
                f", int8 compute on per-block int8 activations (accuracy_level {accuracy_level})."
                if accuracy_level == 4
                else f", float compute after unpacking (accuracy_level {accuracy_level})."
            )
        )
        replaced += 1
    if replaced:
        keep = [n for n in g.node if n.name not in drop]
        del g.node[:]
        g.node.extend(keep)
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        kept = [t for t in g.initializer if t.name in used]
        del g.initializer[:]
        g.initializer.extend(kept)
        if not any(o.domain == MS_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model, replaced


# what runs the node kinds faster than a weight-only form, said only where it is true of ORT's CPU kernels
_FASTER = {
    "Conv": " Static int8 runs integer kernels instead (QLinearConv).",
    "Gemm": " ORT fuses a weight-only Gemm into MatMulNBits only with transA = transB = 0, alpha = beta = 1, "
    "an unshared weight and no Relu/Clip reading it alone; static int8 runs integer kernels instead (QGemm).",
    "MatMul": " ORT fuses a weight-only MatMul into MatMulNBits itself only with an unshared 2-D weight and no "
    "Relu/Clip reading it (or its bias Add) alone; --block-size 32 (or 64, 128) writes 2-D MatMul weights as "
    "MatMulNBits directly, and static int8 runs integer kernels (QLinearMatMul).",
    "LSTM": " Dynamic int8 runs ORT's integer DynamicQuantizeLSTM instead.",
    "GRU": " ORT has no integer GRU kernel in any method: --exclude GRU leaves GRU weights float (float speed).",
    "RNN": " ORT has no integer RNN kernel in any method: --exclude RNN leaves RNN weights float (float speed).",
}


def weight_only_kernels(
    model: onnx.ModelProto, plan: QuantPlan, accuracy_level: int = ACCURACY_LEVEL
) -> tuple[onnx.ModelProto, QuantPlan]:
    """After a weight-only export: MatMulNBits where it applies, a plan note on the MatMul/Gemm nodes ONNX Runtime
    fuses into MatMulNBits itself, and one for every other node whose weight ORT dequantizes on each run (slower
    than float: the float kernel runs after the dequantization).  Which is which follows
    ``planning.int_kernels.weight_only_matmul_nbits`` (ORT 1.32's DQ -> MatMulNBits rules)."""
    model, replaced = to_matmul_nbits(model, plan, accuracy_level)
    if replaced:
        plan.notes.append(
            f"{replaced} MatMul(s) run as ONNX Runtime's MatMulNBits (blocks unpacked in the kernel, "
            f"accuracy_level {accuracy_level})."
        )
    graph = int_kernels.ModelGraph(model)
    slow: dict[str, list[str]] = {}
    fused: list[str] = []  # MatMul/Gemm that ORT itself fuses into MatMulNBits when it loads the model
    for e in plan.tensors.values():
        if e.role != "weight":
            continue
        for node in graph.consumers.get(f"{e.name}_dq", []):
            if node.op_type not in (
                "Conv",
                "ConvTranspose",
                "Gemm",
                "MatMul",
                "LSTM",
                "GRU",
                "RNN",
                "Gather",
            ):
                continue
            if int_kernels.weight_only_matmul_nbits(node, e, graph):
                fused.append(node.name)
                continue
            nodes = slow.setdefault(node.op_type, [])
            if node.name not in nodes:  # a GRU reads W and R: one node, counted once
                nodes.append(node.name)
    if fused:
        plan.notes.append(
            f"{len(fused)} MatMul/Gemm(s) ({', '.join(fused[:3])}{', ...' if len(fused) > 3 else ''}) are fused by "
            "ONNX Runtime into MatMulNBits when it loads the model (integer weights unpacked in the kernel)."
        )
    for op, nodes in sorted(slow.items()):
        hint = _FASTER.get(op, f" --exclude {op} leaves {op} weights float (float speed).")
        plan.notes.append(
            f"slower than float: {len(nodes)} {op}(s) ({', '.join(nodes[:3])}{', ...' if len(nodes) > 3 else ''}) "
            f"read a weight dequantized on every run, then run ORT's float {op} kernel (ORT has no weight-only "
            f"integer {op} kernel for this form); the gain is file size only.{hint}"
        )
    return model, plan


def int8_gather_tables(model: onnx.ModelProto, plan: QuantPlan) -> QuantPlan:
    """Weight-only with 4-bit weights: each weight that a ``Gather`` (axis 0) reads as a table is planned
    int8 per row instead (``export.embedding``: the int8 rows are gathered, then dequantized).

    ORT's Gather takes no int4, so a 4-bit table would be dequantized whole in front of the Gather on
    every run (the 47 MB word-embedding table of a BERT-class encoder: slower than float).  A table
    also read by another node (a tied output head) stays one tensor and those nodes read its
    DequantizeLinear.  Each changed entry gets a note saying why.
    """
    tables = {
        n.input[0]
        for n in model.graph.node
        if n.op_type == "Gather" and next((a.i for a in n.attribute if a.name == "axis"), 0) == 0
    }
    for name in sorted(tables):
        e = plan.tensors.get(name)
        if e is None or e.role != "weight" or e.spec.bits != 4:
            continue
        e.spec = replace(
            e.spec, bits=8, granularity=Granularity.PER_CHANNEL, axis=0, block_size=None, symmetric=True
        )
        e.note = (
            "Gather table: int8 per row, dequantized after the Gather (ORT's Gather takes no int4; a 4-bit "
            "table would be dequantized whole on every run)."
        )
    return plan


def eight_bit_weights(model: onnx.ModelProto, plan: QuantPlan, entries: tuple[str, ...]) -> QuantPlan:
    """Weight-only 4-bit with ``recipe.weight_8bit``: the weights of the MatMuls those entries name
    (node names, op types or ``re:`` patterns, as ``exclude``) are planned 8-bit in the same blocks, so
    they run as MatMulNBits ``bits=8`` (mixed 4/8).  Each changed entry gets a note; the plan gets one
    note with the 8-bit share of the MatMul weight values.

    Raises RecipeError when an entry names no MatMul with a 4-bit blocked weight.
    """
    from edgequant.errors import RecipeError
    from edgequant.recipe.exclude import check_patterns, entry_matches

    check_patterns(entries)
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    blocked = {
        n.name: n.input[1]
        for n in model.graph.node
        if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in plan.tensors
        and plan.tensors[n.input[1]].spec.bits == 4
        and plan.tensors[n.input[1]].spec.granularity is Granularity.PER_BLOCK
    }  # fmt: skip
    for entry in entries:
        if not any(entry_matches(entry, name, "MatMul") for name in blocked):
            raise RecipeError(
                f"weight_8bit entry '{entry}' names no MatMul with a 4-bit blocked weight.",
                "name MatMul nodes of this model (see 'edgequant inspect'), or drop weight_8bit.",
            )
    chosen = sorted(
        {w for name, w in blocked.items() if any(entry_matches(e, name, "MatMul") for e in entries)}
    )
    for w in chosen:
        e = plan.tensors[w]
        e.spec = replace(e.spec, bits=8)
        e.note = "kept 8-bit (weight_8bit): MatMulNBits bits=8 in the same blocks (mixed 4/8)."
    if chosen:
        share = sum(sizes.get(w, 0) for w in chosen) / max(sum(sizes.get(w, 0) for w in blocked.values()), 1)
        plan.notes.append(
            f"mixed 4/8: {len(chosen)} of {len(blocked)} blocked MatMul weights 8-bit ({share:.1%} of their "
            f"values): {', '.join(chosen[:6])}{', ...' if len(chosen) > 6 else ''}."
        )
    return plan
