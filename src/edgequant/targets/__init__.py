"""Hardware targets as data: ``get(name)`` returns a validated ``Profile``.

Profiles are the YAML files beside this module (one per target, the file named after it).  A name
is looked up case-insensitively among the profile names and their aliases (``onnx`` is ``cpu``);
an unknown name is a TargetError listing the known ones and the closest match.

The API other packages use::

    t = targets.get("ti-npu")
    t.weight_spec(bits=4, axis=0)        # QuantSpec: Int4SymmetricPerChannel (float scale at 4 bits)
    t.activation_spec()                  # QuantSpec: 8-bit per-tensor, power-of-two scale
    t.bias_width(8)                      # 24
    t.runs("depthwise"), t.op("fc")      # which op kinds run, and their shape limits

This module imports neither onnx nor onnxruntime (the recipe validates names through it); the
graph-reading parts live in ``targets.kinds`` and ``targets.check``.
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path

from edgequant.errors import TargetError
from edgequant.targets.profile import Limit, OpRule, Profile, TensorRule, load_profile

DEFAULT_TARGET = "cpu"
_DIR = Path(__file__).resolve().parent


@functools.cache
def _profiles() -> dict[str, Profile]:
    out: dict[str, Profile] = {}
    for path in sorted(_DIR.glob("*.yaml")):
        p = load_profile(path)
        out[p.name] = p
    return out


def names() -> list[str]:
    """The canonical target names, sorted (aliases not included)."""
    return sorted(_profiles())


def aliases() -> dict[str, str]:
    """Every accepted name (canonical and alias) -> canonical name."""
    out = {n: n for n in _profiles()}
    for p in _profiles().values():
        out.update({a: p.name for a in p.aliases})
    return out


def canonical(name: str) -> str:
    """The canonical name for ``name`` (case-insensitive, aliases resolved); TargetError when unknown."""
    table = aliases()
    key = str(name).strip().lower()
    if key in table:
        return table[key]
    raise unknown_target(name, describe_names(), "'edgequant targets' lists them with one line each.")


def unknown_target(name: object, valid: list[str], listing: str) -> TargetError:
    """The one error for an unknown target name, shared by the CLI, the API and the REST service:
    the name, ``valid`` (the names this caller accepts), the closest accepted name or alias ("did you
    mean 'ti-npu'?") and ``listing`` (where to see them all)."""
    table = aliases()
    close = difflib.get_close_matches(str(name).strip().lower(), list(table), n=1, cutoff=0.4)
    hint = f"did you mean '{table[close[0]]}'? " if close else ""
    return TargetError(f"unknown target '{name}'; known targets: {', '.join(valid)}.", f"{hint}{listing}")


def describe_names() -> list[str]:
    out = []
    for n in names():
        al = _profiles()[n].aliases
        out.append(f"{n} (alias {', '.join(al)})" if al else n)
    return out


def get(name: str = DEFAULT_TARGET) -> Profile:
    """The validated profile of target ``name``; TargetError (known names + closest match) when unknown."""
    return _profiles()[canonical(name)]


def all_profiles() -> list[Profile]:
    return [_profiles()[n] for n in names()]


__all__ = [
    "DEFAULT_TARGET",
    "Limit",
    "OpRule",
    "Profile",
    "TensorRule",
    "aliases",
    "all_profiles",
    "canonical",
    "get",
    "load_profile",
    "names",
    "unknown_target",
]
