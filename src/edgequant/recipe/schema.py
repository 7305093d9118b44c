"""Recipe: WHAT the user asked for, typed and validated, unknown keys rejected.

A recipe mirrors every CLI flag of ``edgequant quantize``; a YAML file with the same keys (dashes
or underscores) gives the same result as the flags.  The recipe never imports onnx: whether a
setting fits a particular model is the planner's question, not this module's.

This module holds the vocabulary, ``Preprocess`` and ``Recipe`` with its per-field checks; the
cross-field rules are in ``recipe.rules``, the mapping/YAML conversions in ``recipe.serialize``
(re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from edgequant.errors import RecipeError
from edgequant.names import check_name
from edgequant.recipe import rules
from edgequant.recipe.rules import suggest
from edgequant.recipe.serialize import (  # re-exported: callers import them from here
    FLAG_KEYS,
    from_dict,
    load_recipe,
    read_recipe,
    to_dict,
    to_flag_dict,
)

Method = Literal["static", "dynamic", "fp16", "weight-only"]
# auto: entropy (KL) ranges where the activations have at most 11 bits, min-max above and on transformers
# (calibration.observer_method);
# search: the default's ranges unless minmax/percentile/entropy/mse is significantly better on held-out
# samples (algorithms.calib_search)
CalibMethod = Literal["auto", "minmax", "percentile", "entropy", "mse", "search"]
METHODS: tuple[str, ...] = get_args(Method)
CALIB_METHODS: tuple[str, ...] = get_args(CalibMethod)
# passes (edgequant.algorithms registers one per name), in the order they may run: on float weights first,
# then (bias_correction, mixed_precision) on the calibrated QDQ model
ALGORITHMS: tuple[str, ...] = (
    "cle", "cle_bounds", "smoothquant", "adaround", "brecq", "block_clip", "gptq", "bias_correction", "mixed_precision"
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
    # static: 16-bit activations where the 8-bit grid's own SQNR (dB) is lower; "auto": 25 dB on
    # MatMul/Gemm inputs under the transformer placement, off elsewhere (algorithms.act16.threshold);
    # None (old recipes) means "off"
    act16_below_db: float | Literal["auto", "off"] | None = "auto"
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
    ] = ()  # layers (names / re: / first / last) kept 8-bit: static low-bit or weight-only 4-bit (mixed 4/8)

    def __post_init__(self) -> None:
        from edgequant.recipe.flags import api_refusals

        # built directly (``edgequant.Recipe(act_bits=3)``): refusals name the fields, ``act_bits=8``;
        # from_dict (the CLI, REST, the API functions) keeps the flags for its caller to word
        api_refusals(self._check)()

    def _check(self) -> None:
        """The per-field checks, then ``recipe.rules``; RecipeError in the CLI's flag words."""
        if self.method not in METHODS:
            raise RecipeError(
                f"unknown method '{self.method}'; allowed: {', '.join(METHODS)}.",
                f"use one of {', '.join(METHODS)}" + suggest(self.method, METHODS),
            )
        if self.calib_method not in CALIB_METHODS:
            raise RecipeError(
                f"unknown calibration method '{self.calib_method}'; allowed: {', '.join(CALIB_METHODS)}.",
                f"use one of {', '.join(CALIB_METHODS)}" + suggest(self.calib_method, CALIB_METHODS),
            )
        if self.weight_bits not in (1, 2, 4, 8, "ternary"):
            raise RecipeError(
                f"weight bits {self.weight_bits} is impossible; allowed: 8, 4, 2, 1 (binary), ternary.",
                "use --weight-bits 8, 4, 2, 1 or ternary.",
            )
        rules.check_lowbit(self)
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
        rules.check_act16(self)
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
        blocked4 = self.method == "weight-only" and self.weight_bits == 4 and bool(self.block_size)
        lowbit_static = self.method == "static" and self.weight_int_bits < 8
        if self.weight_8bit and not (blocked4 or lowbit_static):
            given = " ".join(f"--weight-8bit {w}" for w in self.weight_8bit)
            block = f" --block-size {self.block_size}" if self.block_size else " and no --block-size"
            block = block if self.method == "weight-only" else ""
            raise RecipeError(  # in flag words: the REST service names its fields (recipe.flags.rest_words)
                f"{given} keeps layers 8-bit among lower-bit weights, but this run has --method {self.method} "
                f"--weight-bits {self.weight_bits}{block}: it applies only to a static model with weights below 8 "
                "bits, or to a 4-bit weight-only model in blocks.",
                "add --weight-bits 4 (static), or use --method weight-only --weight-bits 4 --block-size 32, or drop "
                "--weight-8bit.",
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
        rules.check_sensitivity(self)
        rules.check_target(self)
        if self.bias_correction and self.method != "static":
            raise RecipeError(
                f"bias_correction is set but method is '{self.method}'; it corrects the biases of a static "
                "int model against its calibration data, so it applies to method 'static' only.",
                "use --method static with --bias-correction, or drop --bias-correction.",
            )
        rules.check_algorithms(self)
        rules.alias_passes(self)
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
        rules.check_ignored(self)

    @property
    def weight_int_bits(self) -> int:
        """The weights' bit width as a number (ternary: 2, the grid {-1, 0, +1} in 2 bits)."""
        return 2 if self.weight_bits == "ternary" else int(self.weight_bits)

    @property
    def default_tag(self) -> str:
        """The output tag: ``tag`` when set, else one that encodes every setting that changes the model
        (``recipe.tags``: e.g. ``int8``, ``int8_pt``, ``w4a8_entropy``, ``int8_sym_ti-npu``)."""
        from edgequant.recipe.tags import derive

        return derive(self)

    def replace(self, **changes: Any) -> Recipe:
        return from_dict({**to_dict(self), **changes})


__all__ = [
    "ALGORITHMS",
    "CALIB_METHODS",
    "FLAG_KEYS",
    "METHODS",
    "PREPROCESS_PRESETS",
    "WEIGHT_ONLY_PASSES",
    "CalibMethod",
    "Method",
    "Preprocess",
    "Recipe",
    "from_dict",
    "load_recipe",
    "read_recipe",
    "to_dict",
    "to_flag_dict",
]
