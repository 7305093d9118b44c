"""The range search scores its candidates against the user's float model, not the model a rounding
pass already changed (issue #17 §7: ``accurate`` at 4 bits runs AdaRound before calibration).

Before, the search's reference was AdaRound's output (its weights the rounded ones), so its scores
left the weights' error out (on the example at 4 bits: 29-31 dB, where the file scores 19-20 dB) and
it chose ranges for the wrong model.  Expected values: our own ORT sessions, the float model and the
written QDQ model on the search's 32 held-out samples, and numpy.
"""

from __future__ import annotations

import numpy as np

import edgequant
from edgequant.runtime import OrtRuntime
from tests.algorithms.passnets import conv3, images

RT = OrtRuntime(allow_spinning=False)
N, CALIB = 256, 64


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    return float(10 * np.log10((ref64**2).sum() / ((ref64 - got64) ** 2).sum()))


def test_the_search_scores_against_the_float_model_after_adaround() -> None:
    """Measured: the chosen candidate's score equals the written file's SQNR against float on the
    search's samples (before: the score was against AdaRound's model, several dB above)."""
    model, x = conv3(), images(N)
    res = edgequant.quantize(
        model,
        x,
        weight_bits=4,
        algorithms=["adaround"],
        calib_method="search",
        calib_samples=CALIB,
        runtime=RT,
    )
    search = res.report["calibration"]["search"]
    assert search["measured_on"] == "32 held-out samples"
    rest = np.setdiff1d(np.arange(N), np.arange(4, N, 8))  # the check holds back every 8th from the 4th
    held = x[rest[CALIB : CALIB + 32]]
    own = _sqnr(RT.run(model, {"x": held})["y"], RT.run(res.model, {"x": held})["y"])
    assert abs(search["output_sqnr_db"][search["chosen"]] - own) < 0.02, (search, own)


def test_the_search_says_when_it_had_no_held_out_samples() -> None:
    """When calibration reads every sample the check leaves, the search scores its candidates on the
    first calibration batches (in-sample): a plan note says so, with the count, and the report's
    ``measured_on`` gives the same count (the data has 64 samples; the check holds back 32 of them, evenly
    spread, and calibration reads the other 32 at batch 8: the search's 2 batches are 16 samples)."""
    x = images(64, seed=3)
    res = edgequant.quantize(conv3(), x, calib_method="search", calib_samples=64, runtime=RT)
    on = res.report["calibration"]["search"]["measured_on"]
    assert on.startswith("16 calibration samples") and "in-sample" in on, on
    notes = [n for n in res.plan.notes if n.startswith("the range search scored its candidates on 16")]
    assert len(notes) == 1 and "not on held-out samples" in notes[0], res.plan.notes
