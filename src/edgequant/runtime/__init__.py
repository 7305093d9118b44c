"""Runtimes: ONNX Runtime in production (the only place that imports onnxruntime)."""

from edgequant.runtime.cpu import CpuFeatures, detect
from edgequant.runtime.ort import OrtRuntime, OrtSession, Runtime, ort_version

__all__ = ["CpuFeatures", "OrtRuntime", "OrtSession", "Runtime", "detect", "ort_version"]
