"""The REST service on loopback: job throughput, poll latency, peak memory, upload refusal, fuzzing.

For ``--workers`` 2 and 4: starts ``python -m edgequant.service`` on a free loopback port with a
temporary store, uploads the example (examples/shapes_cnn.onnx, examples/shapes_calib.npz), then

1. jobs per minute: ``--jobs`` int8-static quantize jobs submitted at once; jobs/min = jobs / (first
   submit -> last job finished) * 60;
2. poll latency: while a second batch of ``--jobs`` runs, ``--pollers`` threads (one keep-alive
   connection each) poll GET /api/v1/jobs/{id} in a loop; p50/p99 of every request;
3. peak RSS (VmHWM) of the server process and the largest of its worker processes;
4. (2-worker run) time to refuse a 2 GiB upload: declared by Content-Length (refused before the
   body is read), and streamed without a length (refused when the server's 200 MB limit is crossed);
5. (2-worker run) a schemathesis run against the live /openapi.json (coverage + fuzzing phases,
   fixed seed, ``--fuzz-time`` s at most): requests sent and 5xx answers, read from its HAR record.

Bounded: fixed job counts, loopback only, every loop has a deadline; the server and its workers are
killed at the end whatever happens.  Writes benchmarks/results/bench_service.json and .md.

    .venv/bin/python benchmarks/bench_service.py [--jobs 12 --pollers 50 --fuzz-time 300]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
RESULTS = ROOT / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


class Service:
    def __init__(self, store: Path, workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "edgequant.service", "--store", str(store), "--port", str(self.port),
               "--workers", str(workers), "--log-level", "warning", "--max-queued", "1000"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def submit(c: httpx.Client, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        r = c.post("/api/v1/model/shapes_cnn/quantize", params={"dataset": "calib", "method": "int8-static"})
        r.raise_for_status()
        ids.append(r.json()["job_id"])
    return ids


def wait_all(c: httpx.Client, ids: list[str], timeout: float = 900) -> list[str]:
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        status = {i: c.get(f"/api/v1/jobs/{i}").json()["status"] for i in ids}
        if all(s not in ("queued", "running") for s in status.values()):
            return list(status.values())
        time.sleep(0.25)
    raise RuntimeError(f"jobs did not finish: {status}")


def poll_storm(url: str, ids: list[str], pollers: int, stop: threading.Event) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def poller(k: int) -> None:
        mine = []
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                t = time.perf_counter()
                r = c.get(f"/api/v1/jobs/{ids[k % len(ids)]}")
                mine.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    errors.append(str(r.status_code))
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=poller, args=(k,)) for k in range(pollers)]
    for t in threads:
        t.start()
    return_value = latencies
    stop.wait()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise RuntimeError(f"{len(errors)} poll errors: {errors[:5]}")
    return return_value


def reject_2gib(url: str) -> dict[str, float]:
    size = 2 * 1024**3
    boundary = b"B"
    head = b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.onnx"\r\n\r\n'
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=60) as s:
        s.sendall(b"POST /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                  b"boundary=" + boundary + f"\r\nContent-Length: {size}\r\n\r\n".encode() + head)  # fmt: skip
        declared_status = s.recv(4096).split(b"\r\n", 1)[0].decode()
    declared = time.perf_counter() - t

    def body() -> Any:
        yield head
        chunk = b"\0" * (1 << 20)
        for _ in range(2048):
            yield chunk

    t = time.perf_counter()
    try:
        r = httpx.post(f"{url}/api/v1/models", content=body(),
                       headers={"Content-Type": "multipart/form-data; boundary=B"}, timeout=600)  # fmt: skip
        streamed_status = str(r.status_code)
    except httpx.TransportError as exc:  # the server answered 413 and closed while we were still sending
        streamed_status = f"closed ({type(exc).__name__})"
    streamed = time.perf_counter() - t
    return {"declared_s": round(declared, 4), "declared_status": declared_status,
            "streamed_s": round(streamed, 3), "streamed_status": streamed_status}  # fmt: skip


def fuzz(url: str, out: Path, max_time: int, max_examples: int) -> dict[str, Any]:
    har = out / "fuzz.har"
    exe = Path(sys.executable).parent / "schemathesis"
    checks = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"
    cmd = [str(exe), "run", f"{url}/openapi.json", "--checks", checks, "--max-time", str(max_time),
           "--workers", "1", "--seed", "7", "--max-examples", str(max_examples), "--phases", "coverage,fuzzing",
           "--request-timeout", "30", "--report", "har", "--report-har-path", str(har), "--no-color",
           "--generation-database", "none"]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max_time + 600, cwd=out)
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses = [int(e["response"]["status"]) for e in entries]
    return {"requests": len(statuses), "5xx": sum(s >= 500 for s in statuses), "returncode": proc.returncode,
            "seconds": round(time.perf_counter() - t, 1), "max_examples": max_examples,
            "log_tail": proc.stdout[-2000:]}  # fmt: skip


def run(workers: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    svc = Service(tmp / f"store{workers}", workers)
    try:
        with httpx.Client(base_url=svc.url, timeout=60) as c:
            files = {"file": ("shapes_cnn.onnx", (EXAMPLES / "shapes_cnn.onnx").read_bytes())}
            c.post("/api/v1/models", files=files).raise_for_status()
            files = {"file": ("calib.npz", (EXAMPLES / "shapes_calib.npz").read_bytes())}
            c.post("/api/v1/datasets", files=files).raise_for_status()
            wait_all(c, submit(c, workers))  # warm-up: every worker has run a job
            t = time.perf_counter()
            statuses = wait_all(c, submit(c, args.jobs))
            elapsed = time.perf_counter() - t
            ids = submit(c, args.jobs)
            stop = threading.Event()
            box: dict[str, list[float]] = {}
            storm = threading.Thread(
                target=lambda: box.setdefault("lat", poll_storm(svc.url, ids, args.pollers, stop))
            )
            storm.start()
            wait_all(c, ids)
            stop.set()
            storm.join(timeout=120)
            lat = sorted(box["lat"])
            workers_hwm = [hwm_kib(p) for p in children(svc.proc.pid)]
            out: dict[str, Any] = {
                "workers": workers,
                "jobs": args.jobs,
                "succeeded": statuses.count("succeeded"),
                "jobs_per_min": round(args.jobs / elapsed * 60, 1),
                "pollers": args.pollers,
                "polls": len(lat),
                "poll_p50_ms": round(statistics.median(lat), 2),
                "poll_p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 2),
                "server_peak_rss_mb": round(hwm_kib(svc.proc.pid) / 1024, 1),
                "worker_peak_rss_mb": round(max(workers_hwm, default=0) / 1024, 1),
            }
        if workers == 2:
            out["reject_2gib"] = reject_2gib(svc.url)
            out["fuzz"] = fuzz(svc.url, tmp, args.fuzz_time, args.fuzz_examples)
        return out
    finally:
        svc.stop()


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| workers | jobs/min (example, int8-static) | poll p50 / p99 ms (50 pollers, during jobs) | "
        "server peak RSS MB | worker peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['jobs_per_min']} | {r['poll_p50_ms']} / {r['poll_p99_ms']} | "
                     f"{r['server_peak_rss_mb']} | {r['worker_peak_rss_mb']} |")  # fmt: skip
    two = next(r for r in rows if r["workers"] == 2)
    rej, fz = two["reject_2gib"], two["fuzz"]
    lines += [
        "",
        f"2 GiB upload: refused in {rej['declared_s'] * 1000:.1f} ms when declared ({rej['declared_status']}), "
        f"{rej['streamed_s']:.2f} s when streamed without a length ({rej['streamed_status']}).",
        f"Fuzzing (schemathesis, live OpenAPI, {fz['seconds']} s): {fz['requests']} requests, {fz['5xx']} x 5xx.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--fuzz-time", type=int, default=300)
    parser.add_argument("--fuzz-examples", type=int, default=20)
    parser.add_argument("--workers", default="2,4")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(int(w), args, Path(tmp)) for w in args.workers.split(",")]
    load = os.getloadavg()
    result = {"rows": rows, "load_average_at_end": [round(x, 2) for x in load], "cpus": os.cpu_count()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_service.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(rows)
    (RESULTS / "bench_service.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
