"""The sweep's result cache: one JSON file per finished cell, named by a content hash.

key = SHA-256 over the model file's bytes, the calibration and evaluation data (file bytes; a
folder: every file's relative path and bytes), the cell's resolved recipe (the preset with the
cell's target and bits, as ``recipe.to_dict`` writes it), the measurement settings and EdgeQuant's
version.  Changing any byte of these re-runs the cell; nothing else does (the output folder's
name, the executor and the order of the lists do not enter the key).  Failed cells are cached too
(their error is part of the result); delete ``.sweep-cache/`` to retry them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgequant.model.io import write_text_atomic

CACHE_DIR = ".sweep-cache"


def content_hash(item: Any) -> str:
    """SHA-256 hex of a file's bytes, a folder's files (relative path + bytes), or ``repr`` of anything
    else (NumPy arrays: dtype, shape and bytes)."""
    h = hashlib.sha256()
    if isinstance(item, str | Path) and Path(item).is_file():
        with open(item, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    elif isinstance(item, str | Path) and Path(item).is_dir():
        root = Path(item)
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(root)).encode() + b"\0")
            h.update(f.read_bytes())
    elif hasattr(item, "tobytes") and hasattr(item, "dtype"):
        h.update(f"{item.dtype}{item.shape}".encode())
        h.update(item.tobytes())
    elif isinstance(item, Mapping):
        for k in sorted(item):
            h.update(str(k).encode() + b"\0" + content_hash(item[k]).encode())
    else:
        h.update(repr(item).encode())
    return h.hexdigest()


def cell_key(
    model_hash: str, calib_hash: str, eval_hash: str, recipe: Mapping[str, Any], settings: Mapping[str, Any]
) -> str:
    from edgequant.result import __version__

    text = json.dumps(
        {"model": model_hash, "calibration": calib_hash, "evaluation": eval_hash, "recipe": recipe,
         "settings": settings, "edgequant": __version__},
        sort_keys=True, default=str,
    )  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()


class Cache:
    """``outdir/.sweep-cache/<key>.json`` files holding each finished cell's row."""

    def __init__(self, outdir: Path) -> None:
        self.folder = outdir / CACHE_DIR

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.folder / f"{key}.json"
        if not path.is_file():
            return None
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a torn or foreign file: the cell runs again and rewrites it
        return data

    def put(self, key: str, row: Mapping[str, Any]) -> None:
        from edgequant.report.render import jsonable

        write_text_atomic(self.folder / f"{key}.json", json.dumps(jsonable(row), sort_keys=True))
