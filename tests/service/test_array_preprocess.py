"""Issue 9 §3/§6 over REST: a preprocess preset is validated, and preprocessing is refused for an npz
dataset (arrays are fed as they are), before a job is queued."""

from __future__ import annotations

from service_helpers import Server, tiny_model, tiny_npz, upload


def test_preprocess_is_refused_for_npz_datasets_and_unknown_presets_everywhere(server: Server) -> None:
    with server.client() as c:
        assert (
            upload(
                c, "models", "pp", tiny_model().SerializeToString(), "pp.onnx", overwrite="true"
            ).status_code
            == 201
        )
        assert upload(c, "datasets", "pp-data", tiny_npz(), "d.npz", overwrite="true").status_code == 201
        url, data = "/api/v1/model/pp/quantize", {"dataset": "pp-data"}
        r = c.post(url, params=data, json={"preprocess": {"preset": "/etc/passwd"}})
        assert r.status_code == 422 and "unknown preprocess preset" in r.json()["detail"], r.text
        assert "known: imagenet" in r.json()["detail"]
        r = c.post(url, params=data, json={"preprocess": {"preset": "imagenet"}})
        assert (
            r.status_code == 422 and "is arrays, which are fed to the model as they are" in r.json()["detail"]
        )
        r = c.post(url, params=data, json={"preprocess": {"mean": [0.5]}})
        assert r.status_code == 422 and "preprocess.mean given" in r.json()["detail"], r.text
        r = c.post(url, params={**data, "method": "fp16"}, json={"per_channel": False})
        assert (
            r.status_code == 422 and "per_channel: false is given but method 'fp16'" in r.json()["detail"]
        ), r.text
        assert c.post(url, params=data, json={}).status_code == 202
