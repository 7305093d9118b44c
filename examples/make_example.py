"""Build EdgeQuant's built-in example: a small CNN really trained on procedural shapes, and its data.

Run ``python examples/make_example.py`` (torch CPU, about a minute on 2 idle cores; seeded, so a rerun
on the same library versions reproduces the numbers).  It writes, next to
this file:

- ``shapes_cnn.onnx``   opset 17, input ``image`` float32 [batch, 3, 32, 32], output ``logits`` [batch, 10]
- ``shapes_calib.npz``  ``image``: 256 unlabelled samples for calibration
- ``shapes_eval.npz``   ``image``: 512 samples, ``labels``: int64 class ids (0..9)

Data.  Each sample is a 32x32 RGB picture of one of ten classes (``CLASSES``) drawn at a random
position, size, rotation (triangle) or period (textures, inside a random rectangle), in a random
colour on a random background with a linear gradient, with 0-2 small specks of clutter, a [1,2,1]
blur on half the samples and mild Gaussian pixel noise (sigma 1-5 levels of 255); the colour contrast
may be low but is bounded below (``MIN_CONTRAST``) so every sample stays recognisable.  Pictures are rendered in [0, 1], stored as 8-bit pixels ``p`` (0..255),
then normalised per channel as ``x = (p - mean[c]) / SCALE``, with ``mean`` the training pixels' mean
rounded to integers and ``SCALE = 64`` (a power of two), so x has mean ~0 and std ~1.2, lies in [-2, 2],
is exact in float32, and the npz files compress well (the formula is also stored in the model's
metadata_props).  Training, calibration and evaluation samples come from three independent seeded
streams (``numpy.random.SeedSequence(SEED).spawn(3)``) and are checked to share no picture.

Model (``ShapesCNN``): Conv3x3+BN+ReLU stem; two depthwise-separable blocks (depthwise 3x3 stride 2,
groups=C, +BN+ReLU; pointwise 1x1 +BN+ReLU); a residual block (two Conv3x3+BN, Add with the block
input, ReLU); two parallel branches (Conv1x1 and Conv3x3, each +ReLU) joined by Concat; global average
pool; Linear.  Exported with the TorchScript-based exporter (``dynamo=False``) in eval mode, which
folds each BN into its Conv.  The script checks ONNX Runtime against torch (max |diff| < 1e-4).
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

SEED = 20240611
SIZE = 32
N_TRAIN, N_CALIB, N_EVAL = 10000, 256, 512
SCALE = 64.0
MIN_CONTRAST = 0.2  # Euclidean RGB distance between shape and background colours, in [0, 1] units
EPOCHS, BATCH, LR = 10, 128, 4e-3
INPUT_NAME, OUTPUT_NAME = "image", "logits"
OUT_DIR = Path(__file__).resolve().parent

Grid = tuple[np.ndarray, np.ndarray]

# ----------------------------------------------------------------------------------------- data


def _patch(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A random axis-aligned rectangle (sides 14..32 px) that bounds a texture class."""
    h, w = rng.uniform(14, SIZE, size=2)
    y0, x0 = rng.uniform(0, SIZE - h), rng.uniform(0, SIZE - w)
    return (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)


def _centre(rng: np.random.Generator, margin: float) -> tuple[float, float]:
    lo, hi = margin, SIZE - margin
    return float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))


def _circle(rng: np.random.Generator, g: Grid) -> np.ndarray:
    r = rng.uniform(3.5, 11.0)
    cy, cx = _centre(rng, r)
    return (g[0] - cy) ** 2 + (g[1] - cx) ** 2 <= r * r


def _square(rng: np.random.Generator, g: Grid) -> np.ndarray:
    h = rng.uniform(3.0, 9.5)
    cy, cx = _centre(rng, h)
    return (np.abs(g[0] - cy) <= h) & (np.abs(g[1] - cx) <= h)


def _triangle(rng: np.random.Generator, g: Grid) -> np.ndarray:
    r = rng.uniform(6.0, 12.0)  # circumradius of an equilateral triangle, any rotation
    cy, cx = _centre(rng, r * 0.8)
    theta = rng.uniform(0, 2 * math.pi)
    inside = np.ones_like(g[0], dtype=bool)
    for k in range(3):
        a = theta + k * 2 * math.pi / 3  # outward normal of one edge; edge at distance r/2
        inside &= (g[1] - cx) * math.cos(a) + (g[0] - cy) * math.sin(a) <= r / 2
    return inside


def _cross(rng: np.random.Generator, g: Grid) -> np.ndarray:
    arm, t = rng.uniform(6.0, 12.0), rng.uniform(1.0, 2.5)
    cy, cx = _centre(rng, arm)
    dy, dx = np.abs(g[0] - cy), np.abs(g[1] - cx)
    return ((dy <= t) & (dx <= arm)) | ((dx <= t) & (dy <= arm))


