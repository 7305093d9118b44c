"""NNCF (OpenVINO's quantizer) on an ONNX model, run inside the NNCF venv (see setup.py).

The call is NNCF's documented post-training flow for ONNX: ``nncf.quantize(onnx.ModelProto,
nncf.Dataset(feeds), subset_size=N, ...)`` with the default preset (mixed for transformers, performance
otherwise) and ``fast_bias_correction`` (its default); ``settings.model_type == "transformer"`` passes
``nncf.ModelType.TRANSFORMER``.  Every calibration sample is one dataset item and ``subset_size`` is
their count, so NNCF reads exactly the samples the other tools read.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_io


def main() -> None:
    spec = peer_io.read_spec()
    feeds = peer_io.samples(spec)
    t0 = time.perf_counter()
    import nncf
    import onnx

    model = onnx.load(spec["model"])
    kw = {}
    if spec["settings"].get("model_type") == "transformer":
        kw["model_type"] = nncf.ModelType.TRANSFORMER
    q = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds), **kw)
    onnx.save(q, spec["out"])
    peer_io.finish({"seconds": round(time.perf_counter() - t0, 2), "tool": f"nncf {nncf.__version__}",
                "calib_items": len(feeds)})  # fmt: skip


if __name__ == "__main__":
    main()
