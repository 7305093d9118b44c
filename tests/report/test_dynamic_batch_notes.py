"""Dynamic quantization's batch dependence is said alike by quantize (its note) and in compare's report
files (the notes column of report.md / report.html, not only the console table's footnote).  The
sentence is checked true here with our own ORT sessions: a sample's dynamic-int8 output changes with
its batch-mates, the float model's does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import tinymodels
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app

SENTENCE = "computed per call over the whole batch (DynamicQuantizeLinear)"


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {"x": x})[0])


def test_the_batch_sentence_is_true_of_the_dynamic_model() -> None:
    m = tinymodels.mlp(seed=0)
    q = edgequant.quantize(m, method="dynamic")
    assert any(SENTENCE in n for n in q.report["notes"]), q.report["notes"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 32)).astype(np.float32)
    x[1:] *= 10.0  # batch-mates with a 10x wider range: sample 0's input scale grows with them
    alone, batched = _run(q.model, x[:1]), _run(q.model, x)[:1]
    assert float(np.max(np.abs(alone - batched))) > 1e-3  # measured about 0.05 on this seed
    assert np.array_equal(_run(m, x[:1]), _run(m, x)[:1])  # float: no batch dependence


def test_compare_report_notes_column_carries_it(tmp_path: Path) -> None:
    """Before: report.md's notes cell for dynamic-int8 was empty (the console footnote had the text)."""
    m, data = tmp_path / "mlp.onnx", tmp_path / "d.npz"
    onnx.save(tinymodels.mlp(seed=0), str(m))
    rng = np.random.default_rng(1)
    np.savez(data, x=rng.standard_normal((64, 32)).astype(np.float32))
    out = tmp_path / "cmp"
    args = ["compare", str(m), "--calib-data", str(data), "--eval-data", str(data), "--task", "regression"]
    res = CliRunner().invoke(app, [*args, "--methods", "float,dynamic-int8", "--runs", "3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    md = (out / "report.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| dynamic-int8 |"))
    assert SENTENCE in row.split("|")[-2] and "its score depends on the evaluation batch size" in row
    float_row = next(ln for ln in md.splitlines() if ln.startswith("| float |"))
    assert SENTENCE not in float_row
    assert SENTENCE in (out / "report.html").read_text()
