"""A layer's input from a model cut at that input, so that gathering it does not run the rest.

ONNX Runtime executes the whole graph for any requested output (measured on EfficientNet-Lite0:
asking for the second conv's input took as long as asking for the logits), so AdaRound's statistics,
which need each layer's float and rounded-so-far input for several batches, paid for the full model
every time.  ``upto`` keeps only the nodes that the tensor depends on (as AIMET's AdaRound stops its
forward pass at the layer), and ``LayerInputs`` runs that part, feeding only the inputs it reads.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import AttributeProto

from edgequant.runtime import OrtRuntime


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute)


def upto(model: onnx.ModelProto, name: str) -> onnx.ModelProto | None:
    """The part of ``model`` that computes tensor ``name`` (its only output); None when a node on the
    way holds a subgraph (If/Loop/Scan read outer names this walk does not follow) or nothing is cut."""
    need = {name}
    keep: list[onnx.NodeProto] = []
    for node in reversed(model.graph.node):
        if any(o in need for o in node.output):
            if _has_subgraph(node):
                return None
            keep.append(node)
            need.update(i for i in node.input if i)
    if len(keep) == len(model.graph.node):
        return None
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    nodes = list(reversed(keep))
    del graph.node[:]
    graph.node.extend(nodes)
    inputs = [i for i in graph.input if i.name in need]
    del graph.input[:]
    graph.input.extend(inputs)
    inits = [t for t in graph.initializer if t.name in need]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    infos = [v for v in graph.value_info if v.name in need]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    del graph.output[:]
    graph.output.append(onnx.ValueInfoProto(name=name))
    return out


class LayerInputs:
    """Runs ``model`` cut at tensor ``name`` (the whole model when it cannot be cut); ``close`` after use."""

    def __init__(self, runtime: OrtRuntime, model: onnx.ModelProto, name: str) -> None:
        self.name = name
        self.direct = name in {i.name for i in model.graph.input}  # a graph input: no model to run
        cut = None if self.direct else upto(model, name)
        self.cut = cut is not None
        self._sess = None if self.direct else runtime.session(cut or model, "the model up to a layer input")
        self._feeds = set(self._sess.input_names) if self._sess is not None else set()

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """The tensor for these feeds (extra feeds are ignored)."""
        if self._sess is None:
            return np.asarray(feeds[self.name])
        return self._sess.run({k: v for k, v in feeds.items() if k in self._feeds}, [self.name])[self.name]

    def close(self) -> None:
        if self._sess is not None:
            self._sess.close()
