"""The vectorised KL (entropy) divergences against a plain per-candidate numpy reference of the same
definition (edgequant.observe.thresholds docstring): bins, groups and Q spelled out one by one."""

from __future__ import annotations

import numpy as np

from edgequant.observe.thresholds import kl_divergences


def _reference(h: np.ndarray, levels: int, zeros: float) -> tuple[np.ndarray, np.ndarray]:
    """D(P_i || Q_i) for every i in levels..n, one candidate at a time, bins spelled out."""
    h = h.astype(np.float64).copy()
    n = int(np.flatnonzero(h)[-1]) + 1
    h = h[:n]
    h[0] -= zeros
    total = h.sum() + zeros
    cands, divs = [], []
    for i in range(levels, n + 1):
        p = h[:i].copy()
        outliers = h[i:].sum()
        p[-1] += outliers
        q = np.zeros(i)
        group = (np.arange(i) * levels) // i
        for g in range(levels):
            members = np.flatnonzero(group == g)
            mass = h[members].sum()  # Q holds only the in-range counts
            support = members[p[members] > 0]
            if support.size:
                q[support] = mass / support.size
        pos = p > 0
        if np.any(q[pos] == 0):
            d = np.inf
        else:
            # generalised KL of the measures with the zero atom z in both: sum p log(p/q) - sum p + sum q
            kl = float(np.sum(p[pos] * np.log(p[pos] / q[pos])))
            d = (kl - (p.sum() + zeros) + (q.sum() + zeros)) / total
        cands.append(i)
        divs.append(d)
    return np.array(cands), np.array(divs)


def _histograms(count: int) -> list[tuple[np.ndarray, float, int]]:
    """Seeded heavy-tailed magnitude histograms (some with an exact-zero atom, some with holes)."""
    rng = np.random.default_rng(17)
    out = []
    for j in range(count):
        bins = int(rng.choice([300, 700, 2048]))
        x = np.abs(rng.standard_t(float(rng.choice([1.5, 3.0, 8.0])), size=int(rng.integers(2_000, 60_000))))
        if j % 3 == 0:
            x = np.maximum(x - 1.0, 0.0)  # a ReLU-like atom at 0
        h = np.histogram(x, bins=bins, range=(0.0, float(x.max()) * 1.0001))[0].astype(np.float64)
        if j % 4 == 1:
            h[rng.random(bins) < 0.2] = 0.0  # empty bins inside the range
            h[0] += 1.0
        if j % 5 == 2:
            h *= rng.uniform(0.5, 40.0)  # weighted (subsampled) counts are not integers
        zeros = float(np.count_nonzero(x == 0)) * (h[0] / max(np.count_nonzero(x < x.max() / bins), 1))
        zeros = min(zeros, float(h[0]))
        levels = int(rng.choice([16, 128, 256]))
        out.append((h, zeros, levels))
    return out


def test_kl_divergences_equal_a_per_candidate_reference() -> None:
    for h, zeros, levels in _histograms(12):
        h = h[:400]  # the reference is O(n^2) in Python
        if np.flatnonzero(h).size == 0 or int(np.flatnonzero(h)[-1]) + 1 <= levels:
            continue
        zeros = min(zeros, float(h[0]))
        cand, div = kl_divergences(h, levels, zeros)
        ref_cand, ref = _reference(h, levels, zeros)
        np.testing.assert_array_equal(cand, ref_cand)
        np.testing.assert_array_equal(np.isinf(div), np.isinf(ref))
        fin = np.isfinite(ref)
        np.testing.assert_allclose(div[fin], ref[fin], rtol=1e-9, atol=1e-12)
        assert cand[int(np.argmin(div))] == ref_cand[int(np.argmin(ref))]
