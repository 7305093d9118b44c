"""Import TensorFlow / Keras models into ONNX via tf2onnx, and prove the conversion numerically.

Sources (:func:`export_tf`): a SavedModel directory (signature ``serving_default``), a ``.keras`` or
``.h5`` file (``keras.models.load_model``), or an in-memory Keras model.  tensorflow and tf2onnx are
the optional extra ``edgequant[tf]``, imported lazily; when missing, a DependencyError names it.

Flow, the same contract as ``export_torch``:

1. Wrap the model in one ``tf.function`` that takes the inputs positionally and returns a dict
   ``{output name: tensor}`` (Keras: ``model(x, training=False)``; SavedModel: the signature).
   tf2onnx names the ONNX inputs after the TensorSpecs and the outputs after the dict keys.
2. Input specs come from the model's declared inputs (unknown dims stay dynamic, e.g. the batch or a
   sequence length); a model without declared inputs (a subclassed Keras model) gets
   ``(None, *example.shape[1:])``.  Layouts are kept: an NHWC Keras model gives an NHWC ONNX input
   (tf2onnx inserts the Transposes inside the graph), so calibration data stays in the model's layout.
3. Convert with ``tf2onnx.convert.from_function`` at ``opset``.  ``from_keras`` is not used: with
   Keras 3 (TF >= 2.16) it fails (``KeyError: 'keras_tensor_N'``, tf2onnx 1.17 + TF 2.21).
4. Run TensorFlow and ONNX Runtime on the example inputs and, when the batch axis is dynamic, on a
   second batch ``B + 2`` (repeated rows, seeded 1% noise), and compare each output with
   :func:`edgequant.model.verify.verify_onnx`: max abs diff and SQNR = 10·log10(Σy² / Σ(y - ŷ)²).
   Below ``rtol_sqnr_db`` (and not within 1e-6 relative) is a ModelError with both numbers and
   nothing is written; otherwise the model is written atomically to ``out_path``.

Names: Keras inputs keep their ``keras.Input(name=...)``; Keras's automatic names (``keras_tensor_N``,
``input_layer_N``) become ``input`` / ``input_<i>``.  Keras outputs are named after
``model.output_names`` when unique, else ``output`` / ``output_<i>``, in the model's output order.
SavedModel inputs and outputs keep the signature's keys, both in alphabetical order (a signature is
unordered); several example inputs are taken in that order, or from a dict ``{name: array}``.

Without ``example_inputs``, examples are drawn from the declared input specs (seeded): batch 2 where
the batch is dynamic, standard normal floats, integers in {0, 1}, random booleans.  A declared
unknown non-batch dim then needs explicit ``example_inputs`` (a DataError says so).

TensorFlow's C++ start-up logging is lowered with ``TF_CPP_MIN_LOG_LEVEL=2`` (set only if unset,
and only when this module imports tensorflow itself).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.errors import DataError, DependencyError, ModelError
from edgequant.model.io import opset_of, save_model
from edgequant.model.verify import ImportReport, first_line, quiet, second_batch, verify_onnx

TF_SUFFIXES = (".keras", ".h5", ".hdf5")
_TF_MODULES = ("keras", "tensorflow", "tf_keras")
_AUTO_NAME = re.compile(r"^(keras_tensor|input_layer)(_\d+)?$")
_TF_LOGGERS = ("tf2onnx", "tensorflow", "absl", "keras")


def require_tf() -> tuple[Any, Any]:
    """Import (tensorflow, tf2onnx.convert), or raise the DependencyError that names the extra."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise DependencyError.missing("tensorflow", "tf", "Importing a TensorFlow model") from exc
    try:
        import tf2onnx.convert as tf2onnx_convert
    except ImportError as exc:
        raise DependencyError.missing("tf2onnx", "tf", "Importing a TensorFlow model") from exc
    return tf, tf2onnx_convert


