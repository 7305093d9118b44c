"""Recipe: WHAT the user asked for, typed and validated, unknown keys rejected.

A recipe mirrors every CLI flag of ``edgequant quantize``; a YAML file with the same keys (dashes
or underscores) gives the same result as the flags.  The recipe never imports onnx: whether a
setting fits a particular model is the planner's question, not this module's.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from edgequant.errors import RecipeError
from edgequant.names import check_name

Method = Literal["static", "dynamic", "fp16", "weight-only"]
# auto: entropy (KL) ranges where the activations have at most 11 bits, min-max above and on transformers
# (calibration.observer_method);
# search: the best of minmax/percentile/entropy/mse by held-out output SQNR (algorithms.calib_search)
CalibMethod = Literal["auto", "minmax", "percentile", "entropy", "mse", "search"]
METHODS: tuple[str, ...] = get_args(Method)
CALIB_METHODS: tuple[str, ...] = get_args(CalibMethod)
# passes (edgequant.algorithms registers one per name), in the order they may run: on float weights first,
# then (bias_correction, mixed_precision) on the calibrated QDQ model
ALGORITHMS: tuple[str, ...] = (
    "cle", "smoothquant", "adaround", "block_clip", "gptq", "bias_correction", "mixed_precision"
)  # fmt: skip
WEIGHT_ONLY_PASSES: tuple[str, ...] = ("block_clip", "gptq")  # passes that choose weight ranges only
PREPROCESS_PRESETS: tuple[str, ...] = ("imagenet",)  # data.preprocess.PRESETS' names


@dataclass(frozen=True)
class Preprocess:
    """How raw data (images, video frames, CSV rows) becomes a model input.

    None means "not set": the model's declared normalisation fills it (``data.declared``), else the
    default (scale 1/255, or 1 for uint8 inputs; no mean/std; layout nchw; RGB; float32; the model's
    H x W).  A value
    set here always wins, field by field.  ``from_model`` lists the fields EdgeQuant filled from the
    model's metadata (not set by the user), so the run can say where each value came from.
    """

    preset: str | None = None  # e.g. "imagenet"
    resize: int | None = None  # shorter side, pixels
    center_crop: int | None = None
    channel_order: Literal["rgb", "bgr"] | None = None  # None: rgb
    layout: Literal["nchw", "nhwc"] | None = None  # None: nchw
    scale: float | None = None  # None: 1/255 (float inputs), 1 (uint8 inputs)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # None: float32, or the model input's own uint8 / float16
    dtype: Literal["float32", "float16", "uint8", "int8", "int64", "int32"] | None = None
    from_model: tuple[str, ...] = ()  # set by EdgeQuant: fields taken from the model's metadata

    def __post_init__(self) -> None:
        if self.preset is not None and self.preset not in PREPROCESS_PRESETS:
            raise RecipeError(
                f"unknown preprocess preset {self.preset[:64]!r}; known: {', '.join(PREPROCESS_PRESETS)}.",
                "use preset: imagenet, or set resize/center_crop/mean/std yourself.",
            )
        names = {f.name for f in fields(self)} - {"from_model", "preset"}
        odd = sorted(set(self.from_model) - names)
        if odd:
            raise RecipeError(
                f"preprocess.from_model names {odd}, which are not preprocess fields.",
                "drop from_model (EdgeQuant sets it when it fills fields from the model's metadata).",
            )

    def explicit(self) -> tuple[str, ...]:
        """The fields the user set (not None and not filled from the model's metadata)."""
        skip = {"from_model", *self.from_model}
        return tuple(f.name for f in fields(self) if f.name not in skip and getattr(self, f.name) is not None)


@dataclass(frozen=True)
class Recipe:
    method: Method = "static"
    weight_bits: int | Literal["ternary"] = 8  # 8, 4, 2, 1 (binary) or "ternary" ({-1, 0, +1})
    act_bits: int = 8
    per_channel: bool = True
    weight_symmetric: bool = True
    act_symmetric: bool = False
    act_signed: Literal["auto", "signed", "unsigned"] = "auto"
    power_of_two: bool = False
    block_size: int | None = None
    calib_data: str | None = None
    calib_method: CalibMethod = "auto"
    percentile: float = 99.99
    calib_samples: int = 128
    batch_size: int = 8
    sampling: Literal["first", "random"] = "first"
    seed: int = 0
    exclude: tuple[str, ...] = ()  # node names, op types, or regular expressions ("re:...")
    skip_first: bool = False
    skip_last: bool = False
    reduce_range: Literal["auto", "on", "off"] = "auto"
    keep_io_types: bool = True
    target: str = "cpu"
    fix: bool = False  # apply the target's exact graph fixes (padded channels, split kernels) before planning
    format: Literal["qdq", "ti-npu-int"] = "qdq"  # ti-npu-int: also the TI NPU integer-only form (ti-npu)
    tag: str | None = None
    input_map: dict[str, str] = field(default_factory=dict)
    preprocess: Preprocess = field(default_factory=Preprocess)
    data_options: dict[str, Any] = field(default_factory=dict)  # edgequant.data.SourceOptions names
    target_sqnr_db: float | None = None  # output SQNR vs float to reach by keeping sensitive nodes float
    max_float_nodes: int | None = None  # cap on those nodes; None: 10 % of the quantized compute nodes
    bias_correction: bool = False  # static: adds the bias_correction pass (an alias kept for old recipes)
    bias_correction_variant: Literal["sequential", "empirical"] = "sequential"  # algorithms.bias_correction
    dynamic_axes: dict[str, list[int]] = field(default_factory=dict)  # PyTorch export: {input: [axis]}
    algorithms: tuple[str, ...] = ()  # passes run in order (ALGORITHMS), e.g. ("cle", "adaround")
    keep_worse_passes: bool = False  # keep a pass that lowers the held-out SQNR (reverted otherwise)
    tune_trials: int = 0  # target tvm: MetaSchedule tuning trials (0: no tuning)
    tune_budget_s: float | None = None  # tune_trials: wall-time budget (s); no tuning round starts after it
    allow_synthetic: bool = False  # static without data: calibrate on random inputs (refused otherwise)
    check_samples: int = 32  # samples held back from calibration for the run check (at most half the data)
    act16_below_db: float | None = None  # static: 16-bit activations where the 8-bit grid's own SQNR is lower
    weight_centring: bool = False  # binary weights: signs against each channel's mean (schemes.lowbit)
    hoist_gru: bool = False  # static/dynamic: GRU input projections as int8 MatMuls (model.gru_hoist)
    # static activations: "all" (inputs/outputs of compute and pass-through ops), "matmul-inputs" (only
    # what MatMul/Gemm/Conv read: ORT runs MatMulIntegerToFloat), "auto" (matmul-inputs on transformers)
    placement: Literal["auto", "all", "matmul-inputs"] = "auto"
    # weight-only 4-bit MatMulNBits: ORT's accuracy_level (0 float compute, 4 int8 compute on per-block
    # int8 activations; export.nbits); gptq's row order; the tokens block_clip/gptq fit (algorithms.tokens)
    nbits_accuracy_level: int = 4
    gptq_act_order: bool = True
    token_mask: str = "auto"  # "auto" (an attention_mask input), "none", or a [batch, tokens] input name
    weight_8bit: tuple[
        str, ...
    ] = ()  # weight-only 4-bit: MatMuls (names / re: patterns) kept 8-bit (mixed 4/8)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise RecipeError(
                f"unknown method '{self.method}'; allowed: {', '.join(METHODS)}.",
                f"use one of {', '.join(METHODS)}" + _suggest(self.method, METHODS),
            )
        if self.calib_method not in CALIB_METHODS:
            raise RecipeError(
                f"unknown calibration method '{self.calib_method}'; allowed: {', '.join(CALIB_METHODS)}.",
                f"use one of {', '.join(CALIB_METHODS)}" + _suggest(self.calib_method, CALIB_METHODS),
            )
        if self.weight_bits not in (1, 2, 4, 8, "ternary"):
            raise RecipeError(
                f"weight bits {self.weight_bits} is impossible; allowed: 8, 4, 2, 1 (binary), ternary.",
                "use --weight-bits 8, 4, 2, 1 or ternary.",
            )
        self._check_lowbit()
        if self.act_bits not in (2, 4, 8, 16):
            raise RecipeError(
                f"activation bits {self.act_bits} is impossible; allowed: 4, 8, 16.",
                "use --act-bits 8 or 16.",
            )
        if self.hoist_gru and self.method not in ("static", "dynamic"):
            raise RecipeError(
                f"hoist_gru is set with method '{self.method}'; it moves GRU input projections into MatMuls "
                "that static or dynamic quantization turns into integers.",
                "use --method static or dynamic with --hoist-gru, or drop --hoist-gru.",
            )
        if self.act16_below_db is not None and not 0.0 < self.act16_below_db < 100.0:
            raise RecipeError(
                f"act16_below_db {self.act16_below_db} is outside (0, 100) dB.", "use a value such as 25."
            )
        if not 50.0 < self.percentile <= 100.0:
            raise RecipeError(
                f"percentile {self.percentile} is outside (50, 100].", "use a value such as 99.99."
            )
        if self.calib_samples < 1 or self.batch_size < 1:
            raise RecipeError(
                f"calib_samples ({self.calib_samples}) and batch_size ({self.batch_size}) must be >= 1.",
                "use positive counts.",
            )
        if self.block_size is not None and (self.block_size < 16 or self.block_size & (self.block_size - 1)):
            raise RecipeError(
                f"block size {self.block_size} is not a power of two >= 16.", "use 32, 64 or 128."
            )
        if self.weight_8bit and (
            self.method != "weight-only" or self.weight_bits != 4 or not self.block_size
        ):
            raise RecipeError(
                f"weight_8bit {list(self.weight_8bit)} is set with method '{self.method}', weight_bits "
                f"{self.weight_bits}, block_size {self.block_size}; it keeps some MatMuls 8-bit in a blocked "
                "4-bit weight-only model.",
                "use method weight-only with weight_bits 4 and a block_size, or drop weight_8bit.",
            )
        if self.nbits_accuracy_level not in (0, 1, 2, 3, 4):
            raise RecipeError(
                f"nbits_accuracy_level {self.nbits_accuracy_level} is not one of ORT's MatMulNBits levels 0-4.",
                "use 4 (int8 compute, the default) or 0 (float compute).",
            )
        if self.tag is not None:
            check_name(self.tag, "tag")  # it becomes part of the output file names
        if self.seed < 0:
            raise RecipeError(f"seed {self.seed} is negative.", "use a seed >= 0, e.g. 0.")
        if self.check_samples < 1:
            raise RecipeError(
                f"check_samples {self.check_samples} is not a positive count.",
                "use e.g. --check-samples 32 (samples held back from calibration for the run check).",
            )
        if self.placement not in ("auto", "all", "matmul-inputs"):
            raise RecipeError(
                f"unknown placement '{self.placement}'; allowed: auto, all, matmul-inputs.",
                "use one of them.",
            )
        self._check_sensitivity()
        self._check_target()
        if self.bias_correction and self.method != "static":
            raise RecipeError(
                f"bias_correction is set but method is '{self.method}'; it corrects the biases of a static "
                "int model against its calibration data, so it applies to method 'static' only.",
                "use --method static with --bias-correction, or drop --bias-correction.",
            )
        self._check_algorithms()
        self._alias_passes()
        if self.tune_trials < 0 or (self.tune_trials and self.target != "tvm"):
            raise RecipeError(
                f"tune_trials={self.tune_trials} with target '{self.target}'; tuning trials are a count >= 0 "
                "and apply to target 'tvm' only.",
                "drop --tune-trials, or use --target tvm --tune-trials 64.",
            )
        if self.tune_budget_s is not None and not (self.tune_budget_s > 0 and self.tune_trials):
            raise RecipeError(
                f"tune_budget_s={self.tune_budget_s} with tune_trials={self.tune_trials}; the budget is seconds > 0 "
                "and bounds MetaSchedule tuning, which runs only with tune_trials > 0 (target tvm).",
                "pass --tune-trials N with --tune-budget-s S (S > 0), or drop --tune-budget-s.",
            )
        self._check_ignored()

    @property
    def weight_int_bits(self) -> int:
        """The weights' bit width as a number (ternary: 2, the grid {-1, 0, +1} in 2 bits)."""
        return 2 if self.weight_bits == "ternary" else int(self.weight_bits)

    def _check_lowbit(self) -> None:
        """Binary and ternary weights: symmetric, per channel or per tensor, static or weight-only."""
        if self.weight_centring and self.weight_bits != 1:
            raise RecipeError(
                f"weight_centring is set with weight_bits {self.weight_bits}; it centres binary weights only.",
                "use --weight-bits 1 with --weight-centring, or drop --weight-centring.",
            )
        if self.weight_bits not in (1, "ternary"):
            return
        kind = "binary" if self.weight_bits == 1 else "ternary"
        if self.method not in ("static", "weight-only"):
            raise RecipeError(
                f"{kind} weights (weight_bits {self.weight_bits}) with method '{self.method}'; they are "
                "stored as int8 codes with a DequantizeLinear, which methods static and weight-only write.",
                "use --method static or weight-only.",
            )
        if not self.weight_symmetric:
            raise RecipeError(
                f"{kind} weights are symmetric by definition (codes {{-1, +1}} or {{-1, 0, +1}}, zero "
                "point 0), and asymmetric weights were asked for.",
                "drop the asymmetric weight setting"
                + (" (--weight-centring centres binary signs)." if kind == "binary" else "."),
            )
        if self.block_size is not None:
            raise RecipeError(
                f"{kind} weights have one scale per channel or per tensor; block_size {self.block_size} "
                "would be ignored.",
                "drop --block-size.",
            )

    def _check_ignored(self) -> None:
        """An option the chosen method would not read is refused, naming the option."""
        m = self.method
        if m == "fp16" and self.weight_bits != 8:
            raise RecipeError(
                f"weight_bits {self.weight_bits} is set but method 'fp16' stores weights as float16, "
                "so the option would be ignored.",
                "drop --weight-bits, or use --method weight-only / static for integer weights.",
            )
        if m != "static" and self.act_bits != 8:
            raise RecipeError(
                f"act_bits {self.act_bits} is set but method '{m}' does not quantize activations to a "
                "fixed bit width, so the option would be ignored.",
                "drop --act-bits, or use --method static.",
            )
        if m != "weight-only" and self.block_size is not None:
            raise RecipeError(
                f"block_size {self.block_size} is set but method '{m}' has no block-wise weights, so the "
                "option would be ignored.",
                "drop --block-size, or use --method weight-only.",
            )
        if m == "dynamic" and self.calib_data is not None:
            raise RecipeError(
                "calib_data is set but method 'dynamic' computes activation ranges at run time and "
                "calibrates nothing, so the option would be ignored.",
                "drop --calib-data (the run check then uses synthetic inputs and says so), "
                "or use --method static.",
            )

    def _check_target(self) -> None:
        """The target is a known profile name (case and aliases resolved: 'onnx' is 'cpu'); an unknown
        one is refused with the known names and the closest match (edgequant.targets)."""
        from edgequant import targets

        object.__setattr__(self, "target", targets.canonical(self.target))
        if self.format == "ti-npu-int" and (self.target != "ti-npu" or self.method != "static"):
            raise RecipeError(
                f"--format ti-npu-int is TI's NPU integer form, but the target is '{self.target}' and the method "
                f"'{self.method}'; it is written from a static model quantized for target 'ti-npu' only.",
                "add --target ti-npu (and --method static), or drop --format (the QDQ model is the default).",
            )

    def _check_algorithms(self) -> None:
        for name in self.algorithms:
            if name not in ALGORITHMS:
                raise RecipeError(
                    f"unknown algorithm '{name}'; known: {', '.join(ALGORITHMS)}.",
                    "use one of the known names" + _suggest(name, ALGORITHMS) + ".",
                )
        if (
            self.algorithms
            and self.method == "weight-only"
            and set(self.algorithms) <= set(WEIGHT_ONLY_PASSES)
        ):
            pass  # block_clip and gptq choose weight grids only: weight-only runs them too
        elif self.algorithms and self.method != "static":
            raise RecipeError(
                f"algorithms {list(self.algorithms)} are set but method is '{self.method}'; the passes refine "
                "the weights of a static int model, so they apply to method 'static' only "
                f"(weight-only takes {', '.join(WEIGHT_ONLY_PASSES)}).",
                "use --method static with --algorithm, or drop --algorithm.",
            )
        if len(set(self.algorithms)) != len(self.algorithms):
            raise RecipeError(
                f"algorithms {list(self.algorithms)} name a pass twice.", "list each pass once."
            )
        order = [ALGORITHMS.index(a) for a in self.algorithms]
        if order != sorted(order):
            raise RecipeError(
                f"algorithms {list(self.algorithms)} are out of order; passes run in the order "
                f"{', '.join(ALGORITHMS)} (equalize weights before choosing their rounding).",
                f"write them as {[a for a in ALGORITHMS if a in self.algorithms]}.",
            )

    def _alias_passes(self) -> None:
        """``bias_correction: true`` and ``target_sqnr_db`` add their passes (``bias_correction``,
        ``mixed_precision``) to ``algorithms``, in the passes' order; the passes need their settings."""
        extra = (("bias_correction",) if self.bias_correction else ()) + (
            ("mixed_precision",) if self.target_sqnr_db is not None else ()
        )
        names = tuple(sorted({*self.algorithms, *extra}, key=ALGORITHMS.index))
        object.__setattr__(self, "algorithms", names)
        if "mixed_precision" in names and self.target_sqnr_db is None:
            raise RecipeError(
                "algorithm 'mixed_precision' keeps the most sensitive nodes float until the output SQNR "
                "reaches target_sqnr_db, and target_sqnr_db is not set.",
                "add --target-sqnr DB (which runs the pass by itself), or drop mixed_precision.",
            )
        if self.bias_correction_variant != "sequential" and "bias_correction" not in names:
            raise RecipeError(
                f"bias_correction_variant is '{self.bias_correction_variant}' but bias correction does not run.",
                "add --bias-correction (or bias_correction to algorithms), or drop bias_correction_variant.",
            )

    def _check_sensitivity(self) -> None:
        target, cap = self.target_sqnr_db, self.max_float_nodes
        if target is not None and not (math.isfinite(target) and target > 0):
            raise RecipeError(
                f"target_sqnr_db {target} is not a positive, finite number of dB.",
                "use e.g. --target-sqnr 25 (dB of output SQNR against the float model).",
            )
        if target is not None and self.method != "static":
            raise RecipeError(
                f"target_sqnr_db is set but method is '{self.method}'; the target keeps nodes of a static "
                "int model float, so it applies to method 'static' only.",
                "use --method static with --target-sqnr, or drop --target-sqnr.",
            )
        if cap is not None and cap < 1:
            raise RecipeError(
                f"max_float_nodes {cap} is not a positive count.",
                "use e.g. --max-float-nodes 5, or leave it unset for 10 % of the quantized compute nodes.",
            )
        if cap is not None and target is None:
            raise RecipeError(
                f"max_float_nodes ({cap}) is set but target_sqnr_db is not; the cap limits the nodes "
                "that --target-sqnr keeps float.",
                "add --target-sqnr DB, or drop --max-float-nodes.",
            )

    @property
    def default_tag(self) -> str:
        """The output tag: ``tag`` when set, else one that encodes every setting that changes the model
        (``recipe.tags``: e.g. ``int8``, ``int8_pt``, ``w4a8_entropy``, ``int8_sym_ti-npu``)."""
        from edgequant.recipe.tags import derive

        return derive(self)

    def replace(self, **changes: Any) -> Recipe:
        return from_dict({**to_dict(self), **changes})


