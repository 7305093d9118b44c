"""Measuring machinery: one quantization per subprocess (time + peak RSS), latency, optimized-graph census.

Peak memory: the parent starts ``bench_quantize.py --worker SPEC``; the child reports its own peak
resident set, ``VmHWM`` of ``/proc/self/status``, when it is done.  (Not ``ru_maxrss``: Linux carries
the pre-exec high-water mark across fork+exec, so a child's ``ru_maxrss`` -- also via ``wait4`` or
``RUSAGE_CHILDREN`` -- includes the parent's resident set at fork time.)  While it runs, the parent
polls ``/proc/<pid>/status`` and kills it past ``max_rss_mib`` ("OOM") or ``timeout`` seconds
("timeout"); for killed or failed runs the peak shown is the last polled ``VmHWM``.
Wall time is measured inside the child around the one quantization call (model load, calibration,
writing the QDQ model; EdgeQuant's call also includes its own ORT load-and-compare check).
Latency: sessions of all variants are created first, then timed in interleaved rounds (each round
times every variant a few runs), after warm-up; the median of all timed runs is reported.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from models.common import DataFiles, Feeds

SCRIPT = Path(__file__).resolve().parents[1] / "bench_quantize.py"


def run_worker(spec: dict[str, Any], timeout: float, max_rss_mib: float) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter; returns its JSON result or a status."""
    errfile = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty child cannot block
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--worker", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=errfile,
        text=True,
    )
    start, status, peak_seen = time.monotonic(), "ok", 0.0
    while True:
        pid, wstatus, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        rss = _rss_mib(proc.pid, "VmRSS:")
        peak_seen = max(peak_seen, rss, _rss_mib(proc.pid, "VmHWM:"))
        if rss > max_rss_mib:
            status = "OOM"
        elif time.monotonic() - start > timeout:
            status = "timeout"
        if status != "ok":
            os.kill(proc.pid, signal.SIGKILL)
            pid, wstatus, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(wstatus)
    out, _ = proc.communicate()
    errfile.seek(0)
    err = errfile.read()
    errfile.close()
    del usage  # its ru_maxrss includes the parent's pre-exec resident set: see the module docstring
    peak = peak_seen
    if status != "ok":
        return {"status": status, "peak_mib": peak, "seconds": time.monotonic() - start}
    if proc.returncode != 0:
        last = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["no stderr"]
        return {"status": "error", "error": last[0][:300], "peak_mib": peak}
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result.update(status="ok")
    return result


