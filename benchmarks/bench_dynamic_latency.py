"""Latency of dynamic INT8: float vs EdgeQuant's quantize_dynamic vs ONNX Runtime's quantize_dynamic.

Two models are built here: a small conv net (where dynamic quantization should change nothing, since
ORT's ConvInteger is slower than float Conv) and an MLP (where DynamicQuantizeMatMul should win).
Each model is timed as the median of 50 runs after 10 warm-up runs, with 1 and 2 intra-op threads,
and printed as a Markdown table.  Run:  PYTHONPATH=src python benchmarks/bench_dynamic_latency.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType
from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

from edgequant.export.dynamic import quantize_dynamic
from edgequant.runtime import OrtRuntime
from edgequant.schemes.qparams import sqnr_db


def _w(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)


def conv_net(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    chans = [3, 32, 64, 64]
    nodes, inits, x = [], [], "x"
    for i in range(3):
        inits += [_w(rng, f"k{i}", (chans[i + 1], chans[i], 3, 3)), _w(rng, f"b{i}", (chans[i + 1],))]
        nodes += [
            helper.make_node("Conv", [x, f"k{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        x = f"r{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["y"], name="gap"))
    g = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 1, 1])],
        inits,
    )
    feeds = {"x": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)}
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), feeds


def mlp(seed: int = 0, batch: int = 16) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    dims = [512, 1024, 1024, 10]
    nodes, inits, x = [], [], "x"
    for i in range(3):
        inits += [_w(rng, f"w{i}", (dims[i], dims[i + 1])), _w(rng, f"b{i}", (dims[i + 1],))]
        nodes += [
            helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"fc{i}"),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"fc{i}_bias"),
        ]
        x = f"a{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    nodes.append(helper.make_node("Identity", [x], ["y"], name="out"))
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, dims[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, dims[-1]])],
        inits,
    )
    feeds = {"x": rng.standard_normal((batch, dims[0])).astype(np.float32)}
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), feeds


def ort_dynamic(model: onnx.ModelProto, workdir: Path) -> onnx.ModelProto:
    src, dst = workdir / "float.onnx", workdir / "ort_dynamic.onnx"
    onnx.save_model(model, str(src))
    ort_quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    return onnx.load(str(dst))


def median_ms(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int, runs: int, warmup: int
) -> float:
    session = OrtRuntime(intra_op_threads=threads).session(model)
    try:
        for _ in range(warmup):
            session.run(feeds)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(feeds)
            times.append(time.perf_counter() - start)
    finally:
        session.close()
    return float(np.median(times)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    rows: list[tuple[str, str, float, float, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="edgequant-bench-") as tmp:
        for name, (model, feeds) in (("conv net", conv_net()), ("MLP", mlp())):
            ours, plan = quantize_dynamic(model)
            theirs = ort_dynamic(model, Path(tmp))
            ref = OrtRuntime().run(model, feeds)["y"]
            variants = {"float": model, "edgequant dynamic": ours, "ORT quantize_dynamic": theirs}
            for label, m in variants.items():
                sq = sqnr_db(ref, OrtRuntime().run(m, feeds)["y"])
                ms = [median_ms(m, feeds, t, args.runs, args.warmup) for t in (1, 2)]
                ops = sorted(
                    {n.op_type for n in m.graph.node} - {"Relu", "Add", "Identity", "GlobalAveragePool"}
                )
                rows.append((name, label, ms[0], ms[1], sq, ", ".join(ops)))
            print(
                f"<!-- {name}: edgequant quantized {len(plan.quantized_nodes)} of {len(plan.nodes)} nodes -->"
            )
    print("| model | variant | 1 thread (ms) | 2 threads (ms) | SQNR vs float (dB) | main ops |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for name, label, t1, t2, sq, main_ops in rows:
        sq_txt = "exact" if sq == float("inf") else f"{sq:.1f}"
        print(f"| {name} | {label} | {t1:.3f} | {t2:.3f} | {sq_txt} | {main_ops} |")


if __name__ == "__main__":
    main()
