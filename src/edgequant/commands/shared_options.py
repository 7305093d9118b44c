"""Options that ``quantize``, ``compare`` and ``evaluate`` declare alike, as ``Annotated`` types.

The first group is in all three commands (ONNX Runtime's device, the PyTorch model options), the second
in ``compare`` and ``evaluate`` (the evaluated model, the evaluation task and the per-layer analysis).
A flag's name comes from the parameter's name, so one type serves ``max_samples`` and
``max_eval_samples`` alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# quantize, compare, evaluate
Device = Annotated[
    str | None,
    typer.Option(help="cpu, cuda or cuda:N: ONNX Runtime's provider (no CPU fallback) [default: cpu]."),
]
GpuNumber = Annotated[int | None, typer.Option(help="Alias for --device cuda:N.")]
Factory = Annotated[str | None, typer.Option(help="PyTorch 'package.module:factory'.")]
Checkpoint = Annotated[
    Path | None, typer.Option(help="Checkpoint for --factory: file, or run dir with args.json/config.")
]
DynamicAxis = Annotated[
    list[str] | None,
    typer.Option(help="PyTorch export: INPUT:AXIS made dynamic (e.g. input:1). Repeatable."),
]

# compare, evaluate
FloatModel = Annotated[
    Path, typer.Argument(help="The float model: ONNX, TorchScript, or a name for --factory/--checkpoint.")
]
InputShape = Annotated[str | None, typer.Option(help="PyTorch example input shape, e.g. 1x20x8.")]
DataOption = Annotated[
    list[str] | None, typer.Option(help="Data option KEY=VALUE as for quantize (e.g. metadata_csv=m.csv).")
]
Task = Annotated[str, typer.Option(help="classification | regression | embedding | sequence")]
Blank = Annotated[int, typer.Option(help="CTC blank index (sequence).")]
Threads = Annotated[int, typer.Option(help="ORT intra-op threads (0 = ORT default).")]
TopK = Annotated[int, typer.Option(help="Nodes for the only-this-layer analysis.")]
LayerSamples = Annotated[int, typer.Option(help="Samples for the per-layer analysis.")]
MaxSamples = Annotated[int | None, typer.Option(help="Evaluate at most N samples.")]
