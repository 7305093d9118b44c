"""Plan -> model: QDQ export, FP16 conversion, dynamic INT8, and size accounting."""

from edgequant.export.qdq import export_qdq
from edgequant.export.sizes import file_bytes, integer_weight_count, packed_bytes

__all__ = ["export_qdq", "file_bytes", "integer_weight_count", "packed_bytes"]