def _suggest(value: str, allowed: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(allowed), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint; return it in canonical form or raise RecipeError."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _coerce(value, opt, where)
            except RecipeError as exc:
                errors.append(exc.detail)
        raise RecipeError(
            f"{where}: {'; or '.join(e.rstrip('.') for e in errors) + '.' if errors else 'bad value'}",
            "see 'edgequant quantize --help'.",
        )
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise RecipeError(
                f"{where} = {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}.",
                f"use one of {', '.join(map(str, allowed))}" + _suggest(str(value), map(str, allowed)),
            )
        return value
    if origin in (tuple, list):  # list: e.g. dynamic_axes {input: [1]}
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise RecipeError(f"{where} must be a list, got {type(value).__name__}.", "write a YAML list.")
        item = get_args(hint)[0]
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(
                f"{where} must be a mapping, got {type(value).__name__}.", "write a YAML mapping."
            )
        item_hint = get_args(hint)[1]
        if item_hint is Any:  # option values are checked by their owner (e.g. data.SourceOptions)
            return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
        return {str(k): _coerce(v, item_hint, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):  # type: ignore[arg-type]
            return value
        if not isinstance(value, dict):
            raise RecipeError(
                f"{where} must be a mapping, got {type(value).__name__}.", "write a YAML mapping."
            )
        return _build(hint, value, where)  # type: ignore[arg-type]
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where} must be true or false, got {value!r}.", "write true or false.")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where} must be an integer, got {value!r}.", "write a whole number.")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecipeError(f"{where} must be a number, got {value!r}.", "write a number.")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where} must be a string, got {value!r}.", "quote the value.")
        return value
    raise RecipeError(f"{where}: unsupported type {hint}.", "report this as a bug.")


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str | int | float | bool) for v in value):
        return list(value)
    raise RecipeError(
        f"{where} must be a number, string, boolean or list of them, got {value!r}.", "simplify it."
    )


