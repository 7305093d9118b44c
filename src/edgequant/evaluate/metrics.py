"""Task metrics and float-vs-quantized agreement metrics (numpy in, numbers out).

Definitions (``f`` = float model output, ``q`` = quantized model output, ``N`` samples):

* top-k accuracy: fraction of samples whose label is among the ``k`` largest logits.
* MSE / MAE: ``mean((y - t)**2)`` / ``mean(|y - t|)`` over all elements.
* cosine similarity: per sample ``<f, q> / (|f| |q|)`` on the flattened output, then the mean.
* nearest-neighbour agreement: for each sample, its nearest other sample by cosine similarity is
  found among the float embeddings and among the quantized ones; the fraction where both agree.
  ``O(N**2)`` similarities, computed in row blocks.
* 1-NN accuracy (embeddings with labels): leave-one-out nearest neighbour has the same label.
* greedy CTC decoding (Graves et al., ICML 2006): per frame argmax, merge repeats, drop the blank.
* token error rate: ``sum(levenshtein(hyp, ref)) / sum(len(ref))``; with character tokens it is
  the character error rate (CER).
* KL divergence: ``mean_i sum_c p_f[i,c] * (log p_f[i,c] - log p_q[i,c])`` in nats, where ``p`` is
  the softmax of the logits along the last axis (or the outputs themselves when they already are
  probability vectors: non-negative and summing to 1 within 1e-3).  Probabilities are clipped at
  1e-12 so a zero in ``p_q`` gives a large, finite value.
* SQNR: ``10 * log10(sum(f**2) / sum((f - q)**2))`` dB; ``inf`` when ``q == f`` exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgequant.errors import DataError

_EPS = 1e-12


def _as_2d(x: np.ndarray, what: str) -> np.ndarray:
    """``[N, C]`` from ``[N, C]`` or ``[N, 1, ..., C]``; other layouts are an error."""
    a = np.asarray(x)
    if a.ndim == 2:
        return a
    if a.ndim > 2 and all(d == 1 for d in a.shape[1:-1]):
        return a.reshape(a.shape[0], a.shape[-1])
    raise DataError(
        f"{what} has shape {a.shape}; classification metrics need [N, classes].",
        "evaluate a model whose output is [batch, classes], or use --task regression/embedding.",
    )


def class_labels(labels: np.ndarray, n: int) -> np.ndarray:
    """Integer class labels ``[N]`` from integer labels or one-hot / probability rows ``[N, C]``."""
    lab = np.asarray(labels)
    if lab.ndim == 2 and lab.shape[1] > 1:
        lab = lab.argmax(axis=1)
    lab = lab.reshape(-1)
    if lab.shape[0] != n:
        raise DataError(
            f"there are {lab.shape[0]} labels for {n} samples.",
            "give exactly one label per evaluated sample.",
        )
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.all(np.mod(lab, 1) == 0):
            raise DataError(
                "classification labels are not whole numbers.", "store class indices as integers."
            )
        lab = lab.astype(np.int64)
    return lab


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores (ties: lower index wins)."""
    scores = _as_2d(logits, "the model output")
    lab = class_labels(labels, scores.shape[0])
    if k < 1 or k > scores.shape[1]:
        raise DataError(f"top-{k} needs 1 <= k <= {scores.shape[1]} classes.", "choose a smaller k.")
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(order == lab[:, None], axis=1)))


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of positions where the argmax over the last axis agrees."""
    return float(np.mean(np.argmax(a, axis=-1) == np.argmax(b, axis=-1)))


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``test`` against ``reference``, in dB."""
    ref = np.asarray(reference, np.float64)
    noise = float(np.sum((ref - np.asarray(test, np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(signal / noise))


def is_probability(x: np.ndarray) -> bool:
    a = np.asarray(x, np.float64)
    return bool(a.size and a.min() >= 0.0 and np.allclose(a.sum(axis=-1), 1.0, atol=1e-3))


def softmax(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, np.float64)
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def kl_divergence(ref: np.ndarray, test: np.ndarray) -> float:
    """Mean KL(P_ref || P_test) over all positions of the last axis' distributions, in nats."""
    p = np.asarray(ref, np.float64) if is_probability(ref) else softmax(ref)
    q = np.asarray(test, np.float64) if is_probability(test) else softmax(test)
    p = np.clip(p, _EPS, None)
    q = np.clip(q, _EPS, None)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1)))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, np.float64).reshape(np.asarray(x).shape[0], -1)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    out: np.ndarray = a / np.maximum(norm, _EPS)
    return out


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-sample cosine similarity of two ``[N, ...]`` arrays (flattened per sample)."""
    return float(np.mean(np.sum(_unit_rows(a) * _unit_rows(b), axis=1)))


def nearest_neighbours(x: np.ndarray, block: int = 1024) -> np.ndarray:
    """Index of each row's nearest other row by cosine similarity (ties: lower index)."""
    u = _unit_rows(x)
    n = u.shape[0]
    if n < 2:
        raise DataError(
            f"nearest-neighbour metrics need at least 2 samples, got {n}.", "evaluate on more samples."
        )
    out = np.empty(n, dtype=np.int64)
    for start in range(0, n, block):
        sim = u[start : start + block] @ u.T
        rows = np.arange(sim.shape[0])
        sim[rows, rows + start] = -np.inf
        out[start : start + block] = np.argmax(sim, axis=1)
    return out


