"""onnxruntime.quantization.quantize_static (the project's own venv), QDQ, uint8 activations, int8
per-channel weights: ORT's documented static setting.  settings: ``calib`` (minmax | percentile |
entropy), ``pre`` (run ``quant_pre_process`` first, skip_symbolic_shape=True, as ORT documents for
transformers)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_io


def main() -> None:
    spec = peer_io.read_spec()
    reader = peer_io.Reader(peer_io.samples(spec))
    st = spec["settings"]
    t0 = time.perf_counter()
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = spec["model"]
    if st.get("pre"):
        model = spec["out"] + ".pre.onnx"
        quant_pre_process(spec["model"], model, skip_symbolic_shape=True)
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[st.get("calib", "minmax")]  # fmt: skip
    quantize_static(model, spec["out"], reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method)  # fmt: skip
    peer_io.finish(
        {"seconds": round(time.perf_counter() - t0, 2), "tool": f"onnxruntime {onnxruntime.__version__}"}
    )


if __name__ == "__main__":
    main()
