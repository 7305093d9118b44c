"""Latency of GET /jobs/{id} and job throughput of the REST service, on loopback.

Starts ``python -m edgequant.service`` on a free loopback port with a temporary store, uploads a
tiny Conv+Relu+Gemm model (built here, seeded) and a 16-sample npz, then:

1. status latency, idle: a second process sends ``--requests`` GET /api/v1/jobs/{id} with
   ``--concurrency`` threads (one keep-alive connection each) and reports p50/p90/p99/max and
   requests per second;
2. job throughput: ``--jobs`` int8-static jobs are submitted at once; jobs/min = jobs / (time from
   the first submit to the last job finished) * 60;
3. status latency under load: the same GET storm while a second batch of ``--jobs`` jobs runs.

Bounded: fixed request and job counts, loopback only; the server (and its workers) is killed at the
end whatever happens.  Prints a markdown table.

    PYTHONPATH=src python benchmarks/bench_service.py [--requests 2000 --concurrency 4 --jobs 20 --workers 2]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SRC = Path(__file__).resolve().parents[1] / "src"


def tiny_model() -> bytes:
    rng = np.random.default_rng(0)
    inits = {
        "w": rng.normal(0, 0.3, (4, 3, 3, 3)),
        "b": rng.normal(0, 0.1, (4,)),
        "g": rng.normal(0, 0.1, (10, 256)),
        "gb": rng.normal(0, 0.1, (10,)),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "g", "gb"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tiny_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, input=np.random.default_rng(1).normal(0, 1, (16, 3, 8, 8)).astype(np.float32))
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def storm(url: str, path: str, requests: int, concurrency: int, out: Any) -> None:
    """Child process: ``requests`` GETs over ``concurrency`` threads; sends (latencies, wall, errors)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker(n: int) -> None:
        mine = []
        bad = 0
        with httpx.Client(base_url=url, timeout=10.0) as c:
            for _ in range(n):
                t = time.perf_counter()
                r = c.get(path)
                mine.append(time.perf_counter() - t)
                bad += r.status_code != 200
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    share = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in share]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.send((latencies, time.perf_counter() - t0, errors[0]))


def run_storm(url: str, path: str, requests: int, concurrency: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=storm, args=(url, path, requests, concurrency, child))
    proc.start()
    latencies, wall, errors = parent.recv()
    proc.join(timeout=30)
    ms = np.array(latencies) * 1000
    return {
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()),
        "rps": len(ms) / wall,
        "errors": errors,
    }


def submit(c: httpx.Client, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        r = c.post("/api/v1/model/tiny/quantize", params={"dataset": "calib", "method": "int8-static"})
        r.raise_for_status()
        ids.append(r.json()["job_id"])
    return ids


def wait_all(c: httpx.Client, ids: list[str], timeout: float = 300) -> list[str]:
    deadline = time.monotonic() + timeout
    pending, statuses = set(ids), {}
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            status = c.get(f"/api/v1/jobs/{job_id}").json()["status"]
            if status not in ("queued", "running"):
                statuses[job_id] = status
                pending.discard(job_id)
        time.sleep(0.05)
    return [statuses.get(i, "timeout") for i in ids]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    store = Path(tempfile.mkdtemp(prefix="eq-bench-")) / "store"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "edgequant.service", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--store", str(store), "--workers", str(args.workers), "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    server = subprocess.Popen(cmd, env=env, start_new_session=True)
    rows: list[tuple[str, str]] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("server did not start") from None
                time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=30) as c:
            c.post("/api/v1/models", files={"file": ("tiny.onnx", tiny_model())}).raise_for_status()
            c.post("/api/v1/datasets", files={"file": ("calib.npz", tiny_npz())}).raise_for_status()
            probe = submit(c, 1)[0]
            if wait_all(c, [probe]) != ["succeeded"]:
                raise SystemExit(f"the probe job failed: {c.get(f'/api/v1/jobs/{probe}').json()['error']}")
            path = f"/api/v1/jobs/{probe}"
            idle = run_storm(url, path, args.requests, args.concurrency)

            t0 = time.perf_counter()
            statuses = wait_all(c, submit(c, args.jobs))
            elapsed = time.perf_counter() - t0
            ok = statuses.count("succeeded")

            ids = submit(c, args.jobs)
            loaded = run_storm(url, path, args.requests, args.concurrency)
            statuses2 = wait_all(c, ids)
        for label, s in (("idle", idle), (f"while {args.jobs} jobs run", loaded)):
            rows.append(
                (
                    f"GET /jobs/{{id}} latency, {label} ({args.requests} req, {args.concurrency} concurrent)",
                    f"p50 {s['p50']:.2f} ms, p90 {s['p90']:.2f} ms, p99 {s['p99']:.2f} ms, max {s['max']:.1f} ms; "
                    f"{s['rps']:.0f} req/s; {s['errors']} non-200",
                )
            )
        rows.append(
            (
                f"job throughput ({args.jobs} tiny int8-static jobs, {args.workers} workers)",
                f"{ok / elapsed * 60:.0f} jobs/min ({ok}/{args.jobs} succeeded in {elapsed:.2f} s)",
            )
        )
        rows.append(
            ("second batch (under GET load)", f"{statuses2.count('succeeded')}/{args.jobs} succeeded")
        )
    finally:
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.wait(timeout=10)
    print(
        f"\nCPU cores: {os.cpu_count()}; loopback; server = 1 uvicorn process + {args.workers} job workers\n"
    )
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
