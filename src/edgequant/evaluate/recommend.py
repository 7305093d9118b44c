"""The recommendation rule: which precision to deploy under accuracy, latency, size and energy limits.

A pure function over plain numbers (no model, no runtime), shared by ``compare``, the demo and the
REST service so that every surface states and applies the same rule (``RULE``):

1. **Filter** by every limit given.  A candidate is a method that ran, FP32 included:
   ``drop <= max_drop`` (points of the primary metric), ``drop / |float score| <= max_drop_rel``
   (a fraction, NNCF's relative ``max_drop``; for a drop already measured in % it is ``drop / 100``),
   ``latency <= max_latency_ms`` (median, measured), ``size <= max_size_mb`` (file, 1 MB = 2**20 bytes),
   ``energy <= max_energy_mj`` (per inference, the *estimate* from ``edgequant.evaluate.energy``).
2. **Optimise** the preferred quantity (``prefer``): the lowest latency, size or energy, or the
   smallest drop (``accuracy``).  Values within ``TIE`` (2 %) of the best count as a tie.
3. **Break ties** by accuracy (the smaller drop), then by size (the smaller file), then by the order
   of the methods (FP32 first).  With the default ``prefer="latency"`` this is the demo's rule: the
   fastest method within the accuracy limit, then the smallest.

When no candidate meets every limit there is no recommendation; the *closest* method is named: the one
whose misses add up to the smallest total relative excess ``sum(max(0, value/limit - 1))`` over the
limits it misses, and every candidate lists each limit it misses and by how much.  A limit whose
quantity was not measured for a candidate (e.g. energy without an estimate) counts as a miss, never as
a pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from edgequant.errors import RecipeError

Prefer = Literal["latency", "size", "accuracy", "energy"]
PREFER: tuple[str, ...] = ("latency", "size", "accuracy", "energy")
TIE = 0.02
MB = float(2**20)
RULE = (
    "filter by every limit given (FP32 is a candidate), then take the best preferred quantity "
    "(lowest {prefer}; within 2 % counts as a tie), then break ties by accuracy (smaller drop), "
    "then by size (smaller file)"
)

# limit name -> (quantity, unit, format)
_LIMITS: dict[str, tuple[str, str]] = {
    "max_drop": ("accuracy drop", "pp"),  # "%" for a regression drop (the candidate's unit)
    "max_drop_rel": ("relative accuracy drop", ""),
    "max_latency_ms": ("latency", "ms"),
    "max_size_mb": ("size", "MB"),
    "max_energy_mj": ("energy estimate", "mJ"),
}


@dataclass(frozen=True)
class Limits:
    """The user's limits (None = no limit) and the quantity to optimise; validated when built.

    Raises ``RecipeError`` for a negative limit, a relative drop outside [0, 1], or an unknown ``prefer``.
    """

    max_drop: float | None = None
    max_drop_rel: float | None = None
    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    max_energy_mj: float | None = None
    prefer: str = "latency"

    def __post_init__(self) -> None:
        if self.prefer not in PREFER:
            raise RecipeError(
                f"prefer '{self.prefer}' is not one of {', '.join(PREFER)}.",
                "pass --prefer latency, size, accuracy or energy.",
            )
        for name in _LIMITS:
            v = getattr(self, name)
            if v is not None and not v >= 0:
                raise RecipeError(
                    f"{name} = {v} must be a number >= 0.", f"pass a non-negative --{_flag(name)}."
                )
        if self.max_drop_rel is not None and self.max_drop_rel > 1:
            raise RecipeError(
                f"max_drop_rel = {self.max_drop_rel} is a fraction and must be <= 1 (0.01 = 1 %).",
                "pass e.g. --max-drop-rel 0.01, or --max-drop in points.",
            )

    def given(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in _LIMITS if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in _LIMITS}, "prefer": self.prefer}

    def stated(self) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in self.given().items()) or "no limits"


@dataclass(frozen=True)
class Candidate:
    """One method's measured numbers (None = not measured).  ``ok=False`` = the method failed."""

    method: str
    ok: bool = True
    drop: float | None = None
    drop_unit: str = "pp"
    float_score: float | None = None
    latency_ms: float | None = None
    size_bytes: int | None = None
    energy_mj: float | None = None
    error: str = ""

    def value(self, limit: str) -> float | None:
        """The quantity a limit bounds, in the limit's unit."""
        if limit == "max_drop":
            return self.drop
        if limit == "max_drop_rel":
            if self.drop is None:
                return None
            if self.drop_unit == "%":
                return self.drop / 100.0
            if not self.float_score:
                return None
            return self.drop / abs(self.float_score)
        if limit == "max_latency_ms":
            return self.latency_ms
        if limit == "max_size_mb":
            return None if self.size_bytes is None else self.size_bytes / MB
        return self.energy_mj

    def preferred(self, prefer: str) -> float | None:
        return self.value({"latency": "max_latency_ms", "size": "max_size_mb", "accuracy": "max_drop",
                           "energy": "max_energy_mj"}[prefer])  # fmt: skip


