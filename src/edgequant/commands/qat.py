"""``edgequant qat``: fine-tune a PyTorch model with quantization in the loop, export it, and compare.

Flow: build the model (``--factory`` + ``--checkpoint``), read labelled training and evaluation data
through EdgeQuant's data layer (npz with ``labels``, image-folder classes, HDF5 + metadata CSV), score
the float model, a PTQ model (min-max calibration on up to ``calib_samples`` training samples) and the
QAT model after ``--epochs`` of ``edgequant.torch.train.fit``; the QAT model is written as
``<name>_<tag>.onnx`` (QDQ, with report and plan) and ``<name>_<tag>.pth`` (integer weights), and the
report gets an ``accuracy`` section with the three scores (PTQ and QAT from their integer modules,
and QAT once more from the exported ONNX model in ONNX Runtime) and the training history.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from edgequant.cli_support import default, is_quiet
from edgequant.commands.quantize_options import WeightBits, weight_bits_value
from edgequant.errors import DataError, EdgeQuantError, ModelError, RecipeError
from edgequant.outputs import check_writable


def _labeled(data: str, onnx_model: Any, what: str, max_samples: int | None = None) -> Any:
    import numpy as np

    from edgequant.evaluate.core import load_eval_data
    from edgequant.torch.train import Labeled

    ev = load_eval_data(data, onnx_model, batch_size=256, max_samples=max_samples)
    if ev.labels is None:
        raise DataError(
            f"the {what} data '{data}' has no labels, and qat trains on labels.",
            "give an .npz with a 'labels' array, an image folder with one sub-folder per class, or HDF5 with a "
            "metadata CSV label column.",
        )
    names = list(ev.batches[0])
    inputs = [np.concatenate([b[n] for b in ev.batches]) for n in names]
    return Labeled(inputs, np.asarray(ev.labels), ev.description)


def run_qat(
    model: Any,
    name: str,
    train_data: str,
    eval_data: str,
    input_shape: str,
    out: Path,
    *,
    task: str,
    epochs: int,
    lr: float,
    batch_size: int,
    optimizer: str,
    schedule: str,
    seed: int,
    device: str,
    recipe: Any,
    overrides: dict[str, Any],
    echo: Any = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The command's work, callable from Python; returns the report written beside the model.  The files
    it would write (``<name>_<tag>.onnx``, ``.json``, ``.plan.json``, ``.pth`` in ``out``) are checked
    before the training: one that exists needs ``overwrite`` (ExportError, nothing written)."""
    import tempfile

    import numpy as np
    import torch

    from edgequant.model import load_model
    from edgequant.model.io import write_text_atomic
    from edgequant.model.torch_import import export_torch, parse_input_shapes
    from edgequant.runtime import OrtRuntime
    from edgequant.torch import PTQModule, QATModule
    from edgequant.torch.train import check_labels, evaluate, fit
    from edgequant.torch.wrapper import make_recipe

    if task not in ("classification", "regression"):
        raise RecipeError(f"task '{task}' is unknown; allowed: classification, regression.", "use --task.")
    if device != "cpu":
        from edgequant.runtime.ort import available_providers

        cuda = torch.cuda.is_available()
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise RecipeError(
            f"device '{device}': the built-in QAT loop runs on the CPU only in this version; here torch "
            f"{torch.__version__} ({build}) reports CUDA {'available' if cuda else 'not available'}, and ONNX "
            f"Runtime has the providers {', '.join(available_providers())}.",
            "drop --device, or write your own loop around edgequant.torch.QATModule on the GPU.",
        )
    recipe_notes: list[str] = []
    if isinstance(recipe, str | Path) and Path(recipe).is_file():  # a TI config with quantization_method QAT
        from edgequant.recipe import load_recipe

        recipe = load_recipe(recipe, recipe_notes, flow="qat")
    rec = make_recipe(recipe, **overrides)
    from edgequant.pipeline import resolve_recipe  # the tag of the recipe as asked, before a target adapts it

    tag = resolve_recipe(recipe, {k: v for k, v in overrides.items() if v is not None}).default_tag
    planned = [out / f"{name}_{tag}{suffix}" for suffix in (".onnx", ".json", ".plan.json", ".pth")]
    check_writable(out, planned, overwrite=overwrite)  # before the training, as quantize does
    shapes = parse_input_shapes(input_shape)
    model = model.eval()
    with tempfile.TemporaryDirectory(prefix="edgequant-qat-") as tmp:
        probe = tuple(torch.zeros(*s) for s in shapes)
        export_torch(model, probe if len(probe) > 1 else probe[0], Path(tmp) / "m.onnx")
        fm = load_model(Path(tmp) / "m.onnx")
    train = _labeled(train_data, fm, "training")
    val = _labeled(eval_data, fm, "evaluation")
    check_labels(train, task, "training")  # type: ignore[arg-type]
    examples = tuple(torch.from_numpy(a[:4].copy()) for a in train.inputs)
    ex = examples if len(examples) > 1 else examples[0]
    say = echo or (lambda _s: None)
    for note in [] if is_quiet() else recipe_notes:
        say(f"note: {note}")
    float_score = evaluate(model, val, task)  # type: ignore[arg-type]
    say(f"float: {float_score:.4g}")
    ptq = PTQModule(model, ex, recipe=rec)
    with torch.no_grad():
        for i in range(0, min(len(train), rec.calib_samples), batch_size):
            ptq(*[torch.from_numpy(a[i : i + batch_size].copy()) for a in train.inputs])
    ptq_score = evaluate(ptq.convert(), val, task)  # type: ignore[arg-type]
    say(f"PTQ: {ptq_score:.4g}")
    qat = QATModule(model, ex, recipe=rec, total_epochs=epochs)

    def on_epoch(row: dict[str, float]) -> None:
        say(
            f"epoch {int(row['epoch'])}/{epochs}  loss {row['loss']:.4f}  score {row['score']:.4g}  ({row['seconds']:.1f} s)"
        )

    res = fit(qat, train, val, task=task, epochs=epochs, lr=lr, batch_size=batch_size,  # type: ignore[arg-type]
              optimizer=optimizer, schedule=schedule, seed=seed, on_epoch=on_epoch)  # fmt: skip
    qat_score = evaluate(qat.convert(), val, task)  # type: ignore[arg-type]
    stem = f"{name}_{tag}"
    check = {
        n: a[: rec.batch_size * 2] for n, a in zip([i.name for i in fm.graph.input], val.inputs, strict=False)
    }
    result = qat.export(ex, out / f"{stem}.onnx", check_data=check)
    qat.save(out / f"{stem}.pth")
    sess = OrtRuntime(allow_spinning=False).session(result.model, "the exported QAT model")
    try:
        in_name = next(i.name for i in result.model.graph.input)
        outs = [sess.run({in_name: val.inputs[0][i : i + 256]}) for i in range(0, len(val), 256)]
    finally:
        sess.close()
    y = np.concatenate([next(iter(o.values())) for o in outs])
    if task == "classification":
        onnx_score = 100.0 * float(np.mean(y.argmax(1) == val.labels))
    else:
        onnx_score = -float(np.mean((y.reshape(val.labels.shape) - val.labels) ** 2))
    report = result.report
    report["accuracy"] = {
        "metric": "top1_percent" if task == "classification" else "negative_mse",
        "eval_data": val.description,
        "eval_samples": len(val),
        "float": float_score,
        "ptq": ptq_score,
        "qat": qat_score,
        "qat_onnxruntime": onnx_score,
    }
    report["training"] = {
        "train_data": train.description, "train_samples": len(train), "epochs": epochs, "lr": lr,
        "batch_size": batch_size, "optimizer": optimizer, "schedule": schedule, "seed": seed,
        "best_epoch": res.best_epoch, "interrupted": res.interrupted,
        "seconds_per_epoch": round(res.seconds_per_epoch, 3), "history": res.history,
    }  # fmt: skip
    report["files"]["pth"] = f"{stem}.pth"
    report["notes"] = list(report.get("notes", [])) + recipe_notes
    write_text_atomic(out / f"{stem}.json", json.dumps(report, indent=1, default=str))
    return report


