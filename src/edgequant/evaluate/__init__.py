"""Evaluation: task metrics float vs quantized, per-layer error, latency / memory / size, compare.

``evaluate(float_model, quant_model, data, task=..., labels=...)`` scores one quantized model;
``compare(model, calibration, eval_data, outdir=...)`` runs every method and writes a report;
``per_layer_error`` ranks the quantized tensors of a QDQ model by SQNR; ``format_table`` renders
either result as a rich table.
"""

from edgequant.evaluate.compare import CompareResult, MethodResult, compare, resolve_methods
from edgequant.evaluate.core import EvalData, EvalResult, evaluate, load_eval_data
from edgequant.evaluate.layers import LayerReport, NodeError, TensorError, per_layer_error
from edgequant.evaluate.perf import Latency, Size, measure_latency, measure_memory, model_size, packed_size
from edgequant.evaluate.recommend import RULE, Candidate, Limits, Recommendation, recommend
from edgequant.evaluate.table import format_layer_table, format_table
from edgequant.evaluate.tasks import TASKS

__all__ = [
    "RULE",
    "TASKS",
    "Candidate",
    "CompareResult",
    "EvalData",
    "EvalResult",
    "Latency",
    "LayerReport",
    "Limits",
    "MethodResult",
    "NodeError",
    "Recommendation",
    "Size",
    "TensorError",
    "compare",
    "evaluate",
    "format_layer_table",
    "format_table",
    "load_eval_data",
    "measure_latency",
    "measure_memory",
    "model_size",
    "packed_size",
    "per_layer_error",
    "recommend",
    "resolve_methods",
]
