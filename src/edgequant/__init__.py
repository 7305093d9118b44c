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
from edgequant.pipeline import quantize as _quantize
from edgequant.plan import QuantPlan
from edgequant.recipe import Recipe
from edgequant.recipe import load_recipe as _load_recipe
from edgequant.recipe.flags import api_refusals
from edgequant.result import QuantResult, __version__

# refusals name these functions' keyword arguments (weight_bits=4), not the CLI's flags (--weight-bits 4)
quantize = api_refusals(_quantize)
load_recipe = api_refusals(_load_recipe, {"--recipe": "load_recipe()"})


@api_refusals
def compare(*args: Any, **kwargs: Any) -> Any:
    """Run every method on one model and pick the best under limits (see ``edgequant.evaluate.compare``)."""
    from edgequant.evaluate import compare as _compare

    return _compare(*args, **kwargs)


def _evaluate(*args: Any, **kwargs: Any) -> Any:
    """Float vs quantized task metrics (see ``edgequant.evaluate.evaluate``)."""
    from edgequant.evaluate import evaluate as _run

    return _run(*args, **kwargs)


evaluate = api_refusals(_evaluate, {"--calib-data": "data=", "--eval-data": "data=", "-o": "output="})


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
