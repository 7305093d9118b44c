"""Predicted latency on a hardware target, from its profile's vendor throughput (always a *prediction*).

For a target whose profile has a ``performance`` section (``edgequant.targets.performance``)::

    t_pred = sum_p MACs_p / (macs_per_cycle_p · clock)

over the precisions ``p`` of the counted MACs (``edgequant.evaluate.opcount``).  It is the peak
compute bound: memory traffic, element-wise ops, layers the target hands to its host, utilisation
below peak and driver overhead are not counted, so the device's real latency is at least this.  A
model with MACs at a precision the profile gives no throughput for (e.g. FP32 on an int8-only DPU)
gets no prediction, nor does a target whose profile gives no numbers; either way the reason is
returned in ``note`` and shown in place of the number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgequant.evaluate.energy import EnergyProfile
from edgequant.targets import Profile

BASIS = (
    "peak compute bound: MACs / (MACs per cycle x clock) from the target profile's vendor figures; "
    "memory traffic, element-wise ops, host-side layers and utilisation below peak are not counted "
    "(the device's latency is at least this)"
)


def no_numbers(profile: Profile) -> str:
    return f"no prediction: target '{profile.name}' profile gives no throughput numbers"


def predict_latency(macs: Mapping[str, int], profile: Profile) -> dict[str, Any]:
    """The predicted latency in ms of one inference with ``macs`` (precision -> MAC count) on
    ``profile``'s target: ``{"kind": "prediction", "ms": float | None, "note", "basis", "source"}``;
    ``ms`` is None (with the reason in ``note``) when the profile cannot predict it."""
    perf = profile.performance
    out: dict[str, Any] = {"kind": "prediction", "target": profile.name, "ms": None, "basis": BASIS}
    if perf is None or not perf.macs_per_cycle:
        return {**out, "note": no_numbers(profile)}
    used = {p: int(n) for p, n in macs.items() if n}
    missing = sorted(p for p in used if perf.macs_per_second(p) is None)
    if missing:
        have = ", ".join(sorted(perf.macs_per_cycle))
        counts = ", ".join(f"{used[p] / 1e6:.3g} M {p}" for p in missing)
        return {
            **out,
            "note": f"no prediction: the model has {counts} MACs and target '{profile.name}' gives "
            f"throughput only for {have}",
        }
    seconds = sum(n / float(perf.macs_per_second(p) or 1.0) for p, n in used.items())
    return {
        **out,
        "ms": seconds * 1e3,
        "macs": used,
        "clock_mhz": perf.clock_mhz,
        "macs_per_cycle": dict(perf.macs_per_cycle),
        "source": profile.cite(perf.source),
        "note": f"predicted for {profile.name} ({perf.note})"
        if perf.note
        else f"predicted for {profile.name}",
    }


def target_energy_profile(profile: Profile) -> EnergyProfile | None:
    """The energy profile built from the target's own ``performance.energy_pj`` numbers (the other
    per-op energies stay Horowitz 45 nm), or None when the target profile gives none."""
    perf = profile.performance
    if perf is None or not perf.energy_pj:
        return None
    return EnergyProfile.from_mapping(
        {
            **EnergyProfile().__dict__,
            **perf.energy_pj,
            "name": f"{profile.name} (Horowitz 45 nm for the rest)",
            "source": f"{profile.cite(perf.source)}; rest: {EnergyProfile().source}",
        }
    )
