"""Per-task metric sets, the headline score and its drop, and user-supplied metric plug-ins.

With labels each task reports its own metrics for the float and for the quantized model; with
or without labels it reports how closely the quantized outputs follow the float ones.

Headline ("primary") metric and its drop (how much worse the quantized model is):

=============== ===================================== =======================================
task            with labels                           without labels
=============== ===================================== =======================================
classification  top-1 accuracy, drop in pp            top-1 agreement x 100, drop in pp
sequence        CER x 100, drop = CER_q - CER_f (pp)   CER of quant decode vs float decode (pp)
embedding       1-NN accuracy x 100, drop in pp        NN agreement x 100, drop in pp
regression      MSE; drop = 100 (MSE_q-MSE_f)/MSE_f   noise power 100 sum((q-f)^2)/sum(f^2) (%)
=============== ===================================== =======================================
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgequant.errors import DataError, RecipeError
from edgequant.evaluate import metrics as m

Task = Literal["classification", "regression", "embedding", "sequence"]
TASKS: tuple[str, ...] = ("classification", "regression", "embedding", "sequence")
Layout = Literal["ntc", "tnc"]
MetricFn = Callable[[np.ndarray, np.ndarray, Any], dict[str, float]]


@dataclass
class TaskScores:
    """Metrics of one float/quantized output pair; see the module docstring for the primary metric."""

    float_metrics: dict[str, float] = field(default_factory=dict)
    quant_metrics: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    primary: str = ""
    float_score: float = 0.0
    quant_score: float = 0.0
    drop: float = 0.0
    drop_unit: str = "pp"
    notes: list[str] = field(default_factory=list)


def check_task(task: str) -> None:
    if task not in TASKS:
        raise RecipeError(
            f"unknown task '{task}'; allowed: {', '.join(TASKS)}.", "pass --task with one of them."
        )


def to_ntc(x: np.ndarray, layout: str) -> np.ndarray:
    """Sequence outputs in ``[N, T, C]``, from ``[N, T, C]`` (``ntc``) or ``[T, N, C]`` (``tnc``)."""
    if layout not in ("ntc", "tnc"):
        raise RecipeError(
            f"unknown sequence layout '{layout}'; allowed: ntc, tnc.", "pass --layout ntc or tnc."
        )
    if x.ndim != 3:
        raise DataError(
            f"sequence output has shape {x.shape}; expected 3 axes ({layout.upper()}).",
            "use --task sequence only for [N,T,C] or [T,N,C] outputs.",
        )
    return x if layout == "ntc" else np.transpose(x, (1, 0, 2))


def score(
    task: str,
    ref: np.ndarray,
    out: np.ndarray,
    labels: Any,
    *,
    blank: int = 0,
) -> TaskScores:
    """All metrics of ``out`` (quantized) against ``ref`` (float) and, when given, ``labels``.

    Sequence outputs must already be ``[N, T, C]`` (see ``to_ntc``).
    """
    check_task(task)
    if ref.shape != out.shape:
        raise DataError(
            f"the float output has shape {ref.shape} but the quantized output has shape {out.shape}.",
            "compare a quantized model made from this float model.",
        )
    s = TaskScores()
    s.agreement["sqnr_db"] = m.sqnr_db(ref, out)
    s.agreement["mse"] = m.mse(ref, out)
    if task == "classification":
        _classification(s, ref, out, labels)
    elif task == "regression":
        _regression(s, ref, out, labels)
    elif task == "embedding":
        _embedding(s, ref, out, labels)
    else:
        _sequence(s, ref, out, labels, blank)
    return s


def _classification(s: TaskScores, ref: np.ndarray, out: np.ndarray, labels: Any) -> None:
    s.agreement["top1_agreement"] = m.top1_agreement(ref, out)
    s.agreement["kl"] = m.kl_divergence(ref, out)
    s.notes.append(
        "KL on the outputs as probabilities"
        if m.is_probability(ref)
        else "KL on softmax of the output logits"
    )
    if labels is None:
        s.primary, s.float_score = "top1_agreement", 100.0
        s.quant_score = 100.0 * s.agreement["top1_agreement"]
    else:
        classes = m._as_2d(ref, "the model output").shape[1]
        for arr, into in ((ref, s.float_metrics), (out, s.quant_metrics)):
            into["top1"] = m.top_k_accuracy(arr, labels, 1)
            if classes > 5:
                into["top5"] = m.top_k_accuracy(arr, labels, 5)
        if classes <= 5:
            s.notes.append(f"top-5 not reported: the model has only {classes} classes")
        s.primary = "top1"
        s.float_score, s.quant_score = 100.0 * s.float_metrics["top1"], 100.0 * s.quant_metrics["top1"]
    s.drop = s.float_score - s.quant_score


def _regression(s: TaskScores, ref: np.ndarray, out: np.ndarray, labels: Any) -> None:
    s.agreement["mae"] = m.mae(ref, out)
    s.drop_unit = "%"
    if labels is None:
        energy = float(np.sum(np.asarray(ref, np.float64) ** 2))
        noise = float(np.sum((np.asarray(ref, np.float64) - out) ** 2))
        s.primary = "relative_noise_pct"
        s.float_score = 0.0
        s.quant_score = 100.0 * noise / energy if energy > 0 else float("inf")
        s.drop = s.quant_score
        return
    target = np.asarray(labels, np.float64)
    if target.size != ref.size:
        raise DataError(
            f"regression labels have {target.size} values, the outputs {ref.size} ({ref.shape}).",
            "give one target per output value.",
        )
    target = target.reshape(ref.shape)
    for arr, into in ((ref, s.float_metrics), (out, s.quant_metrics)):
        into["mse"] = m.mse(arr, target)
        into["mae"] = m.mae(arr, target)
    s.primary = "mse"
    s.float_score, s.quant_score = s.float_metrics["mse"], s.quant_metrics["mse"]
    if s.float_score > 0:
        s.drop = 100.0 * (s.quant_score - s.float_score) / s.float_score
    else:
        s.drop = 0.0 if s.quant_score == 0 else float("inf")


def _embedding(s: TaskScores, ref: np.ndarray, out: np.ndarray, labels: Any) -> None:
    s.agreement["cosine"] = m.cosine_similarity(ref, out)
    s.agreement["nn_agreement"] = m.nn_agreement(ref, out)
    if labels is None:
        s.primary, s.float_score = "nn_agreement", 100.0
        s.quant_score = 100.0 * s.agreement["nn_agreement"]
    else:
        s.float_metrics["nn_accuracy"] = m.nn_accuracy(ref, labels)
        s.quant_metrics["nn_accuracy"] = m.nn_accuracy(out, labels)
        s.primary = "nn_accuracy"
        s.float_score = 100.0 * s.float_metrics["nn_accuracy"]
        s.quant_score = 100.0 * s.quant_metrics["nn_accuracy"]
    s.drop = s.float_score - s.quant_score


def _sequence(s: TaskScores, ref: np.ndarray, out: np.ndarray, labels: Any, blank: int) -> None:
    s.agreement["frame_top1_agreement"] = m.top1_agreement(ref, out)
    s.agreement["kl"] = m.kl_divergence(ref, out)
    hyp_f = m.ctc_greedy_decode(ref, blank)
    hyp_q = m.ctc_greedy_decode(out, blank)
    if any(hyp_f):
        s.agreement["cer_vs_float"] = m.token_error_rate(hyp_q, hyp_f)
    else:
        s.notes.append("the float model decodes every sample to an empty sequence; cer_vs_float undefined")
    if labels is None:
        if "cer_vs_float" not in s.agreement:
            raise DataError(
                "without labels the sequence score is the error rate against the float decoding, but the "
                "float model decodes every sample to an empty sequence.",
                "check --blank and --layout, or give labels.",
            )
        s.primary, s.float_score = "cer_vs_float", 0.0
        s.quant_score = 100.0 * s.agreement["cer_vs_float"]
    else:
        refs = m.sequence_labels(labels, ref.shape[0])
        s.float_metrics["cer"] = m.token_error_rate(hyp_f, refs)
        s.quant_metrics["cer"] = m.token_error_rate(hyp_q, refs)
        s.primary = "cer"
        s.float_score = 100.0 * s.float_metrics["cer"]
        s.quant_score = 100.0 * s.quant_metrics["cer"]
    s.drop = s.quant_score - s.float_score


# -- plug-ins -----------------------------------------------------------------------------------
def load_metric(spec: str | MetricFn) -> tuple[str, MetricFn]:
    """Resolve ``module:function`` or ``path/to/file.py:function`` to a callable."""
    if callable(spec):
        return getattr(spec, "__name__", "custom"), spec
    mod_name, sep, fn_name = str(spec).rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise RecipeError(
            f"metric '{spec}' is not of the form module:function.", "write e.g. --metric mymetrics:wer."
        )
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise RecipeError(f"metric file '{path}' does not exist.", "check the path before ':'.")
            loader = importlib.util.spec_from_file_location(f"edgequant_metric_{path.stem}", path)
            if loader is None or loader.loader is None:
                raise RecipeError(f"metric file '{path}' cannot be imported.", "give a Python source file.")
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            added = os.getcwd() not in sys.path
            if added:
                sys.path.insert(0, os.getcwd())
            try:
                module = importlib.import_module(mod_name)
            finally:
                if added:
                    sys.path.remove(os.getcwd())
    except RecipeError:
        raise
    except Exception as exc:
        raise RecipeError(
            f"metric module '{mod_name}' cannot be imported: {type(exc).__name__}: {exc}.",
            "make the module importable (PYTHONPATH or the current directory) and fix its errors.",
        ) from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise RecipeError(
            f"metric module '{mod_name}' has no function '{fn_name}'.", "check the name after ':'."
        )
    return fn_name, fn


def run_metric(name: str, fn: MetricFn, ref: np.ndarray, out: np.ndarray, labels: Any) -> dict[str, float]:
    """Call ``fn(float_outputs, quant_outputs, labels)``; it must return ``dict[str, float]``."""
    try:
        result = fn(ref, out, labels)
    except Exception as exc:
        raise DataError(
            f"the custom metric '{name}' raised {type(exc).__name__}: {exc}.",
            "fix the metric; it is called as fn(float_outputs, quant_outputs, labels).",
        ) from exc
    if not isinstance(result, dict):
        raise DataError(
            f"the custom metric '{name}' returned {type(result).__name__}; it must return dict[str, float].",
            "return a mapping of metric name to number.",
        )
    clean: dict[str, float] = {}
    for key, value in result.items():
        try:
            clean[str(key)] = float(value)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"the custom metric '{name}' returned {key!r} = {value!r}, which is not a number.",
                "return numbers only.",
            ) from exc
    return clean
