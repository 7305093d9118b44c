"""Unnamed nodes are quoted by a stable label, never as ``''``: ``<op type>_<index>`` (their index in the
graph as given), the name the plan and the report then use; ``edgequant check`` labels an unnamed QDQ
model's nodes the same way.  Expected labels are computed here from the graphs' own node order."""

from __future__ import annotations

import re

import numpy as np
import onnx

import edgequant
from edgequant.targets.check import check_model
from tests.model.test_inspect_counts import _model


def test_notes_plan_and_check_findings_quote_unnamed_nodes_by_op_type_and_index() -> None:
    given = _model()
    labels = {f"{n.op_type}_{i}" for i, n in enumerate(given.graph.node)}  # Einsum_0, Relu_1, Einsum_2
    x = np.random.default_rng(1).standard_normal((64, 5, 16)).astype(np.float32)
    r = edgequant.quantize(given, x)
    text = " ".join(r.report["notes"] + r.report["warnings"] + [d.reason for d in r.plan.nodes])
    assert "''" not in text, text
    assert "Einsum 'Einsum_0' (btd,dh->bth) rewritten as MatMul" in text
    planned = {d.node for d in r.plan.nodes}
    assert all(planned) and {"Relu_1", "Einsum_2"} <= planned <= labels | {n.name for n in r.model.graph.node}
    # check on a QDQ model whose nodes lost their names: findings name <op type>_<index in that file>
    stripped = onnx.ModelProto()
    stripped.CopyFrom(r.model)
    for n in stripped.graph.node:
        n.name = ""
    want = {f"{n.op_type}_{i}" for i, n in enumerate(stripped.graph.node)}
    found = {f["node"] for f in check_model(stripped, "ti-npu")["findings"]}
    assert found and found <= want, (found, want)
    assert any(re.fullmatch(r"MatMul_\d+", f) for f in found)  # the rewritten Einsum
    assert not any(n.name for n in stripped.graph.node)  # the caller's model is left as it was
