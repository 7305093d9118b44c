"""HDF5 files (h5py): datasets read by index, samples on axis 0, never loaded whole.

Which datasets feed the model:
  * ``hdf5_key`` names the dataset of a single-input model;
  * ``input_map`` ({model input: dataset key}) names one dataset per input;
  * otherwise datasets named after the model inputs, or the file's only non-label dataset.
Labels: ``hdf5_label_key``, else a dataset named "labels", "label" or "y" when present.  A missing
key is a DataError listing the datasets the file has.  A file whose datasets all sit in top-level
groups, one group per trial, is read by ``edgequant.data.trials.TrialReader`` (variable lengths).
The file stays open (read-only) for the
life of the reader; h5py reads only the rows asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgequant.data.arrays import ArrayReader, damaged, unreadable
from edgequant.data.base import InputSpec
from edgequant.data.conform import LABEL_KEYS
from edgequant.data.options import SourceOptions
from edgequant.errors import DataError, DependencyError


def _datasets(f: Any) -> dict[str, Any]:
    import h5py

    found: dict[str, Any] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            found[name] = obj

    f.visititems(visit)
    return found


def open_hdf5(
    path: Path, inputs: list[InputSpec], input_map: dict[str, str] | None, opts: SourceOptions
) -> ArrayReader:
    try:
        import h5py
    except ImportError as exc:
        raise DependencyError.missing("h5py", "data", "reading HDF5 files") from exc
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise (unreadable(path, exc) or damaged(path, "HDF5", exc)) from exc
    from edgequant.data.trials import TrialReader, trial_groups

    groups = trial_groups(f)
    if groups is not None:
        return TrialReader(f, groups, str(path), opts, opts.hdf5_key)
    datasets = _datasets(f)
    available = sorted(datasets)

    def get(key: str, what: str) -> Any:
        ds = datasets.get(key.strip("/"))
        if ds is None:
            f.close()
            raise DataError(
                f"HDF5 file '{path}' has no dataset '{key}' ({what}); available: {available}.",
                "pick one of the available keys (hdf5_key / input_map / hdf5_label_key).",
            )
        return ds

    label_key = opts.hdf5_label_key or next((k for k in LABEL_KEYS if k in datasets), None)
    labels = get(label_key, "labels") if label_key else None
    fields: dict[str, Any] = {}
    if opts.hdf5_key is not None:
        fields[opts.hdf5_key] = get(opts.hdf5_key, "hdf5_key")
    for name, key in (input_map or {}).items():
        fields[key] = get(key, f"input_map for '{name}'")
    if not fields:
        named = [i.name for i in inputs if i.name in datasets]
        rest = [k for k in available if k not in LABEL_KEYS and k != label_key]
        if named:
            fields = {k: datasets[k] for k in named}
        elif len(inputs) == 1 and len(rest) == 1:
            fields = {rest[0]: datasets[rest[0]]}
        else:
            f.close()
            raise DataError(
                f"HDF5 file '{path}': no dataset is named after the model inputs {[i.name for i in inputs]}; "
                f"available: {available}.",
                "set hdf5_key (one input) or input_map {model input: dataset key}.",
            )
    reader = ArrayReader(fields, f"HDF5 '{path}' {sorted(fields)}", labels=labels)
    reader.handle = f  # type: ignore[attr-defined]  # keeps the file open as long as the reader lives
    return reader
