"""REST: static 4-bit activations that ONNX Runtime 1.32 cannot load on the cpu target are a 422 at
submission (nothing queued) with the planner's one-line reason in REST words (planning/ort_4bit.py);
4-bit weights with them are accepted and run."""

from __future__ import annotations

import re

from service_helpers import Server, tiny_model, tiny_npz, upload, wait_job


def test_4bit_activations_ort_cannot_load_are_a_422_at_submission(server: Server) -> None:
    with server.client() as c:
        blob = tiny_model().SerializeToString()
        assert upload(c, "models", "a4", blob, "k.onnx", overwrite="true").status_code == 201
        assert upload(c, "datasets", "a4-data", tiny_npz(), "d.npz", overwrite="true").status_code == 201
        url = "/api/v1/model/a4/quantize"
        jobs_before = len(c.get("/api/v1/jobs").json()["jobs"])
        r = c.post(url, params={"dataset": "a4-data"}, json={"act_bits": 4})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error"] == "UnsupportedError", body
        assert "QLinearConv, which has no 4-bit kernel): conv." in body["detail"], body
        assert body["hint"].startswith("use act_bits 8 (or 16), or weight_bits 4"), body
        assert not re.search(r"--[a-z]", body["detail"] + body["hint"]), body
        assert len(c.get("/api/v1/jobs").json()["jobs"]) == jobs_before  # nothing queued
        r = c.post(
            url, params={"dataset": "a4-data"}, json={"act_bits": 4, "weight_bits": 4, "calib_samples": 8}
        )
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["job_id"], timeout=120)
        assert job["status"] == "succeeded", job
