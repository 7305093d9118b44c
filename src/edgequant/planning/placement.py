"""The transformer placement: static Q/DQ only where MatMul/Gemm/Conv read an activation.

``Planner.matmul_inputs_only`` decides whether it is on; this module holds the test and the reasons.

``recipe.placement``: ``all`` quantizes every supported op's activations; ``matmul-inputs`` only the
inputs of MatMul/Gemm/Conv; ``auto`` (default) is ``matmul-inputs`` on a transformer (a MatMul on a
constant 2-D weight, a Softmax and a LayerNorm) and ``all`` elsewhere.  With it, MatMul outputs,
bias and residual Adds, LayerNorm, Softmax and GELU stay float, so ONNX Runtime runs
MatMulIntegerToFloat and SkipLayerNormalization.  When ``auto`` turns it on, ``planner.with_default_passes``
puts SmoothQuant (Xiao et al., ICML 2023) first among the passes unless the recipe lists cle,
smoothquant or adaround.
"""

from __future__ import annotations

import onnx

from edgequant.recipe import Recipe

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


def layernorm_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes of written-out layer normalizations (``model.fuse.layernorm_nodes``)."""
    from edgequant.model.fuse import layernorm_nodes as find

    return find(model)


def is_transformer(model: onnx.ModelProto, layernorms: set[str] | None = None) -> bool:
    """A graph with a MatMul on a constant 2-D weight, a Softmax and a LayerNorm (the op, or written out)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    ops = {n.op_type for n in g.node}
    dense = any(
        n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2 for n in g.node
    )
    if layernorms is None:
        layernorms = layernorm_nodes(model)
    return dense and "Softmax" in ops and ("LayerNormalization" in ops or bool(layernorms))


def skip_reason(op_type: str) -> str:
    """Why a pass-through op stays float under the transformer placement."""
    return PLACEMENT_REASONS.get(op_type, PLACEMENT_DEFAULT)


def plan_note(recipe: Recipe) -> str:
    """The plan's note saying the transformer placement is on, and why."""
    return (
        "transformer placement (placement: "
        + (
            "auto, the graph has MatMuls, Softmax and LayerNorm"
            if recipe.placement == "auto"
            else recipe.placement
        )
        + "): only MatMul/Gemm/Conv inputs are quantized; MatMul outputs, bias and residual Adds, "
        "LayerNorm, Softmax and GELU stay float, so ORT runs MatMulIntegerToFloat and SkipLayerNormalization."
    )
