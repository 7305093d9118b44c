"""``evaluate``: run the float and the quantized model on the same batches and score both.

Both models see exactly the same feeds, batch by batch; their chosen output (default: the first
graph output) is concatenated along the batch axis and handed to ``edgequant.evaluate.tasks``.
Evaluation data is held in memory (it is the eval set, usually small); ``max_samples`` caps it.

Variable-length trials (HDF5 one group per trial, ``edgequant.data.trials``) with per-time-step
outputs ``[N, T, C]`` are scored per time step: each batch's output keeps only its real steps
(``EvalData.steps``: the padding mask of ``hdf5_mask_input``, else every step), and the steps of all
trials are stacked into ``[F, C]`` rows, F the number of real steps.  Per-step labels are flattened the
same way, so top-1 is frame-level accuracy and SQNR/agreement cover every real step, padding never.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from edgequant.data.base import Batch, check_batch
from edgequant.data.model_inputs import input_specs
from edgequant.errors import DataError, ModelError
from edgequant.evaluate import steps as steps_mod
from edgequant.evaluate import tasks
from edgequant.model.io import load_model
from edgequant.recipe.schema import Preprocess
from edgequant.runtime import OrtRuntime

LABEL_KEYS = ("labels", "label")
_CUT = "evaluation would score each run of time steps as a separate sequence (more samples than sequences)"
ModelLike = str | Path | onnx.ModelProto


@dataclass
class EvalData:
    """Evaluation batches held in memory, with their labels (None when unlabeled)."""

    batches: list[Batch]
    labels: Any | None
    samples: int
    description: str = ""
    steps: list[np.ndarray] | None = None  # per batch [B, T] bool: the real time steps (per-step scoring)

    @property
    def scored(self) -> int | None:
        """The sample count a result reports: the feeds, or None when scored per real time step (the
        scored rows are then the steps)."""
        return self.samples if self.steps is None else None


@dataclass
class EvalResult:
    task: str
    samples: int
    labeled: bool
    output: str
    float_metrics: dict[str, float]
    quant_metrics: dict[str, float]
    agreement: dict[str, float]
    custom: dict[str, float]
    primary: str
    float_score: float
    quant_score: float
    drop: float
    drop_unit: str
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One row per metric: ``metric``, ``float``, ``quantized``, ``delta`` (quantized - float)."""
        out: list[dict[str, Any]] = []
        for key in sorted(set(self.float_metrics) | set(self.quant_metrics)):
            f, q = self.float_metrics.get(key), self.quant_metrics.get(key)
            delta = q - f if f is not None and q is not None else None
            out.append({"metric": key, "float": f, "quantized": q, "delta": delta})
        for key, value in self.agreement.items():
            out.append({"metric": f"agreement.{key}", "float": None, "quantized": value, "delta": None})
        for key, value in self.custom.items():
            out.append({"metric": f"custom.{key}", "float": None, "quantized": value, "delta": None})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "samples": self.samples,
            "labeled": self.labeled,
            "output": self.output,
            "float": self.float_metrics,
            "quantized": self.quant_metrics,
            "agreement": self.agreement,
            "custom": self.custom,
            "primary": {
                "metric": self.primary,
                "float": self.float_score,
                "quantized": self.quant_score,
                "drop": self.drop,
                "unit": self.drop_unit,
            },
            "notes": list(self.notes),
        }


def as_model(model: ModelLike) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, str | Path):
        return load_model(model)
    raise ModelError(
        f"expected an ONNX model (path or onnx.ModelProto), got {type(model).__name__}.",
        "export the model to ONNX first (edgequant.quantize accepts PyTorch modules).",
    )


def _split(arrays: Mapping[str, np.ndarray], batch: int) -> list[Batch]:
    n = len(next(iter(arrays.values())))
    return [{k: v[i : i + batch] for k, v in arrays.items()} for i in range(0, n, batch)]


