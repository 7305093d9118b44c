"""REST compare refusals name the query parameters, not the CLI's flags (fresh-user review, session 11:
``methods=bogus`` answered "pass --methods all ...", ``max_drop=-1`` "pass a non-negative --max-drop.")."""

from __future__ import annotations

import re

from service_helpers import Server, tiny_model, tiny_npz, upload

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
