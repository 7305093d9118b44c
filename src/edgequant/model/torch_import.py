"""Export PyTorch models to ONNX, and prove the export numerically (``edgequant.model.verify``).

Flow of :func:`export_torch`:

1. Run the module (``eval()`` mode, ``no_grad``) on the example inputs (batch ``B`` along
   ``batch_axis``) and on a second batch ``B + 2`` made by repeating the example and perturbing the
   extra rows (seeded noise, 1% of the input's std).  Output axes whose size follows the batch are
   the outputs' dynamic axes (so an LSTM's ``h_n``, batch on axis 1, is labelled correctly).
2. Export with ``torch.onnx.export`` into a temporary directory, load the result (and any external
   data the exporter wrote), and run it in ONNX Runtime at both batch sizes.
3. Compare with :func:`edgequant.model.verify.verify_and_save`: per output, ``max|y_torch - y_onnx|``
   and SQNR = 10·log10(Σy² / Σ(y - ŷ)²).  An output fails when SQNR < ``rtol_sqnr_db`` *and* its
   max abs diff exceeds ``1e-6·max(1, max|y|)`` (an all-zero or exactly-matched output has no
   meaningful SQNR).  A failure is a ModelError naming both numbers, and nothing is written.
   Otherwise the model is written atomically to ``out_path`` (``edgequant.model.io.save_model``:
   temporary file then rename; ``<name>.data`` above 2 GB).  The report carries the worst max abs
   diff and the lowest SQNR over all outputs and both sizes.

Exporter choice: the legacy TorchScript-based exporter (``dynamo=False``) is the default.  Tried
on torch 2.13 with Conv/Linear/BatchNorm/ReLU/GELU nets, depthwise separable convs, residual
blocks, LSTM (batch_first True/False) and GRU, both exporters matched PyTorch to ~1e-7, but:

* legacy exports in 0.02-0.4 s per model, dynamo in 1-4 s (plus a few seconds of first import);
* legacy honours ``opset_version=17`` exactly; dynamo has no opset-17 implementations, exports
  opset 18 and tries a down-conversion that silently keeps 18 when it fails (it did for a conv net with BN+GELU);
* legacy accepts ``torch.jit.ScriptModule`` (needed by ``load_torchscript``); dynamo traces with
  ``torch.export``, which cannot trace a ScriptModule;
* legacy is quiet apart from ``warnings``; dynamo prints progress lines and logs warnings.

PyTorch deprecates the legacy exporter, so ``exporter="dynamo"`` is available (tested on a conv
net); the report's ``opset`` is always the opset actually written, never the one requested.
Exporter warnings, prints and log records are captured and re-logged at DEBUG level.

Building a module from files (``load_factory``, ``load_state_dict``, ``load_torchscript``) lives in
``edgequant.model.checkpoint``; the numeric check (``verify_onnx``, ``compare_outputs``,
``ImportReport``) in ``edgequant.model.verify``.  Both are re-exported here for existing callers.
torch is an optional extra (``edgequant[torch]``) imported lazily.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edgequant.errors import DataError, ModelError, RecipeError
from edgequant.model.checkpoint import load_factory, load_state_dict, load_torchscript, require_torch
from edgequant.model.io import load_model
from edgequant.model.verify import (
    ImportReport,
    compare_outputs,
    first_line,
    quiet,
    run_onnx,
    second_batch,
    verify_and_save,
)

if TYPE_CHECKING:
    import torch

# Re-exported for callers that import them from here (cli.py, service/worker.py, code written before the
# split): everything except export_torch and parse_input_shapes lives in model/checkpoint.py or verify.py.
__all__ = [
    "ImportReport",
    "compare_outputs",
    "export_torch",
    "load_factory",
    "load_state_dict",
    "load_torchscript",
    "parse_input_shapes",
    "quiet",
    "require_torch",
    "run_onnx",
    "second_batch",
]


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
    extra: dict[str, list[int]] | None = None,
) -> None:
    in_names, out_names = names
    extra = extra or {}
    if exporter == "dynamo":
        shapes = None
        if axes is not None:
            batch = torch.export.Dim("batch")
            shapes = tuple(
                {ax: batch, **{e: torch.export.Dim(f"{n}_dim{e}") for e in extra.get(n, [])}}
                for n, ax in zip(in_names, axes[0], strict=True)
            )
        torch.onnx.export(
            module, args, str(path), dynamo=True, input_names=in_names, output_names=out_names,
            opset_version=opset, dynamic_shapes=shapes, verbose=False,
        )  # fmt: skip
        return
    dyn = None
    if axes is not None:
        dyn = {
            n: {ax: "batch", **{e: f"{n}_dim{e}" for e in extra.get(n, [])}}
            for n, ax in zip(in_names, axes[0], strict=True)
        }
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
    dynamic_axes: dict[str, list[int]] | None = None,
) -> ImportReport:
    """Export ``module`` to ONNX at ``out_path`` and verify it in ONNX Runtime (see module doc).

    ``batch_axis`` is the batch axis of every input (1 for a time-major RNN); with
    ``dynamic_batch`` it becomes a symbolic ``batch`` dimension, checked at two batch sizes.
    ``dynamic_axes`` ``{input name: [axis, ...]}`` (``--dynamic-axis input:1``) makes more axes
    symbolic (``<name>_dim<axis>``, e.g. a sequence length); the check's second run then also grows
    each of them by 2, so the export is verified at two lengths.
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
    extra = {k: sorted(set(v)) for k, v in (dynamic_axes or {}).items()}
    unknown = sorted(set(extra) - set(in_names))
    if unknown:
        raise RecipeError(
            f"--dynamic-axis names input(s) {unknown}; the model's inputs are {in_names}.",
            "write --dynamic-axis INPUT:AXIS with one of those names.",
        )
    if extra and not dynamic_batch:
        raise RecipeError(
            "dynamic axes need the two-size export check, which dynamic_batch=False switches off.",
            "export with dynamic_batch=True.",
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
            for i, name in enumerate(in_names):
                for e in extra.get(name, []):
                    if not 0 <= e < grown[i].ndim or e == in_axes[i]:
                        raise RecipeError(
                            f"--dynamic-axis {name}:{e}: input '{name}' has shape {arrays[i].shape} "
                            f"(axis {in_axes[i]} is the batch).",
                            f"name another axis between 0 and {arrays[i].ndim - 1}.",
                        )
                    grown[i] = second_batch(grown[i], e, seed=100 + i)
            try:
                refs.append(_run_torch(module, grown))
            except Exception as exc:
                raise ModelError(
                    f"the module fails at batch {b + 2} (example batch {b}): {first_line(exc)}.",
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
                    _export(
                        torch, module, args, tmp_model, (in_names, out_names), axes, opset, exporter, extra
                    )
            except Exception as exc:
                raise ModelError(
                    f"torch.onnx.export ({exporter} exporter, opset {opset}) failed for "
                    f"{type(module).__name__}: {first_line(exc)}",
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
        name = type(module).__name__
        return verify_and_save(
            model, feed_dicts, refs, out_path,
            source=f"torch:{name}", threshold_db=rtol_sqnr_db, what=f"export of {name}", started=start,
        )  # fmt: skip
    finally:
        module.train(was_training)


def _default_names(prefix: str, n: int) -> list[str]:
    return [prefix] if n == 1 else [f"{prefix}_{i}" for i in range(n)]


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
