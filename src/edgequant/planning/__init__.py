"""The planner's parts; :mod:`edgequant.planner` is the entry (graph + recipe + target -> QuantPlan).

- :mod:`.graph`: op-type tables and graph lookups (float tensors, embedding tables, Conv+Relu pairs,
  control-flow subgraphs).
- :mod:`.specs`: recipe + target profile + CPU -> the QuantSpec of an activation or a weight; the
  opset a plan needs.
- :mod:`.constants`: constant Add/Mul operands on the activations' 8-bit grid (QLinearAdd/QLinearMul).
- :mod:`.placement`: the transformer placement (``placement: auto | all | matmul-inputs``).
- :mod:`.recurrent`: the recurrent-model hooks (carried state, squared magnitudes, LSTM/GRU notes).
- :mod:`.ties`: ranges shared across Relu/Clip and value-moving ops (MaxPool, Reshape, ...) after
  calibration, so ORT fuses them or runs them on integers.
"""
