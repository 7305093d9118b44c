"""The options of ``edgequant quantize`` that no other command shares, as ``Annotated`` types.

Each type carries the flag's help text (with the Recipe default it falls back to, ``cli_support.default``);
the parameter's name in ``commands.quantize`` gives the flag's name where no explicit spelling is set.
Options shared with ``compare``/``evaluate`` are in ``commands.shared_options``, the image/video ones in
``commands.preprocess_options`` and the Ray ones in ``commands.executor_options``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgequant.cli_support import default

Model = Annotated[
    Path,
    typer.Argument(
        help="ONNX file, a TorchScript file (.pt) with --input-shape, or (with edgequant[tf]) a "
        ".keras/.h5 file or SavedModel directory."
    ),
]
Out = Annotated[
    Path,
    typer.Option(
        "-o",
        "--out",
        help="Output directory, or a path ending in .onnx for the model file (sidecars beside it).",
    ),
]
Overwrite = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace this run's output files if they exist.", show_default="off"),
]
Method = Annotated[
    str | None, typer.Option(help="static | dynamic | fp16 | weight-only " + default("method"))
]
WeightBits = Annotated[
    str | None,
    typer.Option(help="8, 4, 2, 1 (binary) or ternary (int8 containers below 4) " + default("weight_bits")),
]


def weight_bits_value(value: str | None) -> int | str | None:
    """``--weight-bits`` as the Recipe takes it: digits -> int (``"4"`` -> 4), else the word (``"ternary"``);
    the Recipe refuses a value outside 8, 4, 2, 1, ternary (RecipeError, one line, exit 2)."""
    return int(value) if value and value.isdigit() else value


WeightCentring = Annotated[
    bool | None,
    typer.Option(
        "--weight-centring/--no-weight-centring",
        help="Binary weights: take each sign against its channel's mean. "
        + default("weight_centring", "off"),
    ),
]
ActBits = Annotated[int | None, typer.Option(help="8, 16 or 4 " + default("act_bits"))]
PerChannel = Annotated[
    bool | None,
    typer.Option(
        "--per-channel/--per-tensor",
        help="Weight scales per output channel, or one per tensor. " + default("per_channel", "per-channel"),
    ),
]
Symmetric = Annotated[
    bool | None,
    typer.Option(
        "--symmetric/--asymmetric",
        help="Activation ranges symmetric around 0, or with a zero point. "
        + default("act_symmetric", "asymmetric"),
    ),
]
ActSigned = Annotated[
    str | None, typer.Option(help="Activation type: auto | signed | unsigned " + default("act_signed"))
]
PowerOfTwo = Annotated[
    bool | None,
    typer.Option(
        "--power-of-two/--float-scales",
        help="Scales rounded to powers of two (shift-only hardware), or any float. "
        + default("power_of_two", "float-scales"),
    ),
]
BlockSize = Annotated[
    int | None,
    typer.Option(help="Weight-only: weights in blocks of N along the input axis " + default("block_size")),
]
CalibData = Annotated[
    str | None, typer.Option(help=".npy/.npz, image folder, video, HDF5 or CSV (see docs/data.md).")
]
CalibMethod = Annotated[
    str | None,
    typer.Option(help="auto | minmax | percentile | entropy | mse | search " + default("calib_method")),
]
Percentile = Annotated[
    float | None,
    typer.Option(help="Percentile of |x| kept by --calib-method percentile " + default("percentile")),
]
CalibSamples = Annotated[
    int | None, typer.Option(help="Calibration samples to read " + default("calib_samples"))
]
BatchSize = Annotated[int | None, typer.Option(help="Calibration batch size " + default("batch_size"))]
Sampling = Annotated[
    str | None, typer.Option(help="Which samples: first | random (seeded) " + default("sampling"))
]
Seed = Annotated[int | None, typer.Option(help="Seed of every random choice " + default("seed"))]
Exclude = Annotated[
    list[str] | None,
    typer.Option(help="Node name, op type, or re:REGEX to keep float. Repeatable. [default: none]"),
]
Weight8bit = Annotated[
    list[str] | None,
    typer.Option(
        "--weight-8bit",
        help="A layer kept 8-bit among low-bit weights (mixed 4/8): a node name, re:REGEX, 'first' or 'last' "
        "(compute layer). Static with --weight-bits 4/2/1/ternary: its Conv/Gemm/MatMul weight 8-bit. Weight-only "
        "4-bit with --block-size: a MatMul as MatMulNBits bits=8, or 'auto' (chosen by measured output-SQNR gain "
        "on held-out samples). Repeatable. [default: none]",
    ),
]
SkipFirst = Annotated[
    bool | None,
    typer.Option(
        "--skip-first/--no-skip-first",
        help="Keep the first compute node float. " + default("skip_first", "no"),
    ),
]
SkipLast = Annotated[
    bool | None,
    typer.Option(
        "--skip-last/--no-skip-last",
        help="Keep the last compute node float. " + default("skip_last", "no"),
    ),
]
ReduceRange = Annotated[
    str | None,
    typer.Option(help="7-bit weights for CPUs without VNNI: auto | on | off " + default("reduce_range")),
]
Tag = Annotated[
    str | None,
    typer.Option(help="Output name tag [default: from the settings, e.g. int8, int8_pt, w4a8]."),
]
DataOption = Annotated[
    list[str] | None, typer.Option(help="Data format option KEY=VALUE, e.g. video_frames=32. Repeatable.")
]
TargetSqnr = Annotated[
    float | None,
    typer.Option(
        metavar="DB",
        help="Static: keep the most sensitive nodes float until the output SQNR reaches DB "
        + default("target_sqnr_db", "none: no search"),
    ),
]
MaxFloatNodes = Annotated[
    int | None,
    typer.Option(metavar="N", help="Cap for --target-sqnr [default: 10 % of the quantized compute nodes]."),
]
AllowSynthetic = Annotated[
    bool | None,
    typer.Option(
        "--allow-synthetic/--no-allow-synthetic",
        help="Static without --calib-data: calibrate on random inputs (refused otherwise) "
        + default("allow_synthetic", "no-allow-synthetic"),
    ),
]
CheckSamples = Annotated[
    int | None,
    typer.Option(
        metavar="N",
        help="Samples held back from calibration for the run check " + default("check_samples"),
    ),
]
BiasCorrection = Annotated[
    bool | None,
    typer.Option(
        "--bias-correction/--no-bias-correction",
        help="Static: fold the per-channel output mean shift of quantized Conv/Gemm into their biases "
        + default("bias_correction", "no-bias-correction"),
    ),
]
Target = Annotated[
    str | None,
    typer.Option(
        help="Hardware target profile: cpu, ti-npu, vitis-dpu, cmsis-nn, akida, akida1 (.h5); tvm: Apache TVM "
        + default("target"),
    ),
]
TuneTrials = Annotated[
    int | None,
    typer.Option(metavar="N", help="--target tvm: MetaSchedule tuning trials " + default("tune_trials")),
]
TuneBudgetS = Annotated[
    float | None,
    typer.Option(
        metavar="S",
        help="--tune-trials: wall-time budget in seconds; tuning runs in rounds and starts no round after "
        "it " + default("tune_budget_s"),
    ),
]
Algorithm = Annotated[
    list[str] | None,
    typer.Option(
        metavar="NAME",
        help="Run a pass, in order: cle, cle_bounds, smoothquant, adaround, brecq, bias_correction, mixed_precision "
        "(static); "
        "block_clip, gptq (weight-only blocked 4-bit MatMuls). Repeatable. [default: none]",
    ),
]
KeepWorsePasses = Annotated[
    bool | None,
    typer.Option(
        "--keep-worse-passes/--no-keep-worse-passes",
        help="Keep a pass that lowers the held-out output SQNR by more than 0.05 dB (reverted otherwise) "
        + default("keep_worse_passes", "no-keep-worse-passes"),
    ),
]
Fix = Annotated[
    bool | None,
    typer.Option(
        "--fix/--no-fix",
        help="Apply the target's exact fixes (zero-padded channels, split tall kernels) "
        + default("fix", "no-fix"),
    ),
]
Act16BelowDb = Annotated[
    str | None,
    typer.Option(
        "--act16-below-db",
        metavar="DB|auto|off",
        help="Static: 16-bit activations on tensors whose own 8-bit SQNR is below DB; auto: 25 dB on MatMul/Gemm "
        "inputs under the transformer placement, off elsewhere; off: 8-bit everywhere "
        + default("act16_below_db"),
    ),
]


def act16_value(text: str | None) -> float | str | None:
    """``--act16-below-db``'s text as the recipe value: a number of dB, or the word (auto, off) as given
    (the recipe refuses anything else, naming the allowed values)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text.strip().lower()