def _rss_mib(pid: int | str, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The child side: one quantization as ``spec`` says, plus this process's peak RSS (MiB)."""
    result = _quantize(spec)
    result["peak_mib"] = _rss_mib("self", "VmHWM:")
    return result


def _quantize(spec: dict[str, Any]) -> dict[str, Any]:
    """One quantization as ``spec`` says; the model is written to spec['out']."""
    import edgequant  # imported here, as in a fresh process using the library

    data = DataFiles(Path(spec["data"])) if spec.get("data") else None
    batch, tool, out = int(spec["batch"]), spec["tool"], spec["out"]
    if tool == "baseline":  # imports + the model + one batch: the floor under every other number
        from onnxruntime.quantization import quantize_static

        onnx.load(spec["model"])
        if data is not None:
            next(data.batches(batch))
        return {"seconds": 0.0}
    t0 = time.perf_counter()
    if tool == "edgequant":
        kw: dict[str, Any] = {"method": spec["mode"], "per_channel": spec["per_channel"]}
        if spec["mode"] == "static":
            assert data is not None
            kw.update(
                calib_method=spec["calib"],
                calib_samples=int(spec["samples"]),
                batch_size=batch,
            )
            if spec["calib"] == "percentile":  # an option the method does not read is refused (50fa0f0)
                kw["percentile"] = spec["percentile"]
        res = edgequant.quantize(spec["model"], (lambda: data.batches(batch)) if data else None, **kw)
        seconds = time.perf_counter() - t0
        onnx.save(res.model, out)
        return {
            "seconds": seconds,
            "sizes": res.report["sizes"],
            "eq_seconds": res.report["seconds"],
            "check": res.report.get("check"),
            "skipped": len(res.report["nodes"]["skipped"]),
        }
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    model = spec["model"]
    if tool == "ort+pre":  # ORT's documented pre-processing (shape inference + graph optimization)
        model = out + ".pre.onnx"
        try:
            quant_pre_process(spec["model"], model)
        except Exception:
            quant_pre_process(spec["model"], model, skip_symbolic_shape=True)  # ORT's documented fallback
    if spec["mode"] == "dynamic":
        quantize_dynamic(model, out, per_channel=spec["per_channel"], weight_type=QuantType.QInt8)
        return {"seconds": time.perf_counter() - t0}
    assert data is not None

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = data.batches(batch)

        def get_next(self) -> Feeds | None:
            return next(self.it, None)

        def rewind(self) -> None:
            self.it = data.batches(batch)

    calib = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[spec["calib"]]
    quantize_static(
        model,
        out,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=spec["per_channel"],
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=calib,
        extra_options={"CalibPercentile": spec["percentile"]},
    )
    return {"seconds": time.perf_counter() - t0}


def session(
    model: str | Path, threads: int, optimized_to: Path | None = None, spinning: bool = True
) -> ort.InferenceSession:
    """A CPU session; ``spinning=False`` turns ORT's intra/inter-op thread spinning off (idle sessions that
    spin steal cores from the one being timed on a 2-core machine)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if optimized_to is not None:
        so.optimized_model_filepath = str(optimized_to)
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


def runner(model: str | Path, threads: int = 2, spinning: bool = True) -> Any:
    sess = session(model, threads, spinning=spinning)
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(None, feeds), strict=True))


def latency_ms(
    models: dict[str, Path],
    feeds: Feeds,
    threads: int,
    runs: int = 30,
    rounds: int = 5,
    warmup: int = 10,
    spinning: bool = True,
) -> dict[str, float]:
    """Median ms per run of each model, timed in interleaved rounds (runs split over ``rounds``): every
    session is created and warmed up first, then each round times its share of runs of each in turn."""
    sessions = {k: session(p, threads, spinning=spinning) for k, p in models.items()}
    for s in sessions.values():
        for _ in range(warmup):
            s.run(None, feeds)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    per = max(1, runs // rounds)
    for _ in range(rounds):
        for k, s in sessions.items():
            for _ in range(per):
                t = time.perf_counter()
                s.run(None, feeds)
                times[k].append((time.perf_counter() - t) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def optimized_census(model: Path, tmp: Path) -> dict[str, int]:
    """Op counts of the graph ORT actually runs (ORT_ENABLE_ALL, written via optimized_model_filepath)."""
    out = tmp / (model.stem + ".ortopt.onnx")
    session(model, 1, optimized_to=out)
    ops = Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    qlinear = sum(v for k, v in ops.items() if k.startswith("QLinear") or k.endswith("Integer"))
    return {
        "QuantizeLinear": ops.get("QuantizeLinear", 0) + ops.get("DynamicQuantizeLinear", 0),
        "DequantizeLinear": ops.get("DequantizeLinear", 0),
        "QLinearConv": ops.get("QLinearConv", 0),
        "int8 ops (QLinear*/ *Integer/ DynamicQuantize*)": qlinear
        - ops.get("QLinearConv", 0)
        + sum(v for k, v in ops.items() if k.startswith("DynamicQuantize") and k != "DynamicQuantizeLinear"),
        "float Conv (incl. FusedConv)": ops.get("Conv", 0) + ops.get("FusedConv", 0),
        "nodes": sum(ops.values()),
        "_ops": dict(ops),  # type: ignore[dict-item]
    }


def write_calib(model_data: dict[str, np.ndarray], folder: Path, unbatched: bool) -> DataFiles:
    return DataFiles.write(folder, model_data, unbatched)


def file_kib(path: Path) -> float:
    return os.path.getsize(path) / 1024.0
