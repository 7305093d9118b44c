"""Helpers of the service tests: a real server on a loopback port (uvicorn in a subprocess), tiny data."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SRC = Path(__file__).resolve().parents[2] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m edgequant.service`` in its own process group; killed by the fixture finalizer."""

    def __init__(self, store: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.store, self.args, self.extra_env = store, args, env or {}
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = store.parent / f"{store.name}-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 40.0) -> Server:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(SRC), **self.extra_env}
        cmd = [sys.executable, "-m", "edgequant.service", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--store", str(self.store), "--log-level", "warning", *self.args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer /health in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the server and its workers (a crash, not a shutdown)."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        # workers are in the same process group; make sure none survives the test
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, headers=headers)


def tiny_model(channels: int = 4, size: int = 8, seed: int = 0) -> onnx.ModelProto:
    """Conv(3->channels, 3x3) + Relu + Flatten + Gemm(-> 10), seeded weights, dynamic batch."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.3, (channels, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, (channels,)).astype(np.float32)
    g = rng.normal(0, 0.1, (10, channels * size * size)).astype(np.float32)
    gb = rng.normal(0, 0.1, (10,)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "g", "gb"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (g, "g"), (gb, "gb"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tiny_npz(n: int = 16, size: int = 8, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(buf, input=rng.normal(0, 1, (n, 3, size, size)).astype(np.float32))
    return buf.getvalue()


def upload(
    client: httpx.Client, kind: str, name: str, data: bytes, filename: str = "x.bin", **params: str
) -> httpx.Response:
    return client.post(
        f"/api/v1/{kind}", files={"file": (filename, data)}, data={"name": name}, params=params
    )


def wait_job(client: httpx.Client, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")
