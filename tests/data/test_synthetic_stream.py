"""Synthetic data and iterables of batches (variable shapes, one-shot iterators, splits)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from data_helpers import spec

from edgequant.data import SourceOptions, open_source, synthetic
from edgequant.errors import DataError, RecipeError


def test_none_gives_synthetic_with_hints_and_defaults() -> None:
    inputs = [spec("x", None, 3, None, None), spec("ids", None, None, dtype=np.int64)]
    src = open_source(None, inputs, batch_size=4, max_samples=10, shape_hints={"x": (3, 8, 8)})
    assert src.stats.synthetic
    shapes = [(b["x"].shape, b["ids"].shape) for b in src]
    assert shapes == [((4, 3, 8, 8), (4, 1))] * 2 + [((2, 3, 8, 8), (2, 1))]
    assert "dynamic dims of 'ids' set to 1" in src.stats.description
    batch = next(iter(src))
    assert batch["ids"].dtype == np.int64 and 0 <= batch["ids"].min() and batch["ids"].max() < 16
    x = np.concatenate([b["x"] for b in src])
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1.0) < 0.05  # 1920 N(0,1) draws


def test_synthetic_independent_of_batch_size_and_seeded() -> None:
    inputs = [spec("x", None, 5)]
    a = np.concatenate(list(b["x"] for b in synthetic(inputs, samples=6, batch_size=4, seed=1)))
    b = np.concatenate(list(b["x"] for b in synthetic(inputs, samples=6, batch_size=3, seed=1)))
    c = np.concatenate(list(b["x"] for b in synthetic(inputs, samples=6, batch_size=3, seed=2)))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    u = np.concatenate(
        list(b["x"] for b in synthetic(inputs, samples=50, batch_size=8, seed=0, distribution="uniform"))
    )
    assert u.min() >= 0.0 and u.max() < 1.0


def test_synthetic_calib_and_eval_differ() -> None:
    inputs = [spec("x", None, 4)]
    cal = next(iter(open_source(None, inputs, split="calib", max_samples=2)))["x"]
    ev = next(iter(open_source(None, inputs, split="eval", max_samples=2)))["x"]
    assert not np.allclose(cal, ev)


def test_bad_shape_hint() -> None:
    with pytest.raises(
        DataError, match=r"shape hint \(3, 9\) for input 'x' does not fit its per-sample shape 3"
    ):
        open_source(None, [spec("x", None, 3)], shape_hints={"x": (3, 9)})


def test_variable_length_batches_pass_untouched_and_split_large_ones() -> None:
    batches = [
        {"ids": np.arange(2 * 5).reshape(2, 5)},
        {"ids": np.arange(3 * 7).reshape(3, 7), "labels": np.array([1, 2, 3])},
    ]
    src = open_source(batches, [spec("ids", None, None, dtype=np.int64)], batch_size=2)
    got = list(src.iter_labeled())
    assert [b["ids"].shape for b, _ in got] == [(2, 5), (2, 7), (1, 7)]
    np.testing.assert_array_equal(got[2][0]["ids"], batches[1]["ids"][2:])
    assert got[2][1] is not None and got[2][1].tolist() == [3]
    assert [b["ids"].shape for b in src] == [(2, 5), (2, 7), (1, 7)]  # re-iterable
    capped = open_source(batches, [spec("ids", None, None, dtype=np.int64)], batch_size=8, max_samples=4)
    assert [b["ids"].shape[0] for b in capped] == [2, 2]


def test_one_shot_generator_fails_on_second_pass_callable_works() -> None:
    def gen() -> Iterator[dict[str, np.ndarray]]:
        for i in range(3):
            yield {"x": np.full((2, 2), i, np.float32)}

    src = open_source(gen(), [spec("x", None, 2)])
    with pytest.raises(DataError, match="one-shot iterator"):
        list(src)
    src2 = open_source(gen, [spec("x", None, 2)])
    assert len(list(src2)) == 3 and len(list(src2)) == 3


def test_stream_split_is_disjoint_and_random_sampling_refused() -> None:
    batches = [{"x": np.arange(i * 10, i * 10 + 10, dtype=np.float32).reshape(10, 1)} for i in range(10)]
    inputs = [spec("x", None, 1)]
    cal = np.concatenate([b["x"][:, 0] for b in open_source(batches, inputs, split="calib", seed=5)])
    ev = np.concatenate([b["x"][:, 0] for b in open_source(batches, inputs, split="eval", seed=5)])
    assert not set(cal.tolist()) & set(ev.tolist())
    assert len(cal) + len(ev) == 100 and 8 <= len(ev) <= 35
    with pytest.raises(DataError, match="sampling='random' needs data that can be read by index"):
        open_source(batches, inputs, sampling="random")


def test_stream_batch_errors() -> None:
    with pytest.raises(DataError, match="batch 0 is a list"):
        open_source([[1, 2]], [spec("x", None, 1)])  # type: ignore[list-item]
    bad = [{"x": np.zeros((2, 1), np.float32), "labels": np.zeros(3)}]
    with pytest.raises(DataError, match=r"the labels have shape \(3,\), the inputs 2 samples on axis 0"):
        open_source(bad, [spec("x", None, 1)])


def test_sequence_first_batches_pass_whole() -> None:
    inputs = [spec("x", None, None, 8), spec("h0", 1, None, 16)]  # LSTM: x is TxNxD, h0 is 1xNxH
    batches = [{"x": np.ones((5, 4, 8), np.float32), "h0": np.zeros((1, 4, 16), np.float32)}] * 3
    src = open_source(batches, inputs, batch_size=2, max_samples=2)
    assert [(b["x"].shape, b["h0"].shape) for b in src] == [((5, 4, 8), (1, 4, 16))] * 2  # units, not split
    fixed = open_source([{"x": np.ones((1, 3), np.float32)}] * 4, [spec("x", 1, 3)], batch_size=8)
    assert len(list(fixed)) == 4 and fixed.stats.samples == 4


def test_source_options_reject_unknown_and_conflicting() -> None:
    with pytest.raises(RecipeError, match=r"unknown data option 'video_frame'.*did you mean 'video_frames'"):
        SourceOptions.create({"video_frame": 3})
    with pytest.raises(RecipeError, match="choose one"):
        SourceOptions(video_frames=3, video_every=2)
    with pytest.raises(RecipeError, match="csv_window must be a whole number >= 1"):
        SourceOptions(csv_window=0)
    assert SourceOptions.create({"csv-window": 4}).csv_window == 4