def load_eval_data(
    data: Any,
    model: onnx.ModelProto,
    *,
    labels: Any | None = None,
    batch_size: int = 32,
    max_samples: int | None = None,
    options: Mapping[str, Any] | None = None,
    split: Literal["all", "eval"] | None = None,
    preprocess: Preprocess | None = None,
) -> EvalData:
    """Batches for ``model`` from a path (via ``edgequant.data``), an array, a dict or batches.

    In-memory dicts may carry the labels under ``labels`` or ``label``; an explicit ``labels``
    argument wins.  A model with a fixed batch dimension gets batches of exactly that size.
    ``options`` are the data options of ``edgequant.data.SourceOptions`` (quantize's
    ``--data-option``); with a ``metadata_csv`` only the rows of its ``eval_type`` split are read.
    ``split="eval"`` without a metadata CSV reads the evaluation part of the data layer's seeded
    split (``edgequant.data.select``), the part calibration with ``split="calib"`` never reads.
    Images and video are preprocessed as calibration does: the ``preprocess`` fields the user set, the
    model's declared normalisation in the others (``data.declared.fill_declared``).
    A path, array or dict for a time-major recurrent input (dynamic time axis, or a fixed one whose steps
    would count as samples) raises ``DataError`` (``intake.require_batch_first``); an iterable of batches
    is fed batch by batch.
    """
    if isinstance(data, str | Path | np.ndarray | Mapping):  # batches given whole are fed whole
        from edgequant.intake import require_batch_first

        require_batch_first(model, data, cut=_CUT, counted="evaluation")
    specs = input_specs(model)
    fixed = specs[0].shape[0] if specs and specs[0].shape else None
    batch = fixed if isinstance(fixed, int) else batch_size
    found_labels: Any | None = None
    steps: list[np.ndarray] | None = None
    whole = False
    if isinstance(data, str | Path):
        from edgequant import data as data_mod  # the data layer owns file formats

        if split is None:
            split = "eval" if options and options.get("metadata_csv") else "all"
        from edgequant.data.declared import MEDIA_SUFFIXES, fill_declared

        pre, _ = fill_declared(preprocess or Preprocess(), model, data)
        source = data_mod.open_source(
            data, specs, batch_size=batch, max_samples=max_samples, split=split, options=options or None,
            preprocess=pre,
        )  # fmt: skip
        batches, label_parts = [], []
        whole = bool(getattr(source, "stacked", False))  # stacked feed dicts: one sample per batch
        for b, lab in source.iter_labeled():  # one pass: inputs and their labels together
            batches.append(dict(b))
            label_parts.append(lab)
        mask_input = (options or {}).get("hdf5_mask_input")
        per_step = getattr(getattr(source, "reader", None), "per_step", False)
        if per_step or mask_input:
            steps = [steps_mod.real_steps(b, mask_input) for b in batches]
        pairs = list(zip(label_parts, steps or [], strict=False))
        if per_step and all(p is not None and p.shape[:2] == v.shape for p, v in pairs):
            found_labels = np.concatenate([p[v] for p, v in pairs if p is not None])  # one per real step
        elif label_parts and all(p is not None for p in label_parts):
            found_labels = np.concatenate([p for p in label_parts if p is not None])
        media = Path(data).is_dir() or Path(data).suffix.lower() in MEDIA_SUFFIXES
        description = source.stats.description if media else str(data)  # media: the preprocessing used
        if split == "eval" and not (options or {}).get("metadata_csv"):
            description += " (evaluation part of a seeded split; calibration reads the other part)"
        elif split == "eval":
            description += f" (rows with {source_split(options)} in '{(options or {})['metadata_csv']}')"
    elif isinstance(data, np.ndarray | Mapping):
        arrays: dict[str, np.ndarray]
        if isinstance(data, np.ndarray):
            if len(specs) != 1:
                raise DataError(
                    f"a bare array was given but the model has {len(specs)} inputs {[s.name for s in specs]}.",
                    "pass a dict mapping each input name to its array.",
                )
            arrays = {specs[0].name: data}
        else:
            arrays = {str(k): np.asarray(v) for k, v in data.items()}
            for key in LABEL_KEYS:
                if key in arrays:
                    found_labels = arrays.pop(key)
                    break
        if not arrays:
            raise DataError("the evaluation data holds no input arrays.", "pass at least one input array.")
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise DataError(f"input arrays have different sample counts: {lengths}.", "give equal counts.")
        if max_samples is not None:
            arrays = {k: v[:max_samples] for k, v in arrays.items()}
        batches = _split(arrays, batch)
        description = f"in-memory arrays {sorted(arrays)}"
    elif isinstance(data, Iterable):
        batches, parts = [], []
        for item in data:
            b = dict(item)
            for key in LABEL_KEYS:
                if key in b:
                    parts.append(np.asarray(b.pop(key)))
                    break
            batches.append(b)
        if parts:
            found_labels = np.concatenate(parts)
        description = "in-memory batches"
    else:
        raise DataError(
            f"evaluation data of type {type(data).__name__} is not supported.",
            "pass a file path, a numpy array, a dict of arrays, or an iterable of dict batches.",
        )
    for b in batches:
        check_batch(b, specs, where="evaluation data")
    from edgequant.model.patterns import time_major_inputs

    timed = set(time_major_inputs(model))  # [T, B, I] batches given whole: B sequences, not T steps
    samples = sum(_feed_samples(b, whole, timed) for b in batches)
    if samples == 0:
        raise DataError(f"the evaluation data ({description}) holds no samples.", "give at least one sample.")
    if fixed is not None and any(len(next(iter(b.values()))) != fixed for b in batches):
        raise DataError(
            f"the model has a fixed batch size of {fixed} but the {samples} evaluation samples do not split "
            f"into batches of {fixed}.",
            f"evaluate a multiple of {fixed} samples (--max-samples), or export the model with a dynamic batch.",
        )
    chosen = labels if labels is not None else found_labels
    if steps is not None:
        frames = int(sum(v.sum() for v in steps))
        description += f" (scored per time step: {frames} real steps of {samples} trials, padding masked)"
        if chosen is not None and len(chosen) != frames:
            raise DataError(
                f"there are {len(chosen)} labels for {frames} real time steps ({description}).",
                "give one label per time step of every trial.",
            )
        return EvalData(batches, chosen, samples, description, steps)
    if chosen is not None and len(chosen) > samples and max_samples is not None:
        chosen = chosen[:samples]
    if chosen is not None and len(chosen) != samples:
        raise DataError(
            f"there are {len(chosen)} labels for {samples} evaluation samples ({description}).",
            "give exactly one label per sample.",
        )
    return EvalData(batches, chosen, samples, description)


