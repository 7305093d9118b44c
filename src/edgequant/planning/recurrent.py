"""The planner's recurrent-model hooks (LSTM/GRU/RNN and streaming models with carried state).

- The state an LSTM/GRU/RNN carries between calls (what reaches its initial-state inputs and leaves
  its final-state outputs, through layout ops) stays float: quantized state compounds its error across
  calls.  A hoisted GRU's input (``--hoist-gru``) stays float too: ORT runs its product as
  MatMulIntegerToFloat.
- Squared magnitudes (``re**2 + im**2`` on their way to Sqrt/Log, ``model/recurrent.py``) stay float.
- Static int8 on the CPU target (``float_weights_reason``): LSTM/GRU/RNN weights (W, R, B) stay float.
  ONNX Runtime has no static integer kernel for them, so int8 storage is dequantized on every call:
  Silero VAD 1.22x / 1.30x float speed (1 / 2 threads) with int8 W/R against 1.51x / 1.52x with them
  float, same frame agreement, 356 -> 734 KiB (benchmarks/results/vad_recipes.md).  Below 8 bits, and
  on other targets, the weights are stored as integers (``weights_note``): there the weights' size is
  what was asked for.  ``--method dynamic`` runs an LSTM as DynamicQuantizeLSTM; ``--method weight-only``
  stores any of them as integers.
"""

from __future__ import annotations

import onnx

from edgequant.model.gru_hoist import hoisted_inputs
from edgequant.model.patterns import recurrent_state_tensors
from edgequant.model.recurrent import squared_domain
from edgequant.plan import QuantPlan
from edgequant.recipe import Recipe

FLOAT_WEIGHTS = "weights W, R, B kept float"  # the start of a recurrent node's plan reason under static int8

_OTHER_FORMS = {
    "LSTM": "--method dynamic runs it as ORT's integer DynamicQuantizeLSTM",
    "GRU": "--hoist-gru moves its input projection into an int8 MatMul (ORT has no integer GRU kernel)",
    "RNN": "ORT has no integer RNN kernel under any method",
}


def float_state(graph: onnx.GraphProto) -> set[str]:
    """Tensors that stay float: recurrent state and hoisted GRU inputs."""
    return recurrent_state_tensors(graph) | hoisted_inputs(graph)


def squared_nodes(graph: onnx.GraphProto) -> dict[str, str]:
    """Node name -> why it stays float, for the nodes of a power spectrum (``squared_domain``)."""
    return squared_domain(graph)


def float_weights_reason(node: onnx.NodeProto, recipe: Recipe) -> str:
    """Why an LSTM/GRU/RNN keeps float weights under static 8-bit on the CPU target ('' elsewhere: other
    methods, other targets, and weights below 8 bits, which are stored as integers)."""
    if recipe.method != "static" or recipe.target != "cpu" or recipe.weight_bits != 8:
        return ""
    op = node.op_type
    return (
        f"{FLOAT_WEIGHTS}: ONNX Runtime has no static integer {op} kernel, so int8 storage would be "
        f"dequantized on every call (Silero VAD, 1 thread: 1.51x float speed with float LSTM weights, 1.22x "
        f"with int8 ones); "
        f"{_OTHER_FORMS[op]}; --method weight-only stores them int8 for size."
    )


def float_weights_notes(plan: QuantPlan) -> list[str]:
    """One note per recurrent op type whose nodes kept float weights (``float_weights_reason``)."""
    out: list[str] = []
    for op in ("LSTM", "GRU", "RNN"):
        nodes = [d for d in plan.skipped_nodes if d.op_type == op and d.reason.startswith(FLOAT_WEIGHTS)]
        if nodes:
            names = ", ".join(d.node for d in nodes[:3]) + (", ..." if len(nodes) > 3 else "")
            out.append(
                f"{len(nodes)} {op} node(s) ({names}): {nodes[0].reason} Their gates and the recurrent state "
                "they carry between calls run in float too; a neighbouring integer op reads their sequences via Q/DQ."
            )
    return out


def weights_note(node: onnx.NodeProto) -> str:
    """The plan's note on an LSTM/GRU/RNN whose weights are quantized (below 8 bits, or another target)."""
    return (
        f"{node.op_type} '{node.name}': weights stored as integers and dequantized for ORT's float "
        f"{node.op_type} kernel (ORT has no integer one); its gates and the recurrent state it "
        "carries between calls run in float (quantized state would compound error across steps); "
        "its input and output sequences get Q/DQ only where a neighbouring integer op reads them. "
        f"The dequantization runs on every call: --exclude {node.name} (or --exclude {node.op_type}) keeps "
        "its weights float, a larger file that runs faster."
    )
