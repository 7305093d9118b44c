"""A built-in training loop for users who do not write one (``edgequant qat``).

Tasks: ``classification`` (cross-entropy on integer class labels; score: top-1 accuracy in %) and
``regression`` (mean squared error on float targets; score: -MSE, so larger is better in both).
Optimiser Adam or SGD (momentum 0.9), learning rate schedule cosine (to 0 over the run) or constant,
seeded shuffling and initialisation.  The model is evaluated after every epoch; the best state is
kept, and Ctrl-C (KeyboardInterrupt) ends training with that best state restored.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edgequant.errors import DataError, RecipeError

Task = Literal["classification", "regression"]
EpochCallback = Callable[[dict[str, float]], None]


@dataclass
class Labeled:
    """Inputs (one array per model input, samples on axis 0) and their labels."""

    inputs: list[np.ndarray]
    labels: np.ndarray
    description: str = ""

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("-inf")
    interrupted: bool = False
    seconds_per_epoch: float = 0.0


def check_labels(data: Labeled, task: Task, what: str) -> None:
    if task == "classification" and not np.issubdtype(data.labels.dtype, np.integer):
        raise DataError(
            f"{what} labels have dtype {data.labels.dtype}; classification needs integer class indices.",
            "store the labels as integers (npz 'labels' int64), or use --task regression.",
        )


def _batches(data: Labeled, batch_size: int, order: np.ndarray | None) -> Any:
    idx = order if order is not None else np.arange(len(data))
    for i in range(0, len(idx), batch_size):
        sel = idx[i : i + batch_size]
        yield (
            [torch.from_numpy(np.ascontiguousarray(a[sel])) for a in data.inputs],
            torch.from_numpy(np.ascontiguousarray(data.labels[sel])),
        )


def _loss(task: Task, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if task == "classification":
        return nn.functional.cross_entropy(out, y.long())
    return nn.functional.mse_loss(out.reshape(y.shape), y.float())


def evaluate(model: nn.Module, data: Labeled, task: Task, batch_size: int = 256) -> float:
    """Top-1 accuracy in % (classification) or -MSE (regression) of ``model`` in eval mode."""
    was = model.training
    model.eval()
    hits, err, n = 0, 0.0, 0
    with torch.no_grad():
        for xs, y in _batches(data, batch_size, None):
            out = model(*xs)
            if task == "classification":
                hits += int((out.argmax(1) == y).sum())
            else:
                err += float(((out.reshape(y.shape) - y.float()) ** 2).sum())
            n += len(y)
    # restoring the mode is not a new epoch: nn.Module.train, not QATModule.train (which counts epochs)
    nn.Module.train(model, was)
    return 100.0 * hits / n if task == "classification" else -err / n


def fit(
    model: nn.Module,
    train: Labeled,
    val: Labeled,
    *,
    task: Task,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    optimizer: str = "adam",
    schedule: str = "cosine",
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Train ``model`` in place (each epoch starts with ``model.train()``) and restore its best state."""
    if epochs < 1 or lr <= 0 or batch_size < 1:
        raise RecipeError(
            f"epochs {epochs}, learning rate {lr} and batch size {batch_size} must be positive.",
            "use e.g. --epochs 10 --lr 1e-3.",
        )
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    else:
        raise RecipeError(f"optimizer '{optimizer}' is unknown; allowed: adam, sgd.", "use --optimizer adam.")
    if schedule not in ("cosine", "constant"):
        raise RecipeError(f"schedule '{schedule}' is unknown; allowed: cosine, constant.", "use cosine.")
    steps = epochs * -(-len(train) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda s: 0.5 * (1 + np.cos(np.pi * s / steps))) if schedule == "cosine" else (lambda s: 1.0)
    )
    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    t_train = 0.0
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            model.train()
            total, n = 0.0, 0
            for xs, y in _batches(train, batch_size, rng.permutation(len(train))):
                loss = _loss(task, model(*xs), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(y)
                n += len(y)
            t_train += time.perf_counter() - t0
            score = evaluate(model, val, task)
            row = {
                "epoch": float(epoch),
                "loss": total / max(n, 1),
                "score": score,
                "seconds": time.perf_counter() - t0,
            }
            result.history.append(row)
            if score > result.best_score:
                result.best_score, result.best_epoch = score, epoch
                best_state = copy.deepcopy(model.state_dict())
            if on_epoch is not None:
                on_epoch(row)
    except KeyboardInterrupt:
        result.interrupted = True
    model.load_state_dict(best_state)
    model.eval()
    result.seconds_per_epoch = t_train / max(1, len(result.history))
    return result
