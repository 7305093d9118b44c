"""The QAT tests' training loop and accuracy: Adam, batches of 32, cross-entropy, seeded."""

from __future__ import annotations

import torch
from torch import nn


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float) -> None:
    """``epochs`` passes of Adam (``lr``) over ``x`` in batches of 32 (torch seed 0), train mode."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        for i in range(0, len(x), 32):
            loss = nn.functional.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (0..1) of ``model`` in eval mode."""
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())
