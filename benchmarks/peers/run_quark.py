"""AMD Quark for ONNX, run inside the Quark venv (see setup.py): Quark's own named default configs.

    settings.config "U8S8"  -> ``QConfig.get_default_config("U8S8_AAWS")``: uint8 asymmetric activations,
                               int8 symmetric weights, QDQ, Percentile ranges, per tensor, CLE on (Quark's
                               ``include_cle`` default), ORT graph optimization first
    settings.adaround {...} -> ``"U8S8_AAWS_ADAROUND"``: the same plus Quark's fast finetune (AdaRound,
                               torch on CPU), its ``FastFinetune`` parameters updated with the dict given
                               (e.g. fewer NumIterations to bound the time)
    settings.config "XINT8" -> ``"XINT8"`` / ``"XINT8_ADAROUND"``: power-of-two scales (DPU style)
The calibration reader subclasses onnxruntime's CalibrationDataReader over the same samples as the others.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_io


def main() -> None:
    spec = peer_io.read_spec()
    feeds = peer_io.samples(spec)
    st = spec["settings"]
    t0 = time.perf_counter()
    from onnxruntime.quantization import CalibrationDataReader
    from quark.onnx import ModelQuantizer
    from quark.onnx.quantization.config import QConfig

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.inner = peer_io.Reader(feeds)

        def get_next(self) -> Any:
            return self.inner.get_next()

        def rewind(self) -> None:
            self.inner.rewind()

    base = {"U8S8": "U8S8_AAWS", "XINT8": "XINT8"}[st.get("config", "U8S8")]
    name = base + ("_ADAROUND" if st.get("adaround") else "")
    config = QConfig.get_default_config(name)
    if st.get("adaround"):
        ft = dict(config.global_quant_config.extra_options["FastFinetune"])
        ft.update(st["adaround"])
        config.global_quant_config.extra_options["FastFinetune"] = ft
    ModelQuantizer(config).quantize_model(spec["model"], spec["out"], Reader())
    import quark

    peer_io.finish({"seconds": round(time.perf_counter() - t0, 2), "config": name,
                "tool": f"amd-quark {getattr(quark, '__version__', '?')}",
                "fast_finetune": config.global_quant_config.extra_options.get("FastFinetune")})  # fmt: skip


if __name__ == "__main__":
    main()
