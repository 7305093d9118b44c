"""EfficientNet-Lite0 with a wider calibration pool: the 11 photos of ``effnet_lite0`` plus 31 more.

Same ONNX model, same preprocessing, same evaluation set (416 crops of the 13 ``EVAL_PHOTOS`` of
benchmarks/models/effnet.py, unchanged, so the metrics are comparable with the ``effnet_lite0`` rows);
only ``make_calib(n, seed)`` differs: it cycles through ``CALIB_PHOTOS + WIDE_PHOTOS`` (42 photos;
sample i is a seeded random crop of photo ``i % 42``, as effnet.py's crops).  ``effnet_lite0`` keeps
its 11 photos, so its rows stay reproducible.  The question it answers (issue 17 §3): does W4A8 +
AdaRound fit the calibration photos (the pass judge scores on crops of them) rather than photos in
general?  The paper (Nagel et al. 2020) calibrates on 1,024 distinct ImageNet images.

New photos (real photographs of scenes and objects, chosen by looking at each; none is a crop or a
near-copy of an evaluation photo; licences from each package's ``/usr/share/doc/<pkg>/copyright``):
    Debian 12 ``plasma-workspace-wallpapers`` 4:5.27.5-2, ``/usr/share/wallpapers/<name>/contents/
    images/2560x1600.jpg`` (GPL-2+, KDE Visual Design Group): BytheWater, ColdRipple, ColorfulCups,
    DarkestHour, EveningGlow, FallenLeaf, Grey, Kite, OneStandsOut, Path, summer_1am (11).
    Debian 12 ``lomiri-wallpapers-16.04`` 20.04.0-2, ``/usr/share/backgrounds``: Bridge (Sander
    Klootwijk), Dragonfly (Bolly), free and greentock (Peter Nerlich), all CC-BY-SA-4.0; Picture_0B
    and Picture_1A (Trevor "Freespace"), Wine (Jakub Mede), aitzgorri, friends, life, picosdeeuropa
    and sunset (Aitzol Berasategi), all CC-BY-4.0; seeding (Clemens Engelhardt, CC0-1.0) (13).
    Debian 12 ``lomiri-wallpapers-20.04`` 20.04.0-2: Kleiber (Lukas Baubkus, CC-BY-SA-3.0) (1).
    Debian 12 ``python-matplotlib-data`` 3.6.3-1, ``mpl-data/sample_data/grace_hopper.jpg``
    (matplotlib's licence, PSF-based, BSD-compatible) (1).
    Debian 12 ``python3-scipy`` 1.10.1-2, ``scipy/misc``: face.dat (a raccoon, 1024x768 RGB, bz2 of raw
    uint8; BSD-3-clause, the package's ``Files: *``), ascent.dat (a staircase, 512x512 grey, a pickled
    list; public domain) (2).  Read as files; scipy is not imported.
    scikit-image 0.26.0 wheel, ``skimage/data``: brick, grass, gravel (grey texture photos from
    CC0Textures, CC0) (3).
Left out after looking: the abstract or rendered images of those packages (plasma's Altai, Autumn (a
painting), Cascade ..., lomiri's umang, analogpattern, Infinite-Sea, Fossa, Painting-Colors) and of
``ukui-wallpapers`` and ``gnome-backgrounds`` (no photographs); scikit-image's moon, cell, color,
clock_motion; motorcycle_right (the stereo twin of the evaluation photo motorcycle_left).

    apt-get install -y --no-install-recommends plasma-workspace-wallpapers lomiri-wallpapers-16.04 \
        lomiri-wallpapers-20.04 python-matplotlib-data python3-scipy
"""

from __future__ import annotations

import bz2
import dataclasses
import pickle
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from models import effnet
from models.common import BenchModel

