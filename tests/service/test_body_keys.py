"""Recipe keys in REST bodies: the CLI flags' spellings are accepted as in YAML recipes (issue 9), and
an unknown key is named with a did-you-mean (review finding 22)."""

from __future__ import annotations

from service_helpers import Server, tiny_model, tiny_npz, upload


def _setup(c: object, name: str) -> None:
    blob = tiny_model().SerializeToString()
    assert upload(c, "models", name, blob, "k.onnx", overwrite="true").status_code == 201  # type: ignore[arg-type]
    assert upload(c, "datasets", f"{name}-data", tiny_npz(), "d.npz", overwrite="true").status_code == 201  # type: ignore[arg-type]


def test_the_flag_spelling_data_option_works_and_is_checked_like_data_options(server: Server) -> None:
    with server.client() as c:
        _setup(c, "keys")
        url, params = "/api/v1/model/keys/quantize", {"dataset": "keys-data"}
        r = c.post(url, params=params, json={"data_option": {"prefetch": False}})
        assert r.status_code == 202, r.text
        job = c.get(f"/api/v1/jobs/{r.json()['job_id']}").json()
        assert job["recipe"]["data_options"] == {"prefetch": False}
        # the alias is no way around the path-option refusal
        r = c.post(url, params=params, json={"data_option": {"metadata_csv": "/etc/passwd"}})
        assert r.status_code == 422 and "metadata_csv" in r.json()["detail"], r.text
        assert "/etc/passwd" not in r.text
        both = {"data_option": {"prefetch": False}, "data_options": {"prefetch": True}}
        r = c.post(url, params=params, json=both)
        assert r.status_code == 422 and "two spellings" in r.json()["detail"], r.text
        r = c.post(url, params=params, json={"target_sqnr": 30})
        assert r.status_code == 202, r.text
        assert c.get(f"/api/v1/jobs/{r.json()['job_id']}").json()["recipe"]["target_sqnr_db"] == 30


def test_an_unknown_key_is_named_with_a_suggestion(server: Server) -> None:
    with server.client() as c:
        _setup(c, "keys2")
        url, params = "/api/v1/model/keys2/quantize", {"dataset": "keys2-data"}
        r = c.post(url, params=params, json={"data_optoins": {"prefetch": False}})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error"] == "RecipeError" and "'data_optoins'" in body["detail"], body
        assert "'data_options'" in body["hint"], body
        r = c.post(url, params=params, json={"calib-samples": 8})
        assert r.status_code == 422 and r.json()["hint"] == "write 'calib_samples'.", r.text
        r = c.post("/api/v1/model/keys2/compare", params={"dataset": "keys2-data"}, json={"data_option": {}})
        assert r.status_code == 422 and "'data_option'" in r.json()["detail"], r.text
        assert "'data_options'" in r.json()["hint"], r.text
