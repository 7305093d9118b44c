"""SourceOptions: the format-specific settings of a data source, typed and strict.

``open_source`` takes the settings every format shares (batch size, sampling, split, ...) as
keyword arguments; the few that only one format uses live here.  Unknown names are errors with a
"did you mean" suggestion (a typo must never be silently ignored), and impossible values are
rejected when the options are built.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from edgequant.errors import RecipeError


@dataclass(frozen=True)
class SourceOptions:
    """Format-specific options.

    Video (each decoded frame is one sample, in time order):
      ``video_frames``  take N frames spread evenly over each video;
      ``video_every``   take every k-th frame (0, k, 2k, ...).  At most one of the two; default: all frames.
    CSV tabular / time series (numeric columns; a header row is detected when the first row is not numeric):
      ``csv_columns``   the feature columns, by header name or 0-based index (default: every column
                        except the label column);
      ``csv_window``    rows per sample (a sample is then ``window x columns``); default: one row per sample;
      ``csv_stride``    rows between window starts (default: the window length, i.e. no overlap);
      ``csv_label_column`` the column holding labels for evaluation;
      ``layout``        a window's layout for the model: tc (default), ct, 1tc or 1ct (see ``data.tabular``).
    HDF5:
      ``hdf5_key``      the dataset of a single-input model (multi-input: ``input_map`` input -> key);
      ``hdf5_label_key`` the dataset holding labels (default: "labels", "label" or "y" when present).
      One group per trial (variable lengths): see ``edgequant.data.trials``; ``hdf5_mask_input`` names
      the model input that takes a padding mask (else trials of different lengths run one by one).
    Metadata CSV (any indexable source: npy, npz, HDF5, in-memory arrays): one row per sample, row i
    describing sample i unless ``metadata_index_column`` names a column of sample indices.  Rows select the
    samples; the split column decides calibration vs evaluation:
      ``metadata_csv``, ``metadata_split_column`` (default "split"), ``calib_type`` (default "train"),
      ``eval_type`` (default "val"; e.g. "test"), ``metadata_label_column`` (labels for evaluation).
    Loading:
      ``prefetch``      decode images / video in a background thread (queue of 2 batches)
                        while the model runs.
    """

    video_frames: int | None = None
    video_every: int | None = None
    csv_columns: tuple[str | int, ...] | None = None
    csv_window: int | None = None
    csv_stride: int | None = None
    csv_label_column: str | int | None = None
    layout: str | None = None
    hdf5_key: str | None = None
    hdf5_label_key: str | None = None
    hdf5_mask_input: str | None = None
    metadata_csv: str | None = None
    metadata_split_column: str = "split"
    metadata_index_column: str | None = None
    metadata_label_column: str | None = None
    calib_type: str = "train"
    eval_type: str = "val"
    prefetch: bool = True

    def __post_init__(self) -> None:
        if self.video_frames is not None and self.video_every is not None:
            raise RecipeError(
                f"video_frames={self.video_frames} and video_every={self.video_every} are both set.",
                "choose one: N evenly spaced frames (video_frames) or every k-th frame (video_every).",
            )
        for name in ("video_frames", "video_every", "csv_window", "csv_stride"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise RecipeError(
                    f"{name} must be a whole number >= 1, got {value!r}.", f"set {name} to 1 or more."
                )
        if self.layout is not None and (
            self.layout not in ("tc", "ct", "1tc", "1ct") or self.csv_window is None
        ):
            raise RecipeError(
                f"layout={self.layout!r} needs csv_window and one of tc, ct, 1tc, 1ct.",
                "set csv_window=W and layout=ct for a [N, columns, W] input (tc: [N, W, columns]).",
            )
        if self.csv_stride is not None and self.csv_window is None:
            raise RecipeError(
                f"csv_stride={self.csv_stride} is set without csv_window.",
                "set csv_window (rows per sample) as well, or drop csv_stride.",
            )
        if self.calib_type == self.eval_type:
            raise RecipeError(
                f"calib_type and eval_type are both '{self.eval_type}': "
                "calibration and evaluation would overlap.",
                "use different split values, e.g. calib_type='train' and eval_type='val'.",
            )
        if self.csv_columns is not None:
            object.__setattr__(self, "csv_columns", tuple(self.csv_columns))

    @classmethod
    def create(cls, options: SourceOptions | Mapping[str, Any] | None) -> SourceOptions:
        """Build from a mapping (YAML, JSON body, keyword arguments); unknown names are RecipeErrors."""
        if options is None:
            return cls()
        if isinstance(options, SourceOptions):
            return options
        if not isinstance(options, Mapping):
            raise RecipeError(
                f"data options must be a mapping, got {type(options).__name__}.",
                "pass a dict of option names.",
            )
        names = [f.name for f in fields(cls)]
        kwargs: dict[str, Any] = {}
        for raw, value in options.items():
            key = str(raw).replace("-", "_")
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                raise RecipeError(
                    f"unknown data option '{raw}'; allowed: {', '.join(names)}.",
                    "remove or rename the option" + (f" (did you mean '{close[0]}'?)." if close else "."),
                )
            kwargs[key] = value
        return cls(**kwargs)
