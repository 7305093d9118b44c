"""EdgeQuant's TVM run driver, version 1: run with the tvm toolchain's own interpreter, never imported.

    python tvm_run.py request.json result.json

Request: ``library`` (a ``.tvm.so`` written by ``tvm_compile.py``), ``input_names`` (the model's
inputs, in order), ``inputs`` (.npz, keys ``<batch>/<input name>``), ``outputs`` (.npz to write, keys
``<batch>/<k>``, ``k`` the output's position), ``threads``, ``latency_runs`` and ``latency_batch``
(the key prefix of the batch to time).  The library is loaded in ``relax.VirtualMachine`` on the CPU.
"""

import os

from _driver import latency, serve

DRIVER_VERSION = 1


def body(run):
    req, result = run.req, run.result
    os.environ["TVM_NUM_THREADS"] = str(int(req.get("threads") or 1))
    import numpy as np
    import tvm
    from tvm import relax

    result["tvm_version"] = tvm.__version__
    vm = relax.VirtualMachine(tvm.runtime.load_module(req["library"]), tvm.cpu())
    run.stage = "run"
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
        run.stage = "latency"
        args = [tvm.runtime.tensor(data[f"{req['latency_batch']}/{n}"]) for n in req["input_names"]]
        result["latency_ms"] = {
            **latency(lambda: vm["main"](*args), runs),
            "threads": int(os.environ["TVM_NUM_THREADS"]),
        }


if __name__ == "__main__":
    serve(body, DRIVER_VERSION, first_stage="load")
