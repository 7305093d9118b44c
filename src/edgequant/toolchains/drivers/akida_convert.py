"""EdgeQuant's Akida driver, version 1: run with the akida toolchain's own interpreter, never imported.

    python akida_convert.py request.json result.json

Request: ``model`` (float ONNX path, one input), ``calib`` (.npz, key ``x``: calibration samples),
``inputs`` (.npz, keys ``<batch>/x``), ``outputs`` (.npz to write, keys ``<batch>/y``), ``out`` (.fbz
path), ``input_dtype`` (uint8 or int8: Akida 2.0's input layer takes 8-bit integers), ``num_samples``.
BrainChip's QuantizeML quantizes the ONNX model for Akida 2.0 (8-bit, ``quantizeml.models.quantize``),
``cnn2snn.convert`` maps it to an Akida model, which is saved (.fbz) and run on Akida's software
backend (``akida.Model.predict``).  The result lists the Akida layers so that EdgeQuant can tell a
conversion that stopped early (QuantizeML stops at the first layer it cannot map) from a whole one.
"""

import time

from _driver import predict_batches, serve

DRIVER_VERSION = 1


def body(run):
    req = run.req
    import akida
    import cnn2snn
    import numpy as np
    import onnx
    import quantizeml
    from quantizeml.models import QuantizationParams, quantize

    run.result["versions"] = {
        "akida": akida.__version__,
        "cnn2snn": cnn2snn.__version__,
        "quantizeml": getattr(quantizeml, "__version__", "?"),
    }
    model = onnx.load(req["model"])
    calib = np.load(req["calib"])["x"].astype(np.float32)
    run.stage = "quantize"
    t0 = time.perf_counter()
    qparams = QuantizationParams(input_dtype=req.get("input_dtype", "uint8"))
    qmodel = quantize(
        model,
        qparams=qparams,
        samples=calib,
        num_samples=int(req.get("num_samples") or len(calib)),
        batch_size=min(16, len(calib)),
    )
    run.result["quantize_s"] = round(time.perf_counter() - t0, 3)
    run.stage = "convert"
    t0 = time.perf_counter()
    amodel = cnn2snn.convert(qmodel)
    run.result["convert_s"] = round(time.perf_counter() - t0, 3)
    run.result["layers"] = [
        [layer.name, str(layer.parameters.layer_type).split(".")[-1]] for layer in amodel.layers
    ]
    run.result["output_shape"] = [int(d) for d in amodel.output_shape]
    amodel.save(req["out"])
    run.stage = "run"
    dtype = np.uint8 if req.get("input_dtype", "uint8") == "uint8" else np.int8
    predict_batches(amodel, req["inputs"], req["outputs"], dtype)


if __name__ == "__main__":
    serve(body, DRIVER_VERSION)