def source_split(options: Mapping[str, Any] | None) -> str:
    """``split = val`` as the metadata options select it, for descriptions."""
    o = options or {}
    return f"{o.get('metadata_split_column', 'split')} = {o.get('eval_type', 'val')}"


def eval_options(options: Mapping[str, Any] | None, eval_split: str | None) -> dict[str, Any] | None:
    """``options`` with ``eval_type`` set from ``--eval-split`` (refused without a metadata CSV)."""
    out = dict(options or {})
    if eval_split is not None:
        if not out.get("metadata_csv"):
            raise DataError(
                f"--eval-split {eval_split} needs a metadata CSV that names the split of every sample.",
                "add --data-option metadata_csv=PATH (column 'split', or metadata_split_column=NAME).",
            )
        out["eval_type"] = eval_split
    return out or None


def output_name(
    model: onnx.ModelProto, output: str | None, what: str = "the model", option: str = "output="
) -> str:
    """``output`` (default: the first), an output of ``model``; else ModelError naming ``what`` (the
    file), its outputs and ``option`` (the caller's word: ``--output-name`` on the CLI)."""
    names = [o.name for o in model.graph.output]
    if output is None:
        return names[0]
    if output not in names:
        raise ModelError(
            f"{what} has no output '{output}'; its outputs: {', '.join(names)}.",
            f"pass {option} with an output both models have, or check that the files belong together.",
        )
    return output


def run_outputs(
    model: onnx.ModelProto, batches: list[Batch], name: str, runtime: OrtRuntime, what: str
) -> list[np.ndarray]:
    """One output array per batch.  On the CPU provider the model runs in a child process
    (``edgequant.runtime.isolated``): a native ONNX Runtime crash on the model becomes one
    InferenceError line instead of ending EdgeQuant without a word."""
    if not any(runtime.provider_options or []) and runtime.providers == ["CPUExecutionProvider"]:
        from edgequant.runtime.isolated import run_isolated

        outs = run_isolated(
            model, batches, what=what, providers=runtime.providers,
            intra_op_threads=runtime.intra_op_threads, optimize=runtime.optimize,
        )  # fmt: skip
        return [np.asarray(o[name]) for o in outs]
    session = runtime.session(model, what=what)
    try:
        return [np.asarray(session.run(b, [name])[name]) for b in batches]
    finally:
        session.close()


