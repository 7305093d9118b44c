"""Issue #17's "the calibration search is never worse than minmax on the example", on pictures neither
the calibration nor the search has seen.

``test_passes`` checks the search on the 32 samples it scores.  Those cannot tell methods within 1 dB
apart, and neither can the shipped ``shapes_eval.npz``: on it min-max is 1.27 dB above the search's
entropy ranges, and 5 of its 512 samples hold 38 % of the error (``benchmarks/results/
bench_example_draws.md``: on 8 new sets of 512 pictures, entropy − min-max ranges from −0.23 to +0.99
dB).  So this test draws 2,048 new pictures from the example's own generator
(``examples/make_example.py``, seed sequence ``(SEED, 101..104)``, independent of its train, calibration
and evaluation streams) and compares the two models' logits with float in our own ORT sessions.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

import edgequant
from edgequant.runtime import OrtRuntime

ROOT = Path(__file__).resolve().parents[2] / "examples"
RT = OrtRuntime(allow_spinning=False)


def new_pictures(seeds: range, n: int) -> np.ndarray:
    """``n`` new normalised pictures per seed, [len(seeds) * n, 3, 32, 32] float32, as the example's
    data were made (mean from the model's ``normalization`` metadata: ``[127, 128, 128]``, scale 64)."""
    sys.path.insert(0, str(ROOT))
    try:
        import make_example
    finally:
        sys.path.remove(str(ROOT))
    meta = {p.key: p.value for p in onnx.load(ROOT / "shapes_cnn.onnx").metadata_props}
    assert meta["normalization"] == "x = (pixel_0_255 - [127, 128, 128]) / 64"
    parts = [make_example.make_split(np.random.SeedSequence((make_example.SEED, s)), n)[0] for s in seeds]
    return make_example.normalise(np.concatenate(parts), (127, 128, 128))


def test_calibration_search_is_never_worse_than_minmax_on_the_example() -> None:
    model, calib = ROOT / "shapes_cnn.onnx", ROOT / "shapes_calib.npz"
    x = new_pictures(range(101, 105), 512)
    shipped = np.load(calib)["image"]
    assert not {a.tobytes() for a in x} & {a.tobytes() for a in shipped}  # new pictures, none reused
    name = onnx.load(str(model)).graph.input[0].name
    ref = RT.run(onnx.load(str(model)), {name: x})["logits"].astype(np.float64)

    def sqnr(m: onnx.ModelProto) -> float:
        got = RT.run(m, {name: x})["logits"].astype(np.float64)
        return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))

    s_min = sqnr(edgequant.quantize(model, calib, calib_method="minmax").model)
    s_search = sqnr(edgequant.quantize(model, calib, calib_method="search").model)
    print(f"min-max {s_min:.2f} dB, search {s_search:.2f} dB on {len(x)} new pictures")
    assert s_min > 25.0  # both are real int8 models of this net (measured: min-max 28.7 dB)
    assert s_search >= s_min - 0.1  # measured: the search (entropy) 29.14 dB, 0.48 above
