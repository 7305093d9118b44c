"""The planner's recurrent-model hooks (LSTM/GRU and streaming models with carried state).

- The state an LSTM/GRU/RNN carries between calls (what reaches its initial-state inputs and leaves
  its final-state outputs, through layout ops) stays float: quantized state compounds its error across
  calls.  A hoisted GRU's input (``--hoist-gru``) stays float too: ORT runs its product as
  MatMulIntegerToFloat.
- Squared magnitudes (``re**2 + im**2`` on their way to Sqrt/Log, ``model/recurrent.py``) stay float.
- LSTM/GRU weights are stored as integers and dequantized for ORT's float kernel, on every call (the
  note says so and how to keep them float: Silero VAD 0.076 -> 0.060 ms per frame with ``--exclude LSTM``,
  356 -> 734 KiB; benchmarks/results/vad_recipes.md).
"""

from __future__ import annotations

import onnx

from edgequant.model.gru_hoist import hoisted_inputs
from edgequant.model.patterns import recurrent_state_tensors
from edgequant.model.recurrent import squared_domain


def float_state(graph: onnx.GraphProto) -> set[str]:
    """Tensors that stay float: recurrent state and hoisted GRU inputs."""
    return recurrent_state_tensors(graph) | hoisted_inputs(graph)


def squared_nodes(graph: onnx.GraphProto) -> dict[str, str]:
    """Node name -> why it stays float, for the nodes of a power spectrum (``squared_domain``)."""
    return squared_domain(graph)


def weights_note(node: onnx.NodeProto) -> str:
    """The plan's note on an LSTM/GRU whose weights are quantized."""
    return (
        f"{node.op_type} '{node.name}': weights stored as integers and dequantized for ORT's float "
        f"{node.op_type} kernel (ORT has no integer one); its gates and the recurrent state it "
        "carries between calls run in float (quantized state would compound error across steps); "
        "its input and output sequences get Q/DQ only where a neighbouring integer op reads them. "
        f"The dequantization runs on every call: --exclude {node.name} (or --exclude {node.op_type}) keeps "
        "its weights float, a larger file that runs faster."
    )
