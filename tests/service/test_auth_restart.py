"""API key, and persistence across a server crash + restart (own servers, own stores)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from service_helpers import Server, tiny_model, tiny_npz, upload, wait_job

from edgequant.service import ServiceConfig

TINY = tiny_model().SerializeToString()


def test_api_key_required_except_health(tmp_path: Path) -> None:
    srv = Server(tmp_path / "store", "--workers", "1", "--api-key", "s3cret").start()
    try:
        with srv.client() as c:
            assert c.get("/health").status_code == 200
            r = c.get("/api/v1/models")
            assert r.status_code == 401 and r.json()["detail"] == "the X-API-Key header is missing."
            r = c.get("/api/v1/models", headers={"X-API-Key": "wrong"})
            assert r.status_code == 401 and r.json()["detail"] == "the X-API-Key header is wrong."
            assert upload(c, "models", "tiny", TINY, "t.onnx").status_code == 401
            assert c.get("/api/v1/models/..%2Fx").status_code == 401  # auth is checked first
        with srv.client(**{"X-API-Key": "s3cret"}) as c:
            assert c.get("/api/v1/models").json() == {"models": []}
            assert upload(c, "models", "tiny", TINY, "t.onnx").status_code == 201
    finally:
        srv.stop()


def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEQUANT_API_KEY", "from-env")
    assert ServiceConfig.create(tmp_path).api_key == "from-env"
    assert ServiceConfig.create(tmp_path, api_key="flag").api_key == "flag"
    monkeypatch.delenv("EDGEQUANT_API_KEY")
    assert ServiceConfig.create(tmp_path).api_key is None


def _group_alive(pgid: int) -> list[int]:
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                zombie = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # exited, unreaped
                if os.getpgid(int(entry.name)) == pgid and not zombie:
                    alive.append(int(entry.name))
            except (ProcessLookupError, PermissionError, FileNotFoundError, IndexError):
                continue
    return alive


def test_restart_keeps_finished_and_queued_jobs_and_marks_running_ones_interrupted(tmp_path: Path) -> None:
    store = tmp_path / "store"
    srv = Server(store, "--workers", "1").start()
    try:
        with srv.client() as c:
            assert upload(c, "models", "tiny", TINY, "t.onnx").status_code == 201
            assert upload(c, "datasets", "calib", tiny_npz(), "c.npz").status_code == 201
            done = c.post("/api/v1/model/tiny/quantize", params={"dataset": "calib"}).json()["job_id"]
            assert wait_job(c, done)["status"] == "succeeded"
            running = c.post("/api/v1/model/tiny/compare", params={"dataset": "calib"}).json()["job_id"]
            queued = c.post("/api/v1/model/tiny/quantize", params={"dataset": "calib"}).json()["job_id"]
            deadline = time.monotonic() + 20
            while c.get(f"/api/v1/jobs/{running}").json()["progress"]["stage"] in ("queued", "starting"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        # crash: kill only the server process; its orphaned worker must exit by itself
        assert srv.proc is not None
        pgid = srv.proc.pid
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(timeout=10)
        deadline = time.monotonic() + 30  # the orphan polls its parent; generous under load
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _group_alive(pgid) == []
    finally:
        srv.stop()

    srv2 = Server(store, "--workers", "1").start()
    try:
        with srv2.client() as c:
            old = c.get(f"/api/v1/jobs/{done}").json()
            assert old["status"] == "succeeded"
            assert c.get(f"/api/v1/jobs/{done}/artifacts/tiny_int8.onnx").status_code == 200
            job = c.get(f"/api/v1/jobs/{running}").json()
            assert job["status"] == "interrupted"
            assert job["error"]["detail"] == "interrupted by a server stop or restart while it ran; resubmit"
            # a queued job had not started: it survives the restart and runs
            assert wait_job(c, queued)["status"] == "succeeded"
            assert not list((store / "jobs").glob("*.partial"))
            assert [m["name"] for m in c.get("/api/v1/models").json()["models"]] == ["tiny"]
            again = c.post("/api/v1/model/tiny/quantize", params={"dataset": "calib"}).json()["job_id"]
            assert wait_job(c, again)["status"] == "succeeded"
    finally:
        srv2.stop()
