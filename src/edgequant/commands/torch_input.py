"""PyTorch inputs shared by quantize, evaluate and compare: a TorchScript file, or ``--factory`` with
``--checkpoint`` (a state dict, a ``{'model_state_dict'|'state_dict'|'model': ...}`` checkpoint, or a run
directory with one checkpoint and its args/config file), exported with ``--input-shape`` and, for
sequence models, ``--dynamic-axis INPUT:AXIS`` (verified at two lengths)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgequant.errors import ModelError, RecipeError

TORCH_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")


def is_torch(model: Path, factory: str | None) -> bool:
    return bool(factory) or model.suffix in TORCH_SUFFIXES


def parse_dynamic_axes(items: list[str] | None) -> dict[str, list[int]]:
    """``["input:1", "input:2"]`` -> ``{"input": [1, 2]}``."""
    out: dict[str, list[int]] = {}
    for item in items or []:
        name, sep, axis = item.rpartition(":")
        if not sep or not name or not axis.strip().isdigit():
            raise RecipeError(
                f"--dynamic-axis '{item}' is not INPUT:AXIS.", "write e.g. --dynamic-axis input:1."
            )
        out.setdefault(name.strip(), []).append(int(axis))
    return out


def load_torch(
    model: Path, factory: str | None, checkpoint: Path | None, input_shape: str | None
) -> tuple[Any, Any, list[str]]:
    """``(module, example inputs, notes)``; the notes state the checkpoint form and config used."""
    from edgequant.model.checkpoint import load_factory_noted, load_torchscript
    from edgequant.model.torch_import import parse_input_shapes

    if input_shape is None:
        raise ModelError(
            "a PyTorch model needs the shape of its example input(s) for export.",
            "add --input-shape 1x3x224x224 (several inputs: comma-separated).",
        )
    if checkpoint is not None and not factory:
        raise RecipeError(
            "--checkpoint holds weights only; the architecture comes from --factory.",
            "add --factory package.module:function (a TorchScript MODEL needs no --checkpoint).",
        )
    import torch

    notes: list[str] = []
    if factory:
        module, notes = load_factory_noted(factory, checkpoint)
    else:
        module = load_torchscript(model)
    shapes = parse_input_shapes(input_shape)
    gen = torch.Generator().manual_seed(0)
    examples = tuple(torch.randn(*s, generator=gen) for s in shapes)
    return module, examples[0] if len(examples) == 1 else examples, notes


def to_onnx(
    model: Path,
    factory: str | None,
    checkpoint: Path | None,
    input_shape: str | None,
    dynamic_axis: list[str] | None,
    data: tuple[str, str | Path | None] | None = None,
) -> tuple[Any, list[str]]:
    """MODEL as evaluate/compare take it: the path itself for ONNX, else the verified ONNX export
    (a ModelProto named after the file) and notes saying how it was built.  ``data`` (the flag's name
    and its file) gives a TorchScript model without ``input_shape`` its example shape, as quantize's
    ``--calib-data`` does: the first sample of a ``.npy``/``.npz`` file."""
    axes = parse_dynamic_axes(dynamic_axis)
    if not is_torch(model, factory):
        if axes or input_shape or checkpoint:
            raise RecipeError(
                f"--input-shape/--checkpoint/--dynamic-axis apply to PyTorch models; '{model.name}' is not one.",
                "drop them (an ONNX model's shapes are in the file).",
            )
        return model, []
    from edgequant.pipeline import load_input_model

    if input_shape is None and data is not None:
        from edgequant.cli_support import shape_from_calibration

        input_shape = shape_from_calibration(None if data[1] is None else str(data[1]), data[0])
    module, examples, notes = load_torch(model, factory, checkpoint, input_shape)
    proto, _, check = load_input_model(module, examples, axes or None)
    proto.graph.name = model.stem
    if check:
        notes.append(f"exported to ONNX and verified against PyTorch: {_check_text(check)}")
    return proto, notes


def _check_text(check: dict[str, Any]) -> str:
    keys = ("sqnr_db", "max_abs_diff", "opset")
    return ", ".join(f"{k} {check[k]}" for k in keys if k in check) or "ok"
