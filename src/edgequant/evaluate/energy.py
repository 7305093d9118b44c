"""Energy per inference: an *estimate* from counted operations and bytes, and RAPL where the host has it.

Estimate (always labelled "estimate")::

    E = sum_p MACs_p · E_mac(p) + sum_p elem_ops_p · E_op(p) + weight_bytes · E_weight + act_bytes · E_act

with the counts of ``edgequant.evaluate.opcount`` and the per-operation energies of a profile.  The
default profile ``horowitz-45nm`` takes its numbers from M. Horowitz, "Computing's energy problem
(and what we can do about it)", ISSCC 2014, 45 nm at 0.9 V:

==========================  =========================================================
int8 MAC      0.3 pJ        8-bit multiply 0.2 pJ + 32-bit integer accumulate 0.1 pJ
int16 MAC     3.2 pJ        not in the table: 32-bit multiply 3.1 + add 0.1 (an upper bound)
fp16 MAC      1.5 pJ        16-bit float multiply 1.1 pJ + add 0.4 pJ
fp32 MAC      4.6 pJ        32-bit float multiply 3.7 pJ + add 0.9 pJ
element op    int8 0.03 pJ, int16/int32 0.1 pJ, fp16 0.4 pJ, fp32 0.9 pJ (one add each)
weight byte   162.5 pJ      DRAM, 1.3 nJ per 64-bit access (the table's low end, 1.3-2.6 nJ) / 8
activation    12.5 pJ       1 MB SRAM, 100 pJ per 64-bit access / 8 (8 KB: 10 pJ, 32 KB: 20 pJ)
==========================  =========================================================

Assumptions (stated in every report): weights are read once per inference from DRAM (no on-chip
copy survives between inferences), every activation is written and read once through a 1 MB SRAM,
nothing else (instruction fetch, control, leakage, idle power) is counted.  It therefore compares
precisions on the same model; it is not a device measurement.  A profile given as a mapping (e.g.
a target's YAML) replaces any of these numbers; unknown keys are refused.

Measured: on Linux hosts that expose Intel RAPL counters under ``/sys/class/powercap``
(``intel-rapl:N/energy_uj``, package domains), the counters are read before and after the timed
latency runs; the difference (wrap-around at ``max_energy_range_uj`` handled) divided by the runs
is the *whole CPU package's* energy per inference, including other processes and idle power.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edgequant.errors import RecipeError
from edgequant.evaluate.opcount import OpCounts

POWERCAP = Path("/sys/class/powercap")
SOURCE = 'M. Horowitz, "Computing\'s energy problem (and what we can do about it)", ISSCC 2014, 45 nm, 0.9 V'
ASSUMPTIONS = (
    "weights read once per inference from DRAM; activations written and read once through a 1 MB SRAM; "
    "control, instruction fetch, leakage and idle power not counted"
)


@dataclass(frozen=True)
class EnergyProfile:
    """Energies in pJ per MAC / element op / byte.  ``from_mapping`` refuses unknown keys."""

    name: str = "horowitz-45nm"
    source: str = SOURCE
    mac_int8: float = 0.3
    mac_int16: float = 3.2
    mac_fp16: float = 1.5
    mac_fp32: float = 4.6
    op_int8: float = 0.03
    op_int16: float = 0.1
    op_int32: float = 0.1
    op_fp16: float = 0.4
    op_fp32: float = 0.9
    weight_byte: float = 1300.0 / 8
    activation_byte: float = 100.0 / 8

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EnergyProfile:
        known = {f.name for f in fields(cls)}
        bad = sorted(set(data) - known)
        if bad:
            raise RecipeError(
                f"energy profile key(s) {bad} are unknown; allowed: {', '.join(sorted(known))}.",
                "fix the key names (energies in pJ per MAC, op or byte).",
            )
        for k, v in data.items():
            if k not in ("name", "source") and (
                not isinstance(v, int | float) or isinstance(v, bool) or v < 0
            ):
                raise RecipeError(
                    f"energy profile '{k}' = {v!r} must be a number >= 0 (pJ).", "fix the value."
                )
        return cls(**{"name": "custom", "source": "user profile", **dict(data)})


def estimate(counts: OpCounts, weight_bytes: int, profile: EnergyProfile | None = None) -> dict[str, Any]:
    """Energy estimate in mJ per inference with its breakdown (compute per precision, weights,
    activations), the counts it came from, the profile, its source and the assumptions."""
    p = profile or EnergyProfile()
    pj_mac = {k: v * getattr(p, f"mac_{k}") for k, v in counts.macs.items()}
    pj_op = {k: v * getattr(p, f"op_{k}") for k, v in counts.elem_ops.items()}
    parts = {
        **{f"mac_{k}": v for k, v in pj_mac.items()},
        **{f"op_{k}": v for k, v in pj_op.items()},
        "weights": weight_bytes * p.weight_byte,
        "activations": counts.activation_bytes * p.activation_byte,
    }
    total = sum(parts.values())
    return {
        "kind": "estimate",
        "total_mj": total * 1e-9,
        "breakdown_mj": {k: v * 1e-9 for k, v in parts.items()},
        "macs": dict(counts.macs),
        "elem_ops": dict(counts.elem_ops),
        "weight_bytes": int(weight_bytes),
        "activation_bytes": counts.activation_bytes,
        "folded_qdq": counts.folded_qdq,
        "uncounted": list(counts.uncounted),
        "profile": p.name,
        "source": p.source,
        "assumptions": ASSUMPTIONS,
    }


def rapl_domains(root: Path = POWERCAP) -> list[Path]:
    """The package-level RAPL domains (``intel-rapl:N``, not their ``:N:M`` subdomains)."""
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1 and (p / "energy_uj").is_file()
    )


def rapl_read(root: Path = POWERCAP) -> dict[str, int] | str:
    """Counter values (µJ) by domain, or the reason they cannot be read."""
    domains = rapl_domains(root)
    if not domains:
        return f"no RAPL counters under {root} on this host"
    out: dict[str, int] = {}
    for d in domains:
        try:
            out[d.name] = int((d / "energy_uj").read_text().strip())
        except (OSError, ValueError) as exc:
            return f"RAPL counter {d / 'energy_uj'} is not readable ({type(exc).__name__}); reading it needs root"
    return out


def rapl_delta_mj(before: dict[str, int], after: dict[str, int], root: Path = POWERCAP) -> float | None:
    """Energy between two ``rapl_read`` results, in mJ, summed over domains (wrap-around handled);
    None when a counter wrapped and its range cannot be read."""
    total = 0
    for name, b in before.items():
        a = after[name]
        if a < b:
            try:
                a += int((root / name / "max_energy_range_uj").read_text().strip())
            except (OSError, ValueError):
                return None
        total += a - b
    return total / 1000.0
