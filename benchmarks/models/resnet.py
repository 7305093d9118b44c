"""Hand-built ResNet-18 and a ResNet-50-style bottleneck net (torch, seeded random init) as ONNX files.

Architecture (He et al. 2016, "Deep Residual Learning"; written here from the paper, no torchvision):
stem conv 7x7/2 (64) + BN + ReLU + maxpool 3x3/2; four stages of residual blocks (first block of
stages 2-4 strides 2, with a 1x1/2 conv + BN projection shortcut); global average pool; linear 1000.
    resnet18  BasicBlock (3x3, 3x3), [2, 2, 2, 2] blocks, widths 64-128-256-512      11.7 M params
    resnet50  Bottleneck (1x1, 3x3, 1x1 x4), [3, 4, 6, 3] blocks, widths 256-512-1024-2048  25.6 M params

Weights: torch default init under ``torch.manual_seed(seed)``; every BatchNorm gets gamma ~ U(0.5, 1.5)
and beta ~ N(0, 0.1), then its running mean/var are estimated from 64 calibration-like images
(train-mode forward passes with ``momentum=None``: the cumulative average), so each BN normalises the
activations it really sees and the net neither explodes nor collapses; then ``eval()``.
Export: ``torch.onnx.export(dynamo=False, opset_version=17)``, batch axis dynamic (the legacy exporter
folds eval-mode BN into the convs, as deployment exports do).

Images ("real-ish" inputs for a random net): seeded 3xSxS pictures made of a smooth low-frequency
background (bilinear-upsampled 4x4 noise), 2-6 filled rectangles / ellipses with random colours,
a gradient, and pixel noise; uint8 range, then ImageNet mean/std normalisation.  Calibration seed 0,
evaluation seed 4321 (32 images).  Metrics: output SQNR (the caller's), top-1 agreement with float.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from models.common import BenchModel, Feeds, RunFn

EVAL_SEED, EVAL_IMAGES = 4321, 32
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
_STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def images(n: int, seed: int, size: int) -> np.ndarray:
    """[n, 3, size, size] float32, ImageNet-normalised synthetic pictures (seeded)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        low = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(
            (size, size), Image.BILINEAR
        )
        draw = ImageDraw.Draw(low)
        for _ in range(int(rng.integers(2, 7))):
            x0, y0 = (int(v) for v in rng.integers(0, size - 8, 2))
            x1, y1 = x0 + int(rng.integers(8, size // 2)), y0 + int(rng.integers(8, size // 2))
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.rectangle if rng.random() < 0.5 else draw.ellipse)((x0, y0, x1, y1), fill=fill)
        a = np.asarray(low, np.float32)
        a += np.linspace(-40, 40, size, dtype=np.float32)[None, :, None] * rng.uniform(-1, 1)
        a += rng.normal(0.0, rng.uniform(0.0, 10.0), a.shape).astype(np.float32)
        out[i] = (np.clip(a, 0, 255).transpose(2, 0, 1) / 255.0 - _MEAN) / _STD
    return out


def build(name: str, seed: int, size: int) -> object:
    """The torch module ``name`` ('resnet18' | 'resnet50'), BN stats set on synthetic images, eval mode."""
    import torch
    from torch import nn

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 3, stride, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, 1, 1, bias=False),
                nn.BatchNorm2d(width),
            )
            self.short = _shortcut(cin, width, stride)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.short(x))

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            cout = width * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, stride, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            )
            self.short = _shortcut(cin, cout, stride)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.short(x))

    def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
        if stride == 1 and cin == cout:
            return nn.Identity()
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    block, depths = (Basic, (2, 2, 2, 2)) if name == "resnet18" else (Bottleneck, (3, 4, 6, 3))
    torch.manual_seed(seed)
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for stage, depth in enumerate(depths):
        width = 64 * 2**stage
        for i in range(depth):
            layers.append(block(cin, width, 2 if (i == 0 and stage > 0) else 1))
            cin = width * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000)]
    net = nn.Sequential(*layers)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=gen) * 0.1)
                mod.momentum = None  # cumulative moving average over the passes below
                mod.reset_running_stats()
        net.train()
        x = torch.from_numpy(images(64, seed + 2, size))
        for chunk in x.split(16):
            net(chunk)
    return net.eval()


@cache
def onnx_path(name: str, size: int, seed: int = 0) -> Path:
    """Build, export (opset 17, dynamic batch) and cache ``name`` in a temporary directory."""
    import torch

    net = build(name, seed, size)
    folder = Path(tempfile.mkdtemp(prefix=f"eq_{name}_"))
    path = folder / f"{name}_{size}.onnx"
    torch.onnx.export(
        net,
        (torch.from_numpy(images(1, 99, size)),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    return path


def make(name: str, size: int = 224) -> BenchModel:
    """A BenchModel for 'resnet18' or 'resnet50' at ``size`` x ``size``."""
    if name not in ("resnet18", "resnet50"):
        raise SystemExit(f"unknown ResNet '{name}'; choose resnet18 or resnet50")
    eval_x = images(EVAL_IMAGES, EVAL_SEED, size)

    def predict(run: RunFn) -> dict[str, np.ndarray]:
        outs = [run({"image": eval_x[i : i + 8]})["logits"] for i in range(0, len(eval_x), 8)]
        return {"logits": np.concatenate(outs)}

    def metrics(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
        return {"top1_agree": float((ref["logits"].argmax(1) == got["logits"].argmax(1)).mean())}

    def calib(n: int, seed: int) -> Feeds:
        return {"image": images(n, seed, size)}

    title = "ResNet-18" if name == "resnet18" else "ResNet-50 (bottleneck)"
    return BenchModel(
        name=name,
        title=f"{title}, random init, {size}x{size} (hand-built in torch)",
        path=onnx_path(name, size),
        source=f"benchmarks/models/resnet.py seed 0, torch.onnx.export opset 17, {size}x{size}",
        make_calib=calib,
        predict=predict,
        metrics=metrics,
        latency_feed=lambda: {"image": eval_x[:1]},
        calib_batch=8,
    )
