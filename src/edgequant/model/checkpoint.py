"""Build a PyTorch module from files: a ``package.module:factory`` reference plus a checkpoint, or TorchScript.

* :func:`load_factory` imports ``package.module`` (the reference must match
  ``^name(.name)*:name$``), calls ``factory()`` with no arguments, requires a ``torch.nn.Module``,
  and loads the checkpoint strictly: any missing or unexpected key, or a shape mismatch, is a
  ModelError listing the first keys (a ``module.`` prefix on every unexpected key is named as a
  DataParallel checkpoint).
* :func:`load_state_dict` reads a checkpoint with ``torch.load(weights_only=True)``: tensors and
  plain containers only, never arbitrary pickled objects.  Accepted shapes: a state_dict (non-empty
  ``str -> Tensor`` mapping), or a dict whose ``state_dict`` or ``model`` entry is one.
* :func:`load_torchscript` loads a TorchScript archive on CPU.

torch is an optional extra (``edgequant[torch]``) imported lazily by :func:`require_torch`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgequant.errors import DependencyError, ModelError
from edgequant.model.verify import first_line, quiet

if TYPE_CHECKING:
    import torch

_REF_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*$")


def require_torch() -> Any:
    """Import torch, or raise the DependencyError that names the extra."""
    try:
        import torch
    except ImportError as exc:
        raise DependencyError.missing("torch", "torch", "Importing a PyTorch model") from exc
    return torch


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load a TorchScript archive on CPU (export it with ``export_torch``)."""
    torch = require_torch()
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"TorchScript file '{p}' does not exist.", "check the path.")
    try:
        with quiet("torch.jit.load"):
            return torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:
        raise ModelError(
            f"'{p}' is not a loadable TorchScript archive: {first_line(exc)}.",
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
        raise ModelError(f"cannot read checkpoint '{p}': {first_line(exc)}.", resave) from exc
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
            f"cannot import module '{mod_name}' for '{ref}': {first_line(exc)}.",
            "install the package or add its directory to PYTHONPATH.",
        ) from exc
    factory: Callable[[], Any] | None = getattr(mod, func_name, None)
    if not callable(factory):
        raise ModelError(f"module '{mod_name}' has no callable '{func_name}'.", "check the name after ':'.")
    try:
        model = factory()
    except Exception as exc:
        raise ModelError(
            f"'{ref}()' raised {type(exc).__name__}: {first_line(exc)}.",
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