def is_tf_path(path: str | Path) -> bool:
    """True for a ``.keras``/``.h5``/``.hdf5`` file or a SavedModel directory (no TF import)."""
    p = Path(path)
    if p.is_dir():
        return (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file()
    return p.suffix.lower() in TF_SUFFIXES


def is_tf_model(obj: Any) -> bool:
    """True for a Keras model / TF object, judged by its classes' modules (no TF import)."""
    return any(str(c.__module__).split(".")[0] in _TF_MODULES for c in type(obj).__mro__)


@dataclass
class _Source:
    """A TF model as one callable: positional inputs in ``in_names`` order -> {output name: tensor}."""

    fn: Callable[..., dict[str, Any]]
    in_names: list[str]
    declared: list[tuple[tuple[int | None, ...], np.dtype[Any]]] | None
    label: str
    owner: Any  # keeps a loaded SavedModel (and its variables) alive while ``fn`` is used


def _keras_source(model: Any, label: str) -> _Source:
    inputs = getattr(model, "inputs", None)
    declared = None
    if inputs:
        declared = [(tuple(t.shape), np.dtype(str(t.dtype))) for t in inputs]
        raw = [str(t.name) for t in inputs]
        names = raw if not any(_AUTO_NAME.match(n) for n in raw) and len(set(raw)) == len(raw) else []
        in_names = names or _default_names("input", len(inputs))
    else:
        in_names = []  # a subclassed model: one input per example array, named when they are known
    outputs = getattr(model, "outputs", None)
    out_names: list[str] | None = None
    if outputs:
        given = list(getattr(model, "output_names", None) or [])
        ok = (
            len(given) == len(outputs)
            and len(set(given)) == len(given)
            and all(isinstance(n, str) for n in given)
        )
        out_names = given if ok else _default_names("output", len(outputs))

    def fn(*xs: Any) -> dict[str, Any]:
        out = model(list(xs) if len(xs) > 1 else xs[0], training=False)
        if isinstance(out, Mapping):
            return {str(k): v for k, v in out.items()}
        flat = list(out) if isinstance(out, (list, tuple)) else [out]
        names = (
            out_names if out_names and len(out_names) == len(flat) else _default_names("output", len(flat))
        )
        return dict(zip(names, flat, strict=True))

    return _Source(fn, in_names, declared, label, model)


def _saved_model_source(tf: Any, path: Path) -> _Source:
    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise ModelError(
            f"SavedModel '{path}' has no 'serving_default' signature (it has {sorted(loaded.signatures)}).",
            "export it with a serving signature: model.export(dir) for Keras, or "
            "tf.saved_model.save(module, dir, signatures=...).",
        )
    sig = loaded.signatures["serving_default"]
    specs = sig.structured_input_signature[1]
    names = sorted(specs)
    declared = [(tuple(specs[n].shape), np.dtype(specs[n].dtype.as_numpy_dtype)) for n in names]

    def fn(*xs: Any) -> dict[str, Any]:
        return dict(sorted(sig(**dict(zip(names, xs, strict=True))).items()))

    return _Source(fn, names, declared, path.name, loaded)


def _load(tf: Any, model: Any) -> _Source:
    if not isinstance(model, (str, Path)):
        if not is_tf_model(model) or not callable(model):
            raise ModelError(
                f"expected a Keras model, a SavedModel directory or a .keras/.h5 file, got "
                f"{type(model).__name__}.",
                "pass the keras.Model object or the path it was saved to.",
            )
        return _keras_source(model, str(getattr(model, "name", "") or type(model).__name__))
    src = Path(model)
    if not src.exists():
        raise ModelError(f"TensorFlow model '{src}' does not exist.", "check the path.")
    if src.is_dir():
        if not is_tf_path(src):
            raise ModelError(
                f"directory '{src}' holds no saved_model.pb, so it is not a SavedModel.",
                "pass the directory written by model.export(dir) or tf.saved_model.save().",
            )
        return _saved_model_source(tf, src)
    if src.suffix.lower() not in TF_SUFFIXES:
        raise ModelError(
            f"'{src}' is neither a SavedModel directory nor a {'/'.join(TF_SUFFIXES)} file.",
            "pass the SavedModel directory or a Keras model file.",
        )
    keras_model = tf.keras.models.load_model(str(src), compile=False)
    return _keras_source(keras_model, src.stem)


def _show(shape: Sequence[int | None]) -> str:
    """``(None, 16, 16, 3)`` -> ``(?, 16, 16, 3)``."""
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _default_names(prefix: str, n: int) -> list[str]:
    return [prefix] if n == 1 else [f"{prefix}_{i}" for i in range(n)]


def _example_arrays(example_inputs: Any, source: _Source, seed: int) -> list[np.ndarray]:
    """Example arrays in ``source.in_names`` order (drawn from the declared specs when not given)."""
    if example_inputs is None:
        return _draw_examples(source, seed)
    if isinstance(example_inputs, Mapping):
        given = sorted(map(str, example_inputs))
        if not source.in_names or given != sorted(source.in_names):
            raise DataError(
                f"example_inputs has keys {given}, but the model's inputs are {source.in_names or 'unnamed'}.",
                "key the dict by the model's input names, or pass a list of arrays in input order.",
            )
        items = [example_inputs[n] for n in source.in_names]
    else:
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
    if not source.in_names:
        source.in_names = _default_names("input", len(arrays))
    if len(arrays) != len(source.in_names):
        raise DataError(
            f"the model takes {len(source.in_names)} input(s) {source.in_names}, but {len(arrays)} example "
            "input(s) were given.",
            "pass one example array per model input (SavedModel inputs in alphabetical order of their names).",
        )
    if source.declared is not None:
        arrays = [
            _fit(a, n, shape, dt)
            for a, n, (shape, dt) in zip(arrays, source.in_names, source.declared, strict=True)
        ]
    return arrays


def _fit(arr: np.ndarray, name: str, shape: tuple[int | None, ...], dtype: np.dtype[Any]) -> np.ndarray:
    """Check an example against a declared input; floats cast to the declared float type (same for ints)."""
    fixed = [(ax, d) for ax, d in enumerate(shape) if d is not None]
    if arr.ndim != len(shape) or any(arr.shape[ax] != d for ax, d in fixed):
        raise DataError(
            f"example input '{name}' has shape {arr.shape}, but the model declares "
            f"{_show(shape)} (? = any size).",
            "pass an example in the model's own layout (e.g. NHWC for a Keras conv net).",
        )
    if arr.dtype == dtype:
        return arr
    for kind in (np.floating, np.integer):
        if np.issubdtype(arr.dtype, kind) and np.issubdtype(dtype, kind):
            return arr.astype(dtype)
    raise DataError(
        f"example input '{name}' is {arr.dtype}, but the model declares {dtype}.",
        f"pass a {dtype} array.",
    )


def _draw_examples(source: _Source, seed: int) -> list[np.ndarray]:
    if source.declared is None:
        raise DataError(
            f"the Keras model '{source.label}' declares no inputs (a subclassed model that was never built "
            "on a keras.Input), so example inputs cannot be drawn.",
            "pass example_inputs (arrays in the model's own layout).",
        )
    rng = np.random.default_rng(seed)
    arrays = []
    for name, (shape, dtype) in zip(source.in_names, source.declared, strict=True):
        unknown = [ax for ax, d in enumerate(shape) if d is None and ax > 0]
        if unknown:
            raise DataError(
                f"input '{name}' of '{source.label}' has shape {_show(shape)}: "
                f"axes {unknown} have no fixed size, so no example can be drawn.",
                "pass example_inputs with concrete shapes (Python API: edgequant.quantize(..., example_inputs=x)).",
            )
        full = tuple(2 if d is None else d for d in shape)
        if np.issubdtype(dtype, np.floating):
            arrays.append(rng.standard_normal(full).astype(dtype))
        elif dtype == np.bool_:
            arrays.append(rng.random(full) < 0.5)
        else:
            arrays.append(rng.integers(0, 2, size=full).astype(dtype))
    return arrays


@contextmanager
def _quiet_tf() -> Iterator[None]:
    """``verify.quiet`` plus TF's, Keras's and tf2onnx's loggers lowered to ERROR for the duration."""
    saved = {n: logging.getLogger(n).level for n in _TF_LOGGERS}
    for n in _TF_LOGGERS:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with quiet("tf2onnx"):
            yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def export_tf(
    model: Any,
    out_path: Path,
    *,
    example_inputs: Any = None,
    opset: int = 17,
    rtol_sqnr_db: float = 40.0,
    seed: int = 0,
) -> ImportReport:
    """Convert a SavedModel dir, a ``.keras``/``.h5`` file or a Keras model to ONNX and verify it.

    ``example_inputs``: an array, a list of arrays (model input order), or a dict {input name: array},
    in the model's own layout; drawn from the declared input specs with ``seed`` when omitted.
    """
    tf, convert = require_tf()
    start = time.perf_counter()
    out_path = Path(out_path)
    with _quiet_tf():
        try:
            source = _load(tf, model)
        except (ModelError, DataError):
            raise
        except Exception as exc:
            raise ModelError(
                f"TensorFlow cannot load '{model}': {first_line(exc)}.",
                "check the file loads with keras.models.load_model / tf.saved_model.load in this TF version.",
            ) from exc
    arrays = _example_arrays(example_inputs, source, seed)
    dynamic = source.declared is None or all(shape[0] is None for shape, _ in source.declared)
    feeds = [arrays]
    if dynamic:
        feeds.append([second_batch(a, 0, seed=seed + i) for i, a in enumerate(arrays)])
    shapes = [d[0] for d in source.declared] if source.declared else [(None, *a.shape[1:]) for a in arrays]
    specs = [
        tf.TensorSpec(shape, tf.as_dtype(a.dtype), name=n)
        for a, n, shape in zip(arrays, source.in_names, shapes, strict=True)
    ]
    what = f"conversion of '{source.label}'"
    refs = []
    for label, feed in zip(("example inputs", "second batch size"), feeds, strict=False):
        try:
            with _quiet_tf():
                refs.append(source.fn(*[tf.constant(a) for a in feed]))
        except Exception as exc:
            raise ModelError(
                f"'{source.label}' fails in TensorFlow on the {label} (shapes "
                f"{[a.shape for a in feed]}): {first_line(exc)}.",
                "pass example inputs the model accepts, in its own layout (e.g. NHWC).",
            ) from exc
    try:
        with _quiet_tf():
            onnx_model, _ = convert.from_function(tf.function(source.fn), input_signature=specs, opset=opset)
    except Exception as exc:
        raise ModelError(
            f"tf2onnx could not convert '{source.label}' at opset {opset}: {first_line(exc)}.",
            "check the model runs in TensorFlow on the example inputs; try another opset.",
        ) from exc
    _order_outputs(onnx_model, list(refs[0]), what)
    graph_out = [o.name for o in onnx_model.graph.output]
    in_names = _onnx_input_names(onnx_model, source.in_names, what)
    feed_dicts = [dict(zip(in_names, f, strict=True)) for f in feeds]
    ref_lists = [[np.asarray(r[n].numpy()) for n in graph_out] for r in refs]
    diff, sqnr = verify_onnx(onnx_model, feed_dicts, ref_lists, threshold_db=rtol_sqnr_db, what=what)
    save_model(onnx_model, out_path)
    return ImportReport(
        source=f"tf:{source.label}",
        onnx_path=out_path,
        max_abs_diff=diff,
        sqnr_db=sqnr,
        opset=opset_of(onnx_model),
        seconds=time.perf_counter() - start,
    )


def _order_outputs(model: Any, order: Sequence[str], what: str) -> None:
    """Put the graph outputs in the source model's order (tf2onnx sorts them by name)."""
    by_name = {o.name: o for o in model.graph.output}
    if sorted(by_name) != sorted(order):
        raise ModelError(
            f"{what}: the ONNX outputs {sorted(by_name)} do not match the model's outputs {list(order)}.",
            "return a tensor, a flat list of tensors or a dict of tensors from the model.",
        )
    ordered = [by_name[n] for n in order]
    copies = [type(o)() for o in ordered]
    for copy, o in zip(copies, ordered, strict=True):
        copy.CopyFrom(o)
    del model.graph.output[:]
    model.graph.output.extend(copies)


def _onnx_input_names(model: Any, names: list[str], what: str) -> list[str]:
    """The ONNX names of the example inputs: tf2onnx names them after the TensorSpecs."""
    initializers = {t.name for t in model.graph.initializer}
    graph_in = [i.name for i in model.graph.input if i.name not in initializers]
    if sorted(graph_in) != sorted(names):
        raise ModelError(
            f"{what}: the ONNX model has inputs {graph_in}, which do not correspond to the model's "
            f"input(s) {names}.",
            "please report this with the model; pass one example array per model input meanwhile.",
        )
    return names
