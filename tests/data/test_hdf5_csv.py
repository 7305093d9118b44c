"""HDF5 (+ metadata CSV split) and CSV tabular / time-series sources."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from data_helpers import spec

from edgequant.data import load_labels, open_source
from edgequant.errors import DataError, RecipeError


@pytest.fixture
def h5(tmp_path: Path) -> Path:
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["group/signal"] = np.arange(40, dtype=np.float32).reshape(20, 2)
        f["meta_ids"] = np.arange(20, dtype=np.int64).reshape(20, 1)
        f["y"] = np.arange(20) % 3
    meta = tmp_path / "meta.csv"
    split = ["train"] * 12 + ["val"] * 5 + ["test"] * 3
    meta.write_text("idx,split,cls\n" + "".join(f"{i},{s},{i * 10}\n" for i, s in enumerate(split)))
    return path


def test_hdf5_key_input_map_and_missing_key(h5: Path) -> None:
    src = open_source(h5, [spec("x", None, 2)], options={"hdf5_key": "group/signal"}, batch_size=8)
    x = np.concatenate([b["x"] for b in src])
    np.testing.assert_array_equal(x, np.arange(40, dtype=np.float32).reshape(20, 2))
    two = [spec("sig", None, 2), spec("ids", None, 1, dtype=np.int64)]
    src2 = open_source(
        h5, two, input_map={"sig": "group/signal", "ids": "meta_ids"}, sampling="random", seed=0
    )
    b = next(iter(src2))
    np.testing.assert_array_equal(b["sig"][:, 0], b["ids"][:, 0].astype(np.float32) * 2)  # rows stay aligned
    with pytest.raises(DataError, match=r"no dataset 'sig' .*available: \['group/signal', 'meta_ids', 'y'\]"):
        open_source(h5, [spec("x", None, 2)], options={"hdf5_key": "sig"})
    with pytest.raises(DataError, match="no dataset is named after the model inputs"):
        open_source(h5, [spec("x", None, 2)])


def test_hdf5_metadata_split_and_labels(h5: Path, tmp_path: Path) -> None:
    opts = {"hdf5_key": "group/signal", "metadata_csv": str(tmp_path / "meta.csv")}
    inputs = [spec("x", None, 2)]

    def rows(split: str, **extra: str) -> list[int]:
        src = open_source(h5, inputs, split=split, options={**opts, **extra})  # type: ignore[arg-type]
        return [int(v) // 2 for b in src for v in b["x"][:, 0]]

    assert rows("calib") == list(range(12))
    assert rows("eval") == [12, 13, 14, 15, 16]
    assert rows("eval", eval_type="test") == [17, 18, 19]
    assert rows("all") == list(range(20))
    labels = load_labels(h5, inputs, split="eval", options={**opts, "metadata_label_column": "cls"})
    assert labels is not None and labels.tolist() == [120, 130, 140, 150, 160]
    assert load_labels(h5, inputs, split="eval", options=opts).tolist() == [0, 1, 2, 0, 1]  # type: ignore[union-attr]
    with pytest.raises(
        DataError, match=r"no row with split = 'holdout' \(values found: \['test', 'train', 'val'\]\)"
    ):
        open_source(h5, inputs, split="eval", options={**opts, "eval_type": "holdout"})


def test_metadata_index_column_and_row_count(tmp_path: Path) -> None:
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "m.csv").write_text("id,split\n7,val\n2,train\n5,val\n")
    opts = {"metadata_csv": str(tmp_path / "m.csv"), "metadata_index_column": "id"}
    got = [
        float(v)
        for b in open_source(tmp_path / "x.npy", [spec("x", None, 1)], split="eval", options=opts)
        for v in b["x"][:, 0]
    ]
    assert got == [5.0, 7.0]
    (tmp_path / "short.csv").write_text("split\nval\n")
    with pytest.raises(DataError, match="has 1 rows and the data have 10 samples"):
        open_source(
            tmp_path / "x.npy", [spec("x", None, 1)], options={"metadata_csv": str(tmp_path / "short.csv")}
        )
    (tmp_path / "dup.csv").write_text("id,split\n1,val\n1,train\n")
    with pytest.raises(DataError, match="lists sample 1 more than once"):
        open_source(
            tmp_path / "x.npy",
            [spec("x", None, 1)],
            options={"metadata_csv": str(tmp_path / "dup.csv"), "metadata_index_column": "id"},
        )


def _csv(path: Path, n: int = 10) -> np.ndarray:
    data = np.arange(n * 3, dtype=np.float64).reshape(n, 3)
    lines = ["a,b,c,label"] + [f"{r[0]},{r[1]},{r[2]},{i % 2}" for i, r in enumerate(data)]
    path.write_text("\n".join(lines) + "\n")
    return data


def test_csv_rows_columns_labels_and_wrong_width(tmp_path: Path) -> None:
    data = _csv(tmp_path / "t.csv")
    opts = {"csv_label_column": "label"}
    src = open_source(tmp_path / "t.csv", [spec("x", None, 3)], options=opts, batch_size=4)
    x = np.concatenate([b["x"] for b in src])
    np.testing.assert_array_equal(x, data.astype(np.float32))
    assert "float64 data cast to float32" in src.stats.description
    labels = load_labels(tmp_path / "t.csv", [spec("x", None, 3)], options=opts)
    assert labels is not None and labels.tolist() == [0, 1] * 5
    sel = open_source(tmp_path / "t.csv", [spec("x", None, 2)], options={"csv_columns": ["c", 0]})
    np.testing.assert_array_equal(next(iter(sel))["x"][0], [2.0, 0.0])
    with pytest.raises(
        DataError, match=r"gives 4 feature column\(s\) \['a', 'b', 'c', 'label'\]; .* expects 3"
    ):
        open_source(tmp_path / "t.csv", [spec("x", None, 3)])
    with pytest.raises(DataError, match="no column 'd'"):
        open_source(tmp_path / "t.csv", [spec("x", None, 3)], options={"csv_columns": ["a", "b", "d"]})
    (tmp_path / "bad.csv").write_text("1,2\n3,x\n")
    with pytest.raises(DataError, match="line 2: could not convert string to float: 'x'"):
        open_source(tmp_path / "bad.csv", [spec("x", None, 2)])


def test_csv_time_series_windows(tmp_path: Path) -> None:
    data = _csv(tmp_path / "t.csv", n=10)
    opts = {"csv_label_column": "label", "csv_window": 4, "csv_stride": 3}
    src = open_source(tmp_path / "t.csv", [spec("x", None, 4, 3)], options=opts)
    got = list(src.iter_labeled())
    x = np.concatenate([b["x"] for b, _ in got])
    assert x.shape == (3, 4, 3)  # windows start at rows 0, 3, 6
    np.testing.assert_array_equal(x[1], data[3:7].astype(np.float32))
    assert np.concatenate([lab for _, lab in got]).tolist() == [1, 0, 1]  # type: ignore[misc]  # last rows 3, 6, 9


@pytest.mark.parametrize(("layout", "shape"), [("ct", (3, 4)), ("1ct", (1, 3, 4)), ("1tc", (1, 4, 3))])
def test_csv_windows_reshaped_to_the_model_layout(
    tmp_path: Path, layout: str, shape: tuple[int, ...]
) -> None:
    data = _csv(tmp_path / "t.csv", n=10)
    opts = {"csv_label_column": "label", "csv_window": 4, "csv_stride": 3, "layout": layout}
    x = np.concatenate(
        list(b["x"] for b in open_source(tmp_path / "t.csv", [spec("x", None, *shape)], options=opts))
    )
    window = data[3:7].astype(np.float32)  # rows 3..6, columns a, b, c
    want = window.T if layout.endswith("ct") else window
    np.testing.assert_array_equal(x[1].reshape(want.shape), want)
    assert x.shape == (3, *shape)
    with pytest.raises(RecipeError, match="layout='nct' needs csv_window and one of tc, ct, 1tc, 1ct"):
        open_source(tmp_path / "t.csv", [spec("x", None, 3, 4)], options={**opts, "layout": "nct"})


def test_calib_eval_split_of_one_file_never_overlaps(tmp_path: Path) -> None:
    _csv(tmp_path / "t.csv", n=30)
    inputs = [spec("x", None, 3)]
    opts = {"csv_label_column": "label"}
    parts = {
        s: {
            tuple(r)
            for b in open_source(tmp_path / "t.csv", inputs, split=s, options=opts, seed=9)
            for r in b["x"]
        }
        for s in ("calib", "eval")
    }
    assert len(parts["eval"]) == 6 and len(parts["calib"]) == 24 and not parts["calib"] & parts["eval"]
