"""Import PyTorch models into ONNX, and prove the export numerically.

Flow of :func:`export_torch`:

1. Run the module (``eval()`` mode, ``no_grad``) on the example inputs (batch ``B`` along
   ``batch_axis``) and on a second batch ``B + 2`` made by repeating the example and perturbing the
   extra rows (seeded noise, 1% of the input's std).  Output axes whose size follows the batch are
   the outputs' dynamic axes (so an LSTM's ``h_n``, batch on axis 1, is labelled correctly).
2. Export with ``torch.onnx.export`` into a temporary directory, load the result (and any external
   data the exporter wrote), and run it in ONNX Runtime at both batch sizes.
3. Compare: per output, ``max|y_torch - y_onnx|`` and SQNR = 10·log10(Σy² / Σ(y - ŷ)²).  An output
   fails when SQNR < ``rtol_sqnr_db`` *and* its max abs diff exceeds ``1e-6·max(1, max|y|)`` (an
   all-zero or exactly-matched output has no meaningful SQNR).  A failure is a ModelError naming
   both numbers, and nothing is written.  Otherwise the model is written atomically to ``out_path``
   (``edgequant.model.io.save_model``: temporary file then rename; ``<name>.data`` above 2 GB).
   The report carries the worst max abs diff and the lowest SQNR over all outputs and both sizes.

Exporter choice: the legacy TorchScript-based exporter (``dynamo=False``) is the default.  Tried
on torch 2.13 with Conv/Linear/BatchNorm/ReLU/GELU nets, depthwise separable convs, residual
blocks, LSTM (batch_first True/False) and GRU, both exporters matched PyTorch to ~1e-7, but:

* legacy exports in 0.02-0.4 s per model, dynamo in 1-4 s (plus a few seconds of first import);
* legacy honours ``opset_version=17`` exactly; dynamo has no opset-17 implementations, exports
  opset 18 and tries a down-conversion that silently keeps 18 when it fails (it did for a conv net with BN+GELU);
* legacy accepts ``torch.jit.ScriptModule`` (needed by :func:`load_torchscript`); dynamo traces with
  ``torch.export``, which cannot trace a ScriptModule;
* legacy is quiet apart from ``warnings``; dynamo prints progress lines and logs warnings.

PyTorch deprecates the legacy exporter, so ``exporter="dynamo"`` is available (tested on a conv
net); the report's ``opset`` is always the opset actually written, never the one requested.
Exporter warnings, prints and log records are captured and re-logged at DEBUG level.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers only,
never arbitrary pickled objects.  torch is an optional extra (``edgequant[torch]``) imported lazily.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnx

from edgequant.errors import DataError, DependencyError, ModelError, RecipeError
from edgequant.model.io import load_model, opset_of, save_model
from edgequant.runtime import OrtRuntime
from edgequant.schemes import sqnr_db

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_QUIET_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch._export", "onnxscript", "onnx_ir")
_REF_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class ImportReport:
    """What an import produced and how closely the ONNX model matches the source framework."""

    source: str
    onnx_path: Path
    max_abs_diff: float
    sqnr_db: float
    opset: int
    seconds: float


def require_torch() -> Any:
    """Import torch, or raise the DependencyError that names the extra."""
    try:
        import torch
    except ImportError as exc:
        raise DependencyError.missing("torch", "torch", "Importing a PyTorch model") from exc
    return torch


# ---------------------------------------------------------------- shared with tf_import


def compare_outputs(
    reference: Sequence[Sequence[np.ndarray]],
    candidate: Sequence[Sequence[np.ndarray]],
    output_names: Sequence[str],
    threshold_db: float,
    what: str,
    run_labels: Sequence[str] = ("example inputs", "second batch size"),
) -> tuple[float, float]:
    """(worst max abs diff, lowest SQNR) over runs x outputs; ModelError on a mismatch."""
    worst_diff, worst_sqnr = 0.0, float("inf")
    failures: list[str] = []
    labels = [run_labels[i] if i < len(run_labels) else f"run {i}" for i in range(len(reference))]
    for label, refs, cands in zip(labels, reference, candidate, strict=True):
        for name, ref, got in zip(output_names, refs, cands, strict=True):
            if tuple(ref.shape) != tuple(got.shape):
                raise ModelError(
                    f"{what}: output '{name}' has shape {tuple(got.shape)} in ONNX Runtime but "
                    f"{tuple(ref.shape)} in the source model (on the {label}).",
                    "the export is wrong; check dynamic axes, or export with dynamic_batch=False.",
                )
            r64, g64 = ref.astype(np.float64), got.astype(np.float64)
            odd = ~np.isfinite(r64) | ~np.isfinite(g64)
            if odd.any():  # NaN/inf must match exactly; the numbers are compared on the finite rest
                if not np.array_equal(r64[odd], g64[odd], equal_nan=True):
                    failures.append(f"'{name}' on the {label}: NaN/inf where the source model has none")
                r64, g64 = np.where(odd, 0.0, r64), np.where(odd, 0.0, g64)
            diff = float(np.max(np.abs(r64 - g64))) if r64.size else 0.0
            sqnr = sqnr_db(r64, g64)
            tiny = 1e-6 * max(1.0, float(np.max(np.abs(r64))) if r64.size else 1.0)
            worst_diff = max(worst_diff, diff)
            worst_sqnr = min(worst_sqnr, sqnr)
            if sqnr < threshold_db and diff > tiny:
                failures.append(f"'{name}' on the {label}: SQNR {sqnr:.1f} dB, max abs diff {diff:.3g}")
    if failures:
        raise ModelError(
            f"{what}: ONNX Runtime output does not match the source model (required SQNR >= "
            f"{threshold_db:.1f} dB): {'; '.join(failures[:4])}. Nothing was written.",
            "the graph traced differently from how it runs (data-dependent control flow, randomness, "
            "or an op the exporter translates wrongly); make forward() deterministic and trace-friendly.",
        )
    return worst_diff, worst_sqnr


def run_onnx(model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """Run ``model`` in ONNX Runtime once per feed dict; outputs in graph order."""
    session = OrtRuntime().session(model, what="the exported model")
    try:
        results = []
        for feed in feeds:
            missing = [n for n in session.input_names if n not in feed]
            if missing:
                raise ModelError(
                    f"the exported model expects input(s) {missing}, which the source model was not given "
                    f"(given: {sorted(feed)}).",
                    "pass input_names matching the model's forward() arguments.",
                )
            out = session.run({n: feed[n] for n in session.input_names})
            results.append([out[n] for n in session.output_names])
        return results
    finally:
        session.close()


def second_batch(x: np.ndarray, axis: int, seed: int = 0) -> np.ndarray:
    """``x`` grown from B to B + 2 along ``axis`` by repetition; extra float rows get 1% noise."""
    b = x.shape[axis]
    idx = np.arange(b + 2) % b
    out = np.take(x, idx, axis=axis)
    if np.issubdtype(out.dtype, np.floating):
        rng = np.random.default_rng(seed)
        std = float(np.std(x)) or 1.0
        extra = [slice(None)] * out.ndim
        extra[axis] = slice(b, None)
        noise = rng.standard_normal(out[tuple(extra)].shape) * 0.01 * std
        out[tuple(extra)] = out[tuple(extra)] + noise.astype(out.dtype)
    return out


@contextlib.contextmanager
def quiet(what: str) -> Iterator[None]:
    """Silence exporter prints, warnings and log records; re-log them at DEBUG."""
    buf = io.StringIO()
    saved = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(buf):
            warnings.simplefilter("always")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        for w in caught:
            log.debug("%s warning: %s", what, w.message)
        if buf.getvalue().strip():
            log.debug("%s printed: %s", what, buf.getvalue().strip()[:2000])


# ---------------------------------------------------------------- PyTorch


def _to_numpy_inputs(example_inputs: Any) -> list[np.ndarray]:
    torch = require_torch()
    items = list(example_inputs) if isinstance(example_inputs, (tuple, list)) else [example_inputs]
    if not items:
        raise DataError("example_inputs is empty.", "pass a tensor or a tuple of tensors, one per input.")
    arrays = []
    for i, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            arrays.append(item.detach().cpu().numpy())
        elif isinstance(item, np.ndarray):
            arrays.append(item)
        else:
            raise DataError(
                f"example input {i} is a {type(item).__name__}; only torch.Tensor and numpy arrays are "
                "supported.",
                "pass a tensor or a tuple of tensors, one per forward() argument.",
            )
    return arrays


def _flatten(out: Any, where: str = "output") -> list[np.ndarray]:
    torch = require_torch()
    if isinstance(out, torch.Tensor):
        t = out.detach().cpu()
        return [(t.float() if t.dtype == torch.bfloat16 else t).numpy()]
    if isinstance(out, (tuple, list)):
        return [a for i, o in enumerate(out) for a in _flatten(o, f"{where}[{i}]")]
    raise ModelError(
        f"the module returned {type(out).__name__} at {where}; the ONNX export supports tensors and "
        "(nested) tuples/lists of tensors.",
        "wrap the module so forward() returns a tensor or a tuple of tensors.",
    )


def _run_torch(module: Any, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    torch = require_torch()
    with torch.no_grad():
        return _flatten(module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]))


def _output_axes(small: Sequence[np.ndarray], large: Sequence[np.ndarray], b: int) -> list[dict[int, str]]:
    """Per output, the axes whose size changed with the batch (named 'batch' when equal to it)."""
    axes: list[dict[int, str]] = []
    for i, (s, g) in enumerate(zip(small, large, strict=True)):
        if s.ndim != g.ndim:
            raise ModelError(
                f"output {i} has rank {s.ndim} at batch {b} but rank {g.ndim} at batch {b + 2}.",
                "the model's output rank depends on the batch; export with dynamic_batch=False.",
            )
        axes.append(
            {
                ax: ("batch" if (s.shape[ax], g.shape[ax]) == (b, b + 2) else f"output_{i}_dim{ax}")
                for ax in range(s.ndim)
                if s.shape[ax] != g.shape[ax]
            }
        )
    return axes


def _export(
    torch: Any,
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    names: tuple[list[str], list[str]],
    axes: tuple[list[int], list[dict[int, str]]] | None,
    opset: int,
    exporter: str,
) -> None:
    in_names, out_names = names
    if exporter == "dynamo":
        shapes = None
        if axes is not None:
            batch = torch.export.Dim("batch")
            shapes = tuple({ax: batch} for ax in axes[0])
        torch.onnx.export(
            module, args, str(path), dynamo=True, input_names=in_names, output_names=out_names,
            opset_version=opset, dynamic_shapes=shapes, verbose=False,
        )  # fmt: skip
        return
    dyn = None
    if axes is not None:
        dyn = {n: {ax: "batch"} for n, ax in zip(in_names, axes[0], strict=True)}
        dyn.update({n: a for n, a in zip(out_names, axes[1], strict=True) if a})
    torch.onnx.export(
        module, args, str(path), dynamo=False, input_names=in_names, output_names=out_names,
        opset_version=opset, dynamic_axes=dyn, do_constant_folding=True,
        training=torch.onnx.TrainingMode.EVAL,
    )  # fmt: skip


def export_torch(
    module: torch.nn.Module,
    example_inputs: Any,
    out_path: Path,
    *,
    input_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    opset: int = 17,
    rtol_sqnr_db: float = 40.0,
    batch_axis: int = 0,
    exporter: Literal["torchscript", "dynamo"] = "torchscript",
) -> ImportReport:
    """Export ``module`` to ONNX at ``out_path`` and verify it in ONNX Runtime (see module doc).

    ``batch_axis`` is the batch axis of every input (1 for a time-major RNN); with
    ``dynamic_batch`` it becomes a symbolic ``batch`` dimension, checked at two batch sizes.
    """
    torch = require_torch()
    start = time.perf_counter()
    out_path = Path(out_path)
    if exporter not in ("torchscript", "dynamo"):
        raise RecipeError(f"exporter '{exporter}' is unknown.", "use 'torchscript' or 'dynamo'.")
    if not isinstance(module, torch.nn.Module):
        raise ModelError(
            f"expected a torch.nn.Module, got {type(module).__name__}.",
            "pass the model object; use load_factory() or load_torchscript() to build one from files.",
        )
    arrays = _to_numpy_inputs(example_inputs)
    in_names = list(input_names) if input_names is not None else _default_names("input", len(arrays))
    if len(in_names) != len(arrays) or len(set(in_names)) != len(in_names):
        raise DataError(
            f"input_names {in_names} must be {len(arrays)} distinct name(s), one per example input.",
            "pass one unique name per example input, in forward() argument order.",
        )
    in_axes: list[int] = []
    for name, a in zip(in_names, arrays, strict=True):
        ax = batch_axis if batch_axis >= 0 else a.ndim + batch_axis
        if dynamic_batch and not 0 <= ax < a.ndim:
            raise DataError(
                f"example input '{name}' has shape {a.shape}, which has no batch axis {batch_axis}.",
                "pass batched example inputs, set batch_axis, or export with dynamic_batch=False.",
            )
        in_axes.append(ax)
    was_training = module.training
    module.eval()
    try:
        feeds = [arrays]
        refs = [_run_torch(module, arrays)]
        axes = None
        if dynamic_batch:
            sizes = {a.shape[ax] for a, ax in zip(arrays, in_axes, strict=True)}
            if len(sizes) != 1:
                raise DataError(
                    f"example inputs disagree on the batch size along axis {batch_axis}: {sorted(sizes)}.",
                    "give every input the same batch size, or export with dynamic_batch=False.",
                )
            b = sizes.pop()
            grown = [
                second_batch(a, ax, seed=i) for i, (a, ax) in enumerate(zip(arrays, in_axes, strict=True))
            ]
            try:
                refs.append(_run_torch(module, grown))
            except Exception as exc:
                raise ModelError(
                    f"the module fails at batch {b + 2} (example batch {b}): {_first_line(exc)}.",
                    "the model has a fixed batch size; export with dynamic_batch=False.",
                ) from exc
            feeds.append(grown)
            axes = (list(in_axes), _output_axes(refs[0], refs[1], b))
        out_names = _default_names("output", len(refs[0]))
        args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
        with tempfile.TemporaryDirectory(prefix="edgequant-export-") as tmp:
            tmp_model = Path(tmp) / "model.onnx"
            try:
                with quiet("torch.onnx.export"):
                    _export(torch, module, args, tmp_model, (in_names, out_names), axes, opset, exporter)
            except Exception as exc:
                raise ModelError(
                    f"torch.onnx.export ({exporter} exporter, opset {opset}) failed for "
                    f"{type(module).__name__}: {_first_line(exc)}",
                    "check the model traces with example inputs; try the other exporter "
                    "(exporter='dynamo' or 'torchscript') or another opset.",
                ) from exc
            model = load_model(tmp_model)
        if len(model.graph.output) != len(out_names):
            raise ModelError(
                f"the exported graph has {len(model.graph.output)} outputs but the module returned "
                f"{len(out_names)} tensors.",
                "return a flat tuple of tensors from forward() (no None, no constants).",
            )
        feed_dicts = [dict(zip(in_names, f, strict=True)) for f in feeds]
        got = run_onnx(model, feed_dicts)
        graph_out = [o.name for o in model.graph.output]
        diff, sqnr = compare_outputs(refs, got, graph_out, rtol_sqnr_db, f"export of {type(module).__name__}")
        save_model(model, out_path)
    finally:
        module.train(was_training)
    return ImportReport(
        source=f"torch:{type(module).__name__}",
        onnx_path=out_path,
        max_abs_diff=diff,
        sqnr_db=sqnr,
        opset=opset_of(model),
        seconds=time.perf_counter() - start,
    )


def _default_names(prefix: str, n: int) -> list[str]:
    return [prefix] if n == 1 else [f"{prefix}_{i}" for i in range(n)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:400] if text else type(exc).__name__).rstrip(".")


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load a TorchScript archive on CPU (export it with :func:`export_torch`)."""
    torch = require_torch()
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"TorchScript file '{p}' does not exist.", "check the path.")
    try:
        with quiet("torch.jit.load"):
            return torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:
        raise ModelError(
            f"'{p}' is not a loadable TorchScript archive: {_first_line(exc)}.",
            "save it with torch.jit.save(torch.jit.script(model), path); a state_dict checkpoint needs "
            "load_factory('package.module:factory', checkpoint).",
        ) from exc


