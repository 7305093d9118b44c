"""A folder of images (jpg/png/bmp/webp, searched recursively) as samples, decoded with Pillow.

Files are sorted by path, so sample ``i`` is the same file on every run.  Labels: when every image
sits in a subfolder of the root, the first subfolder is its class, and classes are numbered in
sorted name order (``class_names[label]``), as in ImageNet-style folders.  A file Pillow cannot
decode is skipped with a warning and counted in ``stats.skipped``; a folder where nothing decodes
is a DataError.  Decoding runs in a prefetch thread (see ``prefetch``), and the files of one
chunk are decoded by a small thread pool (min(4, CPUs) threads; Pillow releases the GIL while it
decodes and resizes); results keep the file order, so the output does not depend on the pool.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgequant.data.base import InputSpec
from edgequant.data.preprocess import ImagePlan, describe, plan_image, to_sample
from edgequant.data.source import Chunk, Reader
from edgequant.errors import DependencyError, first_line
from edgequant.recipe.schema import Preprocess

log = logging.getLogger(__name__)


def require_pillow() -> None:
    try:
        import PIL  # noqa: F401
    except ImportError as exc:
        raise DependencyError.missing("pillow", "data", "reading images") from exc


def folder_labels(files: list[Path], root: Path) -> tuple[np.ndarray | None, list[str]]:
    """Class index per file from its first subfolder under ``root``; None unless every file has one."""
    classes = []
    for f in files:
        parts = f.relative_to(root).parts
        if len(parts) < 2:
            return None, []
        classes.append(parts[0])
    names = sorted(set(classes))
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[c] for c in classes], np.int64), names


class ImageReader(Reader):
    may_skip = True
    background = True

    def __init__(
        self, files: list[Path], root: Path, spec: InputSpec, preprocess: Preprocess | None, where: str
    ) -> None:
        require_pillow()
        self.files = files
        self.notes: list[str] = []
        self.plan: ImagePlan = plan_image(preprocess, spec, self.notes)
        self.labels, self.class_names = folder_labels(files, root)
        self.fields = ("image",)
        self.workers = min(4, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None
        n_cls = f", {len(self.class_names)} classes" if self.class_names else ""
        self.description = f"{where} ({len(files)} files{n_cls}; {describe(self.plan)})"

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, path: Path) -> np.ndarray | str:
        """One sample, or the reason the file was skipped."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                img.load()
                return to_sample(img, self.plan)
        except (
            OSError,
            UnidentifiedImageError,
            ValueError,
            SyntaxError,
            Image.DecompressionBombError,
        ) as exc:
            return f"'{path}': {first_line(exc, 120)}"

    def read(self, indices: np.ndarray) -> Chunk:
        paths = [self.files[int(i)] for i in indices]
        if self.workers > 1 and len(paths) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="edgequant-decode")
            results = list(self._pool.map(self._decode, paths))  # map keeps the order
        else:
            results = [self._decode(p) for p in paths]
        kept = [int(i) for i, r in zip(indices, results, strict=True) if not isinstance(r, str)]
        samples = [r for r in results if not isinstance(r, str)]
        skipped = [r for r in results if isinstance(r, str)]
        if not samples:
            empty = np.zeros((0, *self.plan.sample_shape), self.plan.dtype)
            return Chunk({"image": empty}, None if self.labels is None else self.labels[:0], skipped)
        labels = None if self.labels is None else self.labels[np.asarray(kept, np.int64)]
        return Chunk({"image": np.stack(samples)}, labels, skipped)
