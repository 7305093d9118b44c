"""Which calibration tokens the weight-rounding passes (``block_clip``, ``gptq``) learn from.

A batch of padded sentences holds padding positions whose activations the model's consumers never
read (an encoder's mean pooling and attention skip them through ``attention_mask``).  Fitting 4-bit
weights to those rows spends the error budget on outputs nobody uses.  Calibration tools for
transformer weights take only the real tokens (as GPTQ implementations do with the attention mask).

``recipe.token_mask``: ``"auto"`` uses a model input named ``attention_mask`` of rank 2 when there is
one, ``"none"`` every row, or the name of a rank-2 model input ``[batch, tokens]`` whose zeros mark
padding.  A MatMul input whose leading axes are not ``[batch, tokens]`` keeps every row.
"""

from __future__ import annotations

import numpy as np
import onnx

from edgequant.errors import DataError

AUTO_NAME = "attention_mask"


def resolve(model: onnx.ModelProto, setting: str) -> str | None:
    """The model input that marks real tokens, or None (every row counts).

    Raises DataError when ``setting`` names an input the model does not have or that is not rank 2.
    """
    if setting == "none":
        return None
    ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in model.graph.input}
    if setting == "auto":
        return AUTO_NAME if ranks.get(AUTO_NAME) == 2 else None
    if ranks.get(setting) != 2:
        have = ", ".join(f"{k} (rank {v})" for k, v in ranks.items())
        raise DataError(
            f"token_mask '{setting}' is not a rank-2 [batch, tokens] model input; inputs: {have}.",
            "set token_mask to a rank-2 mask input, 'auto' or 'none'.",
        )
    return setting


def rows(value: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``value [..., K]`` as float64 rows ``[R, K]``, only the rows where ``mask [batch, tokens]`` is
    non-zero when the value's leading axes are ``[batch, tokens]`` (or their product)."""
    flat = value.reshape(-1, value.shape[-1]).astype(np.float64)
    if mask is None:
        return flat
    keep = np.asarray(mask).reshape(-1) != 0
    if value.shape[:-1] == mask.shape or (value.ndim == 2 and len(flat) == keep.size):
        return flat[keep]
    return flat