APT = (
    "apt-get install -y --no-install-recommends plasma-workspace-wallpapers lomiri-wallpapers-16.04 "
    "lomiri-wallpapers-20.04 python-matplotlib-data python3-scipy"
)
PLASMA = Path("/usr/share/wallpapers")
LOMIRI = Path("/usr/share/backgrounds")
MPL = Path("/usr/share/matplotlib/mpl-data/sample_data")
SCIPY = Path("/usr/lib/python3/dist-packages/scipy/misc")
WIDE_PHOTOS = (
    "plasma:BytheWater", "plasma:ColdRipple", "plasma:ColorfulCups", "plasma:DarkestHour", "plasma:EveningGlow",
    "plasma:FallenLeaf", "plasma:Grey", "plasma:Kite", "plasma:OneStandsOut", "plasma:Path", "plasma:summer_1am",
    "lomiri:Bridge_by_Sander_Klootwijk.jpg", "lomiri:Dragonfly_by_Bolly.jpg", "lomiri:Picture_0B_by_freespace.jpg",
    "lomiri:Picture_1A_by_freespace.jpg", "lomiri:Wine_by_Jakkub_Mede.jpg", "lomiri:aitzgorri_by_Aitzol_Berasategi.jpg",
    "lomiri:free_by_Peter_Nerlich.jpg", "lomiri:friends_by_Aitzol_Berasategi.jpg",
    "lomiri:greentock_by_Peter_Nerlich.jpg", "lomiri:life_by_Aitzol_Berasategi.jpg",
    "lomiri:picosdeeuropa_by_Aitzol_Berasategi.jpg", "lomiri:seeding_by_Clements_Engelhardt.jpg",
    "lomiri:sunset_by_Aitzol_Berasategi.jpg", "lomiri:Kleiber_by_Lukas_Baubkus.jpg",
    "mpl:grace_hopper.jpg", "scipy:face.dat", "scipy:ascent.dat",
    "skimage:brick.png", "skimage:grass.png", "skimage:gravel.png",
)  # fmt: skip
POOL = effnet.CALIB_PHOTOS + WIDE_PHOTOS
SOURCES = (
    "Debian plasma-workspace-wallpapers, lomiri-wallpapers-16.04/20.04, python-matplotlib-data, python3-scipy, "
    "scikit-image textures"
)


def _file(path: Path) -> Path:
    if not path.exists():
        raise SystemExit(f"{path} is missing: {APT}")
    return path


def _scipy_image(name: str) -> Image.Image:
    raw = _file(SCIPY / name).read_bytes()
    if name == "face.dat":  # scipy 1.10's misc.face(): bz2 of [768, 1024, 3] uint8
        return Image.fromarray(np.frombuffer(bz2.decompress(raw), np.uint8).reshape(768, 1024, 3))
    return Image.fromarray(np.asarray(pickle.loads(raw), np.uint8))  # misc.ascent(): [512, 512] grey


@cache
def photo(ref: str) -> Image.Image:
    """``ref`` as RGB, short side at most 640 px (effnet.photo for the 11 old photos and scikit-image's)."""
    where, name = ref.split(":")
    if where in ("skimage", "sklearn", "mate"):
        return effnet.photo(ref)
    if where == "scipy":
        im = _scipy_image(name)
    else:
        path = {"plasma": PLASMA / name / "contents/images/2560x1600.jpg", "lomiri": LOMIRI / name}.get(where)
        im = Image.open(_file(path if path is not None else MPL / name))
        im.draft("RGB", (640, 640))
    im = im.convert("RGB")
    scale = 640 / min(im.size)
    if scale < 1:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BILINEAR)
    return im


def crops(n: int, seed: int) -> np.ndarray:
    """n crops [n, 3, 224, 224] float32, photo ``i % 42`` of ``POOL`` for sample i (seeded)."""
    if set(POOL) & set(effnet.EVAL_PHOTOS):
        raise SystemExit("the wide calibration pool overlaps the evaluation photos")
    rng = np.random.default_rng(seed)
    return np.stack([effnet.crop(photo(POOL[i % len(POOL)]), rng) for i in range(n)]).astype(np.float32)


def make(name: str = "effnet_lite0_wide") -> BenchModel:
    """effnet.make's model and evaluation set, calibrating on the 42-photo pool."""
    bm = effnet.make(name)
    return dataclasses.replace(
        bm,
        title=bm.title + "; calibration crops of 42 photos (effnet_wide.py)",
        source=f"{bm.source}; wide calibration pool: {SOURCES}",
        make_calib=lambda n, seed: {"image": crops(n, seed)},
    )


def sheet(out: str = "/tmp/effnet_wide_pool.png") -> None:
    """Write a contact sheet of the 42 calibration photos (to look at them)."""
    thumbs = [photo(r).copy() for r in POOL]
    for t in thumbs:
        t.thumbnail((160, 120))
    grid = Image.new("RGB", (7 * 160, 6 * 120), "white")
    for i, t in enumerate(thumbs):
        grid.paste(t, ((i % 7) * 160, (i // 7) * 120))
    grid.save(out)
    print(out)


if __name__ == "__main__":
    sheet()
