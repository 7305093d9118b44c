"""Numerics only: specs, quantization parameters and fake-quant math (numpy in, numpy out)."""

from edgequant.schemes.qparams import (
    dequantize,
    fake_quant,
    qparams_from_range,
    quantize,
    quantize_weight,
    sqnr_db,
    weight_ranges,
)
from edgequant.schemes.spec import Granularity, QuantSpec, ScaleRule

__all__ = [
    "Granularity",
    "QuantSpec",
    "ScaleRule",
    "dequantize",
    "fake_quant",
    "qparams_from_range",
    "quantize",
    "quantize_weight",
    "sqnr_db",
    "weight_ranges",
]
