"""What EdgeQuant's driver scripts share: the request/result protocol and a timing loop.

Imported by the scripts beside it (``python <driver>.py request.json result.json`` puts this folder on
``sys.path``), in the toolchain's own interpreter: standard library only, never ``edgequant`` (whose
pins the toolchain's environment does not meet).  See ``edgequant/toolchains/runner.py`` for the
protocol: the result is ``{"driver_version", "ok": true, ...}`` or, on any exception, ``{"ok": false,
"stage", "error": "<its last line>", "error_type"}`` with the traceback on stderr for the log; the
script exits 0 either way.
"""

import json
import sys
import time
import traceback


class Run:
    """One driver run: the request, the result being filled, and the stage now running."""

    def __init__(self, request, version, stage):
        self.req = request
        self.result = {"driver_version": version, "ok": False}
        self.stage = stage


def serve(body, version, first_stage="import"):
    """Read ``sys.argv[1]`` (the request), run ``body(run)``, write ``sys.argv[2]`` (the result).

    ``body`` sets ``run.stage`` as it goes and adds its fields to ``run.result``; an exception it raises
    becomes the one-line error of the stage it was in.
    """
    with open(sys.argv[1]) as f:
        run = Run(json.load(f), version, first_stage)
    try:
        body(run)
        run.result["ok"] = True
    except Exception as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        run.result.update(
            stage=run.stage,
            error=(lines[-1] if lines else type(exc).__name__)[:500],
            error_type=type(exc).__name__,
        )
        sys.stderr.write(traceback.format_exc())
    with open(sys.argv[2], "w") as f:
        json.dump(run.result, f)


def latency(call, runs, warmup=3):
    """``{"median", "p90", "runs"}``: milliseconds of ``call()`` over ``runs`` runs after ``warmup``."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {
        "median": times[len(times) // 2],
        "p90": times[int(len(times) * 0.9)],
        "runs": runs,
    }


def predict_batches(model, inputs, outputs, dtype):
    """Run an Akida ``model`` on every ``<batch>/x`` array of the .npz ``inputs`` (cast to ``dtype``) and
    write ``<batch>/y`` (float32) to the .npz ``outputs``."""
    import numpy as np

    data = np.load(inputs)
    outs = {}
    for key in data.files:
        outs[key.split("/")[0] + "/y"] = model.predict(data[key].astype(dtype)).astype(np.float32)
    np.savez(outputs, **outs)