HoistGru = Annotated[
    bool | None,
    typer.Option(
        "--hoist-gru",
        help="Static/dynamic: each GRU's input projection over the sequence becomes an int8 MatMul "
        "(recurrence float; measured slower than float in ORT, see README) " + default("hoist_gru", "off"),
    ),
]
Placement = Annotated[
    str | None,
    typer.Option(
        metavar="auto|all|matmul-inputs",
        help="Static activation Q/DQ: all ops, or only MatMul/Gemm/Conv inputs (auto: that on transformers) "
        + default("placement"),
    ),
]
Format = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="qdq | ti-npu-int: with --target ti-npu, also write TI's integer-only NPU form "
        "<name>_<tag>_ti-npu-int.onnx (no DequantizeLinear inside), checked against the QDQ model "
        + default("format"),
    ),
]
Recipe = Annotated[
    str | None,
    typer.Option(
        help="YAML recipe file, or a preset name (int8-static, w4a8, ...); flags given here override it."
    ),
]
PrintRecipe = Annotated[
    bool,
    typer.Option(
        "--print-recipe", help="Print the effective recipe (YAML) before the run.", show_default="off"
    ),
]
InputShape = Annotated[
    str | None,
    typer.Option(
        help="PyTorch example input shape, e.g. 1x3x32x32 [default: the first sample of a .npy/.npz --calib-data]."
    ),
]
Executor = Annotated[
    str,
    typer.Option(help="local, or ray: the --target-sqnr per-node runs as Ray tasks (edgequant[ray])."),
]
