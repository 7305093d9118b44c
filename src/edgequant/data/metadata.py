"""A metadata CSV that selects the samples of an indexable source and decides the split.

Row ``r`` describes sample ``r`` (then the CSV has exactly one row per sample), or the sample
whose index is in ``metadata_index_column``.  ``split="calib"`` keeps the rows whose
``metadata_split_column`` equals ``calib_type``, ``"eval"`` those equal to ``eval_type``, and
``"all"`` every row listed.  Indices are returned in ascending order; a duplicated index is an
error (it would count one sample twice, or in both parts).  ``metadata_label_column`` sets the
labels (integers when every value is one, else strings).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from edgequant.data.arrays import ArrayReader
from edgequant.data.options import SourceOptions
from edgequant.data.select import Split
from edgequant.data.source import Reader
from edgequant.errors import DataError


def _column(rows: list[dict[str, str]], name: str, path: Path, what: str, columns: list[str]) -> list[str]:
    if name not in columns:
        raise DataError(
            f"metadata CSV '{path}' has no column '{name}' ({what}); columns: {columns}.",
            f"name the right column with {what}.",
        )
    return [r[name].strip() for r in rows]


def apply_metadata(reader: Reader, path: Path, split: Split, opts: SourceOptions) -> np.ndarray:
    if not isinstance(reader, ArrayReader):
        raise DataError(
            f"a metadata CSV selects rows of npy/npz/HDF5/CSV data; {reader.description} is not one.",
            "drop metadata_csv, or save the samples as HDF5/npz.",
        )
    if not path.is_file():
        raise DataError(f"metadata CSV '{path}' does not exist.", "check metadata_csv.")
    with open(path, newline="", encoding="utf-8") as f:
        table = csv.DictReader(f)
        rows = list(table)
        columns = list(table.fieldnames or [])
    n = len(reader)
    if opts.metadata_index_column is not None:
        raw = _column(rows, opts.metadata_index_column, path, "metadata_index_column", columns)
        try:
            index = np.array([int(v) for v in raw], np.int64)
        except ValueError as exc:
            raise DataError(
                f"metadata CSV '{path}': {exc} in column '{opts.metadata_index_column}'.",
                "the index column must hold whole numbers.",
            ) from exc
        bad = index[(index < 0) | (index >= n)]
        if len(bad):
            raise DataError(
                f"metadata CSV '{path}' lists sample index {int(bad[0])}, but the data have {n} samples (0..{n - 1}).",
                "fix the index column, or point metadata_csv at the CSV of this file.",
            )
        uniq, counts = np.unique(index, return_counts=True)
        if np.any(counts > 1):
            raise DataError(
                f"metadata CSV '{path}' lists sample {int(uniq[counts > 1][0])} more than once.",
                "list every sample once.",
            )
    else:
        if len(rows) != n:
            raise DataError(
                f"metadata CSV '{path}' has {len(rows)} rows and the data have {n} samples.",
                "give one row per sample, or set metadata_index_column.",
            )
        index = np.arange(n, dtype=np.int64)
    keep = np.ones(len(rows), bool)
    if split != "all":
        values = _column(rows, opts.metadata_split_column, path, "metadata_split_column", columns)
        want = opts.calib_type if split == "calib" else opts.eval_type
        keep = np.array([v == want for v in values], bool)
        if not keep.any():
            raise DataError(
                f"metadata CSV '{path}' has no row with {opts.metadata_split_column} = '{want}' "
                f"(values found: {sorted(set(values))[:10]}).",
                f"set {'calib_type' if split == 'calib' else 'eval_type'} to one of the values found.",
            )
    if opts.metadata_label_column is not None:
        raw = _column(rows, opts.metadata_label_column, path, "metadata_label_column", columns)
        try:
            values_arr: np.ndarray = np.array([int(v) for v in raw], np.int64)
            full: np.ndarray = np.full(n, -1, np.int64)
        except ValueError:
            values_arr = np.array(raw, dtype=str)
            full = np.full(n, "", dtype=values_arr.dtype)
        full[index] = values_arr
        reader.labels = full
    return np.sort(index[keep])
