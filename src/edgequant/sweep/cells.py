"""Sweep cells: one (model, method, target, weight bits) each.

``bits`` sets the recipe's ``weight_bits`` on top of the method's preset, for the methods that
have weight bits (static, dynamic, weight-only).  ``float`` and ``fp16`` have none: they get one
cell per model (float) or per model and target (fp16), with ``bits`` None, however many bit widths
are asked.  ``float`` has no target either (``target`` None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgequant.recipe import preset


@dataclass(frozen=True)
class Cell:
    """One sweep cell; ``model`` is the index into the sweep's model list."""

    model: int
    method: str
    target: str | None
    bits: int | None

    @property
    def folder(self) -> str:
        """The cell's output sub-folder name, e.g. ``int8-static_cpu_w4`` (always a safe name)."""
        parts = [self.method, self.target or "any", f"w{self.bits}" if self.bits is not None else "native"]
        return "_".join(parts)

    def overrides(self) -> dict[str, Any]:
        return {"weight_bits": self.bits} if self.bits is not None else {}

    def label(self, model_name: str) -> str:
        bits = f" w{self.bits}" if self.bits is not None else ""
        return f"{model_name} {self.method}{bits} @ {self.target or '-'}"


def has_bits(method: str) -> bool:
    """True when ``--bits`` applies to ``method`` (its recipe quantizes weights to integers)."""
    return method != "float" and preset(method).method in ("static", "dynamic", "weight-only")


def expand(n_models: int, methods: list[str], targets: list[str], bits: list[int]) -> list[Cell]:
    """Every cell of the cross product, in model, method, target, bits order (module docstring)."""
    out: list[Cell] = []
    for m in range(n_models):
        for method in methods:
            if method == "float":
                out.append(Cell(m, method, None, None))
                continue
            for target in targets:
                if has_bits(method):
                    out += [Cell(m, method, target, b) for b in bits]
                else:
                    out.append(Cell(m, method, target, None))
    return out
