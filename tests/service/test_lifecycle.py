"""Job lifecycle: list/filter/paginate, delete (disk reclaimed), retention, SIGTERM, SSE, old-service compatibility."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import onnx
from service_helpers import Server, tiny_model, tiny_npz, upload, wait_job

TINY = tiny_model().SerializeToString()


def _setup(c: object) -> None:
    assert upload(c, "models", "life", TINY, "life.onnx", overwrite="true").status_code == 201  # type: ignore[arg-type]
    assert upload(c, "datasets", "life-data", tiny_npz(), "d.npz", overwrite="true").status_code == 201  # type: ignore[arg-type]


def _submit(c: object, method: str = "int8-static") -> str:
    r = c.post("/api/v1/model/life/quantize", params={"dataset": "life-data", "method": method})  # type: ignore[attr-defined]
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def test_list_filter_paginate_and_delete(server: Server) -> None:
    with server.client() as c:
        _setup(c)
        ids = [_submit(c, m) for m in ("fp16", "dynamic-int8", "int8-static")]
        for job_id in ids:
            assert wait_job(c, job_id)["status"] == "succeeded"
        page = c.get("/api/v1/jobs", params={"model": "life", "limit": 2}).json()
        assert page["total"] >= 3 and page["limit"] == 2 and len(page["jobs"]) == 2
        assert [j["job_id"] for j in page["jobs"]] == ids[::-1][:2]  # newest first
        rest = c.get("/api/v1/jobs", params={"model": "life", "limit": 2, "offset": 2}).json()["jobs"]
        assert ids[0] in [j["job_id"] for j in rest]
        only = c.get(
            "/api/v1/jobs", params={"model": "life", "status": "succeeded", "kind": "quantize"}
        ).json()
        assert all(j["status"] == "succeeded" and j["kind"] == "quantize" for j in only["jobs"])
        assert c.get("/api/v1/jobs", params={"status": "bogus"}).status_code == 422
        assert c.get("/api/v1/jobs", params={"limit": 0}).status_code == 422
        summary = c.get(f"/api/v1/jobs/{ids[2]}").json()["summary"]
        assert summary["method"] == "static" and "life_int8.onnx" in summary["artifacts"]

        folder = server.store / "jobs" / ids[0]
        assert folder.is_dir()
        assert c.delete(f"/api/v1/jobs/{ids[0]}").json() == {"deleted": ids[0]}
        assert not folder.exists() and c.get(f"/api/v1/jobs/{ids[0]}").status_code == 404
        assert c.delete(f"/api/v1/jobs/{ids[0]}").status_code == 404

        assert upload(c, "datasets", "gone", tiny_npz(), "g.npz", overwrite="true").status_code == 201
        assert c.delete("/api/v1/datasets/gone").json() == {"deleted": "gone"}
        assert not (server.store / "datasets" / "gone").exists()
        assert c.get("/api/v1/datasets/gone").status_code == 404


def test_server_sent_events_report_stage_and_percent(server: Server) -> None:
    with server.client() as c:
        _setup(c)
        job_id = _submit(c)
        events: list[tuple[str, dict]] = []
        with c.stream("GET", f"/api/v1/jobs/{job_id}/events", timeout=120) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            name = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:])))
                    if name == "end":
                        break
    progress = [d for n, d in events if n == "progress"]
    assert progress and all(set(d) == {"status", "stage", "percent"} for d in progress)
    percents = [d["percent"] for d in progress]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert progress[-1] == {"status": "succeeded", "stage": "done", "percent": 100.0}
    assert events[-1][0] == "end" and events[-1][1]["status"] == "succeeded"
    with server.client() as c:
        assert c.get(f"/api/v1/jobs/{job_id}").json()["status"] == "succeeded"  # polling still works
        assert c.get(f"/api/v1/jobs/{'f' * 32}/events").status_code == 404


def test_old_service_compatible_quantize_with_wait(server: Server) -> None:
    with server.client() as c:
        _setup(c)
        r = c.post(
            "/api/v1/model/life.onnx/quantize",
            params={"target": "onnx", "dataset": "life-data", "wait": "true", "wait_timeout": 120},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "succeeded" and body["model_name"] == "life"
        url = body["quantized_model_path"]
        assert url.startswith(f"/api/v1/jobs/{body['job_id']}/artifacts/") and url.endswith(".onnx")
        blob = c.get(url).content
        onnx.load_from_string(blob)
        original = (server.store / "models" / "life" / "life.onnx").stat().st_size
        assert body["original_size_mb"] == round(original / 2**20, 4)
        assert body["quantized_size_mb"] == round(len(blob) / 2**20, 4)
        assert body["compression_ratio"] == round(original / len(blob), 3) and body["compression_ratio"] > 2
        r = c.post("/api/v1/model/life.onnx/quantize", params={"dataset": "life-data"})
        assert r.status_code == 202 and r.json()["status"] == "queued"
        assert c.post("/api/v1/model/nope.onnx/quantize", params={"dataset": "life-data"}).status_code == 404


def test_sigterm_marks_running_jobs_interrupted_and_retention_deletes_old_jobs(tmp_path: Path) -> None:
    store = tmp_path / "store"
    srv = Server(store, "--workers", "1").start()
    try:
        with srv.client() as c:
            _setup(c)
            running = c.post("/api/v1/model/life/compare", params={"dataset": "life-data"}).json()["job_id"]
            deadline = time.monotonic() + 60
            while c.get(f"/api/v1/jobs/{running}").json()["progress"]["stage"] in ("queued", "starting"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=30) is not None
    finally:
        srv.stop()
    # retention of about 2 s: the interrupted job (finished at SIGTERM) is deleted once it is that old
    srv = Server(store, "--workers", "1", "--retention-days", str(2 / 86400)).start()
    try:
        with srv.client() as c:
            job = c.get(f"/api/v1/jobs/{running}").json()
            if job.get("status") == "interrupted":  # the sweep may already have run
                assert job["error"]["error"] == "Interrupted"
            deadline = time.monotonic() + 30
            while c.get(f"/api/v1/jobs/{running}").status_code != 404:
                assert time.monotonic() < deadline, "retention never deleted the old job"
                time.sleep(0.2)
            assert not (store / "jobs" / running).exists()
    finally:
        srv.stop()


def test_sigterm_status_is_interrupted(tmp_path: Path) -> None:
    store = tmp_path / "store"
    srv = Server(store, "--workers", "1").start()
    try:
        with srv.client() as c:
            _setup(c)
            running = c.post("/api/v1/model/life/compare", params={"dataset": "life-data"}).json()["job_id"]
            queued = _submit(c)
            deadline = time.monotonic() + 60
            while c.get(f"/api/v1/jobs/{running}").json()["progress"]["stage"] in ("queued", "starting"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(timeout=30)
    finally:
        srv.stop()
    with sqlite3.connect(store / "jobs.sqlite") as db:  # marked by the SIGTERM shutdown, not the restart
        status = dict(db.execute("SELECT id, status FROM jobs").fetchall())
    assert status[running] == "interrupted" and status[queued] == "queued"
    srv = Server(store, "--workers", "1").start()
    try:
        with srv.client() as c:
            job = c.get(f"/api/v1/jobs/{running}").json()
            assert job["status"] == "interrupted" and job["error"]["error"] == "Interrupted"
            assert wait_job(c, queued, timeout=60)["status"] == "succeeded"  # queued jobs survive
    finally:
        srv.stop()
