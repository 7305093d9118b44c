"""A hardware target as reviewed data: one strictly validated YAML profile per target.

A profile states what the accelerator runs and how its tensors must be quantized:

* ``weights`` / ``activations``: allowed bits, signedness, symmetry, granularity, the scale rule at
  each bit width (``float``, ``power_of_two``, or ``multiplier_shift``: an unsigned multiplier of
  ``multiplier_bits`` bits and a right shift, which is a float scale as far as the QDQ model goes);
* ``bias``: its width per weight width, and whether it shares the accumulator's scale ``s_x·s_w``
  (``accumulator``) or has its own power-of-two scale (``own_power_of_two``);
* ``ops``: per op kind (see ``edgequant.targets.kinds``) whether it runs and its shape limits
  (``in_channels``, ``out_channels``, ``in_features``, ``kernel_h``, ``kernel_w``, ``strides``);
* ``unsupported``: what happens to an op kind the profile does not list (``host``: it runs on the
  host CPU; ``error``: the model cannot be deployed); ``float_ops``: whether a node left in float
  runs on the target (``runs``, a CPU runtime) or falls back to the host (``host``, the default);
* ``performance`` (optional): vendor throughput and energy numbers (``edgequant.targets.performance``);
* ``sources``: the vendor documents the rules come from; every rule names one by ``id``.

Unknown keys and bad values are errors naming the file, the key and the allowed values.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from edgequant.errors import TargetError
from edgequant.schemes.spec import Granularity, QuantSpec, ScaleRule
from edgequant.targets.performance import Performance, load_performance
from edgequant.targets.reader import ProfileReader

ScaleName = Literal["float", "power_of_two", "multiplier_shift"]
SCALE_NAMES = ("float", "power_of_two", "multiplier_shift")
GRANULARITIES = ("per_tensor", "per_channel", "per_block")
OP_KINDS = (
    "first_conv", "conv", "depthwise", "pointwise", "conv_transpose", "fc", "matmul", "avgpool",
    "global_avgpool", "maxpool", "batchnorm", "add", "mul", "concat", "relu", "clip", "sigmoid",
    "hardswish", "leaky_relu", "softmax", "gelu", "reshape", "resize", "pad", "reduce", "gather", "other",
)  # fmt: skip
LIMIT_KEYS = ("in_channels", "out_channels", "in_features", "kernel_h", "kernel_w")
CONSEQUENCES = ("host", "error")


@dataclass(frozen=True)
class TensorRule:
    """How one role (weights or activations) may be quantized on the target."""

    bits: tuple[int, ...]
    signed: tuple[bool, ...]
    symmetric: tuple[bool, ...]
    granularity: tuple[str, ...]
    scale: dict[int, str]  # bits -> scale rule name
    narrow_range: bool | None  # None: either
    source: str

    def scale_rule(self, bits: int) -> ScaleRule:
        """The QDQ scale rule at ``bits``: POWER_OF_TWO where the target needs it, else FLOAT."""
        return ScaleRule.POWER_OF_TWO if self.scale.get(bits) == "power_of_two" else ScaleRule.FLOAT


@dataclass(frozen=True)
class Limit:
    """An integer constraint; ``min_by_bits`` maps a weight width to a minimum (e.g. FC inputs)."""

    exact: int | None = None
    multiple: int | None = None
    min: int | None = None
    max: int | None = None
    min_by_bits: dict[int, int] = field(default_factory=dict)

    def violations(self, value: int, weight_bits: int | None = None) -> list[str]:
        """Every requirement ``value`` breaks (e.g. ``['a multiple of 4', 'at least 16 at 8-bit
        weights']``); empty when it complies."""
        broken = []
        if self.exact is not None and value != self.exact:
            broken.append(f"exactly {self.exact}")
        if self.multiple is not None and value % self.multiple:
            broken.append(f"a multiple of {self.multiple}")
        if self.min is not None and value < self.min:
            broken.append(f"at least {self.min}")
        if self.max is not None and value > self.max:
            broken.append(f"at most {self.max}")
        lo = self.min_by_bits.get(weight_bits) if weight_bits is not None else None
        if lo is not None and value < lo:
            broken.append(f"at least {lo} at {weight_bits}-bit weights")
        return broken

    def violation(self, value: int, weight_bits: int | None = None) -> str:
        """'' when ``value`` complies, else every requirement it breaks joined by 'and'."""
        return " and ".join(self.violations(value, weight_bits))

    def smallest_compliant(self, value: int, weight_bits: int | None = None) -> int | None:
        """The smallest integer >= ``value`` that meets every requirement (the size to pad or widen
        to), or None when none does (an exact value or a maximum below ``value``)."""
        lo = max(
            [value, self.min or 0, self.min_by_bits.get(weight_bits, 0) if weight_bits is not None else 0]
        )
        if self.multiple:
            lo = -(-lo // self.multiple) * self.multiple
        if (self.exact is not None and lo != self.exact) or (self.max is not None and lo > self.max):
            return None
        return lo

    def describe(self) -> str:
        parts = [f"= {self.exact}"] if self.exact is not None else []
        parts += [f"multiple of {self.multiple}"] if self.multiple else []
        parts += [f">= {self.min}"] if self.min is not None else []
        parts += [f"<= {self.max}"] if self.max is not None else []
        parts += [f">= {v} at {b}-bit" for b, v in sorted(self.min_by_bits.items(), reverse=True)]
        return ", ".join(parts)


@dataclass(frozen=True)
class OpRule:
    kind: str
    runs: bool
    limits: dict[str, Limit]
    strides: tuple[tuple[int, ...], ...] | None
    source: str
    note: str = ""


@dataclass(frozen=True)
class Source:
    id: str
    title: str
    url: str


@dataclass(frozen=True)
class Profile:
    """One target's rules (see the module docstring); build with ``load_profile``."""

    name: str
    title: str
    summary: str
    aliases: tuple[str, ...]
    methods: tuple[str, ...]
    compliance_only: bool
    unsupported: str
    float_ops: str  # "host": a node left float falls back to the host; "runs": the target runs float ops too
    weights: TensorRule
    activations: TensorRule
    bias_bits: dict[int, int]  # weight bits -> bias bits
    bias_scale: str  # "accumulator" | "own_power_of_two"
    bias_source: str
    multiplier_bits: int | None
    ops: dict[str, OpRule]
    sources: dict[str, Source]
    path: str = ""
    performance: Performance | None = None  # vendor throughput / energy numbers (targets.performance)

    # -- the API other modules use (planner, torch QAT, checker) -------------------------------
    def op(self, kind: str) -> OpRule | None:
        """The rule for an op kind, or None when the target does not list it (``unsupported`` applies)."""
        return self.ops.get(kind)

    def runs(self, kind: str) -> bool:
        rule = self.ops.get(kind)
        return rule is not None and rule.runs

    def weight_spec(
        self, bits: int | None = None, axis: int | None = 0, per_channel: bool | None = None
    ) -> QuantSpec:
        """The QuantSpec of a weight at ``bits`` (default: the widest allowed) on this target.

        ``axis`` is the output-channel axis (0 for Conv, 1 for ConvTranspose / Gemm without
        transB); ``per_channel`` None takes the target's first granularity.  TargetError when the
        target does not allow the request.
        """
        r = self.weights
        bits = max(r.bits) if bits is None else bits
        if bits not in r.bits:
            raise self._refuse("weight bits", bits, r.bits, r.source)
        gran = r.granularity[0] if per_channel is None else ("per_channel" if per_channel else "per_tensor")
        if gran not in r.granularity:
            raise self._refuse("weight granularity", gran, r.granularity, r.source)
        sym = r.symmetric[0]
        per_ch = gran == "per_channel" and axis is not None
        return QuantSpec(
            bits=bits, signed=r.signed[0], symmetric=sym,
            granularity=Granularity.PER_CHANNEL if per_ch else Granularity.PER_TENSOR,
            axis=axis if per_ch else None, scale_rule=r.scale_rule(bits),
            narrow_range=bool(r.narrow_range if r.narrow_range is not None else sym and r.signed[0]),
        )  # fmt: skip

    def activation_spec(self, bits: int | None = None, signed: bool | None = None) -> QuantSpec:
        """The per-tensor QuantSpec of an activation at ``bits`` (default: the widest allowed)."""
        r = self.activations
        bits = max(r.bits) if bits is None else bits
        if bits not in r.bits:
            raise self._refuse("activation bits", bits, r.bits, r.source)
        signed = r.signed[0] if signed is None else signed
        if signed not in r.signed:
            raise self._refuse("activation signedness", signed, r.signed, r.source)
        return QuantSpec(bits=bits, signed=signed, symmetric=r.symmetric[0], scale_rule=r.scale_rule(bits))

    def bias_width(self, weight_bits: int) -> int:
        """Bits of a bias next to ``weight_bits``-bit weights (e.g. 24 with int8 on a TI-NPU class target)."""
        if weight_bits not in self.bias_bits:
            raise self._refuse(
                "weight bits (bias width)", weight_bits, tuple(self.bias_bits), self.bias_source
            )
        return self.bias_bits[weight_bits]

    def cite(self, source_id: str) -> str:
        s = self.sources[source_id]
        return f"{s.title} <{s.url}>"

    def _refuse(self, what: str, got: Any, allowed: tuple[Any, ...], source: str) -> TargetError:
        return TargetError(
            f"target '{self.name}' does not allow {what} {got}; allowed: {', '.join(map(str, allowed))} "
            f"(source: {self.cite(source)}).",
            "choose an allowed value, or another target ('edgequant targets' lists them).",
        )


def _tensor_rule(path: str, where: str, data: Any, sources: set[str]) -> TensorRule:
    keys = ("bits", "signed", "symmetric", "granularity", "scale", "narrow_range", "source")
    r = ProfileReader(path, where, data, keys)
    bits = r.choices("bits", (1, 2, 4, 8, 16), (8,))  # 1: binary weights
    scale_raw = r.get("scale", "float")
    if isinstance(scale_raw, str):
        scale_raw = {b: scale_raw for b in bits}
    if not isinstance(scale_raw, dict):
        raise r.error(path, r.key("scale"), "must be a rule name or a mapping bits -> rule", "fix it")
    scale: dict[int, str] = {}
    for b, rule in scale_raw.items():
        if b not in bits:
            raise r.error(path, f"{r.key('scale')}.{b}", f"names a width not in bits {list(bits)}", "fix it")
        if rule not in SCALE_NAMES:
            raise r.error(
                path, f"{r.key('scale')}.{b}", f"= {rule!r}; allowed: {', '.join(SCALE_NAMES)}", "use one"
            )
        scale[int(b)] = str(rule)
    narrow = r.get("narrow_range")
    if narrow is not None and not isinstance(narrow, bool):
        raise r.error(path, r.key("narrow_range"), f"= {narrow!r}; allowed: true, false, null", "fix it")
    return TensorRule(
        bits=bits,
        signed=r.choices("signed", (True, False), (True,)),
        symmetric=r.choices("symmetric", (True, False), (True,)),
        granularity=r.choices("granularity", GRANULARITIES, ("per_tensor",)),
        scale=scale,
        narrow_range=narrow,
        source=r.source(sources),
    )


def _limit(path: str, where: str, data: Any) -> Limit:
    r = ProfileReader(path, where, data, ("exact", "multiple", "min", "max", "min_by_bits"))
    for k in ("exact", "multiple", "min", "max"):
        v = r.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise r.error(path, r.key(k), f"= {v!r} is not a non-negative integer", "fix it")
    by_bits = r.get("min_by_bits", {})
    if not isinstance(by_bits, dict) or not all(
        isinstance(k, int) and isinstance(v, int) for k, v in by_bits.items()
    ):
        raise r.error(path, r.key("min_by_bits"), "must map weight bits to a minimum", "fix it")
    return Limit(r.get("exact"), r.get("multiple"), r.get("min"), r.get("max"), dict(by_bits))


def _op_rule(path: str, kind: str, data: Any, sources: set[str]) -> OpRule:
    r = ProfileReader(path, f"ops.{kind}", data, ("runs", *LIMIT_KEYS, "strides", "source", "note"))
    runs = r.get("runs", True)
    if not isinstance(runs, bool):
        raise r.error(path, r.key("runs"), f"= {runs!r}; allowed: true, false", "fix it")
    strides = r.get("strides")
    if strides is not None and (
        not isinstance(strides, list)
        or not all(isinstance(s, list) and all(isinstance(i, int) for i in s) for s in strides)
    ):
        raise r.error(path, r.key("strides"), "must be a list of [h, w] integer pairs", "fix it")
    return OpRule(
        kind=kind,
        runs=runs,
        limits={k: _limit(path, f"ops.{kind}.{k}", r.data[k]) for k in LIMIT_KEYS if k in r.data},
        strides=tuple(tuple(s) for s in strides) if strides is not None else None,
        source=r.source(sources),
        note=str(r.get("note", "")),
    )


def load_profile(path: str | Path) -> Profile:
    """Read and validate one profile file; TargetError names the file, the key and the allowed values."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TargetError(f"target profile '{p}' cannot be read: {exc}.", "fix the file.") from exc
    top = (
        "name", "title", "summary", "aliases", "methods", "compliance_only", "unsupported", "sources",
        "weights", "activations", "bias", "multiplier_bits", "ops", "float_ops", "performance",
    )  # fmt: skip
    r = ProfileReader(str(p), "", data, top)
    src_list = r.get("sources", required=True)
    if not isinstance(src_list, list) or not src_list:
        raise r.error(str(p), "sources", "must be a non-empty list", "list the vendor documents")
    sources: dict[str, Source] = {}
    for i, s in enumerate(src_list):
        sr = ProfileReader(str(p), f"sources[{i}]", s, ("id", "title", "url"))
        sources[str(sr.get("id", required=True))] = Source(
            str(sr.get("id")), str(sr.get("title", required=True)), str(sr.get("url", required=True))
        )
    known = set(sources)
    b = ProfileReader(str(p), "bias", r.get("bias", required=True), ("bits", "scale", "source"))
    bias_bits = b.get("bits", required=True)
    if not isinstance(bias_bits, dict) or not all(
        isinstance(k, int) and v in (8, 16, 24, 32) for k, v in bias_bits.items()
    ):
        raise b.error(str(p), "bias.bits", "must map weight bits to 8, 16, 24 or 32", "fix it")
    ops_raw = r.get("ops", required=True)
    if not isinstance(ops_raw, dict):
        raise r.error(str(p), "ops", "must be a mapping of op kinds", "fix it")
    for kind in ops_raw:
        if kind not in OP_KINDS:
            close = difflib.get_close_matches(str(kind), OP_KINDS, n=1)
            raise r.error(
                str(p), f"ops.{kind}", f"is not a known op kind; allowed: {', '.join(OP_KINDS)}",
                f"rename it to '{close[0]}'" if close else "remove it",
            )  # fmt: skip
    mult = r.get("multiplier_bits")
    if mult is not None and (isinstance(mult, bool) or not isinstance(mult, int) or not 1 <= mult <= 32):
        raise r.error(str(p), "multiplier_bits", f"= {mult!r} is not an integer in 1..32", "fix it")
    aliases = r.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise r.error(str(p), "aliases", "must be a list of names", "fix it")
    compliance_only = r.get("compliance_only", False)
    if not isinstance(compliance_only, bool):
        raise r.error(str(p), "compliance_only", f"= {compliance_only!r}; allowed: true, false", "fix it")
    name = r.get("name", required=True)
    if not isinstance(name, str) or name != p.stem:
        raise r.error(str(p), "name", f"= {name!r} differs from the file name '{p.stem}'", "make them equal")
    return Profile(
        name=name,
        title=str(r.get("title", required=True)),
        summary=str(r.get("summary", required=True)),
        aliases=tuple(aliases),
        methods=r.choices("methods", ("static", "dynamic", "fp16", "weight-only"), ("static",)),
        compliance_only=compliance_only,
        unsupported=r.choice("unsupported", CONSEQUENCES, required=True),
        float_ops=r.choice("float_ops", ("host", "runs"), "host"),
        weights=_tensor_rule(str(p), "weights", r.get("weights", required=True), known),
        activations=_tensor_rule(str(p), "activations", r.get("activations", required=True), known),
        bias_bits={int(k): int(v) for k, v in bias_bits.items()},
        bias_scale=b.choice("scale", ("accumulator", "own_power_of_two"), "accumulator"),
        bias_source=b.source(known),
        multiplier_bits=mult,
        ops={str(k): _op_rule(str(p), str(k), v if v is not None else {}, known) for k, v in ops_raw.items()},
        sources=sources,
        path=str(p),
        performance=load_performance(str(p), r.get("performance"), known),
    )
