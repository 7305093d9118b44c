"""EdgeQuant's Akida run driver, version 1: run with the akida toolchain's own interpreter, never imported.

    python akida_run.py request.json result.json

Request: ``program`` (an ``.fbz`` written by ``akida_convert.py``), ``input_dtype`` (uint8 or int8),
``inputs`` (.npz, keys ``<batch>/x``, laid out as for ``akida_convert.py``), ``outputs`` (.npz to write, keys
``<batch>/y``).  The program is loaded with ``akida.Model`` and run on Akida's software backend
(``predict``); no hardware is needed.  No timing: the software backend's time is not the device's.
"""

from _driver import predict_batches, serve

DRIVER_VERSION = 1


def body(run):
    req = run.req
    run.stage = "load"
    import akida
    import numpy as np

    run.result["versions"] = {"akida": akida.__version__}
    model = akida.Model(req["program"])
    run.stage = "run"
    dtype = np.uint8 if req.get("input_dtype", "uint8") == "uint8" else np.int8
    predict_batches(model, req["inputs"], req["outputs"], dtype)


if __name__ == "__main__":
    serve(body, DRIVER_VERSION, first_stage="load")
