"""Vendor back ends (Apache TVM, BrainChip Akida), each driven in a virtual environment of its own.

``TARGETS`` maps a target name to the toolchain that builds its artifact.  :func:`build` runs after
EdgeQuant's own QDQ export and check; it returns the artifact's file suffix, its bytes and the report
section.  A missing toolchain is a :class:`~edgequant.errors.TargetError` naming the install command:
never a copy of the ONNX model, never a placeholder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgequant.toolchains.envs import TOOLCHAINS, cache_dir, install, installed, remove, require

TARGETS: dict[str, str] = {"tvm": "tvm", "akida": "akida", "akida1": "akida"}  # target name -> toolchain
SUFFIX: dict[str, str] = {"tvm": ".tvm.so", "akida": ".fbz", "akida1": ".fbz"}

__all__ = [
    "SUFFIX",
    "TARGETS",
    "TOOLCHAINS",
    "build",
    "cache_dir",
    "check_recipe",
    "check_source",
    "install",
    "installed",
    "remove",
    "require",
]


def check_source(target: str, source: object) -> None:
    """Refuse a model the ``target``'s route cannot take at all, before any setting is checked (a
    setting's conflict would otherwise be reported first, even one the user never gave): ``akida1``
    takes a Keras 2 ``.h5`` file only.  UnsupportedError; any other target: nothing to check here."""
    if target == "akida1":
        from edgequant.toolchains.akida1 import check_akida1_source

        check_akida1_source(source)


def check_recipe(target: str, weight_bits: int | str, act_bits: int, source: object = None) -> None:
    """Refuse bit widths the toolchain's route cannot build, before any work.

    BrainChip QuantizeML's ONNX route (Akida 2.0) accepts only its default 8-bit ``QuantizationParams``
    (it raises "Only default bitwidth qparams is allowed"); the 1/2/4-bit Akida 1.0 route takes Keras
    models (``cnn2snn.quantize``): that is ``akida1``, which takes the user's Keras ``.h5`` file
    (``source``, the model as given) and 4/2-bit widths (:func:`~edgequant.toolchains.akida1.check_akida1`).

    Raises:
        UnsupportedError: ``target`` is ``akida`` and a bit width is not 8; or ``akida1`` and the input
        is not a Keras 2 ``.h5`` file or a width is not 4 or 2.
    """
    if target == "akida1":
        from edgequant.toolchains.akida1 import check_akida1

        check_akida1(source, weight_bits, act_bits)
    if target == "akida" and (weight_bits, act_bits) != (8, 8):
        from edgequant.errors import UnsupportedError

        raise UnsupportedError(
            f"--target akida builds with BrainChip QuantizeML's ONNX route (Akida 2.0), which quantizes at 8 "
            f"bits only; weight bits {weight_bits} / activation bits {act_bits} were asked (the 1/2/4-bit "
            "Akida 1.0 route is --target akida1, from a Keras .h5 model).",
            "drop --weight-bits/--act-bits for --target akida, or pass a Keras .h5 model with --target akida1.",
        )


def build(
    target: str,
    quantized: onnx.ModelProto,
    float_model: onnx.ModelProto | Path,
    batches: list[dict[str, np.ndarray]],
    *,
    calibration: Callable[[], list[dict[str, np.ndarray]]] | None = None,
    tune_trials: int = 0,
    tune_budget_s: float | None = None,
    source: Path | None = None,
    bits: tuple[int | str, int] = (8, 8),
) -> tuple[str, bytes, dict[str, Any]]:
    """Build ``target``'s artifact from the QDQ model; ``(suffix, bytes, report section)``.
    ``source`` and ``bits`` (weights, activations) serve ``akida1``: the Keras file and its widths.

    Raises:
        TargetError: the toolchain is not installed.
        ExportError: the toolchain failed (its message in one line).
    """
    require(TARGETS[target])
    if target == "tvm":
        from edgequant.toolchains.tvm import build_tvm

        library, info = build_tvm(
            quantized, float_model, batches, tune_trials=tune_trials, tune_budget_s=tune_budget_s
        )
        return SUFFIX[target], library, info
    if target == "akida":
        from edgequant.toolchains.akida import build_akida

        program, info = build_akida(float_model, calibration() if calibration else batches, batches)
        return SUFFIX[target], program, info
    if target == "akida1" and source is not None and isinstance(float_model, onnx.ModelProto):
        from edgequant.toolchains.akida1 import build_akida1

        program, info = build_akida1(source, float_model, batches, int(bits[0]), bits[1])
        return SUFFIX[target], program, info
    raise KeyError(target)
