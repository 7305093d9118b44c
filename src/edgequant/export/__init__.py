"""Plan -> model: QDQ export, FP16 conversion, dynamic INT8, and size accounting."""

from edgequant.export.dynamic import quantize_dynamic as dynamic_int8
from edgequant.export.fp16 import convert_fp16
from edgequant.export.kernels import integer_weight_names
from edgequant.export.qdq import export_qdq
from edgequant.export.sizes import file_bytes, packed_bytes

__all__ = ["convert_fp16", "dynamic_int8", "export_qdq", "file_bytes", "integer_weight_names", "packed_bytes"]
