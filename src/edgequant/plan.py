"""QuantPlan: per tensor, what is quantized and how; per node, whether it is quantized and why not.

The planner fills ``tensors`` (with specs) and ``nodes`` (with reasons); calibration fills the
activation entries' ``lo``/``hi``; the exporter fills ``scale``/``zero_point``.  The plan is written
as JSON beside every quantized model and reads back equal (``QuantPlan.from_json(p.to_json()) == p``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from edgequant.errors import ModelError
from edgequant.schemes.spec import QuantSpec

Role = Literal["weight", "activation", "bias", "constant"]  # constant: an Add/Mul operand
PLAN_VERSION = 1


@dataclass
class TensorEntry:
    """How one tensor is quantized.  ``scale``/``zero_point`` are flattened (row-major)."""

    name: str
    role: Role
    spec: QuantSpec
    lo: float | None = None
    hi: float | None = None
    scale: list[float] | None = None
    zero_point: list[int] | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "spec": self.spec.to_dict(),
            "scheme": self.spec.name,
            "lo": self.lo,
            "hi": self.hi,
            "scale": self.scale,
            "zero_point": self.zero_point,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorEntry:
        return cls(
            name=d["name"],
            role=d["role"],
            spec=QuantSpec.from_dict(d["spec"]),
            lo=d.get("lo"),
            hi=d.get("hi"),
            scale=d.get("scale"),
            zero_point=d.get("zero_point"),
            note=d.get("note", ""),
        )


@dataclass
class NodeDecision:
    """Whether one node is quantized; ``reason`` is required when it is not."""

    node: str
    op_type: str
    quantized: bool
    reason: str = ""
    graph: str = "main"

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "op_type": self.op_type,
            "quantized": self.quantized,
            "reason": self.reason,
            "graph": self.graph,
        }


@dataclass
class QuantPlan:
    method: str
    opset: int
    tensors: dict[str, TensorEntry] = field(default_factory=dict)
    nodes: list[NodeDecision] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # -- queries -------------------------------------------------------------------------------
    def activations(self) -> list[str]:
        return [n for n, e in self.tensors.items() if e.role == "activation"]

    def weights(self) -> list[str]:
        return [n for n, e in self.tensors.items() if e.role == "weight"]

    @property
    def quantized_nodes(self) -> list[NodeDecision]:
        return [d for d in self.nodes if d.quantized]

    @property
    def skipped_nodes(self) -> list[NodeDecision]:
        return [d for d in self.nodes if not d.quantized]

    def decide(self, node: str, op_type: str, quantized: bool, reason: str = "", graph: str = "main") -> None:
        """Record (or overwrite) the decision for one node."""
        for i, d in enumerate(self.nodes):
            if d.node == node and d.graph == graph:
                self.nodes[i] = NodeDecision(node, op_type, quantized, reason, graph)
                return
        self.nodes.append(NodeDecision(node, op_type, quantized, reason, graph))

    def with_ranges(self, ranges: dict[str, tuple[float, float]]) -> QuantPlan:
        """A copy whose activation entries carry the calibrated ``[lo, hi]``."""
        missing = [n for n in self.activations() if n not in ranges]
        if missing:
            raise ModelError(
                f"calibration produced no range for {len(missing)} activation(s), e.g. '{missing[0]}'.",
                "the tensor was never computed on the calibration data; check the data covers all branches.",
            )
        out = QuantPlan.from_dict(self.to_dict())
        for name in out.activations():
            lo, hi = ranges[name]
            out.tensors[name].lo, out.tensors[name].hi = float(lo), float(hi)
        return out

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "method": self.method,
            "opset": self.opset,
            "tensors": [e.to_dict() for e in self.tensors.values()],
            "nodes": [d.to_dict() for d in self.nodes],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantPlan:
        if d.get("version") != PLAN_VERSION:
            raise ModelError(
                f"plan version {d.get('version')!r} is not supported (expected {PLAN_VERSION}).",
                "re-create the plan with this EdgeQuant version.",
            )
        return cls(
            method=d["method"],
            opset=int(d["opset"]),
            tensors={e["name"]: TensorEntry.from_dict(e) for e in d["tensors"]},
            nodes=[NodeDecision(**n) for n in d["nodes"]],
            notes=list(d.get("notes", [])),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> QuantPlan:
        return cls.from_dict(json.loads(text))