# recipe keys spelled as the CLI flags (``--symmetric``, ``--target-sqnr``, ``--data-option``) -> field
FLAG_KEYS: dict[str, str] = {
    "symmetric": "act_symmetric",
    "target_sqnr": "target_sqnr_db",
    "data_option": "data_options",
    "dynamic_axis": "dynamic_axes",
    "algorithm": "algorithms",
}
# fields whose flag takes a list of strings (KEY=VALUE, INPUT:AXIS): a recipe may give that list too
_FLAG_LISTS = ("data_options", "dynamic_axes")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if cls is Recipe and key in FLAG_KEYS:  # the flag's spelling; the field's name stays accepted
            key = FLAG_KEYS[key]
            if key in kwargs or key in data:
                raise RecipeError(
                    f"{where} sets both '{raw_key}' and '{key}', two spellings of one setting.",
                    f"keep one of them ('{raw_key}' is the CLI flag's name).",
                )
        if key not in names:
            allowed = names | (set(FLAG_KEYS) if cls is Recipe else set())
            raise RecipeError(
                f"unknown key '{raw_key}' in {where}; allowed: {', '.join(sorted(allowed))}.",
                "remove or rename the key" + _suggest(key, names) + ".",
            )
        if cls is Recipe and key in _FLAG_LISTS and isinstance(value, list | tuple):
            from edgequant.recipe import flags

            parse = flags.key_values if key == "data_options" else flags.input_axes
            value = parse(value, f"recipe key '{raw_key}'")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where != "recipe" else key)
    return cls(**kwargs)


