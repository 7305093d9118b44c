"""TI Tiny ML Tensorlab-style configuration files as recipes.

A Tensorlab config selects quantization with four keys under ``training`` (TI MCU AI user guide,
"Quantization": https://software-dl.ti.com/C2000/esd/mcu_ai/user_guide/features/quantization.html)
and the device under ``common.target_device``::

    common:   {target_device: F28P55}
    training: {quantization: 2, quantization_method: PTQ,
               quantization_weight_bitwidth: 8, quantization_activation_bitwidth: 8}

* ``quantization``: 0 float (refused: nothing to quantize), 1 generic (ONNX Runtime CPU QDQ,
  target ``cpu``), 2 TI NPU style (target ``ti-npu`` on a device with an NPU; a device without one
  gets ``cpu`` and a note);
* ``quantization_method``: PTQ (static calibration: ``edgequant quantize --recipe FILE``) or QAT
  (quantization-aware training: ``edgequant qat --recipe FILE``, which trains the PyTorch model with
  the same target, bits and rules); each command refuses the other's method, naming the command
  that runs it;
* unknown keys and devices are errors, as everywhere in EdgeQuant.
"""

from __future__ import annotations

import difflib
from typing import Any

from edgequant.errors import RecipeError

NPU_DEVICES = ("F28P55", "AM13E2", "MSPM0G5187")  # TI's NPU-enabled devices (Tensorlab NPU guidelines)
CPU_DEVICES = ("F28P65", "F2837", "F28004", "F28003", "F280013", "F280015", "MSPM0G3507", "AM263")
TRAINING_KEYS = (
    "quantization", "quantization_method", "quantization_weight_bitwidth", "quantization_activation_bitwidth",
)  # fmt: skip


def is_tensorlab(data: Any) -> bool:
    """True for a mapping shaped like a Tensorlab config (top-level ``common`` / ``training``)."""
    return isinstance(data, dict) and bool({"common", "training"} & set(data))


def _keys(where: str, data: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RecipeError(f"TI config: '{where}' must be a mapping.", "write key: value pairs.")
    for k in data:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), allowed, n=1)
            raise RecipeError(
                f"TI config: unknown key '{where}.{k}'; allowed: {', '.join(allowed)}.",
                f"rename it to '{close[0]}'." if close else "remove it (EdgeQuant reads only these keys).",
            )
    return data


def from_tensorlab(data: dict[str, Any], flow: str = "ptq") -> tuple[dict[str, Any], list[str]]:
    """Recipe keys for a Tensorlab config, and the notes to show; RecipeError for what cannot be honoured.

    ``flow``: ``"ptq"`` (``quantize``: calibration) or ``"qat"`` (``edgequant qat``: training); a config
    whose ``quantization_method`` asks for the other flow is refused with the command that runs it."""
    _keys("", data, ("common", "training"))
    common = _keys("common", data.get("common", {}), ("target_device",))
    train = _keys("training", data.get("training", {}), TRAINING_KEYS)
    device = str(common.get("target_device", "")).upper()
    if device not in NPU_DEVICES + CPU_DEVICES:
        raise RecipeError(
            f"TI config: common.target_device '{common.get('target_device')}' is not a known device; known: "
            f"{', '.join(NPU_DEVICES + CPU_DEVICES)}.",
            "set common.target_device to one of them.",
        )
    mode = train.get("quantization", 0)
    if mode not in (0, 1, 2):
        raise RecipeError(f"TI config: training.quantization = {mode!r}; allowed: 0, 1, 2.", "use 1 or 2.")
    if mode == 0:
        raise RecipeError(
            "TI config: training.quantization is 0 (floating point): there is nothing to quantize.",
            "set training.quantization to 2 (TI NPU style) or 1 (generic).",
        )
    method = str(train.get("quantization_method", "PTQ")).upper()
    if method not in ("PTQ", "QAT"):
        raise RecipeError(f"TI config: quantization_method '{method}'; allowed: PTQ, QAT.", "use PTQ or QAT.")
    if method == "QAT" and flow != "qat":
        raise RecipeError(
            "TI config: quantization_method QAT trains the model, and this flow quantizes a trained model by "
            "calibration (PTQ).",
            "run the training flow with this file: edgequant qat --recipe FILE (with --factory, --train-data, "
            "--eval-data), or set quantization_method: PTQ here.",
        )
    if method == "PTQ" and flow == "qat":
        raise RecipeError(
            "TI config: quantization_method is PTQ (calibration, the default), and edgequant qat trains.",
            "set quantization_method: QAT for edgequant qat, or run edgequant quantize --recipe FILE for PTQ.",
        )
    notes: list[str] = []
    target = "cpu"
    if mode == 2 and device in NPU_DEVICES:
        target = "ti-npu"
    elif mode == 2:
        notes.append(
            f"TI config: {device} has no NPU, so TI-NPU style quantization (mode 2) runs as generic CPU "
            "quantization (target cpu)."
        )
    recipe: dict[str, Any] = {"method": "static", "target": target}
    for key, ours in (
        ("quantization_weight_bitwidth", "weight_bits"),
        ("quantization_activation_bitwidth", "act_bits"),
    ):
        if key in train:
            recipe[ours] = train[key]
    return recipe, notes
