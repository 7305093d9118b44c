"""Image folders and video files: preprocessing numbers, labels, corrupt files, frame sampling, prefetch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from data_helpers import spec
from PIL import Image

from edgequant.data import load_labels, open_source
from edgequant.data.prefetch import prefetch
from edgequant.errors import DataError, RecipeError
from edgequant.recipe import Preprocess


def _image(path: Path, w: int, h: int, seed: int) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    for k, cls in enumerate(["dog", "cat"]):
        for i in range(3):
            _image(root / cls / f"{i}.png", 12, 10, seed=10 * k + i)
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return root


def test_folder_labels_preprocess_and_corrupt_file_skipped(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inputs = [spec("x", None, 3, 8, 8)]
    pre = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    with caplog.at_level(logging.WARNING):
        src = open_source(folder, inputs, batch_size=4, preprocess=pre)
        got = list(src.iter_labeled())
    assert [b["x"].shape for b, _ in got] == [
        (4, 3, 8, 8),
        (2, 3, 8, 8),
    ]  # 7 files, 1 corrupt: batches refilled
    labels = np.concatenate([lab for _, lab in got])  # type: ignore[misc]
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]  # cat=0, dog=1 (sorted); files sorted by path
    assert src.stats.skipped == 1 and "broken.jpg" in src.stats.skipped_examples[0]
    assert "broken.jpg" in caplog.text
    # first sample: cat/0.png (seed 10), 12x10 -> shorter side 10 resized to 8 (10x8), centre crop 8x8
    arr = np.random.default_rng(10).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(arr).resize((10, 8), Image.Resampling.BILINEAR))[:, 1:9]
    want = ((ref.astype(np.float32) / 255.0 - 0.5) / 0.25).transpose(2, 0, 1)
    np.testing.assert_allclose(got[0][0]["x"][0], want, atol=1e-5)
    lab = load_labels(folder, inputs, preprocess=pre)
    assert lab is not None and lab.tolist() == [0, 0, 0, 1, 1, 1]


def test_imagenet_preset_bgr_nhwc_and_uint8(tmp_path: Path) -> None:
    arr = _image(tmp_path / "a" / "x.png", 300, 260, seed=1)
    src = open_source(
        tmp_path / "a",
        [spec("x", None, 224, 224, 3)],
        preprocess=Preprocess(preset="imagenet", layout="nhwc", channel_order="bgr"),
    )
    x = next(iter(src))["x"]
    assert x.shape == (1, 224, 224, 3)
    img = Image.fromarray(arr).resize((295, 256), Image.Resampling.BILINEAR)
    ref = np.asarray(img)[16:240, 35:259][:, :, ::-1].astype(np.float32) / 255.0
    want = (ref - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    np.testing.assert_allclose(x[0], want, atol=1e-5)
    raw = next(
        iter(open_source(tmp_path / "a", [spec("x", None, 3, 32, 32, dtype=np.uint8)], preprocess=None))
    )
    ref8 = np.asarray(Image.fromarray(arr).resize((37, 32), Image.Resampling.BILINEAR))[:, 2:34]
    assert raw["x"].dtype == np.uint8  # raw pixels, not scaled by 1/255
    np.testing.assert_array_equal(raw["x"][0], ref8.transpose(2, 0, 1))
    with pytest.raises(RecipeError, match="unknown preprocess preset 'imagnet'"):
        open_source(tmp_path / "a", [spec("x", None, 3, 8, 8)], preprocess=Preprocess(preset="imagnet"))
    with pytest.raises(DataError, match=r"has 224 channels in layout nchw.*set preprocess\.layout to nhwc"):
        open_source(tmp_path / "a", [spec("x", None, 224, 224, 3)])


def test_empty_and_unusable_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        open_source(tmp_path / "empty", [spec("x", None, 3, 8, 8)])
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"has no image .* or video .* file; found \['.txt'\]"):
        open_source(tmp_path / "txt", [spec("x", None, 3, 8, 8)])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"gave no usable sample \(1 skipped"):
        open_source(tmp_path / "bad", [spec("x", None, 3, 8, 8)])


def _video(path: Path, frames: int = 20, size: int = 32) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.full((size, size, 3), i * 12, np.uint8)  # frame i has gray level 12*i
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _levels(src: object) -> list[int]:
    return [round(float(v) * 255 / 12) for b in src for v in b["x"].mean(axis=(1, 2, 3))]  # type: ignore[attr-defined]


def test_video_every_k_and_evenly(tmp_path: Path) -> None:
    _video(tmp_path / "clip.mp4")
    inputs = [spec("x", None, 3, 16, 16)]
    assert _levels(open_source(tmp_path / "clip.mp4", inputs, options={"video_every": 5})) == [0, 5, 10, 15]
    src = open_source(tmp_path / "clip.mp4", inputs, options={"video_frames": 4}, batch_size=3)
    assert _levels(src) == [0, 6, 13, 19]
    assert "4 frames per video" in src.stats.description
    all_frames = open_source(
        tmp_path / "clip.mp4", inputs, max_samples=7, batch_size=4, options={"prefetch": False}
    )
    assert _levels(all_frames) == list(range(7))
    rnd = _levels(open_source(tmp_path / "clip.mp4", inputs, sampling="random", seed=2, max_samples=5))
    assert len(set(rnd)) == 5 and rnd == sorted(rnd) and rnd != list(range(5))


def test_video_folder_labels(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / "v" / cls).mkdir(parents=True)
        _video(tmp_path / "v" / cls / "clip.mp4", frames=6, size=16)
    inputs = [spec("x", None, 3, 16, 16)]
    opts = {"video_every": 2}
    labels = load_labels(tmp_path / "v", inputs, options=opts, sampling="random", max_samples=4, seed=1)
    src = open_source(tmp_path / "v", inputs, options=opts, sampling="random", max_samples=4, seed=1)
    pairs = []
    for b, labs in src.iter_labeled():
        assert labs is not None
        pairs += [(lv, int(lab)) for lv, lab in zip(_levels([b]), labs, strict=True)]
    assert labels is not None and labels.tolist() == [lab for _, lab in pairs]
    assert {lab for _, lab in pairs} == {0, 1} and all(lv in (0, 2, 4) for lv, _ in pairs)


def test_undecodable_video_names_file(tmp_path: Path) -> None:
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match=r"video '.*bad.mp4' cannot be opened"):
        open_source(tmp_path / "bad.mp4", [spec("x", None, 3, 16, 16)])


def test_prefetch_propagates_errors_and_stops_early() -> None:
    produced: list[int] = []

    def gen():  # type: ignore[no-untyped-def]
        for i in range(100):
            produced.append(i)
            yield i

    it = prefetch(gen, depth=2)
    assert [next(it), next(it)] == [0, 1]
    it.close()  # type: ignore[attr-defined]
    assert len(produced) <= 5

    def bad():  # type: ignore[no-untyped-def]
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(prefetch(bad))
