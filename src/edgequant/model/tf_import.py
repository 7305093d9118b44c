"""Import TensorFlow models (SavedModel directory, ``.keras`` or ``.h5`` file) into ONNX via tf2onnx.

UNTESTED IN CI: tensorflow is a heavy optional extra (``edgequant[tf]``) that the test environment
does not install; the tests only check that a missing extra raises the DependencyError.  The code
follows tf2onnx's documented Python API (``tf2onnx.convert.from_keras`` / ``from_function``).

Flow of :func:`export_tf`, the same contract as ``export_torch``:

1. Load the model: a directory is a SavedModel (``tf.saved_model.load``, signature
   ``serving_default``); a ``.keras``/``.h5`` file is a Keras model (``tf.keras.models.load_model``).
2. Convert with tf2onnx at ``opset``, with a dynamic (``None``) axis 0 on every input.
3. Run TensorFlow (inference mode) and ONNX Runtime on the example inputs and on a second batch
   (``B + 2``, repeated and perturbed rows), and compare each output: max abs diff and
   SQNR = 10·log10(Σy² / Σ(y - ŷ)²).  Below ``rtol_sqnr_db`` (and not within 1e-6 relative) is a
   ModelError with both numbers, and nothing is written; otherwise the model is written atomically.

Keras 3 models may need ``tf_keras`` for tf2onnx's ``from_keras``; if conversion fails, save
the model as a SavedModel (``model.export(dir)``) and pass the directory.

Outputs are matched by name for SavedModels (signature output keys, which tf2onnx uses as ONNX
output names) and by position for Keras models.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.errors import DataError, DependencyError, ModelError
from edgequant.model.io import opset_of, save_model
from edgequant.model.torch_import import ImportReport, compare_outputs, quiet, run_onnx, second_batch


def require_tf() -> tuple[Any, Any]:
    """Import (tensorflow, tf2onnx.convert), or raise the DependencyError that names the extra."""
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise DependencyError.missing("tensorflow", "tf", "Importing a TensorFlow model") from exc
    try:
        import tf2onnx.convert as tf2onnx_convert
    except ImportError as exc:
        raise DependencyError.missing("tf2onnx", "tf", "Importing a TensorFlow model") from exc
    return tf, tf2onnx_convert


def _as_arrays(example_inputs: Any) -> list[np.ndarray]:
    items = list(example_inputs) if isinstance(example_inputs, (tuple, list)) else [example_inputs]
    if not items:
        raise DataError("example_inputs is empty.", "pass a numpy array or a list of arrays, one per input.")
    arrays = []
    for i, item in enumerate(items):
        arr = np.asarray(item.numpy() if hasattr(item, "numpy") else item)
        if arr.ndim == 0 or arr.dtype == object:
            raise DataError(
                f"example input {i} is a {type(item).__name__} with shape {arr.shape}; a batched numeric "
                "array is needed.",
                "pass arrays whose axis 0 is the batch.",
            )
        arrays.append(arr)
    sizes = {a.shape[0] for a in arrays}
    if len(sizes) != 1:
        raise DataError(f"example inputs disagree on the batch size: {sorted(sizes)}.", "use one batch size.")
    return arrays


def _spec(tf: Any, arr: np.ndarray, name: str) -> Any:
    return tf.TensorSpec((None, *arr.shape[1:]), tf.as_dtype(arr.dtype), name=name)


def _convert_saved_model(
    tf: Any, convert: Any, path: Path, arrays: list[np.ndarray], opset: int
) -> tuple[Any, list[str], Any]:
    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise ModelError(
            f"SavedModel '{path}' has no 'serving_default' signature (has {sorted(loaded.signatures)}).",
            "export it with a serving signature: tf.saved_model.save(model, path, signatures=...).",
        )
    sig = loaded.signatures["serving_default"]
    names = sorted(sig.structured_input_signature[1])
    if len(names) != len(arrays):
        raise DataError(
            f"the SavedModel signature takes {len(names)} input(s) {names}, but {len(arrays)} example "
            "input(s) were given.",
            "pass one example array per signature input, in alphabetical order of the input names.",
        )
    specs = [_spec(tf, a, n) for a, n in zip(arrays, names, strict=True)]

    def call(*args: Any) -> Any:
        return sig(**dict(zip(names, args, strict=True)))

    model_proto, _ = convert.from_function(tf.function(call), input_signature=specs, opset=opset)

    def reference(feed: list[np.ndarray]) -> dict[str, np.ndarray]:
        out = sig(**{n: tf.constant(a) for n, a in zip(names, feed, strict=True)})
        return {k: np.asarray(v.numpy()) for k, v in out.items()}

    return model_proto, names, reference


def _convert_keras(
    tf: Any, convert: Any, path: Path, arrays: list[np.ndarray], opset: int
) -> tuple[Any, list[str], Any]:
    model = tf.keras.models.load_model(str(path), compile=False)
    names = [f"input_{i}" for i in range(len(arrays))] if len(arrays) > 1 else ["input"]
    specs = [_spec(tf, a, n) for a, n in zip(arrays, names, strict=True)]
    if not hasattr(model, "output_names") and hasattr(model, "outputs"):  # Keras 3
        model.output_names = [f"output_{i}" for i in range(len(model.outputs))]
    model_proto, _ = convert.from_keras(model, input_signature=specs, opset=opset)

    def reference(feed: list[np.ndarray]) -> list[np.ndarray]:
        out = model(feed if len(feed) > 1 else feed[0], training=False)
        outs = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o.numpy()) for o in outs]

    return model_proto, names, reference


def export_tf(
    path: Path, out_path: Path, *, example_inputs: Any, opset: int = 17, rtol_sqnr_db: float = 40.0
) -> ImportReport:
    """Convert a SavedModel directory or ``.keras``/``.h5`` file to ONNX and verify it (see module doc)."""
    tf, convert = require_tf()
    start = time.perf_counter()
    src, out_path = Path(path), Path(out_path)
    if not src.exists():
        raise ModelError(f"TensorFlow model '{src}' does not exist.", "check the path.")
    is_saved_model = src.is_dir()
    if not is_saved_model and src.suffix.lower() not in (".keras", ".h5"):
        raise ModelError(
            f"'{src}' is neither a SavedModel directory nor a .keras/.h5 file.",
            "pass the SavedModel directory or a Keras model file.",
        )
    arrays = _as_arrays(example_inputs)
    grown = [second_batch(a, 0, seed=i) for i, a in enumerate(arrays)]
    try:
        with quiet("tf2onnx"):
            if is_saved_model:
                model, names, reference = _convert_saved_model(tf, convert, src, arrays, opset)
            else:
                model, names, reference = _convert_keras(tf, convert, src, arrays, opset)
    except (ModelError, DataError):
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"tf2onnx could not convert '{src}' at opset {opset}: {first}",
            "check the model loads in TensorFlow; try another opset.",
        ) from exc
    graph_out = [o.name for o in model.graph.output]
    feeds = [dict(zip(_onnx_input_names(model, names, src), f, strict=True)) for f in (arrays, grown)]
    got = run_onnx(model, feeds)
    refs = [_ordered(reference(f), graph_out, src) for f in (arrays, grown)]
    diff, sqnr = compare_outputs(refs, got, graph_out, rtol_sqnr_db, f"conversion of '{src}'")
    save_model(model, out_path)
    return ImportReport(
        source=f"tf:{src.name}",
        onnx_path=out_path,
        max_abs_diff=diff,
        sqnr_db=sqnr,
        opset=opset_of(model),
        seconds=time.perf_counter() - start,
    )


def _onnx_input_names(model: Any, names: list[str], src: Path) -> list[str]:
    """The ONNX names of the example inputs: the spec names, or (if tf2onnx renamed them) the graph's
    inputs in order, which tf2onnx keeps in the function's argument order."""
    initializers = {t.name for t in model.graph.initializer}
    graph_in = [i.name for i in model.graph.input if i.name not in initializers]
    if set(graph_in) == set(names):
        return names
    if len(graph_in) == len(names):
        return graph_in
    raise ModelError(
        f"the ONNX model converted from '{src}' has inputs {graph_in}, which do not correspond to the "
        f"{len(names)} example input(s) {names}.",
        "pass one example array per model input.",
    )


def _ordered(
    outputs: dict[str, np.ndarray] | list[np.ndarray], graph_out: Sequence[str], src: Path
) -> list[Any]:
    """Reference outputs in ONNX output order: by name for signatures, by position for Keras."""
    if isinstance(outputs, dict):
        missing = [n for n in graph_out if n not in outputs]
        if missing or len(outputs) != len(graph_out):
            raise ModelError(
                f"the ONNX outputs {list(graph_out)} of '{src}' do not match the signature outputs "
                f"{sorted(outputs)}.",
                "re-export the SavedModel with named signature outputs.",
            )
        return [outputs[n] for n in graph_out]
    if len(outputs) != len(graph_out):
        raise ModelError(
            f"'{src}' returns {len(outputs)} output(s) but the ONNX model has {len(graph_out)}.",
            "return a tensor or a flat list of tensors from the model.",
        )
    return list(outputs)
