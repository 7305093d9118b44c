"""EdgeQuant's Akida run driver, version 1: run with the akida toolchain's own interpreter, never imported.

    python akida_run.py request.json result.json

Request: ``program`` (an ``.fbz`` written by ``akida_convert.py``), ``input_dtype`` (uint8 or int8),
``inputs`` (.npz, keys ``<batch>/x``, laid out as for ``akida_convert.py``), ``outputs`` (.npz to write, keys
``<batch>/y``).  The program is loaded with ``akida.Model`` and run on Akida's software backend
(``predict``); no hardware is needed.  No timing: the software backend's time is not the device's.
"""

import json
import sys
import traceback

DRIVER_VERSION = 1


def main(req_path, res_path):
    req = json.load(open(req_path))
    result = {"driver_version": DRIVER_VERSION, "ok": False}
    stage = "load"
    try:
        import akida
        import numpy as np

        result["versions"] = {"akida": akida.__version__}
        model = akida.Model(req["program"])
        stage = "run"
        dtype = np.uint8 if req.get("input_dtype", "uint8") == "uint8" else np.int8
        data = np.load(req["inputs"])
        outs = {}
        for key in data.files:
            outs[key.split("/")[0] + "/y"] = model.predict(data[key].astype(dtype)).astype(np.float32)
        np.savez(req["outputs"], **outs)
        result["ok"] = True
    except Exception as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        result.update(
            stage=stage,
            error=(lines[-1] if lines else type(exc).__name__)[:500],
            error_type=type(exc).__name__,
        )
        sys.stderr.write(traceback.format_exc())
    json.dump(result, open(res_path, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
