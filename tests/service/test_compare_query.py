"""REST compare refusals name the query parameters, not the CLI's flags, and unknown query parameters
are refused, ``targets`` checked at submission like the CLI's ``--targets`` (fresh-user review, session
11: ``methods=bogus`` answered "pass --methods all ...", ``max_drop=-1`` "pass a non-negative
--max-drop."; ``eval_datset=`` and ``targets=bogus`` were queued and silently ignored)."""

from __future__ import annotations

import re

from service_helpers import Server, tiny_model, tiny_npz, upload, wait_job

FLAG = re.compile(r"--[a-z]")


def _setup(c: object, name: str) -> str:
    blob = tiny_model().SerializeToString()
    assert upload(c, "models", name, blob, "k.onnx", overwrite="true").status_code == 201  # type: ignore[arg-type]
    assert upload(c, "datasets", f"{name}-data", tiny_npz(), "d.npz", overwrite="true").status_code == 201  # type: ignore[arg-type]
    return f"/api/v1/model/{name}/compare"


def test_compare_refusals_name_query_parameters(server: Server) -> None:
    with server.client() as c:
        url = _setup(c, "cmpw")
        jobs_before = len(c.get("/api/v1/jobs").json()["jobs"])
        cases = {
            "methods": ("bogus", "pass methods=all or a comma-separated list"),
            "max_drop": ("-1", "pass a non-negative max_drop."),
            "prefer": ("speed", "pass prefer=latency, size, accuracy or energy."),
            "task": ("bogus", "pass task with one of them."),
            "max_drop_rel": ("2", "pass e.g. max_drop_rel=0.01, or max_drop in points."),
        }
        for key, (value, hint) in cases.items():
            r = c.post(url, params={"dataset": "cmpw-data", key: value})
            assert r.status_code == 422, r.text
            body = r.json()
            assert body["hint"].startswith(hint), (key, body)
            assert not FLAG.search(body["detail"] + body["hint"]), (key, body)
        assert len(c.get("/api/v1/jobs").json()["jobs"]) == jobs_before  # nothing queued


def test_compare_refuses_unknown_query_parameters_and_bad_targets(server: Server) -> None:
    with server.client() as c:
        url = _setup(c, "cmpq")
        jobs_before = len(c.get("/api/v1/jobs").json()["jobs"])
        r = c.post(url, params={"dataset": "cmpq-data", "eval_datset": "cmpq-data"})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["detail"].startswith("unknown query parameter 'eval_datset' for compare; known: dataset,")
        assert "targets" in body["detail"] and body["hint"] == "did you mean 'eval_dataset'?", body
        r = c.post(url, params={"dataset": "cmpq-data", "targets": "bogus"})
        assert r.status_code == 422, r.text
        assert "bogus" in r.json()["detail"] and "cmsis-nn" in r.json()["detail"], r.text
        assert not FLAG.search(r.json()["detail"] + r.json()["hint"]), r.text
        assert len(c.get("/api/v1/jobs").json()["jobs"]) == jobs_before  # nothing queued
        # a known target adds its row, as the CLI's --targets does
        params = {"dataset": "cmpq-data", "methods": "float,int8-static", "targets": "cmsis-nn"}
        r = c.post(url, params=params)
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["job_id"], timeout=120)
        assert job["status"] == "succeeded", job["error"]
        rows = [m["method"] for m in job["report"]["methods"]]
        assert rows == ["float", "int8-static", "int8-static@cmsis-nn"], rows
