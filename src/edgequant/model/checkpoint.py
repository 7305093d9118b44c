"""Build a PyTorch module from files: a ``package.module:factory`` reference plus a checkpoint, or TorchScript.

* :func:`load_factory` imports ``package.module`` (the reference must match
  ``^name(.name)*:name$``), calls ``factory()`` with no arguments, requires a ``torch.nn.Module``,
  and loads the checkpoint strictly: any missing or unexpected key, or a shape mismatch, is a
  ModelError listing the first keys (a ``module.`` prefix on every unexpected key is named as a
  DataParallel checkpoint).
* :func:`load_state_dict` reads a checkpoint with ``torch.load(weights_only=True)``: tensors and
  plain containers only, never arbitrary pickled objects.  Accepted shapes: a state_dict (non-empty
  ``str -> Tensor`` mapping), or a dict whose ``model_state_dict``, ``state_dict`` or ``model`` entry
  is one (the usual training-loop checkpoint ``{'epoch': .., 'model_state_dict': .., 'optimizer_state_dict': ..}``);
  :func:`load_checkpoint` also says which form it found.
* A *run directory* in place of the checkpoint file holds exactly one checkpoint (``*.pt``,
  ``*.pth``, ``*.ckpt``, ``*.bin``) and at most one of ``args.json``, ``config.json``, ``args.yaml``,
  ``config.yaml``, ``hparams.yaml``; the factory is then called with the config's entries that are
  parameters of the factory (the others, e.g. a learning rate, are listed as not used).
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
    if _is_plain_checkpoint(p):
        raise ModelError(
            f"'{p}' is a torch.save checkpoint (weights, no code), not a TorchScript archive; the network's "
            "structure has to come from its Python class.",
            "pass --factory package.module:function (returns the nn.Module) and --checkpoint "
            f"'{p}' (Python API: load_factory), or save the model with torch.jit.save(torch.jit.script(m)).",
        )
    try:
        with quiet("torch.jit.load"):
            return torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:
        raise ModelError(
            f"'{p}' is not a loadable TorchScript archive: {first_line(exc)}.",
            "save it with torch.jit.save(torch.jit.script(model), path); a state_dict checkpoint needs "
            "load_factory('package.module:factory', checkpoint).",
        ) from exc


STATE_KEYS = ("model_state_dict", "state_dict", "model")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
CONFIG_NAMES = ("args.json", "config.json", "args.yaml", "config.yaml", "hparams.yaml")


def _is_plain_checkpoint(path: Path) -> bool:
    """A torch.save zip (``<name>/data.pkl`` and tensors) without TorchScript's ``code/`` and constants."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    has_code = any("/code/" in n or n.endswith("constants.pkl") for n in names)
    return not has_code and any(n.endswith("data.pkl") for n in names)


