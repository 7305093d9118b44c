"""The service with an unreachable Ray cluster: it refuses to start (exit 2, one line naming the address,
Ray's reason and the fix), and a worker that loses Ray fails its jobs with Ray's reason, not as a dead
worker (review of issue 15).  Ray Client's connection timeouts are shortened through its own env vars."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from service_helpers import SRC, free_port

UNREACHABLE = "ray://127.0.0.1:1"


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.update(RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S="1", RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S="1")
    env.pop("RAY_AUTH_MODE", None)
    env.pop("RAY_ADDRESS", None)
    return env


def test_serve_refuses_to_start_when_the_ray_cluster_is_unreachable(tmp_path: Path) -> None:
    cli = Path(sys.executable).parent / "edgequant"
    cmd = [str(cli), "serve", "--store", str(tmp_path / "store"), "--port", str(free_port())]
    cmd += ["--executor", "ray", "--ray-address", UNREACHABLE]
    run = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert run.returncode == 2, (run.stdout, run.stderr)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert f"cannot connect to the Ray cluster at '{UNREACHABLE}'" in lines[0]
    assert "ConnectionError: ray client connection timeout" in lines[0]  # Ray's own reason
    assert "RAY_AUTH_MODE=token" in lines[0]
    assert "Uvicorn running" not in run.stdout + run.stderr


WORKER = """
import json, os, sys, threading, time
from multiprocessing import Pipe
from pathlib import Path
from edgequant.service.store import JobStore
from edgequant.service.worker import worker_main

root = Path(sys.argv[1])
store = JobStore(root)
job = store.create("quantize", "m", None, {})
assert store.transition(job, ("queued",), "running")
ours, theirs = Pipe()
t = threading.Thread(target=worker_main, args=(theirs, str(root), os.getppid(), 512, sys.argv[2]))
t.start()
ours.send(job)
assert ours.recv() == job
ours.send(None)
t.join(60)
print(json.dumps(store.get(job)))
"""


def test_a_worker_that_cannot_reach_ray_fails_its_job_with_rays_reason(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", WORKER, str(tmp_path / "store"), UNREACHABLE],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    row = json.loads(run.stdout.strip().splitlines()[-1])
    error = json.loads(row["error"]) if isinstance(row["error"], str) else row["error"]
    assert row["status"] == "failed"
    assert error["error"] == "ExecutorError", error
    assert UNREACHABLE in error["detail"] and "ray client connection timeout" in error["detail"]
    assert "RAY_AUTH_MODE=token" in error["hint"]


def test_a_connection_lost_during_a_job_fails_it_with_rays_reason(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A stand-in ``ray`` whose ``get`` raises the ConnectionError Ray Client raises when the cluster goes
    away mid-job: the job fails with ExecutorError naming the address and that reason (before: an
    'InternalError ... this is a bug' answer)."""
    import types

    import onnx
    from service_helpers import tiny_model

    from edgequant.service import ray_jobs
    from edgequant.service.store import JobStore
    from edgequant.service.worker import run_job

    class TaskError(Exception):
        pass

    def get(ref: object) -> object:
        raise ConnectionError("Failed to reconnect within the reconnection grace period (30s)")

    remote_fn = types.SimpleNamespace(remote=lambda *a: object())
    fake = types.SimpleNamespace(
        remote=lambda **kw: lambda fn: remote_fn,
        get=get,
        exceptions=types.SimpleNamespace(RayTaskError=TaskError),
    )
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(ray_jobs, "_address", "ray://head:10001", raising=False)
    store = JobStore(tmp_path / "store")
    (store.root / "models" / "m").mkdir(parents=True)
    onnx.save(tiny_model(), store.root / "models" / "m" / "m.onnx")
    job = store.create("quantize", "m", None, {"method": "dynamic"})
    assert store.transition(job, ("queued",), "running")
    run_job(store, job, ray_memory_mb=512)
    row = store.get(job)
    assert row is not None and row["status"] == "failed"
    error = json.loads(row["error"]) if isinstance(row["error"], str) else row["error"]
    assert error["error"] == "ExecutorError", error
    assert "'ray://head:10001'" in error["detail"] and "reconnection grace period" in error["detail"]


def test_sweep_with_an_unreachable_cluster_prints_one_line_not_rays_warning(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from tinymodels import conv_net, images

    model, data = tmp_path / "net.onnx", tmp_path / "d.npz"
    onnx.save_model(conv_net(), model)
    np.savez(data, x=images(8))
    cli = Path(sys.executable).parent / "edgequant"
    cmd = [str(cli), "sweep", str(model), "--calib-data", str(data), "--eval-data", str(data)]
    cmd += [
        "-o",
        str(tmp_path / "out"),
        "--methods",
        "int8-static",
        "--executor",
        "ray",
        "--ray-address",
        UNREACHABLE,
    ]
    run = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1, run.stderr  # Ray Client's UserWarning was 2 more lines
    assert lines[0].startswith(f"error: cannot connect to the Ray cluster at '{UNREACHABLE}'"), lines
    assert not (tmp_path / "out").exists()
