"""EdgeQuant's TVM run driver, version 1: run with the tvm toolchain's own interpreter, never imported.

    python tvm_run.py request.json result.json

Request: ``library`` (a ``.tvm.so`` written by ``tvm_compile.py``), ``input_names`` (the model's
inputs, in order), ``inputs`` (.npz, keys ``<batch>/<input name>``), ``outputs`` (.npz to write, keys
``<batch>/<k>``, ``k`` the output's position), ``threads``, ``latency_runs`` and ``latency_batch``
(the key prefix of the batch to time).  The library is loaded in ``relax.VirtualMachine`` on the CPU.
"""

import json
import os
import sys
import time
import traceback

DRIVER_VERSION = 1


def main(req_path, res_path):
    req = json.load(open(req_path))
    os.environ["TVM_NUM_THREADS"] = str(int(req.get("threads") or 1))
    result = {"driver_version": DRIVER_VERSION, "ok": False}
    stage = "load"
    try:
        import numpy as np
        import tvm
        from tvm import relax

        result["tvm_version"] = tvm.__version__
        vm = relax.VirtualMachine(tvm.runtime.load_module(req["library"]), tvm.cpu())
        stage = "run"
        data = np.load(req["inputs"])
        batches = sorted({k.split("/", 1)[0] for k in data.files})
        outs = {}
        for b in batches:
            got = vm["main"](*[tvm.runtime.tensor(data[f"{b}/{n}"]) for n in req["input_names"]])
            got = [got] if hasattr(got, "numpy") else list(got)
            for k, value in enumerate(got):
                outs[f"{b}/{k}"] = value.numpy()
        np.savez(req["outputs"], **outs)
        runs = int(req.get("latency_runs") or 0)
        if runs:
            stage = "latency"
            args = [tvm.runtime.tensor(data[f"{req['latency_batch']}/{n}"]) for n in req["input_names"]]
            for _ in range(3):
                vm["main"](*args)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                vm["main"](*args)
                times.append((time.perf_counter() - t0) * 1e3)
            times.sort()
            result["latency_ms"] = {
                "median": times[len(times) // 2],
                "p90": times[int(len(times) * 0.9)],
                "runs": runs,
                "threads": int(os.environ["TVM_NUM_THREADS"]),
            }
        result["ok"] = True
    except Exception as exc:  # one line for EdgeQuant; the traceback for the log
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
