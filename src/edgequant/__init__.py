"""EdgeQuant: post-training quantization of ONNX models into QDQ models that ONNX Runtime runs.

Public API::

    import edgequant
    result = edgequant.quantize("model.onnx", "calib.npz", method="static", weight_bits=8)
    result.save("out/")                       # out/model_int8.onnx, model_int8.json, model_int8.plan.json
    edgequant.compare("model.onnx", "calib.npz", "eval.npz", outdir="cmp/")
"""

from __future__ import annotations

from typing import Any

from edgequant.errors import (
    DataError,
    DependencyError,
    EdgeQuantError,
    ExportError,
    InferenceError,
    ModelError,
    RecipeError,
    TargetError,
    UnsupportedError,
)
from edgequant.pipeline import quantize
from edgequant.plan import QuantPlan
from edgequant.recipe import Recipe, load_recipe
from edgequant.result import QuantResult, __version__


def compare(*args: Any, **kwargs: Any) -> Any:
    """Run every method on one model and pick the best under limits (see ``edgequant.evaluate.compare``)."""
    from edgequant.evaluate import compare as _compare

    return _compare(*args, **kwargs)


def evaluate(*args: Any, **kwargs: Any) -> Any:
    """Float vs quantized task metrics (see ``edgequant.evaluate.evaluate``)."""
    from edgequant.evaluate import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = [
    "DataError",
    "DependencyError",
    "EdgeQuantError",
    "ExportError",
    "InferenceError",
    "ModelError",
    "QuantPlan",
    "QuantResult",
    "Recipe",
    "RecipeError",
    "TargetError",
    "UnsupportedError",
    "__version__",
    "compare",
    "evaluate",
    "load_recipe",
    "quantize",
]