def nn_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of samples whose nearest neighbour is the same in both embedding spaces."""
    return float(np.mean(nearest_neighbours(a) == nearest_neighbours(b)))


def nn_accuracy(x: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy of embeddings ``x`` with class ``labels``."""
    lab = class_labels(labels, np.asarray(x).shape[0])
    return float(np.mean(lab[nearest_neighbours(x)] == lab))


# -- sequences ----------------------------------------------------------------------------------
def ctc_greedy_decode(logits: np.ndarray, blank: int = 0) -> list[list[int]]:
    """Greedy CTC decoding of ``[N, T, C]`` scores: argmax, merge repeats, drop ``blank``."""
    a = np.asarray(logits)
    if a.ndim != 3:
        raise DataError(
            f"sequence output has shape {a.shape}; CTC decoding needs 3 axes ([N,T,C] or [T,N,C]).",
            "pass --layout ntc or tnc matching the model output.",
        )
    if not 0 <= blank < a.shape[2]:
        raise DataError(
            f"blank index {blank} is outside the {a.shape[2]} output classes.",
            "pass --blank between 0 and C-1.",
        )
    best = np.argmax(a, axis=2)
    out: list[list[int]] = []
    for row in best:
        keep = np.ones(row.shape[0], dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        out.append([int(t) for t in row[keep] if t != blank])
    return out


def edit_distance(hyp: Sequence[int], ref: Sequence[int]) -> int:
    """Levenshtein distance (unit cost insert, delete, substitute)."""
    prev = list(range(len(ref) + 1))
    for i, h in enumerate(hyp, 1):
        cur = [i] + [0] * len(ref)
        for j, r in enumerate(ref, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (h != r))
        prev = cur
    return prev[-1]


def sequence_labels(labels: np.ndarray | Sequence[Sequence[int]], n: int) -> list[list[int]]:
    """Reference token sequences from an int array padded with negatives, or a list of lists."""
    if isinstance(labels, np.ndarray) and labels.dtype != object:
        if labels.ndim != 2:
            raise DataError(
                f"sequence labels have shape {labels.shape}; expected [N, L] token ids padded with -1.",
                "store each reference as a row of token ids, padded with -1.",
            )
        refs = [[int(t) for t in row if t >= 0] for row in labels]
    else:
        refs = [[int(t) for t in row] for row in labels]
    if len(refs) != n:
        raise DataError(f"there are {len(refs)} label sequences for {n} samples.", "give one per sample.")
    return refs


def token_error_rate(hyps: Sequence[Sequence[int]], refs: Sequence[Sequence[int]]) -> float:
    """``sum(edit distance) / sum(reference length)``."""
    total = sum(len(r) for r in refs)
    if total == 0:
        raise DataError(
            "all reference sequences are empty; the error rate is undefined.", "check the labels."
        )
    return sum(edit_distance(h, r) for h, r in zip(hyps, refs, strict=True)) / total
