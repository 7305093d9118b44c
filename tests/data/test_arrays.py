"""npy / npz / in-memory arrays: batching, sampling, casts, validation, splits, labels, memory mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import T, identity_model, spec

from edgequant.data import input_specs, load_labels, open_source
from edgequant.errors import DataError, UnsupportedError


def _x(n: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 4, 4)).astype(np.float32)


def test_input_specs_skip_initializers_and_mark_dynamic_dims() -> None:
    m = identity_model([("x", T.FLOAT, ["N", 3, 4, 4]), ("ids", T.INT64, [1, None]), ("w", T.FLOAT, [2])])
    m.graph.initializer.append(onnx_tensor("w"))
    specs = input_specs(m)
    assert [(s.name, s.dtype, s.shape) for s in specs] == [
        ("x", np.dtype(np.float32), (None, 3, 4, 4)),
        ("ids", np.dtype(np.int64), (1, None)),
    ]


def onnx_tensor(name: str):  # type: ignore[no-untyped-def]
    from onnx import numpy_helper

    return numpy_helper.from_array(np.zeros(2, np.float32), name)


def test_input_specs_rejects_non_tensor_input() -> None:
    from onnx import helper as h

    m = identity_model([("x", T.FLOAT, [1])])
    m.graph.input.append(h.make_tensor_sequence_value_info("seq", T.FLOAT, None))
    with pytest.raises(UnsupportedError, match="'seq' is a sequence_type"):
        input_specs(m)


def test_npy_is_memory_mapped_batched_and_reiterable(tmp_path: Path) -> None:
    x = _x(20)
    np.save(tmp_path / "x.npy", x)
    src = open_source(tmp_path / "x.npy", [spec("x", None, 3, 4, 4)], batch_size=8, max_samples=19)
    assert isinstance(src.reader.arrays["x"], np.memmap)  # type: ignore[union-attr]
    sizes = [b["x"].shape[0] for b in src]
    assert sizes == [8, 8, 3]
    first = np.concatenate([b["x"] for b in src])
    second = np.concatenate([b["x"] for b in src])
    np.testing.assert_array_equal(first, x[:19])
    np.testing.assert_array_equal(second, first)
    assert src.stats.samples == 19


def test_random_sampling_is_seeded_and_a_subset(tmp_path: Path) -> None:
    x = np.arange(50, dtype=np.float32).reshape(50, 1)
    inputs = [spec("x", None, 1)]
    a = np.concatenate([b["x"] for b in open_source(x, inputs, sampling="random", seed=3, max_samples=10)])
    b = np.concatenate([b["x"] for b in open_source(x, inputs, sampling="random", seed=3, max_samples=10)])
    c = np.concatenate([b["x"] for b in open_source(x, inputs, sampling="random", seed=4, max_samples=10)])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(set(a[:, 0].tolist())) == 10
    assert not np.array_equal(a[:, 0], np.arange(10))


def test_float64_is_cast_and_recorded_other_dtypes_fail() -> None:
    x = np.ones((4, 2), np.float64)
    src = open_source(x, [spec("x", None, 2)])
    batch = next(iter(src))
    assert batch["x"].dtype == np.float32
    assert "float64 data cast to float32" in src.stats.description
    with pytest.raises(DataError, match=r"input 'x' has dtype float16, the model expects float32"):
        open_source(x.astype(np.float16), [spec("x", None, 2)])


def test_int64_to_int32_cast_checks_range() -> None:
    ids = np.array([[1, 2], [3, 4]], np.int64)
    batch = next(iter(open_source({"ids": ids}, [spec("ids", None, 2, dtype=np.int32)])))
    assert batch["ids"].dtype == np.int32
    with pytest.raises(DataError, match=r"values in \[1, 4294967296\], outside int32"):
        open_source({"ids": ids * 0 + np.array([1, 2**32])}, [spec("ids", None, 2, dtype=np.int32)])


def test_shape_mismatch_names_input_and_shapes() -> None:
    with pytest.raises(DataError, match=r"input 'x' has shape 2x3x5x5, the model expects \?x3x4x4"):
        open_source(np.zeros((2, 3, 5, 5), np.float32), [spec("x", None, 3, 4, 4)])


def test_npz_keys_labels_and_multi_input_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a, b, y = rng.standard_normal((10, 2)), rng.standard_normal((10, 3)), np.arange(10)
    np.savez(tmp_path / "d.npz", feat_a=a.astype(np.float32), feat_b=b.astype(np.float32), labels=y)
    inputs = [spec("a", None, 2), spec("b", None, 3)]
    with pytest.raises(
        DataError, match=r"no field 'a' for model input 'a'; available: \['feat_a', 'feat_b'\]"
    ):
        open_source(tmp_path / "d.npz", inputs)
    src = open_source(tmp_path / "d.npz", inputs, input_map={"a": "feat_a", "b": "feat_b"}, batch_size=4)
    batches = list(src.iter_labeled())
    np.testing.assert_allclose(np.concatenate([bt["b"] for bt, _ in batches]), b.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([lab for _, lab in batches]), y)  # type: ignore[misc]
    assert isinstance(src.reader.arrays["feat_a"], np.memmap)  # type: ignore[union-attr]


def test_npz_compressed_single_key_and_unused_key(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "c.npz", anything=np.ones((3, 2), np.float32))
    src = open_source(tmp_path / "c.npz", [spec("x", None, 2)])
    assert "compressed and was loaded into memory" in src.stats.description
    np.savez(tmp_path / "u.npz", x=np.ones((3, 2), np.float32), extra=np.ones((3, 1)))
    with pytest.raises(DataError, match=r"field\(s\) \['extra'\] that feed no model input"):
        open_source(tmp_path / "u.npz", [spec("x", None, 2)])


def test_calib_and_eval_split_never_overlap_and_cover_all() -> None:
    x = np.arange(37, dtype=np.float32).reshape(37, 1)
    inputs = [spec("x", None, 1)]
    got = {}
    for part in ("calib", "eval"):
        src = open_source(x, inputs, split=part, eval_fraction=0.25, seed=7, sampling="random")
        got[part] = np.concatenate([b["x"][:, 0] for b in src]).astype(int).tolist()
    assert len(got["eval"]) == 9 and len(got["calib"]) == 28
    assert not set(got["calib"]) & set(got["eval"])
    assert sorted(got["calib"] + got["eval"]) == list(range(37))


def test_load_labels_follow_the_source_order() -> None:
    x = np.arange(12, dtype=np.float32).reshape(12, 1)
    y = np.arange(12) * 10
    kw = {"sampling": "random", "seed": 1, "max_samples": 5, "split": "eval", "eval_fraction": 0.5}
    src = open_source({"x": x, "y": y}, [spec("x", None, 1)], **kw)  # type: ignore[arg-type]
    xs = np.concatenate([b["x"][:, 0] for b in src])
    labels = load_labels({"x": x, "y": y}, [spec("x", None, 1)], **kw)
    assert labels is not None
    np.testing.assert_array_equal(labels, xs.astype(int) * 10)
    assert load_labels(x, [spec("x", None, 1)]) is None


def test_fixed_model_batch_overrides_batch_size() -> None:
    src = open_source(np.zeros((5, 2), np.float32), [spec("x", 1, 2)], batch_size=8)
    assert [b["x"].shape for b in src] == [(1, 2)] * 5
    assert "batch size 1 (fixed by the model; 8 was asked)" in src.stats.description


def test_bad_arguments_and_paths(tmp_path: Path) -> None:
    x = np.zeros((4, 1), np.float32)
    with pytest.raises(DataError, match=r"eval_fraction 1\.5 is outside"):
        open_source(x, [spec("x", None, 1)], split="eval", eval_fraction=1.5)
    with pytest.raises(DataError, match="does not exist"):
        open_source(tmp_path / "nope.npy", [spec("x", None, 1)])
    (tmp_path / "d.txt").write_text("1")
    with pytest.raises(DataError, match=r"unsupported extension '\.txt'"):
        open_source(tmp_path / "d.txt", [spec("x", None, 1)])
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"damaged or is not a \.npy file"):
        open_source(tmp_path / "bad.npy", [spec("x", None, 1)])
    with pytest.raises(DataError, match="has 1 sample"):
        open_source(x[:1], [spec("x", None, 1)], split="calib")