def register(app: typer.Typer) -> None:
    @app.command()
    def qat(
        model: Annotated[
            Path | None, typer.Argument(help="Unused with --factory (TorchScript cannot be traced).")
        ] = None,
        out: Annotated[Path, typer.Option("-o", "--out", help="Output directory.")] = Path("out"),
        factory: Annotated[
            str | None, typer.Option(help="'package.module:factory' building the model.")
        ] = None,
        checkpoint: Annotated[Path | None, typer.Option(help="State dict for --factory.")] = None,
        train_data: Annotated[
            str, typer.Option(help="Labelled data: npz with 'labels', image folder, HDF5+CSV.")
        ] = "",
        eval_data: Annotated[str, typer.Option(help="Labelled evaluation data (never trained on).")] = "",
        input_shape: Annotated[str, typer.Option(help="Example input shape, e.g. 1x1x8x8.")] = "",
        epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
        task: Annotated[str, typer.Option(help="classification | regression")] = "classification",
        target: Annotated[
            str | None, typer.Option(help="Hardware target, as in quantize " + default("target"))
        ] = None,
        weight_bits: WeightBits = None,
        act_bits: Annotated[int | None, typer.Option(help="8, 16 or 4 " + default("act_bits"))] = None,
        lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-3,
        batch_size: Annotated[int, typer.Option(help="Training batch size (samples).")] = 64,
        optimizer: Annotated[str, typer.Option(help="adam | sgd")] = "adam",
        schedule: Annotated[str, typer.Option(help="cosine | constant")] = "cosine",
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        device: Annotated[str, typer.Option(help="cpu (the built-in loop runs on the CPU).")] = "cpu",
        recipe: Annotated[
            Path | None,
            typer.Option(
                help="YAML recipe, or a TI Tensorlab config (quantization_method: QAT); flags override it."
            ),
        ] = None,
        tag: Annotated[str | None, typer.Option(help="Output name tag (default from the bits).")] = None,
        overwrite: Annotated[
            bool,
            typer.Option(
                "--overwrite", help="Replace this run's files in OUT if they exist.", show_default="off"
            ),
        ] = False,
    ) -> None:
        """Quantization-aware training: write <name>_<tag>.onnx/.pth and a float/PTQ/QAT report into OUT."""
        from edgequant.cli import err_console, fail

        try:
            if not factory:
                raise ModelError(
                    "qat needs the model's Python code (--factory package.module:fn, with --checkpoint): "
                    "a TorchScript archive cannot be traced by torch.fx.",
                    "pass --factory and --checkpoint.",
                )
            if not train_data or not eval_data or not input_shape:
                raise RecipeError(
                    "qat needs --train-data, --eval-data and --input-shape.", "add the missing options."
                )
            from edgequant.model.torch_import import load_factory

            module = load_factory(factory, checkpoint)
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", factory.split(":")[1])
            overrides = {
                "target": target,
                "weight_bits": weight_bits_value(weight_bits),
                "act_bits": act_bits,
                "tag": tag,
                "seed": seed,
            }
            from edgequant.recipe.flags import flag_words

            with flag_words():  # QATModule's refusals keep naming this command's flags
                report = run_qat(
                    module, name, train_data, eval_data, input_shape, out, task=task, epochs=epochs, lr=lr,
                    batch_size=batch_size, optimizer=optimizer, schedule=schedule, seed=seed, device=device,
                    recipe=recipe, overrides=overrides, overwrite=overwrite,
                    echo=lambda s: err_console.print(s, markup=False, highlight=False),
                )  # fmt: skip
        except EdgeQuantError as exc:
            fail(exc)
            return
        acc = report["accuracy"]
        typer.echo(
            f"{report['files']['model']}: float {acc['float']:.4g}, PTQ {acc['ptq']:.4g}, QAT {acc['qat']:.4g} "
            f"(ONNX Runtime {acc['qat_onnxruntime']:.4g}) [{acc['metric']}]"
        )