def load_state_dict(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: a state_dict, or a dict holding one (``STATE_KEYS``)."""
    return load_checkpoint(path)[0]


def load_checkpoint(path: Path) -> tuple[dict[str, Any], str]:
    """``(state_dict, form)``; ``form`` says where the weights were found, e.g. "the 'model_state_dict'
    entry of 'ckpt.pt' (other entries: epoch, optimizer_state_dict)"."""
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
    form = f"a bare state_dict in '{p.name}'"
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        for key in STATE_KEYS:
            if key in obj and _is_state_dict(obj[key]):
                state = obj[key]
                others = ", ".join(sorted(str(k) for k in obj if k != key)) or "none"
                form = f"the '{key}' entry of '{p.name}' (other entries: {others})"
                break
    if not isinstance(state, Mapping) or not _is_state_dict(state):
        keys = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else []
        raise ModelError(
            f"checkpoint '{p}' holds a {type(obj).__name__} (keys {keys}), not a state_dict and not a dict "
            f"with a {', '.join(repr(k) for k in STATE_KEYS)} entry holding one.",
            resave,
        )
    return dict(state), form


def resolve_run_dir(path: Path) -> tuple[Path, dict[str, Any] | None, Path | None]:
    """A checkpoint file as is; a run directory -> (its one checkpoint, its config, the config's path)."""
    p = Path(path)
    if not p.is_dir():
        return p, None, None
    ckpts = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in CHECKPOINT_SUFFIXES)
    configs = [p / n for n in CONFIG_NAMES if (p / n).is_file()]
    if len(ckpts) != 1:
        raise ModelError(
            f"run directory '{p}' holds {len(ckpts)} checkpoint files ({', '.join(f.name for f in ckpts) or 'none'}); "
            f"exactly one ({', '.join(CHECKPOINT_SUFFIXES)}) is needed.",
            "pass the checkpoint file itself with --checkpoint FILE.",
        )
    if len(configs) > 1:
        raise ModelError(
            f"run directory '{p}' holds {len(configs)} config files ({', '.join(c.name for c in configs)}).",
            "keep one, or pass the checkpoint file itself.",
        )
    if not configs:
        return ckpts[0], None, None
    import json

    import yaml

    try:
        text = configs[0].read_text(encoding="utf-8")
        config = json.loads(text) if configs[0].suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ModelError(
            f"config '{configs[0]}' cannot be read: {first_line(exc)}.", "fix the file."
        ) from exc
    if not isinstance(config, Mapping):
        raise ModelError(f"config '{configs[0]}' is not a mapping of settings.", "write key: value entries.")
    return ckpts[0], dict(config), configs[0]


def _is_state_dict(obj: Any) -> bool:
    torch = require_torch()
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def load_factory(ref: str, checkpoint: Path | None) -> torch.nn.Module:
    """Build a module from ``"package.module:factory"`` (called with no arguments), load weights strictly."""
    return load_factory_noted(ref, checkpoint)[0]


def load_factory_noted(ref: str, checkpoint: Path | None) -> tuple[torch.nn.Module, list[str]]:
    """``load_factory``, also taking a run directory (module doc), with notes that state the checkpoint
    form found and the config entries used: ``(module, notes)``."""
    torch = require_torch()
    notes: list[str] = []
    kwargs: dict[str, Any] = {}
    ckpt_file = Path(checkpoint) if checkpoint is not None else None
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
    factory: Callable[..., Any] | None = getattr(mod, func_name, None)
    if not callable(factory):
        raise ModelError(f"module '{mod_name}' has no callable '{func_name}'.", "check the name after ':'.")
    if checkpoint is not None:
        ckpt_file, config, config_path = resolve_run_dir(Path(checkpoint))
        if config is not None and config_path is not None:
            kwargs, unused = _factory_kwargs(factory, config)
            used = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "none"
            notes.append(
                f"factory called with {used} from '{config_path.name}'"
                + (f" (not parameters of the factory, not used: {', '.join(unused)})" if unused else "")
            )
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise ModelError(
            f"'{ref}()' raised {type(exc).__name__}: {first_line(exc)}.",
            "the factory must build the model with no arguments (or from the run directory's config).",
        ) from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelError(
            f"'{ref}()' returned {type(model).__name__}, not a torch.nn.Module.", "fix the factory."
        )
    if ckpt_file is None:
        return model, notes
    state, form = load_checkpoint(ckpt_file)
    notes.insert(0, f"weights from {form}")
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
    return model, notes


def _factory_kwargs(
    factory: Callable[..., Any], config: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The config entries that are parameters of the factory, and the names of the others."""
    import inspect

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"the factory's parameters cannot be read ({first_line(exc)}), so the run directory's config "
            "cannot be matched to them.",
            "pass the checkpoint file itself and a factory that takes no arguments.",
        ) from exc
    takes_any = any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values())
    used = {k: v for k, v in config.items() if takes_any or k in params}
    return used, sorted(str(k) for k in config if k not in used)