def from_dict(data: dict[str, Any]) -> Recipe:
    """Build a Recipe from a mapping (YAML, JSON body, CLI flags); unknown keys are errors."""
    if not isinstance(data, dict):
        raise RecipeError(
            f"a recipe must be a mapping, got {type(data).__name__}.", "write key: value pairs."
        )
    recipe: Recipe = _build(Recipe, data, "recipe")
    return recipe


def to_dict(recipe: Recipe) -> dict[str, Any]:
    out = dataclasses.asdict(recipe)
    out["exclude"] = list(recipe.exclude)
    out["weight_8bit"] = list(recipe.weight_8bit)
    out["algorithms"] = list(recipe.algorithms)
    pre = out["preprocess"]
    for k in ("mean", "std"):
        if pre[k] is not None:
            pre[k] = list(pre[k])
    pre["from_model"] = list(pre["from_model"])
    return out


def to_flag_dict(recipe: Recipe) -> dict[str, Any]:
    """``to_dict`` with the keys spelled as the CLI flags (``symmetric``, ``target_sqnr``, ``data_option``,
    ``dynamic_axis``, ``algorithm``), without the options the method does not read (``recipe.applies``):
    what ``--print-recipe`` prints; ``from_dict`` reads it back."""
    from edgequant.recipe.applies import reads

    to_flag = {field_name: flag for flag, field_name in FLAG_KEYS.items()}
    # only the options the method reads: the printed recipe given back as --recipe is accepted as it is
    return {to_flag.get(k, k): v for k, v in to_dict(recipe).items() if reads(recipe, k)}


def load_recipe(path: str | Path, notes: list[str] | None = None, flow: str = "ptq") -> Recipe:
    """Read a YAML recipe file: EdgeQuant keys, or a TI Tensorlab-style config (``recipe.ti_config``),
    whose notes (e.g. a device without an NPU) are appended to ``notes``; ``flow`` "qat" reads a TI
    config for ``edgequant qat`` (``quantization_method: QAT``)."""
    return from_dict(read_recipe(path, notes, flow))


def read_recipe(path: str | Path, notes: list[str] | None = None, flow: str = "ptq") -> dict[str, Any]:
    """The mapping of a YAML recipe file (``load_recipe`` without building the Recipe): its keys are
    the options the file gives."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe file '{p}' does not exist.", "check the path given to --recipe.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe file '{p}' is not valid YAML: {exc}.", "fix the YAML syntax.") from exc
    if data is None:
        data = {}
    from edgequant.recipe.ti_config import from_tensorlab, is_tensorlab

    if is_tensorlab(data):
        data, ti_notes = from_tensorlab(data, flow)
        if notes is not None:
            notes.extend(ti_notes)
    if not isinstance(data, dict):
        raise RecipeError(f"recipe file '{p}' is not a mapping of keys.", "write key: value pairs.")
    return data
