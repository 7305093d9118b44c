"""Peak memory and wall time of calibration: edgequant.observe.collect vs ONNX Runtime's quantize_static.

Each configuration runs in its own subprocess, which reports its own peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and wall time, so numbers do not leak between runs.
The parent kills a child that runs past ``--timeout`` seconds ("timeout") or whose resident memory
passes ``--max-rss-gib`` ("OOM").  Both tools see the same model and the same seeded data, made
batch by batch on the fly (the data itself is never held in memory).

ONNX Runtime's calibrators keep every intermediate output of every batch until the end, so their
memory grows with the number of samples; ours keeps one histogram per tensor.  The ORT column
times ``quantize_static`` as a whole (calibration plus the QDQ rewrite, which is small here); ours
times ``collect`` only, the calibration step.

    python benchmarks/bench_calibration_memory.py                 # small CNN built in the script
    python benchmarks/bench_calibration_memory.py --model m.onnx  # your model (float32 inputs)
    python benchmarks/bench_calibration_memory.py --tools edgequant --methods minmax mse entropy \
        --samples 100 1000 --write   # -> results/bench_calibration_memory.md (issue #17: flat 100 -> 1,000)

``mse`` is the histogram pass that ``--calib-method search`` reads all its candidates from.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_ROOT = Path(__file__).resolve().parents[1]


def build_cnn(path: Path, channels: int = 32, size: int = 64) -> None:
    """3 x (Conv 3x3, 32 channels -> Relu) on 3x64x64, then GlobalAveragePool -> Flatten -> Gemm(10)."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    prev, cin = "input", 3
    for i in range(3):
        w = (rng.normal(size=(channels, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(channels, np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"conv{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]),
        ]
        prev, cin = f"relu{i}", channels
    fc = (rng.normal(size=(10, channels)) / np.sqrt(channels)).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc_w"), numpy_helper.from_array(np.zeros(10, np.float32), "fc_b")]
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _input_shape(model: onnx.ModelProto) -> tuple[str, tuple[int, ...]]:
    inits = {i.name for i in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in inits)
    dims = [d.dim_value if d.dim_value > 0 else 1 for d in first.type.tensor_type.shape.dim]
    return first.name, tuple(dims[1:])


class SeededSource:
    """``samples`` float32 samples in batches of ``batch``; made on the fly, re-iterable."""

    def __init__(self, name: str, shape: tuple[int, ...], samples: int, batch: int) -> None:
        self.name, self.shape, self.samples, self.batch = name, shape, samples, batch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, self.samples, self.batch):
            n = min(self.batch, self.samples - start)
            rng = np.random.default_rng(start)
            yield {self.name: rng.normal(size=(n, *self.shape)).astype(np.float32)}


def child(tool: str, method: str, samples: int, batch: int, model_path: Path) -> None:
    model = onnx.load(model_path)
    name, shape = _input_shape(model)
    source = SeededSource(name, shape, samples, batch)
    t0 = time.perf_counter()
    if tool == "edgequant":
        sys.path.insert(0, str(_ROOT / "src"))
        from edgequant.observe import collect

        inits = {i.name for i in model.graph.initializer}
        tensors = [name] + [o for n in model.graph.node for o in n.output if o and o not in inits]
        res = collect(model, source, tensors, method=method)
        extra = {"tensors": len(res.ranges), "passes": res.passes}
    else:
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter(source)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.it, None)

        calib = {
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
            "minmax": CalibrationMethod.MinMax,
        }[method]
        with tempfile.TemporaryDirectory() as tmp:
            quantize_static(str(model_path), str(Path(tmp) / "q.onnx"), Reader(), calibrate_method=calib)
        extra = {}
    seconds = time.perf_counter() - t0
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_rss_mib": rss_kib / 1024.0, **extra}))


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def run_child(args: list[str], timeout: float, max_rss_mib: float) -> dict[str, object] | str:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    start = time.monotonic()
    while proc.poll() is None:
        if time.monotonic() - start > timeout:
            proc.kill()
            proc.wait()
            return "timeout"
        if _rss_mib(proc.pid) > max_rss_mib:
            proc.kill()
            proc.wait()
            return "OOM"
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        return (
            "OOM"
            if "MemoryError" in err or proc.returncode == -9
            else f"error: {err.strip().splitlines()[-1]}"
        )
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="ONNX model (default: a small CNN built here)")
    p.add_argument("--samples", type=int, nargs="+", default=[100, 1000])
    p.add_argument(
        "--methods",
        nargs="+",
        default=["entropy", "percentile"],
        choices=["entropy", "percentile", "minmax", "mse"],
    )
    p.add_argument("--tools", nargs="+", default=["edgequant", "ort"], choices=["edgequant", "ort"])
    p.add_argument("--write", action="store_true", help="also write results/bench_calibration_memory.md")
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    p.add_argument("--max-rss-gib", type=float, default=12.0, help="kill a child above this resident memory")
    p.add_argument(
        "--child", nargs=5, metavar=("TOOL", "METHOD", "SAMPLES", "BATCH", "MODEL"), help=argparse.SUPPRESS
    )
    a = p.parse_args()
    if a.child:
        tool, method, samples, batch, model = a.child
        child(tool, method, int(samples), int(batch), Path(model))
        return
    with tempfile.TemporaryDirectory(prefix="edgequant-bench-") as tmp:
        model_path = a.model or Path(tmp) / "small_cnn.onnx"
        if a.model is None:
            build_cnn(model_path)
        rows = []
        for method in a.methods:
            for n in a.samples:
                cells = []
                for tool in ("edgequant", "ort"):
                    if tool not in a.tools or (tool == "ort" and method == "mse"):
                        cells.append("not run")
                        continue
                    r = run_child(
                        [tool, method, str(n), str(a.batch), str(model_path)], a.timeout, a.max_rss_gib * 1024
                    )
                    cells.append(r)
                    print(f"# {tool} {method} {n}: {r}", file=sys.stderr, flush=True)
                rows.append((method, n, *cells))
    name = a.model.name if a.model else "small CNN (3 x conv3x3 32ch, 3x64x64)"
    lines = [
        f"Calibration on {name}, batch {a.batch}, CPU ({os.cpu_count()} cores, shared with other jobs: "
        "times are noisy); peak RSS of a fresh interpreter per row (imports included)",
        "",
        "| method | samples | edgequant peak RSS (MiB) | edgequant time (s) | ORT peak RSS (MiB) | ORT time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for method, n, ours, ort in rows:
        lines.append(
            f"| {method} | {n} | {_fmt(ours, 'peak_rss_mib')} | {_fmt(ours, 'seconds')} "
            f"| {_fmt(ort, 'peak_rss_mib')} | {_fmt(ort, 'seconds')} |"
        )
    print("\n" + "\n".join(lines))
    if a.write:
        out = _ROOT / "benchmarks" / "results" / "bench_calibration_memory.md"
        head = "# Calibration memory from 100 to 1,000 samples\n\nWritten by `benchmarks/bench_calibration_memory.py"
        out.write_text(head + " " + " ".join(sys.argv[1:]) + "`.\n\n" + "\n".join(lines) + "\n")


def _fmt(result: dict[str, object] | str, key: str) -> str:
    if isinstance(result, str):
        return result
    value = result[key]
    return f"{value:.0f}" if key == "peak_rss_mib" else f"{value:.1f}"  # type: ignore[str-format]


if __name__ == "__main__":
    main()
