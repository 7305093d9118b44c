"""HDF5 with one group per trial (``/trial_000/x``, ``/trial_001/x``, ...), lengths free to vary.

Layout: every dataset sits in a top-level group, and every group holds the same dataset names; one
group is one sample (its datasets carry no batch axis, e.g. ``x: [T, C]`` with T varying).  Groups
are read in sorted name order, so row i of a metadata CSV describes the i-th group.  A label is the
group's ``labels``/``label``/``y`` dataset or attribute (``hdf5_label_key`` names another): one
scalar per trial, or one label per time step (a dataset ``[T_i, ...]`` as long as the trial's inputs).
Per-step labels of a batch are padded like the inputs (with -1, or NaN for float labels) to
``[N, T_max, ...]``; evaluation scores only the real steps (``edgequant.evaluate.core``).

Batching: trials of equal length are stacked into batches; when lengths vary, each trial is a batch
of one (run one by one: padding would change what a model without a mask input computes).  With
``hdf5_mask_input`` naming the model input that takes a mask, trials are padded with zeros to the
longest in the batch along axis 0 and that input receives the mask ``[N, T]`` (1 = real step), as
float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgequant.data.arrays import ArrayReader
from edgequant.data.conform import LABEL_KEYS
from edgequant.data.options import SourceOptions
from edgequant.data.source import Chunk
from edgequant.errors import DataError


def trial_groups(f: Any) -> list[str] | None:
    """Sorted top-level group names when the file has the per-trial layout, else None."""
    import h5py

    groups = sorted(k for k, v in f.items() if isinstance(v, h5py.Group))
    if not groups or any(isinstance(v, h5py.Dataset) for v in f.values()):
        return None
    return groups


class TrialReader(ArrayReader):
    """One sample per group (module doc); ``max_batch`` is 1 when lengths vary and no mask is used."""

    def __init__(self, f: Any, groups: list[str], path: str, opts: SourceOptions, key: str | None) -> None:
        self.handle = f
        self.groups = groups
        first = f[groups[0]]
        names = sorted(k for k in first if k not in LABEL_KEYS and k != opts.hdf5_label_key)
        for g in groups[1:]:
            have = sorted(k for k in f[g] if k not in LABEL_KEYS and k != opts.hdf5_label_key)
            if have != names:
                raise DataError(
                    f"HDF5 '{path}': group '{g}' holds {have}, group '{groups[0]}' holds {names}; a per-trial "
                    "file needs the same datasets in every group.",
                    "write the same dataset names into every trial group.",
                )
        if key is not None:
            if key not in names:
                raise DataError(f"HDF5 '{path}': the trial groups have no dataset '{key}'; they hold {names}.",
                                "set hdf5_key to one of those names.")  # fmt: skip
            names = [key]
        self.names = names
        self.mask_input = opts.hdf5_mask_input
        self.lengths = np.array([f[g][names[0]].shape[0] if f[g][names[0]].ndim else 1 for g in groups])
        self.labels = self._labels(f, groups, opts.hdf5_label_key, self.lengths)
        self.per_step = self.labels is not None and self.labels.dtype == object
        self.arrays = {}
        self.n = len(groups)
        self.fields = (*names, *([self.mask_input] if self.mask_input else []))
        self.notes = [f"{self.n} trial groups, lengths {int(self.lengths.min())}..{int(self.lengths.max())}"]
        varying = len(set(self.lengths.tolist())) > 1
        self.max_batch = 1 if varying and not self.mask_input else None
        if self.max_batch == 1:
            self.notes.append("lengths vary and no hdf5_mask_input: trials run one by one")
        elif varying:
            self.notes.append(f"padded to the longest trial per batch, mask in '{self.mask_input}'")
        self.description = f"HDF5 '{path}' (one group per trial, {names})"

    @staticmethod
    def _labels(f: Any, groups: list[str], key: str | None, lengths: np.ndarray) -> np.ndarray | None:
        """``[n]`` scalars, or an object array of per-step label arrays ``[T_i, ...]``."""
        keys = [key] if key else list(LABEL_KEYS)
        out = []
        for g in groups:
            grp = f[g]
            k = next((k for k in keys if k in grp or k in grp.attrs), None)
            if k is None:
                return None
            out.append(np.asarray(grp[k][()] if k in grp else grp.attrs[k]))
        if all(a.size == 1 for a in out):
            return np.stack([a.reshape(()) for a in out])
        steps = [a.ndim >= 1 and a.shape[0] == n for a, n in zip(out, lengths, strict=True)]
        if not all(steps):
            bad = groups[steps.index(False)]
            raise DataError(
                f"trial '{bad}' has labels of shape {out[steps.index(False)].shape}, neither one label per "
                f"trial nor one per time step ({int(lengths[steps.index(False)])} steps).",
                "store one scalar label per trial, or a label array as long as the trial.",
            )
        arr = np.empty(len(out), dtype=object)
        arr[:] = out
        return arr

    def read(self, indices: np.ndarray) -> Chunk:
        samples = [{k: np.asarray(self.handle[self.groups[i]][k][()]) for k in self.names} for i in indices]
        longest = max(int(self.lengths[i]) for i in indices)
        fields: dict[str, np.ndarray] = {}
        for k in self.names:
            parts = [s[k] for s in samples]
            if any(p.shape != parts[0].shape for p in parts):
                if not self.mask_input:
                    raise DataError(
                        f"{self.description}: trials of different lengths cannot share a batch without a mask.",
                        "set hdf5_mask_input to the model's mask input, or use batch size 1.",
                    )
                parts = [np.pad(p, [(0, longest - p.shape[0])] + [(0, 0)] * (p.ndim - 1)) for p in parts]
            fields[k] = np.stack(parts)
        if self.mask_input:
            mask = np.zeros((len(indices), longest), np.float32)
            for row, i in enumerate(indices):
                mask[row, : int(self.lengths[i])] = 1.0
            fields[self.mask_input] = mask
        labels = None if self.labels is None else self.labels[indices]
        if labels is not None and self.per_step:  # [N, T_max, ...], padded like the inputs
            parts = list(labels)
            fill = np.nan if parts[0].dtype.kind == "f" else -1
            labels = np.stack(
                [
                    np.pad(p, [(0, longest - p.shape[0])] + [(0, 0)] * (p.ndim - 1), constant_values=fill)
                    for p in parts
                ]
            )
        return Chunk(fields, labels)
