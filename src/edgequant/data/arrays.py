"""NumPy data: ``.npy`` / ``.npz`` files and in-memory arrays, read by index without loading everything.

``.npy`` files are memory-mapped (``np.load(mmap_mode="r")``), so a pass touches only the rows it
reads.  ``.npz`` members stored uncompressed (``np.savez``) are memory-mapped the same way, at the
member's offset inside the zip; compressed members (``np.savez_compressed``) cannot be, so they are
decompressed into memory once and the description says so.  Object arrays are refused (they would
need pickle, which can run code).

Fields: a ``.npy`` / single array is one field (named after the file stem; a single-input model
needs no name); ``.npz`` keys and dict keys are field names.  "labels", "label" and "y" are labels.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.data.base import InputSpec
from edgequant.data.conform import LABEL_KEYS, stacked_feeds
from edgequant.data.source import Chunk, Reader
from edgequant.errors import DataError


class ArrayReader(Reader):
    """Fields indexed on axis 0.  Arrays may be np.ndarray, np.memmap or h5py datasets."""

    def __init__(
        self,
        arrays: Mapping[str, Any],
        description: str,
        notes: list[str] | None = None,
        labels: Any | None = None,
    ) -> None:
        """``labels`` explicit, or else the array under a label key ("labels", "label", "y")."""
        if not arrays:
            raise DataError(f"{description} holds no arrays.", "save at least one array (batch first).")
        self.description = description
        self.notes = notes or []
        label_key = next((k for k in LABEL_KEYS if k in arrays), None)
        self.labels = labels if labels is not None else (arrays[label_key] if label_key else None)
        self.arrays = {k: v for k, v in arrays.items() if k not in LABEL_KEYS}
        if labels is not None:
            arrays = {**self.arrays, "labels": labels}
        if not self.arrays:
            raise DataError(
                f"{description} holds only labels ({sorted(arrays)}), no model input.",
                "add the input arrays next to the labels.",
            )
        self.shapes = {k: tuple(int(d) for d in v.shape) for k, v in arrays.items()}
        sizes = {k: (s[0] if s else None) for k, s in self.shapes.items()}
        # checked by check_layout once the model inputs are known (conform.stacked_feeds):
        self.counts_agree = None not in sizes.values() and len(set(sizes.values())) == 1
        self.n = int(next(iter(sizes.values())) or 0) if self.counts_agree else 0
        self.fields = tuple(self.arrays)

    def __len__(self) -> int:
        return self.n

    def check_layout(self, inputs: list[InputSpec], input_map: Mapping[str, str] | None) -> bool:
        """True when the arrays hold stacked feed dicts (``conform.stacked_feeds``); raises DataError
        when the layouts mix or the arrays disagree on the count along axis 0."""
        if not self.arrays:  # per-trial HDF5 groups: one sample per group, never stacked
            return False
        return stacked_feeds(self.shapes, self.fields, inputs, input_map, self.counts_agree, self.description)

    def read(self, indices: np.ndarray) -> Chunk:
        fields = {k: _take(v, indices) for k, v in self.arrays.items()}
        labels = None if self.labels is None else _take(self.labels, indices)
        return Chunk(fields, labels)

    def read_labels(self, indices: np.ndarray) -> np.ndarray | None:
        return None if self.labels is None else _take(self.labels, indices)


def _take(arr: Any, indices: np.ndarray) -> np.ndarray:
    if len(indices) and np.all(np.diff(indices) == 1):
        return np.asarray(arr[int(indices[0]) : int(indices[-1]) + 1])  # contiguous: one slice read
    if isinstance(arr, np.ndarray):
        return np.asarray(arr[indices])
    uniq, inverse = np.unique(indices, return_inverse=True)  # h5py wants increasing indices
    return np.asarray(arr[uniq])[inverse]


def from_memory(data: np.ndarray | Mapping[str, np.ndarray]) -> ArrayReader:
    if isinstance(data, np.ndarray):
        return ArrayReader({"array": _no_objects(data, "the array")}, "in-memory array")
    arrays = {str(k): _no_objects(np.asarray(v), f"array '{k}'") for k, v in data.items()}
    return ArrayReader(arrays, f"in-memory arrays {sorted(arrays)}")


def _no_objects(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype == object:
        raise DataError(
            f"{what} has dtype object, not a numeric dtype.", "convert it with np.asarray(x, np.float32)."
        )
    return arr


def unreadable(path: Path, exc: Exception) -> DataError | None:
    """A file the OS will not open (permissions, a directory): its own fix, not "re-save it"."""
    if isinstance(exc, PermissionError | IsADirectoryError | FileNotFoundError):
        return DataError(
            f"cannot open '{path}': {exc.strerror or exc}.",
            "check that the path names a readable file (permissions: chmod +r).",
        )
    return None


def damaged(path: Path, kind: str, exc: object) -> DataError:
    """The error for a file whose bytes are not the format its name says (truncated, overwritten, mislabelled).

    Its fix is about the file itself (re-create or re-download it), not about how to save arrays.
    """
    return DataError(
        f"'{path}' is damaged or is not a {kind} file despite its name ({exc}).",
        f"re-create or re-download it, and check what wrote it (`file {path}` shows what it holds).",
    )


def open_npy(path: Path) -> ArrayReader:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise (unreadable(path, exc) or damaged(path, ".npy", exc)) from exc
    if magic != b"\x93NUMPY":
        raise damaged(path, ".npy", "no .npy header")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, EOFError) as exc:
        raise (unreadable(path, exc) or damaged(path, ".npy", exc)) from exc
    except ValueError as exc:
        raise DataError(
            f"'{path}' is not a .npy file of numbers: {exc}.",
            "save a numeric array with np.save(path, array).",
        ) from exc
    return ArrayReader({path.stem: arr}, f"'{path}'")


def open_npz(path: Path) -> ArrayReader:
    notes: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[: -len(".npy")]
                mapped = _memmap_member(path, info) if info.compress_type == zipfile.ZIP_STORED else None
                if mapped is None:
                    with zf.open(info) as f:
                        mapped = np.lib.format.read_array(f, allow_pickle=False)
                    notes.append(f"member '{key}' is compressed and was loaded into memory")
                arrays[key] = mapped
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise (unreadable(path, exc) or damaged(path, ".npz (zip)", exc)) from exc
    except ValueError as exc:
        if "object" not in str(exc).lower():  # a member's header is not .npy: the bytes are bad
            raise damaged(path, ".npz", exc) from exc
        raise DataError(
            f"'{path}' is not a .npz file of numbers: {exc}.",
            "save numeric arrays with np.savez(path, name=array).",
        ) from exc
    desc = f"'{path}'" + (f" ({'; '.join(notes)})" if notes else "")
    return ArrayReader(arrays, desc)


def _memmap_member(path: Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """Memory-map an uncompressed ``.npy`` member; None when its header is not one we can map."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)
        if head[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"member '{info.filename}' holds Python objects")
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
