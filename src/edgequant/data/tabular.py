"""CSV files of numbers: one sample per row (tabular), or windows of rows (time series).

The first row is a header when any of its cells is not a number.  Feature columns:
``csv_columns`` (header names or 0-based indices), else every column except ``csv_label_column``.
Rows: a sample is one row, shape ``(columns,)``; with ``csv_window = w`` and ``csv_stride = s``
(default ``w``), sample ``k`` is rows ``k*s .. k*s + w - 1``, shape ``(w, columns)``, and its label
is the label of its last row.  ``layout`` gives the model's layout of a window: ``tc`` (default,
``(w, columns)``), ``ct`` (``(columns, w)``, e.g. a Conv1d input), ``1tc`` / ``1ct`` (a leading axis of 1,
e.g. a Conv2d input ``[N, 1, columns, w]``).  The file is parsed once into memory as float64 (CSV is a text format
for small data; use .npy or HDF5 for large sets); the float64 -> float32 cast is recorded.
A feature-column count that the model's last input dim does not accept is a DataError.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from edgequant.data.arrays import ArrayReader, damaged
from edgequant.data.base import InputSpec
from edgequant.data.options import SourceOptions
from edgequant.errors import DataError


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _resolve(col: str | int, header: list[str] | None, width: int, path: Path, what: str) -> int:
    if isinstance(col, int):
        if not 0 <= col < width:
            raise DataError(
                f"CSV '{path}' has {width} columns; {what} index {col} is out of range.",
                f"use 0..{width - 1}.",
            )
        return col
    if header is None or col not in header:
        raise DataError(
            f"CSV '{path}' has no column '{col}' ({what}); columns: {header or f'{width} unnamed (no header)'}.",
            "name an existing header column, or use 0-based column indices.",
        )
    return header.index(col)


def open_csv(path: Path, inputs: list[InputSpec], opts: SourceOptions) -> ArrayReader:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as exc:  # binary bytes: not a text CSV whatever its name
        raise damaged(path, "CSV (UTF-8 text)", exc) from exc
    if not rows:
        raise DataError(f"CSV '{path}' is empty.", "give a CSV with numeric rows.")
    header = None if all(_is_number(c) for c in rows[0]) else [c.strip() for c in rows[0]]
    body = rows[1:] if header else rows
    width = len(rows[0])
    label_col = None
    if opts.csv_label_column is not None:
        label_col = _resolve(opts.csv_label_column, header, width, path, "csv_label_column")
    if opts.csv_columns is not None:
        cols = [_resolve(c, header, width, path, "csv_columns") for c in opts.csv_columns]
    else:
        cols = [c for c in range(width) if c != label_col]
    table = np.empty((len(body), len(cols)), np.float64)
    labels = np.empty(len(body), np.float64) if label_col is not None else None
    for r, row in enumerate(body):
        line = r + (2 if header else 1)
        if len(row) != width:
            raise DataError(
                f"CSV '{path}' line {line} has {len(row)} cells; the first row has {width}.",
                "give every row the same number of cells.",
            )
        try:
            table[r] = [float(row[c]) for c in cols]
            if labels is not None and label_col is not None:
                labels[r] = float(row[label_col])
        except ValueError as exc:
            raise DataError(
                f"CSV '{path}' line {line}: {exc}.", "feature and label cells must be numbers."
            ) from exc
    names = [header[c] if header else str(c) for c in cols]
    if opts.layout in (None, "tc"):  # the columns are the model's last input dim
        _check_width(inputs, len(cols), names, path)
    if labels is not None and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    if opts.csv_window is None:
        return ArrayReader(
            {path.stem: table}, f"CSV '{path}' ({len(body)} rows x {len(cols)} columns)", labels=labels
        )
    w = opts.csv_window
    s = opts.csv_stride or w
    if len(body) < w:
        raise DataError(
            f"CSV '{path}' has {len(body)} rows, fewer than csv_window={w}.", "use a shorter window."
        )
    windows = np.lib.stride_tricks.sliding_window_view(table, w, axis=0)[::s].transpose(0, 2, 1)
    win_labels = None if labels is None else labels[w - 1 :: s][: len(windows)]
    desc = f"CSV '{path}' ({len(windows)} windows of {w} rows, stride {s}, {len(cols)} columns)"
    if opts.layout is not None and opts.layout != "tc":  # [N, T, C] -> the model's layout
        windows = windows.transpose(0, 2, 1) if opts.layout.endswith("ct") else windows
        if opts.layout.startswith("1"):
            windows = windows[:, None]
        desc += f", layout {opts.layout} (each sample {'x'.join(map(str, windows.shape[1:]))})"
    return ArrayReader({path.stem: windows}, desc, labels=win_labels)


def _check_width(inputs: list[InputSpec], n_cols: int, names: list[str], path: Path) -> None:
    if len(inputs) != 1:
        raise DataError(
            f"CSV '{path}' feeds one input; the model has {len(inputs)}: {[i.name for i in inputs]}.",
            "save a multi-input dataset as .npz keyed by input name.",
        )
    spec = inputs[0]
    last = spec.shape[-1] if spec.shape else None
    if last is not None and last != n_cols:
        shown = "x".join("?" if d is None else str(d) for d in spec.shape)
        raise DataError(
            f"CSV '{path}' gives {n_cols} feature column(s) {names[:8]}; model input '{spec.name}' ({shown}) "
            f"expects {last}.",
            "choose the feature columns with csv_columns (and the label with csv_label_column).",
        )
