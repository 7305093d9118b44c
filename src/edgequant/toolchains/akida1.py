"""``--target akida1``: convert the user's Keras model for BrainChip Akida 1.0 and prove the program runs.

Akida 1.0 (AKD1000) takes 1/2/4-bit weights and activations (its input layer: 8-bit weights on uint8
pixels).  BrainChip's ONNX route (QuantizeML, :mod:`edgequant.toolchains.akida`) builds Akida 2.0 at 8
bits only; the 1.0 widths come from ``cnn2snn.quantize`` on a Keras 2 model.  So this route takes the
user's own ``.h5`` file (saved by tf_keras / Keras 2, as BrainChip's MetaTF users have): the akida
toolchain's driver (``drivers/akida1_convert.py``, in the toolchain's own TF 2.19 + tf_keras) loads
it, quantizes it in ``cnn2snn.set_akida_version(AkidaVersion.v1)`` with the asked widths, converts it
with ``cnn2snn.convert``, saves ``<name>_<tag>.fbz`` and runs it on Akida's software backend on the
check samples.  EdgeQuant compares those outputs with its own ONNX Runtime run of the float model it
imported from the same file.

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
from edgequant.recipe import Recipe
from edgequant.runtime import OrtRuntime
from edgequant.schemes import sqnr_db
from edgequant.toolchains.runner import run_driver

Batch = dict[str, np.ndarray]
KERAS_SUFFIXES = (".h5", ".hdf5")


def check_akida1(source: object, weight_bits: int | str, act_bits: int) -> None:
    """Refuse what the Akida 1.0 route cannot build, before any work.

    Args:
        source: the model as the user gave it (a path for this route).
        weight_bits / act_bits: the asked widths (1, 2 or 4 on Akida 1.0; EdgeQuant plans 2 or 4).

    Raises:
        UnsupportedError: ``source`` is not a Keras 2 ``.h5`` file, or a width is not 2 or 4.
    """
    check_akida1_source(source)
    default = Recipe()
    bad = [
        f"{what} {b}" + (" (the default)" if b == d else "")
        for what, b, d in (
            ("weight bits", weight_bits, default.weight_bits),
            ("activation bits", act_bits, default.act_bits),
        )
        if b not in (2, 4)
    ]
    if bad:
        raise UnsupportedError(
            f"--target akida1 (Akida 1.0) builds 4- or 2-bit weights and activations; this run has "
            f"{' and '.join(bad)}.",
            "pass --weight-bits 4|2 --act-bits 4|2, or use --target akida for 8 bits (Akida 2.0).",
        )


def check_akida1_source(source: object) -> None:
    """Refuse an input other than a Keras 2 ``.h5`` file (UnsupportedError): the first thing the Akida 1.0
    route needs, checked before any setting (``pipeline`` calls it before the target's rules)."""
    if not (isinstance(source, str | Path) and Path(source).suffix.lower() in KERAS_SUFFIXES):
        raise UnsupportedError(
            "--target akida1 converts with BrainChip's cnn2snn Keras route (Akida 1.0), which takes a Keras 2 "
            f"model file; this input is {_describe(source)}.",
            "pass the model as an .h5 file saved by tf_keras (Keras 2), or use --target akida (Akida 2.0, "
            "8-bit, from ONNX).",
        )


def _describe(source: object) -> str:
    if isinstance(source, str | Path):
        return f"'{Path(source).name}'"
    return f"an in-memory {type(source).__name__}"


def build_akida1(
    source: Path, float_model: onnx.ModelProto, batches: list[Batch], weight_bits: int, act_bits: int
) -> tuple[bytes, dict[str, Any]]:
    """Convert the Keras ``source`` to an Akida 1.0 program; the ``.fbz`` bytes and the report section.

    Args:
        source: the user's Keras 2 ``.h5`` file, one input ``[N, H, W, C]`` (uint8 pixels).
        float_model: EdgeQuant's ONNX import of ``source`` (same input layout), the float reference.
        batches: check batches, keyed by ``float_model``'s input name.
        weight_bits / act_bits: 4 or 2 (the input layer's weights are 8-bit).

    Raises:
        DataError: the samples are not integers in [0, 255].
        UnsupportedError: several inputs, or the conversion left a weighted layer out / the output differs.
        TargetError / ExportError: the toolchain is missing, or cnn2snn / akida failed (its one line).
    """
    specs = input_specs(float_model)
    if len(specs) != 1:
        raise UnsupportedError(
            f"Akida models take one input; this model has {len(specs)} ({', '.join(s.name for s in specs)}).",
            "export a single-input Keras model for --target akida1.",
        )
    name = specs[0].name
    xs = [b[name].astype(np.float32) for b in batches]
    every = np.concatenate(xs)
    if not (np.all(every == np.round(every)) and every.min() >= 0 and every.max() <= 255):
        raise DataError(
            f"Akida 1.0's input layer takes uint8 pixels, but the samples hold values in "
            f"[{float(every.min()):.4g}, {float(every.max()):.4g}] that are not all integers in [0, 255].",
            "feed raw 0-255 pixels (fold the normalisation into the first layer of the Keras model).",
        )
    with tempfile.TemporaryDirectory(prefix="edgequant-akida1-") as tmp:
        work = Path(tmp)
        arrays: dict[str, Any] = {f"{i}/x": x for i, x in enumerate(xs)}
        np.savez(work / "inputs.npz", **arrays)
        res = run_driver(
            "akida", "akida1_convert",
            {"model": Path(source), "inputs": work / "inputs.npz",
             "outputs": work / "outputs.npz", "out": work / "model.fbz",
             "weight_bits": weight_bits, "act_bits": act_bits},
            work,
        )  # fmt: skip
        program = (work / "model.fbz").read_bytes()
        with np.load(work / "outputs.npz") as data:
            got = [data[f"{i}/y"] for i in range(len(batches))]
    require_whole(res)
    out = float_model.graph.output[0]
    session = OrtRuntime(allow_spinning=False).session(float_model, "the float model")
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
            "check the layers Akida 1.0 supports ('edgequant check MODEL --target akida1').",
        )
    info: dict[str, Any] = {
        "toolchain": "akida",
        "route": "cnn2snn Keras route, Akida 1.0 (cnn2snn.quantize + cnn2snn.convert)",
        "input": "the Keras model's input as given (uint8 pixels)",
        "versions": res.get("versions"),
        "bits": {"weights": weight_bits, "activations": act_bits, "input_layer_weights": 8},
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


def require_whole(res: dict[str, Any]) -> None:
    """Every Keras layer holding weights became an Akida layer (``res``: the driver's result).

    Raises:
        UnsupportedError: naming the first Keras layer the conversion left out.
    """
    converted = {layer[0] for layer in res.get("layers") or []}
    missing = [n for n in res.get("keras_weighted") or [] if n not in converted]
    if missing:
        raise UnsupportedError(
            f"the Akida 1.0 conversion left Keras layer '{missing[0]}' out "
            f"({len(missing)} weighted layer(s) not converted).",
            "replace that layer with one Akida 1.0 supports ('edgequant check MODEL --target akida1' lists them).",
        )
