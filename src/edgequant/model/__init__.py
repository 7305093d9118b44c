"""Load, repair, save and summarise ONNX models; import from PyTorch and TensorFlow (extras)."""

from edgequant.model.inspect import summarize
from edgequant.model.io import load_model, opset_of, save_model, write_text_atomic
from edgequant.model.repair import ensure_opset, prepare

__all__ = [
    "ensure_opset",
    "load_model",
    "opset_of",
    "prepare",
    "save_model",
    "summarize",
    "write_text_atomic",
]
