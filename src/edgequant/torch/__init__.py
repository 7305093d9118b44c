"""The PyTorch side of EdgeQuant (``pip install edgequant[torch]``).

* ``QATModule`` / ``PTQModule``: fake quantization that follows the ONNX plan, ``convert()``,
  ``save()`` and ``export()`` (``edgequant.torch.wrapper``);
* ``load(path, factory)``: the integer model of a ``.pth`` that EdgeQuant wrote (``artifact``);
* ``surgery.replace_modules``: accelerator-friendly layer swaps, with the float change of each.
"""

from __future__ import annotations

from edgequant.model.torch_import import require_torch

require_torch()

from edgequant.torch.artifact import load  # noqa: E402
from edgequant.torch.wrapper import PTQModule, QATModule  # noqa: E402

__all__ = ["PTQModule", "QATModule", "load"]
