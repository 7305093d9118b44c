"""Child process of ``edgequant.runtime.isolated``: load one model in ONNX Runtime and run batches.

Run as a script (``python _child.py SPEC.json``), so it imports only onnxruntime and numpy.  The spec
names the model file, the session settings, the npz of input batches and the npz to write the
outputs to, and optionally where to write the graph ONNX Runtime optimises the model into (graph
optimisation level 2, "extended": the QDQ fusions into integer kernels, no hardware-specific layout).
It prints ``loaded`` to stdout once the session exists, so the parent can tell a
crash while loading from a crash while running.  A Python-level error is printed on stderr (last
line) with exit code 1; a native crash (segfault, abort) ends the process by a signal.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort


def main(spec_path: str) -> None:
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if spec["intra_op_threads"]:
        opts.intra_op_num_threads = spec["intra_op_threads"]
    if not spec["allow_spinning"]:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not spec["optimize"]:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(spec["model"], opts, providers=spec["providers"])
    except Exception as exc:
        print(f"load: {(str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]}", file=sys.stderr)
        sys.exit(1)
    print("loaded", flush=True)
    names = [o.name for o in sess.get_outputs()]
    feeds = np.load(spec["feeds"])
    outs: dict[str, np.ndarray] = {}
    for b in range(spec["batches"]):
        batch = {k.split("/", 1)[1]: feeds[k] for k in feeds.files if k.startswith(f"{b}/")}
        try:
            got = sess.run(names, batch)
        except Exception as exc:
            print(f"run: {(str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]}", file=sys.stderr)
            sys.exit(1)
        outs.update({f"{b}/{n}": np.asarray(v) for n, v in zip(names, got, strict=True)})
    np.savez(spec["outputs"], **outs)  # type: ignore[arg-type]
    if spec.get("optimized"):  # the graph ORT runs (level 2: QDQ fusion, no hardware layout), for the census
        del sess
        opt = ort.SessionOptions()
        opt.log_severity_level = 3
        opt.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opt.optimized_model_filepath = spec["optimized"]
        opt.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", "optimized.data"
        )
        opt.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
        ort.InferenceSession(spec["model"], opt, providers=spec["providers"])


if __name__ == "__main__":
    main(sys.argv[1])
