"""``/model/X.onnx/...``: old clients add '.onnx' to a model's name; when both 'X' and 'X.onnx' are stored
the request is ambiguous and is refused with 409 naming both (review finding 19)."""

from __future__ import annotations

from service_helpers import Server, tiny_model, tiny_npz, upload


def test_a_name_that_means_two_stored_models_is_refused(server: Server) -> None:
    blob = tiny_model().SerializeToString()
    with server.client() as c:
        assert upload(c, "datasets", "amb-data", tiny_npz(), "d.npz", overwrite="true").status_code == 201
        assert upload(c, "models", "amb.onnx", blob, "a.onnx", overwrite="true").status_code == 201
        # only 'amb.onnx' stored: the name is itself
        r = c.post("/api/v1/model/amb.onnx/quantize", params={"dataset": "amb-data"})
        assert r.status_code == 202, r.text
        assert c.get(f"/api/v1/jobs/{r.json()['job_id']}").json()["model"] == "amb.onnx"
        assert upload(c, "models", "amb", blob, "a.onnx", overwrite="true").status_code == 201
        for route in ("quantize", "compare"):
            r = c.post(f"/api/v1/model/amb.onnx/{route}", params={"dataset": "amb-data"})
            assert r.status_code == 409, r.text
            assert r.json()["error"] == "Conflict"
            assert "'amb.onnx'" in r.json()["detail"] and "'amb'" in r.json()["detail"], r.text
        # the bare name is not ambiguous
        r = c.post("/api/v1/model/amb/quantize", params={"dataset": "amb-data"})
        assert r.status_code == 202 and c.get(f"/api/v1/jobs/{r.json()['job_id']}").json()["model"] == "amb"
