"""A quantize request that the recipe alone dooms is a 422 at submission with the job's own one-line
reason, not a 202 whose job fails later (fresh-user review, session 9, defect 8: binary weights on
ti-npu; adaround without a dataset), and REST errors name the request's JSON fields, not CLI flags (a
submission refusal and a job's failure reason alike)."""

from __future__ import annotations

import re

from service_helpers import Server, tiny_model, tiny_npz, upload, wait_job

FLAG = re.compile(r"--[a-z]")


def _setup(c: object, name: str) -> str:
    blob = tiny_model().SerializeToString()
    assert upload(c, "models", name, blob, "k.onnx", overwrite="true").status_code == 201  # type: ignore[arg-type]
    assert upload(c, "datasets", f"{name}-data", tiny_npz(), "d.npz", overwrite="true").status_code == 201  # type: ignore[arg-type]
    return f"/api/v1/model/{name}/quantize"


def test_recipe_errors_are_a_422_at_submission(server: Server) -> None:
    with server.client() as c:
        url = _setup(c, "pre")
        jobs_before = len(c.get("/api/v1/jobs").json()["jobs"])
        r = c.post(url, params={"dataset": "pre-data", "target": "ti-npu"}, json={"weight_bits": 1})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["detail"].startswith("weight_bits 1 conflicts with target 'ti-npu'"), body
        assert body["hint"].startswith("drop weight_bits or choose another target"), body
        ada = {"algorithms": ["adaround"], "weight_bits": 4, "allow_synthetic": True}
        r = c.post(url, json=ada)
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["detail"].startswith("algorithm adaround learns each weight's rounding from real"), body
        assert body["hint"] == "give ?dataset=NAME, or drop algorithms adaround.", body
        r = c.post(url, params={"method": "accurate"}, json={"weight_bits": 4, "allow_synthetic": True})
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("the accurate preset runs adaround at 4 bits and below"), r.text
        assert (
            r.json()["hint"] == "give ?dataset=NAME, or use a preset without adaround (e.g. method=w4a8)."
        ), r.text
        r = c.post(url, params={"dataset": "pre-data", "method": "w4a8"}, json={"keep_worse_passes": True})
        assert r.status_code == 422 and "keep_worse_passes is set but" in r.json()["detail"], r.text
        assert len(c.get("/api/v1/jobs").json()["jobs"]) == jobs_before  # nothing queued
        # with the dataset, the same adaround request is accepted
        r = c.post(url, params={"dataset": "pre-data"}, json={**ada, "calib_samples": 8})
        assert r.status_code == 202, r.text


def test_rest_errors_name_json_fields_not_flags(server: Server) -> None:
    with server.client() as c:
        url = _setup(c, "words")
        r = c.post(url, params={"method": "fp16"}, json={"per_channel": False})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["detail"].startswith("per_channel: false is given but method 'fp16' does not read it"), (
            body
        )
        assert body["hint"] == "drop per_channel, or use method static.", body
        assert not FLAG.search(body["detail"] + body["hint"]), body
        # a job's failure reason too: hoist_gru on a model without a GRU fails in the worker
        r = c.post(url, params={"dataset": "words-data"}, json={"hoist_gru": True})
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["job_id"])
        assert job["status"] == "failed" and job["error"]["hint"] == "drop hoist_gru.", job