@dataclass(frozen=True)
class Miss:
    """A limit a candidate misses: the value reached (None = not measured), the limit, the excess."""

    limit: str
    value: float | None
    bound: float
    unit: str | None = None  # the drop's own unit ("pp" or "%"); None: the limit's unit

    @property
    def by(self) -> float | None:
        return None if self.value is None else self.value - self.bound

    @property
    def relative(self) -> float:
        if self.value is None:
            return float("inf")
        return max(0.0, self.value / self.bound - 1.0) if self.bound > 0 else float("inf")

    def text(self) -> str:
        what, unit = _LIMITS[self.limit]
        unit = self.unit if self.unit is not None else unit
        u = f" {unit}" if unit else ""
        if self.value is None:
            return f"{what} not measured (limit {self.bound:g}{u})"
        return f"{what} {self.value:.4g}{u} > {self.bound:g}{u} (by {self.value - self.bound:.4g}{u})"


@dataclass
class Recommendation:
    """The rule's outcome: ``method`` (None when nothing fits), ``reason``, the ``rule`` text, the
    ``closest`` method when nothing fits, and per method the limits it misses."""

    method: str | None
    reason: str
    rule: str
    closest: str | None = None
    misses: dict[str, list[Miss]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "reason": self.reason,
            "rule": self.rule,
            "closest": self.closest,
            "misses": {k: [m.text() for m in v] for k, v in self.misses.items()},
        }


def misses(c: Candidate, limits: Limits) -> list[Miss]:
    """The limits ``c`` misses (empty = meets every limit given)."""
    out: list[Miss] = []
    for name, bound in limits.given().items():
        v = c.value(name)
        if v is None or v > bound:
            out.append(Miss(name, v, bound, c.drop_unit if name == "max_drop" else None))
    return out


def recommend(candidates: Sequence[Candidate], limits: Limits) -> Recommendation:
    """Apply ``RULE`` (module docstring) to ``candidates`` in their given order."""
    rule = RULE.format(prefer="drop" if limits.prefer == "accuracy" else limits.prefer)
    ran = [c for c in candidates if c.ok]
    miss = {c.method: misses(c, limits) for c in ran}
    fit = [c for c in ran if not miss[c.method]]
    stated = limits.stated()
    if not fit:
        if not ran:
            return Recommendation(None, "no method ran: " + " | ".join(f"{c.method}: {c.error}" for c in candidates),
                                  rule, None, miss)  # fmt: skip
        closest = min(ran, key=lambda c: sum(m.relative for m in miss[c.method]))
        lines = " | ".join(f"{c.method}: " + "; ".join(m.text() for m in miss[c.method]) for c in ran)
        failed = [c for c in candidates if not c.ok]
        if failed:
            lines += " | " + " | ".join(f"{c.method}: failed: {c.error}" for c in failed)
        return Recommendation(
            None,
            f"no method meets the limits ({stated}); closest: {closest.method} "
            f"({'; '.join(m.text() for m in miss[closest.method])}). {lines}",
            rule,
            closest.method,
            miss,
        )
    scored = [(c, c.preferred(limits.prefer)) for c in fit]
    known = [(c, v) for c, v in scored if v is not None]
    if not known:
        return Recommendation(
            None,
            f"no method within the limits ({stated}) has a measured {limits.prefer}; pick another --prefer.",
            rule,
            None,
            miss,
        )
    best_v = min(v for _, v in known)
    tied = [c for c, v in known if v <= best_v + abs(best_v) * TIE]
    order = {c.method: i for i, c in enumerate(candidates)}
    inf = float("inf")
    best = min(
        tied,
        key=lambda c: (
            c.drop if c.drop is not None else inf,
            c.size_bytes if c.size_bytes is not None else inf,
            order[c.method],
        ),
    )
    v = best.preferred(limits.prefer)
    unit = {"latency": "ms", "size": "MB", "accuracy": best.drop_unit, "energy": "mJ (estimate)"}[
        limits.prefer
    ]
    what = "accuracy drop" if limits.prefer == "accuracy" else limits.prefer
    reason = f"{best.method}: lowest {what} ({v:.4g} {unit}) among {len(fit)} method(s) within the limits ({stated})"
    if len(tied) > 1:
        same = [c for c in tied if c.drop == best.drop]
        reason += f"; {len(tied)} within {TIE:.0%}, tie broken by accuracy drop" + (
            f", then by file size ({len(same)} with the same drop; {best.size_bytes / MB:.3f} MB)"
            if len(same) > 1 and best.size_bytes is not None
            else ""
        )
    if best.drop is not None:
        reason += f"; accuracy drop {best.drop:.2f} {best.drop_unit}"
    return Recommendation(best.method, reason + ".", rule, None, miss)


def _flag(name: str) -> str:
    return name.replace("_", "-")