def _ring(rng: np.random.Generator, g: Grid) -> np.ndarray:
    r, t = rng.uniform(6.5, 12.5), rng.uniform(1.5, 3.0)
    cy, cx = _centre(rng, r)
    d = np.sqrt((g[0] - cy) ** 2 + (g[1] - cx) ** 2)
    return (d <= r) & (d >= r - t)


def _stripes(rng: np.random.Generator, coord: np.ndarray, g: Grid) -> np.ndarray:
    period = rng.uniform(3.5, 7.0)
    phase = rng.uniform(0, 2 * math.pi)
    duty = rng.uniform(-0.3, 0.3)
    return (np.sin(2 * math.pi * coord / period + phase) > duty) & _patch(rng, *g)


def _hstripes(rng: np.random.Generator, g: Grid) -> np.ndarray:
    return _stripes(rng, g[0], g)


def _vstripes(rng: np.random.Generator, g: Grid) -> np.ndarray:
    return _stripes(rng, g[1], g)


def _diagonal(rng: np.random.Generator, g: Grid) -> np.ndarray:
    sign = 1.0 if rng.random() < 0.5 else -1.0
    angle = math.radians(rng.uniform(30, 60))
    return _stripes(rng, g[0] * math.sin(angle) + sign * g[1] * math.cos(angle), g)


def _dots(rng: np.random.Generator, g: Grid) -> np.ndarray:
    step, r = rng.uniform(5.0, 8.0), rng.uniform(1.0, 2.0)
    oy, ox = rng.uniform(0, step, size=2)
    dy = (g[0] - oy) % step - step / 2
    dx = (g[1] - ox) % step - step / 2
    return (dy * dy + dx * dx <= r * r) & _patch(rng, *g)


def _checker(rng: np.random.Generator, g: Grid) -> np.ndarray:
    cell = rng.uniform(3.0, 6.0)
    oy, ox = rng.uniform(0, cell, size=2)
    parity = (np.floor((g[0] + oy) / cell) + np.floor((g[1] + ox) / cell)) % 2
    return (parity == 0) & _patch(rng, *g)


DRAW: dict[str, Callable[[np.random.Generator, Grid], np.ndarray]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "cross": _cross,
    "horizontal_stripes": _hstripes,
    "vertical_stripes": _vstripes,
    "diagonal_stripes": _diagonal,
    "ring": _ring,
    "dots": _dots,
    "checkerboard": _checker,
}
CLASSES = tuple(DRAW)  # label i is CLASSES[i]


