"""The caller's arguments -> a Recipe and an ONNX model (the first step of ``pipeline.quantize``).

A recipe comes as a Recipe, a dict, a preset name or a YAML path, with keyword overrides on top; a
model as an ONNX path or ModelProto, a PyTorch module (exported with its example inputs and checked
against the export) or a Keras model / SavedModel.  ONNX Runtime must load the model before any work.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgequant.errors import DataError, InferenceError, ModelError, RecipeError, UnsupportedError
from edgequant.model import load_model
from edgequant.recipe import PRESETS, Recipe, from_dict, preset, to_dict
from edgequant.recipe.applies import normalized_keys, refuse_ignored
from edgequant.recipe.presets import without_disabled
from edgequant.recipe.serialize import from_file_data, read_recipe
from edgequant.runtime import OrtRuntime

ModelLike = str | Path | onnx.ModelProto | Any


def resolve_recipe(
    recipe: Recipe | dict[str, Any] | str | Path | None,
    overrides: dict[str, Any],
    notes: list[str] | None = None,
) -> Recipe:
    """The Recipe of ``recipe`` with ``overrides`` on top.  The options the user gave (``overrides``'
    keys, a YAML file's keys) must be read by the method (``recipe.applies``): RecipeError otherwise;
    a preset's own keys, a dict's and a Recipe's are not checked that way (their values are)."""
    given = normalized_keys(overrides)
    if recipe is None:
        base: dict[str, Any] = {}
    elif isinstance(recipe, Recipe):
        base = to_dict(recipe)
    elif isinstance(recipe, dict):
        base = dict(recipe)
    elif isinstance(recipe, str) and recipe in PRESETS and not Path(recipe).exists():
        resolved = preset(recipe, **overrides)  # quantize(model, data, "int8-static"): the preset sees them
        refuse_ignored(resolved, given)
        return resolved
    elif isinstance(recipe, str) and not Path(recipe).suffix and not Path(recipe).exists():
        raise RecipeError(
            f"'{recipe}' is neither a recipe file nor a preset; presets: {', '.join(PRESETS)}.",
            "pass a preset name from the list, or the path of a YAML recipe.",
        )
    else:
        data = read_recipe(recipe, notes)
        given |= normalized_keys(data)
        base = to_dict(from_file_data(data, recipe))
    resolved = from_dict(without_disabled({**base, **overrides}, overrides))
    refuse_ignored(resolved, given)
    return resolved


def require_recipe_calib_data(recipe: Recipe, recipe_arg: Any, overrides: dict[str, Any], data: Any) -> None:
    """Before any work: the ``calib_data`` of a recipe *file*, when it is the data used (no ``data``, no
    ``calib_data`` override), must exist.  A relative path there is read from the current directory, as a
    flag's is (``examples/recipe.yaml`` names ``examples/shapes_calib.npz``, run from the repository), not
    from the recipe's folder; the DataError names the key, the file and the directory, and the path beside
    the recipe when that one exists."""
    if data is not None or "calib_data" in normalized_keys(overrides) or recipe.calib_data is None:
        return
    if not isinstance(recipe_arg, str | Path) or not Path(recipe_arg).is_file():
        return
    given = Path(recipe.calib_data)
    if given.exists():
        return
    where = (
        ""
        if given.is_absolute()
        else f" (relative to the current directory {Path.cwd()}, not to the recipe's)"
    )
    beside = Path(recipe_arg).parent / given
    raise DataError(
        f"calib_data '{given}' in recipe file '{recipe_arg}' does not exist{where}.",
        f"correct calib_data in '{recipe_arg}'"
        + (
            f" (the file beside the recipe is '{beside}': write that path)."
            if not given.is_absolute() and beside.exists()
            else " (an absolute path, or one relative to the directory you run edgequant from)."
        ),
    )


def require_pass_data(recipe: Recipe, recipe_arg: Any, overrides: dict[str, Any], data: Any) -> None:
    """Before any work: a pass that learns from real calibration inputs (``rules.DATA_PASSES``) with no
    data (``data`` None and no ``recipe.calib_data``) is refused, naming the preset that added it when
    ``recipe_arg`` is a preset name and ``overrides`` do not list ``algorithms`` (DataError)."""
    from edgequant.recipe.rules import check_pass_data

    named = isinstance(recipe_arg, str) and recipe_arg in PRESETS and "algorithms" not in overrides
    check_pass_data(recipe, data is not None or recipe.calib_data is not None, recipe_arg if named else None)


def load_input_model(
    model: ModelLike, example_inputs: Any = None, dynamic_axes: dict[str, list[int]] | None = None
) -> tuple[onnx.ModelProto, str, dict[str, Any] | None]:
    """An ONNX model, a name for it, and the export check when it came from PyTorch or TensorFlow.
    ``dynamic_axes`` (PyTorch only): more symbolic input axes, verified at two sizes (``export_torch``)."""
    from edgequant.model.tf_import import is_tf_model, is_tf_path

    if dynamic_axes and not (type(model).__module__.startswith("torch") or hasattr(model, "state_dict")):
        raise RecipeError(
            f"dynamic_axes {dynamic_axes} apply when a PyTorch model is exported; this model is not one.",
            "drop --dynamic-axis (an ONNX model's dynamic axes are set in the file).",
        )
    if isinstance(model, onnx.ModelProto):
        return model, (model.graph.name or "model").replace("/", "_"), None
    if isinstance(model, str | Path) and not is_tf_path(model):
        return load_model(model), Path(model).stem, None
    if isinstance(model, str | Path) or is_tf_model(model):
        from edgequant.model.tf_import import export_tf

        name = (
            Path(model).stem if isinstance(model, str | Path) else str(getattr(model, "name", "") or "model")
        )
        return _imported(lambda path: export_tf(model, path, example_inputs=example_inputs), name)
    if type(model).__module__.startswith("torch") or hasattr(model, "state_dict"):
        from edgequant.model.torch_import import export_torch

        if example_inputs is None:
            raise ModelError(
                "a PyTorch module needs example inputs to be exported to ONNX.",
                "pass example_inputs=torch.randn(1, 3, 224, 224) (or a tuple for several inputs).",
            )
        return _imported(
            lambda path: export_torch(model, example_inputs, path, dynamic_axes=dynamic_axes or None),
            type(model).__name__.lower(),
        )
    raise ModelError(
        f"cannot quantize an object of type {type(model).__name__}.",
        "pass a path to an .onnx file, a Keras .keras/.h5 file or SavedModel directory, an onnx.ModelProto, "
        "a torch.nn.Module with example_inputs, or a Keras model.",
    )


def _imported(export: Callable[[Path], Any], name: str) -> tuple[onnx.ModelProto, str, dict[str, Any]]:
    """Run an importer into a temporary file; the ONNX model, its name and the import check."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgequant-") as tmp:
        path = Path(tmp) / "model.onnx"
        rep = export(path)
        check = {
            "source": rep.source,
            "max_abs_diff": rep.max_abs_diff,
            "sqnr_db": rep.sqnr_db if np.isfinite(rep.sqnr_db) else None,
            "opset": rep.opset,
        }
        return load_model(path), name.replace("/", "_"), check


def require_loadable(runtime: OrtRuntime, model: onnx.ModelProto | Path) -> None:
    """ONNX Runtime loads the user's model; the load runs in a child process on the CPU provider, so a
    native crash of ONNX Runtime on it is one error line (``edgequant.runtime.isolated``)."""
    try:
        if not any(runtime.provider_options or []) and runtime.providers == ["CPUExecutionProvider"]:
            from edgequant.runtime.isolated import run_isolated

            run_isolated(model, [], what="the input model", providers=runtime.providers)
        else:
            runtime.session(model, "the input model").close()
    except InferenceError as exc:
        raise ModelError(
            exc.detail, "re-export the model so that ONNX Runtime loads it; " + exc.hint
        ) from exc


def named_passes(
    recipe: Recipe | dict[str, Any] | str | Path | None, overrides: dict[str, Any]
) -> tuple[str, ...]:
    """The passes the user named (a preset's passes are not named: finding nothing to do is a note);
    ``bias_correction``/``target_sqnr_db`` name their passes."""
    aliases: tuple[str, ...] = ("bias_correction",) if overrides.get("bias_correction") else ()
    aliases += ("mixed_precision",) if overrides.get("target_sqnr_db") is not None else ()
    if "algorithms" in overrides:
        return (*overrides["algorithms"], *aliases)
    if isinstance(recipe, str) and recipe in PRESETS:
        return aliases
    return (*resolve_recipe(recipe, {}).algorithms, *aliases)


def is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def hoist_gru(model: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    """``model`` with its GRU input projections hoisted (``model.gru_hoist``); refused when none is."""
    from edgequant.model.gru_hoist import hoist_gru_inputs

    hoisted, gru_notes = hoist_gru_inputs(model)
    if not any("hoisted into MatMul" in n for n in gru_notes):
        raise UnsupportedError(
            "hoist_gru is set, but no GRU of this model has a constant float W to hoist"
            + (f" ({gru_notes[0]})" if gru_notes else " (the model has no GRU)")
            + ".",
            "drop --hoist-gru.",
        )
    notes.extend(gru_notes)
    return hoisted


CUT_FOR_QUANTIZE = (
    "calibration and the check would cut the sequences along time (the check then reads later steps of "
    "the same sequences)"
)


def require_batch_first(
    model: onnx.ModelProto, data: Any, cut: str = CUT_FOR_QUANTIZE, counted: str = "calibration and the check"
) -> None:
    """Refuse data for a time-major recurrent input (``[T, B, I]``, ``layout`` 0): the data layer takes
    axis 0 as the sample axis, so it would cut along time: calibration on runs of time steps, the check on
    later steps of the same sequences, and with a fixed T every time step counted as a sample.

    * dynamic T: arrays, files and batch dicts are refused; whole batches that the data layer cannot
      split (an iterable, and another input's axis 0 is fixed, as a recurrent state ``[1, B, H]``) pass;
    * fixed T > 1: refused in every form (an iterable too: calibration counts axis 0), unless the inputs fix
      different first axes (a state ``[1, B, H]`` beside ``x`` ``[T, B, I]``): the data layer then feeds
      every feed dict whole (stacked on a new axis 0 in array files), never cut along time.  T = 1 (one
      step per call, a streaming model) counts each step as the sample it is.

    ``cut``: what the cut would do, for the message; ``counted``: what would count time steps as samples
    (``evaluate`` passes its own).  Raises ``DataError`` naming the input, its node and the fix."""
    from edgequant.data.model_inputs import input_specs
    from edgequant.errors import DataError
    from edgequant.model.patterns import time_major_inputs

    if data is None:
        return
    specs = {s.name: s for s in input_specs(model)}
    fixed = {s.shape[0] for s in specs.values() if s.shape and s.shape[0] is not None}
    streamed = not isinstance(data, str | Path | np.ndarray | dict) and not hasattr(data, "keys")
    timed: dict[str, tuple[onnx.NodeProto, str]] = {}
    for k, n in time_major_inputs(model).items():
        first = specs[k].shape[:1] if k in specs else ()
        if first == (None,) and not (streamed and fixed):
            timed[k] = (n, cut)
        elif first and first[0] not in (None, 1) and len(fixed) == 1:  # T = 1: one step, one sample
            timed[k] = (
                n,
                f"{counted} would count each of its {first[0]} time steps (T is fixed) as a sample",
            )
    if not timed:
        return
    name, (node, why) = next(iter(timed.items()))
    raise DataError(
        f"model input '{name}' is time-major ([T, B, I], ONNX's default layout, read by {node.op_type} "
        f"'{node.name}') and EdgeQuant's data layer batches along axis 0, so {why}.",
        f"re-export the model with a batch-first input [B, T, I] and a Transpose to [T, B, I] before the "
        f"{node.op_type} (what PyTorch's batch_first=True exports); ONNX Runtime has no layout=1 kernel.",
    )
