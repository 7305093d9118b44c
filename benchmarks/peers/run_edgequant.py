"""EdgeQuant on an ONNX model (the project's own venv): ``edgequant.quantize(model, data, preset)``.

settings: ``preset`` (None = the default recipe, or ``accurate``) and any recipe overrides.  Batched
models get the calibration arrays as one dict (samples first, EdgeQuant holds back its check samples
from them as it does for any user's data); unbatched ones (fixed-shape feeds: Silero VAD) get the list
of feeds.  ``calib_samples`` is the sample count, so EdgeQuant reads the same samples as the peers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_io


def main() -> None:
    spec = peer_io.read_spec()
    folder = Path(spec["calib"])
    meta = json.loads((folder / "names.json").read_text())
    arrays = {name: np.load(folder / f"{i}.npy") for i, name in enumerate(meta["names"])}
    n = len(next(iter(arrays.values())))
    data = peer_io.samples(spec) if meta["unbatched"] else arrays
    settings = dict(spec["settings"])
    preset = settings.pop("preset", None)
    t0 = time.perf_counter()
    import onnx

    import edgequant

    res = edgequant.quantize(spec["model"], data, preset, calib_samples=n, **settings)
    onnx.save(res.model, spec["out"])
    seconds = time.perf_counter() - t0
    rep = res.report
    peer_io.finish({
        "seconds": round(seconds, 2), "tool": "edgequant",
        "stages_s": {k: round(v, 2) for k, v in rep.get("seconds", {}).items()},
        "passes": [{k: p.get(k) for k in ("pass", "seconds", "sqnr_before_db", "sqnr_after_db", "reverted")}
                   for p in rep.get("algorithms", [])],
        "check_sqnr_db": (rep.get("check") or {}).get("output_sqnr_db"),
    })  # fmt: skip


if __name__ == "__main__":
    main()
