"""The service handing its jobs to Ray (the session's local Ray instance): same job API, records, artifacts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from service_helpers import Server, tiny_model, tiny_npz, upload, wait_job

from edgequant.evaluate.metrics import sqnr_db
from edgequant.executors.ray import RayExecutor
from edgequant.runtime import OrtRuntime


@pytest.fixture()
def ray_server(tmp_path: Path, ray_executor: RayExecutor) -> Iterator[Server]:
    import ray

    address = ray.get_runtime_context().gcs_address
    server = Server(tmp_path / "store", "--workers", "1", "--executor", "ray", "--ray-address", address)
    server.start(timeout=90.0)
    try:
        yield server
    finally:
        server.stop()


def test_quantize_and_compare_jobs_run_on_ray(ray_server: Server) -> None:
    with ray_server.client() as c:
        assert upload(c, "models", "tiny", tiny_model().SerializeToString(), "tiny.onnx").status_code == 201
        assert upload(c, "datasets", "calib", tiny_npz(), "calib.npz").status_code == 201
        r = c.post("/api/v1/model/tiny/quantize", params={"dataset": "calib", "method": "int8-static"})
        assert r.status_code == 202
        job = wait_job(c, r.json()["job_id"], timeout=240.0)
        assert job["status"] == "succeeded", job["error"]
        rep = job["report"]
        assert rep["artifacts"] == ["tiny_int8.json", "tiny_int8.onnx", "tiny_int8.plan.json"]
        assert str(ray_server.store) not in json.dumps(job) and "edgequant-job-" not in json.dumps(job)
        blob = c.get(f"/api/v1/jobs/{job['job_id']}/artifacts/tiny_int8.onnx")
        assert blob.status_code == 200
    x = np.random.default_rng(7).normal(0, 1, (8, 3, 8, 8)).astype(np.float32)
    rt = OrtRuntime()
    ref = rt.run(tiny_model(), {"input": x})["logits"]
    got = rt.run(onnx.load_from_string(blob.content), {"input": x})["logits"]
    assert sqnr_db(ref, got) >= 25.0


def test_memory_limit_in_a_ray_task_counts_above_the_workers_own_mappings(tmp_path: Path) -> None:
    import subprocess

    code = (
        "import numpy as np, resource\n"
        "from edgequant.service.ray_jobs import _vm_size_bytes, limit_memory_above_current\n"
        "before = _vm_size_bytes()\n"
        "limit_memory_above_current(600)\n"
        "soft = resource.getrlimit(resource.RLIMIT_AS)[0]\n"
        "print((soft - before) / 2**20)\n"
        "small = np.ones(100 * 2**20, np.uint8)  # 100 MiB: inside the limit\n"
        "try:\n"
        "    np.ones(2**30, np.uint8)  # 1 GiB: past it\n"
        "    print('allocated')\n"
        "except MemoryError:\n"
        "    print('MemoryError')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = out.stdout.split()
    assert out.returncode == 0, out.stderr
    assert 599.0 <= float(lines[0]) <= 601.0  # the limit is 600 MiB above the address space at the call
    assert lines[1] == "MemoryError"
