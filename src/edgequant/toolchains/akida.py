"""``--target akida``: convert the float model for BrainChip Akida 2.0 and prove the program runs.

After EdgeQuant's own plan and compliance check against the ``akida`` profile, the akida toolchain's
driver quantizes the *float* model with BrainChip's QuantizeML (8-bit, Akida 2.0), converts it with
``cnn2snn.convert``, saves ``<name>_<tag>.fbz`` and runs it on Akida's software backend on the check
samples.  EdgeQuant then compares those outputs with its own ONNX Runtime run of the float model.

Akida 2.0's input layer takes 8-bit integers: the samples must be integer-valued in [0, 255] (uint8
pixels) or [-128, 127]; a normalised float input is refused with the fix.  QuantizeML stops at the
first layer it cannot map, so a conversion whose last Akida layer is not the node producing the
model's output, or whose output size differs, is refused naming the first node left out.

Licence: the ``akida`` package is under BrainChip's EULA (no publication of benchmark results without
permission); the figures here go into the user's own report only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgequant.data import input_specs
from edgequant.errors import DataError, UnsupportedError
from edgequant.model.io import save_model
from edgequant.runtime import OrtRuntime
from edgequant.schemes import sqnr_db
from edgequant.toolchains.runner import run_driver

Batch = dict[str, np.ndarray]


def input_dtype(samples: np.ndarray) -> str:
    """``uint8`` or ``int8`` when every value is an integer in that range; DataError otherwise."""
    if np.all(samples == np.round(samples)):
        if samples.min() >= 0 and samples.max() <= 255:
            return "uint8"
        if samples.min() >= -128 and samples.max() <= 127:
            return "int8"
    raise DataError(
        f"Akida 2.0's input layer takes 8-bit integers, but the samples hold values in "
        f"[{float(samples.min()):.4g}, {float(samples.max()):.4g}] that are not all integers in [0, 255] "
        "or [-128, 127].",
        "feed raw 0-255 pixels (fold the normalisation into the first layer of the model), or use another "
        "target.",
    )


def build_akida(
    float_model: onnx.ModelProto | Path, calibration: list[Batch], batches: list[Batch]
) -> tuple[bytes, dict[str, Any]]:
    """Convert ``float_model`` to an Akida 2.0 program; the ``.fbz`` bytes and the report section.

    Args:
        float_model: the user's float ONNX model, one input ``[N, C, H, W]``.
        calibration: batches for QuantizeML's calibration.
        batches: check batches (held apart from calibration where the pipeline can).

    Raises:
        DataError: the inputs are not 8-bit integers.
        UnsupportedError: the model has several inputs, or the conversion stopped before the output.
        TargetError / ExportError: the toolchain is missing, or QuantizeML / cnn2snn failed.
    """
    model = float_model if isinstance(float_model, onnx.ModelProto) else onnx.load(str(float_model))
    specs = input_specs(model)
    if len(specs) != 1:
        raise UnsupportedError(
            f"Akida models take one input; this model has {len(specs)} ({', '.join(s.name for s in specs)}).",
            "export a single-input model for --target akida.",
        )
    name = specs[0].name
    calib = np.concatenate([b[name] for b in calibration]).astype(np.float32)
    pixel_model, to_pixels = _pixel_input(model, name)  # a declared normalisation moves into the program
    calib = to_pixels(calib)
    pixel_batches = [{name: to_pixels(b[name])} for b in batches]
    dtype = input_dtype(np.concatenate([calib, *(b[name] for b in pixel_batches)]))
    with tempfile.TemporaryDirectory(prefix="edgequant-akida-") as tmp:
        work = Path(tmp)
        save_model(pixel_model, work / "model.onnx", durable=False)
        np.savez(work / "calib.npz", x=calib)
        arrays: dict[str, Any] = {f"{i}/x": b[name] for i, b in enumerate(pixel_batches)}
        np.savez(work / "inputs.npz", **arrays)
        res = run_driver(
            "akida", "akida_convert",
            {"model": work / "model.onnx", "calib": work / "calib.npz", "inputs": work / "inputs.npz",
             "outputs": work / "outputs.npz", "out": work / "model.fbz", "input_dtype": dtype,
             "num_samples": len(calib)},
            work,
        )  # fmt: skip
        program = (work / "model.fbz").read_bytes()
        with np.load(work / "outputs.npz") as data:
            got = [data[f"{i}/y"] for i in range(len(batches))]
    out = model.graph.output[0]
    _require_whole(model, res, out.name)
    session = OrtRuntime(allow_spinning=False).session(model, "the float model")
    try:
        ref = [session.run(b)[out.name] for b in batches]
    finally:
        session.close()
    ref_all = np.concatenate([r.reshape(len(r), -1) for r in ref])
    got_all = np.concatenate([g.reshape(len(g), -1) for g in got])
    if ref_all.shape != got_all.shape:
        raise UnsupportedError(
            f"the Akida program's output has {got_all.shape[1]} values per sample, the model's "
            f"'{out.name}' {ref_all.shape[1]}: the conversion does not reproduce the model.",
            "check the layers Akida supports ('edgequant check MODEL --target akida').",
        )
    info: dict[str, Any] = {
        "toolchain": "akida",
        "input": getattr(to_pixels, "note", "the model's input as given (8-bit integer values)"),
        "versions": res.get("versions"),
        "input_dtype": dtype,
        "layers": res.get("layers"),
        "samples": len(ref_all),
        "sqnr_db_vs_float": {out.name: round(float(sqnr_db(ref_all, got_all)), 2)},
        "seconds": {k: res[k] for k in ("quantize_s", "convert_s") if k in res},
        "program_bytes": len(program),
        "backend": "Akida software backend (akida.Model.predict), no hardware",
    }
    if ref_all.shape[1] > 1:
        info["top1_agreement"] = round(float(np.mean(ref_all.argmax(1) == got_all.argmax(1))), 4)
    return program, info


def _pixel_input(model: onnx.ModelProto, name: str) -> tuple[onnx.ModelProto, Any]:
    """For a model that declares its input normalisation ``x = (pixel * scale - mean) / std`` (metadata,
    see :mod:`edgequant.data.declared`): a copy that takes raw pixels (the normalisation prepended as
    Mul/Sub/Div, which QuantizeML folds into the input layer) and the map from ``x`` back to pixels, so
    the Akida program takes 8-bit pixels as the device will.  Otherwise the model and the identity."""
    from edgequant.data.declared import declared

    fields = declared(model) or {}
    if "mean" not in fields and "std" not in fields:
        return model, lambda x: x
    scale = float(fields.get("scale", 1.0))
    mean = np.asarray(fields.get("mean", [0.0]), np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(fields.get("std", [1.0]), np.float32).reshape(1, -1, 1, 1)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for node in g.node:
        node.input[:] = ["eq_pixels_norm" if i == name else i for i in node.input]
    g.initializer.extend([
        onnx.numpy_helper.from_array(np.asarray(scale, np.float32), "eq_pixels_scale"),
        onnx.numpy_helper.from_array(mean, "eq_pixels_mean"),
        onnx.numpy_helper.from_array(std, "eq_pixels_std"),
    ])  # fmt: skip
    prefix = [
        onnx.helper.make_node("Mul", [name, "eq_pixels_scale"], ["eq_pixels_scaled"], name="eq_pixels_mul"),
        onnx.helper.make_node("Sub", ["eq_pixels_scaled", "eq_pixels_mean"], ["eq_pixels_centred"], name="eq_pixels_sub"),
        onnx.helper.make_node("Div", ["eq_pixels_centred", "eq_pixels_std"], ["eq_pixels_norm"], name="eq_pixels_div"),
    ]  # fmt: skip
    for i, node in enumerate(prefix):
        g.node.insert(i, node)

    def to_pixels(x: np.ndarray) -> np.ndarray:
        p = (x * std + mean) / scale
        r = np.round(p)
        if np.max(np.abs(p - r)) > 0.05:  # not pixels that went through this normalisation
            return p  # input_dtype() refuses them with the values found
        return r.astype(np.float32)

    to_pixels.note = (  # type: ignore[attr-defined]
        f"raw 8-bit pixels: the model's declared normalisation (x = (pixel * {scale:g} - mean) / std) is "
        "prepended to the Akida program and the samples are mapped back to pixels"
    )
    return out, to_pixels


def _require_whole(model: onnx.ModelProto, res: dict[str, Any], output: str) -> None:
    """The converted program ends at the node producing ``output`` (QuantizeML stops early otherwise)."""
    converted = {layer[0] for layer in res.get("layers") or []}
    producer = next((n for n in model.graph.node if output in n.output), None)
    if producer is None or any(o in converted for o in producer.output) or producer.name in converted:
        return
    covered = [i for i, n in enumerate(model.graph.node) if converted & {n.name, *n.output}]
    first = model.graph.node[(covered[-1] + 1) if covered else 0]
    raise UnsupportedError(
        f"the Akida conversion stopped before the model's output: node '{first.name or first.output[0]}' "
        f"({first.op_type}) and the nodes after it were not converted.",
        "replace that layer with one Akida 2.0 supports ('edgequant check MODEL --target akida' lists them).",
    )


def run_akida(program: Path, float_model: onnx.ModelProto, batches: list[Batch]) -> list[np.ndarray]:
    """Run an ``.fbz`` written by :func:`build_akida` on Akida's software backend; the model's first
    output per batch, ``float32 [N, ...]``.  The samples go through the same mapping to 8-bit pixels as
    at conversion (the model's declared normalisation is part of the program).

    Raises:
        DataError: the samples are not 8-bit integers (after that mapping).
        TargetError / ExportError: the toolchain is missing, or Akida failed (its one line).
    """
    name = input_specs(float_model)[0].name
    _, to_pixels = _pixel_input(float_model, name)
    pixels = [to_pixels(b[name].astype(np.float32)) for b in batches]
    dtype = input_dtype(np.concatenate(pixels))
    with tempfile.TemporaryDirectory(prefix="edgequant-akida-run-") as tmp:
        work = Path(tmp)
        arrays: dict[str, Any] = {f"{i}/x": p for i, p in enumerate(pixels)}
        np.savez(work / "inputs.npz", **arrays)
        run_driver(
            "akida", "akida_run",
            {"program": program, "input_dtype": dtype, "inputs": work / "inputs.npz",
             "outputs": work / "outputs.npz"},
            work,
        )  # fmt: skip
        with np.load(work / "outputs.npz") as data:
            return [data[f"{i}/y"] for i in range(len(batches))]
