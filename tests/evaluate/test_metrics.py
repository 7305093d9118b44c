"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgequant.errors import DataError, RecipeError
from edgequant.evaluate import metrics as m
from edgequant.evaluate import tasks

LOGITS = np.array(
    [
        [0.1, 0.9, 0.0, 0.2, 0.3, 0.4, 0.5],  # order: 1, 6, 5, 4, 3, 0, 2
        [2.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1],  # order: 0, 1, 2, 3, 4, 5, 6
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # order: 6, 5, 4, 3, 2, 1, 0
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # order: 0, 1, 2, ...
    ],
    dtype=np.float32,
)
LABELS = np.array([1, 3, 1, 6])  # row 0 top-1 hit; row 1 rank 4; row 2 rank 6; row 3 rank 7


def test_top_k_accuracy_by_hand() -> None:
    assert m.top_k_accuracy(LOGITS, LABELS, 1) == pytest.approx(0.25)
    assert m.top_k_accuracy(LOGITS, LABELS, 5) == pytest.approx(0.5)  # rows 0 and 1
    assert m.top_k_accuracy(LOGITS, LABELS, 7) == pytest.approx(1.0)
    onehot = np.eye(7)[LABELS]
    assert m.top_k_accuracy(LOGITS, onehot, 1) == pytest.approx(0.25)


def test_top_k_rejects_bad_k_and_label_count() -> None:
    with pytest.raises(DataError, match="top-8 needs 1 <= k <= 7"):
        m.top_k_accuracy(LOGITS, LABELS, 8)
    with pytest.raises(DataError, match="there are 3 labels for 4 samples"):
        m.top_k_accuracy(LOGITS, LABELS[:3], 1)


def test_mse_mae_sqnr_by_hand() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([1.0, 2.5, 2.0, 4.0])
    assert m.mse(a, b) == pytest.approx((0.25 + 1.0) / 4)
    assert m.mae(a, b) == pytest.approx(1.5 / 4)
    # signal 1+4+9+16 = 30, noise 1.25 -> 10 log10(24) = 13.8021 dB
    assert m.sqnr_db(a, b) == pytest.approx(10 * math.log10(24.0), abs=1e-9)
    assert m.sqnr_db(a, a) == math.inf