def join(
    parts: list[np.ndarray], task: str, layout: str, steps: list[np.ndarray] | None = None
) -> np.ndarray:
    """The per-batch outputs as one array, batch first.  Per-step outputs ``[B, T, C]`` of trials
    (``steps`` given, or lengths that vary across batches) become ``[F, C]``: the real steps only."""
    if task == "sequence":
        if steps is not None:
            raise DataError(
                "per-step scoring of variable-length trials is for per-step class or value outputs; CTC "
                "decoding (--task sequence) of padded trials is not supported.",
                "use --task classification (frame-level top-1) or regression, or trials of one length.",
            )
        parts = [tasks.to_ntc(p, layout) for p in parts]
    elif steps is None and len({p.shape[1:] for p in parts}) > 1 and all(p.ndim == 3 for p in parts):
        steps = [np.ones(p.shape[:2], bool) for p in parts]  # trials run one by one: every step is real
    if steps is not None:
        return steps_mod.real_rows(parts, steps)
    if len({p.shape[1:] for p in parts}) > 1:
        shapes = sorted({str(list(p.shape)) for p in parts})
        raise DataError(
            f"the model's output has shapes {', '.join(shapes[:3])} across evaluation batches: its batch is "
            "not on axis 0, so the batches cannot be joined.",
            "for a sequence model pass --task sequence with --layout (e.g. tnc); else --batch-size 1 with a "
            "model whose output keeps the batch first.",
        )
    return np.concatenate(parts, axis=0)


def evaluate(
    float_model: ModelLike,
    quant_model: ModelLike,
    data: Any,
    task: str = "classification",
    labels: Any | None = None,
    *,
    metric: str | tasks.MetricFn | None = None,
    blank: int = 0,
    layout: str = "ntc",
    output: str | None = None,
    batch_size: int = 32,
    max_samples: int | None = None,
    runtime: OrtRuntime | None = None,
    options: Mapping[str, Any] | None = None,
    preprocess: Preprocess | None = None,
) -> EvalResult:
    """Score ``quant_model`` against ``float_model`` (and ``labels``) on ``data``; see ``tasks``.
    ``options``: quantize's data options (a ``metadata_csv`` selects its ``eval_type`` rows);
    ``preprocess``: image/video fields set by the user (the model's declared ones fill the rest)."""
    tasks.check_task(task)
    fm, qm = as_model(float_model), as_model(quant_model)
    files = [f" '{m}'" if isinstance(m, str | Path) else "" for m in (float_model, quant_model)]
    name = output_name(fm, output, f"the float model{files[0]}")
    output_name(qm, name, f"the quantized model{files[1]}")
    rt = runtime or OrtRuntime()
    ev = load_eval_data(
        data, fm, labels=labels, batch_size=batch_size, max_samples=max_samples, options=options,
        preprocess=preprocess,
    )  # fmt: skip
    lay = ev_layout(task, layout)
    ref = join(run_outputs(fm, ev.batches, name, rt, "the float model"), task, lay, ev.steps)
    out = join(run_outputs(qm, ev.batches, name, rt, "the quantized model"), task, lay, ev.steps)
    return score_outputs(task, ref, out, ev.labels, name, metric=metric, blank=blank, samples=ev.scored)


def _feed_samples(batch: Mapping[str, np.ndarray], whole: bool, timed: set[str] | None = None) -> int:
    """Samples in one batch (``data.conform.feed_samples``: a whole feed dict counts as one, a time-major
    input in ``timed`` counts its axis 1)."""
    from edgequant.data.conform import feed_samples

    return feed_samples(batch, whole=whole, timed=timed or ())


def ev_layout(task: str, layout: str) -> str:
    return layout if task == "sequence" else "ntc"


def score_outputs(
    task: str,
    ref: np.ndarray,
    out: np.ndarray,
    labels: Any | None,
    name: str,
    *,
    metric: str | tasks.MetricFn | None = None,
    blank: int = 0,
    samples: int | None = None,
) -> EvalResult:
    """``samples``: the evaluation samples (feeds) scored; default: rows of ``ref`` (one per sample,
    except outputs such as a recurrent state ``[layers, batch, hidden]`` whose axis 0 is not the sample)."""
    s = tasks.score(task, ref, out, labels, blank=blank)
    custom: dict[str, float] = {}
    if metric is not None:
        fn_name, fn = tasks.load_metric(metric)
        custom = tasks.run_metric(fn_name, fn, ref, out, labels)
    return EvalResult(
        task=task,
        samples=int(ref.shape[0]) if samples is None else samples,
        labeled=labels is not None,
        output=name,
        float_metrics=s.float_metrics,
        quant_metrics=s.quant_metrics,
        agreement=s.agreement,
        custom=custom,
        primary=s.primary,
        float_score=s.float_score,
        quant_score=s.quant_score,
        drop=s.drop,
        drop_unit=s.drop_unit,
        notes=s.notes,
    )
