"""The recommendation rule (edgequant.evaluate.recommend): every limit, FP32 as a candidate, the
preferred quantity, ties, the closest method when nothing fits, and bad limits."""

from __future__ import annotations

import pytest

from edgequant.errors import RecipeError
from edgequant.evaluate import Candidate, Limits, recommend

MB = 2**20


def _c(name: str, drop: float, ms: float, mb: float, mj: float | None = None, ok: bool = True) -> Candidate:
    return Candidate(name, ok=ok, drop=drop, float_score=80.0, latency_ms=ms, size_bytes=int(mb * MB),
                     energy_mj=mj, error="" if ok else "boom")  # fmt: skip


FP32 = _c("float", 0.0, 4.0, 4.0, 2.0)
INT8 = _c("int8-static", 0.6, 1.0, 1.0, 0.5)
DYN = _c("dynamic-int8", 0.3, 3.0, 1.1, 0.8)
FP16 = _c("fp16", 0.0, 5.0, 2.0, 1.2)
ALL = [FP32, DYN, FP16, INT8]


def test_fp32_is_a_candidate_and_wins_when_the_limits_favour_it() -> None:
    # accuracy preferred: FP32 and fp16 both drop 0.0, the tie goes to the smaller file (fp16, 2 MB vs 4 MB)
    assert recommend(ALL, Limits(prefer="accuracy")).method == "fp16"
    # ... and to the order (FP32 first) when the sizes are equal too
    same = _c("fp16", 0.0, 5.0, 4.0, 1.2)
    assert recommend([FP32, same], Limits(prefer="accuracy")).method == "float"
    # a drop limit of 0 leaves FP32 and fp16; FP32 is faster
    assert recommend(ALL, Limits(max_drop=0.0, prefer="latency")).method == "float"


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (Limits(prefer="latency"), "int8-static"),
        (Limits(prefer="size"), "int8-static"),
        (Limits(prefer="energy"), "int8-static"),
        (Limits(max_drop=0.5, prefer="latency"), "dynamic-int8"),  # int8-static drops 0.6 > 0.5
        (Limits(max_drop_rel=0.005, prefer="size"), "dynamic-int8"),  # 0.6/80 = 0.0075 > 0.005; 0.3/80 fits
        (Limits(max_drop_rel=0.005, max_size_mb=1.05, prefer="latency"), None),
        (Limits(max_latency_ms=4.5, prefer="accuracy"), "float"),  # fp16 (5 ms) is out
        (Limits(max_latency_ms=3.5, prefer="accuracy"), "dynamic-int8"),
        (Limits(max_size_mb=1.5, prefer="accuracy"), "dynamic-int8"),
        (Limits(max_energy_mj=1.0, max_drop=0.4, prefer="size"), "dynamic-int8"),
        (Limits(max_energy_mj=1.0, max_drop=0.0, prefer="latency"), None),
    ],
)
def test_every_limit_filters(limits: Limits, expected: str | None) -> None:
    assert recommend(ALL, limits).method == expected


def test_ties_within_two_percent_go_to_the_smaller_drop() -> None:
    a, b = _c("a", 0.8, 1.00, 1.0), _c("b", 0.2, 1.015, 1.0)  # 1.5 % slower: a tie
    rec = recommend([a, b], Limits(prefer="latency"))
    assert rec.method == "b" and "2 within 2%, tie broken by accuracy drop" in rec.reason
    c = _c("c", 0.2, 1.03, 1.0)  # 3 % slower: not a tie
    assert recommend([a, c], Limits(prefer="latency")).method == "a"


def test_ties_in_speed_and_accuracy_go_to_the_smaller_file() -> None:
    """The demo's rule: the fastest within the accuracy limit, then the smallest."""
    big, small = _c("big", 0.2, 1.00, 2.0), _c("small", 0.2, 1.01, 0.5)  # 1 % slower, same drop, 4x smaller
    rec = recommend([big, small], Limits(max_drop=1.0, prefer="latency"))
    assert rec.method == "small", rec.reason
    assert "tie broken by accuracy drop, then by file size (2 with the same drop; 0.500 MB)" in rec.reason
    assert rec.rule.endswith("then break ties by accuracy (smaller drop), then by size (smaller file)")
    worse = _c("worse", 0.5, 1.00, 0.1)  # smaller still, but a larger drop: accuracy comes first
    assert recommend([big, worse], Limits(prefer="latency")).method == "big"


def test_nothing_fits_names_the_closest_and_every_miss() -> None:
    cands = [*ALL, _c("w4a8", 0.0, 0.0, 0.0, ok=False)]
    rec = recommend(cands, Limits(max_drop=0.1, max_latency_ms=0.9, prefer="latency"))
    assert rec.method is None
    # relative excess: float 4.0/0.9-1 = 3.44; fp16 5/0.9-1 = 4.56; dyn 2 + 2.33; int8 5 + 0.11
    assert rec.closest == "float"
    assert [m.text() for m in rec.misses["float"]] == ["latency 4 ms > 0.9 ms (by 3.1 ms)"]
    assert [m.limit for m in rec.misses["int8-static"]] == ["max_drop", "max_latency_ms"]
    assert rec.misses["int8-static"][0].text() == "accuracy drop 0.6 pp > 0.1 pp (by 0.5 pp)"
    assert rec.reason.startswith(
        "no method meets the limits (max_drop 0.1, max_latency_ms 0.9); closest: float"
    )
    assert "w4a8: failed: boom" in rec.reason
    assert "filter by every limit" in rec.rule and "lowest latency" in rec.rule


def test_a_regression_drop_keeps_its_unit() -> None:
    c = Candidate("q", drop=7.8, drop_unit="%", latency_ms=1.0, size_bytes=MB)
    assert (
        recommend([c], Limits(max_drop=1.0)).misses["q"][0].text() == "accuracy drop 7.8 % > 1 % (by 6.8 %)"
    )


def test_unmeasured_quantity_is_a_miss_not_a_pass() -> None:
    a = _c("a", 0.0, 1.0, 1.0, mj=None)
    rec = recommend([a], Limits(max_energy_mj=10.0))
    assert rec.method is None and rec.misses["a"][0].text() == "energy estimate not measured (limit 10 mJ)"


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"prefer": "speed"}, "prefer 'speed' is not one of latency, size, accuracy, energy"),
        ({"max_drop": -1.0}, "max_drop = -1.0 must be a number >= 0"),
        ({"max_drop_rel": 2.0}, "max_drop_rel = 2.0 is a fraction"),
        ({"max_energy_mj": float("nan")}, "max_energy_mj = nan must be a number >= 0"),
    ],
)
def test_bad_limits_are_refused(kw: dict[str, object], match: str) -> None:
    with pytest.raises(RecipeError, match=match):
        Limits(**kw)  # type: ignore[arg-type]
