"""The built-in example: examples/shapes_cnn.onnx, a 10-class CNN on 3x32x32 normalised images.

Calibration (seed 0): examples/shapes_calib.npz (256 images).  For more than 256 samples the images are
reused in order, each reuse with a seeded horizontal flip and Gaussian noise of 0.05 (the data are
normalised to about unit scale), so 1,000 samples are 1,000 distinct inputs of the same distribution.
Any other seed draws new pictures from the example's own generator (``examples/make_example.py``'s
``make_split``, seed sequence ``(SEED, seed)``, independent of its train/calib/eval streams), so a
held-out set drawn with another seed shares no picture with the calibration file (it used to be the
calibration file itself plus noisy flipped copies: bench_calibration_choice's "1,000 held-out samples"
of the example held its 160 calibration images).  Needs torch (``make_example`` imports it).
Evaluation: examples/shapes_eval.npz (512 images + labels), never used for calibration.
Metrics: top-1 accuracy, top-1 agreement with the float model.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from models.common import BenchModel, Feeds, RunFn

_EX = Path(__file__).resolve().parents[2] / "examples"


def _fresh(n: int, seed: int) -> Feeds:
    """``n`` new pictures from the example's generator, normalised as the model's metadata says."""
    import onnx

    if str(_EX) not in sys.path:
        sys.path.insert(0, str(_EX))
    import make_example

    meta = {
        p.key: p.value for p in onnx.load(_EX / "shapes_cnn.onnx", load_external_data=False).metadata_props
    }
    mean = tuple(int(v) for v in re.findall(r"\d+", meta["normalization"].split("[", 1)[1].split("]", 1)[0]))
    pixels, _ = make_example.make_split(np.random.SeedSequence((make_example.SEED, seed)), n)
    return {"image": make_example.normalise(pixels, mean)}


def _calib(n: int, seed: int) -> Feeds:
    if seed != 0:
        return _fresh(n, seed)
    base = np.load(_EX / "shapes_calib.npz")["image"].astype(np.float32)
    if n <= len(base):
        return {"image": base[:n].copy()}
    rng = np.random.default_rng(seed)
    idx = np.arange(n) % len(base)
    out = base[idx].copy()
    extra = np.arange(n) >= len(base)
    flip = extra & (rng.random(n) < 0.5)
    out[flip] = out[flip][..., ::-1]
    out[extra] += rng.normal(0.0, 0.05, size=out[extra].shape).astype(np.float32)
    return {"image": out}


def _eval() -> tuple[np.ndarray, np.ndarray]:
    data = np.load(_EX / "shapes_eval.npz")
    return data["image"].astype(np.float32), data["labels"].astype(np.int64)


def _predict(run: RunFn) -> dict[str, np.ndarray]:
    x, _ = _eval()
    outs = [run({"image": x[i : i + 64]})["logits"] for i in range(0, len(x), 64)]
    return {"logits": np.concatenate(outs)}


def _metrics(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    _, labels = _eval()
    top_ref, top_got = ref["logits"].argmax(1), got["logits"].argmax(1)
    return {"accuracy": float((top_got == labels).mean()), "top1_agree": float((top_got == top_ref).mean())}


def make(name: str) -> BenchModel:
    return BenchModel(
        name=name,
        title="shapes_cnn (example)",
        path=_EX / "shapes_cnn.onnx",
        source="examples/shapes_cnn.onnx",
        make_calib=_calib,
        predict=_predict,
        metrics=_metrics,
        latency_feed=lambda: {"image": _eval()[0][:32]},
    )
