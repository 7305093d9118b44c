"""The optional ``performance`` section of a target profile: vendor throughput and energy numbers.

A profile may state, from a cited vendor document, how fast and how cheaply the target computes::

    performance:
      clock_mhz: 300                      # the clock the MACs/cycle figure is quoted at
      macs_per_cycle: {int8: 2048}        # peak multiply-accumulates per cycle, per precision
      energy_pj: {mac_int8: 0.2}          # optional: per-op energies (keys of evaluate.energy)
      source: pg338                       # an id of the profile's 'sources'
      note: B4096 (8 pixel x 16 in x 16 out channels), one core

``macs_per_cycle`` keys are the precisions ``edgequant.evaluate.opcount`` counts (int8, int16, fp16,
fp32); a precision not listed has no throughput on the target (its MACs run elsewhere, so no latency
is predicted for a model that has them).  ``energy_pj`` keys are those of
``edgequant.evaluate.energy.EnergyProfile`` (pJ per MAC, element op or byte); given, they replace the
Horowitz 45 nm defaults in ``compare``'s energy estimate for that target.  A profile without the
section gets no prediction, and the report says so.  Unknown keys and non-positive numbers are
TargetErrors naming the file and the key.

This module imports neither onnx nor onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgequant.errors import TargetError

PRECISIONS = ("int8", "int16", "fp16", "fp32")
# the per-op energy keys of edgequant.evaluate.energy.EnergyProfile (tests keep the two lists equal)
ENERGY_KEYS = (
    "mac_int8", "mac_int16", "mac_fp16", "mac_fp32", "op_int8", "op_int16", "op_int32", "op_fp16",
    "op_fp32", "weight_byte", "activation_byte",
)  # fmt: skip
KEYS = ("clock_mhz", "macs_per_cycle", "energy_pj", "source", "note")


@dataclass(frozen=True)
class Performance:
    """A target's vendor numbers: ``clock_mhz`` (MHz), ``macs_per_cycle`` (precision -> peak MACs per
    cycle), ``energy_pj`` (EnergyProfile key -> pJ), the source id they come from and a note."""

    clock_mhz: float | None
    macs_per_cycle: dict[str, float] = field(default_factory=dict)
    energy_pj: dict[str, float] = field(default_factory=dict)
    source: str = ""
    note: str = ""

    def macs_per_second(self, precision: str) -> float | None:
        """Peak MACs per second at ``precision``, or None when the profile gives none for it."""
        per_cycle = self.macs_per_cycle.get(precision)
        if per_cycle is None or self.clock_mhz is None:
            return None
        return per_cycle * self.clock_mhz * 1e6


def _error(path: str, key: str, what: str, fix: str) -> TargetError:
    return TargetError(f"target profile '{path}': 'performance.{key}' {what}.", f"{fix} in {path}.")


def _positive(path: str, key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
        raise _error(path, key, f"= {v!r} is not a positive number", "fix it")
    return float(v)


def _table(path: str, key: str, data: Any, allowed: tuple[str, ...]) -> dict[str, float]:
    if not isinstance(data, dict) or not data:
        raise _error(path, key, "must be a non-empty mapping", f"write e.g. {allowed[0]}: 1")
    out: dict[str, float] = {}
    for k, v in data.items():
        if k not in allowed:
            raise _error(
                path, f"{key}.{k}", f"is not a known key; allowed: {', '.join(allowed)}", "rename it"
            )
        out[str(k)] = _positive(path, f"{key}.{k}", v)
    return out


def load_performance(path: str, data: Any, sources: set[str]) -> Performance | None:
    """Validate a profile's ``performance`` mapping (None when the profile has none)."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise TargetError(
            f"target profile '{path}': 'performance' must be a mapping.", f"write key: value pairs in {path}."
        )
    for k in data:
        if k not in KEYS:
            raise _error(path, str(k), f"is not a known key; allowed: {', '.join(KEYS)}", "remove it")
    src = data.get("source")
    if src not in sources:
        raise _error(
            path, "source", f"= {src!r} names no entry of 'sources' ({', '.join(sorted(sources))})",
            "cite a listed source id",
        )  # fmt: skip
    macs = (
        _table(path, "macs_per_cycle", data["macs_per_cycle"], PRECISIONS) if "macs_per_cycle" in data else {}
    )
    energy = _table(path, "energy_pj", data["energy_pj"], ENERGY_KEYS) if "energy_pj" in data else {}
    if not macs and not energy:
        raise _error(
            path, "", "gives neither macs_per_cycle nor energy_pj", "add the vendor's numbers or drop it"
        )
    clock = _positive(path, "clock_mhz", data["clock_mhz"]) if "clock_mhz" in data else None
    if macs and clock is None:
        raise _error(path, "clock_mhz", "is missing (macs_per_cycle needs the clock)", "add it")
    return Performance(clock, macs, energy, str(src), str(data.get("note", "")))
