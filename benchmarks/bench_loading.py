"""Loading throughput of image and video sources, and the share of calibration time spent loading.

Builds its data in a temporary directory (JPEG images and an mpeg4 video, seeded), and a small conv
net (Conv 3->16 s2, Relu, Conv 16->32 s2, Relu, GlobalAveragePool, Flatten, Gemm -> 10) on
1x3x224x224 inputs.  For each source it times:

* load only: iterate the source, no model (samples/s);
* a calibration-like loop: for each batch, run the model in ONNX Runtime (OrtRuntime); "waiting"
  is the time the loop spends in ``next(source)``, so ``wait share = waiting / loop time`` is the
  part of calibration that loading costs.  Measured with and without the prefetch thread.

Run: ``PYTHONPATH=src python benchmarks/bench_loading.py [--images 192] [--frames 192]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from edgequant.data import input_specs, open_source
from edgequant.runtime import OrtRuntime


def make_model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return nh.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c2"], ["r2"]),
        h.make_node("GlobalAveragePool", ["r2"], ["g"]),
        h.make_node("Flatten", ["g"], ["f"]),
        h.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    inits = [
        w("w1", 16, 3, 3, 3),
        w("b1", 16),
        w("w2", 32, 16, 3, 3),
        w("b2", 32),
        w("wf", 10, 32),
        w("bf", 10),
    ]
    graph = h.make_graph(
        nodes,
        "bench",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def make_images(root: Path, n: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:375, 0:500]
    for i in range(n):
        base = (np.sin(xx / (20 + i % 7)) + np.cos(yy / (15 + i % 5))) * 60 + 128
        img = np.clip(base[..., None] + rng.normal(0, 12, (375, 500, 3)), 0, 255).astype(np.uint8)
        (root / f"c{i % 4}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / f"c{i % 4}" / f"{i:04d}.jpg", quality=90)


def make_video(path: Path, frames: int, seed: int = 0) -> None:
    import av

    rng = np.random.default_rng(seed)
    _, xx = np.mgrid[0:360, 0:480]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 480, 360, "yuv420p"
        for i in range(frames):
            base = np.sin((xx + 4 * i) / 25.0) * 80 + 128
            img = np.clip(base[..., None] + rng.normal(0, 8, (360, 480, 3)), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def timed_loop(source: Any, session: Any | None) -> tuple[int, float, float]:
    """(samples, total seconds, seconds waiting for data)."""
    samples, waiting = 0, 0.0
    start = time.perf_counter()
    it = iter(source)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        waiting += time.perf_counter() - t0
        samples += batch["x"].shape[0]
        if session is not None:
            session.run(batch)
    return samples, time.perf_counter() - start, waiting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--frames", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ort-threads", type=int, default=0, help="ORT intra-op threads (0 = ORT default)")
    args = parser.parse_args()

    model = make_model()
    inputs = input_specs(model)
    runtime = OrtRuntime(intra_op_threads=args.ort_threads)
    session = runtime.session(model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgequant-bench-") as tmp:
        tmpdir = Path(tmp)
        make_images(tmpdir / "images", args.images)
        make_video(tmpdir / "clip.mp4", args.frames)
        cases = [
            (f"images: {args.images} JPEG 500x375 -> 224", tmpdir / "images"),
            (f"video: {args.frames} mpeg4 frames 480x360 -> 224", tmpdir / "clip.mp4"),
        ]
        from edgequant.recipe import Preprocess

        pre = Preprocess(preset="imagenet")
        for label, path in cases:
            result: dict[str, float] = {}
            for prefetch in (False, True):
                src = open_source(
                    path, inputs, batch_size=args.batch_size, preprocess=pre, options={"prefetch": prefetch}
                )
                timed_loop(src, None)  # warm the file cache
                loads = [timed_loop(src, None) for _ in range(args.repeats)]
                n, total, _ = min(loads, key=lambda r: r[1])  # best of N: the machine may be shared
                result[f"load_{prefetch}"] = n / total
                loops = [timed_loop(src, session) for _ in range(args.repeats)]
                n, total, waiting = min(loops, key=lambda r: r[1])
                result[f"loop_{prefetch}"] = n / total
                result[f"share_{prefetch}"] = waiting / total
            x = np.zeros((args.batch_size, 3, 224, 224), np.float32)
            runs = max(1, n // args.batch_size)
            t0 = time.perf_counter()
            for _ in range(runs):
                session.run({"x": x})
            result["model"] = runs * args.batch_size / (time.perf_counter() - t0)
            rows.append((label, n, result))
    session.close()

    print(
        "| source | samples | model only (samples/s) | load only (samples/s) | calibration loop (samples/s) "
        "| loading share of the loop | loop with prefetch (samples/s) | loading share with prefetch |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, n, r in rows:
        print(
            f"| {label} | {n} | {r['model']:.0f} | {r['load_False']:.0f} | {r['loop_False']:.0f} "
            f"| {r['share_False']:.0%} | {r['loop_True']:.0f} | {r['share_True']:.0%} |"
        )


if __name__ == "__main__":
    main()
