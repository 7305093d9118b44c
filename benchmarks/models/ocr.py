"""PP-OCR models from rapidocr-onnxruntime 1.4.4 (Paddle2ONNX exports; every weight is a Constant node).

Data: text lines rendered with Pillow (DejaVu Sans if installed, else Pillow's built-in font), random
2-4 words from a fixed list plus numbers/punctuation, seeded jitter in font size, ink/paper gray level,
margins, and Gaussian pixel noise.  Calibration and evaluation use different seeds.
Preprocessing as in rapidocr: BGR, resize to height 48 keeping aspect, (x/255 - 0.5)/0.5, right-pad with
0 to width 320 (rec) or 192 (cls).

rec  ch_PP-OCRv4_rec_infer.onnx -> [N, W/8, 6625] softmax; greedy CTC decode (class 0 = blank, chars from
     the model's metadata "character", last class = space); metric: character error rate vs the rendered
     string (both stripped), float and quantized.
cls  ch_ppocr_mobile_v2.0_cls_infer.onnx -> [N, 2] (0 = upright, 1 = rotated 180 deg); eval lines are
     shown both ways; metric: accuracy.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
import onnx
from PIL import Image, ImageDraw, ImageFont

from models.common import BenchModel, RunFn

WORDS = (
    "the quick brown fox jumps over lazy dog price total amount paid invoice date model open source "
    "quantization edge device memory speed camera sensor river mountain coffee green orange number "
    "street station window paper letter north south east west market winter summer"
).split()
EVAL_SEED, EVAL_LINES = 1234, 60
_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def model_dir() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("rapidocr-onnxruntime is not installed: see benchmarks/requirements.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if _FONT.exists():
        return ImageFont.truetype(str(_FONT), size)
    return ImageFont.load_default(size=size)


def _text(rng: np.random.Generator) -> str:
    parts = [str(rng.choice(WORDS)) for _ in range(int(rng.integers(2, 5)))]
    if rng.random() < 0.5:
        parts.insert(
            int(rng.integers(0, len(parts) + 1)), f"{rng.integers(1, 999)}.{rng.integers(0, 99):02d}"
        )
    text = " ".join(parts)
    return text + str(rng.choice(["", ",", ".", ":", "!"]))


def render(text: str, rng: np.random.Generator) -> Image.Image:
    font = _font(int(rng.integers(26, 38)))
    left, top, right, bottom = font.getbbox(text)
    mx, my = int(rng.integers(4, 14)), int(rng.integers(3, 10))
    paper, ink = int(rng.integers(200, 256)), int(rng.integers(0, 70))
    im = Image.new("L", (right - left + 2 * mx, bottom - top + 2 * my), paper)
    ImageDraw.Draw(im).text((mx - left, my - top), text, fill=ink, font=font)
    a = np.asarray(im, np.float32) + rng.normal(0.0, rng.uniform(0.0, 8.0), (im.height, im.width))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).convert("RGB")


def prep(im: Image.Image, width: int, height: int = 48) -> np.ndarray:
    w = min(width, int(np.ceil(height * im.width / im.height)))
    a = np.asarray(im.resize((w, height), Image.BILINEAR), np.float32)[:, :, ::-1] / 255.0  # BGR
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :w] = ((a - 0.5) / 0.5).transpose(2, 0, 1)
    return out


def images(n: int, seed: int) -> tuple[list[Image.Image], list[str]]:
    """n rendered text lines and their strings (seeded)."""
    rng = np.random.default_rng(seed)
    texts = [_text(rng) for _ in range(n)]
    return [render(t, rng) for t in texts], texts


def lines(n: int, seed: int, width: int, rotate: bool) -> np.ndarray:
    """n preprocessed lines; with ``rotate`` a seeded half of them is rotated by 180 degrees."""
    ims, _ = images(n, seed)
    rot = np.random.default_rng(seed + 1).random(n) < 0.5 if rotate else np.zeros(n, bool)
    return np.stack([prep(im.rotate(180) if r else im, width) for im, r in zip(ims, rot, strict=True)])


@cache
def charset() -> tuple[str, ...]:
    m = onnx.load(str(model_dir() / "ch_PP-OCRv4_rec_infer.onnx"), load_external_data=False)
    meta = {p.key: p.value for p in m.metadata_props}
    return ("<blank>", *meta["character"].splitlines(), " ")


def ctc_decode(prob: np.ndarray) -> str:
    chars, out, prev = charset(), [], -1
    for i in prob.argmax(-1):
        if i != prev and i != 0:
            out.append(chars[int(i)])
        prev = int(i)
    return "".join(out)


def levenshtein(a: str, b: str) -> int:
    d = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        p, d[0] = d[0], i
        for j, cb in enumerate(b, 1):
            p, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, p + (ca != cb))
    return d[-1]


def cer(probs: np.ndarray, texts: list[str]) -> float:
    errs = sum(levenshtein(ctc_decode(p).strip(), t.strip()) for p, t in zip(probs, texts, strict=True))
    return errs / sum(len(t.strip()) for t in texts)


@cache
def _eval_rec() -> tuple[np.ndarray, list[str]]:
    ims, texts = images(EVAL_LINES, EVAL_SEED)
    return np.stack([prep(im, 320) for im in ims]), texts


@cache
def _eval_cls() -> tuple[np.ndarray, np.ndarray]:
    ims, _ = images(EVAL_LINES, EVAL_SEED)
    x = np.stack([prep(im, 192) for im in ims] + [prep(im.rotate(180), 192) for im in ims])
    return x, np.array([0] * len(ims) + [1] * len(ims), np.int64)


def _predict_batched(run: RunFn, x: np.ndarray, key: str, batch: int) -> dict[str, np.ndarray]:
    outs = [next(iter(run({"x": x[i : i + batch]}).values())) for i in range(0, len(x), batch)]
    return {key: np.concatenate(outs)}


def make(name: str) -> BenchModel:
    if name == "ocr_rec":

        def metrics(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
            _, texts = _eval_rec()
            step_agree = float((ref["probs"].argmax(-1) == got["probs"].argmax(-1)).mean())
            return {
                "cer": cer(got["probs"], texts),
                "float_cer": cer(ref["probs"], texts),
                "step_agree": step_agree,
            }

        return BenchModel(
            name=name,
            title="PP-OCRv4 rec (rapidocr-onnxruntime 1.4.4)",
            path=model_dir() / "ch_PP-OCRv4_rec_infer.onnx",
            source="rapidocr-onnxruntime==1.4.4",
            make_calib=lambda n, seed: {"x": lines(n, seed, 320, rotate=False)},
            predict=lambda run: _predict_batched(run, _eval_rec()[0], "probs", 10),
            metrics=metrics,
            latency_feed=lambda: {"x": _eval_rec()[0][:1]},
            calib_batch=10,
        )

    def cls_metrics(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
        _, labels = _eval_cls()
        top_ref, top_got = ref["probs"].argmax(1), got["probs"].argmax(1)
        return {
            "accuracy": float((top_got == labels).mean()),
            "top1_agree": float((top_got == top_ref).mean()),
        }

    return BenchModel(
        name=name,
        title="PP-OCR mobile v2.0 cls (rapidocr-onnxruntime 1.4.4)",
        path=model_dir() / "ch_ppocr_mobile_v2.0_cls_infer.onnx",
        source="rapidocr-onnxruntime==1.4.4",
        make_calib=lambda n, seed: {"x": lines(n, seed, 192, rotate=True)},
        predict=lambda run: _predict_batched(run, _eval_cls()[0], "probs", 50),
        metrics=cls_metrics,
        latency_feed=lambda: {"x": _eval_cls()[0][:8]},
        calib_batch=10,
    )