def _blur(img: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur with edge replication (a soft, slightly out-of-focus look)."""
    p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    p = (p[:-2] + 2 * p[1:-1] + p[2:]) / 4
    return (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) / 4


def render(rng: np.random.Generator, label: int) -> np.ndarray:
    """One HWC uint8 picture of class ``label``."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    mask = DRAW[CLASSES[label]](rng, (yy, xx))
    while True:  # low contrast is allowed, invisible is not
        fg, bg = rng.uniform(0, 1, size=3), rng.uniform(0, 1, size=3)
        if np.linalg.norm(fg - bg) >= MIN_CONTRAST:
            break
    ang = rng.uniform(0, 2 * math.pi)
    ramp = ((yy * math.sin(ang) + xx * math.cos(ang)) / SIZE - 0.5)[..., None]  # background gradient
    img = np.clip(bg + rng.uniform(-0.3, 0.3, size=3) * ramp, 0, 1)
    for _ in range(rng.integers(0, 3)):  # clutter: small specks in a third colour
        r = rng.uniform(0.8, 1.8)
        cy, cx = rng.uniform(0, SIZE, size=2)
        speck = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img = np.where(speck[..., None], rng.uniform(0, 1, size=3), img)
    img = np.where(mask[..., None], fg, img)
    if rng.random() < 0.5:
        img = _blur(img)
    img = img + rng.normal(0, rng.uniform(0.004, 0.02), size=img.shape)  # mild sensor noise
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def make_split(seed: np.random.SeedSequence, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pictures (uint8 NHWC) with balanced, shuffled labels (int64)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    return np.stack([render(rng, int(c)) for c in labels]), labels


def normalise(pixels: np.ndarray, mean: tuple[int, ...]) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW, ``(p - mean[c]) / SCALE`` (exact in float32)."""
    x = (pixels.astype(np.float32) - np.asarray(mean, np.float32)) / np.float32(SCALE)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def check_disjoint(*splits: np.ndarray) -> None:
    seen: set[bytes] = set()
    for split in splits:
        digests = {hashlib.sha1(img.tobytes()).digest() for img in split}
        if digests & seen:
            raise RuntimeError("a picture occurs in two splits; change SEED")
        seen |= digests


# ---------------------------------------------------------------------------------------- model


def conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class DepthwiseSeparable(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(conv_bn_relu(cin, cin, 3, stride, groups=cin), conv_bn_relu(cin, cout, 1))


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(c, c, 3), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.body(x))


class TwoBranch(nn.Module):
    def __init__(self, cin: int, cout_each: int) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(cin, cout_each, 1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(cin, cout_each, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], dim=1)


class ShapesCNN(nn.Module):
    def __init__(self, n_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(3, 16, 3),  # 32x32
            DepthwiseSeparable(16, 32, stride=2),  # 16x16
            DepthwiseSeparable(32, 48, stride=2),  # 8x8
            Residual(48),
            TwoBranch(48, 40),  # -> 80 channels
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(80, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    steps = EPOCHS * math.ceil(len(x) / BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.2)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    t0 = time.perf_counter()
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(x), BATCH):
            idx = order[i : i + BATCH]
            xb, yb = x[idx], y[idx]
            if torch.rand((), generator=gen) < 0.5:  # flip augmentation keeps every class's identity
                xb = xb.flip(3)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            total += len(idx)
        print(
            f"epoch {epoch + 1:2d}/{EPOCHS}  loss {loss_sum / total:.4f}  train acc {correct / total:.4f}"
            f"  ({time.perf_counter() - t0:.0f}s)"
        )


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    return torch.cat([model(torch.from_numpy(x[i : i + 256])) for i in range(0, len(x), 256)]).numpy()


# -------------------------------------------------------------------------------------- outputs


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same directory, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are files meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_onnx(model: nn.Module, path: Path, mean: tuple[int, ...]) -> None:
    model.eval()
    dummy = torch.zeros(2, 3, SIZE, SIZE)

    def write(tmp: Path) -> None:
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            dynamo=False,
            opset_version=17,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
        proto = onnx.load(str(tmp))
        proto.doc_string = (
            "EdgeQuant example: ShapesCNN trained on procedural shapes (examples/make_example.py)"
        )
        meta = {
            "classes": ",".join(CLASSES),
            "normalization": f"x = (pixel_0_255 - {list(mean)}) / {SCALE:g}",
        }
        onnx.helper.set_model_props(proto, meta)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))

    atomic_write(path, write)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]

    atomic_write(path, write)


def main() -> None:
    start = time.perf_counter()
    torch.manual_seed(SEED)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    train_seed, calib_seed, eval_seed = np.random.SeedSequence(SEED).spawn(3)

    train_px, train_y = make_split(train_seed, N_TRAIN)
    calib_px, _ = make_split(calib_seed, N_CALIB)
    eval_px, eval_y = make_split(eval_seed, N_EVAL)
    check_disjoint(train_px, calib_px, eval_px)
    mean = tuple(round(float(m)) for m in train_px.reshape(-1, 3).mean(0))
    x_train, x_calib, x_eval = (normalise(p, mean) for p in (train_px, calib_px, eval_px))
    print(
        f"data: {time.perf_counter() - start:.1f}s  mean {mean}  scale {SCALE}  train x std {x_train.std():.3f}"
    )

    model = ShapesCNN()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"ShapesCNN: {n_params} parameters")
    gen = torch.Generator().manual_seed(SEED)
    train(model, torch.from_numpy(x_train), torch.from_numpy(train_y), gen)
    torch_logits = predict(model, x_eval)
    torch_acc = float((torch_logits.argmax(1) == eval_y).mean())

    onnx_path = OUT_DIR / "shapes_cnn.onnx"
    export_onnx(model, onnx_path, mean)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_logits = np.concatenate(
        [sess.run([OUTPUT_NAME], {INPUT_NAME: x_eval[i : i + 100]})[0] for i in range(0, N_EVAL, 100)]
    )
    max_diff = float(np.abs(ort_logits - torch_logits).max())
    if max_diff >= 1e-4:
        raise RuntimeError(f"ONNX Runtime and torch disagree: max |diff| {max_diff:.2e} >= 1e-4")
    ort_acc = float((ort_logits.argmax(1) == eval_y).mean())

    save_npz(OUT_DIR / "shapes_calib.npz", **{INPUT_NAME: x_calib})
    save_npz(OUT_DIR / "shapes_eval.npz", **{INPUT_NAME: x_eval, "labels": eval_y})

    ops = Counter(n.op_type for n in onnx.load(str(onnx_path)).graph.node)
    print(f"ONNX ops: {dict(sorted(ops.items()))}")
    print(f"ORT vs torch max |diff| on eval logits: {max_diff:.2e}")
    print(f"float accuracy on {N_EVAL} eval samples: torch {torch_acc:.4f}  ORT {ort_acc:.4f}")
    for name in ("shapes_cnn.onnx", "shapes_calib.npz", "shapes_eval.npz"):
        print(f"{name}: {(OUT_DIR / name).stat().st_size / 1024:.1f} KiB")
    print(f"total {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
