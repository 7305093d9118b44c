"""Video files (mp4/avi/mkv/mov/webm) as samples: each chosen frame is one image, decoded with PyAV.

Frames per video: all (default), every k-th (``video_every``: 0, k, 2k, ...), or N spread evenly
(``video_frames``: ``round(linspace(0, count - 1, N))``, duplicates removed).  ``count`` is the
container's frame count, or, when the container does not say, the number of video packets
(counted once, without decoding).  The sample index space is every chosen frame of every file,
in (file, frame) order; a pass decodes each file once, sequentially, and yields its chosen frames
in time order (seeking is inexact in many codecs, sequential decoding is not).  Frames become
model inputs through the same preprocessing as images (``preprocess``).  A file that cannot be
opened or decoded is a DataError naming it; labels come from class subfolders as for images.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.data.base import InputSpec
from edgequant.data.images import folder_labels
from edgequant.data.options import SourceOptions
from edgequant.data.preprocess import describe, plan_image, to_sample
from edgequant.data.source import Chunk, Reader
from edgequant.errors import DataError, DependencyError
from edgequant.recipe.schema import Preprocess


def _av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise DependencyError.missing("av", "data", "reading video") from exc
    return av


def frame_count(path: Path) -> int:
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"'{path}' has no video stream.", "give a file with a video track.")
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for p in container.demux(stream) if p.size)
    except av.FFmpegError as exc:
        raise DataError(
            f"video '{path}' cannot be opened: {exc}.", "check the file; re-encode it to mp4."
        ) from exc


def chosen_frames(count: int, opts: SourceOptions) -> np.ndarray:
    if count <= 0:
        return np.zeros(0, np.int64)
    if opts.video_frames is not None:
        return np.unique(np.round(np.linspace(0, count - 1, opts.video_frames)).astype(np.int64))
    return np.arange(0, count, opts.video_every or 1, dtype=np.int64)


class VideoReader(Reader):
    background = True

    def __init__(
        self,
        files: list[Path],
        root: Path,
        spec: InputSpec,
        preprocess: Preprocess | None,
        opts: SourceOptions,
        where: str,
    ) -> None:
        _av()
        self.files = files
        self.notes: list[str] = []
        self.plan = plan_image(preprocess, spec, self.notes)
        file_labels, self.class_names = folder_labels(files, root)
        per_file = [chosen_frames(frame_count(f), opts) for f in files]
        self.file_of = np.concatenate([np.full(len(fr), k, np.int64) for k, fr in enumerate(per_file)])
        self.frame_of = np.concatenate(per_file)
        self.labels = None if file_labels is None else file_labels[self.file_of]
        self.fields = ("image",)
        how = (
            f"{opts.video_frames} frames per video"
            if opts.video_frames
            else f"every {opts.video_every} frames"
            if opts.video_every
            else "all frames"
        )
        self.description = (
            f"{where} ({len(files)} file(s), {len(self.frame_of)} frames, {how}; {describe(self.plan)})"
        )

    def __len__(self) -> int:
        return len(self.frame_of)

    def read(self, indices: np.ndarray) -> Chunk:
        chunks = list(self.stream(indices, max(len(indices), 1)))
        if not chunks:
            return Chunk({"image": np.zeros((0, *self.plan.sample_shape), self.plan.dtype)})
        return chunks[0]

    def stream(self, indices: np.ndarray, chunk: int) -> Iterator[Chunk]:
        ordered = np.sort(indices)
        samples: list[np.ndarray] = []
        labels: list[int] = []
        skipped: list[str] = []
        for k in np.unique(self.file_of[ordered]):
            wanted = set(self.frame_of[ordered[self.file_of[ordered] == k]].tolist())
            label = None if self.labels is None else int(self.labels[self.file_of == k][0])
            found = set()
            for i, frame in self._frames(self.files[int(k)], max(wanted)):
                if i in wanted:
                    found.add(i)
                    samples.append(to_sample(frame.to_image(), self.plan))
                    labels.append(-1 if label is None else label)
                    if len(samples) == chunk:
                        yield self._chunk(samples, labels, skipped)
                        samples, labels, skipped = [], [], []
            skipped += [
                f"frame {i} of '{self.files[int(k)]}' was not decoded" for i in sorted(wanted - found)
            ]
        if samples or skipped:
            yield self._chunk(samples, labels, skipped)

    def _chunk(self, samples: list[np.ndarray], labels: list[int], skipped: list[str]) -> Chunk:
        data = np.stack(samples) if samples else np.zeros((0, *self.plan.sample_shape), self.plan.dtype)
        return Chunk({"image": data}, None if self.labels is None else np.asarray(labels, np.int64), skipped)

    def _frames(self, path: Path, last: int) -> Iterator[tuple[int, Any]]:
        av = _av()
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, frame in enumerate(container.decode(stream)):
                    yield i, frame
                    if i >= last:
                        return
        except av.FFmpegError as exc:
            raise DataError(
                f"video '{path}' cannot be decoded: {exc}.",
                "check the file; re-encode it (e.g. ffmpeg -i in out.mp4).",
            ) from exc