def test_cosine_and_nearest_neighbour_agreement() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.0, 1.0], [0.0, 2.0]])
    assert m.cosine_similarity(a, b) == pytest.approx((1 / math.sqrt(2) + 1.0) / 2)
    # float: 0 near 1 (0.9 vs 0.0); 1 near 0; 2 near 3; 3 near 2
    f = np.array([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    # quantized: sample 1 moved next to sample 2 -> 1's neighbour becomes 2 (and 2's becomes 1)
    q = np.array([[1.0, 0.1], [0.05, 1.0], [0.0, 1.0], [0.5, 1.0]])
    assert list(m.nearest_neighbours(f)) == [1, 0, 3, 2]
    assert list(m.nearest_neighbours(q)) == [3, 2, 1, 1]
    assert m.nn_agreement(f, q) == pytest.approx(0.0)
    assert m.nn_agreement(f, f) == pytest.approx(1.0)
    assert m.nn_accuracy(f, np.array([0, 0, 1, 1])) == pytest.approx(1.0)
    assert m.nn_accuracy(q, np.array([0, 0, 1, 1])) == pytest.approx(0.0)  # every neighbour crosses classes


def test_kl_divergence_by_hand() -> None:
    p = np.array([[0.5, 0.5]])
    q = np.array([[0.9, 0.1]])
    want = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # 0.5108 nats
    assert m.kl_divergence(p, q) == pytest.approx(want, rel=1e-9)
    logits_p, logits_q = np.log(p), np.log(q)  # softmax of log-probabilities gives them back
    logits_p[0, 0] = 7.0  # not a probability row any more: softmax([7, log .5]) is used
    sp = np.exp([7.0, math.log(0.5)]) / np.exp([7.0, math.log(0.5)]).sum()
    assert m.kl_divergence(logits_p, logits_q) == pytest.approx(
        float(np.sum(sp * np.log(sp / q[0]))), rel=1e-9
    )
    assert m.kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)


def _onehot_frames(ids: list[int], classes: int = 4) -> np.ndarray:
    return np.eye(classes)[ids]


def test_greedy_ctc_and_error_rate_by_hand() -> None:
    # frames: 1 1 0 1 2 2 0 0 3 -> merge repeats: 1 0 1 2 0 3 -> drop blank 0: [1, 1, 2, 3]
    seq = _onehot_frames([1, 1, 0, 1, 2, 2, 0, 0, 3])
    other = _onehot_frames([1, 1, 1, 1, 2, 2, 0, 3, 3])  # -> [1, 2, 3]
    logits = np.stack([seq, other])  # [N=2, T=9, C=4]
    assert m.ctc_greedy_decode(logits, blank=0) == [[1, 1, 2, 3], [1, 2, 3]]
    # blank 3 instead: row 0 -> 1 0 1 2 0 (3 dropped) = [1, 0, 1, 2, 0]
    assert m.ctc_greedy_decode(logits[:1], blank=3) == [[1, 0, 1, 2, 0]]
    assert m.edit_distance([1, 2, 3], [1, 1, 2, 3]) == 1
    assert m.edit_distance([], [1, 2]) == 2
    assert m.edit_distance([3, 2, 1], [1, 2, 3]) == 2
    refs = m.sequence_labels(np.array([[1, 1, 2, 3], [1, 2, 2, -1]]), 2)
    assert refs == [[1, 1, 2, 3], [1, 2, 2]]
    # distances: 0 and 1 ([1,2,3] vs [1,2,2]); reference tokens 4 + 3 = 7
    hyps = m.ctc_greedy_decode(logits, 0)
    assert m.token_error_rate(hyps, refs) == pytest.approx(1 / 7)
    with pytest.raises(DataError, match="blank index 4 is outside the 4 output classes"):
        m.ctc_greedy_decode(logits, blank=4)


def test_sequence_task_with_tnc_layout_and_labels() -> None:
    f = np.stack([_onehot_frames([1, 1, 0, 2]), _onehot_frames([3, 0, 3, 0])])  # decodes [1,2], [3,3]
    q = np.stack([_onehot_frames([1, 0, 0, 2]), _onehot_frames([3, 3, 3, 0])])  # decodes [1,2], [3]
    tnc_q = np.transpose(q, (1, 0, 2))
    s = tasks.score("sequence", f, tasks.to_ntc(tnc_q, "tnc"), np.array([[1, 2], [3, 3]]), blank=0)
    assert s.float_metrics["cer"] == pytest.approx(0.0)
    assert s.quant_metrics["cer"] == pytest.approx(1 / 4)
    assert s.drop == pytest.approx(25.0)
    assert s.agreement["cer_vs_float"] == pytest.approx(1 / 4)
    assert s.agreement["frame_top1_agreement"] == pytest.approx(6 / 8)


def test_classification_task_with_and_without_labels() -> None:
    q = LOGITS.copy()
    q[0, 1] = -1.0  # row 0 now predicts 6 -> top-1 lost, agreement 3/4
    s = tasks.score("classification", LOGITS, q, LABELS)
    assert s.primary == "top1"
    assert s.float_metrics["top1"] == pytest.approx(0.25)
    assert s.quant_metrics["top1"] == pytest.approx(0.0)
    assert s.float_metrics["top5"] == pytest.approx(0.5)
    assert s.drop == pytest.approx(25.0)
    u = tasks.score("classification", LOGITS, q, None)
    assert u.primary == "top1_agreement"
    assert u.quant_score == pytest.approx(75.0)
    assert u.drop == pytest.approx(25.0)
    assert u.agreement["kl"] > 0


def test_regression_task_drop_is_relative_mse_increase() -> None:
    t = np.array([[0.0], [1.0], [2.0], [3.0]])
    f = t + 0.1  # mse 0.01
    q = t + 0.2  # mse 0.04
    s = tasks.score("regression", f, q, t)
    assert s.float_metrics["mse"] == pytest.approx(0.01)
    assert s.quant_metrics["mae"] == pytest.approx(0.2)
    assert s.drop == pytest.approx(300.0)
    assert s.drop_unit == "%"


def test_unknown_task_and_layout() -> None:
    with pytest.raises(RecipeError, match="unknown task 'detection'"):
        tasks.check_task("detection")
    with pytest.raises(RecipeError, match="unknown sequence layout 'nct'"):
        tasks.to_ntc(np.zeros((1, 2, 3)), "nct")


def _good_metric(f: np.ndarray, q: np.ndarray, labels: object) -> dict[str, float]:
    return {"max_abs": float(np.max(np.abs(f - q)))}


def test_custom_metric_plugin(tmp_path: object) -> None:
    from pathlib import Path

    p = Path(str(tmp_path)) / "mymetric.py"
    p.write_text("import numpy as np\ndef peak(f, q, labels):\n    return {'peak': float(np.max(q))}\n")
    name, fn = tasks.load_metric(f"{p}:peak")
    assert name == "peak"
    assert tasks.run_metric(name, fn, np.zeros(2), np.array([1.0, 3.0]), None) == {"peak": 3.0}
    name, fn = tasks.load_metric("tests.evaluate.test_metrics:_good_metric")
    assert tasks.run_metric(name, fn, np.zeros(2), np.array([1.0, -3.0]), None) == {"max_abs": 3.0}
    with pytest.raises(RecipeError, match="not of the form module:function"):
        tasks.load_metric("nocolon")
    with pytest.raises(RecipeError, match="has no function 'nothere'"):
        tasks.load_metric(f"{p}:nothere")
    with pytest.raises(Exception, match="returned list"):
        tasks.run_metric("bad", lambda f, q, labels: [1.0], np.zeros(1), np.zeros(1), None)


def test_regression_without_labels_and_embedding_with_labels() -> None:
    f = np.array([[3.0, 4.0], [0.0, 5.0]])  # energy 50
    q = f + np.array([[0.5, 0.0], [0.0, -0.5]])  # noise 0.5
    s = tasks.score("regression", f, q, None)
    assert s.primary == "relative_noise_pct" and s.drop == pytest.approx(1.0)  # 100 * 0.5 / 50
    assert s.agreement["sqnr_db"] == pytest.approx(20.0)
    e = np.array([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    s = tasks.score("embedding", e, e * 2.0, np.array([0, 0, 1, 1]))
    assert s.float_metrics["nn_accuracy"] == 1.0 and s.agreement["cosine"] == pytest.approx(1.0)
    assert s.drop == 0.0 and s.agreement["nn_agreement"] == 1.0


def test_eval_data_errors() -> None:
    import tinymodels

    from edgequant.evaluate.core import load_eval_data

    m = tinymodels.conv_net()
    x = tinymodels.images(5)
    ev = load_eval_data({"x": x, "labels": np.arange(5)}, m, batch_size=2, max_samples=4)
    assert ev.samples == 4 and [len(b["x"]) for b in ev.batches] == [2, 2] and list(ev.labels) == [0, 1, 2, 3]
    with pytest.raises(DataError, match="there are 3 labels for 5 evaluation samples"):
        load_eval_data(x, m, labels=np.arange(3))
    with pytest.raises(DataError, match="input 'x' has dtype float64, the model expects float32"):
        load_eval_data(x.astype(np.float64), m)