def load_state_dict(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: a state_dict, or {"state_dict"|"model": state_dict}."""
    torch = require_torch()
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint '{p}' does not exist.", "check the path.")
    resave = "re-save it as a state_dict: torch.save(model.state_dict(), path)."
    try:
        with quiet("torch.load"):
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        import pickle

        if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
            raise ModelError(
                f"checkpoint '{p}' holds pickled Python objects (such as a whole nn.Module), which "
                "weights_only loading refuses: unpickling can run arbitrary code, so EdgeQuant never does it.",
                f"in a trusted environment, load it yourself and {resave}",
            ) from exc
        raise ModelError(f"cannot read checkpoint '{p}': {_first_line(exc)}.", resave) from exc
    state = obj
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        for key in ("state_dict", "model"):
            if key in obj and _is_state_dict(obj[key]):
                state = obj[key]
                break
    if not isinstance(state, Mapping) or not _is_state_dict(state):
        keys = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else []
        raise ModelError(
            f"checkpoint '{p}' holds a {type(obj).__name__} (keys {keys}), not a state_dict and not a dict "
            "with a 'state_dict' or 'model' entry holding one.",
            resave,
        )
    return dict(state)


def _is_state_dict(obj: Any) -> bool:
    torch = require_torch()
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def load_factory(ref: str, checkpoint: Path | None) -> torch.nn.Module:
    """Build a module from ``"package.module:factory"`` (called with no arguments), load weights strictly."""
    torch = require_torch()
    if not _REF_RE.match(ref):
        raise ModelError(
            f"model reference '{ref}' is not of the form 'package.module:factory'.",
            "name an importable module and a function in it, e.g. 'mypkg.models:build_net'.",
        )
    mod_name, func_name = ref.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:
        raise ModelError(
            f"cannot import module '{mod_name}' for '{ref}': {_first_line(exc)}.",
            "install the package or add its directory to PYTHONPATH.",
        ) from exc
    factory: Callable[[], Any] | None = getattr(mod, func_name, None)
    if not callable(factory):
        raise ModelError(f"module '{mod_name}' has no callable '{func_name}'.", "check the name after ':'.")
    try:
        model = factory()
    except Exception as exc:
        raise ModelError(
            f"'{ref}()' raised {type(exc).__name__}: {_first_line(exc)}.",
            "the factory must build the model with no arguments.",
        ) from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelError(
            f"'{ref}()' returned {type(model).__name__}, not a torch.nn.Module.", "fix the factory."
        )
    if checkpoint is None:
        return model
    state = load_state_dict(Path(checkpoint))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even with strict=False
        raise ModelError(
            f"checkpoint '{checkpoint}' does not fit '{ref}()': {' '.join(str(exc).split())[:500]}.",
            "use the factory that matches the checkpoint's architecture.",
        ) from exc
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        hint = "use the checkpoint saved from this architecture."
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = "the checkpoint was saved from a DataParallel wrapper; strip the 'module.' key prefix."
        raise ModelError(
            f"checkpoint '{checkpoint}' does not match '{ref}()': {len(missing)} missing key(s) "
            f"{missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}.",
            hint,
        )
    return model


def parse_input_shapes(spec: str) -> list[tuple[int, ...]]:
    """Parse ``"1x3x32x32,1x10"`` into ``[(1, 3, 32, 32), (1, 10)]`` (positive ints only)."""
    shapes: list[tuple[int, ...]] = []
    parts = [p.strip() for p in spec.split(",")] if spec.strip() else []
    for part in parts:
        dims = [d.strip() for d in part.lower().split("x")]
        if not part or not all(d.isdigit() and int(d) > 0 for d in dims):
            raise RecipeError(
                f"input shape '{part}' in '{spec}' is not a list of positive integers joined by 'x'.",
                "write shapes like '1x3x32x32', several separated by commas: '1x3x32x32,1x10'.",
            )
        shapes.append(tuple(int(d) for d in dims))
    if not shapes:
        raise RecipeError(
            "no input shape given.", "write shapes like '1x3x32x32' (comma-separated for several)."
        )
    return shapes
