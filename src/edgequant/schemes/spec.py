"""QuantSpec: how one tensor is quantized.

A tensor ``x`` is mapped to integers ``q = clamp(round(x / s) + z, qmin, qmax)`` and back with
``x_hat = (q - z) * s``.  ``bits`` and ``signed`` fix the integer grid, ``symmetric`` forces ``z``
to the grid's centre (0 for signed, 2**(bits-1) for unsigned), ``granularity`` says whether one
``(s, z)`` pair serves the whole tensor, one output channel (``axis``), or one block of
``block_size`` consecutive elements along ``axis``.  ``scale_rule=power_of_two`` rounds ``s`` up to
``2**k`` so that integer-only hardware can rescale with a shift.  ``narrow_range`` drops the most
negative code (-127..127 for int8), which keeps symmetric products from overflowing.

``bits=1`` is a binary weight: codes {-1, +1} (no zero), ``α · sign(w - c)`` (``centred``: ``c`` is
each unit's mean, else 0); ``ternary`` is the 2-bit symmetric narrow grid {-1, 0, +1} with the
scale of least squared error (``schemes.lowbit``).  Both are for weights, in int8 containers.

The spec is frozen and validates itself when built, so an impossible combination never reaches
the exporter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from edgequant.errors import RecipeError

SUPPORTED_BITS = (1, 2, 4, 8, 16, 32)  # 1: binary weights; 32: int32 biases only


class Granularity(str, Enum):
    PER_TENSOR = "per_tensor"
    PER_CHANNEL = "per_channel"
    PER_BLOCK = "per_block"


class ScaleRule(str, Enum):
    FLOAT = "float"
    POWER_OF_TWO = "power_of_two"


@dataclass(frozen=True)
class QuantSpec:
    bits: int = 8
    signed: bool = True
    symmetric: bool = True
    granularity: Granularity = Granularity.PER_TENSOR
    axis: int | None = None
    block_size: int | None = None
    scale_rule: ScaleRule = ScaleRule.FLOAT
    narrow_range: bool = False
    reduce_range: bool = False  # 7-bit grid in an 8-bit container (x86 without VNNI, see runtime.cpu)
    ternary: bool = False  # 2-bit {-1, 0, +1} with the least-squares scale (schemes.lowbit)
    centred: bool = False  # binary: signs taken against each unit's mean (schemes.lowbit)

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise RecipeError(
                f"bit width {self.bits} is not supported; allowed: {', '.join(map(str, SUPPORTED_BITS))}.",
                "choose one of the allowed bit widths.",
            )
        object.__setattr__(self, "granularity", Granularity(self.granularity))
        object.__setattr__(self, "scale_rule", ScaleRule(self.scale_rule))
        if self.granularity is Granularity.PER_TENSOR and (self.axis is not None or self.block_size):
            raise RecipeError(
                "a per-tensor QuantSpec takes no axis and no block size.", "drop axis/block_size."
            )
        if self.granularity is not Granularity.PER_TENSOR and self.axis is None:
            raise RecipeError(f"a {self.granularity.value} QuantSpec needs an axis.", "set axis.")
        if self.granularity is Granularity.PER_BLOCK:
            if not self.block_size or self.block_size < 2 or self.block_size & (self.block_size - 1):
                raise RecipeError(
                    f"block size {self.block_size} is not a power of two >= 2 (e.g. 32, 64, 128).",
                    "set block_size to 16, 32, 64 or 128.",
                )
        elif self.block_size is not None:
            raise RecipeError("block_size is only meaningful for per_block granularity.", "drop block_size.")
        if self.reduce_range and self.bits != 8:
            raise RecipeError("reduce_range applies to 8-bit tensors only.", "drop reduce_range.")
        if self.narrow_range and not (self.signed and self.symmetric):
            raise RecipeError("narrow_range needs a signed symmetric spec.", "drop narrow_range.")
        if self.bits == 1 and not (self.signed and self.symmetric and not self.narrow_range):
            raise RecipeError(
                "a binary (1-bit) spec has the signed symmetric codes {-1, +1}.",
                "use signed=True, symmetric=True, narrow_range=False.",
            )
        if self.ternary and not (self.bits == 2 and self.signed and self.symmetric and self.narrow_range):
            raise RecipeError(
                "a ternary spec is the 2-bit signed symmetric narrow grid {-1, 0, +1}.",
                "use bits=2, signed=True, symmetric=True, narrow_range=True.",
            )
        if self.centred and self.bits != 1:
            raise RecipeError("centred applies to binary (1-bit) specs only.", "drop centred.")
        if (self.bits == 1 or self.ternary) and self.granularity is Granularity.PER_BLOCK:
            raise RecipeError(
                "binary and ternary specs are per tensor or per channel.", "use per_channel or per_tensor."
            )

    @property
    def qmin(self) -> int:
        if self.bits == 1:
            return -1
        bits = self.bits - 1 if self.reduce_range else self.bits
        if self.signed:
            return -(2 ** (bits - 1)) + (1 if self.narrow_range else 0)
        return 0

    @property
    def qmax(self) -> int:
        if self.bits == 1:
            return 1  # codes -1 and +1 only (schemes.lowbit.binary_codes); 0 is not a code
        bits = self.bits - 1 if self.reduce_range else self.bits
        return 2 ** (bits - 1) - 1 if self.signed else 2**bits - 1

    @property
    def levels(self) -> int:
        if self.bits == 1:
            return 2
        return self.qmax - self.qmin + 1

    @property
    def name(self) -> str:
        """A name that states the scheme, e.g. ``Int8SymmetricPerChannel``."""
        kind = "Int" if self.signed else "UInt"
        sym = "Symmetric" if self.symmetric else "Asymmetric"
        gran = {"per_tensor": "PerTensor", "per_channel": "PerChannel", "per_block": "PerBlock"}[
            self.granularity.value
        ]
        pot = "Pow2" if self.scale_rule is ScaleRule.POWER_OF_TWO else ""
        block = str(self.block_size) if self.block_size else ""
        reduced = "Reduced" if self.reduce_range else ""
        if self.bits == 1:
            return f"Binary{'Centred' if self.centred else ''}{gran}{pot}"
        if self.ternary:
            return f"Ternary{gran}{pot}"
        return f"{kind}{self.bits}{reduced}{sym}{gran}{block}{pot}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["granularity"] = self.granularity.value
        d["scale_rule"] = self.scale_rule.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantSpec:
        return cls(**d)
